//! Prometheus text metrics of the API, counted in-process without a metrics library.
//!
//! Labels are bounded: routes are counted by their template (`/v1/token/{profile}`), never
//! by raw path, and profiles come from the config. Token requests are counted here, by the
//! API, per profile and outcome (`ok` or the error code), because that is what the API sees;
//! remaining token lifetimes come from the broker's status. The text is written by
//! [`super::exposition`], one function per metric family (why no crate: see there).

use super::exposition::{Encoder, Kind};
use crate::broker::{ProfileStatus, RefreshStats};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Route templates counted with lock-free counters (anything else falls back to a map).
const ROUTES: [&str; 12] = [
    "/healthz",
    "/metrics",
    "/v1/status",
    "/v1/token/{profile}",
    "/v1/token/{profile}/invalidate",
    "/v1/login/{profile}",
    "/v1/catalog",
    "/v1/catalog/diff",
    "/v1/catalog/sync",
    "/v1/aws/credentials/{name}",
    "other",
    "",
];
/// Statuses counted with lock-free counters.
const STATUSES: [u16; 15] = [
    200, 202, 400, 401, 403, 404, 405, 409, 413, 421, 429, 431, 500, 502, 503,
];
/// Token request outcomes counted with lock-free counters.
const OUTCOMES: [&str; 6] = [
    "ok",
    "login_required",
    "idp_unavailable",
    "unsupported",
    "internal",
    "other",
];

/// Where `GET /v1/token/{profile}`, status 200 and outcome `ok` are counted (checked by a
/// test against the tables).
const TOKEN_ROUTE: usize = 3;
const STATUS_200: usize = 0;
const OK: usize = 0;

/// One profile's token-request counters by outcome, in one thread's shard.
#[derive(Clone, Default)]
pub struct TokenCounters(Arc<[AtomicU64; OUTCOMES.len()]>);

