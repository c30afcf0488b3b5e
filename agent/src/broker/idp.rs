//! The identity provider, as the broker sees it: OIDC discovery (cached) and the token
//! endpoint flows (device authorization, refresh, client credentials, RFC 8693 exchange),
//! with every failure turned into a typed [`IdpError`] with a plain message.
//!
//! Requests go through the `oauth2` crate with our own HTTP function, so we can see the
//! status and `Retry-After` of every answer (the crate does not expose them). RFC 8693 has
//! no helper in `oauth2`; it is one form POST whose answer is parsed with the crate's types.

use crate::secret::Secret;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, DeviceAuthorizationUrl, ErrorResponse, HttpRequest,
    HttpResponse, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use oauth2::{DeviceCodeErrorResponseType, StandardDeviceAuthorizationResponse};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a request to the IdP failed. Messages are for people; no token ever appears.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdpError {
    /// The IdP answered with an OAuth error (`invalid_grant`, `access_denied`, ...).
    #[error("the identity provider refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        /// The OAuth `error` code.
        code: String,
        /// The IdP's `error_description`, if any.
        description: Option<String>,
    },
    /// Unreachable, too slow, 5xx, 429 or an answer we cannot parse: worth retrying later.
    #[error("{detail}")]
    Unavailable {
        /// What happened.
        detail: String,
        /// The IdP's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The IdP cannot do what the profile asks (no device endpoint, bad URL).
    #[error("{0}")]
    Unsupported(String),
}

impl IdpError {
    fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// True for `invalid_grant`: the login is gone and only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Rejected { code, .. } if code == "invalid_grant")
    }
}

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
mod opt_secret {
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
type OidcTokenResponse = oauth2::StandardTokenResponse<IdTokenField, BasicTokenType>;

/// `BasicClient` with [`OidcTokenResponse`] answers.
type OidcClient = oauth2::Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    BasicRevocationErrorResponse,
>;

/// A client with our id and, for confidential clients, the secret: the part every flow shares.
fn oauth_client(client: &ClientAuth) -> OidcClient {
    let c = OidcClient::new(ClientId::new(client.client_id.clone()));
    match &client.secret {
        Some(s) => c.set_client_secret(ClientSecret::new(s.expose().to_string())),
        None => c,
    }
}

/// Who signed in, from the non-secret claims of the last ID token (`whoami`, status). The
/// claims are read, not verified: the token came straight from the IdP's token endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// `sub`.
    pub sub: Option<String>,
    /// `groups`, when the IdP sends them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `name`.
    pub name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `preferred_username`.
    pub preferred_username: Option<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// Backstage ownership refs (`ent` of `/v1/userinfo`: the user entity and its groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ent: Vec<String>,
}

impl Identity {
    /// The identity in an ID token's claims; `None` if it is not a JWT.
    pub fn from_id_token(id_token: &str) -> Option<Identity> {
        super::jwt::claims(id_token).map(|c| Self::from_claims(&c))
    }

    /// The identity in a claims object (an ID token's, or a userinfo answer's).
    pub fn from_claims(c: &serde_json::Value) -> Identity {
        let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let groups = strings(c.get("groups"));
        Identity {
            sub: s("sub"),
            groups,
            name: s("name"),
            email: s("email"),
            preferred_username: s("preferred_username"),
            iss: s("iss"),
            ent: strings(c.get("ent")),
        }
    }
}

/// A claim that is a string or an array of strings, as a list.
fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(g)) => vec![g.clone()],
        _ => Vec::new(),
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

/// A boxed future of one IdP flow.
pub type FlowFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, IdpError>> + Send + 'a>>;

