//! The test Backstage (`tests/peers/backstage.mjs`): the real catalog backend trusting the
//! IdP's JWKS for audience [`AUD_BACKSTAGE`](crate::idp::AUD_BACKSTAGE), reading `url`
//! locations from the git host. Starting one costs 5-10 s and ~200 MB, so tests normally
//! use the shared bed ([`crate::Bed`]).
//!
//! Catalog rules allow every usual kind except `Template` ([`Backstage::FORBIDDEN_KIND`]).

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{HarnessError, Result};
use crate::http;
use crate::peer::{Peer, PeerSpec};
use crate::support::poll_until;

/// Start options of a private Backstage.
#[derive(Debug, Clone)]
pub struct BackstageOptions {
    /// The IdP whose JWKS Backstage trusts.
    pub issuer: String,
    /// `host:port` entries Backstage may read `url` locations from (the git host).
    pub reading_allow: Vec<String>,
    /// `catalog.processingInterval` in seconds.
    pub processing_interval_secs: u64,
    /// A chosen port (to stop and start it again at the same URL); `None` picks a free one.
    pub port: Option<u16>,
    /// A GitHub integration: `(host:port, raw base URL)`. Backstage then reads GitHub-shaped
    /// URLs on that host (`/OWNER/REPO/blob/REF/PATH`, `/tree/...`) by fetching
    /// `RAW_BASE/OWNER/REPO/REF/PATH`, as it reads GitHub Enterprise without an API token.
    pub github: Option<(String, String)>,
}

impl BackstageOptions {
    /// Options trusting `issuer`, reading from `git_host_port`, processing every 5 s.
    pub fn new(issuer: &str, git_host_port: &str) -> Self {
        Self {
            issuer: issuer.to_string(),
            reading_allow: vec![git_host_port.to_string()],
            processing_interval_secs: 5,
            port: None,
            github: None,
        }
    }
}

/// An HTTP answer of the catalog API: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct CatalogResponse {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
}

/// A static OAuth client of Backstage's authorization server and its allowed redirects.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OauthClient {
    /// `client_id`.
    pub client_id: String,
    /// Exact redirect URIs (`http://127.0.0.1:PORT/callback`).
    pub redirect_uris: Vec<String>,
}

