//! Cache and refresher under paused tokio time, with a small fake of the IdP flows: when the
//! refresher wakes, how the skew margin is kept, how backoff grows (capped, fully jittered,
//! never below Retry-After), that a stale token is served while the IdP fails, and that
//! concurrent callers make one IdP call.

use super::idp::{ClientAuth, DeviceAuthorization, FlowFuture, Flows, Grant, IdpError, Target};
use super::timing::Backoff;
use super::{Broker, BrokerOptions, ProfileState, TokenRequest};
use crate::config::Config;
use crate::paths::Paths;
use crate::secret::Secret;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Unavailable(Option<Duration>),
}

struct Fake {
    lifetime: Duration,
    delay: Duration,
    mode: Mutex<Mode>,
    calls: Mutex<Vec<Instant>>,
}

impl Fake {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            lifetime,
            delay: Duration::ZERO,
            mode: Mutex::new(Mode::Ok),
            calls: Mutex::new(Vec::new()),
        })
    }
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
    fn grant<'a>(&'a self) -> FlowFuture<'a, Grant> {
        Box::pin(async move {
            let n = {
                let mut c = self.calls.lock().unwrap();
                c.push(Instant::now());
                c.len()
            };
            tokio::time::sleep(self.delay).await;
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Ok => Ok(Grant {
                    access_token: Secret::new(format!("token-{n}")),
                    token_type: "Bearer".into(),
                    expires_in: Some(self.lifetime),
                    refresh_token: None,
                    scope: None,
                    identity: None,
                }),
                Mode::Unavailable(retry_after) => Err(IdpError::Unavailable {
                    detail: "fake IdP down".into(),
                    retry_after,
                }),
            }
        })
    }
}

impl Flows for Fake {
    fn issuer(&self) -> &str {
        "https://fake.invalid"
    }
    fn device_authorize<'a>(
        &'a self,
        _c: &'a ClientAuth,
        _t: &'a Target,
    ) -> FlowFuture<'a, DeviceAuthorization> {
        Box::pin(async { Err(IdpError::Unsupported("fake".into())) })
    }
    fn device_poll<'a>(
        &'a self,
        _c: &'a ClientAuth,
        _a: &'a DeviceAuthorization,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(async { Err(IdpError::Unsupported("fake".into())) })
    }
    fn refresh<'a>(
        &'a self,
        _c: &'a ClientAuth,
        _r: &'a Secret,
        _t: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        self.grant()
    }
    fn client_credentials<'a>(
        &'a self,
        _c: &'a ClientAuth,
        _t: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        self.grant()
    }
    fn exchange<'a>(
        &'a self,
        _c: &'a ClientAuth,
        _s: &'a Secret,
        _t: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        self.grant()
    }
    fn revoke<'a>(&'a self, _c: &'a ClientAuth, _t: &'a Secret) -> FlowFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

struct Setup {
    broker: Broker,
    _tmp: tempfile::TempDir,
}

async fn setup(fake: &Arc<Fake>, background: bool, backoff: Backoff) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let config: Config = toml::from_str(
        "[store]\nbackend = \"file\"\n[profiles.p]\ngrant = \"client-credentials\"\nissuer = \"https://fake.invalid\"\nclient_id = \"c\"\n",
    )
    .unwrap();
    let paths = Paths {
        config_files: vec![],
        state_dir: tmp.path().join("state"),
        runtime_dir: tmp.path().join("run"),
    };
    let f: Arc<dyn Flows> = fake.clone();
    let broker = Broker::start_with_flows(
        &config,
        &paths,
        BrokerOptions {
            http_timeout: Duration::from_secs(10),
            backoff,
            background_refresh: background,
        },
        &move |_| Ok(f.clone()),
    )
    .await
    .unwrap();
    Setup { broker, _tmp: tmp }
}

