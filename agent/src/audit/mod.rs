//! The audit log: one JSON line per credential handed out or refused.
//!
//! - [`record`]: what a line holds (time, profile, audience, route/adapter, caller
//!   attestation, decision and rule, token fingerprint; never a token).
//! - [`writer`]: the non-blocking handle the API uses and the writer thread behind it (size
//!   rotation, drop accounting, optional syslog forwarding, identical records of one
//!   connection within a batch written once with `count` and `last_time`). Repeats on one
//!   keep-alive connection are counted before they reach the writer
//!   (`api::conn_peer::ConnPeer::audit_repeat`).
//! - [`reader`]: reading the files back for `stagepass audit`.
//!
//! Format of a line (fields absent when they do not apply):
//!
//! ```json
//! {"time":"2026-11-29T02:41:07.12Z","profile":"github","audience":"urn:github",
//!  "route":"/v1/token/{profile}","adapter":"git-credential","decision":"allow",
//!  "rule":"git","token_fingerprint":"3f9a0c1d2e4b",
//!  "caller":{"transport":"unix","pid":4242,"uid":1000,"exe":"/usr/lib/git-core/git-remote-http",
//!            "cmdline":"git-remote-http origin https://...","start_time":123456,
//!            "chain":[{"pid":4241,"exe":"/usr/bin/git"}],"via":"stagepass git-credential (pid 4244)"}}
//! ```

pub mod reader;
pub mod record;
pub mod writer;

pub use record::{Outcome, Record};
pub use writer::{Audit, WriterGuard};
