//! Token exchange (RFC 8693) and client credentials against the real IdP: the tokens carry
//! the audience asked for, and an exchanged token names the client that acted (`act`).
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{World, dev_only, opts};
use stagepass::broker::TokenRequest;
use stagepass_e2e::Idp;
use stagepass_e2e::config::{Config, Profile};
use stagepass_e2e::idp::{AUD_BACKSTAGE, AUD_GIT, GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_of_another_profiles_token_has_the_new_aud_and_act() {
    let w = World::new(300, |issuer| {
        dev_only(issuer).profile(
            "git",
            Profile::exchange(issuer, Idp::PUBLIC_CLIENT, "dev")
                .audience(AUD_GIT)
                .scopes(&["git:read"]),
        )
    })
    .await;
    w.seed_login("dev", "alice").await;
    let broker = w.broker(opts(true)).await;
    broker.boot_refresh().await;
    let t = broker.token("git", TokenRequest::default()).await.unwrap();
    let jwks = w.idp.jwks().await.unwrap();
    let claims =
        stagepass_e2e::jwt::verify(t.access_token.expose(), &jwks, w.idp.issuer(), AUD_GIT)
            .unwrap();
    assert_eq!(claims["aud"], AUD_GIT);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], Idp::PUBLIC_CLIENT);
    assert_eq!(claims["scope"], "git:read");
    // Cached: a second call is no new exchange.
    let again = broker.token("git", TokenRequest::default()).await.unwrap();
    assert_eq!(again.access_token, t.access_token);
    let s = w.idp.stats().await.unwrap().grant(GRANT_TOKEN_EXCHANGE);
    assert_eq!((s.requests, s.ok), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_secret_file_gets_its_audience() {
    let w0 = stagepass_e2e::support::private_tempdir().unwrap();
    let secret = w0.path().join("secret");
    std::fs::write(&secret, format!("{}\n", Idp::DEFAULT_CLIENT_SECRET)).unwrap();
    let w = World::new(300, |issuer| {
        Config::new().profile("ci", Profile::ci_for_backstage(issuer, &secret))
    })
    .await;
    let broker = w.broker(opts(true)).await;
    let t = broker.token("ci", TokenRequest::default()).await.unwrap();
    let jwks = w.idp.jwks().await.unwrap();
    let claims = stagepass_e2e::jwt::verify(
        t.access_token.expose(),
        &jwks,
        w.idp.issuer(),
        AUD_BACKSTAGE,
    )
    .unwrap();
    assert_eq!(claims["aud"], AUD_BACKSTAGE);
    assert_eq!(claims["client_id"], Idp::CONFIDENTIAL_CLIENT);
    let s = w.idp.stats().await.unwrap().grant(GRANT_CLIENT_CREDENTIALS);
    assert_eq!(s.ok, 1);
    let again = broker.token("ci", TokenRequest::default()).await.unwrap();
    assert_eq!(again.access_token, t.access_token, "served from the cache");

    // Logout of a client-credentials profile only drops the cached token.
    broker.logout("ci").await.unwrap();
    let t2 = broker.token("ci", TokenRequest::default()).await.unwrap();
    assert_ne!(t2.access_token, t.access_token);

    // A wrong secret is a typed error with the IdP's code, not a panic or a retry storm.
    std::fs::write(&secret, "wrong").unwrap();
    broker
        .invalidate("ci", &t2.access_token.fingerprint())
        .await
        .unwrap();
    let err = broker
        .token("ci", TokenRequest::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");
}