/// The flows the broker needs from an identity provider. [`Idp`] is the real one (HTTP, via
/// `oauth2`); the seam exists so the cache and refresher can be unit-tested under paused
/// tokio time, where real sockets and timeouts do not mix.
pub trait Flows: Send + Sync {
    /// The issuer URL, without a trailing slash.
    fn issuer(&self) -> &str;
    /// Starts a device authorization.
    fn device_authorize<'a>(
        &'a self,
        client: &'a ClientAuth,
        target: &'a Target,
    ) -> FlowFuture<'a, DeviceAuthorization>;
    /// Polls until the device login ends.
    fn device_poll<'a>(
        &'a self,
        client: &'a ClientAuth,
        auth: &'a DeviceAuthorization,
    ) -> FlowFuture<'a, Grant>;
    /// Uses a refresh token.
    fn refresh<'a>(
        &'a self,
        client: &'a ClientAuth,
        refresh_token: &'a Secret,
        target: &'a Target,
    ) -> FlowFuture<'a, Grant>;
    /// Client credentials grant.
    fn client_credentials<'a>(
        &'a self,
        client: &'a ClientAuth,
        target: &'a Target,
    ) -> FlowFuture<'a, Grant>;
    /// RFC 8693 token exchange.
    fn exchange<'a>(
        &'a self,
        client: &'a ClientAuth,
        subject_token: &'a Secret,
        target: &'a Target,
    ) -> FlowFuture<'a, Grant>;
    /// RFC 7009 revocation of a refresh token.
    fn revoke<'a>(&'a self, client: &'a ClientAuth, token: &'a Secret) -> FlowFuture<'a, ()>;
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

/// HTTP status and `Retry-After` of the last answer of one request.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    status: u16,
    retry_after: Option<Duration>,
}

/// The HTTP error type handed to `oauth2` (connection refused, timeout, ...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpFailure(String);

/// A boxed future of one HTTP exchange.
pub type HttpFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, HttpFailure>> + Send>>;

/// Sends one HTTP request to the IdP and reads the whole answer. The real one is `reqwest`;
/// the unit tests of the device poll loop script the IdP's answers under paused time.
pub trait Transport: Send + Sync {
    /// Sends `req`.
    fn send(&self, req: HttpRequest) -> HttpFuture;
}

/// The real transport: `reqwest` with the broker's timeout and no redirects.
struct ReqwestTransport(reqwest::Client);

