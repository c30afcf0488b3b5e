//! `max_grant_age` and `max_token_lifetime` with the real agent binary and real logins at the
//! real IdP: a stored login older than the maximum age turns into `login_required` with that
//! reason (token, status, doctor and the audit log all say so) while a fresh one keeps working and
//! keeps its login time across rotation; tokens are advertised with at most the maximum
//! lifetime (API answer and kubectl's ExecCredential). No access or refresh token ever
//! reaches the audit log.

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{Home, Profile, run_with_stdin, stagepass_bin, start_agent};
use stagepass::config::Config;
use stagepass::store::{GrantStore, StoredGrant};
use stagepass_e2e::config::{Config as TestConfig, Policy};
use stagepass_e2e::idp::AUD_BACKSTAGE;
use stagepass_e2e::{Idp, IdpOptions};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SCOPES: &str = "openid offline_access catalog:read";

/// A device profile whose logins are good for `max_grant_age` and tokens for 10 minutes.
fn profile(issuer: &str, max_grant_age: &str) -> Profile {
    Profile::device_for_backstage(issuer).policy(Policy {
        max_grant_age: Some(max_grant_age.into()),
        max_token_lifetime: Some("10m".into()),
        ..Policy::default()
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn audit_records(home: &Home, n: usize) -> (String, Vec<serde_json::Value>) {
    let path = home.state_dir().join("audit/audit.jsonl");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let recs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if recs.len() >= n {
            return (text, recs);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "want {n} audit records:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_login_is_login_required_with_the_reason_and_tokens_are_advertised_capped() {
    let idp = Idp::start(IdpOptions {
        access_ttl: 3600,
        ..IdpOptions::default()
    })
    .await
    .unwrap();
    let home = Home::new().unwrap();
    let config_file = home
        .write_config(
            &TestConfig::agent_on_ephemeral_port()
                .profile("old", profile(idp.issuer(), "12h"))
                .profile("fresh", profile(idp.issuer(), "12h")),
        )
        .unwrap();
    // Two real logins through the IdP's device flow, stored as a previous run would have:
    // one 13 hours old, one just now.
    let config = Config::load_files(&[config_file]).unwrap();
    let state_dir = home.state_dir();
    let store = GrantStore::open(&config.store, &state_dir).await.unwrap();
    let mut refresh_tokens = Vec::new();
    for (name, age) in [("old", 13 * 3600), ("fresh", 60)] {
        let t = idp
            .device_login(Idp::PUBLIC_CLIENT, SCOPES, Some(AUD_BACKSTAGE), name)
            .await
            .unwrap();
        let rt = t.refresh_token.unwrap();
        let mut g = StoredGrant::new(idp.issuer(), Idp::PUBLIC_CLIENT, rt.clone(), None);
        g.logged_in_at = Some(now_secs() - age);
        store.save(name, &g).unwrap();
        refresh_tokens.push(rt);
    }
    let fresh_login_time = store.load("fresh").unwrap().unwrap().logged_in_at;
    drop(store);
    let _agent = start_agent(&home, &[]);

    // The old login: login_required, naming the limit and the fix.
    let out = home.run_with_stdin(&["token", "old"], b"").unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("older than the maximum grant age of 12h")
            && err.contains("stagepass login old"),
        "{err}"
    );
    let status = home.run_with_stdin(&["status", "--json"], b"").unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let old = status["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "old")
        .unwrap();
    assert_eq!(old["state"], "login_required", "{old}");
    assert!(
        old["reason"]
            .as_str()
            .unwrap()
            .contains("maximum grant age"),
        "{old}"
    );

    // So does doctor, with the fix.
    let doctor = home.run_with_stdin(&["doctor"], b"").unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        text.contains(
            "[warn] login age of old: the login is older than the maximum grant age of 12h"
        ),
        "{text}"
    );
    assert!(text.contains("fix: stagepass login old"), "{text}");

    // The fresh login works; its token is advertised with at most 10 minutes.
    let out = home
        .run_with_stdin(&["token", "fresh", "--json"], b"")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = answer["access_token"].as_str().unwrap().to_string();
    let expires_in = answer["expires_in"].as_u64().unwrap();
    assert!(expires_in <= 600 && expires_in > 500, "{answer}");
    // kubectl's ExecCredential says the same (the adapter reads the agent's answer).
    let mut kube = home.command_of(&stagepass_bin().unwrap());
    kube.args(["kube-credential", "fresh"]).env(
        "KUBERNETES_EXEC_INFO",
        r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential"}"#,
    );
    let out = run_with_stdin(kube, b"");
    assert!(out.status.success(), "{out:?}");
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let exp =
        stagepass::timefmt::parse_rfc3339(cred["status"]["expirationTimestamp"].as_str().unwrap())
            .unwrap();
    assert!(
        exp <= SystemTime::now() + Duration::from_secs(600),
        "{cred}"
    );
    // Rotation kept the login time of the fresh grant.
    let store = GrantStore::open(&config.store, &state_dir).await.unwrap();
    let g = store.load("fresh").unwrap().unwrap();
    assert_eq!(g.logged_in_at, fresh_login_time);
    let rotated = g.refresh_token.expose().to_string();
    assert!(
        !refresh_tokens.contains(&rotated),
        "the boot refresh rotated it"
    );
    refresh_tokens.push(rotated);

    // The audit log: the refusal with its reason, the hand-outs with fingerprints; no token.
    let (text, recs) = audit_records(&home, 3);
    let old = recs.iter().find(|r| r["profile"] == "old").unwrap();
    assert_eq!(old["decision"], "error");
    assert_eq!(old["code"], "login_required");
    assert!(
        old["reason"]
            .as_str()
            .unwrap()
            .contains("maximum grant age of 12h"),
        "{old}"
    );
    let fresh: Vec<_> = recs.iter().filter(|r| r["profile"] == "fresh").collect();
    assert_eq!(fresh.len(), 2, "{text}");
    for r in fresh {
        assert_eq!(r["decision"], "allow");
        assert_eq!(
            r["token_fingerprint"],
            stagepass::secret::Secret::new(token.clone()).fingerprint()
        );
    }
    assert!(
        recs.iter()
            .any(|r| r["adapter"] == "kube-credential" && r["profile"] == "fresh"),
        "{text}"
    );
    for secret in refresh_tokens.iter().chain(std::iter::once(&token)) {
        assert!(
            !text.contains(secret.as_str()),
            "a token is in the audit log"
        );
    }
    let mode = std::fs::metadata(home.state_dir().join("audit/audit.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A login that ages out while the agent runs: served (also from the API's per-thread cache)
/// while young, `login_required` once older than the limit, with no restart in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_ages_out_while_the_agent_runs_is_refused_from_then_on() {
    let idp = Idp::start(IdpOptions {
        access_ttl: 3600,
        ..IdpOptions::default()
    })
    .await
    .unwrap();
    let home = Home::new().unwrap();
    let config_file = home
        .write_config(
            &TestConfig::agent_on_ephemeral_port().profile("dev", profile(idp.issuer(), "3s")),
        )
        .unwrap();
    let config = Config::load_files(&[config_file]).unwrap();
    let store = GrantStore::open(&config.store, &home.state_dir())
        .await
        .unwrap();
    let t = idp
        .device_login(Idp::PUBLIC_CLIENT, SCOPES, Some(AUD_BACKSTAGE), "dev")
        .await
        .unwrap();
    store
        .save(
            "dev",
            &StoredGrant::new(
                idp.issuer(),
                Idp::PUBLIC_CLIENT,
                t.refresh_token.unwrap(),
                None,
            ),
        )
        .unwrap();
    drop(store);
    let _agent = start_agent(&home, &[]);
    // Young: served, several times (the later ones are cache hits).
    for _ in 0..3 {
        let out = home.run_with_stdin(&["token", "dev"], b"").unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // Let the login age past 3 s (waiting for time to pass, not measuring it).
    std::thread::sleep(Duration::from_secs(4));
    let out = home.run_with_stdin(&["token", "dev"], b"").unwrap();
    assert!(!out.status.success(), "an aged-out login was served");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("maximum grant age of 3s"), "{err}");
}
