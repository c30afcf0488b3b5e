//! What a sign-in installs: its cache entry and refresh token, and the signed-in user's
//! ownership refs from the userinfo endpoint.

use super::Slot;
use super::cache::Cached;
use crate::broker::idp::Grant;
use crate::secret::Secret;
use std::time::SystemTime;

impl Slot {
    /// Installs a token obtained by a device login (nothing stored).
    pub(in crate::broker) fn install_login(&self, g: &Grant) {
        let entry = self.login_entry(g);
        self.install_entry(entry, g);
    }

    /// The cache entry of a device login's answer: a new schedule, its first refresh spread
    /// like a start's.
    pub(in crate::broker) fn login_entry(&self, g: &Grant) -> Cached {
        self.spread_next
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cache_entry(g)
    }

    /// Installs the entry of a device login, with its (already persisted) refresh token.
    pub(in crate::broker) fn install_entry(&self, entry: Cached, g: &Grant) {
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
    pub(super) async fn userinfo_identity(
        &self,
        token: &Secret,
    ) -> Option<crate::broker::idp::Identity> {
        let idp = self.idp.as_ref()?;
        match idp.userinfo(token).await {
            Ok(v) => {
                let claims = v.get("claims").unwrap_or(&v);
                let mut id = crate::broker::idp::Identity::from_claims(claims);
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
    pub(in crate::broker) async fn learn_ownership(&self, token: &Secret) {
        if let Some(id) = self.userinfo_identity(token).await {
            self.lock().identity = Some(id);
        }
    }

    /// After a refresh: the entry with the user's ownership refs, asked once per run (they
    /// are Backstage's snapshot of the last interactive sign-in, so they do not change
    /// between refreshes).
    pub(super) async fn with_ownership(&self, mut c: Cached) -> Cached {
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
}
