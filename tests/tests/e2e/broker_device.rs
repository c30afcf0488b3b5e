//! Device login through the broker against the real IdP, then a restart that needs no login
//! and costs exactly one refresh.
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{World, dev_only, eventually, opts};
use stagepass::broker::{ProfileState, TokenRequest};
use stagepass_e2e::idp::{AUD_BACKSTAGE, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_then_restart_serves_the_stored_token_with_no_idp_call() {
    let w = World::new(300, dev_only).await;
    let broker = w.broker(opts(true)).await;
    assert_eq!(broker.status()[0].state, ProfileState::LoginRequired);

    let login = broker.login_start("dev").await.unwrap();
    assert_eq!(login.state, stagepass::broker::LoginPhase::Pending);
    let code = login.user_code.clone().unwrap();
    assert!(login.verification_uri.unwrap().starts_with(w.idp.issuer()));
    // A second start while pending returns the same login.
    assert_eq!(
        broker.login_start("dev").await.unwrap().user_code,
        Some(code.clone())
    );

    w.idp.approve(&code, "alice").await.unwrap();
    let done = eventually("login completes", || async {
        let s = broker.login_state("dev").unwrap();
        (s.state != stagepass::broker::LoginPhase::Pending).then_some(s)
    })
    .await;
    assert_eq!(
        done.state,
        stagepass::broker::LoginPhase::Complete,
        "{done:?}"
    );

    let t = broker.token("dev", TokenRequest::default()).await.unwrap();
    let jwks = w.idp.jwks().await.unwrap();
    let claims = stagepass_e2e::jwt::verify(
        t.access_token.expose(),
        &jwks,
        w.idp.issuer(),
        AUD_BACKSTAGE,
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(broker.status()[0].state, ProfileState::Valid);
    // The refresh token is on disk, and the access token with it (issue 23: a restart within
    // its life serves it without spending the refresh token).
    let stored = std::fs::read_to_string(w.grant_file("dev")).unwrap();
    assert!(stored.contains(t.access_token.expose()));
    let stats = w.idp.stats().await.unwrap();
    assert_eq!(stats.grant(GRANT_DEVICE_CODE).ok, 1);
    assert_eq!(stats.grant(GRANT_REFRESH_TOKEN).requests, 0);
    drop(broker);

    // "Container restart": a new broker on the same state dir.
    w.idp.reset_stats().await.unwrap();
    let broker = w.broker(opts(true)).await;
    // The stored login is known before the boot refresh has run.
    let st = &broker.status()[0];
    assert_eq!(st.state, ProfileState::Valid, "{st:?}");
    broker.boot_refresh().await;
    let t2 = broker.token("dev", TokenRequest::default()).await.unwrap();
    assert_eq!(
        t2.access_token, t.access_token,
        "the stored token, still valid"
    );
    let claims = stagepass_e2e::jwt::verify(
        t2.access_token.expose(),
        &jwks,
        w.idp.issuer(),
        AUD_BACKSTAGE,
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    let stats = w.idp.stats().await.unwrap();
    assert_eq!(
        stats.token.requests, 0,
        "no IdP call at the restart: {stats:?}"
    );
    assert_eq!(stats.device_authorization.requests, 0);
    // Who signed in is known again without an ID token in this run.
    assert_eq!(
        broker.status()[0]
            .identity
            .as_ref()
            .and_then(|i| i.sub.as_deref()),
        Some("alice")
    );
    // The stored login itself works: a refresh forced past the token's life succeeds.
    let force = TokenRequest {
        min_valid: Some(std::time::Duration::from_secs(3600)),
    };
    let t3 = broker.token("dev", force).await.unwrap();
    assert_ne!(t3.access_token, t.access_token);
    let stats = w.idp.stats().await.unwrap();
    assert_eq!(stats.grant(GRANT_REFRESH_TOKEN).ok, 1, "{stats:?}");
    assert_eq!(stats.grant(GRANT_DEVICE_CODE).requests, 0);

    // Logout forgets the login here and at the IdP.
    broker.logout("dev").await.unwrap();
    assert!(!w.grant_file("dev").exists());
    let err = broker
        .token("dev", TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "login_required");
    assert_eq!(broker.status()[0].state, ProfileState::LoginRequired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_device_login_says_denied_and_stores_nothing() {
    let w = World::new(300, dev_only).await;
    let broker = w.broker(opts(true)).await;
    let login = broker.login_start("dev").await.unwrap();
    w.idp.deny(&login.user_code.unwrap()).await.unwrap();
    let done = eventually("login ends", || async {
        let s = broker.login_state("dev").unwrap();
        (s.state != stagepass::broker::LoginPhase::Pending).then_some(s)
    })
    .await;
    assert_eq!(
        done.state,
        stagepass::broker::LoginPhase::Denied,
        "{done:?}"
    );
    assert!(done.message.unwrap().contains("access_denied"));
    assert!(!w.grant_file("dev").exists());
    let err = broker
        .token("dev", TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "login_required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_device_login_expires() {
    let w = World::new(300, dev_only).await;
    // Device codes issued from now on live 2 s; nobody approves this one.
    w.idp.set_ttl(None, None, Some(2)).await.unwrap();
    let broker = w.broker(opts(true)).await;
    let login = broker.login_start("dev").await.unwrap();
    assert_eq!(login.state, stagepass::broker::LoginPhase::Pending);
    let done = eventually("login ends", || async {
        let s = broker.login_state("dev").unwrap();
        (s.state != stagepass::broker::LoginPhase::Pending).then_some(s)
    })
    .await;
    assert_eq!(
        done.state,
        stagepass::broker::LoginPhase::Expired,
        "{done:?}"
    );
    assert!(!w.grant_file("dev").exists());
    // A new login can start after an expired one.
    let again = broker.login_start("dev").await.unwrap();
    assert_eq!(again.state, stagepass::broker::LoginPhase::Pending);
    assert_ne!(again.user_code, login.user_code);
}