impl Transport for ReqwestTransport {
    fn send(&self, req: HttpRequest) -> HttpFuture {
        let http = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpFailure(plain_reqwest(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| HttpFailure(plain_reqwest(&e)))?;
            let mut out = http::Response::new(body.to_vec());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}

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

    /// The discovery document's endpoints, fetched once and cached (a failure is not cached).
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, IdpError> {
        let mut cached = self.endpoints.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let req = http::Request::get(&url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| IdpError::Unsupported(format!("bad issuer URL {url}: {e}")))?;
        let resp = self
            .transport
            .send(req)
            .await
            .map_err(|e| IdpError::unavailable(format!("discovery at {url} failed: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(IdpError::Unavailable {
                detail: format!("discovery at {url} answered HTTP {}", status.as_u16()),
                retry_after: retry_after(resp.headers()),
            });
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            issuer: Option<String>,
            token_endpoint: url::Url,
            device_authorization_endpoint: Option<url::Url>,
            revocation_endpoint: Option<url::Url>,
            authorization_endpoint: Option<url::Url>,
            userinfo_endpoint: Option<url::Url>,
        }
        let doc: Doc = serde_json::from_slice(resp.body()).map_err(|e| {
            IdpError::unavailable(format!("discovery at {url} is not a valid document: {e}"))
        })?;
        if let Some(i) = &doc.issuer
            && i.trim_end_matches('/') != self.issuer
        {
            return Err(IdpError::Unsupported(format!(
                "discovery at {url} names issuer {i}, not {}",
                self.issuer
            )));
        }
        // The client secret and tokens go to these endpoints: an https issuer may not send
        // them to plain http, and nothing goes over plain http off this machine.
        let https_issuer = self.issuer.starts_with("https://");
        for (name, ep) in [
            ("token_endpoint", Some(&doc.token_endpoint)),
            (
                "device_authorization_endpoint",
                doc.device_authorization_endpoint.as_ref(),
            ),
            ("revocation_endpoint", doc.revocation_endpoint.as_ref()),
        ] {
            if let Some(ep) = ep
                && (!crate::cleartext::allows(ep) || (https_issuer && ep.scheme() != "https"))
            {
                return Err(IdpError::Unsupported(format!(
                    "discovery at {url} gives {name} {ep}, which is not https: credentials would travel in clear text; refused"
                )));
            }
        }
        let e = Arc::new(Endpoints {
            token: doc.token_endpoint,
            device: doc.device_authorization_endpoint,
            revocation: doc.revocation_endpoint,
            authorization: doc.authorization_endpoint,
            userinfo: doc.userinfo_endpoint,
        });
        *cached = Some(e.clone());
        Ok(e)
    }

    fn http_fn(&self, meta: Arc<Mutex<Meta>>) -> impl Fn(HttpRequest) -> HttpFuture + use<> {
        let transport = self.transport.clone();
        move |req: HttpRequest| {
            let transport = transport.clone();
            let meta = meta.clone();
            Box::pin(async move {
                let resp = transport.send(req).await?;
                if let Ok(mut m) = meta.lock() {
                    *m = Meta {
                        status: resp.status().as_u16(),
                        retry_after: retry_after(resp.headers()),
                    };
                }
                Ok(resp)
            }) as HttpFuture
        }
    }

    /// A form POST to `url` with client authentication: HTTP Basic (RFC 6749 section 2.3.1,
    /// form-urlencoded id and secret) for confidential clients, `client_id` in the body else.
    async fn post_form(
        &self,
        url: &url::Url,
        client: &ClientAuth,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<HttpResponse, HttpFailure> {
        let mut req = http::Request::post(url.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        match &client.secret {
            Some(s) => {
                let enc = |v: &str| {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                };
                let pair = zeroize::Zeroizing::new(format!(
                    "{}:{}",
                    enc(&client.client_id),
                    enc(s.expose())
                ));
                let b64 = zeroize::Zeroizing::new(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    pair.as_bytes(),
                ));
                req = req.header(
                    http::header::AUTHORIZATION,
                    format!("Basic {}", b64.as_str()),
                );
            }
            None => form.push(("client_id", client.client_id.clone())),
        }
        let body = {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &form {
                ser.append_pair(k, v);
            }
            zeroize::Zeroizing::new(ser.finish())
        };
        for (_, v) in form.iter_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        let req = req
            .body(body.as_bytes().to_vec())
            .map_err(|e| HttpFailure(format!("cannot build request: {e}")))?;
        self.transport.send(req).await
    }

    /// Starts a device authorization (RFC 8628 section 3.1).
    pub async fn device_authorize(
        &self,
        client: &ClientAuth,
        target: &Target,
    ) -> Result<DeviceAuthorization, IdpError> {
        let ep = self.endpoints().await?;
        let Some(device) = ep.device.clone() else {
            return Err(IdpError::Unsupported(format!(
                "{} has no device_authorization_endpoint; this IdP cannot do the device flow",
                self.issuer
            )));
        };
        let c = oauth_client(client)
            .set_auth_type(AuthType::RequestBody)
            .set_device_authorization_url(DeviceAuthorizationUrl::from_url(device));
        let meta = Arc::new(Mutex::new(Meta::default()));
        let mut req = c
            .exchange_device_code()
            .add_scopes(target.scopes.iter().cloned().map(Scope::new));
        for (k, v) in audience_params(target) {
            req = req.add_extra_param(k, v);
        }
        let resp: StandardDeviceAuthorizationResponse = req
            .request_async(&self.http_fn(meta.clone()))
            .await
            .map_err(|e| classify(e, &meta))?;
        Ok(DeviceAuthorization { response: resp })
    }

    /// Polls the token endpoint until the user approves, denies, or the code expires.
    ///
    /// Uses the `oauth2` poll loop (interval default 5 s, `slow_down` adds 5 s); transient
    /// failures (IdP down, 5xx, garbage) restart the loop after the current interval instead of
    /// ending the login.
    pub async fn device_poll(
        &self,
        client: &ClientAuth,
        auth: &DeviceAuthorization,
    ) -> Result<Grant, IdpError> {
        let deadline = tokio::time::Instant::now() + auth.expires_in();
        let interval = Arc::new(Mutex::new(auth.interval()));
        let mut current = auth.response.clone();
        loop {
            // A restart after a transient failure keeps the interval slow_down raised
            // (RFC 8628 section 3.5): the oauth2 loop starts from the response's interval.
            let now_interval = interval.lock().map(|i| *i).unwrap_or(current.interval());
            if now_interval != current.interval() {
                current = with_interval(&current, now_interval).unwrap_or(current);
            }
            let ep = match self.endpoints().await {
                Ok(ep) => ep,
                Err(e) => {
                    sleep_or_expire(&interval, deadline, &e).await?;
                    continue;
                }
            };
            let c = oauth_client(client)
                .set_auth_type(AuthType::RequestBody)
                .set_token_uri(TokenUrl::from_url(ep.token.clone()));
            let meta = Arc::new(Mutex::new(Meta::default()));
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let seen = interval.clone();
            let res = c
                .exchange_device_access_token(&current)
                .request_async(
                    &self.http_fn(meta.clone()),
                    move |d: Duration| {
                        if let Ok(mut i) = seen.lock() {
                            *i = d;
                        }
                        tokio::time::sleep(d)
                    },
                    Some(remaining),
                )
                .await;
            match res {
                Ok(t) => return Ok(grant_from(&t)),
                Err(RequestTokenError::ServerResponse(e)) => {
                    let code = match e.error() {
                        DeviceCodeErrorResponseType::AccessDenied => "access_denied".to_string(),
                        DeviceCodeErrorResponseType::ExpiredToken => "expired_token".to_string(),
                        other => other.to_string(),
                    };
                    let status = meta.lock().map(|m| m.status).unwrap_or(0);
                    if status == 429 || status >= 500 {
                        let err =
                            IdpError::unavailable(format!("token endpoint answered HTTP {status}"));
                        sleep_or_expire(&interval, deadline, &err).await?;
                        continue;
                    }
                    return Err(IdpError::Rejected {
                        code,
                        description: e.error_description().cloned(),
                    });
                }
                Err(other) => {
                    let err = classify_any(other, &meta);
                    if matches!(err, IdpError::Rejected { .. } | IdpError::Unsupported(_)) {
                        return Err(err);
                    }
                    sleep_or_expire(&interval, deadline, &err).await?;
                }
            }
        }
    }

    /// Uses a refresh token (RFC 6749 section 6). The answer may carry a rotated refresh token.
    pub async fn refresh(
        &self,
        client: &ClientAuth,
        refresh_token: &Secret,
        target: &Target,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let c = oauth_client(client)
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(ep.token.clone()));
        let rt = RefreshToken::new(refresh_token.expose().to_string());
        let meta = Arc::new(Mutex::new(Meta::default()));
        let mut req = c.exchange_refresh_token(&rt);
        for (k, v) in audience_params(target) {
            req = req.add_extra_param(k, v);
        }
        let t = req
            .request_async(&self.http_fn(meta.clone()))
            .await
            .map_err(|e| classify(e, &meta))?;
        Ok(grant_from(&t))
    }

    /// Client credentials grant (RFC 6749 section 4.4).
    pub async fn client_credentials(
        &self,
        client: &ClientAuth,
        target: &Target,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let c = oauth_client(client).set_token_uri(TokenUrl::from_url(ep.token.clone()));
        let meta = Arc::new(Mutex::new(Meta::default()));
        let mut req = c
            .exchange_client_credentials()
            .add_scopes(target.scopes.iter().cloned().map(Scope::new));
        for (k, v) in audience_params(target) {
            req = req.add_extra_param(k, v);
        }
        let t = req
            .request_async(&self.http_fn(meta.clone()))
            .await
            .map_err(|e| classify(e, &meta))?;
        Ok(grant_from(&t))
    }

    /// RFC 8693 token exchange of `subject_token` for a token of `target`'s audience.
    pub async fn exchange(
        &self,
        client: &ClientAuth,
        subject_token: &Secret,
        target: &Target,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let mut form: Vec<(&'static str, String)> = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".into(),
            ),
            ("subject_token", subject_token.expose().to_string()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token".into(),
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token".into(),
            ),
        ];
        if let Some(a) = &target.audience {
            // RFC 8693 knows both; `resource` must be an absolute URI.
            form.push(("audience", a.clone()));
            if is_absolute_uri(a) {
                form.push(("resource", a.clone()));
            }
        }
        if !target.scopes.is_empty() {
            form.push(("scope", target.scopes.join(" ")));
        }
        let resp = self
            .post_form(&ep.token, client, form)
            .await
            .map_err(|e| IdpError::unavailable(format!("token exchange: {e}")))?;
        token_answer(&resp)
    }

