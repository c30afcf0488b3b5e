//! The test IdP (`tests/peers/idp.mjs`, `oidc-provider` 9.x): start it, drive its
//! test-only control routes, and run the OAuth grants a test needs to set up state.
//!
//! Clients registered in the IdP:
//! - [`Idp::PUBLIC_CLIENT`] (`stagepass-cli`): public; device flow, refresh, token exchange.
//! - [`Idp::CONFIDENTIAL_CLIENT`] (`stagepass-ci`, secret via HTTP Basic) and
//!   [`Idp::CONFIDENTIAL_CLIENT_POST`] (`stagepass-ci-post`, secret in the form): also
//!   client_credentials.
//!
//! Resources (JWT audiences): [`AUD_BACKSTAGE`], [`AUD_GIT`], [`AUD_AWS`] (resource
//! [`RESOURCE_AWS`]). Every grant takes the target as `resource` or `audience`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::error::{HarnessError, Result};
use crate::http;
use crate::peer::{Peer, PeerSpec};

/// Audience Backstage trusts (`backend.auth.externalAccess`); never the reserved `backstage`.
pub const AUD_BACKSTAGE: &str = "urn:stagepass:backstage";
/// Audience the git host accepts.
pub const AUD_GIT: &str = "urn:stagepass:git";
/// Audience (`aud`) of web-identity tokens for AWS STS. Not a URI, so not a valid resource
/// indicator: ask with `audience=sts.amazonaws.com` or `resource=`[`RESOURCE_AWS`] (the test
/// IdP also maps `resource=sts.amazonaws.com` to it).
pub const AUD_AWS: &str = "sts.amazonaws.com";
/// Resource identifier whose tokens carry `aud` = [`AUD_AWS`].
pub const RESOURCE_AWS: &str = "urn:stagepass:aws";

