//! One profile at run time: its cached token, its failure state, the single-flight refresh
//! and the background refresher.
//!
//! Single flight: callers that find no usable token queue on one async mutex; the first one
//! refreshes, the rest find the fresh token when they get the mutex and return it without an
//! IdP call. The fast path (a usable token is cached) takes a short std mutex and clones.
//!
//! The slot itself is here; its parts each have a file: the cache entry and its lock-free
//! view (`cache`), the failure state and backoff (`failure`), `policy.max_grant_age`
//! (`grant_age`), when to ask the IdP (`refresh`), one fetcher per grant kind (`fetch`),
//! the login at rest (`persist`), what a sign-in installs (`signin`), and what a profile
//! reports (`status`).

use super::idp::{ClientAuth, Flows, Target};
use super::timing::{self, Backoff};
use super::{BrokerError, IssuedToken};
use crate::config::{ProfileConfig, SecretSource};
use crate::secret::Secret;
use crate::store::GrantStore;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

mod cache;
mod failure;
mod fetch;
mod grant_age;
mod persist;
mod refresh;
mod signin;
mod status;

pub(super) use cache::Cached;
#[cfg(test)]
pub(super) use cache::RECENT_SECRETS;
pub(super) use failure::{FailKind, Failure};
pub(super) use persist::Adoption;

use cache::{Published, Recent};
use status::RefreshCounters;

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

/// Knobs of a slot that are not its profile's configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotEnv {
    pub(super) backoff: Backoff,
    /// The client id was filled from `{workspace}`: no other workspace shares it, so a
    /// refused refresh token is not "signed in from another workspace".
    pub(super) client_per_workspace: bool,
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

    /// The cached token with its published version, read under the mutex so the two agree.
    pub(super) fn snapshot(&self) -> Option<(u64, Arc<IssuedToken>)> {
        let st = self.lock();
        let c = st.token.as_ref()?;
        Some((self.published.version(), c.issued.clone()))
    }

    fn internal(&self, detail: String) -> BrokerError {
        BrokerError::Internal {
            profile: self.name.clone(),
            detail,
        }
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
}