    /// The authorization endpoint URL for a code flow with PKCE S256 (RFC 6749 section
    /// 4.1.1, RFC 7636).
    pub async fn authorize_url(
        &self,
        client: &ClientAuth,
        target: &Target,
        req: &AuthorizeRequest,
    ) -> Result<url::Url, IdpError> {
        let ep = self.endpoints().await?;
        let Some(mut url) = ep.authorization.clone() else {
            return Err(IdpError::Unsupported(format!(
                "{} has no authorization_endpoint; it cannot do the authorization code flow",
                self.issuer
            )));
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &client.client_id)
                .append_pair("redirect_uri", &req.redirect_uri)
                .append_pair("state", &req.state)
                .append_pair("code_challenge", &req.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if !target.scopes.is_empty() {
                q.append_pair("scope", &target.scopes.join(" "));
            }
        }
        Ok(url)
    }

    /// Redeems an authorization code (RFC 6749 section 4.1.3) with its PKCE verifier.
    pub async fn code_exchange(
        &self,
        client: &ClientAuth,
        code: &Secret,
        verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let form: Vec<(&'static str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.expose().to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", verifier.expose().to_string()),
        ];
        let resp = self
            .post_form(&ep.token, client, form)
            .await
            .map_err(|e| IdpError::unavailable(format!("code exchange: {e}")))?;
        token_answer(&resp)
    }

