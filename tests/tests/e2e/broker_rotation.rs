//! Refresh-token rotation with 2 s access tokens over 200+ refresh cycles: the IdP revokes
//! the whole grant if a refresh token is ever used twice, so `invalid_grant` must never
//! appear. Refreshes are driven by `min_valid` (a fresh 2 s token never has 2 s left), with
//! the background refresher running too, and with two brokers sharing one state dir (two
//! agents on one grant), which only the cross-process grant lock keeps apart.
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{World, dev_only, opts};
use stagepass::broker::TokenRequest;
use stagepass_e2e::idp::GRANT_REFRESH_TOKEN;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_rotations_never_invalid_grant() {
    let w = World::new(2, dev_only).await;
    w.seed_login("dev", "alice").await;
    let a = w.broker(opts(true)).await;
    let b = w.broker(opts(true)).await;
    let force = TokenRequest {
        min_valid: Some(Duration::from_secs(2)),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for broker in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..60 {
                let t = broker.token("dev", force).await.unwrap();
                seen.push(t.access_token.fingerprint());
            }
            seen
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    assert_eq!(all.len(), 240);
    let stats = w.idp.stats().await.unwrap();
    let r = stats.grant(GRANT_REFRESH_TOKEN);
    assert!(
        r.errors.is_empty(),
        "no refresh may fail (invalid_grant would mean a reused refresh token): {stats:?}"
    );
    assert!(r.ok >= 200, "at least 200 rotations happened: {stats:?}");
    // The grant is still alive after all of it: a third agent starts from the store.
    let c = w.broker(opts(false)).await;
    c.boot_refresh().await;
    c.token("dev", TokenRequest::default()).await.unwrap();
    assert!(
        w.idp
            .stats()
            .await
            .unwrap()
            .grant(GRANT_REFRESH_TOKEN)
            .errors
            .is_empty()
    );
}
