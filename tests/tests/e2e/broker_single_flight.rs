//! Single flight against the real IdP: 500 concurrent callers on an expired token cause
//! exactly one refresh (counted by the IdP) and all get the same fresh token.
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{World, dev_only, opts};
use stagepass::broker::TokenRequest;
use stagepass_e2e::idp::GRANT_REFRESH_TOKEN;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_callers_on_an_expired_token_cause_one_refresh() {
    // 2 s access tokens; no background refresher, so the token really expires.
    let w = World::new(2, dev_only).await;
    w.seed_login("dev", "alice").await;
    let broker = w.broker(opts(false)).await;
    let first = broker.token("dev", TokenRequest::default()).await.unwrap();
    let exp = first.expires_at.unwrap();
    // Wait until the token has expired (setup, not a measured threshold).
    while std::time::SystemTime::now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.idp.reset_stats().await.unwrap();

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(500));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let b = broker.clone();
        let barrier = barrier.clone();
        set.spawn(async move {
            barrier.wait().await;
            b.token("dev", TokenRequest::default()).await
        });
    }
    let mut fingerprints = std::collections::BTreeSet::new();
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        let t = r.unwrap().unwrap();
        fingerprints.insert(t.access_token.fingerprint());
        n += 1;
    }
    assert_eq!(n, 500);
    assert_eq!(fingerprints.len(), 1, "all callers get the same token");
    assert!(!fingerprints.contains(&first.access_token.fingerprint()));
    let stats = w.idp.stats().await.unwrap();
    let r = stats.grant(GRANT_REFRESH_TOKEN);
    assert_eq!(r.requests, 1, "exactly one refresh at the IdP: {stats:?}");
    assert_eq!(r.ok, 1);
}