impl TokenCounters {
    /// Counts a token request answered `ok`.
    pub fn count_ok(&self) {
        self.0[OK].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct RouteCounters {
    by_status: [AtomicU64; STATUSES.len()],
    count: AtomicU64,
    nanos: AtomicU64,
}

/// Counter shards: each thread counts into its own, `render` sums them.
const SHARDS: usize = 8;

/// One thread's counters, on cache lines of their own.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    routes: [RouteCounters; ROUTES.len()],
    token_requests: RwLock<BTreeMap<String, Arc<[AtomicU64; OUTCOMES.len()]>>>,
}

/// The shard of the calling thread (threads take shards in turn).
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// Counters shared by every connection.
///
/// The hot path (a known route, a usual status, a known profile) is a few relaxed atomic
/// adds with no lock and no allocation, into the calling thread's shard: counters shared by
/// every worker thread bounced their cache lines between cores on every cache hit.
#[derive(Default)]
pub struct Metrics {
    shards: [Shard; SHARDS],
    unusual: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16, took: Duration) {
        let r = ROUTES.iter().position(|x| *x == route);
        let s = STATUSES.iter().position(|x| *x == status);
        let shard = &self.shards[shard_index()];
        match (r, s) {
            (Some(r), Some(s)) => {
                let c = &shard.routes[r];
                c.by_status[s].fetch_add(1, Ordering::Relaxed);
                c.count.fetch_add(1, Ordering::Relaxed);
                c.nanos.fetch_add(
                    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            _ => {
                if let Ok(mut m) = self.unusual.lock() {
                    *m.entry((route, status)).or_default() += 1;
                }
                if let Some(r) = r {
                    let c = &shard.routes[r];
                    c.count.fetch_add(1, Ordering::Relaxed);
                    c.nanos.fetch_add(
                        u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                }
            }
        }
    }

    /// Counts one token request of a profile by outcome (`ok` or an error code).
    pub fn record_token(&self, profile: &str, outcome: &'static str) {
        let o = OUTCOMES
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.token_counters(profile).0[o].fetch_add(1, Ordering::Relaxed);
    }

    /// The calling thread's counters of `profile`'s token requests, for a thread that keeps
    /// them with its copy of the profile's token ([`super::token_body`]) and counts its cache
    /// hits there ([`TokenCounters::count_ok`]), without a lock or a map lookup.
    pub fn token_counters(&self, profile: &str) -> TokenCounters {
        let shard = &self.shards[shard_index()];
        if let Ok(m) = shard.token_requests.read()
            && let Some(c) = m.get(profile)
        {
            return TokenCounters(c.clone());
        }
        match shard.token_requests.write() {
            Ok(mut m) => TokenCounters(m.entry(profile.to_string()).or_default().clone()),
            // A poisoned map cannot be counted into; these counts are then lost, not the
            // request.
            Err(_) => TokenCounters::default(),
        }
    }

    /// Counts a request of `GET /v1/token/{profile}` answered 200 in `took` (the cache hit;
    /// its token request is counted with [`TokenCounters::count_ok`]).
    pub fn record_token_route_ok(&self, took: Duration) {
        let c = &self.shards[shard_index()].routes[TOKEN_ROUTE];
        c.by_status[STATUS_200].fetch_add(1, Ordering::Relaxed);
        c.count.fetch_add(1, Ordering::Relaxed);
        c.nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Renders everything in the Prometheus text exposition format (0.0.4), one family
    /// after another in a fixed order (scrapers do not care, people reading it do).
    pub fn render(
        &self,
        profiles: &[ProfileStatus],
        refreshes: &[RefreshStats],
        uptime: Duration,
        now: SystemTime,
    ) -> String {
        let mut e = Encoder::default();
        e.family("stagepass_up", Kind::Gauge, "The agent answers.");
        e.sample("stagepass_up", &[], 1);
        e.family(
            "stagepass_uptime_seconds",
            Kind::Gauge,
            "Seconds since the agent started.",
        );
        e.sample("stagepass_uptime_seconds", &[], uptime.as_secs());
        self.api_requests(&mut e);
        self.api_request_durations(&mut e);
        self.token_requests(&mut e);
        token_lifetimes(&mut e, profiles, now);
        refresh_outcomes(&mut e, refreshes);
        refresh_durations(&mut e, refreshes);
        profile_states(&mut e, profiles);
        e.finish()
    }

    /// `stagepass_api_requests_total`: the shards' route/status counters summed, plus the
    /// unusual pairs counted in the map.
    fn api_requests(&self, e: &mut Encoder) {
        let name = "stagepass_api_requests_total";
        e.family(
            name,
            Kind::Counter,
            "API requests answered, by route template and HTTP status.",
        );
        let mut by_status: BTreeMap<(&str, u16), u64> = BTreeMap::new();
        for shard in &self.shards {
            for (route, c) in ROUTES.iter().zip(&shard.routes) {
                for (status, n) in STATUSES.iter().zip(&c.by_status) {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        *by_status.entry((route, *status)).or_default() += n;
                    }
                }
            }
        }
        if let Ok(m) = self.unusual.lock() {
            for (k, n) in m.iter() {
                *by_status.entry(*k).or_default() += n;
            }
        }
        for ((route, status), n) in &by_status {
            let status = status.to_string();
            e.sample(name, &[("route", route), ("status", &status)], n);
        }
    }

    /// `stagepass_api_request_duration_seconds`: time per known route, routes never asked
    /// left out.
    fn api_request_durations(&self, e: &mut Encoder) {
        let name = "stagepass_api_request_duration_seconds";
        e.family(
            name,
            Kind::Summary,
            "Time spent answering API requests, by route.",
        );
        for (i, route) in ROUTES.iter().enumerate() {
            let (count, nanos) = self.shards.iter().fold((0u64, 0u64), |(n, t), s| {
                let c = &s.routes[i];
                (
                    n.saturating_add(c.count.load(Ordering::Relaxed)),
                    t.saturating_add(c.nanos.load(Ordering::Relaxed)),
                )
            });
            if count == 0 {
                continue;
            }
            let sum = Duration::from_nanos(nanos).as_secs_f64();
            e.sample(&format!("{name}_sum"), &[("route", route)], sum);
            e.sample(&format!("{name}_count"), &[("route", route)], count);
        }
    }

    /// `stagepass_token_requests_total`: the shards' per-profile outcome counters summed;
    /// outcomes never seen left out.
    fn token_requests(&self, e: &mut Encoder) {
        let name = "stagepass_token_requests_total";
        e.family(
            name,
            Kind::Counter,
            "Token requests through the API, by profile and outcome.",
        );
        let mut tokens: BTreeMap<String, [u64; OUTCOMES.len()]> = BTreeMap::new();
        for shard in &self.shards {
            if let Ok(m) = shard.token_requests.read() {
                for (profile, counters) in m.iter() {
                    let sum = tokens.entry(profile.clone()).or_default();
                    for (s, n) in sum.iter_mut().zip(counters.iter()) {
                        *s = s.saturating_add(n.load(Ordering::Relaxed));
                    }
                }
            }
        }
        for (profile, counters) in &tokens {
            for (outcome, n) in OUTCOMES.iter().zip(counters.iter()) {
                if *n > 0 {
                    e.sample(name, &[("profile", profile), ("outcome", outcome)], n);
                }
            }
        }
    }
}

/// `stagepass_token_expires_in_seconds`: from the broker's status, profiles without a
/// cached token left out.
fn token_lifetimes(e: &mut Encoder, profiles: &[ProfileStatus], now: SystemTime) {
    let name = "stagepass_token_expires_in_seconds";
    e.family(
        name,
        Kind::Gauge,
        "Remaining lifetime of each profile's cached token.",
    );
    for p in profiles {
        if let Some(left) = p
            .expires_at
            .as_deref()
            .and_then(|e| crate::timefmt::seconds_until(e, now))
        {
            e.sample(name, &[("profile", &p.profile)], left);
        }
    }
}

/// `stagepass_refreshes_total`: every outcome of every profile, zeros included.
fn refresh_outcomes(e: &mut Encoder, refreshes: &[RefreshStats]) {
    let name = "stagepass_refreshes_total";
    e.family(
        name,
        Kind::Counter,
        "Token refreshes at the IdP, by profile and outcome.",
    );
    for r in refreshes {
        for (outcome, n) in [
            ("ok", r.ok),
            ("login_required", r.login_required),
            ("idp_unavailable", r.idp_unavailable),
            ("error", r.error),
        ] {
            e.sample(name, &[("profile", &r.profile), ("outcome", outcome)], n);
        }
    }
}

/// `stagepass_refresh_duration_seconds`: the count is every refresh, whatever its outcome.
fn refresh_durations(e: &mut Encoder, refreshes: &[RefreshStats]) {
    let name = "stagepass_refresh_duration_seconds";
    e.family(
        name,
        Kind::Summary,
        "Time spent refreshing: the IdP round trip plus persisting a rotated grant.",
    );
    for r in refreshes {
        let count = r.ok + r.login_required + r.idp_unavailable + r.error;
        let labels = [("profile", r.profile.as_str())];
        e.sample(&format!("{name}_sum"), &labels, r.duration.as_secs_f64());
        e.sample(&format!("{name}_count"), &labels, count);
    }
}

/// `stagepass_profile_state`: one sample per profile, labelled with its state's wire name.
fn profile_states(e: &mut Encoder, profiles: &[ProfileStatus]) {
    let name = "stagepass_profile_state";
    e.family(
        name,
        Kind::Gauge,
        "Current state of each profile (1 for the state it is in).",
    );
    for p in profiles {
        let state = serde_json::to_value(p.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        e.sample(name, &[("profile", &p.profile), ("state", &state)], 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_counters_name_the_token_route_200_and_ok() {
        assert_eq!(ROUTES[TOKEN_ROUTE], "/v1/token/{profile}");
        assert_eq!(STATUSES[STATUS_200], 200);
        assert_eq!(OUTCOMES[OK], "ok");
        // A hit counts exactly like the general path.
        let (a, b) = (Metrics::default(), Metrics::default());
        a.record_token("dev", "ok");
        a.record_request("/v1/token/{profile}", 200, Duration::from_millis(2));
        b.token_counters("dev").count_ok();
        b.record_token_route_ok(Duration::from_millis(2));
        let render = |m: &Metrics| m.render(&[], &[], Duration::ZERO, SystemTime::UNIX_EPOCH);
        assert_eq!(render(&a), render(&b));
    }
    use crate::broker::ProfileState;

    /// A device profile, valid, expiring 1200 s after the tests' fixed `now`.
    fn backstage_valid() -> ProfileStatus {
        ProfileStatus {
            profile: "backstage".into(),
            grant: "device".into(),
            state: ProfileState::Valid,
            reason: None,
            expires_at: Some("2023-11-14T22:33:20Z".into()),
            token_fingerprint: None,
            identity: None,
        }
    }

    #[test]
    fn renders_counters_and_lifetimes() {
        let m = Metrics::default();
        m.record_request("/v1/token/{profile}", 200, Duration::from_millis(2));
        m.record_request("/v1/token/{profile}", 200, Duration::from_millis(2));
        m.record_request("/v1/status", 401, Duration::from_millis(1));
        m.record_token("back\"stage", "ok");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = backstage_valid();
        let r = RefreshStats {
            profile: "backstage".into(),
            ok: 3,
            idp_unavailable: 1,
            duration: Duration::from_millis(200),
            ..RefreshStats::default()
        };
        let text = m.render(&[p], &[r], Duration::from_secs(5), now);
        assert!(text.contains("stagepass_refreshes_total{profile=\"backstage\",outcome=\"ok\"} 3"));
        assert!(text.contains(
            "stagepass_refreshes_total{profile=\"backstage\",outcome=\"idp_unavailable\"} 1"
        ));
        assert!(text.contains("stagepass_refresh_duration_seconds_count{profile=\"backstage\"} 4"));
        assert!(text.contains("stagepass_refresh_duration_seconds_sum{profile=\"backstage\"} 0.2"));
        assert!(
            text.contains(
                "stagepass_api_requests_total{route=\"/v1/token/{profile}\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("stagepass_api_requests_total{route=\"/v1/status\",status=\"401\"} 1")
        );
        assert!(text.contains(
            "stagepass_token_requests_total{profile=\"back\\\"stage\",outcome=\"ok\"} 1"
        ));
        assert!(
            text.contains("stagepass_token_expires_in_seconds{profile=\"backstage\"} 1200"),
            "{text}"
        );
        assert!(text.contains("stagepass_profile_state{profile=\"backstage\",state=\"valid\"} 1"));
    }

    /// The whole text for a fixed input, byte for byte: how every family is written (HELP,
    /// TYPE, sample order, label escaping) is part of the scrape contract.
    #[test]
    fn renders_the_exposition_text_exactly() {
        let m = Metrics::default();
        m.record_request("/v1/token/{profile}", 200, Duration::from_millis(2));
        m.record_request("/v1/status", 401, Duration::from_millis(1));
        m.record_request("/v1/odd", 299, Duration::from_millis(1));
        m.record_token("back\"stage", "ok");
        m.record_token("dev", "login_required");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = backstage_valid();
        let r = RefreshStats {
            profile: "backstage".into(),
            ok: 3,
            idp_unavailable: 1,
            duration: Duration::from_millis(250),
            ..RefreshStats::default()
        };
        let text = m.render(&[p], &[r], Duration::from_secs(5), now);
        assert_eq!(text, GOLDEN, "{text}");
    }

    const GOLDEN: &str = r#"# HELP stagepass_up The agent answers.
# TYPE stagepass_up gauge
stagepass_up 1
# HELP stagepass_uptime_seconds Seconds since the agent started.
# TYPE stagepass_uptime_seconds gauge
stagepass_uptime_seconds 5
# HELP stagepass_api_requests_total API requests answered, by route template and HTTP status.
# TYPE stagepass_api_requests_total counter
stagepass_api_requests_total{route="/v1/odd",status="299"} 1
stagepass_api_requests_total{route="/v1/status",status="401"} 1
stagepass_api_requests_total{route="/v1/token/{profile}",status="200"} 1
# HELP stagepass_api_request_duration_seconds Time spent answering API requests, by route.
# TYPE stagepass_api_request_duration_seconds summary
stagepass_api_request_duration_seconds_sum{route="/v1/status"} 0.001
stagepass_api_request_duration_seconds_count{route="/v1/status"} 1
stagepass_api_request_duration_seconds_sum{route="/v1/token/{profile}"} 0.002
stagepass_api_request_duration_seconds_count{route="/v1/token/{profile}"} 1
# HELP stagepass_token_requests_total Token requests through the API, by profile and outcome.
# TYPE stagepass_token_requests_total counter
stagepass_token_requests_total{profile="back\"stage",outcome="ok"} 1
stagepass_token_requests_total{profile="dev",outcome="login_required"} 1
# HELP stagepass_token_expires_in_seconds Remaining lifetime of each profile's cached token.
# TYPE stagepass_token_expires_in_seconds gauge
stagepass_token_expires_in_seconds{profile="backstage"} 1200
# HELP stagepass_refreshes_total Token refreshes at the IdP, by profile and outcome.
# TYPE stagepass_refreshes_total counter
stagepass_refreshes_total{profile="backstage",outcome="ok"} 3
stagepass_refreshes_total{profile="backstage",outcome="login_required"} 0
stagepass_refreshes_total{profile="backstage",outcome="idp_unavailable"} 1
stagepass_refreshes_total{profile="backstage",outcome="error"} 0
# HELP stagepass_refresh_duration_seconds Time spent refreshing: the IdP round trip plus persisting a rotated grant.
# TYPE stagepass_refresh_duration_seconds summary
stagepass_refresh_duration_seconds_sum{profile="backstage"} 0.25
stagepass_refresh_duration_seconds_count{profile="backstage"} 4
# HELP stagepass_profile_state Current state of each profile (1 for the state it is in).
# TYPE stagepass_profile_state gauge
stagepass_profile_state{profile="backstage",state="valid"} 1
"#;
}
