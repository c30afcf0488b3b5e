//! The login at rest: what of a token is stored beside the refresh token, how a stored one
//! is adopted at start, and the writes to the grant store.

use super::Slot;
use super::cache::Cached;
use crate::broker::IssuedToken;
use crate::broker::timing;
use crate::config::GrantKind;
use crate::store::{StoredAccess, StoredGrant};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What became of the access token of a stored record when an agent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::broker) enum Adoption {
    /// The record held none.
    None,
    /// Served from now on; renewed when its stored schedule says.
    Adopted,
    /// Too close to its expiry to serve; the boot refresh replaces it.
    Expired,
    /// Neither served nor kept, for this reason: the record is rewritten without it.
    Discard(&'static str),
}

pub(super) fn unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Slot {
    /// The record of `c` to keep at rest beside the refresh token, so a restart within its
    /// usable life serves it without an IdP call. Only for device logins (the only grants
    /// stored) and tokens with a known lifetime; times are converted from the monotonic clock
    /// to wall-clock milliseconds, rounded so the stored expiry is never later than the real one.
    pub(in crate::broker) fn stored_access(&self, c: &Cached) -> Option<StoredAccess> {
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
    pub(super) fn stored_entry(
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

    /// Writes a rotated refresh token durably, then releases the grant lock.
    pub(in crate::broker) async fn persist(
        &self,
        grant: StoredGrant,
        lock: crate::store::GrantLock,
    ) {
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

    pub(super) fn grant_matches(&self, g: &StoredGrant) -> bool {
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

    /// Takes the refresh token of a stored grant found at start, if it belongs to this
    /// profile's issuer and client, and its access token if that is still usable for this
    /// profile as configured now: then the start costs the IdP nothing and spends no refresh
    /// token (a kill during a boot refresh on a rotating IdP lost the login), and the token is
    /// renewed when its stored schedule says. A stored access token of another issuer, client,
    /// scopes or audience, or a malformed one, is to be discarded (`Adoption::Discard`).
    pub(in crate::broker) fn adopt_stored(&self, g: StoredGrant) -> Adoption {
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
    pub(in crate::broker) async fn discard_stored_access(&self, fingerprint: Option<String>) {
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
}