impl OauthClient {
    /// A redirect port of this client that nothing listens on now and no other test holds:
    /// the port is claimed with an exclusive lock on a file named for it (under the temp
    /// dir), kept until this process ends. Nextest runs every test in its own process, so
    /// the claim lasts exactly as long as the test whose agent will bind the port; without
    /// it two tests could both see the port free before either agent listened on it. The
    /// search starts at a point that differs per call, so claims rarely contend.
    pub fn free_redirect_port(&self) -> Option<u16> {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = self.redirect_uris.len().max(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
        let start = nanos
            .wrapping_add(std::process::id() as usize)
            .wrapping_add(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 5);
        (0..n).find_map(|i| {
            let u = &self.redirect_uris[(start + i) % n];
            let port: u16 = u
                .strip_prefix("http://127.0.0.1:")?
                .split('/')
                .next()?
                .parse()
                .ok()?;
            let claim = claim_port(port)?;
            std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            CLAIMS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(claim);
            Some(port)
        })
    }
}

/// Redirect ports this process claimed (their lock files, held open until it exits).
static CLAIMS: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// An exclusive lock on `port`'s claim file, or `None` when another test (or an earlier
/// call of this one: a lock is per open file) holds it.
fn claim_port(port: u16) -> Option<std::fs::File> {
    let dir = std::env::temp_dir().join("stagepass-redirect-ports");
    std::fs::create_dir_all(&dir).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

/// A running Backstage: private (owned, stopped on drop) or shared (from the bed file).
#[derive(Debug)]
pub struct Backstage {
    peer: Option<Peer>,
    url: String,
    static_token: String,
    oauth_clients: Vec<OauthClient>,
    client_metadata_template: Option<String>,
    client: reqwest::Client,
}

/// Exit code of backstage.mjs when its port was taken between choosing and binding it.
const ADDR_IN_USE_MARKER: &str = "EADDRINUSE";

impl Backstage {
    /// The kind `catalog.rules` does not allow: registering one must fail visibly.
    pub const FORBIDDEN_KIND: &'static str = "Template";

    /// Starts a private Backstage; retries twice when its port was taken meanwhile.
    pub async fn start(opts: BackstageOptions) -> Result<Backstage> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut spec = PeerSpec::new("backstage", "backstage.mjs")
                .arg_pair("--issuer", &opts.issuer)
                .arg_pair("--git-host", opts.reading_allow.join(","))
                .arg_pair(
                    "--processing-interval",
                    opts.processing_interval_secs.to_string(),
                );
            if let Some(port) = opts.port {
                spec = spec.arg_pair("--port", port.to_string());
            }
            if let Some((host, raw_base)) = &opts.github {
                spec = spec
                    .arg_pair("--github-host", host)
                    .arg_pair("--github-raw-base", raw_base);
            }
            spec.ready_timeout = Duration::from_secs(180);
            match Peer::spawn(spec).await {
                Ok(peer) => {
                    let url = peer.url().to_string();
                    let static_token = peer
                        .ready()
                        .extra
                        .get("static_token")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let oauth_clients = peer
                        .ready()
                        .extra
                        .get("oauth_clients")
                        .cloned()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or_default();
                    let client_metadata_template = peer
                        .ready()
                        .extra
                        .get("client_metadata_template")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    return Ok(Backstage {
                        peer: Some(peer),
                        url,
                        static_token,
                        oauth_clients,
                        client_metadata_template,
                        client: http::client()?,
                    });
                }
                Err(HarnessError::PeerExited { log, .. })
                    if attempt < 3 && log.contains(ADDR_IN_USE_MARKER) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A handle on a Backstage someone else runs (the shared bed); not stopped on drop.
    pub fn connect(url: &str, static_token: &str) -> Result<Backstage> {
        Ok(Backstage {
            peer: None,
            url: url.trim_end_matches('/').to_string(),
            static_token: static_token.to_string(),
            oauth_clients: Vec::new(),
            client_metadata_template: None,
            client: http::client()?,
        })
    }

    /// The static OAuth clients the bed announced (see [`Backstage::connect`]).
    pub fn with_oauth_clients(mut self, clients: Vec<OauthClient>) -> Self {
        self.oauth_clients = clients;
        self
    }

    /// The per-workspace client metadata template the bed announced (see
    /// [`Backstage::connect`]).
    pub fn with_client_metadata_template(mut self, template: Option<String>) -> Self {
        self.client_metadata_template = template;
        self
    }

    /// The URL template of per-workspace Client ID Metadata Documents this Backstage
    /// allows (`.../stagepass/clients/{workspace}.json`): an agent's `client_id` with
    /// `{workspace}` makes each workspace its own client, with no client configured per
    /// workspace.
    pub fn client_metadata_template(&self) -> Result<&str> {
        self.client_metadata_template.as_deref().ok_or_else(|| {
            HarnessError::Other("Backstage announced no client metadata template".into())
        })
    }

    /// Backstage's authorization server (issuer and discovery base), `<url>/api/auth`.
    pub fn auth_issuer(&self) -> String {
        format!("{}/api/auth", self.url)
    }

    /// The static OAuth client named `client_id`.
    pub fn oauth_client(&self, client_id: &str) -> Result<&OauthClient> {
        self.oauth_clients
            .iter()
            .find(|c| c.client_id == client_id)
            .ok_or_else(|| {
                HarnessError::Other(format!("Backstage has no static client {client_id}"))
            })
    }

    /// Signs in as `user` the way the Backstage app would, and returns the user's
    /// Backstage token: an IdP token for `user` (audience urn:stagepass:backstage) goes to
    /// the bed's `stagepass-test` proxy provider, which resolves it to `user:default/USER`.
    pub async fn sign_in(&self, idp: &crate::Idp, user: &str) -> Result<String> {
        let idp_token = idp.mint(user, crate::idp::AUD_BACKSTAGE, 600).await?;
        let what = format!("signing in to Backstage as {user}");
        let v: Value = http::send_json(
            &what,
            self.client
                .get(format!(
                    "{}/api/auth/stagepass-test/refresh?env=development",
                    self.url
                ))
                .header("x-requested-with", "XMLHttpRequest")
                .bearer_auth(&idp_token.access_token),
        )
        .await?;
        v.pointer("/backstageIdentity/token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Other(format!("{what}: no backstageIdentity.token")))
    }

    /// What the user's browser does with an authorization URL: follows it to the app's
    /// consent page (`/oauth2/authorize/<session>`), where the user approves, which calls
    /// `POST /api/auth/v1/sessions/<session>/approve` with the user's Backstage token.
    /// Returns the address the browser is then sent to (the client's redirect URI with
    /// `code` and `state`).
    pub async fn approve(&self, authorize_url: &str, user_token: &str) -> Result<String> {
        let no_redirects = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| HarnessError::Http {
                what: "building the HTTP client".into(),
                source,
            })?;
        let what = "GET the authorization URL".to_string();
        let resp = no_redirects
            .get(authorize_url)
            .send()
            .await
            .map_err(|source| HarnessError::Http {
                what: what.clone(),
                source,
            })?;
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let Some(session) = location
            .as_deref()
            .and_then(|l| l.split("/oauth2/authorize/").nth(1))
            .map(str::to_string)
        else {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            return Err(HarnessError::Status { what, status, body });
        };
        let v: Value = http::send_json(
            "approving the authorization session",
            self.client
                .post(format!(
                    "{}/api/auth/v1/sessions/{session}/approve",
                    self.url
                ))
                .bearer_auth(user_token)
                .json(&json!({})),
        )
        .await?;
        v.get("redirectUrl")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Other("approve answered no redirectUrl".into()))
    }

    /// An access token of Backstage's authorization server for `user`, fetched the way
    /// stagepass does (authorization code + PKCE S256, approved as the user) with the
    /// `stagepass-tests` client, so it never ends a session of the clients agents use.
    pub async fn user_access_token(&self, idp: &crate::Idp, user: &str) -> Result<String> {
        use base64::Engine;
        use sha2::Digest;
        let client = self.oauth_client("stagepass-tests")?.clone();
        let redirect = client
            .redirect_uris
            .first()
            .cloned()
            .ok_or_else(|| HarnessError::Other("stagepass-tests has no redirect URI".into()))?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // 64 digits: a valid PKCE verifier (43-128 unreserved characters), new per call.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let verifier = format!("{:0>64}", format!("{}{nanos}", std::process::id()));
        let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let mut url = reqwest::Url::parse(&format!("{}/v1/authorize", self.auth_issuer()))
            .map_err(|e| HarnessError::Other(format!("authorize URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("state", "harness")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("scope", "openid offline_access");
        let user_token = self.sign_in(idp, user).await?;
        let back = self.approve(url.as_str(), &user_token).await?;
        let code = reqwest::Url::parse(&back)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| HarnessError::Other("the redirect carries no code".into()))?;
        let v: Value = http::send_json(
            "code exchange at Backstage",
            self.client
                .post(format!("{}/v1/token", self.auth_issuer()))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect.as_str()),
                    ("code_verifier", verifier.as_str()),
                    ("client_id", client.client_id.as_str()),
                ]),
        )
        .await?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Other("code exchange answered no access_token".into()))
    }

