//! What a profile reports: its status line and its refresh counters for `/metrics`.

use super::Slot;
use super::failure::FailKind;
use crate::broker::{ProfileState, ProfileStatus};
use crate::config::GrantKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Per-profile refresh counters: outcomes and the time spent waiting for the IdP.
#[derive(Debug, Default)]
pub(in crate::broker) struct RefreshCounters {
    pub(in crate::broker) ok: AtomicU64,
    pub(in crate::broker) login_required: AtomicU64,
    pub(in crate::broker) unavailable: AtomicU64,
    pub(in crate::broker) error: AtomicU64,
    pub(in crate::broker) idp_nanos: AtomicU64,
}

impl RefreshCounters {
    pub(super) fn record(&self, outcome: Option<FailKind>, took: Duration) {
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

impl Slot {
    /// Status line of this profile (no secret).
    pub(in crate::broker) fn status(&self) -> ProfileStatus {
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
