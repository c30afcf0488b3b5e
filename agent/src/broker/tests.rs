//! Cache and refresher under paused tokio time, with a small fake of the IdP flows: when the
//! refresher wakes, how the skew margin is kept, how backoff grows (capped, fully jittered,
//! never below Retry-After), that a stale token is served while the IdP fails, that
//! concurrent callers make one IdP call, that waiting callers retry early (rate limited, single
//! flight) while the backoff runs, and that a restart serves a stored access token.

use super::idp::{ClientAuth, FlowFuture, Flows, Grant, IdpError, Target};
use super::timing::Backoff;
use super::{Broker, BrokerOptions, ProfileState, TokenRequest};
use crate::config::Config;
use crate::paths::Paths;
use crate::secret::Secret;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Calls being answered now, and the most seen at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Answer every grant with a new refresh token (`rt-N`), as Backstage rotates them.
    rotating: std::sync::atomic::AtomicBool,
}

impl Fake {
    fn new(lifetime: Duration) -> Arc<Self> {
        Self::with_delay(lifetime, Duration::ZERO)
    }
    fn with_delay(lifetime: Duration, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            lifetime,
            delay,
            mode: Mutex::new(Mode::Ok),
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            rotating: std::sync::atomic::AtomicBool::new(false),
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
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Ok => Ok(Grant {
                    access_token: Secret::new(format!("token-{n}")),
                    token_type: "Bearer".into(),
                    expires_in: Some(self.lifetime),
                    refresh_token: self
                        .rotating
                        .load(Ordering::SeqCst)
                        .then(|| Secret::new(format!("rt-{}", n + 1))),
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
    tmp: tempfile::TempDir,
}

const CLIENT_CREDENTIALS: &str = "[store]\nbackend = \"file\"\n[profiles.p]\ngrant = \"client-credentials\"\nissuer = \"https://fake.invalid\"\nclient_id = \"c\"\n";

async fn setup(fake: &Arc<Fake>, background: bool, backoff: Backoff) -> Setup {
    setup_in(
        fake,
        background,
        backoff,
        CLIENT_CREDENTIALS,
        tempfile::tempdir().unwrap(),
    )
    .await
}

/// A broker over `config` (TOML) with its state in `tmp` (kept across "restarts").
async fn setup_in(
    fake: &Arc<Fake>,
    background: bool,
    backoff: Backoff,
    config: &str,
    tmp: tempfile::TempDir,
) -> Setup {
    let config: Config = toml::from_str(config).unwrap();
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
    Setup { broker, tmp }
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
    let fake = Fake::with_delay(Duration::from_secs(100), Duration::from_secs(1));
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

// ---- Waiting callers while the backoff runs (issue 23) ----

/// The slot's failure state: (attempts, retry_at).
fn backoff_state(s: &Setup) -> (u32, Option<Instant>) {
    let slot = s.broker.inner.slot("p").unwrap();
    let st = slot.st.lock().unwrap();
    st.failure
        .as_ref()
        .map_or((0, None), |f| (f.attempts, f.retry_at))
}

/// Lets the background refresher fail until its next retry is more than `far` away.
async fn drive_backoff_past(s: &Setup, far: Duration) {
    for _ in 0..100_000 {
        if let (_, Some(r)) = backoff_state(s)
            && r > Instant::now() + far
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the backoff never grew past {far:?}");
}

/// Callers arriving every 100 ms while the IdP is down and the background backoff is long:
/// at most one IdP call per `DEMAND_RETRY`, and neither the backoff's step count nor its next
/// retry moves. Then the IdP answers again: a caller has a fresh token within `DEMAND_RETRY`
/// of that, although the background retry is still minutes away.
#[tokio::test(start_paused = true)]
async fn waiting_callers_retry_rate_limited_and_recover_whatever_the_backoff() {
    let fake = Fake::new(Duration::from_secs(1000));
    fake.set(Mode::Unavailable(None));
    let s = setup(&fake, true, Backoff::default()).await;
    assert!(s.broker.token("p", TokenRequest::default()).await.is_err());
    drive_backoff_past(&s, Duration::from_secs(60)).await;
    let (attempts, retry_at) = backoff_state(&s);

    // 30 s of callers during the outage.
    let before = fake.calls().len();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let e = s
            .broker
            .token("p", TokenRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "idp_unavailable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during: Vec<Instant> = fake.calls()[before..].to_vec();
    let limit = super::timing::DEMAND_RETRY;
    assert!(
        (9..=11).contains(&during.len()),
        "one caller-driven attempt per {limit:?} over 30 s: {}",
        during.len()
    );
    assert!(
        gaps(&during).iter().all(|g| *g >= limit),
        "{:?}",
        gaps(&during)
    );
    assert_eq!(
        backoff_state(&s),
        (attempts, retry_at),
        "the background backoff is untouched by callers' attempts"
    );

    // The IdP is back; the background retry is still far away.
    fake.set(Mode::Ok);
    let back = Instant::now();
    assert!(retry_at.unwrap() > back + Duration::from_secs(25));
    let t = loop {
        if let Ok(t) = s.broker.token("p", TokenRequest::default()).await {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        back.elapsed() <= limit,
        "recovered {:?} after the IdP's return",
        back.elapsed()
    );
    assert_eq!(t.profile, "p");
    assert_eq!(s.broker.status()[0].state, ProfileState::Valid);
    assert_eq!(backoff_state(&s), (0, None), "a success clears the failure");
}

/// The IdP's Retry-After holds for waiting callers too.
#[tokio::test(start_paused = true)]
async fn waiting_callers_honour_retry_after() {
    let fake = Fake::new(Duration::from_secs(1000));
    fake.set(Mode::Unavailable(Some(Duration::from_secs(20))));
    let s = setup(&fake, false, Backoff::default()).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(100) {
        assert!(s.broker.token("p", TokenRequest::default()).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let g = gaps(&fake.calls());
    assert!(g.len() >= 3, "{g:?}");
    assert!(g.iter().all(|d| *d >= Duration::from_secs(20)), "{g:?}");
}

/// Crowds of callers and the background refresher, all during an outage with a slow IdP:
/// never two IdP calls of one profile at once, and a crowd arriving together makes one call.
#[tokio::test(start_paused = true)]
async fn waiting_callers_and_the_refresher_share_one_flight() {
    let fake = Fake::with_delay(Duration::from_secs(1000), Duration::from_secs(2));
    fake.set(Mode::Unavailable(None));
    let backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(8),
    };
    let s = setup(&fake, true, backoff).await;
    assert!(s.broker.token("p", TokenRequest::default()).await.is_err());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20u64 {
        let b = s.broker.clone();
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(37 * i)).await;
            for _ in 0..600 {
                let _ = b.token("p", TokenRequest::default()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    assert!(fake.calls().len() > 20, "{}", fake.calls().len());
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);

    // 200 callers at one instant, eligible for an early attempt: one IdP call. (The background
    // retry is moved out of the way so that its own attempt is not counted here.)
    {
        let slot = s.broker.inner.slot("p").unwrap();
        let mut st = slot.st.lock().unwrap();
        let f = st.failure.as_mut().unwrap();
        f.retry_at = Some(Instant::now() + Duration::from_secs(600));
    }
    tokio::time::sleep(super::timing::DEMAND_RETRY).await;
    let before = fake.calls().len();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let b = s.broker.clone();
        set.spawn(async move { b.token("p", TokenRequest::default()).await.is_err() });
    }
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap());
    }
    assert_eq!(fake.calls().len(), before + 1);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);
}

// ---- A stored access token across restarts (issue 23) ----

const DEVICE: &str = "[store]\nbackend = \"file\"\n[profiles.p]\ngrant = \"device\"\nissuer = \"https://fake.invalid\"\nclient_id = \"c\"\nscopes = [\"openid\", \"offline_access\"]\naudience = \"urn:a\"\n";

/// A state dir holding a login of profile `p` at the fake IdP, as a device login leaves it.
async fn seeded() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let config: Config = toml::from_str(DEVICE).unwrap();
    let store = crate::store::GrantStore::open(&config.store, &tmp.path().join("state"))
        .await
        .unwrap();
    store
        .save(
            "p",
            &crate::store::StoredGrant::new("https://fake.invalid", "c", "rt-1", None),
        )
        .unwrap();
    tmp
}

fn record(tmp: &tempfile::TempDir) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(tmp.path().join("state/grants/p.json")).unwrap()).unwrap()
}

/// Start, token (one refresh), stop; start again: the stored token is served with no IdP call,
/// also by the boot refresh, and renewed by the refresher on its schedule, not before.
#[tokio::test(start_paused = true)]
async fn a_restart_within_the_stored_tokens_life_calls_the_idp_zero_times() {
    let fake = Fake::new(Duration::from_secs(3600));
    let s = setup_in(&fake, true, Backoff::default(), DEVICE, seeded().await).await;
    s.broker.boot_refresh().await;
    let t1 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(record(&s.tmp)["refresh_token"], "rt-1");
    assert_eq!(
        record(&s.tmp)["access"]["access_token"],
        t1.access_token.expose()
    );
    let refresh_at_ms = record(&s.tmp)["access"]["refresh_at_ms"].as_u64().unwrap();
    let Setup { broker, tmp } = s;
    drop(broker);

    let s = setup_in(&fake, true, Backoff::default(), DEVICE, tmp).await;
    assert_eq!(s.broker.status()[0].state, ProfileState::Valid);
    s.broker.boot_refresh().await;
    let t2 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(t2.access_token, t1.access_token);
    assert_eq!(fake.calls().len(), 1, "no IdP call at the second start");
    // The refresh comes when the first run planned it (its wall-clock time, now on the
    // paused monotonic clock: no wall time passed).
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let due = Duration::from_millis(refresh_at_ms.saturating_sub(now_ms));
    tokio::time::sleep(due.saturating_sub(Duration::from_secs(1))).await;
    assert_eq!(fake.calls().len(), 1, "not before its planned refresh");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.calls().len(), 2, "renewed on its schedule");
}

/// A stored access token is not served after the profile's scopes or audience changed, nor
/// when it is malformed; the refresh token is kept and used, and the record rewritten.
#[tokio::test(start_paused = true)]
async fn a_stored_token_of_another_configuration_or_malformed_is_discarded_not_the_login() {
    let fake = Fake::new(Duration::from_secs(3600));
    let s = setup_in(&fake, false, Backoff::default(), DEVICE, seeded().await).await;
    s.broker.token("p", TokenRequest::default()).await.unwrap();
    let Setup { broker, tmp } = s;
    drop(broker);
    assert!(record(&tmp)["access"].is_object());

    // Another audience: not served, gone from the record at start, the login kept.
    let other = DEVICE.replace("urn:a", "urn:b");
    let s = setup_in(&fake, false, Backoff::default(), &other, tmp).await;
    assert!(record(&s.tmp).get("access").is_none(), "{}", record(&s.tmp));
    assert_eq!(record(&s.tmp)["refresh_token"], "rt-1");
    s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(fake.calls().len(), 2);
    let Setup { broker, tmp } = s;
    drop(broker);

    // Other scopes.
    let other = DEVICE.replace("\"openid\", ", "");
    let s = setup_in(&fake, false, Backoff::default(), &other, tmp).await;
    s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(fake.calls().len(), 3);
    let Setup { broker, tmp } = s;
    drop(broker);

    // Malformed access parts: each start refreshes with the kept refresh token, no panic.
    let mut tmp = tmp;
    for bad in [
        serde_json::json!("not an object"),
        serde_json::json!({"access_token": 5}),
        serde_json::json!({"access_token": "x", "token_type": "Bearer", "issued_at_ms": 9, "expires_at_ms": 1, "refresh_at_ms": 5}),
    ] {
        let mut v = record(&tmp);
        v["access"] = bad.clone();
        std::fs::write(
            tmp.path().join("state/grants/p.json"),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap();
        let n = fake.calls().len();
        let s = setup_in(&fake, false, Backoff::default(), DEVICE, tmp).await;
        assert!(record(&s.tmp).get("access").is_none(), "{bad}");
        assert_eq!(record(&s.tmp)["refresh_token"], "rt-1");
        s.broker.token("p", TokenRequest::default()).await.unwrap();
        assert_eq!(fake.calls().len(), n + 1, "{bad}");
        let Setup { broker, tmp: t } = s;
        drop(broker);
        tmp = t;
    }
}

/// A token a server refused (git's `erase`) is gone from the store too: the next start
/// refreshes instead of serving it again.
#[tokio::test(start_paused = true)]
async fn an_invalidated_token_is_not_served_again_after_a_restart() {
    let fake = Fake::new(Duration::from_secs(3600));
    let s = setup_in(&fake, false, Backoff::default(), DEVICE, seeded().await).await;
    let t1 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    s.broker
        .invalidate("p", &t1.access_token.fingerprint())
        .await
        .unwrap();
    assert!(record(&s.tmp).get("access").is_none(), "{}", record(&s.tmp));
    let Setup { broker, tmp } = s;
    drop(broker);
    let s = setup_in(&fake, false, Backoff::default(), DEVICE, tmp).await;
    let t2 = s.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_ne!(t2.access_token, t1.access_token);
    assert_eq!(fake.calls().len(), 2);
}

/// A stored token of a login older than `policy.max_grant_age` is not adopted: not even the
/// lock-free cache path (the API's hot path) sees it before a request enforces the age.
#[tokio::test(start_paused = true)]
async fn a_stored_token_of_a_too_old_login_is_not_served() {
    let fake = Fake::new(Duration::from_secs(3600));
    let s = setup_in(&fake, false, Backoff::default(), DEVICE, seeded().await).await;
    s.broker.token("p", TokenRequest::default()).await.unwrap();
    let Setup { broker, tmp } = s;
    drop(broker);
    // The login happened two days ago; the profile now allows 12 h.
    let mut v = record(&tmp);
    v["logged_in_at"] = serde_json::json!(v["updated_at"].as_u64().unwrap() - 2 * 86_400);
    std::fs::write(
        tmp.path().join("state/grants/p.json"),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    let aged = format!("{DEVICE}[profiles.p.policy]\nmax_grant_age = \"12h\"\n");
    let s = setup_in(&fake, false, Backoff::default(), &aged, tmp).await;
    let hot = s.broker.hot("p").unwrap();
    assert_eq!(hot.usable_version(None, Instant::now()), None);
    let e = s
        .broker
        .token("p", TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "login_required");
    assert_eq!(fake.calls().len(), 1);
}

const AUTHORIZATION_CODE: &str = "[store]\nbackend = \"file\"\n[profiles.p]\ngrant = \"authorization-code\"\nissuer = \"https://fake.invalid\"\nclient_id = \"c\"\nscopes = [\"openid\", \"offline_access\"]\n";

/// Issue 22: an authorization-code profile (Backstage's rotating refresh tokens, where two
/// refreshes at once would spend the same refresh token twice) makes exactly one refresh for
/// many concurrent callers, and stores the one rotated refresh token it got.
#[tokio::test(start_paused = true)]
async fn concurrent_callers_of_an_authorization_code_profile_make_one_refresh() {
    let fake = Fake::with_delay(Duration::from_secs(3600), Duration::from_secs(1));
    fake.rotating.store(true, Ordering::SeqCst);
    let s = setup_in(
        &fake,
        false,
        Backoff::default(),
        AUTHORIZATION_CODE,
        seeded().await,
    )
    .await;
    assert_eq!(record(&s.tmp)["refresh_token"], "rt-1");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let b = s.broker.clone();
        set.spawn(async move { b.token("p", TokenRequest::default()).await });
    }
    let mut tokens = std::collections::BTreeSet::new();
    while let Some(r) = set.join_next().await {
        tokens.insert(r.unwrap().unwrap().access_token.fingerprint());
    }
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    assert_eq!(fake.calls().len(), 1, "exactly one refresh");
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(
        record(&s.tmp)["refresh_token"],
        "rt-2",
        "the one rotated refresh token is stored"
    );
}
