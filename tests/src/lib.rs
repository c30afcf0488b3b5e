//! Harness for the end-to-end tests: starts the real peers on loopback and stops them by PID.
//!
//! Map of the crate:
//!
//! - [`peer`]: spawning one Node peer from `tests/peers/`, waiting for its READY line,
//!   stopping its whole process group on drop, printing its log when a test fails.
//! - [`idp`]: the OpenID provider (device flow, refresh rotation, token exchange, faults).
//! - [`git_host`]: bare repositories over HTTP with optional token auth and raw file URLs.
//! - [`backstage`]: the Backstage catalog backend trusting the IdP's JWKS.
//! - [`bed`]: the three together, either the shared bed started once per run by `tests/run`
//!   (`STAGEPASS_TEST_BED_FILE`) or a private one owned by the test.
//! - [`jwt`]: verifying the IdP's JWTs against its JWKS.
//! - [`http`]: the proxy-free HTTP client used for control routes.
//! - [`support`]: free ports, private temp dirs, unique names, the `stagepass` binary, polling.
//! - [`error`]: the [`HarnessError`] every helper returns.
//!
//! The peers' wire contract (READY line, control routes) is in `tests/peers/README.md`.

pub mod backstage;
pub mod bed;
pub mod error;
pub mod git_host;
pub mod http;
pub mod idp;
pub mod jwt;
pub mod peer;
pub mod support;

pub use error::HarnessError;

pub use backstage::{Backstage, BackstageOptions};
pub use bed::Bed;
pub use git_host::{GitHost, RepoAuth, Worktree};
pub use idp::{Fault, FaultScope, Idp, IdpOptions, IdpStats, TokenResponse};
