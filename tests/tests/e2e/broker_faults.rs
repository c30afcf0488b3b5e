//! IdP trouble against the real IdP's fault modes: a cached valid token keeps being served,
//! with none valid the error is a typed `idp_unavailable`, and once the IdP is back the first
//! retry succeeds (recovery within one backoff step, counted at the IdP).
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{World, dev_only, eventually, opts};
use stagepass::broker::{ProfileState, TokenRequest};
use stagepass_e2e::Fault;
use stagepass_e2e::idp::GRANT_REFRESH_TOKEN;
use std::time::Duration;

async fn check_fault(fault: Fault) {
    let w = World::new(300, dev_only).await;
    w.seed_login("dev", "alice").await;
    let broker = w.broker(opts(false)).await;
    let good = broker.token("dev", TokenRequest::default()).await.unwrap();

    w.idp.set_fault(fault.clone()).await.unwrap();
    // Asking for more validity than the token has forces a refresh attempt, which fails:
    // the still-valid cached token is served.
    let want_more = TokenRequest {
        min_valid: Some(Duration::from_secs(3600)),
    };
    let t = broker.token("dev", want_more).await.unwrap();
    assert_eq!(t.access_token, good.access_token, "{fault:?}");
    let st = &broker.status()[0];
    assert_eq!(st.state, ProfileState::Stale, "{fault:?}: {st:?}");
    assert!(st.reason.is_some());

    // No valid token any more (a server refused it): typed idp_unavailable.
    broker
        .invalidate("dev", &good.access_token.fingerprint())
        .await
        .unwrap();
    let err = eventually("a failing attempt", || async {
        broker.token("dev", TokenRequest::default()).await.err()
    })
    .await;
    assert_eq!(err.code(), "idp_unavailable", "{fault:?}: {err}");
    assert_eq!(broker.status()[0].state, ProfileState::Error);

    // The IdP comes back: count attempts from here on.
    w.idp.set_fault(Fault::None).await.unwrap();
    w.idp.reset_stats().await.unwrap();
    let fresh = eventually("recovery", || async {
        broker.token("dev", TokenRequest::default()).await.ok()
    })
    .await;
    assert_ne!(fresh.access_token, good.access_token);
    let r = w.idp.stats().await.unwrap().grant(GRANT_REFRESH_TOKEN);
    assert_eq!(
        (r.requests, r.ok),
        (1, 1),
        "{fault:?}: the first attempt after the IdP returned must succeed"
    );
    assert_eq!(broker.status()[0].state, ProfileState::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_serves_cached_then_idp_unavailable_then_recovers() {
    check_fault(Fault::Down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_5xx_serves_cached_then_idp_unavailable_then_recovers() {
    check_fault(Fault::ServerError(503)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_slow_serves_cached_then_idp_unavailable_then_recovers() {
    // The test options give up on an IdP request after 2 s.
    check_fault(Fault::Slow(Duration::from_secs(4))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_malformed_serves_cached_then_idp_unavailable_then_recovers() {
    check_fault(Fault::Malformed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_429_serves_cached_then_idp_unavailable_then_recovers() {
    check_fault(Fault::TooManyRequests {
        retry_after_secs: 1,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let w = World::new(300, dev_only).await;
    w.seed_login("dev", "alice").await;
    let broker = w.broker(opts(false)).await;
    w.idp
        .set_fault(Fault::TooManyRequests {
            retry_after_secs: 30,
        })
        .await
        .unwrap();
    w.idp.reset_stats().await.unwrap();
    let err = broker
        .token("dev", TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "idp_unavailable");
    assert!(err.to_string().contains("429"), "{err}");
    // Within the 30 s the IdP asked for, callers get the error without an IdP call.
    for _ in 0..50 {
        let e = broker
            .token("dev", TokenRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "idp_unavailable");
    }
    let r = w.idp.stats().await.unwrap().grant(GRANT_REFRESH_TOKEN);
    assert_eq!(r.requests, 1, "{r:?}");
}