    /// The userinfo endpoint's claims for `access_token` (Backstage wraps them in `claims`).
    pub async fn userinfo(&self, access_token: &Secret) -> Result<serde_json::Value, IdpError> {
        let ep = self.endpoints().await?;
        let Some(url) = ep.userinfo.clone() else {
            return Err(IdpError::Unsupported(format!(
                "{} has no userinfo_endpoint",
                self.issuer
            )));
        };
        let auth = zeroize::Zeroizing::new(format!("Bearer {}", access_token.expose()));
        let req = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, auth.as_str())
            .body(Vec::new())
            .map_err(|e| IdpError::Unsupported(format!("bad userinfo URL: {e}")))?;
        let resp = self
            .transport
            .send(req)
            .await
            .map_err(|e| IdpError::unavailable(format!("userinfo: {e}")))?;
        if !resp.status().is_success() {
            return Err(IdpError::Unavailable {
                detail: format!("userinfo endpoint answered HTTP {}", resp.status().as_u16()),
                retry_after: retry_after(resp.headers()),
            });
        }
        serde_json::from_slice(resp.body())
            .map_err(|_| IdpError::unavailable("userinfo endpoint answered with malformed JSON"))
    }
}

/// A token endpoint's answer as a [`Grant`] or a classified error.
fn token_answer(resp: &HttpResponse) -> Result<Grant, IdpError> {
    {
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let body = resp.body();
        if status == 429 || status >= 500 {
            return Err(IdpError::Unavailable {
                detail: format!("token endpoint answered HTTP {status}"),
                retry_after: ra,
            });
        }
        if status != 200 {
            return match serde_json::from_slice::<BasicErrorResponse>(body) {
                Ok(e) => Err(IdpError::Rejected {
                    code: e.error().to_string(),
                    description: e.error_description().cloned(),
                }),
                Err(_) => Err(IdpError::unavailable(format!(
                    "token endpoint answered HTTP {status} with a body that is not an OAuth error"
                ))),
            };
        }
        let t: OidcTokenResponse = serde_json::from_slice(body).map_err(|_| {
            IdpError::unavailable("token endpoint answered 200 with a malformed token response")
        })?;
        Ok(grant_from(&t))
    }
}

