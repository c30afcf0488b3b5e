//! The HTTP client the harness uses to talk to the peers' APIs and control routes.
//!
//! Proxies are disabled: a developer's `HTTP_PROXY` must not route loopback test traffic.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

use crate::error::{HarnessError, Result};

/// A client for loopback peers: no proxy, a generous per-request hang guard.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| HarnessError::Http {
            what: "building the HTTP client".into(),
            source,
        })
}

/// Sends a request and decodes a JSON answer; any status but 2xx is an error with the body.
pub async fn send_json<T: DeserializeOwned>(what: &str, req: reqwest::RequestBuilder) -> Result<T> {
    let resp = req.send().await.map_err(|source| HarnessError::Http {
        what: what.to_string(),
        source,
    })?;
    let status = resp.status();
    let text = resp.text().await.map_err(|source| HarnessError::Http {
        what: what.to_string(),
        source,
    })?;
    if !status.is_success() {
        return Err(HarnessError::Status {
            what: what.to_string(),
            status: status.as_u16(),
            body: text,
        });
    }
    // The body is left out of the error: it may hold tokens.
    serde_json::from_str(&text).map_err(|source| HarnessError::Json {
        what: what.to_string(),
        source,
    })
}

/// POSTs `body` as JSON to a control route and decodes the JSON answer.
pub async fn post_json<B: Serialize, T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    body: &B,
) -> Result<T> {
    send_json(&format!("POST {url}"), client.post(url).json(body)).await
}

/// GETs a control route and decodes the JSON answer.
pub async fn get_json<T: DeserializeOwned>(client: &reqwest::Client, url: &str) -> Result<T> {
    send_json(&format!("GET {url}"), client.get(url)).await
}
