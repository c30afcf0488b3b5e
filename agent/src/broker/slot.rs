//! One profile at run time: its cached token, its failure state, the single-flight refresh
//! and the background refresher.
//!
//! Single flight: callers that find no usable token queue on one async mutex; the first one
//! refreshes, the rest find the fresh token when they get the mutex and return it without an
//! IdP call. The fast path (a usable token is cached) takes a short std mutex and clones.

use super::idp::{ClientAuth, Flows, Grant, IdpError, Target};
use super::timing::{self, Backoff};
use super::{BrokerError, IssuedToken, ProfileState, ProfileStatus, TokenRequest};
use crate::config::{GrantKind, ProfileConfig, SecretSource};
use crate::secret::Secret;
use crate::store::{GrantStore, StoredAccess, StoredGrant};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A token in the cache, with the instants that govern it.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) issued: Arc<IssuedToken>,
    pub(super) fingerprint: String,
    /// When it expires (monotonic), if known.
    pub(super) expires: Option<Instant>,
    /// When the refresher should renew it.
    pub(super) refresh_at: Option<Instant>,
    /// The margin below which it is no longer handed out.
    pub(super) skew: Duration,
    /// Who signed in, when the answer carried an ID token.
    pub(super) identity: Option<super::idp::Identity>,
    /// Its whole lifetime (after `policy.max_token_lifetime`), if known: kept at rest with it.
    pub(super) lifetime: Option<Duration>,
}

impl Cached {
    /// Usable for a caller needing `min_valid` more time (at least the skew margin).
    fn usable(&self, now: Instant, min_valid: Option<Duration>) -> bool {
        match self.expires {
            None => true,
            Some(exp) => {
                let need = self.skew.max(min_valid.unwrap_or_default());
                exp.saturating_duration_since(now) > need
            }
        }
    }
}

/// Why the last attempt failed, and when the next may happen.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) kind: FailKind,
    pub(super) reason: String,
    pub(super) attempts: u32,
    /// When the background refresher tries again (the backoff).
    pub(super) retry_at: Option<Instant>,
    /// The IdP's `Retry-After`: no attempt at all before it, not even for a waiting caller.
    pub(super) not_before: Option<Instant>,
}

/// What became of the access token of a stored record when an agent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Adoption {
    /// The record held none.
    None,
    /// Served from now on; renewed when its stored schedule says.
    Adopted,
    /// Too close to its expiry to serve; the boot refresh replaces it.
    Expired,
    /// Neither served nor kept, for this reason: the record is rewritten without it.
    Discard(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailKind {
    /// IdP unreachable or failing: retry after backoff.
    Unavailable,
    /// The login is gone; only a new login helps.
    LoginRequired,
    /// Misconfiguration or refusal other than invalid_grant: retry after backoff.
    Error,
}

/// How many of the secrets a profile held (access and refresh tokens, the current ones
/// included) it remembers for the audit redactor: a command line may still carry a token
/// from an earlier rotation (a script that saved it, a shell history replayed). 16 covers
/// the last 8 rotations of both; with hour-long tokens that is most of a working day.
pub(super) const RECENT_SECRETS: usize = 16;

/// The last [`RECENT_SECRETS`] secrets a profile held, oldest first: values the audit log
/// must never record (see `attest::redact`). Only the redactor reads them; they are
/// [`Secret`]s, so they print as `[redacted]` and are zeroed when they drop out or the
/// profile goes away.
#[derive(Default)]
pub(super) struct Recent(std::collections::VecDeque<Secret>);

impl Recent {
    /// Remembers `s` (once), forgetting the oldest past [`RECENT_SECRETS`].
    pub(super) fn remember(&mut self, s: &Secret) {
        if self.0.iter().any(|k| k == s) {
            return;
        }
        if self.0.len() == RECENT_SECRETS {
            self.0.pop_front();
        }
        self.0.push_back(s.clone());
    }

    /// The secrets remembered, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.0.iter()
    }
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recent({} secrets)", self.0.len())
    }
}

#[derive(Debug, Default)]
pub(super) struct SlotState {
    pub(super) token: Option<Cached>,
    /// Set through [`SlotState::set_refresh_token`], which remembers it in `recent`.
    pub(super) refresh_token: Option<Secret>,
    /// Every access and refresh token this profile held lately (see [`Recent`]).
    pub(super) recent: Recent,
    pub(super) failure: Option<Failure>,
    pub(super) refreshing: bool,
    /// When the last IdP attempt of this profile started (rate limit of caller-driven retries).
    pub(super) last_attempt: Option<Instant>,
    /// Claims of the last ID token (kept across refreshes that carry none).
    pub(super) identity: Option<super::idp::Identity>,
    /// When the current device login happened (for `policy.max_grant_age`).
    pub(super) logged_in_at: Option<SystemTime>,
}

impl SlotState {
    /// Holds `rt` as the refresh token, remembering it for the redactor.
    pub(super) fn set_refresh_token(&mut self, rt: Secret) {
        self.recent.remember(&rt);
        self.refresh_token = Some(rt);
    }
}

/// Shared knobs of every slot.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotEnv {
    pub(super) backoff: Backoff,
}

/// A profile's run-time state.
pub(super) struct Slot {
    pub(super) name: String,
    pub(super) cfg: ProfileConfig,
    pub(super) idp: Option<Arc<dyn Flows>>,
    pub(super) store: Arc<GrantStore>,
    pub(super) env: SlotEnv,
    pub(super) st: Mutex<SlotState>,
    flight: tokio::sync::Mutex<()>,
    pub(super) wake: tokio::sync::Notify,
    pub(super) login: Mutex<Option<super::login::LoginRecord>>,
    /// Refresh counters for `/metrics` (lock-free; read by [`super::Broker::refresh_stats`]).
    pub(super) stats: RefreshCounters,
    /// The cached token's validity, readable without the mutex (see [`Published`]).
    pub(super) published: Published,
    /// Set at start and by a login: the next token's refresh is spread widely
    /// ([`timing::first_refresh_after`]) so agents that start together drift apart.
    spread_next: std::sync::atomic::AtomicBool,
}

