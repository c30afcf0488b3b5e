//! A profile's failure state: why the last attempt failed, the backoff before the next, and
//! the gate that keeps callers from calling the IdP before it allows.

use super::{Slot, SlotState};
use crate::broker::BrokerError;
use crate::broker::timing;
use std::time::Duration;
use tokio::time::Instant;

/// Why the last attempt failed, and when the next may happen.
#[derive(Debug, Clone)]
pub(in crate::broker) struct Failure {
    pub(in crate::broker) kind: FailKind,
    pub(in crate::broker) reason: String,
    pub(in crate::broker) attempts: u32,
    /// When the background refresher tries again (the backoff).
    pub(in crate::broker) retry_at: Option<Instant>,
    /// The IdP's `Retry-After`: no attempt at all before it, not even for a waiting caller.
    pub(in crate::broker) not_before: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::broker) enum FailKind {
    /// IdP unreachable or failing: retry after backoff.
    Unavailable,
    /// The login is gone; only a new login helps.
    LoginRequired,
    /// Misconfiguration or refusal other than invalid_grant: retry after backoff.
    Error,
}

impl Slot {
    /// The error to return without calling the IdP, if the failure state forbids a call now.
    ///
    /// With `demand` (a caller is waiting for a token) an attempt may come before the
    /// background backoff has passed: the backoff may have grown to minutes during an outage,
    /// and a user whose IdP answers again must not wait for it (issue 23). Such attempts are
    /// rate limited to one per [`timing::DEMAND_RETRY`] per profile, counted from the last IdP
    /// attempt of any kind, and never come before the IdP's `Retry-After`; they run under the
    /// flight lock like every attempt, so one profile never has two IdP calls in flight.
    pub(super) fn gate(&self, now: Instant, demand: bool) -> Option<BrokerError> {
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

    pub(super) fn error_of(&self, f: &Failure) -> BrokerError {
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

    pub(super) fn record_failure(
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
}
