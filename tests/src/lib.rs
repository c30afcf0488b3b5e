//! Harness for the end-to-end tests: starts the real peers on loopback and stops them by PID.
//!
//! Map of the crate:
//!
//! - [`process`]: a child process owned by a test: own process group, log file, stopped
//!   with its group on drop, log printed when the test fails.
//! - [`peer`]: one Node peer from `tests/peers/`, waiting for its READY line.
//! - [`home`]: the real `stagepass` binary in a private home (XDG dirs 0700, clean env),
//!   its CLI run under a hang guard, its agent started and waited for.
//! - [`config`]: the agent's `config.toml`, typed, instead of TOML strings.
//! - [`idp`]: the OpenID provider (device flow, refresh rotation, token exchange, faults).
//! - [`git_host`]: bare repositories over HTTP with optional token auth and raw file URLs.
//! - [`backstage`]: the Backstage catalog backend trusting the IdP's JWKS.
//! - [`devcontainer`]: real dev containers: the devcontainer CLI and the packaged Feature on
//!   the run's own `dockerd` (`tests/peers/engine.sh`).
//! - [`bed`]: the three together, either the shared bed started once per run by `tests/run`
//!   (`STAGEPASS_TEST_BED_FILE`) or a private one owned by the test.
//! - [`fault_proxy`]: a proxy in front of a peer (Backstage) that makes it look down, slow
//!   or failing on demand and counts what passed.
//! - [`jwt`]: verifying the IdP's JWTs against its JWKS.
//! - [`http`]: the proxy-free HTTP client used for control routes.
//! - [`support`]: free ports, private temp dirs, unique names, the `stagepass` binary, polling
//!   ([`support::poll_until`] async, [`support::wait_until`] blocking).
//! - [`error`]: the [`HarnessError`] every helper returns.
//!
//! The peers' wire contract (READY line, control routes) is in `tests/peers/README.md`.

pub mod backstage;
pub mod bed;
pub mod config;
pub mod devcontainer;
pub mod error;
pub mod fault_proxy;
pub mod git_host;
pub mod home;
pub mod http;
pub mod idp;
pub mod jwt;
pub mod peer;
pub mod process;
pub mod registry;
pub mod support;

pub use error::HarnessError;

pub use backstage::{Backstage, BackstageOptions, OauthClient};
pub use bed::Bed;
pub use config::Config;
pub use fault_proxy::{FaultProxy, ProxyFault, ProxyStats};
pub use git_host::{GitHost, RepoAuth, Worktree};
pub use home::Home;
pub use idp::{Fault, FaultScope, Idp, IdpOptions, IdpStats, TokenResponse};
pub use process::ManagedProcess;
pub use registry::Registry;
