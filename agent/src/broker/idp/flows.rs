//! The flows the broker needs from an IdP, as a trait: the real [`Idp`] implements it, and
//! broker tests script a fake one.

use super::Idp;
use super::error::IdpError;
use super::wire::{AuthorizeRequest, ClientAuth, DeviceAuthorization, Grant, Target};
use crate::secret::Secret;

/// A boxed future of one IdP flow.
pub type FlowFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, IdpError>> + Send + 'a>>;

/// The flows the broker needs from an identity provider. [`Idp`] is the real one (HTTP, via
/// `oauth2`) and implements every flow; the seam exists so the cache and refresher can be
/// unit-tested under paused tokio time, where real sockets and timeouts do not mix. Each flow
/// defaults to `Unsupported` (an IdP that does not offer it), so a fake scripts only the
/// flows its test uses.
pub trait Flows: Send + Sync {
    /// The issuer URL, without a trailing slash.
    fn issuer(&self) -> &str;
    /// Starts a device authorization.
    fn device_authorize<'a>(
        &'a self,
        _client: &'a ClientAuth,
        _target: &'a Target,
    ) -> FlowFuture<'a, DeviceAuthorization> {
        Box::pin(async { Err(IdpError::Unsupported("no device flow".into())) })
    }
    /// Polls until the device login ends.
    fn device_poll<'a>(
        &'a self,
        _client: &'a ClientAuth,
        _auth: &'a DeviceAuthorization,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(async { Err(IdpError::Unsupported("no device flow".into())) })
    }
    /// Uses a refresh token.
    fn refresh<'a>(
        &'a self,
        _client: &'a ClientAuth,
        _refresh_token: &'a Secret,
        _target: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(async { Err(IdpError::Unsupported("no refresh token grant".into())) })
    }
    /// Client credentials grant.
    fn client_credentials<'a>(
        &'a self,
        _client: &'a ClientAuth,
        _target: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(async { Err(IdpError::Unsupported("no client credentials grant".into())) })
    }
    /// RFC 8693 token exchange.
    fn exchange<'a>(
        &'a self,
        _client: &'a ClientAuth,
        _subject_token: &'a Secret,
        _target: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(async { Err(IdpError::Unsupported("no token exchange".into())) })
    }
    /// RFC 7009 revocation of a refresh token.
    fn revoke<'a>(&'a self, _client: &'a ClientAuth, _token: &'a Secret) -> FlowFuture<'a, ()> {
        Box::pin(async { Err(IdpError::Unsupported("no revocation endpoint".into())) })
    }
    /// The URL of the authorization endpoint the user's browser opens (code flow + PKCE).
    fn authorize_url<'a>(
        &'a self,
        _client: &'a ClientAuth,
        _target: &'a Target,
        _req: &'a AuthorizeRequest,
    ) -> FlowFuture<'a, url::Url> {
        Box::pin(async { Err(IdpError::Unsupported("no authorization code flow".into())) })
    }
    /// Redeems an authorization code with its PKCE verifier.
    fn code_exchange<'a>(
        &'a self,
        _client: &'a ClientAuth,
        _code: &'a Secret,
        _verifier: &'a Secret,
        _redirect_uri: &'a str,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(async { Err(IdpError::Unsupported("no authorization code flow".into())) })
    }
    /// The claims `userinfo_endpoint` gives for an access token.
    fn userinfo<'a>(&'a self, _access_token: &'a Secret) -> FlowFuture<'a, serde_json::Value> {
        Box::pin(async { Err(IdpError::Unsupported("no userinfo endpoint".into())) })
    }
}

impl Flows for Idp {
    fn issuer(&self) -> &str {
        Idp::issuer(self)
    }
    fn device_authorize<'a>(
        &'a self,
        client: &'a ClientAuth,
        target: &'a Target,
    ) -> FlowFuture<'a, DeviceAuthorization> {
        Box::pin(Idp::device_authorize(self, client, target))
    }
    fn device_poll<'a>(
        &'a self,
        client: &'a ClientAuth,
        auth: &'a DeviceAuthorization,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(Idp::device_poll(self, client, auth))
    }
    fn refresh<'a>(
        &'a self,
        client: &'a ClientAuth,
        refresh_token: &'a Secret,
        target: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(Idp::refresh(self, client, refresh_token, target))
    }
    fn client_credentials<'a>(
        &'a self,
        client: &'a ClientAuth,
        target: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(Idp::client_credentials(self, client, target))
    }
    fn exchange<'a>(
        &'a self,
        client: &'a ClientAuth,
        subject_token: &'a Secret,
        target: &'a Target,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(Idp::exchange(self, client, subject_token, target))
    }
    fn revoke<'a>(&'a self, client: &'a ClientAuth, token: &'a Secret) -> FlowFuture<'a, ()> {
        Box::pin(Idp::revoke(self, client, token))
    }
    fn authorize_url<'a>(
        &'a self,
        client: &'a ClientAuth,
        target: &'a Target,
        req: &'a AuthorizeRequest,
    ) -> FlowFuture<'a, url::Url> {
        Box::pin(Idp::authorize_url(self, client, target, req))
    }
    fn code_exchange<'a>(
        &'a self,
        client: &'a ClientAuth,
        code: &'a Secret,
        verifier: &'a Secret,
        redirect_uri: &'a str,
    ) -> FlowFuture<'a, Grant> {
        Box::pin(Idp::code_exchange(
            self,
            client,
            code,
            verifier,
            redirect_uri,
        ))
    }
    fn userinfo<'a>(&'a self, access_token: &'a Secret) -> FlowFuture<'a, serde_json::Value> {
        Box::pin(Idp::userinfo(self, access_token))
    }
}
