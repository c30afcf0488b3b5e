//! The local HTTP API on loopback TCP and a Unix socket, behind the request guard.
//!
//! INTERFACE STUB: filled in by the API work. [`client`] is what the CLI uses.

pub mod client;
