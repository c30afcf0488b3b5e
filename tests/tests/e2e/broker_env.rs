//! `env` profiles and exchange from an environment token, with the no-config default.
//!
//! This file holds one test only: it sets process environment variables before any thread
//! exists, which is sound only while nothing else runs in the process (nextest runs each test
//! in its own process; `cargo test` runs this binary's single test alone too).
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use base64::Engine;
use broker_support::{World, opts};
use stagepass::broker::{ProfileState, TokenRequest};
use stagepass::config::{Config, GrantKind};
use stagepass_e2e::idp::AUD_BACKSTAGE;

fn jwt_with_exp(exp: u64) -> String {
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        e(r#"{"alg":"none"}"#),
        e(&format!(r#"{{"exp":{exp}}}"#))
    )
}

#[test]
fn env_profiles_and_exchange_of_an_env_token() {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let gh = jwt_with_exp(exp);
    // SAFETY: no other thread exists yet (the runtime is built below) and this binary has
    // no other test.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("GITHUB_TOKEN", &gh);
        std::env::set_var("STAGEPASS_E2E_SUBJECT", "ghs_opaque_codespace_token");
        std::env::remove_var("GH_TOKEN");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // No configuration at all: the github env profile.
        let mut c = Config::default();
        c.default_profiles_from_env();
        assert_eq!(c.profiles["github"].grant, GrantKind::Env);
        assert_eq!(c.profiles["github"].token_env.as_deref(), Some("GITHUB_TOKEN"));

        let profiles = format!(
            "[profiles.github]\ngrant = \"env\"\ntoken_env = \"GITHUB_TOKEN\"\n\n[profiles.backstage]\ngrant = \"exchange\"\nissuer = \"{{issuer}}\"\nclient_id = \"stagepass-cli\"\ntoken_env = \"STAGEPASS_E2E_SUBJECT\"\naudience = \"{AUD_BACKSTAGE}\"\nscopes = [\"catalog:read\"]\n\n[profiles.missing]\ngrant = \"env\"\ntoken_env = \"STAGEPASS_E2E_UNSET\"\n"
        );
        let w = World::new(300, &profiles).await;
        w.idp
            .trust_subject_token("ghs_opaque_codespace_token", "carol")
            .await
            .unwrap();
        let broker = w.broker(opts(true)).await;

        let t = broker.token("github", TokenRequest::default()).await.unwrap();
        assert_eq!(t.access_token.expose(), gh);
        let got = t
            .expires_at
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(got, exp, "a JWT's exp is the expiry");

        // Re-read on each request: a new token in the environment is served at once.
        let gh2 = jwt_with_exp(exp + 60);
        #[allow(unsafe_code)]
        // SAFETY: no other code of this process reads or writes the environment concurrently
        // at this point: the broker reads it only inside `token`, which is not running.
        unsafe {
            std::env::set_var("GITHUB_TOKEN", &gh2);
        }
        let t2 = broker.token("github", TokenRequest::default()).await.unwrap();
        assert_eq!(t2.access_token.expose(), gh2);

        let err = broker
            .token("missing", TokenRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "login_required");
        assert!(err.to_string().contains("STAGEPASS_E2E_UNSET"), "{err}");
        let st = broker.status();
        let missing = st.iter().find(|s| s.profile == "missing").unwrap();
        assert_eq!(missing.state, ProfileState::Error);

        let b = broker.token("backstage", TokenRequest::default()).await.unwrap();
        let jwks = w.idp.jwks().await.unwrap();
        let claims = stagepass_e2e::jwt::verify(
            b.access_token.expose(),
            &jwks,
            w.idp.issuer(),
            AUD_BACKSTAGE,
        )
        .unwrap();
        assert_eq!(claims["sub"], "carol");
        assert_eq!(claims["act"]["sub"], "stagepass-cli");
    });
}
