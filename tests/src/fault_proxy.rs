//! A fault-injecting proxy (`tests/peers/faultproxy.mjs`) in front of a real peer, in
//! practice the shared Backstage: the agent talks to the proxy, the test makes Backstage look
//! down, slow or failing without stopping it, and counts what reached it (catalog refreshes
//! per entity, to find duplicate pushes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::error::Result;
use crate::http;
use crate::peer::{Peer, PeerSpec};

/// What the proxy does with the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFault {
    /// Forward normally.
    None,
    /// Accept the connection and drop it without an answer.
    Down,
    /// Wait this long, then forward (not forwarded when the client gave up meanwhile).
    Slow(Duration),
    /// Answer this 5xx status with an HTML body.
    ServerError(u16),
}

/// The proxy's counters since start or the last [`FaultProxy::reset_stats`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxyStats {
    /// Requests that arrived.
    pub requests: u64,
    /// Requests forwarded upstream.
    pub forwarded: u64,
    /// Requests a fault touched (`slow` included).
    pub faulted: u64,
    /// Slow requests whose client gave up before they were forwarded.
    pub abandoned: u64,
    /// Requests being handled now.
    pub in_flight: u64,
    /// Requests per `METHOD /path`.
    pub by_route: BTreeMap<String, u64>,
    /// `POST /api/catalog/refresh` answered 2xx, per entity ref (lower case).
    pub refreshes: BTreeMap<String, u64>,
}

/// A running fault proxy; stopped (by PID) on drop.
#[derive(Debug)]
pub struct FaultProxy {
    peer: Peer,
    control_url: String,
    client: reqwest::Client,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://127.0.0.1:PORT`), fault `none`.
    pub async fn start(upstream: &str) -> Result<FaultProxy> {
        let peer = Peer::spawn(
            PeerSpec::new("faultproxy", "faultproxy.mjs").arg_pair("--upstream", upstream),
        )
        .await?;
        let control_url = peer
            .ready()
            .extra
            .get("control_url")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| peer.url())
            .to_string();
        Ok(FaultProxy {
            peer,
            control_url,
            client: http::client()?,
        })
    }

    /// The proxied base URL (what the agent is configured with).
    pub fn url(&self) -> &str {
        self.peer.url()
    }

    /// The proxy process (log, PID).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Sets the fault for every following request (`times`: only the next N).
    pub async fn set_fault(&self, fault: ProxyFault, times: Option<u32>) -> Result<()> {
        let mut body = match fault {
            ProxyFault::None => json!({"mode": "none"}),
            ProxyFault::Down => json!({"mode": "down"}),
            ProxyFault::Slow(d) => {
                json!({"mode": "slow", "ms": u64::try_from(d.as_millis()).unwrap_or(u64::MAX)})
            }
            ProxyFault::ServerError(status) => json!({"mode": "5xx", "status": status}),
        };
        if let Some(n) = times {
            body["times"] = json!(n);
        }
        let _: serde_json::Value = http::post_json(
            &self.client,
            &format!("{}/__test/fault", self.control_url),
            &body,
        )
        .await?;
        Ok(())
    }

    /// The counters.
    pub async fn stats(&self) -> Result<ProxyStats> {
        http::get_json(&self.client, &format!("{}/__test/stats", self.control_url)).await
    }

    /// Zeroes the counters.
    pub async fn reset_stats(&self) -> Result<()> {
        let _: serde_json::Value = http::post_json(
            &self.client,
            &format!("{}/__test/stats/reset", self.control_url),
            &json!({}),
        )
        .await?;
        Ok(())
    }
}
