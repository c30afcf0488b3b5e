//! `policy.max_grant_age`: a login older than the policy allows ends as if it was revoked.

use super::failure::{FailKind, Failure};
use super::{Slot, SlotState};
use crate::broker::BrokerError;
use std::time::SystemTime;

impl Slot {
    /// Why the login is too old to be used (`policy.max_grant_age`), if it is.
    pub(super) fn grant_too_old(&self, st: &SlotState) -> Option<String> {
        let max = self.cfg.policy.max_grant_age?;
        if !self.cfg.grant.stores_login() {
            return None;
        }
        crate::policy::limits::grant_too_old(&self.name, st.logged_in_at?, max, SystemTime::now())
    }

    /// Ends a login older than `policy.max_grant_age`: the profile turns `login_required`
    /// with that reason (the stored grant stays until a new login replaces it; it is refused
    /// again after a restart, since its login time is stored with it).
    pub(in crate::broker) fn enforce_grant_age(&self) -> Result<(), BrokerError> {
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
}
