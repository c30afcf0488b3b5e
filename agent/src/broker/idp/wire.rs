//! The values that go to and come from the IdP: endpoints, client credentials, grants,
//! device authorizations, and the `oauth2` crate's client and token types they map to.

use super::identity::Identity;
use crate::secret::Secret;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{ClientId, ClientSecret, StandardDeviceAuthorizationResponse, TokenResponse};
use std::time::Duration;

/// Endpoints from the issuer's discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `token_endpoint`.
    pub token: url::Url,
    /// `device_authorization_endpoint`.
    pub device: Option<url::Url>,
    /// `revocation_endpoint`.
    pub revocation: Option<url::Url>,
    /// `authorization_endpoint` (authorization code flow).
    pub authorization: Option<url::Url>,
    /// `userinfo_endpoint` (Backstage: the user entity and its ownership refs).
    pub userinfo: Option<url::Url>,
}

/// Who we are at the IdP: the client id and, for confidential clients, the secret.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// OAuth client id.
    pub client_id: String,
    /// Client secret (read from a file or env var by the caller).
    pub secret: Option<Secret>,
}

/// The `id_token` of an OpenID Connect token answer, kept only long enough to read its claims.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct IdTokenField {
    #[serde(default, with = "opt_secret")]
    id_token: Option<Secret>,
}

impl std::fmt::Debug for IdTokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdTokenField([redacted])")
    }
}

impl oauth2::ExtraTokenFields for IdTokenField {}

/// (De)serializes an optional secret string; serializing never writes the secret.
pub(super) mod opt_secret {
    use crate::secret::Secret;
    pub fn serialize<S: serde::Serializer>(_: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_none()
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        let v: Option<String> = serde::Deserialize::deserialize(d)?;
        Ok(v.map(Secret::new))
    }
}

/// A token answer that keeps the OpenID Connect `id_token` (whose claims say who signed in).
pub(super) type OidcTokenResponse = oauth2::StandardTokenResponse<IdTokenField, BasicTokenType>;

/// `BasicClient` with [`OidcTokenResponse`] answers.
pub(super) type OidcClient = oauth2::Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    BasicRevocationErrorResponse,
>;

/// A client with our id and, for confidential clients, the secret: the part every flow shares.
pub(super) fn oauth_client(client: &ClientAuth) -> OidcClient {
    let c = OidcClient::new(ClientId::new(client.client_id.clone()));
    match &client.secret {
        Some(s) => c.set_client_secret(ClientSecret::new(s.expose().to_string())),
        None => c,
    }
}

/// What the authorization code flow sends to the authorization endpoint; the verifier stays
/// with the caller until the code comes back.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Where the browser is sent back (`http://127.0.0.1:PORT/callback`).
    pub redirect_uri: String,
    /// The `state` the answer must carry back (not secret once in the URL, but unguessable).
    pub state: String,
    /// `BASE64URL(SHA256(verifier))` (PKCE S256).
    pub code_challenge: String,
}

/// A successful token answer.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The access token.
    pub access_token: Secret,
    /// `Bearer` usually.
    pub token_type: String,
    /// Lifetime from now, when the IdP says.
    pub expires_in: Option<Duration>,
    /// A new refresh token (rotation) or the first one (device flow).
    pub refresh_token: Option<Secret>,
    /// Granted scope.
    pub scope: Option<String>,
    /// Who signed in, from the answer's ID token (OpenID Connect flows only).
    pub identity: Option<Identity>,
}

/// What the audience/scope of a request are.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Scopes.
    pub scopes: Vec<String>,
    /// RFC 8707 resource / audience.
    pub audience: Option<String>,
}

/// A started device authorization (RFC 8628).
#[derive(Debug, Clone)]
pub struct DeviceAuthorization {
    pub(crate) response: StandardDeviceAuthorizationResponse,
}

impl DeviceAuthorization {
    /// The page where the user enters the code.
    pub fn verification_uri(&self) -> String {
        self.response.verification_uri().to_string()
    }
    /// The page with the code filled in, if the IdP gave one.
    pub fn verification_uri_complete(&self) -> Option<String> {
        self.response
            .verification_uri_complete()
            .map(|u| u.secret().to_string())
    }
    /// The code the user types.
    pub fn user_code(&self) -> String {
        self.response.user_code().secret().to_string()
    }
    /// How long the device code is valid.
    pub fn expires_in(&self) -> Duration {
        self.response.expires_in()
    }
    /// The poll interval: the IdP's, or 5 s per RFC 8628 when it sends none.
    pub fn interval(&self) -> Duration {
        self.response.interval()
    }
}

pub(super) fn grant_from(t: &OidcTokenResponse) -> Grant {
    Grant {
        access_token: Secret::new(t.access_token().secret().clone()),
        token_type: match t.token_type() {
            oauth2::basic::BasicTokenType::Bearer => "Bearer".to_string(),
            other => token_type_name(other),
        },
        expires_in: t.expires_in(),
        refresh_token: t.refresh_token().map(|r| Secret::new(r.secret().clone())),
        scope: t
            .scopes()
            .map(|s| s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")),
        identity: t
            .extra_fields()
            .id_token
            .as_ref()
            .and_then(|id| Identity::from_id_token(id.expose())),
    }
}

pub(super) fn token_type_name(t: &oauth2::basic::BasicTokenType) -> String {
    match t {
        oauth2::basic::BasicTokenType::Bearer => "Bearer".into(),
        oauth2::basic::BasicTokenType::Mac => "MAC".into(),
        oauth2::basic::BasicTokenType::Extension(s) => s.clone(),
    }
}
