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

/// A running Backstage: private (owned, stopped on drop) or shared (from the bed file).
#[derive(Debug)]
pub struct Backstage {
    peer: Option<Peer>,
    url: String,
    static_token: String,
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
                    return Ok(Backstage {
                        peer: Some(peer),
                        url,
                        static_token,
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
            client: http::client()?,
        })
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
