//! Tool adapters: each tool gets fresh credentials from the agent in its own protocol.
//!
//! - [`git`]: the git credential helper protocol (`stagepass git-credential`).
//! - [`docker`]: the docker credential helper protocol (`docker-credential-stagepass`).
//! - [`kube`]: kubectl's `ExecCredential` (`stagepass kube-credential PROFILE`).
//! - [`env`]: the variables of `stagepass env` and `stagepass exec`.
//! - [`token`]: the agent's token answer as the CLI adapters read it, and failure lines that
//!   name the fix.
//!
//! These modules are pure protocol code (parse, decide, serialize); the process glue (stdin,
//! stdout, exit codes, talking to the agent) is in `cli::adapters`. AWS credentials are
//! served by the agent itself (`GET /v1/aws/credentials/{name}`, [`crate::aws`]): the SDKs
//! speak HTTP to it directly.

pub mod docker;
pub mod env;
pub mod git;
pub mod kube;
pub mod token;