impl Idp {
    /// Revokes a refresh token (RFC 7009) where the IdP supports it; best effort.
    pub async fn revoke(&self, client: &ClientAuth, token: &Secret) -> Result<(), IdpError> {
        let ep = self.endpoints().await?;
        let Some(url) = ep.revocation.clone() else {
            return Ok(());
        };
        let form = vec![
            ("token", token.expose().to_string()),
            ("token_type_hint", "refresh_token".to_string()),
        ];
        let resp = self
            .post_form(&url, client, form)
            .await
            .map_err(|e| IdpError::unavailable(format!("revocation: {e}")))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(IdpError::unavailable(format!(
                "revocation endpoint answered HTTP {}",
                resp.status().as_u16()
            )))
        }
    }
}

/// RFC 8707 `resource` when the audience is an absolute URI, else the widespread (non-standard)
/// `audience` parameter: an IdP with resource indicators refuses a `resource` that is not a URI.
fn audience_params(target: &Target) -> Vec<(&'static str, String)> {
    match &target.audience {
        Some(a) if is_absolute_uri(a) => vec![("resource", a.clone())],
        Some(a) => vec![("audience", a.clone())],
        None => Vec::new(),
    }
}

fn is_absolute_uri(s: &str) -> bool {
    url::Url::parse(s).is_ok()
}

/// The same device authorization with another poll interval (the type has no setter).
fn with_interval(
    r: &StandardDeviceAuthorizationResponse,
    interval: Duration,
) -> Option<StandardDeviceAuthorizationResponse> {
    let mut v = serde_json::to_value(r).ok()?;
    v.as_object_mut()?
        .insert("interval".into(), serde_json::json!(interval.as_secs()));
    serde_json::from_value(v).ok()
}

async fn sleep_or_expire(
    interval: &Mutex<Duration>,
    deadline: tokio::time::Instant,
    why: &IdpError,
) -> Result<(), IdpError> {
    let d = interval
        .lock()
        .map(|i| *i)
        .unwrap_or(Duration::from_secs(5));
    let d = match why {
        IdpError::Unavailable {
            retry_after: Some(r),
            ..
        } => d.max(*r),
        _ => d,
    };
    if tokio::time::Instant::now() + d >= deadline {
        return Err(IdpError::Rejected {
            code: "expired_token".into(),
            description: Some(format!(
                "the device code expired while the IdP was failing: {why}"
            )),
        });
    }
    tracing::debug!(error = %why, "device poll failed; retrying");
    tokio::time::sleep(d).await;
    Ok(())
}

fn grant_from(t: &OidcTokenResponse) -> Grant {
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

fn token_type_name(t: &oauth2::basic::BasicTokenType) -> String {
    match t {
        oauth2::basic::BasicTokenType::Bearer => "Bearer".into(),
        oauth2::basic::BasicTokenType::Mac => "MAC".into(),
        oauth2::basic::BasicTokenType::Extension(s) => s.clone(),
    }
}

/// Maps an `oauth2` error of a token request to an [`IdpError`], using the status we saw.
fn classify<TE: ErrorResponse + 'static>(
    e: RequestTokenError<HttpFailure, TE>,
    meta: &Mutex<Meta>,
) -> IdpError {
    classify_any(e, meta)
}

