//! Every end-to-end test in one binary (one link on CI's two cores instead of one per
//! area), a module per area. Tests run against the real peers (`tests/peers/`) and the
//! built `stagepass` binary; `tests/run` starts the peers and runs them all.
//!
//! One area: `cargo nextest run -p stagepass-e2e -E 'test(/^api::/)'`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The libtest name of test function `$f` of the calling module, for tests that run one
/// `#[ignore]`d test of this binary again as a child process (`--exact NAME --ignored`).
macro_rules! test_name {
    ($f:ident) => {
        module_path!()
            .split_once("::")
            .map_or(stringify!($f).to_string(), |(_, m)| {
                format!("{m}::{}", stringify!($f))
            })
    };
}

mod adapters_support;
mod broker_support;
mod catalog_support;
#[path = "api/support.rs"]
mod support;

mod abuse;
mod adapters_aws;
mod adapters_docker;
mod adapters_exec;
mod adapters_git;
mod adapters_kube;
mod api;
mod attest_audit;
mod attest_pid_reuse;
mod audit_grant_age;
mod broker_device;
mod broker_env;
mod broker_exchange;
mod broker_faults;
mod broker_keyring;
mod broker_logs;
mod broker_logs_json;
mod broker_restart;
mod broker_revoked;
mod broker_rotation;
mod broker_single_flight;
mod broker_store;
mod catalog_changes;
mod catalog_check;
mod catalog_sync;
mod cli;
mod config_reference;
mod faults_backstage;
mod faults_disk;
mod faults_kill;
mod faults_outbox_kill;
mod faults_skew;
mod feature;
mod hostile_catalog;
mod hostile_flood;
mod mcp;
mod sandbox;
mod smoke;
mod soak;
