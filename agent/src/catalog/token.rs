//! Where the Backstage token comes from, behind a small trait so tests can feed one directly.
//!
//! In the agent it is [`BrokerTokens`]: the configured profile's token from the broker (which
//! refreshes it). End-to-end tests get a token from the test IdP and use [`StaticToken`].

use crate::broker::{Broker, TokenRequest};
use crate::secret::Secret;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Gives the bearer token for Backstage requests.
pub trait TokenSource: Send + Sync {
    /// The profile name, for messages ("token of profile X refused").
    fn profile(&self) -> Option<String>;
    /// The current token; `Ok(None)` means send no `Authorization` header.
    fn token(&self) -> BoxFuture<'_, Result<Option<Secret>, String>>;
    /// Tells the source that Backstage refused the token with this fingerprint.
    fn refused(&self, _fingerprint: &str) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// No token: Backstage without auth (or local validation only).
pub struct NoToken;

impl TokenSource for NoToken {
    fn profile(&self) -> Option<String> {
        None
    }
    fn token(&self) -> BoxFuture<'_, Result<Option<Secret>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// A fixed token (tests, or a token handed in from outside).
pub struct StaticToken {
    /// Profile name shown in messages.
    pub profile: String,
    /// The token.
    pub token: std::sync::Mutex<Secret>,
}

impl StaticToken {
    /// A source that always answers `token`.
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
    fn profile(&self) -> Option<String> {
        Some(self.profile.clone())
    }
    fn token(&self) -> BoxFuture<'_, Result<Option<Secret>, String>> {
        let t = self
            .token
            .lock()
            .map(|t| t.clone())
            .map_err(|_| "token lock poisoned".to_string());
        Box::pin(async move { t.map(Some) })
    }
}

/// The broker's token of one profile.
pub struct BrokerTokens {
    /// The broker.
    pub broker: Broker,
    /// The profile configured in `[catalog].profile`.
    pub profile: String,
}

impl TokenSource for BrokerTokens {
    fn profile(&self) -> Option<String> {
        Some(self.profile.clone())
    }
    fn token(&self) -> BoxFuture<'_, Result<Option<Secret>, String>> {
        Box::pin(async move {
            let req = TokenRequest {
                min_valid: Some(Duration::from_secs(30)),
            };
            self.broker
                .token(&self.profile, req)
                .await
                .map(|t| Some(t.access_token.clone()))
                .map_err(|e| e.to_string())
        })
    }
    fn refused(&self, fingerprint: &str) -> BoxFuture<'_, ()> {
        let fp = fingerprint.to_string();
        Box::pin(async move {
            if let Err(e) = self.broker.invalidate(&self.profile, &fp).await {
                tracing::debug!(profile = %self.profile, error = %e, "invalidate after refusal failed");
            }
        })
    }
}
