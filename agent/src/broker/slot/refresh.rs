//! When a profile asks the IdP: the caller's single-flight refresh, the background schedule,
//! and how one attempt's outcome becomes the cache or the failure state.

use super::cache::Cached;
use super::failure::FailKind;
use super::fetch::Outcome;
use super::{Slot, SlotState, SubjectSource};
use crate::broker::idp::IdpError;
use crate::broker::{BrokerError, IssuedToken, TokenRequest};
use crate::config::GrantKind;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

impl Slot {
    /// A token for a caller: from cache, or after one (single-flight) refresh.
    pub(in crate::broker) async fn token(
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

    /// Background refresh: renews if the token is due (or a retry is due). Single flight.
    pub(in crate::broker) async fn refresh_if_due(&self, subjects: &dyn SubjectSource) {
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
    pub(in crate::broker) async fn refresh_now(
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
    pub(in crate::broker) fn next_wake(&self) -> Option<Instant> {
        let st = self.lock();
        match (&st.failure, &st.token) {
            (Some(f), _) if f.kind == FailKind::LoginRequired => None,
            (Some(f), _) => f.retry_at,
            (None, Some(c)) => c.refresh_at,
            (None, None) => None,
        }
    }

    /// Does the IdP work for this profile's grant kind and records the outcome (cache or
    /// failure state, counters). Caller holds the flight lock.
    pub(super) async fn refresh_locked(
        &self,
        subjects: &dyn SubjectSource,
    ) -> Result<Arc<IssuedToken>, BrokerError> {
        self.enforce_grant_age()?;
        let started = Instant::now();
        let demand = self.begin_attempt(started);
        let res = self.fetch(subjects).await;
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
            Err(Outcome::Idp(e)) => Err(self.idp_failed(st, e, took, demand)),
        }
    }

    /// Marks an attempt as under way; whether it is a caller's early one. An attempt before
    /// the backoff has passed is a caller's (see `gate`): its failure must leave the
    /// background schedule as it is.
    fn begin_attempt(&self, started: Instant) -> bool {
        let mut st = self.lock();
        st.refreshing = true;
        st.last_attempt = Some(started);
        st.failure
            .as_ref()
            .is_some_and(|f| f.retry_at.is_some_and(|r| r > started))
    }

    /// The fetcher of this profile's grant kind.
    async fn fetch(&self, subjects: &dyn SubjectSource) -> Result<Cached, Outcome> {
        match self.cfg.grant {
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
        }
    }

    /// Sorts an IdP error into the failure state (an `invalid_grant` of a stored login ends
    /// it; a `Retry-After` is kept) and the error for the caller.
    fn idp_failed(
        &self,
        mut st: MutexGuard<'_, SlotState>,
        e: IdpError,
        took: Duration,
        demand: bool,
    ) -> BrokerError {
        let (kind, retry_after) = match &e {
            IdpError::Rejected { .. } if e.is_invalid_grant() && self.cfg.grant.stores_login() => {
                (FailKind::LoginRequired, None)
            }
            IdpError::Unavailable { retry_after, .. } => (FailKind::Unavailable, *retry_after),
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
        f.map_or_else(
            || BrokerError::IdpUnavailable {
                profile: self.name.clone(),
                detail: reason,
            },
            |f| self.error_of(&f),
        )
    }
}
