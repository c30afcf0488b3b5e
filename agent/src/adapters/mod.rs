//! Tool adapters: git credential helper, AWS container credentials, kubectl, docker, exec.
//!
//! INTERFACE STUB: filled in by the adapters work. [`aws`] is routed by the API.

pub mod aws;