fn classify_any<TE: ErrorResponse + 'static>(
    e: RequestTokenError<HttpFailure, TE>,
    meta: &Mutex<Meta>,
) -> IdpError {
    let m = meta.lock().map(|m| *m).unwrap_or_default();
    if m.status == 429 || m.status >= 500 {
        return IdpError::Unavailable {
            detail: if m.status == 429 {
                "the identity provider is rate limiting (HTTP 429)".into()
            } else {
                format!("the identity provider failed (HTTP {})", m.status)
            },
            retry_after: m.retry_after,
        };
    }
    match e {
        RequestTokenError::ServerResponse(err) => {
            // The error type's Display is its code (`invalid_grant`, ...).
            let code = serde_json::to_value(&err)
                .ok()
                .and_then(|v| v.get("error").and_then(|c| c.as_str()).map(String::from))
                .unwrap_or_else(|| "unknown_error".into());
            let description = serde_json::to_value(&err).ok().and_then(|v| {
                v.get("error_description")
                    .and_then(|c| c.as_str())
                    .map(String::from)
            });
            IdpError::Rejected { code, description }
        }
        RequestTokenError::Request(f) => {
            IdpError::unavailable(format!("cannot reach the identity provider: {f}"))
        }
        // Never include the body: a half-valid answer may hold a token.
        RequestTokenError::Parse(_, _) => IdpError::unavailable(format!(
            "the identity provider sent a malformed answer (HTTP {})",
            m.status
        )),
        RequestTokenError::Other(s) => IdpError::unavailable(format!(
            "unexpected answer from the identity provider (HTTP {}): {s}",
            m.status
        )),
    }
}

/// A reqwest error in words, without the URL's query (which never holds secrets here, but
/// the message stays short) and with the kind made plain.
fn plain_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed (is it running?)".into()
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the answer".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }
}

