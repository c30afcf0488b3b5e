//! The identity provider, as the broker sees it: OIDC discovery (cached) and the token
//! endpoint flows (device authorization, refresh, client credentials, RFC 8693 exchange),
//! with every failure turned into a typed [`IdpError`] with a plain message.
//!
//! Requests go through the `oauth2` crate with our own HTTP function, so we can see the
//! status and `Retry-After` of every answer (the crate does not expose them). RFC 8693 has
//! no helper in `oauth2`; it is one form POST whose answer is parsed with the crate's types.

use crate::secret::Secret;
use oauth2::basic::{BasicErrorResponse, BasicTokenResponse};
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
}

/// Who we are at the IdP: the client id and, for confidential clients, the secret.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// OAuth client id.
    pub client_id: String,
    /// Client secret (read from a file or env var by the caller).
    pub secret: Option<Secret>,
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

/// One issuer: HTTP client, discovery cache.
pub struct Idp {
    issuer: String,
    http: reqwest::Client,
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
            .build()
            .map_err(|e| IdpError::Unsupported(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            http,
            endpoints: tokio::sync::Mutex::new(None),
        })
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
        let resp = self.http.get(&url).send().await.map_err(|e| {
            IdpError::unavailable(format!("discovery at {url} failed: {}", plain_reqwest(&e)))
        })?;
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
        }
        let body = resp.bytes().await.map_err(|e| {
            IdpError::unavailable(format!("discovery at {url}: {}", plain_reqwest(&e)))
        })?;
        let doc: Doc = serde_json::from_slice(&body).map_err(|e| {
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
        let e = Arc::new(Endpoints {
            token: doc.token_endpoint,
            device: doc.device_authorization_endpoint,
            revocation: doc.revocation_endpoint,
        });
        *cached = Some(e.clone());
        Ok(e)
    }

    fn http_fn(
        &self,
        meta: Arc<Mutex<Meta>>,
    ) -> impl Fn(
        HttpRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, HttpFailure>> + Send>,
    > + use<> {
        let http = self.http.clone();
        move |req: HttpRequest| {
            let http = http.clone();
            let meta = meta.clone();
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
                if let Ok(mut m) = meta.lock() {
                    *m = Meta {
                        status: status.as_u16(),
                        retry_after: retry_after(&headers),
                    };
                }
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
        let c = oauth2::basic::BasicClient::new(ClientId::new(client.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_device_authorization_url(DeviceAuthorizationUrl::from_url(device));
        let c = match &client.secret {
            Some(s) => c.set_client_secret(ClientSecret::new(s.expose().to_string())),
            None => c,
        };
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
        loop {
            let ep = match self.endpoints().await {
                Ok(ep) => ep,
                Err(e) => {
                    sleep_or_expire(&interval, deadline, &e).await?;
                    continue;
                }
            };
            let c = oauth2::basic::BasicClient::new(ClientId::new(client.client_id.clone()))
                .set_auth_type(AuthType::RequestBody)
                .set_token_uri(TokenUrl::from_url(ep.token.clone()));
            let c = match &client.secret {
                Some(s) => c.set_client_secret(ClientSecret::new(s.expose().to_string())),
                None => c,
            };
            let meta = Arc::new(Mutex::new(Meta::default()));
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let seen = interval.clone();
            let res = c
                .exchange_device_access_token(&auth.response)
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
        let c = oauth2::basic::BasicClient::new(ClientId::new(client.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(ep.token.clone()));
        let c = match &client.secret {
            Some(s) => c.set_client_secret(ClientSecret::new(s.expose().to_string())),
            None => c,
        };
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
        let c = oauth2::basic::BasicClient::new(ClientId::new(client.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(ep.token.clone()));
        let c = match &client.secret {
            Some(s) => c.set_client_secret(ClientSecret::new(s.expose().to_string())),
            None => c,
        };
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
        let mut form: Vec<(&str, String)> = vec![
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
        let mut req = self.http.post(ep.token.clone());
        match &client.secret {
            Some(s) => req = req.basic_auth(&client.client_id, Some(s.expose())),
            None => form.push(("client_id", client.client_id.clone())),
        }
        let resp = req.form(&form).send().await;
        for (_, v) in form.iter_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        let resp = resp
            .map_err(|e| IdpError::unavailable(format!("token exchange: {}", plain_reqwest(&e))))?;
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| IdpError::unavailable(format!("token exchange: {}", plain_reqwest(&e))))?;
        if status == 429 || status >= 500 {
            return Err(IdpError::Unavailable {
                detail: format!("token endpoint answered HTTP {status}"),
                retry_after: ra,
            });
        }
        if status != 200 {
            return match serde_json::from_slice::<BasicErrorResponse>(&body) {
                Ok(e) => Err(IdpError::Rejected {
                    code: e.error().to_string(),
                    description: e.error_description().cloned(),
                }),
                Err(_) => Err(IdpError::unavailable(format!(
                    "token endpoint answered HTTP {status} with a body that is not an OAuth error"
                ))),
            };
        }
        let t: BasicTokenResponse = serde_json::from_slice(&body).map_err(|_| {
            IdpError::unavailable("token endpoint answered 200 with a malformed token response")
        })?;
        Ok(grant_from(&t))
    }

    /// Revokes a refresh token (RFC 7009) where the IdP supports it; best effort.
    pub async fn revoke(&self, client: &ClientAuth, token: &Secret) -> Result<(), IdpError> {
        let ep = self.endpoints().await?;
        let Some(url) = ep.revocation.clone() else {
            return Ok(());
        };
        let mut form = vec![
            ("token", token.expose().to_string()),
            ("token_type_hint", "refresh_token".to_string()),
        ];
        let mut req = self.http.post(url);
        match &client.secret {
            Some(s) => req = req.basic_auth(&client.client_id, Some(s.expose())),
            None => form.push(("client_id", client.client_id.clone())),
        }
        let resp = req.form(&form).send().await;
        for (_, v) in form.iter_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        let resp =
            resp.map_err(|e| IdpError::unavailable(format!("revocation: {}", plain_reqwest(&e))))?;
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

fn grant_from(t: &BasicTokenResponse) -> Grant {
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