/// The cached token's expiry and skew as a seqlock over atomics, for the API's cache-hit
/// path: checking that the token is still usable takes no lock shared with other threads.
///
/// Writers hold the slot's mutex (one writer at a time) and make the sequence odd while they
/// write; a reader that sees an odd or changed sequence falls back to the locked path. The
/// even sequence a reader saw names the token version: it changes with every new, dropped
/// or replaced token, so a copy kept for that version is never served after a change.
#[derive(Debug)]
pub(super) struct Published {
    seq: AtomicU64,
    /// Milliseconds from `base` to the expiry; 0 = no token, `u64::MAX` = no known expiry.
    expires_ms: AtomicU64,
    skew_ms: AtomicU64,
    base: Instant,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            seq: AtomicU64::new(0),
            expires_ms: AtomicU64::new(0),
            skew_ms: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl Published {
    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Publishes the slot's current token; the caller holds the slot mutex.
    fn set(&self, token: Option<&Cached>) {
        let (expires, skew) = match token {
            None => (0, 0),
            Some(c) => (
                // Rounded down: the published expiry is never later than the real one.
                c.expires.map_or(u64::MAX, |e| {
                    Self::ms(e.saturating_duration_since(self.base)).max(1)
                }),
                // Rounded up: the published margin is never smaller than the real one.
                Self::ms(c.skew).saturating_add(u64::from(c.skew.subsec_nanos() % 1_000_000 != 0)),
            ),
        };
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.expires_ms.store(expires, Ordering::Relaxed);
        self.skew_ms.store(skew, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// The current sequence; under the slot mutex it is even and names the cached token.
    fn version(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// The token version if a token is cached and usable at `now` for a caller needing
    /// `min_valid` (the same rule as [`Cached::usable`]); `None` sends the caller to the
    /// locked path.
    pub(super) fn usable_version(&self, now: Instant, min_valid: Option<Duration>) -> Option<u64> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            return None;
        }
        let expires = self.expires_ms.load(Ordering::Relaxed);
        let skew = self.skew_ms.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 || expires == 0 {
            return None;
        }
        if expires == u64::MAX {
            return Some(s1);
        }
        let need = skew.max(min_valid.map_or(0, Self::ms));
        // Rounded up: the reader's clock is never behind the real one.
        let now = Self::ms(now.saturating_duration_since(self.base)).saturating_add(1);
        (expires.saturating_sub(now) > need).then_some(s1)
    }
}

/// Per-profile refresh counters: outcomes and the time spent waiting for the IdP.
#[derive(Debug, Default)]
pub(super) struct RefreshCounters {
    pub(super) ok: AtomicU64,
    pub(super) login_required: AtomicU64,
    pub(super) unavailable: AtomicU64,
    pub(super) error: AtomicU64,
    pub(super) idp_nanos: AtomicU64,
}

impl RefreshCounters {
    fn record(&self, outcome: Option<FailKind>, took: Duration) {
        let c = match outcome {
            None => &self.ok,
            Some(FailKind::LoginRequired) => &self.login_required,
            Some(FailKind::Unavailable) => &self.unavailable,
            Some(_) => &self.error,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.idp_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Something that can give the subject token of an exchange profile.
pub(super) trait SubjectSource: Send + Sync {
    fn subject<'a>(
        &'a self,
        profile: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Arc<IssuedToken>, BrokerError>> + Send + 'a>,
    >;
}

impl Slot {
    pub(super) fn new(
        name: &str,
        cfg: ProfileConfig,
        idp: Option<Arc<dyn Flows>>,
        store: Arc<GrantStore>,
        env: SlotEnv,
    ) -> Self {
        Self {
            name: name.to_string(),
            cfg,
            idp,
            store,
            env,
            st: Mutex::new(SlotState::default()),
            flight: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            login: Mutex::new(None),
            stats: RefreshCounters::default(),
            published: Published::default(),
            spread_next: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // A panic while holding this lock cannot leave the state half-written in a way that
        // matters (every write is a whole-field assignment), so poisoning is ignored.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn configured_skew(&self) -> Duration {
        self.cfg
            .skew_seconds
            .map_or(timing::DEFAULT_SKEW, Duration::from_secs)
    }

    pub(super) fn client(&self) -> Result<ClientAuth, BrokerError> {
        let secret = match self.cfg.secret_source() {
            None => None,
            Some(SecretSource::File(p)) => {
                let text = std::fs::read_to_string(&p).map_err(|e| BrokerError::Internal {
                    profile: self.name.clone(),
                    detail: format!("cannot read client secret file {}: {e}", p.display()),
                })?;
                Some(Secret::new(text.trim().to_string()))
            }
            Some(SecretSource::Env(v)) => match std::env::var(&v) {
                Ok(s) if !s.is_empty() => Some(Secret::new(s)),
                _ => {
                    return Err(BrokerError::Internal {
                        profile: self.name.clone(),
                        detail: format!("client secret variable {v} is not set"),
                    });
                }
            },
        };
        Ok(ClientAuth {
            client_id: self.cfg.client_id.clone().unwrap_or_default(),
            secret,
        })
    }

    fn target(&self) -> Target {
        Target {
            scopes: self.cfg.scopes.clone(),
            audience: self.cfg.audience.clone(),
        }
    }

    fn idp(&self) -> Result<&Arc<dyn Flows>, BrokerError> {
        self.idp.as_ref().ok_or_else(|| BrokerError::Internal {
            profile: self.name.clone(),
            detail: "no issuer configured".into(),
        })
    }

    /// Replaces the cached token and publishes the change for the lock-free readers.
    /// Every change of `st.token` goes through here.
    fn set_token(&self, st: &mut SlotState, token: Option<Cached>) {
        self.published.set(token.as_ref());
        if let Some(c) = &token {
            st.recent.remember(&c.issued.access_token);
        }
        st.token = token;
    }

    /// Every secret this profile held lately, the current ones included (see [`Recent`]).
    pub(super) fn recent_secrets(&self) -> Vec<Secret> {
        self.lock().recent.iter().cloned().collect()
    }

    /// The cached token if it serves a caller needing `min_valid`.
    pub(super) fn cached(&self, min_valid: Option<Duration>) -> Option<Arc<IssuedToken>> {
        let st = self.lock();
        let c = st.token.as_ref()?;
        c.usable(Instant::now(), min_valid)
            .then(|| c.issued.clone())
    }

    /// Why the login is too old to be used (`policy.max_grant_age`), if it is.
    fn grant_too_old(&self, st: &SlotState) -> Option<String> {
        let max = self.cfg.policy.max_grant_age?;
        if !self.cfg.grant.stores_login() {
            return None;
        }
        crate::policy::limits::grant_too_old(&self.name, st.logged_in_at?, max, SystemTime::now())
    }

    /// Ends a login older than `policy.max_grant_age`: the profile turns `login_required`
    /// with that reason (the stored grant stays until a new login replaces it; it is refused
    /// again after a restart, since its login time is stored with it).
    pub(super) fn enforce_grant_age(&self) -> Result<(), BrokerError> {
        if self.cfg.policy.max_grant_age.is_none() {
            return Ok(());
        }
        let mut st = self.lock();
        let Some(reason) = self.grant_too_old(&st) else {
            return Ok(());
        };
        self.set_token(&mut st, None);
        st.refresh_token = None;
        st.logged_in_at = None;
        st.failure = Some(Failure {
            kind: FailKind::LoginRequired,
            reason: reason.clone(),
            attempts: 0,
            retry_at: None,
            not_before: None,
        });
        drop(st);
        tracing::warn!(profile = %self.name, "{reason}");
        Err(BrokerError::LoginRequired {
            profile: self.name.clone(),
            reason,
        })
    }

    /// The cached token with its published version, read under the mutex so the two agree.
    pub(super) fn snapshot(&self) -> Option<(u64, Arc<IssuedToken>)> {
        let st = self.lock();
        let c = st.token.as_ref()?;
        Some((self.published.version(), c.issued.clone()))
    }

    /// A token for a caller: from cache, or after one (single-flight) refresh.
    pub(super) async fn token(
        &self,
        subjects: &dyn SubjectSource,
        req: TokenRequest,
    ) -> Result<Arc<IssuedToken>, BrokerError> {
        if self.cfg.grant == GrantKind::Env {
            return self.env_token();
        }
        self.enforce_grant_age()?;
        if let Some(t) = self.cached(req.min_valid) {
            return Ok(t);
        }
        let _flight = self.flight.lock().await;
        if let Some(t) = self.cached(req.min_valid) {
            return Ok(t);
        }
        // Honour the failure state: none at all once the login is gone; before the backoff
        // has passed, only the rate-limited attempt of a waiting caller (see `gate`).
        if let Some(err) = self.gate(Instant::now(), true) {
            return self.cached(None).ok_or(err);
        }
        match self.refresh_locked(subjects).await {
            Ok(t) => Ok(t),
            Err(e) => self.cached(None).ok_or(e),
        }
    }

    /// The error to return without calling the IdP, if the failure state forbids a call now.
    ///
    /// With `demand` (a caller is waiting for a token) an attempt may come before the
    /// background backoff has passed: the backoff may have grown to minutes during an outage,
    /// and a user whose IdP answers again must not wait for it (issue 23). Such attempts are
    /// rate limited to one per [`timing::DEMAND_RETRY`] per profile, counted from the last IdP
    /// attempt of any kind, and never come before the IdP's `Retry-After`; they run under the
    /// flight lock like every attempt, so one profile never has two IdP calls in flight.
    fn gate(&self, now: Instant, demand: bool) -> Option<BrokerError> {
        let st = self.lock();
        let f = st.failure.as_ref()?;
        let blocked = match f.kind {
            FailKind::LoginRequired => true,
            _ if f.retry_at.is_none_or(|r| r <= now) => false,
            _ if demand => {
                f.not_before.is_some_and(|t| t > now)
                    || st
                        .last_attempt
                        .is_some_and(|t| now < t + timing::DEMAND_RETRY)
            }
            _ => true,
        };
        blocked.then(|| self.error_of(f))
    }

    fn error_of(&self, f: &Failure) -> BrokerError {
        match f.kind {
            FailKind::LoginRequired => BrokerError::LoginRequired {
                profile: self.name.clone(),
                reason: f.reason.clone(),
            },
            FailKind::Unavailable => BrokerError::IdpUnavailable {
                profile: self.name.clone(),
                detail: f.reason.clone(),
            },
            FailKind::Error => BrokerError::Internal {
                profile: self.name.clone(),
                detail: f.reason.clone(),
            },
        }
    }

    /// Background refresh: renews if the token is due (or a retry is due). Single flight.
    pub(super) async fn refresh_if_due(&self, subjects: &dyn SubjectSource) {
        let _flight = self.flight.lock().await;
        let now = Instant::now();
        let due = {
            let st = self.lock();
            match (&st.failure, &st.token) {
                (Some(f), _) if f.kind == FailKind::LoginRequired => false,
                (Some(f), _) => f.retry_at.is_none_or(|r| r <= now),
                (None, Some(c)) => c.refresh_at.is_some_and(|r| r <= now),
                (None, None) => false,
            }
        };
        if due {
            let _ = self.refresh_locked(subjects).await;
        }
    }

    /// The boot refresh. Single flight; honours `login_required`. At boot the cache is empty,
    /// so a token found there was fetched by a caller that got in first (its request found no
    /// token and refreshed): that was this boot's refresh, and a second one would spend
    /// another refresh token for nothing (seen: two IdP refreshes after a container start
    /// when `stagepass token` ran at once).
    pub(super) async fn refresh_now(
        &self,
        subjects: &dyn SubjectSource,
    ) -> Result<Arc<IssuedToken>, BrokerError> {
        let _flight = self.flight.lock().await;
        if let Some(err) = self.gate(Instant::now(), false) {
            return Err(err);
        }
        if let Some(t) = self.cached(None) {
            return Ok(t);
        }
        self.refresh_locked(subjects).await
    }

    /// When the background refresher should next look at this slot (None = wait for a wake).
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let st = self.lock();
        match (&st.failure, &st.token) {
            (Some(f), _) if f.kind == FailKind::LoginRequired => None,
            (Some(f), _) => f.retry_at,
            (None, Some(c)) => c.refresh_at,
            (None, None) => None,
        }
    }

    /// Does the IdP work for this profile's grant kind. Caller holds the flight lock.
    async fn refresh_locked(
        &self,
        subjects: &dyn SubjectSource,
    ) -> Result<Arc<IssuedToken>, BrokerError> {
        self.enforce_grant_age()?;
        let started = Instant::now();
        // An attempt before the backoff has passed is a caller's (see `gate`): its failure
        // must leave the background schedule as it is.
        let demand = {
            let mut st = self.lock();
            st.refreshing = true;
            st.last_attempt = Some(started);
            st.failure
                .as_ref()
                .is_some_and(|f| f.retry_at.is_some_and(|r| r > started))
        };
        let res = match self.cfg.grant {
            GrantKind::Device => self.refresh_device().await,
            GrantKind::AuthorizationCode => match self.refresh_device().await {
                Ok(c) => Ok(self.with_ownership(c).await),
                Err(e) => Err(e),
            },
            GrantKind::ClientCredentials => self.fetch_client_credentials().await,
            GrantKind::Exchange => self.fetch_exchange(subjects).await,
            GrantKind::Env => Err(Outcome::Broker(
                self.internal("env profiles are read from the environment, not refreshed".into()),
            )),
        };
        let took = started.elapsed();
        let mut st = self.lock();
        st.refreshing = false;
        match res {
            Ok(t) => {
                self.stats.record(None, took);
                st.failure = None;
                tracing::debug!(
                    profile = %self.name,
                    fingerprint = %t.fingerprint,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "token refreshed"
                );
                let issued = t.issued.clone();
                if t.identity.is_some() {
                    st.identity = t.identity.clone();
                }
                self.set_token(&mut st, Some(t));
                drop(st);
                self.wake.notify_one();
                Ok(issued)
            }
            Err(Outcome::Broker(e)) => {
                let (kind, reason) = match &e {
                    BrokerError::LoginRequired { reason, .. } => {
                        (FailKind::LoginRequired, reason.clone())
                    }
                    BrokerError::IdpUnavailable { detail, .. } => {
                        (FailKind::Unavailable, detail.clone())
                    }
                    other => (FailKind::Error, other.to_string()),
                };
                self.stats.record(Some(kind), took);
                self.record_failure(&mut st, kind, reason, None, demand);
                Err(e)
            }
            Err(Outcome::Idp(e)) => {
                let (kind, retry_after) = match &e {
                    IdpError::Rejected { .. }
                        if e.is_invalid_grant() && self.cfg.grant.stores_login() =>
                    {
                        (FailKind::LoginRequired, None)
                    }
                    IdpError::Unavailable { retry_after, .. } => {
                        (FailKind::Unavailable, *retry_after)
                    }
                    _ => (FailKind::Error, None),
                };
                self.stats.record(Some(kind), took);
                let reason = e.to_string();
                if kind == FailKind::LoginRequired {
                    st.refresh_token = None;
                    self.set_token(&mut st, None);
                }
                self.record_failure(&mut st, kind, reason.clone(), retry_after, demand);
                let f = st.failure.clone();
                drop(st);
                self.wake.notify_one();
                Err(f.map_or_else(
                    || BrokerError::IdpUnavailable {
                        profile: self.name.clone(),
                        detail: reason,
                    },
                    |f| self.error_of(&f),
                ))
            }
        }
    }

    fn record_failure(
        &self,
        st: &mut SlotState,
        kind: FailKind,
        reason: String,
        retry_after: Option<Duration>,
        demand: bool,
    ) {
        let not_before = retry_after.map(|d| Instant::now() + d);
        if demand
            && kind != FailKind::LoginRequired
            && let Some(prev) = st.failure.as_mut()
            && prev.kind != FailKind::LoginRequired
        {
            // A caller's attempt failed: the background refresher keeps its backoff (neither
            // a step further nor an earlier retry); a Retry-After may only move it later.
            prev.kind = kind;
            prev.reason = reason;
            if let Some(t) = not_before {
                prev.not_before = Some(t);
                prev.retry_at = prev.retry_at.max(Some(t));
            }
            tracing::warn!(
                profile = %self.name,
                attempts = prev.attempts,
                retry_in_ms = prev.retry_at.map(|r| r.saturating_duration_since(Instant::now()).as_millis() as u64),
                reason = %prev.reason,
                "token refresh for a waiting caller failed; the background retry keeps its time"
            );
            return;
        }
        let attempts = st.failure.as_ref().map_or(0, |f| f.attempts) + 1;
        let retry_at = match kind {
            FailKind::LoginRequired => None,
            _ => Some(
                Instant::now()
                    + self
                        .env
                        .backoff
                        .delay(attempts, timing::unit(), retry_after),
            ),
        };
        tracing::warn!(
            profile = %self.name,
            attempts,
            retry_in_ms = retry_at.map(|r| r.saturating_duration_since(Instant::now()).as_millis() as u64),
            reason = %reason,
            "token refresh failed"
        );
        st.failure = Some(Failure {
            kind,
            reason,
            attempts,
            retry_at,
            not_before,
        });
    }

    /// Turns an IdP answer into a cache entry (timing from now).
    pub(super) fn cache_entry(&self, g: &Grant) -> Cached {
        let now = Instant::now();
        // policy.max_token_lifetime: cached, advertised and renewed as if it lived no longer.
        let lifetime = crate::policy::limits::capped_lifetime(
            g.expires_in,
            self.cfg.policy.max_token_lifetime.map(|d| d.0),
        );
        let skew = timing::skew_for(self.configured_skew(), lifetime);
        let (expires, refresh_at) = match lifetime {
            Some(l) => {
                let first = self
                    .spread_next
                    .swap(false, std::sync::atomic::Ordering::Relaxed);
                let after = if first {
                    timing::first_refresh_after(l, skew, timing::unit())
                } else {
                    timing::refresh_after(l, skew, timing::unit())
                };
                (Some(now + l), Some(now + after))
            }
            None => (None, None),
        };
        let issued = Arc::new(IssuedToken {
            access_token: g.access_token.clone(),
            token_type: g.token_type.clone(),
            expires_at: lifetime.map(|l| SystemTime::now() + l),
            scope: g.scope.clone(),
            profile: self.name.clone(),
        });
        Cached {
            fingerprint: g.access_token.fingerprint(),
            issued,
            expires,
            refresh_at,
            skew,
            identity: g.identity.clone(),
            lifetime,
        }
    }

    /// The record of `c` to keep at rest beside the refresh token, so a restart within its
    /// usable life serves it without an IdP call. Only for device logins (the only grants
    /// stored) and tokens with a known lifetime; times are converted from the monotonic clock
    /// to wall-clock milliseconds, rounded so the stored expiry is never later than the real one.
    pub(super) fn stored_access(&self, c: &Cached) -> Option<StoredAccess> {
        // Device logins only: an authorization-code profile signs in to Backstage, whose
        // refresh tokens rotate without reuse detection (a stale one does not end the
        // session), and its boot refresh is what tells a workspace that another one signed
        // in with the same client.
        if self.cfg.grant != GrantKind::Device {
            return None;
        }
        let (expires, refresh_at, lifetime) = (c.expires?, c.refresh_at?, c.lifetime?);
        let now = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let expires_at_ms = now_ms.saturating_add(ms(expires.saturating_duration_since(now)));
        let issued_at_ms = expires_at_ms.saturating_sub(ms(lifetime));
        let refresh_at_ms = now_ms
            .saturating_add(ms(refresh_at.saturating_duration_since(now)))
            .clamp(issued_at_ms, expires_at_ms);
        let identity = c.identity.clone().or_else(|| self.lock().identity.clone());
        Some(StoredAccess {
            access_token: c.issued.access_token.clone(),
            token_type: c.issued.token_type.clone(),
            scope: c.issued.scope.clone(),
            issued_at_ms,
            expires_at_ms,
            refresh_at_ms,
            scopes: self.cfg.scopes.clone(),
            audience: self.cfg.audience.clone(),
            identity: identity.and_then(|i| serde_json::to_value(i).ok()),
        })
    }

    /// The cache entry of a stored access token at `now_wall` / `now`, or why it cannot be one.
    ///
    /// Refused: a token asked for other scopes or another audience than the profile asks for
    /// now, and one "issued in the future" (the wall clock went back since: its remaining life
    /// cannot be trusted). Too old (within the skew margin of its expiry): left to the boot
    /// refresh. The lifetime is capped by today's `policy.max_token_lifetime`, and the
    /// refresh keeps its stored time (at once if that has passed), never later than the margin.
    fn stored_entry(
        &self,
        a: &StoredAccess,
        now_wall: SystemTime,
        now: Instant,
    ) -> Result<Cached, Adoption> {
        if a.scopes != self.cfg.scopes || a.audience != self.cfg.audience {
            return Err(Adoption::Discard(
                "the profile's scopes or audience changed since it was issued",
            ));
        }
        let now_ms = unix_ms(now_wall);
        if now_ms < a.issued_at_ms {
            return Err(Adoption::Discard(
                "the clock is behind the time it was issued",
            ));
        }
        let stored = Duration::from_millis(a.expires_at_ms.saturating_sub(a.issued_at_ms));
        let lifetime = crate::policy::limits::capped_lifetime(
            Some(stored),
            self.cfg.policy.max_token_lifetime.map(|d| d.0),
        )
        .unwrap_or(stored);
        let skew = timing::skew_for(self.configured_skew(), Some(lifetime));
        let age = Duration::from_millis(now_ms - a.issued_at_ms);
        let planned = Duration::from_millis(a.refresh_at_ms.saturating_sub(a.issued_at_ms));
        let timing::StoredPlan::Serve { refresh_in } =
            timing::stored_plan(lifetime, skew, age, planned)
        else {
            return Err(Adoption::Expired);
        };
        let left = lifetime.saturating_sub(age);
        let issued = Arc::new(IssuedToken {
            access_token: a.access_token.clone(),
            token_type: a.token_type.clone(),
            expires_at: Some(now_wall + left),
            scope: a.scope.clone(),
            profile: self.name.clone(),
        });
        Ok(Cached {
            fingerprint: a.access_token.fingerprint(),
            issued,
            expires: Some(now + left),
            refresh_at: Some(now + refresh_in),
            skew,
            identity: a
                .identity
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
            lifetime: Some(lifetime),
        })
    }

    async fn refresh_device(&self) -> Result<Cached, Outcome> {
        let idp = self.idp().map_err(Outcome::Broker)?.clone();
        let client = self.client().map_err(Outcome::Broker)?;
        let store = self.store.clone();
        let name = self.name.clone();
        // The cross-process lock is held from reading the refresh token until the rotated one
        // is on disk; the IdP call happens under it.
        let lock = tokio::task::spawn_blocking(move || {
            let lock = store.lock(&name)?;
            let stored = store.load(&name)?;
            Ok::<_, crate::store::StoreError>((lock, stored))
        })
        .await
        .map_err(|e| Outcome::Broker(self.internal(format!("store task failed: {e}"))))?
        .map_err(|e| Outcome::Broker(self.internal(format!("grant store: {e}"))))?;
        let (lock, stored) = lock;
        let stored = stored.filter(|g| self.grant_matches(g));
        let rt = {
            let mut st = self.lock();
            if let Some(g) = &stored {
                // Another process may have rotated it: the store is the truth.
                st.set_refresh_token(g.refresh_token.clone());
                st.logged_in_at = Some(unix(g.login_time()));
            }
            st.refresh_token.clone()
        };
        if let Err(e) = self.enforce_grant_age() {
            drop(lock);
            return Err(Outcome::Broker(e));
        }
        let Some(rt) = rt else {
            drop(lock);
            return Err(Outcome::Broker(BrokerError::LoginRequired {
                profile: self.name.clone(),
                reason: format!("not logged in; run `stagepass login {}`", self.name),
            }));
        };
        let res = idp.refresh(&client, &rt, &self.target()).await;
        match res {
            Ok(g) => {
                let new_rt = g.refresh_token.clone().unwrap_or_else(|| rt.clone());
                // Timed from before the write below: the cached and stored expiry err early.
                let entry = self.cache_entry(&g);
                let access = self.stored_access(&entry);
                {
                    // One record: the (rotated) refresh token and the new access token are
                    // written together, before the token is handed out.
                    let grant = match &stored {
                        Some(old) if g.refresh_token.is_some() => {
                            old.rotated(new_rt.expose().to_string(), g.scope.clone())
                        }
                        Some(old) => old.clone(),
                        None => {
                            let mut n = StoredGrant::new(
                                idp.issuer(),
                                &client.client_id,
                                new_rt.expose().to_string(),
                                g.scope.clone(),
                            );
                            // Keep the login time known in memory (store was unavailable).
                            if let Some(t) = self.lock().logged_in_at {
                                n.logged_in_at = t
                                    .duration_since(SystemTime::UNIX_EPOCH)
                                    .ok()
                                    .map(|d| d.as_secs());
                            }
                            n
                        }
                    };
                    self.persist(grant.with_access(access), lock).await;
                }
                self.lock().set_refresh_token(new_rt);
                Ok(entry)
            }
            Err(e) => {
                if e.is_invalid_grant() {
                    let store = self.store.clone();
                    let name = self.name.clone();
                    let used = rt.clone();
                    // Forget the dead grant (only if nobody replaced it meanwhile: we hold the lock).
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Ok(Some(g)) = store.load(&name)
                            && g.refresh_token == used
                        {
                            let _ = store.delete(&name);
                        }
                        drop(lock);
                    })
                    .await;
                    let detail = match &e {
                        IdpError::Rejected {
                            description: Some(d),
                            ..
                        } => d.clone(),
                        other => other.to_string(),
                    };
                    // Backstage keeps one offline session per user and client, and says
                    // only "Invalid refresh token" when another sign-in replaced it.
                    let cause = if self.cfg.grant == GrantKind::AuthorizationCode {
                        "; most likely signed in from another workspace with the same client \
                         (Backstage keeps one session per user and client), else signed out \
                         or expired"
                    } else {
                        ""
                    };
                    return Err(Outcome::Idp(IdpError::Rejected {
                        code: "invalid_grant".into(),
                        description: Some(format!(
                            "the identity provider no longer accepts the stored login ({detail}){cause}; run `stagepass login {}`",
                            self.name
                        )),
                    }));
                }
                drop(lock);
                Err(Outcome::Idp(e))
            }
        }
    }

    /// Writes a rotated refresh token durably, then releases the grant lock.
    pub(super) async fn persist(&self, grant: StoredGrant, lock: crate::store::GrantLock) {
        let store = self.store.clone();
        let name = self.name.clone();
        let res = tokio::task::spawn_blocking(move || {
            let r = store.save(&name, &grant);
            drop(lock);
            r
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                profile = %self.name,
                error = %e,
                "could not persist the login (refresh and access token); it is kept in memory only"
            ),
            Err(e) => tracing::error!(profile = %self.name, error = %e, "store task failed"),
        }
    }

    fn grant_matches(&self, g: &StoredGrant) -> bool {
        let issuer_ok = self
            .idp
            .as_ref()
            .is_some_and(|i| i.issuer() == g.issuer.trim_end_matches('/'));
        let client_ok = self.cfg.client_id.as_deref() == Some(g.client_id.as_str());
        if !(issuer_ok && client_ok) {
            tracing::warn!(
                profile = %self.name,
                "stored grant belongs to another issuer or client; ignoring it"
            );
        }
        issuer_ok && client_ok
    }

    async fn fetch_client_credentials(&self) -> Result<Cached, Outcome> {
        let idp = self.idp().map_err(Outcome::Broker)?.clone();
        let client = self.client().map_err(Outcome::Broker)?;
        let g = idp
            .client_credentials(&client, &self.target())
            .await
            .map_err(Outcome::Idp)?;
        Ok(self.cache_entry(&g))
    }

    async fn fetch_exchange(&self, subjects: &dyn SubjectSource) -> Result<Cached, Outcome> {
        let idp = self.idp().map_err(Outcome::Broker)?.clone();
        let client = self.client().map_err(Outcome::Broker)?;
        let subject = match (&self.cfg.subject_profile, &self.cfg.token_env) {
            (Some(p), _) => subjects
                .subject(p)
                .await
                .map_err(|e| {
                    Outcome::Broker(match e {
                        BrokerError::LoginRequired { reason, .. } => BrokerError::LoginRequired {
                            profile: self.name.clone(),
                            reason: format!("subject profile {p}: {reason}"),
                        },
                        BrokerError::IdpUnavailable { detail, .. } => BrokerError::IdpUnavailable {
                            profile: self.name.clone(),
                            detail: format!("subject profile {p}: {detail}"),
                        },
                        other => self.internal(format!("subject profile {p}: {other}")),
                    })
                })?
                .access_token
                .clone(),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Secret::new(v),
                _ => {
                    return Err(Outcome::Broker(BrokerError::LoginRequired {
                        profile: self.name.clone(),
                        reason: format!("the subject token variable {var} is not set"),
                    }));
                }
            },
            (None, None) => {
                return Err(Outcome::Broker(
                    self.internal("no subject token configured".into()),
                ));
            }
        };
        let g = idp
            .exchange(&client, &subject, &self.target())
            .await
            .map_err(Outcome::Idp)?;
        Ok(self.cache_entry(&g))
    }

    /// `env` profiles: the variable is re-read on every request; a JWT's `exp` is honoured.
    pub(super) fn env_token(&self) -> Result<Arc<IssuedToken>, BrokerError> {
        let var = self.cfg.token_env.as_deref().unwrap_or("GITHUB_TOKEN");
        let value = match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => {
                return Err(BrokerError::LoginRequired {
                    profile: self.name.clone(),
                    reason: format!("{var} is not set in the agent's environment"),
                });
            }
        };
        let expires_at =
            super::jwt::exp(&value).map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        // policy.max_token_lifetime: we cannot renew this token, only advertise less.
        let now_secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let advertised = crate::policy::limits::capped_expiry(
            expires_at,
            unix(now_secs),
            self.cfg.policy.max_token_lifetime.map(|d| d.0),
        );
        if let Some(exp) = expires_at {
            // We cannot renew this token, so it is served until it actually expires.
            if exp <= SystemTime::now() {
                return Err(BrokerError::LoginRequired {
                    profile: self.name.clone(),
                    reason: format!("the token in {var} has expired"),
                });
            }
        }
        Ok(Arc::new(IssuedToken {
            access_token: Secret::new(value),
            token_type: "Bearer".into(),
            expires_at: advertised,
            scope: None,
            profile: self.name.clone(),
        }))
    }

    fn internal(&self, detail: String) -> BrokerError {
        BrokerError::Internal {
            profile: self.name.clone(),
            detail,
        }
    }

    /// Installs a token obtained by a device login (nothing stored).
    pub(super) fn install_login(&self, g: &Grant) {
        let entry = self.login_entry(g);
        self.install_entry(entry, g);
    }

    /// The cache entry of a device login's answer: a new schedule, its first refresh spread
    /// like a start's.
    pub(super) fn login_entry(&self, g: &Grant) -> Cached {
        self.spread_next
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cache_entry(g)
    }

    /// Installs the entry of a device login, with its (already persisted) refresh token.
    pub(super) fn install_entry(&self, entry: Cached, g: &Grant) {
        let mut st = self.lock();
        if entry.identity.is_some() {
            st.identity = entry.identity.clone();
        }
        self.set_token(&mut st, Some(entry));
        st.logged_in_at = Some(SystemTime::now());
        if let Some(rt) = &g.refresh_token {
            st.set_refresh_token(rt.clone());
        }
        st.failure = None;
        drop(st);
        self.wake.notify_one();
    }

    /// Who the token's user is and what they own, from the userinfo endpoint (Backstage:
    /// `{"claims":{"sub","ent"}}`; its access tokens carry no `ent`). Best effort: `None`
    /// when the endpoint fails, and the identity stays as it was.
    async fn userinfo_identity(&self, token: &Secret) -> Option<super::idp::Identity> {
        let idp = self.idp.as_ref()?;
        match idp.userinfo(token).await {
            Ok(v) => {
                let claims = v.get("claims").unwrap_or(&v);
                let mut id = super::idp::Identity::from_claims(claims);
                if id.iss.is_none() {
                    id.iss = Some(idp.issuer().to_string());
                }
                Some(id)
            }
            Err(e) => {
                tracing::warn!(profile = %self.name, error = %e, "userinfo failed; ownership unknown");
                None
            }
        }
    }

    /// After a sign-in: learns the ownership refs of the signed-in user.
    pub(super) async fn learn_ownership(&self, token: &Secret) {
        if let Some(id) = self.userinfo_identity(token).await {
            self.lock().identity = Some(id);
        }
    }

    /// After a refresh: the entry with the user's ownership refs, asked once per run (they
    /// are Backstage's snapshot of the last interactive sign-in, so they do not change
    /// between refreshes).
    async fn with_ownership(&self, mut c: Cached) -> Cached {
        let known = self
            .lock()
            .identity
            .as_ref()
            .is_some_and(|i| !i.ent.is_empty());
        if !known {
            c.identity = self
                .userinfo_identity(&c.issued.access_token)
                .await
                .or(c.identity);
        }
        c
    }

    /// Drops the cached token if it is the one with `fingerprint` (a server refused it).
    pub(super) fn invalidate(&self, fingerprint: &str) -> bool {
        let mut st = self.lock();
        let hit = st
            .token
            .as_ref()
            .is_some_and(|c| c.fingerprint == fingerprint);
        if hit {
            self.set_token(&mut st, None);
            drop(st);
            self.wake.notify_one();
        }
        hit
    }

    /// Drops the cached token and any failure state (the next request fetches anew).
    pub(super) fn drop_token(&self) {
        let mut st = self.lock();
        self.set_token(&mut st, None);
        st.failure = None;
    }

    /// Takes the refresh token of a stored grant found at start, if it belongs to this
    /// profile's issuer and client, and its access token if that is still usable for this
    /// profile as configured now: then the start costs the IdP nothing and spends no refresh
    /// token (a kill during a boot refresh on a rotating IdP lost the login), and the token is
    /// renewed when its stored schedule says. A stored access token of another issuer, client,
    /// scopes or audience, or a malformed one, is to be discarded (`Adoption::Discard`).
    pub(super) fn adopt_stored(&self, g: StoredGrant) -> Adoption {
        if !self.grant_matches(&g) {
            return if g.access.is_some() {
                Adoption::Discard("the stored login belongs to another issuer or client")
            } else {
                Adoption::None
            };
        }
        let mut st = self.lock();
        st.logged_in_at = Some(unix(g.login_time()));
        st.set_refresh_token(g.refresh_token);
        if let Some(why) = g.access_dropped {
            return Adoption::Discard(why);
        }
        let Some(a) = g.access else {
            return Adoption::None;
        };
        if self.grant_too_old(&st).is_some() {
            // `policy.max_grant_age` ends the login: nothing of it is served, not even from
            // the cache's lock-free path before a first request enforces the age.
            return Adoption::Expired;
        }
        match self.stored_entry(&a, SystemTime::now(), Instant::now()) {
            Ok(entry) => {
                if entry.identity.is_some() {
                    st.identity = entry.identity.clone();
                }
                self.set_token(&mut st, Some(entry));
                // The adopted token keeps the schedule it was given; the next one is steady.
                self.spread_next
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                Adoption::Adopted
            }
            Err(other) => other,
        }
    }

    /// Rewrites the stored record without its access token (all of it, or only the one with
    /// `fingerprint`), under the grant lock and only if the record still holds it: the
    /// refresh token is kept as it is.
    pub(super) async fn discard_stored_access(&self, fingerprint: Option<String>) {
        let store = self.store.clone();
        let name = self.name.clone();
        let res = tokio::task::spawn_blocking(move || {
            let _lock = store.lock(&name)?;
            let Some(g) = store.load(&name)? else {
                return Ok(false);
            };
            let holds = match (&g.access, &fingerprint) {
                (None, _) => g.access_dropped.is_some(),
                (Some(_), None) => true,
                (Some(a), Some(fp)) => a.access_token.fingerprint() == *fp,
            };
            if holds {
                store.save(&name, &g.with_access(None))?;
            }
            Ok::<_, crate::store::StoreError>(holds)
        })
        .await;
        match res {
            Ok(Ok(true)) => {
                tracing::info!(profile = %self.name, "stored access token discarded");
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(
                profile = %self.name,
                error = %e,
                "could not discard the stored access token"
            ),
            Err(e) => tracing::warn!(profile = %self.name, error = %e, "store task failed"),
        }
    }

    /// Forgets everything in memory, marking the profile as logged out.
    pub(super) fn forget(&self, reason: &str) -> Option<Secret> {
        let mut st = self.lock();
        self.set_token(&mut st, None);
        st.identity = None;
        let rt = st.refresh_token.take();
        st.failure = Some(Failure {
            kind: FailKind::LoginRequired,
            reason: reason.to_string(),
            attempts: 0,
            retry_at: None,
            not_before: None,
        });
        rt
    }

    /// Status line of this profile (no secret).
    pub(super) fn status(&self) -> ProfileStatus {
        let grant = self.cfg.grant.name().to_string();
        if self.cfg.grant == GrantKind::Env {
            return match self.env_token() {
                Ok(t) => ProfileStatus {
                    profile: self.name.clone(),
                    grant,
                    state: ProfileState::Valid,
                    reason: None,
                    expires_at: t.expires_at.map(crate::timefmt::rfc3339),
                    token_fingerprint: Some(t.access_token.fingerprint()),
                    identity: None,
                },
                Err(e) => ProfileStatus {
                    profile: self.name.clone(),
                    grant,
                    state: ProfileState::Error,
                    reason: Some(e.to_string()),
                    expires_at: None,
                    token_fingerprint: None,
                    identity: None,
                },
            };
        }
        let st = self.lock();
        if let Some(reason) = self.grant_too_old(&st) {
            return ProfileStatus {
                profile: self.name.clone(),
                grant,
                state: ProfileState::LoginRequired,
                reason: Some(reason),
                expires_at: None,
                token_fingerprint: None,
                identity: st.identity.clone(),
            };
        }
        let now = Instant::now();
        let valid = st.token.as_ref().filter(|c| c.usable(now, None));
        let (state, reason) = match (&st.failure, valid) {
            (_, _) if st.refreshing => (ProfileState::Refreshing, None),
            (Some(f), _) if f.kind == FailKind::LoginRequired => {
                (ProfileState::LoginRequired, Some(f.reason.clone()))
            }
            (Some(f), Some(_)) => (ProfileState::Stale, Some(f.reason.clone())),
            (Some(f), None) => (ProfileState::Error, Some(f.reason.clone())),
            (None, Some(_)) => (ProfileState::Valid, None),
            (None, None) if self.cfg.grant.stores_login() && st.refresh_token.is_none() => (
                ProfileState::LoginRequired,
                Some(format!(
                    "not logged in; run `stagepass login {}`",
                    self.name
                )),
            ),
            (None, None) => (
                ProfileState::Valid,
                Some("no token cached yet; one is fetched on first use".into()),
            ),
        };
        ProfileStatus {
            profile: self.name.clone(),
            grant,
            state,
            reason,
            expires_at: valid
                .and_then(|c| c.issued.expires_at)
                .map(crate::timefmt::rfc3339),
            token_fingerprint: valid.map(|c| c.fingerprint.clone()),
            identity: st.identity.clone(),
        }
    }
}

/// Result of one IdP round: either an IdP error (to classify) or a ready broker error.
pub(super) enum Outcome {
    Idp(IdpError),
    Broker(BrokerError),
}

fn unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod published_tests {
    use super::*;

    fn cached(expires_in: Option<Duration>, skew: Duration) -> Cached {
        Cached {
            issued: Arc::new(IssuedToken {
                access_token: Secret::new("t"),
                token_type: "Bearer".into(),
                expires_at: None,
                scope: None,
                profile: "p".into(),
            }),
            fingerprint: "f".into(),
            expires: expires_in.map(|d| Instant::now() + d),
            refresh_at: None,
            skew,
            identity: None,
            lifetime: expires_in,
        }
    }

    /// The lock-free view agrees with `Cached::usable` and names each token change.
    #[tokio::test(start_paused = true)]
    async fn usable_version_follows_the_cached_token() {
        let p = Published::default();
        assert_eq!(p.usable_version(Instant::now(), None), None, "no token yet");

        let c = cached(Some(Duration::from_secs(100)), Duration::from_secs(10));
        p.set(Some(&c));
        let v1 = p.usable_version(Instant::now(), None).unwrap();
        assert_eq!(v1 % 2, 0);
        assert!(c.usable(Instant::now(), None));
        // min_valid beyond the remaining lifetime: not from the fast path, nor the cache.
        let long = Some(Duration::from_secs(105));
        assert_eq!(p.usable_version(Instant::now(), long), None);
        assert!(!c.usable(Instant::now(), long));
        let within = Some(Duration::from_secs(95));
        assert_eq!(p.usable_version(Instant::now(), within), Some(v1));
        assert!(c.usable(Instant::now(), within));

        // Inside the skew margin: no longer handed out, exactly like the locked path.
        tokio::time::advance(Duration::from_secs(91)).await;
        assert_eq!(p.usable_version(Instant::now(), None), None);
        assert!(!c.usable(Instant::now(), None));

        // A new token is a new version; dropping it makes nothing usable.
        let c2 = cached(Some(Duration::from_secs(100)), Duration::from_secs(10));
        p.set(Some(&c2));
        let v2 = p.usable_version(Instant::now(), None).unwrap();
        assert_ne!(v1, v2);
        p.set(None);
        assert_eq!(p.usable_version(Instant::now(), None), None);

        // A token without a known expiry is usable whatever min_valid asks.
        p.set(Some(&cached(None, Duration::from_secs(10))));
        assert!(
            p.usable_version(Instant::now(), Some(Duration::from_secs(86_400)))
                .is_some()
        );
    }
}