/// Parses `Retry-After` (delay seconds or an HTTP date).
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs(
        delta.whole_seconds().clamp(0, 24 * 3600) as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn audience_goes_as_resource_only_when_it_is_a_uri() {
        let t = |a: &str| Target {
            scopes: vec![],
            audience: Some(a.into()),
        };
        assert_eq!(
            audience_params(&t("urn:stagepass:git")),
            vec![("resource", "urn:stagepass:git".to_string())]
        );
        assert_eq!(
            audience_params(&t("sts.amazonaws.com")),
            vec![("audience", "sts.amazonaws.com".to_string())]
        );
    }

    /// A scripted IdP: discovery, device authorization without `interval` (like
    /// oidc-provider), then the token endpoint's answers in order.
    struct Script {
        token_answers: Mutex<std::collections::VecDeque<(u16, &'static str)>>,
        token_calls: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Transport for Script {
        fn send(&self, req: HttpRequest) -> HttpFuture {
            let path = req.uri().path().to_string();
            let (status, body): (u16, String) = match path.as_str() {
                "/.well-known/openid-configuration" => (
                    200,
                    r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth"}"#.into(),
                ),
                "/device/auth" => (
                    200,
                    r#"{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"https://idp.test/device","expires_in":600}"#.into(),
                ),
                _ => {
                    self.token_calls.lock().unwrap().push(tokio::time::Instant::now());
                    let (st, b) = self.token_answers.lock().unwrap().pop_front().unwrap();
                    (st, b.into())
                }
            };
            let ct = if body.starts_with('{') {
                "application/json"
            } else {
                "text/html"
            };
            let mut resp = http::Response::new(body.into_bytes());
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            Box::pin(async move { Ok(resp) })
        }
    }

    /// A discovery document that sends an https issuer's credentials to http endpoints.
    struct Downgrade(&'static str);

    impl Transport for Downgrade {
        fn send(&self, _req: HttpRequest) -> HttpFuture {
            let mut resp = http::Response::new(self.0.as_bytes().to_vec());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                "application/json".parse().unwrap(),
            );
            Box::pin(async move { Ok(resp) })
        }
    }

    /// Issue 19: discovery may not point an https issuer at plain http endpoints.
    #[tokio::test]
    async fn discovery_pointing_https_at_http_is_refused() {
        let client = ClientAuth {
            client_id: "c".into(),
            secret: None,
        };
        for doc in [
            r#"{"issuer":"https://idp.test","token_endpoint":"http://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth"}"#,
            r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"http://127.0.0.1/device/auth"}"#,
        ] {
            let idp = Idp::with_transport("https://idp.test", Arc::new(Downgrade(doc)));
            let err = idp
                .device_authorize(&client, &Target::default())
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("clear text"), "{err}");
        }
        // An all-https document passes discovery (and fails later, on the scripted answer).
        let ok = r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth"}"#;
        let idp = Idp::with_transport("https://idp.test", Arc::new(Downgrade(ok)));
        let err = idp
            .device_authorize(&client, &Target::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("clear text"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn device_poll_defaults_to_5s_and_slow_down_adds_5s_across_transient_errors() {
        let script = Arc::new(Script {
            token_answers: Mutex::new(
                [
                    (400, r#"{"error":"authorization_pending"}"#),
                    (400, r#"{"error":"slow_down"}"#),
                    (503, "<html>down</html>"),
                    (400, r#"{"error":"authorization_pending"}"#),
                    (200, r#"{"access_token":"at","token_type":"Bearer","expires_in":60,"refresh_token":"rt","id_token":"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAiZ3JvdXBzIjogWyJ0ZWFtLWEiLCAib3BzIl0sICJpc3MiOiAiaHR0cHM6Ly9pZHAudGVzdCJ9.sig"}"#),
                ]
                .into_iter()
                .collect(),
            ),
            token_calls: Mutex::new(Vec::new()),
        });
        let idp = Idp::with_transport("https://idp.test", script.clone());
        let client = ClientAuth {
            client_id: "c".into(),
            secret: None,
        };
        let auth = idp
            .device_authorize(&client, &Target::default())
            .await
            .unwrap();
        assert_eq!(auth.interval(), Duration::from_secs(5), "RFC 8628 default");
        assert_eq!(auth.user_code(), "ABCD-EFGH");
        let start = tokio::time::Instant::now();
        let g = idp.device_poll(&client, &auth).await.unwrap();
        assert_eq!(g.access_token.expose(), "at");
        // The ID token's claims are kept (not the token): who signed in, for whoami.
        let who = g.identity.clone().unwrap();
        assert_eq!(who.sub.as_deref(), Some("alice"));
        assert_eq!(who.groups, ["team-a", "ops"]);
        assert_eq!(g.refresh_token.unwrap().expose(), "rt");
        let at: Vec<u64> = script
            .token_calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - start).as_secs())
            .collect();
        // 0: pending -> 5 s; 5: slow_down -> 10 s; 15: 503 -> wait 10 s, restart keeping 10 s;
        // 25: pending -> 10 s; 35: token.
        assert_eq!(at, vec![0, 5, 15, 25, 35]);
    }

    #[tokio::test(start_paused = true)]
    async fn device_poll_reports_denial_and_expiry_as_rejections() {
        for (answer, code) in [
            (r#"{"error":"access_denied"}"#, "access_denied"),
            (r#"{"error":"expired_token"}"#, "expired_token"),
        ] {
            let script = Arc::new(Script {
                token_answers: Mutex::new([(400, answer)].into_iter().collect()),
                token_calls: Mutex::new(Vec::new()),
            });
            let idp = Idp::with_transport("https://idp.test", script);
            let client = ClientAuth {
                client_id: "c".into(),
                secret: None,
            };
            let auth = idp
                .device_authorize(&client, &Target::default())
                .await
                .unwrap();
            let err = idp.device_poll(&client, &auth).await.unwrap_err();
            assert!(
                matches!(&err, IdpError::Rejected { code: c, .. } if c == code),
                "{err:?}"
            );
        }
    }

    #[test]
    fn rejected_message_is_plain() {
        let e = IdpError::Rejected {
            code: "invalid_grant".into(),
            description: Some("grant request is invalid".into()),
        };
        assert!(e.is_invalid_grant());
        assert_eq!(
            e.to_string(),
            "the identity provider refused: invalid_grant (grant request is invalid)"
        );
    }
}
