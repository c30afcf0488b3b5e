//! The local HTTP API on loopback TCP and a Unix socket, behind the request guard.
//!
//! - [`server`]: binding, the accept loops (`Listener`), per-connection work (`Handler`),
//!   limits, timeouts and shutdown.
//! - [`guard`]: the fixed-order checks every request but `/healthz` passes.
//! - [`routes`]: [`routes::handle`], the whole service as one function that tests call
//!   without a socket, and [`routes::cache_hit`], its synchronous fast path for the token
//!   cache hit.
//! - [`error`]: `{"error": CODE, "message": TEXT}` with stable codes.
//! - [`metrics`]: Prometheus text.
//! - [`token_body`]: encoded token answers kept per token version (cache-hit fast path).
//! - `signal`: a connection's stop signal (drain, timeout), cheap to poll on every wake-up.
//!
//! The routes and their answers are documented in `agent/openapi.yaml`.
//!
//! # Security model
//!
//! The API hands out tokens, so it must answer only processes of the same user on the same
//! machine, and never a web page the user happens to visit:
//!
//! - **Other hosts**: the TCP listener binds loopback only (a non-loopback `api.listen` is
//!   refused at config load and again before binding) with IP TTL 1.
//! - **Other users**: the Unix socket lives in a 0700 runtime dir, is 0600, and every peer's
//!   uid is read with SO_PEERCRED and must be ours. TCP clients must present the per-boot
//!   secret, which only our uid can read (0600 file in the same dir).
//! - **Web pages**: a browser cannot read the secret file; DNS rebinding is stopped by the
//!   Host check (only loopback literals and `localhost` with our port); requests carrying
//!   `Origin` or a cross-site `Sec-Fetch-Site` are refused outright.
//! - **Proxies and port forwarding** (VS Code, Codespaces): relayed requests carry
//!   `X-Forwarded-For`/`Forwarded` or a foreign Host and are refused.
//! - **Resource abuse**: header size and count, body size, open connections, the time to send
//!   a request head (slowloris) and idle time are all bounded.
//! - **Secrets at rest and in logs**: the secret is compared in constant time, lives in
//!   [`crate::secret::Secret`], and never reaches a log line, error or metric label.

pub mod caller;
pub mod conn_peer;
pub mod error;
mod exposition;
pub mod guard;
pub mod metrics;
pub mod routes;
pub mod server;
mod signal;
pub mod token_body;

use crate::aws::AwsService;
use crate::broker::Broker;
use crate::catalog::CatalogHandle;
use crate::config::ApiConfig;
use crate::secret::Secret;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// Everything a request handler may use; one per agent, shared by every connection.
pub struct ApiState {
    /// The token broker.
    pub broker: Broker,
    /// Catalog watcher and sync, when running.
    pub catalog: Option<CatalogHandle>,
    /// AWS container credentials, when running.
    pub aws: Option<AwsService>,
    /// The per-boot secret every guarded request must present.
    pub(crate) secret: Secret,
    /// The TCP port actually bound (for the Host check); `None` when TCP is off.
    pub tcp_port: Option<u16>,
    /// The Unix socket path; `None` when the socket is off.
    pub socket: Option<PathBuf>,
    /// Our uid; Unix peers must match it.
    pub own_uid: u32,
    /// Header, body and connection limits.
    pub limits: ApiConfig,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    /// Encoded token answers kept per profile (the cache-hit fast path).
    pub token_bodies: token_body::TokenBodies,
    /// Attest callers at all (`[attestation] enabled`); off = `ConnInfo::peer` is `None`.
    pub attestation: bool,
    /// Per-profile caller rules and audiences.
    pub policies: crate::policy::Policies,
    /// The audit log, when on.
    pub audit: Option<crate::audit::Audit>,
    started: Instant,
    started_at: SystemTime,
}

impl ApiState {
    /// The values no record may hold: the API secret, every token the broker holds and
    /// the AWS credentials handed out lately.
    pub fn known_secrets(&self) -> Vec<Secret> {
        let mut v = self.broker.known_tokens();
        v.push(self.secret.clone());
        if let Some(aws) = &self.aws {
            v.extend(aws.known_secrets());
        }
        v
    }

    /// Builds the shared state. `limits` also carries the listener settings (port, socket).
    pub fn new(
        broker: Broker,
        secret: Secret,
        limits: ApiConfig,
        tcp_port: Option<u16>,
        socket: Option<PathBuf>,
    ) -> Self {
        Self {
            broker,
            catalog: None,
            aws: None,
            secret,
            tcp_port,
            socket,
            own_uid: crate::paths::current_uid(),
            limits,
            metrics: metrics::Metrics::default(),
            token_bodies: token_body::TokenBodies::default(),
            attestation: false,
            policies: crate::policy::Policies::default(),
            audit: None,
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    /// Adds the catalog service.
    pub fn with_catalog(mut self, catalog: CatalogHandle) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Adds caller attestation, per-profile policies and the audit log (issue 11).
    pub fn with_guard_rails(
        mut self,
        attestation: bool,
        policies: crate::policy::Policies,
        audit: Option<crate::audit::Audit>,
    ) -> Self {
        self.attestation = attestation;
        self.policies = policies;
        self.audit = audit;
        self
    }

    /// Adds the AWS credentials service.
    pub fn with_aws(mut self, aws: AwsService) -> Self {
        self.aws = Some(aws);
        self
    }
}

/// How a request reached us; the guard treats TCP and socket peers differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Loopback TCP.
    Tcp,
    /// The Unix socket, with the peer's uid from SO_PEERCRED (`None` if unreadable).
    Unix {
        /// The connecting process's uid.
        peer_uid: Option<u32>,
    },
}

/// Per-connection facts the guard and the caller gate need.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// TCP or Unix socket.
    pub transport: Transport,
    /// The peer, attested on the first credential request (`None` with attestation off).
    pub peer: Option<std::sync::Arc<conn_peer::ConnPeer>>,
}

#[cfg(test)]
mod tests;