fn gaps(calls: &[Instant]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn refresher_renews_at_about_three_quarters_of_the_lifetime_with_jitter() {
    let fake = Fake::new(Duration::from_secs(100));
    let s = setup(&fake, true, Backoff::default()).await;
    let t1 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    // The first refresh after a start is spread over 10-80 % (here 10-75 s: the skew is
    // capped at 25 s), so agents that start together drift apart.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(fake.calls().len(), 1, "not before 10 % of the lifetime");
    tokio::time::sleep(Duration::from_secs(67)).await;
    assert_eq!(
        fake.calls().len(),
        2,
        "by 75 % (100 s token, skew capped at 25 s)"
    );
    let t2 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_ne!(t1.access_token, t2.access_token);
    assert_eq!(
        fake.calls().len(),
        2,
        "callers got the renewed token from the cache"
    );

    // Every later refresh at 70-75 % of the lifetime.
    tokio::time::sleep(Duration::from_secs(2000)).await;
    let g = gaps(&fake.calls()[1..]);
    assert!(g.len() >= 25, "{g:?}");
    assert!(
        g.iter()
            .all(|d| *d >= Duration::from_secs(70) && *d <= Duration::from_secs(75)),
        "{g:?}"
    );
    let distinct: std::collections::BTreeSet<_> = g.iter().map(|d| d.as_millis()).collect();
    assert!(distinct.len() > 1, "jittered, not all equal: {g:?}");
}

/// Many agents started at once: their first refreshes spread over 10-80 % of the lifetime
/// instead of bunching at 70-80 % (the fleet simulation's cause, seen in one process).
#[tokio::test(start_paused = true)]
async fn first_refreshes_after_a_start_spread_over_most_of_the_lifetime() {
    let mut firsts = Vec::new();
    for _ in 0..40 {
        let fake = Fake::new(Duration::from_secs(100));
        let s = setup(&fake, true, Backoff::default()).await;
        s.broker.token("p", TokenRequest::default()).await.unwrap();
        let started = tokio::time::Instant::now();
        while fake.calls().len() < 2 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        firsts.push(started.elapsed());
    }
    assert!(
        firsts
            .iter()
            .all(|d| *d >= Duration::from_secs(10) && *d <= Duration::from_secs(76)),
        "{firsts:?}"
    );
    // Uniform over 10-75 s: some land before the old 70 % floor, well before it.
    assert!(
        firsts
            .iter()
            .filter(|d| **d < Duration::from_secs(50))
            .count()
            >= 10,
        "{firsts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_is_never_handed_out_inside_the_skew_margin() {
    let fake = Fake::new(Duration::from_secs(100));
    let s = setup(&fake, false, Backoff::default()).await;
    let t1 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(74)).await;
    let same = s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(
        same.access_token, t1.access_token,
        "26 s left > 25 s margin"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t2 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_ne!(t2.access_token, t1.access_token, "24 s left < 25 s margin");
    // min_valid asks for more than the margin.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let t3 = s
        .broker
        .token(
            "p",
            TokenRequest {
                min_valid: Some(Duration::from_secs(80)),
            },
        )
        .await
        .unwrap();
    assert_ne!(t3.access_token, t2.access_token);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_exponential_with_full_jitter() {
    let fake = Fake::new(Duration::from_secs(100));
    fake.set(Mode::Unavailable(None));
    let backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(8),
    };
    let s = setup(&fake, true, backoff).await;
    let err = s
        .broker
        .token("p", TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "idp_unavailable");
    // Callers during the backoff get the error without an IdP call.
    for _ in 0..100 {
        assert!(s.broker.token("p", TokenRequest::default()).await.is_err());
    }
    assert_eq!(fake.calls().len(), 1);
    tokio::time::sleep(Duration::from_secs(300)).await;
    let g = gaps(&fake.calls());
    for (i, d) in g.iter().enumerate() {
        let attempt = u32::try_from(i + 1).unwrap();
        assert!(
            *d <= backoff.bound(attempt),
            "gap {i}: {d:?} > {:?}",
            backoff.bound(attempt)
        );
        assert!(*d >= Duration::from_millis(50), "gap {i}: {d:?}");
    }
    assert!(
        g.len() >= 300 / 8,
        "retries keep coming at the cap: {}",
        g.len()
    );
    let late: Vec<_> = g.iter().skip(5).collect();
    assert!(
        late.iter().any(|d| **d < Duration::from_secs(4)),
        "full jitter spreads: {late:?}"
    );
    assert_eq!(s.broker.status()[0].state, ProfileState::Error);

    // The IdP comes back: the next retry (within one step, at most the cap) succeeds.
    fake.set(Mode::Ok);
    let before = fake.calls().len();
    tokio::time::sleep(backoff.cap).await;
    assert_eq!(fake.calls().len(), before + 1);
    assert_eq!(s.broker.status()[0].state, ProfileState::Valid);
    s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(fake.calls().len(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_floor_of_the_backoff() {
    let fake = Fake::new(Duration::from_secs(100));
    fake.set(Mode::Unavailable(Some(Duration::from_secs(30))));
    let s = setup(&fake, true, Backoff::default()).await;
    assert!(s.broker.token("p", TokenRequest::default()).await.is_err());
    tokio::time::sleep(Duration::from_secs(600)).await;
    let g = gaps(&fake.calls());
    assert!(!g.is_empty());
    assert!(g.iter().all(|d| *d >= Duration::from_secs(30)), "{g:?}");
}

#[tokio::test(start_paused = true)]
async fn a_valid_token_is_served_while_the_idp_fails() {
    let fake = Fake::new(Duration::from_secs(1000));
    let s = setup(&fake, true, Backoff::default()).await;
    let t1 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    fake.set(Mode::Unavailable(None));
    tokio::time::sleep(Duration::from_secs(800)).await;
    assert!(fake.calls().len() > 1, "the refresher tried");
    let st = &s.broker.status()[0];
    assert_eq!(st.state, ProfileState::Stale, "{st:?}");
    let t = s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(t.access_token, t1.access_token);
    // Inside the 60 s margin the token is no longer handed out.
    tokio::time::sleep(Duration::from_secs(145)).await;
    let err = s
        .broker
        .token("p", TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "idp_unavailable");
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_idp_call() {
    let fake = Arc::new(Fake {
        lifetime: Duration::from_secs(100),
        delay: Duration::from_secs(1),
        mode: Mutex::new(Mode::Ok),
        calls: Mutex::new(Vec::new()),
    });
    let s = setup(&fake, true, Backoff::default()).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let b = s.broker.clone();
        set.spawn(async move { b.token("p", TokenRequest::default()).await });
    }
    let mut tokens = std::collections::BTreeSet::new();
    while let Some(r) = set.join_next().await {
        tokens.insert(r.unwrap().unwrap().access_token.fingerprint());
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(fake.calls().len(), 1);
}

/// Issue 19: the audit redactor knows the tokens of earlier rotations, not only the current
/// one (a command line may carry a token a script saved before a refresh), and forgets the
/// oldest past the bound.
#[tokio::test(start_paused = true)]
async fn known_tokens_keep_earlier_rotations_up_to_the_bound() {
    use super::slot::RECENT_SECRETS;
    let fake = Fake::new(Duration::from_secs(100));
    let s = setup(&fake, false, Backoff::default()).await;
    let mut issued = Vec::new();
    for _ in 0..RECENT_SECRETS + 3 {
        let t = s.broker.token("p", TokenRequest::default()).await.unwrap();
        issued.push(t.access_token.clone());
        // Past the skew margin: the next call refreshes.
        tokio::time::sleep(Duration::from_secs(80)).await;
    }
    let known = s.broker.known_tokens();
    assert_eq!(known.len(), RECENT_SECRETS);
    for (i, t) in issued.iter().enumerate() {
        assert_eq!(known.contains(t), i >= 3, "token {i} of {}", issued.len());
    }
    assert!(!format!("{known:?}").contains("token-"));
}
