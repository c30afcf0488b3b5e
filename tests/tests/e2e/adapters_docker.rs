//! The docker credential helper, driven through its stdin/stdout exactly as docker drives it,
//! both as `stagepass docker-credential` and through a `docker-credential-stagepass` link.

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{Config, Home, Profile, Registry, home, run_with_stdin, stagepass_bin};

/// Two registries, one in each of the config's shapes.
fn config() -> Config {
    Config::new()
        .profile("github", Profile::env("GITHUB_TOKEN"))
        .profile("reg", Profile::env("STAGEPASS_TEST_REG_TOKEN"))
        .docker_registry("ghcr.io", Registry::Profile("github".into()))
        .docker_registry(
            "registry.example:5000",
            Registry::Full {
                profile: "reg".into(),
                username: Some("robot".into()),
            },
        )
}

/// A `docker-credential-stagepass` symlink to the binary, in the home.
fn helper_link(home: &Home) -> std::path::PathBuf {
    let link = home.path().join("docker-credential-stagepass");
    if !link.exists() {
        std::os::unix::fs::symlink(stagepass_bin().unwrap(), &link).unwrap();
    }
    link
}

fn helper(home: &Home, op: &str, stdin: &[u8]) -> std::process::Output {
    let mut c = home.command_of(&helper_link(home));
    c.arg(op);
    run_with_stdin(c, stdin)
}

#[test]
fn list_names_every_configured_registry() {
    let home = home(&config());
    let out = helper(&home, "list", b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"ghcr.io\":\"stagepass\",\"registry.example:5000\":\"robot\"}\n"
    );
    // The subcommand form answers the same bytes.
    let sub = home
        .run_with_stdin(&["docker-credential", "list"], b"")
        .unwrap();
    assert!(sub.status.success(), "{sub:?}");
    assert_eq!(
        String::from_utf8(sub.stdout).unwrap(),
        "{\"ghcr.io\":\"stagepass\",\"registry.example:5000\":\"robot\"}\n"
    );
}

#[test]
fn unknown_registry_is_the_protocols_not_found() {
    let home = home(&config());
    let out = helper(&home, "get", b"https://index.docker.io/v1/\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "credentials not found in native keychain\n"
    );
}

#[test]
fn known_registry_with_agent_down_fails_at_once_naming_the_fix() {
    let home = home(&config());
    let out = helper(&home, "get", b"ghcr.io\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let msg = String::from_utf8(out.stdout).unwrap();
    assert!(msg.contains("not running"), "{msg}");
    assert!(msg.contains("stagepass doctor"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn store_is_refused_and_erase_is_a_no_op() {
    let home = home(&config());
    let store = helper(
        &home,
        "store",
        br#"{"ServerURL":"ghcr.io","Username":"u","Secret":"s"}"#,
    );
    assert_eq!(store.status.code(), Some(1));
    let msg = String::from_utf8(store.stdout).unwrap();
    assert!(
        msg.starts_with("stagepass does not store docker credentials: ghcr.io"),
        "{msg}"
    );
    let erase = helper(&home, "erase", b"ghcr.io\n");
    assert!(erase.status.success(), "{erase:?}");
    assert!(erase.stdout.is_empty());
}

#[test]
fn bad_input_and_unknown_operation_are_protocol_errors() {
    let home = home(&config());
    let bad = helper(&home, "get", b"\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8(bad.stdout)
            .unwrap()
            .starts_with("bad server URL")
    );
    let unknown = helper(&home, "version", b"");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8(unknown.stdout)
            .unwrap()
            .contains("unknown operation")
    );
}
