//! Shared setup of the broker end-to-end tests: a private real IdP, a private state dir,
//! a config written as a TOML file and loaded through the real config loader, and a login
//! seeded through the IdP's real device flow.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod logs;

use stagepass::broker::{Broker, BrokerOptions};
use stagepass::config::Config;
use stagepass::paths::Paths;
use stagepass::store::{GrantStore, StoredGrant};
use stagepass_e2e::config::{Config as TestConfig, Profile};
use stagepass_e2e::idp::AUD_BACKSTAGE;
use stagepass_e2e::{Idp, IdpOptions};
use std::path::PathBuf;
use std::time::Duration;

/// Scopes of the device profile used in these tests.
pub const SCOPES: &str = "openid offline_access catalog:read";

/// One test's world: IdP, temp dirs, config.
pub struct World {
    pub idp: Idp,
    pub tmp: tempfile::TempDir,
    pub paths: Paths,
    pub config: Config,
}

impl World {
    /// Starts a private IdP with `access_ttl` seconds and writes the config `profiles`
    /// makes of its issuer URL, with `[store] backend = "auto"`, under a private temp dir.
    pub async fn new(access_ttl: u64, profiles: impl FnOnce(&str) -> TestConfig) -> World {
        let idp = Idp::start(IdpOptions {
            access_ttl,
            ..IdpOptions::default()
        })
        .await
        .unwrap();
        let tmp = stagepass_e2e::support::private_tempdir().unwrap();
        let paths = Paths {
            config_files: vec![tmp.path().join("config.toml")],
            state_dir: tmp.path().join("state"),
            runtime_dir: tmp.path().join("run"),
        };
        profiles(idp.issuer())
            .store("auto")
            .write_to(&paths.config_files[0])
            .unwrap();
        let config = Config::load_files(&paths.config_files).unwrap();
        World {
            idp,
            tmp,
            paths,
            config,
        }
    }

    /// A broker on this world's config and state dir.
    pub async fn broker(&self, opts: BrokerOptions) -> Broker {
        Broker::start_with(&self.config, &self.paths, opts)
            .await
            .unwrap()
    }

    /// Logs `subject` in through the IdP's device flow (headless approval) and stores the
    /// refresh token for `profile`, as a previous agent run would have left it.
    pub async fn seed_login(&self, profile: &str, subject: &str) -> String {
        let t = self
            .idp
            .device_login(Idp::PUBLIC_CLIENT, SCOPES, Some(AUD_BACKSTAGE), subject)
            .await
            .unwrap();
        let rt = t.refresh_token.unwrap();
        let store = GrantStore::open(&self.config.store, &self.paths.state_dir)
            .await
            .unwrap();
        store
            .save(
                profile,
                &StoredGrant::new(self.idp.issuer(), Idp::PUBLIC_CLIENT, rt.clone(), None),
            )
            .unwrap();
        rt
    }

    /// The grant file of `profile` in the file store.
    pub fn grant_file(&self, profile: &str) -> PathBuf {
        stagepass_e2e::home::grant_file_in(&self.paths.state_dir, profile)
    }
}

/// The config of most broker tests: the device profile `dev` only.
pub fn dev_only(issuer: &str) -> TestConfig {
    TestConfig::new().profile("dev", Profile::device_for_backstage(issuer))
}

/// Test options: quick backoff so recovery tests are short; no background refresher when
/// a test needs to control exactly when refreshes happen.
pub fn opts(background: bool) -> BrokerOptions {
    BrokerOptions {
        http_timeout: Duration::from_secs(2),
        backoff: stagepass::broker::timing::Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
        },
        background_refresh: background,
    }
}

/// Polls `f` every 50 ms until it returns Some, failing after a generous hang guard (the
/// harness's [`stagepass_e2e::support::poll_until`], for probes that cannot fail).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    stagepass_e2e::support::poll_until(
        what,
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let probe = f();
            async move { Ok(probe.await) }
        },
    )
    .await
    .unwrap()
}

/// Environment variables through which a parent test hands a child agent process its config
/// file and state dir (the child is the same test binary, running one `#[ignore]`d test).
const CHILD_CONFIG: &str = "STAGEPASS_E2E_CHILD_CONFIG";
const CHILD_STATE: &str = "STAGEPASS_E2E_CHILD_STATE";

impl World {
    /// Starts this test binary again as a child agent that runs only the `#[ignore]`d test
    /// `child_test` over this world's config and state dir, with its stdout piped.
    pub fn spawn_child(
        &self,
        child_test: &str,
        stderr: std::process::Stdio,
    ) -> std::process::Child {
        self.spawn_child_with(child_test, stderr, &[])
    }

    /// [`World::spawn_child`] with extra environment variables for the child.
    pub fn spawn_child_with(
        &self,
        child_test: &str,
        stderr: std::process::Stdio,
        env: &[(&str, &str)],
    ) -> std::process::Child {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", child_test, "--ignored", "--nocapture"])
            .env(CHILD_CONFIG, &self.paths.config_files[0])
            .env(CHILD_STATE, &self.paths.state_dir)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }
}

/// In a child started by [`World::spawn_child`]: the runtime and a broker over the parent's
/// config and state dir (no background refresher: the child drives refreshes itself).
pub fn child_broker() -> (tokio::runtime::Runtime, Broker) {
    let (Some(config), Some(state)) = (
        std::env::var_os(CHILD_CONFIG),
        std::env::var_os(CHILD_STATE),
    ) else {
        panic!("{CHILD_CONFIG} and {CHILD_STATE} must be set: this is a child process entry point");
    };
    let config = Config::load_files(&[config.into()]).unwrap();
    let paths = Paths {
        config_files: vec![],
        state_dir: state.into(),
        runtime_dir: std::env::temp_dir(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt
        .block_on(Broker::start_with(&config, &paths, opts(false)))
        .unwrap();
    (rt, broker)
}
