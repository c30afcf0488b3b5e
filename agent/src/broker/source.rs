//! Where a profile's token comes from, as one trait for every consumer above the broker.
//!
//! The AWS credential service and the catalog's Backstage pushes both need "a valid token
//! of profile P" and (the catalog) "the server refused this one"; in the agent that is the
//! [`Broker`], in their tests a fixed or scripted token. One trait here, below both, lets
//! each take the broker or a fake without a trait of its own.

use super::{Broker, BrokerError, IssuedToken, TokenRequest};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so [`TokenSource`] stays object safe (`Arc<dyn TokenSource>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Gives tokens of named profiles. Implemented by the [`Broker`]; tests feed fixed ones.
pub trait TokenSource: Send + Sync {
    /// A token of `profile` that serves `req` (refreshed first when it would not).
    fn token<'a>(
        &'a self,
        profile: &'a str,
        req: TokenRequest,
    ) -> BoxFuture<'a, Result<Arc<IssuedToken>, BrokerError>>;

    /// A server refused the token of `profile` with this fingerprint: the source should not
    /// hand it out again. Best effort; sources that cannot renew ignore it.
    fn refused<'a>(&'a self, _profile: &'a str, _fingerprint: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

impl TokenSource for Broker {
    fn token<'a>(
        &'a self,
        profile: &'a str,
        req: TokenRequest,
    ) -> BoxFuture<'a, Result<Arc<IssuedToken>, BrokerError>> {
        Box::pin(Broker::token(self, profile, req))
    }

    fn refused<'a>(&'a self, profile: &'a str, fingerprint: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.invalidate(profile, fingerprint).await {
                tracing::debug!(profile = %profile, error = %e, "invalidate after refusal failed");
            }
        })
    }
}
