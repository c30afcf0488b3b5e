//! A revoked grant: `login_required` with the IdP's reason, the dead grant forgotten, and no
//! retry storm (IdP calls counted).
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{World, dev_only, opts};
use stagepass::broker::{ProfileState, TokenRequest};
use stagepass_e2e::idp::GRANT_REFRESH_TOKEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grant_means_login_required_without_retry_storm() {
    let w = World::new(300, dev_only).await;
    w.seed_login("dev", "bob").await;
    let broker = w.broker(opts(true)).await;
    broker.boot_refresh().await;
    let t = broker.token("dev", TokenRequest::default()).await.unwrap();
    assert!(w.grant_file("dev").exists());

    assert_eq!(w.idp.revoke_subject("bob").await.unwrap(), 1);
    w.idp.reset_stats().await.unwrap();
    // A server refused the token (git erase after a 401): the next request refreshes.
    broker
        .invalidate("dev", &t.access_token.fingerprint())
        .await
        .unwrap();
    let err = broker
        .token("dev", TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "login_required", "{err}");
    let msg = err.to_string();
    assert!(msg.contains("invalid_grant"), "{msg}");
    assert!(msg.contains("stagepass login dev"), "{msg}");

    for _ in 0..100 {
        let e = broker
            .token("dev", TokenRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "login_required");
    }
    let st = &broker.status()[0];
    assert_eq!(st.state, ProfileState::LoginRequired);
    assert!(st.reason.as_deref().unwrap().contains("invalid_grant"));
    let r = w.idp.stats().await.unwrap().grant(GRANT_REFRESH_TOKEN);
    assert_eq!(r.requests, 1, "one refresh attempt, then none: {r:?}");
    assert_eq!(r.errors.get("invalid_grant"), Some(&1));
    // The dead grant is gone from the store, so the next boot does not try it again.
    assert!(!w.grant_file("dev").exists());
    drop(broker);
    let again = w.broker(opts(true)).await;
    again.boot_refresh().await;
    assert_eq!(
        w.idp
            .stats()
            .await
            .unwrap()
            .grant(GRANT_REFRESH_TOKEN)
            .requests,
        1
    );
    assert_eq!(
        again
            .token("dev", TokenRequest::default())
            .await
            .unwrap_err()
            .code(),
        "login_required"
    );
}