/// `grant_type` of the device flow (RFC 8628).
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// `grant_type` of refresh.
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// `grant_type` of client credentials.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// `grant_type` of token exchange (RFC 8693).
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` for an access token (RFC 8693).
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Start options of a private IdP. Lifetimes are in seconds; all can be changed later
/// with [`Idp::set_ttl`].
#[derive(Debug, Clone)]
pub struct IdpOptions {
    /// Access-token lifetime (down to 1 s for expiry tests).
    pub access_ttl: u64,
    /// Refresh-token lifetime.
    pub refresh_ttl: u64,
    /// Device-code lifetime.
    pub device_ttl: u64,
    /// Secret of the confidential clients.
    pub client_secret: String,
    /// Seconds the IdP's clock is off the real one (negative: behind); `iat`/`exp` of its
    /// tokens and its `Date` header follow it. `None` (the default): the real clock, not
    /// changeable; `Some(n)`: a skewable clock ([`Idp::set_clock_offset`]) starting at `n`.
    pub clock_offset_secs: Option<i64>,
}

impl Default for IdpOptions {
    fn default() -> Self {
        Self {
            access_ttl: 300,
            refresh_ttl: 86_400,
            device_ttl: 600,
            client_secret: Idp::DEFAULT_CLIENT_SECRET.to_string(),
            clock_offset_secs: None,
        }
    }
}

/// A fault the IdP injects instead of answering normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Accept the connection and drop it without a response (connection reset).
    Down,
    /// Close the IdP's port: connections are refused (ECONNREFUSED) until the fault is
    /// changed; discovery and JWKS go too. Always applies to every endpoint; the control
    /// routes stay reachable on the control port.
    Refuse,
    /// Answer normally after a delay.
    Slow(Duration),
    /// Answer with this 5xx status and an HTML body (like a proxy in front of a dead IdP).
    ServerError(u16),
    /// Answer 429 with `Retry-After: retry_after_secs`.
    TooManyRequests {
        /// Value of the Retry-After header, in seconds.
        retry_after_secs: u64,
    },
    /// Answer 200 with truncated JSON.
    Malformed,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultScope {
    /// Only the token endpoint (discovery and JWKS keep working).
    #[default]
    TokenEndpoint,
    /// Every endpoint except the control routes.
    All,
}

/// Counters of one `grant_type` at the token endpoint.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GrantStats {
    /// Every call that arrived, faulted ones included.
    pub requests: u64,
    /// Calls answered 200 by the provider.
    pub ok: u64,
    /// Calls the provider answered with an error, by OAuth error code.
    pub errors: BTreeMap<String, u64>,
    /// Calls answered by a fault mode instead of the provider.
    pub faulted: u64,
}

/// Counters of token-endpoint calls.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenStats {
    /// All token-endpoint calls.
    pub requests: u64,
    /// Per `grant_type` (full URN for device code and token exchange).
    pub by_grant: BTreeMap<String, GrantStats>,
}

/// Counters of device-authorization calls.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeviceAuthStats {
    /// All device-authorization calls.
    pub requests: u64,
}

/// What the IdP counted since start or the last [`Idp::reset_stats`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IdpStats {
    /// The token endpoint.
    pub token: TokenStats,
    /// The device-authorization endpoint.
    pub device_authorization: DeviceAuthStats,
    /// Requests a fault mode touched (any endpoint, `slow` included).
    pub faulted: u64,
}

impl IdpStats {
    /// Counters of one grant type (zeros when it was never called).
    pub fn grant(&self, grant_type: &str) -> GrantStats {
        self.token
            .by_grant
            .get(grant_type)
            .cloned()
            .unwrap_or_default()
    }
}

/// One `refresh_token` grant the IdP answered. Tokens appear only as fingerprints (first
/// 12 hex chars of SHA-256, the same as `stagepass::secret::Secret::fingerprint`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RefreshLogEntry {
    /// Order of answering, from 1.
    pub seq: u64,
    /// The refresh token presented (now spent when `issued` is set: rotation is strict).
    pub presented: String,
    /// The refresh token issued in its place, when the grant succeeded.
    pub issued: Option<String>,
    /// The OAuth error code, when it failed.
    pub error: Option<String>,
}

/// The IdP's refresh log, for telling apart why a client lost its login.
#[derive(Debug, Clone, Deserialize)]
pub struct RefreshLog {
    /// Token-endpoint requests that arrived and are not answered yet.
    pub in_flight: u64,
    /// Answered refresh grants, oldest first.
    pub entries: Vec<RefreshLogEntry>,
}

/// The answer of a device-authorization request (RFC 8628 section 3.2).
#[derive(Clone, Deserialize)]
pub struct DeviceAuthorization {
    /// The device code the client polls with.
    pub device_code: String,
    /// The code a person would type; the control route approves by it.
    pub user_code: String,
    /// Where a person would go.
    pub verification_uri: String,
    /// Same, with the user code filled in.
    pub verification_uri_complete: Option<String>,
    /// Lifetime of the device code in seconds.
    pub expires_in: u64,
    /// Poll interval; `oidc-provider` never sends it.
    pub interval: Option<u64>,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"[redacted]")
            .field("user_code", &self.user_code)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A successful token response. Debug output redacts the tokens.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token (a JWT when a resource was requested).
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: Option<u64>,
    /// The rotated/new refresh token, if issued.
    pub refresh_token: Option<String>,
    /// Granted scope.
    pub scope: Option<String>,
    /// ID token, when `openid` was granted.
    pub id_token: Option<String>,
    /// RFC 8693 issued token type.
    pub issued_token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

/// An OAuth error answer (`{"error","error_description"}`) with its status.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// OAuth error code, e.g. `invalid_grant`.
    pub error: String,
    /// Human text.
    pub error_description: Option<String>,
}

/// A running test IdP: private (owned, stopped on drop) or shared (from the bed file).
#[derive(Debug)]
pub struct Idp {
    peer: Option<Peer>,
    url: String,
    control_url: String,
    client: reqwest::Client,
}

impl Idp {
    /// The public client of the agent (device flow, refresh, token exchange).
    pub const PUBLIC_CLIENT: &'static str = "stagepass-cli";
    /// The confidential client, secret sent with HTTP Basic.
    pub const CONFIDENTIAL_CLIENT: &'static str = "stagepass-ci";
    /// The confidential client, secret sent in the form body.
    pub const CONFIDENTIAL_CLIENT_POST: &'static str = "stagepass-ci-post";
    /// Secret of the confidential clients unless [`IdpOptions::client_secret`] says otherwise.
    pub const DEFAULT_CLIENT_SECRET: &'static str = "stagepass-ci-secret";

    /// Starts a private IdP (about half a second); stopped when dropped.
    pub async fn start(opts: IdpOptions) -> Result<Idp> {
        let mut spec = PeerSpec::new("idp", "idp.mjs")
            .arg_pair("--access-ttl", opts.access_ttl.to_string())
            .arg_pair("--refresh-ttl", opts.refresh_ttl.to_string())
            .arg_pair("--device-ttl", opts.device_ttl.to_string())
            .arg_pair("--client-secret", opts.client_secret);
        if let Some(offset) = opts.clock_offset_secs {
            spec = spec.clock_offset(offset);
        }
        let peer = Peer::spawn(spec).await?;
        let url = peer.url().to_string();
        let control_url = peer
            .ready()
            .extra
            .get("control_url")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&url)
            .to_string();
        Ok(Idp {
            peer: Some(peer),
            url,
            control_url,
            client: http::client()?,
        })
    }

    /// A handle on an IdP someone else runs (the shared bed); not stopped on drop.
    /// `control_url` is the separate control port (the IdP's own URL serves the control
    /// routes too, except for [`Fault::Refuse`]).
    pub fn connect(url: &str, control_url: Option<&str>) -> Result<Idp> {
        let url = url.trim_end_matches('/').to_string();
        Ok(Idp {
            peer: None,
            control_url: control_url
                .map(|c| c.trim_end_matches('/').to_string())
                .unwrap_or_else(|| url.clone()),
            url,
            client: http::client()?,
        })
    }

    /// Base URL of the control routes (a port of their own that [`Fault::Refuse`] keeps open).
    pub fn control_url(&self) -> &str {
        &self.control_url
    }

    /// The issuer (also the base URL), `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.url
    }

    /// Base URL (same as the issuer).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// OpenID discovery document URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.url)
    }

    /// JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// Token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.url)
    }

    /// Device-authorization endpoint URL.
    pub fn device_authorization_endpoint(&self) -> String {
        format!("{}/device/auth", self.url)
    }

    /// The process, when this handle owns it.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    fn control(&self, path: &str) -> String {
        format!("{}/__test/{path}", self.control_url)
    }

    /// Approves a pending device code as `subject` (headless stand-in for the browser).
    pub async fn approve(&self, user_code: &str, subject: &str) -> Result<()> {
        let _: serde_json::Value = http::post_json(
            &self.client,
            &self.control("device/approve"),
            &json!({"user_code": user_code, "subject": subject}),
        )
        .await?;
        Ok(())
    }

    /// Denies a pending device code (the client then gets `access_denied`).
    pub async fn deny(&self, user_code: &str) -> Result<()> {
        let _: serde_json::Value = http::post_json(
            &self.client,
            &self.control("device/deny"),
            &json!({"user_code": user_code}),
        )
        .await?;
        Ok(())
    }

    /// User codes of device authorizations still waiting for approval or denial, oldest
    /// first: for tests where the agent, not the test, started the device flow.
    pub async fn pending_user_codes(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Pending {
            user_codes: Vec<String>,
        }
        let p: Pending = http::get_json(&self.client, &self.control("device/pending")).await?;
        Ok(p.user_codes)
    }

    /// From now on approve every new device authorization at once for `subject`
    /// (`None` turns it off). Not for the shared IdP: it would approve other tests' logins.
    pub async fn auto_approve(&self, subject: Option<&str>) -> Result<()> {
        let _: serde_json::Value = http::post_json(
            &self.client,
            &self.control("device/auto-approve"),
            &json!({ "subject": subject }),
        )
        .await?;
        Ok(())
    }

    /// Token-endpoint counters.
    pub async fn stats(&self) -> Result<IdpStats> {
        http::get_json(&self.client, &self.control("stats")).await
    }

    /// Moves the IdP's clock to `offset_secs` off the real one (needs
    /// [`IdpOptions::clock_offset_secs`]); returns the IdP's "now" (epoch seconds).
    pub async fn set_clock_offset(&self, offset_secs: i64) -> Result<i64> {
        let v: serde_json::Value = http::post_json(
            &self.client,
            &self.control("clock"),
            &json!({ "offset_s": offset_secs }),
        )
        .await?;
        Ok(v["now"].as_i64().unwrap_or_default())
    }

    /// The refresh log (every `refresh_token` grant answered since start or the last
    /// [`Idp::reset_stats`], oldest first) and the token requests still being handled.
    pub async fn refresh_log(&self) -> Result<RefreshLog> {
        http::get_json(&self.client, &self.control("refresh-log")).await
    }

    /// Zeroes the counters (and empties the refresh log).
    pub async fn reset_stats(&self) -> Result<()> {
        let _: serde_json::Value =
            http::post_json(&self.client, &self.control("stats/reset"), &json!({})).await?;
        Ok(())
    }

    /// Injects `fault` on the token endpoint until changed.
    pub async fn set_fault(&self, fault: Fault) -> Result<()> {
        self.set_fault_with(fault, FaultScope::TokenEndpoint, None)
            .await
    }

    /// Injects `fault` on `scope`; with `times`, only for that many requests
    /// ([`Fault::Refuse`] always covers every endpoint and takes no `times`).
    pub async fn set_fault_with(
        &self,
        fault: Fault,
        scope: FaultScope,
        times: Option<u32>,
    ) -> Result<()> {
        let mut body = match fault {
            Fault::None => json!({"mode": "none"}),
            Fault::Down => json!({"mode": "down"}),
            Fault::Refuse => json!({"mode": "refuse"}),
            Fault::Slow(d) => {
                json!({"mode": "slow", "ms": u64::try_from(d.as_millis()).unwrap_or(u64::MAX)})
            }
            Fault::ServerError(status) => json!({"mode": "5xx", "status": status}),
            Fault::TooManyRequests { retry_after_secs } => {
                json!({"mode": "429", "retry_after": retry_after_secs})
            }
            Fault::Malformed => json!({"mode": "malformed"}),
        };
        body["scope"] = json!(match (scope, &fault) {
            (_, Fault::Refuse) | (FaultScope::All, _) => "all",
            (FaultScope::TokenEndpoint, _) => "token",
        });
        if let Some(n) = times {
            body["times"] = json!(n);
        }
        let _: serde_json::Value =
            http::post_json(&self.client, &self.control("fault"), &body).await?;
        Ok(())
    }

    /// Revokes every grant approved for `subject`: its refresh tokens then get
    /// `invalid_grant`. Returns how many grants were revoked.
    pub async fn revoke_subject(&self, subject: &str) -> Result<u64> {
        let v: serde_json::Value = http::post_json(
            &self.client,
            &self.control("revoke"),
            &json!({"subject": subject}),
        )
        .await?;
        Ok(v["revoked_grants"].as_u64().unwrap_or(0))
    }

    /// Changes token lifetimes (seconds) for tokens issued from now on.
    pub async fn set_ttl(
        &self,
        access: Option<u64>,
        refresh: Option<u64>,
        device: Option<u64>,
    ) -> Result<()> {
        let mut body = json!({});
        if let Some(v) = access {
            body["access"] = json!(v);
        }
        if let Some(v) = refresh {
            body["refresh"] = json!(v);
        }
        if let Some(v) = device {
            body["device"] = json!(v);
        }
        let _: serde_json::Value =
            http::post_json(&self.client, &self.control("ttl"), &body).await?;
        Ok(())
    }

    /// Makes token exchange accept `token` (opaque, e.g. a GITHUB_TOKEN stand-in) as a
    /// subject token for `subject`.
    pub async fn trust_subject_token(&self, token: &str, subject: &str) -> Result<()> {
        let _: serde_json::Value = http::post_json(
            &self.client,
            &self.control("exchange/trust"),
            &json!({"token": token, "subject": subject}),
        )
        .await?;
        Ok(())
    }

    /// Mints a JWT access token for `subject` and `resource` with its own lifetime (through
    /// the provider's token model, same key and claims as a grant), for tests on the shared
    /// IdP that need e.g. a 1 s token without changing everyone's TTL.
    pub async fn mint(
        &self,
        subject: &str,
        resource: &str,
        ttl_secs: u64,
    ) -> Result<TokenResponse> {
        http::post_json(
            &self.client,
            &self.control("mint"),
            &json!({"subject": subject, "resource": resource, "ttl": ttl_secs}),
        )
        .await
    }

    /// The IdP's JWKS.
    pub async fn jwks(&self) -> Result<jsonwebtoken::jwk::JwkSet> {
        http::get_json(&self.client, &self.jwks_uri()).await
    }

    /// Starts a device authorization for `client_id` (public client) with `scope` and
    /// optional `resource`.
    pub async fn start_device_authorization(
        &self,
        client_id: &str,
        scope: &str,
        resource: Option<&str>,
    ) -> Result<DeviceAuthorization> {
        let mut form = vec![("client_id", client_id), ("scope", scope)];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        http::send_json(
            "device authorization",
            self.client
                .post(self.device_authorization_endpoint())
                .form(&form),
        )
        .await
    }

    /// Calls the token endpoint with `form` (and HTTP Basic when `basic` is given):
    /// `Ok(Ok(tokens))` on 200, `Ok(Err(oauth_error))` on an OAuth error answer.
    pub async fn token_request(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<std::result::Result<TokenResponse, OAuthError>> {
        let what = "token request";
        let mut req = self.client.post(self.token_endpoint()).form(form);
        if let Some((user, pass)) = basic {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req.send().await.map_err(|source| HarnessError::Http {
            what: what.into(),
            source,
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| HarnessError::Http {
            what: what.into(),
            source,
        })?;
        if status == 200 {
            let tokens = serde_json::from_str(&text).map_err(|source| HarnessError::Json {
                what: what.into(),
                source,
            })?;
            return Ok(Ok(tokens));
        }
        match serde_json::from_str::<OAuthError>(&text) {
            Ok(mut e) => {
                e.status = status;
                Ok(Err(e))
            }
            Err(_) => Err(HarnessError::Status {
                what: what.into(),
                status,
                body: text,
            }),
        }
    }

    /// Runs a whole device flow headlessly: start, approve as `subject`, redeem.
    /// `scope` should include `offline_access` to get a refresh token.
    pub async fn device_login(
        &self,
        client_id: &str,
        scope: &str,
        resource: Option<&str>,
        subject: &str,
    ) -> Result<TokenResponse> {
        let auth = self
            .start_device_authorization(client_id, scope, resource)
            .await?;
        self.approve(&auth.user_code, subject).await?;
        let form = [
            ("grant_type", GRANT_DEVICE_CODE),
            ("client_id", client_id),
            ("device_code", auth.device_code.as_str()),
        ];
        self.token_request(&form, None)
            .await?
            .map_err(|e| oauth_failure("device code redemption", &e))
    }

    /// Refreshes with the public client; the IdP rotates the refresh token.
    pub async fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
        resource: Option<&str>,
    ) -> Result<std::result::Result<TokenResponse, OAuthError>> {
        let mut form = vec![
            ("grant_type", GRANT_REFRESH_TOKEN),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        self.token_request(&form, None).await
    }

    /// client_credentials with the confidential client (Basic auth) for `resource`.
    pub async fn client_credentials(
        &self,
        client_secret: &str,
        resource: Option<&str>,
    ) -> Result<TokenResponse> {
        let mut form = vec![("grant_type", GRANT_CLIENT_CREDENTIALS)];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        self.token_request(&form, Some((Self::CONFIDENTIAL_CLIENT, client_secret)))
            .await?
            .map_err(|e| oauth_failure("client_credentials", &e))
    }
}

fn oauth_failure(what: &str, e: &OAuthError) -> HarnessError {
    HarnessError::Status {
        what: what.to_string(),
        status: e.status,
        body: format!(
            "{}: {}",
            e.error,
            e.error_description.as_deref().unwrap_or("")
        ),
    }
}
