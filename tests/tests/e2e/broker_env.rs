//! `env` profiles and exchange from an environment token, with the no-config default.
//!
//! The tokens live in the environment, which a test must not change in its own process
//! (`set_var` races with every other thread of the runtime): the test starts this binary
//! again as a child with the variables set, the child runs the broker and prints what it
//! was served, and the parent checks it against the real IdP.
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use base64::Engine;
use broker_support::{World, child_broker};
use stagepass::broker::{ProfileState, TokenRequest};
use stagepass::config::{Config, GrantKind};
use stagepass_e2e::Idp;
use stagepass_e2e::config::{Config as TestConfig, Profile};
use stagepass_e2e::idp::AUD_BACKSTAGE;

/// The expiry the child must report for the `github` token (the JWT's `exp`).
const EXP_ENV: &str = "STAGEPASS_E2E_EXP";
/// The prefix of the child's line holding the exchanged Backstage token.
const BACKSTAGE_LINE: &str = "backstage-token ";

fn jwt_with_exp(exp: u64) -> String {
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        e(r#"{"alg":"none"}"#),
        e(&format!(r#"{{"exp":{exp}}}"#))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_profiles_and_exchange_of_an_env_token() {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let w = World::new(300, |issuer| {
        TestConfig::new()
            .profile("github", Profile::env("GITHUB_TOKEN"))
            .profile(
                "backstage",
                Profile::exchange_of_env(issuer, Idp::PUBLIC_CLIENT, "STAGEPASS_E2E_SUBJECT")
                    .audience(AUD_BACKSTAGE)
                    .scopes(&["catalog:read"]),
            )
            .profile("missing", Profile::env("STAGEPASS_E2E_UNSET"))
    })
    .await;
    w.idp
        .trust_subject_token("ghs_opaque_codespace_token", "carol")
        .await
        .unwrap();
    let child = w.spawn_child_with(
        &test_name!(env_child),
        std::process::Stdio::inherit(),
        &[
            ("GITHUB_TOKEN", &jwt_with_exp(exp)),
            ("STAGEPASS_E2E_SUBJECT", "ghs_opaque_codespace_token"),
            (EXP_ENV, &exp.to_string()),
        ],
    );
    // Guarded: a child that hangs is killed and fails the test.
    let output = stagepass_e2e::home::wait_output(child).unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = output.status;
    assert!(status.success(), "the child failed ({status}):\n{out}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix(BACKSTAGE_LINE))
        .unwrap_or_else(|| panic!("no Backstage token in the child's output:\n{out}"));
    let jwks = w.idp.jwks().await.unwrap();
    let claims = stagepass_e2e::jwt::verify(token, &jwks, w.idp.issuer(), AUD_BACKSTAGE).unwrap();
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["act"]["sub"], "stagepass-cli");
}

/// The child of [`env_profiles_and_exchange_of_an_env_token`]: the broker over the parent's
/// config, with `GITHUB_TOKEN` and the subject token in its environment.
#[test]
#[ignore = "child process of env_profiles_and_exchange_of_an_env_token; started by it"]
fn env_child() {
    let gh = std::env::var("GITHUB_TOKEN").unwrap();
    let exp: u64 = std::env::var(EXP_ENV).unwrap().parse().unwrap();

    // No configuration at all: the github env profile.
    let mut c = Config::default();
    c.default_profiles_from_env();
    assert_eq!(c.profiles["github"].grant, GrantKind::Env);
    assert_eq!(
        c.profiles["github"].token_env.as_deref(),
        Some("GITHUB_TOKEN")
    );

    let (rt, broker) = child_broker();
    rt.block_on(async {
        let t = broker
            .token("github", TokenRequest::default())
            .await
            .unwrap();
        assert_eq!(t.access_token.expose(), gh);
        let got = t
            .expires_at
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(got, exp, "a JWT's exp is the expiry");

        let err = broker
            .token("missing", TokenRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "login_required");
        assert!(err.to_string().contains("STAGEPASS_E2E_UNSET"), "{err}");
        let st = broker.status();
        let missing = st.iter().find(|s| s.profile == "missing").unwrap();
        assert_eq!(missing.state, ProfileState::Error);

        let b = broker
            .token("backstage", TokenRequest::default())
            .await
            .unwrap();
        println!("{BACKSTAGE_LINE}{}", b.access_token.expose());
    });
}