    /// `POST /api/auth/v1/token` with a refresh token: the HTTP status (is it still alive?).
    pub async fn refresh_status(&self, client_id: &str, refresh_token: &str) -> Result<u16> {
        Ok(self.refresh_answer(client_id, refresh_token).await?.0)
    }

    /// `POST /api/auth/v1/token` with a refresh token: the HTTP status and the JSON answer
    /// (`Null` when not JSON), so a test can tell a live token (200 with a rotated
    /// `refresh_token`) from a refused one (`{"error": "invalid_grant", ...}`).
    pub async fn refresh_answer(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<(u16, Value)> {
        let resp = self
            .client
            .post(format!("{}/v1/token", self.auth_issuer()))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ])
            .send()
            .await
            .map_err(|source| HarnessError::Http {
                what: "refreshing at Backstage".into(),
                source,
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|source| HarnessError::Http {
            what: "reading Backstage's refresh answer".into(),
            source,
        })?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The catalog API's base URL (`.../api/catalog`).
    pub fn catalog_url(&self) -> String {
        format!("{}/api/catalog", self.url)
    }

    /// A static external-access token (subject `stagepass-test-admin`) for test setup and
    /// checks that must not depend on the IdP.
    pub fn static_token(&self) -> &str {
        &self.static_token
    }

    /// The process, when this handle owns it.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Stops a private Backstage now (Backstage down); a shared one is left alone.
    pub fn stop(&mut self) {
        if let Some(p) = &mut self.peer {
            p.stop();
        }
    }

    /// Sends `req` with `token` as Bearer (none when `None`) and returns status and JSON.
    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> Result<CatalogResponse> {
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|source| HarnessError::Http {
            what: what.to_string(),
            source,
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| HarnessError::Http {
            what: what.to_string(),
            source,
        })?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(CatalogResponse { status, body })
    }

    /// `GET /api/catalog{path}` (path starts with `/`).
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<CatalogResponse> {
        let url = format!("{}{path}", self.catalog_url());
        self.send(&format!("GET {url}"), self.client.get(&url), token)
            .await
    }

    /// `POST /api/catalog{path}` with a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<CatalogResponse> {
        let url = format!("{}{path}", self.catalog_url());
        self.send(
            &format!("POST {url}"),
            self.client.post(&url).json(body),
            token,
        )
        .await
    }

