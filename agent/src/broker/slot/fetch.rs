//! One fetcher per grant kind: how each gets a new token from the IdP (or, for `env`
//! profiles, from the environment).

use super::cache::Cached;
use super::persist::unix;
use super::{Slot, SubjectSource};
use crate::broker::idp::{ClientAuth, Grant, IdpError};
use crate::broker::{BrokerError, IssuedToken};
use crate::config::GrantKind;
use crate::secret::Secret;
use crate::store::{GrantLock, StoredGrant};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Result of one IdP round: either an IdP error (to classify) or a ready broker error.
pub(in crate::broker) enum Outcome {
    Idp(IdpError),
    Broker(BrokerError),
}

impl Slot {
    /// Device and authorization-code profiles: spends the refresh token (the store's, which
    /// another process may have rotated) under the cross-process grant lock, which is held
    /// from reading the refresh token until the rotated one is on disk; the IdP call happens
    /// under it.
    pub(super) async fn refresh_device(&self) -> Result<Cached, Outcome> {
        let idp = self.idp().map_err(Outcome::Broker)?.clone();
        let client = self.client().map_err(Outcome::Broker)?;
        let (lock, stored) = self.lock_and_load().await?;
        let stored = stored.filter(|g| self.grant_matches(g));
        let rt = self.adopt_refresh_token(stored.as_ref());
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
        match idp.refresh(&client, &rt, &self.target()).await {
            Ok(g) => {
                let new_rt = g.refresh_token.clone().unwrap_or_else(|| rt.clone());
                // Timed from before the write below: the cached and stored expiry err early.
                let entry = self.cache_entry(&g);
                let access = self.stored_access(&entry);
                // One record: the (rotated) refresh token and the new access token are
                // written together, before the token is handed out.
                let grant = self.rotated_grant(stored, &g, &new_rt, idp.issuer(), &client);
                self.persist(grant.with_access(access), lock).await;
                self.lock().set_refresh_token(new_rt);
                Ok(entry)
            }
            Err(e) if e.is_invalid_grant() => Err(self.dead_grant(e, rt, lock).await),
            Err(e) => {
                drop(lock);
                Err(Outcome::Idp(e))
            }
        }
    }

    /// Takes the grant lock and reads the stored grant, off the async threads.
    async fn lock_and_load(&self) -> Result<(GrantLock, Option<StoredGrant>), Outcome> {
        let store = self.store.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let lock = store.lock(&name)?;
            let stored = store.load(&name)?;
            Ok::<_, crate::store::StoreError>((lock, stored))
        })
        .await
        .map_err(|e| Outcome::Broker(self.internal(format!("store task failed: {e}"))))?
        .map_err(|e| Outcome::Broker(self.internal(format!("grant store: {e}"))))
    }

    /// The refresh token to spend: the stored one when there is one (another process may
    /// have rotated it: the store is the truth), else the one in memory.
    fn adopt_refresh_token(&self, stored: Option<&StoredGrant>) -> Option<Secret> {
        let mut st = self.lock();
        if let Some(g) = stored {
            st.set_refresh_token(g.refresh_token.clone());
            st.logged_in_at = Some(unix(g.login_time()));
        }
        st.refresh_token.clone()
    }

    /// The record to store after a refresh: the old one with the rotated refresh token (or
    /// as it was, when the IdP did not rotate), or a new one when none could be read.
    fn rotated_grant(
        &self,
        stored: Option<StoredGrant>,
        g: &Grant,
        new_rt: &Secret,
        issuer: &str,
        client: &ClientAuth,
    ) -> StoredGrant {
        match stored {
            Some(old) if g.refresh_token.is_some() => {
                old.rotated(new_rt.expose().to_string(), g.scope.clone())
            }
            Some(old) => old,
            None => {
                let mut n = StoredGrant::new(
                    issuer,
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
        }
    }

    /// The IdP no longer accepts the refresh token `used`: forgets the stored grant (only if
    /// nobody replaced it meanwhile: we hold the lock, released here) and says why in words
    /// that name the fix.
    async fn dead_grant(&self, e: IdpError, used: Secret, lock: GrantLock) -> Outcome {
        let store = self.store.clone();
        let name = self.name.clone();
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
        let cause = match self.cfg.grant {
            GrantKind::AuthorizationCode if self.env.client_per_workspace => {
                "; signed out, expired, or the user was removed from the catalog"
            }
            GrantKind::AuthorizationCode => {
                "; most likely signed in from another workspace with the same client \
                 (Backstage keeps one session per user and client; a client_id with \
                 {workspace} gives each workspace its own), else signed out or expired"
            }
            _ => "",
        };
        Outcome::Idp(IdpError::Rejected {
            code: "invalid_grant".into(),
            description: Some(format!(
                "the identity provider no longer accepts the stored login ({detail}){cause}; run `stagepass login {}`",
                self.name
            )),
        })
    }

    pub(super) async fn fetch_client_credentials(&self) -> Result<Cached, Outcome> {
        let idp = self.idp().map_err(Outcome::Broker)?.clone();
        let client = self.client().map_err(Outcome::Broker)?;
        let g = idp
            .client_credentials(&client, &self.target())
            .await
            .map_err(Outcome::Idp)?;
        Ok(self.cache_entry(&g))
    }

    pub(super) async fn fetch_exchange(
        &self,
        subjects: &dyn SubjectSource,
    ) -> Result<Cached, Outcome> {
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
    pub(in crate::broker) fn env_token(&self) -> Result<Arc<IssuedToken>, BrokerError> {
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
        let expires_at = crate::broker::jwt::exp(&value)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
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
}
