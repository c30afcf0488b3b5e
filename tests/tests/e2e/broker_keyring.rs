//! The Secret Service backend against a real one: Debian's gnome-keyring-daemon on a private
//! session bus (dbus-run-session), with its login keyring on disk under a private HOME.
//!
//! Two child processes, each in its own bus session and keyring daemon: the first logs in
//! through the device flow (the refresh token goes to the keyring, not to a file), the second,
//! with a fresh daemon reading the same keyring file, gets a token with no login and exactly
//! one refresh. So the keyring backend is chosen when it answers, and it persists.
//! Install: tests/install/keyring.sh.
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{dev_only, eventually, opts};
use stagepass::broker::{Broker, TokenRequest};
use stagepass_e2e::Idp;
use stagepass_e2e::idp::{GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN};
use std::path::Path;
use std::process::Command;

const MODE: &str = "STAGEPASS_E2E_KEYRING_MODE";
const IDP: &str = "STAGEPASS_E2E_KEYRING_IDP";
const DIR: &str = "STAGEPASS_E2E_KEYRING_DIR";

/// Child entry point: runs inside dbus-run-session with gnome-keyring-daemon unlocked.
#[test]
#[ignore = "child process of secret_service_backend_is_used_and_persists; started by it"]
fn keyring_child() {
    let (Ok(mode), Ok(idp_url), Ok(dir)) =
        (std::env::var(MODE), std::env::var(IDP), std::env::var(DIR))
    else {
        panic!("{MODE}, {IDP} and {DIR} must be set: this is a child process entry point");
    };
    let dir = Path::new(&dir);
    let config = stagepass::config::Config::load_files(&[dir.join("config.toml")]).unwrap();
    let paths = stagepass::paths::Paths {
        config_files: vec![],
        state_dir: dir.join("state"),
        runtime_dir: dir.join("run"),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let idp = Idp::connect(&idp_url, None).unwrap();
        let broker = Broker::start_with(&config, &paths, opts(true))
            .await
            .unwrap();
        let (backend, reason) = broker.store_backend();
        assert_eq!(backend, "keyring", "{reason}");
        match mode.as_str() {
            "login" => {
                let login = broker.login_start("dev").await.unwrap();
                idp.approve(login.user_code.as_deref().unwrap(), "kim")
                    .await
                    .unwrap();
                eventually("login", || async {
                    (broker.login_state("dev").unwrap().state
                        != stagepass::broker::LoginPhase::Pending)
                        .then_some(())
                })
                .await;
                assert_eq!(
                    broker.login_state("dev").unwrap().state,
                    stagepass::broker::LoginPhase::Complete
                );
                broker.token("dev", TokenRequest::default()).await.unwrap();
            }
            "reuse" => {
                // The access token came back from the keyring: no IdP call for it.
                broker.boot_refresh().await;
                broker.token("dev", TokenRequest::default()).await.unwrap();
                let s = idp.stats().await.unwrap();
                assert_eq!(s.token.requests, 0, "served from the keyring: {s:?}");
                // The refresh token came back too: a forced refresh works.
                let force = TokenRequest {
                    min_valid: Some(std::time::Duration::from_secs(3600)),
                };
                broker.token("dev", force).await.unwrap();
            }
            other => panic!("unknown mode {other}"),
        }
        // Nothing went to the file store.
        assert!(!paths.state_dir.join("grants").join("dev.json").exists());
        println!("KEYRING-CHILD-OK {mode}");
    });
}

fn run_child(mode: &str, idp: &Idp, dir: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let home = dir.join("home");
    let out = Command::new("dbus-run-session")
        .arg("--")
        .arg("sh")
        .arg("-c")
        // The daemon forks into the background of this bus session; its password comes on
        // stdin and unlocks (or first creates) the login keyring under $HOME.
        .arg("printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null && exec \"$0\" --exact \"$1\" --ignored --nocapture")
        .arg(exe)
        .arg(test_name!(keyring_child))
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env_remove("XDG_RUNTIME_DIR")
        .env(MODE, mode)
        .env(IDP, idp.issuer())
        .env(DIR, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains(&format!("KEYRING-CHILD-OK {mode}")),
        "child {mode} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_service_backend_is_used_and_persists() {
    for tool in ["dbus-run-session", "gnome-keyring-daemon"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .unwrap()
                .success(),
            "{tool} is missing: run tests/install/keyring.sh"
        );
    }
    let idp = Idp::start(stagepass_e2e::IdpOptions::default())
        .await
        .unwrap();
    let tmp = stagepass_e2e::support::private_tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("home")).unwrap();
    dev_only(idp.issuer())
        .store("auto")
        .write_to(&tmp.path().join("config.toml"))
        .unwrap();

    let dir = tmp.path().to_path_buf();
    let idp = std::sync::Arc::new(idp);
    let i = idp.clone();
    let d = dir.clone();
    tokio::task::spawn_blocking(move || run_child("login", &i, &d))
        .await
        .unwrap();
    let s = idp.stats().await.unwrap();
    assert_eq!(s.grant(GRANT_DEVICE_CODE).ok, 1);
    // The keyring file is on disk, in the private HOME.
    let keyrings = dir.join("home/.local/share/keyrings");
    assert!(
        std::fs::read_dir(&keyrings).unwrap().count() > 0,
        "no keyring file in {}",
        keyrings.display()
    );

    idp.reset_stats().await.unwrap();
    let i = idp.clone();
    tokio::task::spawn_blocking(move || run_child("reuse", &i, &dir))
        .await
        .unwrap();
    let s = idp.stats().await.unwrap();
    assert_eq!(s.grant(GRANT_REFRESH_TOKEN).requests, 1, "{s:?}");
    assert_eq!(s.grant(GRANT_REFRESH_TOKEN).ok, 1);
    assert_eq!(s.device_authorization.requests, 0);
}