    /// The entity `kind:namespace/name`, or `None` on 404.
    pub async fn entity(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        token: &str,
    ) -> Result<Option<Value>> {
        let path = format!("/entities/by-name/{kind}/{namespace}/{name}");
        let resp = self.get(&path, Some(token)).await?;
        match resp.status {
            200 => Ok(Some(resp.body)),
            404 => Ok(None),
            status => Err(HarnessError::Status {
                what: format!("GET {path}"),
                status,
                body: resp.body.to_string(),
            }),
        }
    }

    /// Registers a `url` location (without dry run); returns the API's answer as is.
    pub async fn register_location(&self, target: &str, token: &str) -> Result<CatalogResponse> {
        self.post(
            "/locations",
            &json!({"type": "url", "target": target}),
            Some(token),
        )
        .await
    }

    /// Waits until `kind:namespace/name` exists (hang guard `timeout`) and returns it.
    pub async fn wait_for_entity(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<Value> {
        poll_until(
            &format!("entity {kind}:{namespace}/{name} in Backstage"),
            timeout,
            Duration::from_millis(250),
            || self.entity(kind, namespace, name, token),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::OauthClient;

    #[test]
    fn a_claimed_redirect_port_is_not_handed_out_again() {
        let ports = [
            crate::support::free_port().unwrap(),
            crate::support::free_port().unwrap(),
        ];
        let client = OauthClient {
            client_id: "c".into(),
            redirect_uris: ports
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}/callback"))
                .collect(),
        };
        let a = client.free_redirect_port().expect("a first port");
        let b = client.free_redirect_port().expect("a second port");
        assert_ne!(a, b, "both calls got {a}");
        assert!(ports.contains(&a) && ports.contains(&b));
        assert_eq!(client.free_redirect_port(), None, "both are claimed");
    }
}
