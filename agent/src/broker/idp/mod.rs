//! The identity provider, as the broker sees it: OIDC discovery (cached) and the token
//! endpoint flows (device authorization, refresh, client credentials, RFC 8693 exchange),
//! with every failure turned into a typed [`IdpError`] with a plain message.
//!
//! Requests go through the `oauth2` crate with our own HTTP function, so we can see the
//! status and `Retry-After` of every answer (the crate does not expose them). RFC 8693 has
//! no helper in `oauth2`; it is one form POST whose answer is parsed with the crate's types.
//!
//! [`Idp`] is here; each concept has a file: errors (`error`), the values on the wire
//! (`wire`, `identity`), the [`Flows`] trait (`flows`), the HTTP [`Transport`]
//! (`transport`), discovery, the device flow (`device`), the token endpoint's other grants
//! and revocation (`token`), and the authorization code flow (`authcode`). Every public
//! item is re-exported here, so paths stay `broker::idp::X`.

mod authcode;
mod device;
mod discovery;
mod error;
mod flows;
mod identity;
mod token;
mod transport;
mod wire;

pub use error::IdpError;
pub use flows::{FlowFuture, Flows};
pub use identity::Identity;
pub use transport::{HttpFailure, HttpFuture, Transport};
pub use wire::{
    AuthorizeRequest, ClientAuth, DeviceAuthorization, Endpoints, Grant, IdTokenField, Target,
};

use std::sync::Arc;
use std::time::Duration;
use transport::ReqwestTransport;

/// One issuer: HTTP transport, discovery cache.
pub struct Idp {
    issuer: String,
    transport: Arc<dyn Transport>,
    endpoints: tokio::sync::Mutex<Option<Arc<Endpoints>>>,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp").field("issuer", &self.issuer).finish()
    }
}

impl Idp {
    /// A client for `issuer` whose requests each give up after `timeout`.
    pub fn new(issuer: &str, timeout: Duration) -> Result<Self, IdpError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // No pooled connections: a refresh comes every few minutes, by which time the
            // IdP has usually closed an idle keep-alive connection, and reusing one it is
            // closing that very moment fails the refresh with "connection reset" (the soak
            // test saw it ~15 times in 10 minutes, each failing callers for a backoff
            // delay). A token request is not idempotent (rotation), so it is not retried
            // blindly either; a fresh connection per request avoids the race.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| IdpError::Unsupported(format!("cannot build HTTP client: {e}")))?;
        Ok(Self::with_transport(
            issuer,
            Arc::new(ReqwestTransport(http)),
        ))
    }

    /// A client for `issuer` over `transport`.
    pub fn with_transport(issuer: &str, transport: Arc<dyn Transport>) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            transport,
            endpoints: tokio::sync::Mutex::new(None),
        }
    }

    /// The issuer URL, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}
