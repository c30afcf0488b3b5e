//! The Backstage token of the catalog: `catalog.profile`'s token from a [`TokenSource`].
//!
//! In the agent the source is the [`crate::broker::Broker`] (which refreshes the token and
//! drops one Backstage refused). End-to-end tests get a token from the test IdP and use
//! [`StaticToken`]; without a source ([`NoToken`]) or without a profile the catalog sends no
//! `Authorization` header.

use crate::broker::{BoxFuture, BrokerError, IssuedToken, TokenRequest, TokenSource};
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

/// How long a token handed to a Backstage request must still be valid.
const MIN_VALID: Duration = Duration::from_secs(30);

/// No source of tokens: every profile is unknown (the default when tests give none).
pub struct NoToken;

impl TokenSource for NoToken {
    fn token<'a>(
        &'a self,
        profile: &'a str,
        _req: TokenRequest,
    ) -> BoxFuture<'a, Result<Arc<IssuedToken>, BrokerError>> {
        Box::pin(async move { Err(BrokerError::UnknownProfile(profile.to_string())) })
    }
}

/// A fixed token of one profile (tests, or a token handed in from outside).
pub struct StaticToken {
    /// The profile it is the token of; other profiles are unknown to it.
    pub profile: String,
    /// The token.
    pub token: std::sync::Mutex<Secret>,
}

impl StaticToken {
    /// A source that always answers `token` for `profile`.
    pub fn new(profile: &str, token: Secret) -> Self {
        Self {
            profile: profile.into(),
            token: std::sync::Mutex::new(token),
        }
    }

    /// Replaces the token (a new login).
    pub fn set(&self, token: Secret) {
        if let Ok(mut t) = self.token.lock() {
            *t = token;
        }
    }
}

impl TokenSource for StaticToken {
    fn token<'a>(
        &'a self,
        profile: &'a str,
        _req: TokenRequest,
    ) -> BoxFuture<'a, Result<Arc<IssuedToken>, BrokerError>> {
        let answer = if profile == self.profile {
            self.token
                .lock()
                .map(|t| {
                    Arc::new(IssuedToken {
                        access_token: t.clone(),
                        token_type: "Bearer".into(),
                        expires_at: None,
                        scope: None,
                        profile: self.profile.clone(),
                    })
                })
                .map_err(|_| BrokerError::Internal {
                    profile: self.profile.clone(),
                    detail: "token lock poisoned".into(),
                })
        } else {
            Err(BrokerError::UnknownProfile(profile.to_string()))
        };
        Box::pin(async move { answer })
    }
}

/// A source bound to the catalog's profile: what the push worker and the engine ask.
pub(crate) struct BackstageTokens {
    source: Arc<dyn TokenSource>,
    profile: Option<String>,
}

impl BackstageTokens {
    /// `profile` is `catalog.profile`; without one no token is asked for.
    pub(crate) fn new(source: Arc<dyn TokenSource>, profile: Option<String>) -> Self {
        Self { source, profile }
    }

    /// The profile name, for messages ("token of profile X refused").
    pub(crate) fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// The current token; `Ok(None)` means send no `Authorization` header (no profile).
    pub(crate) async fn token(&self) -> Result<Option<Secret>, String> {
        let Some(profile) = &self.profile else {
            return Ok(None);
        };
        let req = TokenRequest {
            min_valid: Some(MIN_VALID),
        };
        self.source
            .token(profile, req)
            .await
            .map(|t| Some(t.access_token.clone()))
            .map_err(|e| e.to_string())
    }

    /// Tells the source that Backstage refused the token with this fingerprint.
    pub(crate) async fn refused(&self, fingerprint: &str) {
        if let Some(profile) = &self.profile {
            self.source.refused(profile, fingerprint).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_catalog_asks_for_its_profile_and_sends_nothing_without_one() {
        let source = Arc::new(StaticToken::new("backstage", Secret::new("t")));
        let bound = BackstageTokens::new(source.clone(), Some("backstage".into()));
        let token = bound.token().await.unwrap().unwrap();
        assert_eq!(token.expose(), "t");
        // A fixed token belongs to one profile.
        let other = BackstageTokens::new(source.clone(), Some("git".into()));
        let err = other.token().await.unwrap_err();
        assert!(err.contains("unknown profile \"git\""), "{err}");
        // No catalog.profile: no Authorization header, the source is not asked.
        let unbound = BackstageTokens::new(Arc::new(NoToken), None);
        assert!(unbound.token().await.unwrap().is_none());
    }
}
