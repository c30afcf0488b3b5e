//! The local HTTP API on loopback TCP and a Unix socket, behind the request guard.
//!
//! - [`server`]: binding, the accept loops (`Listener`), per-connection work (`Handler`),
//!   limits, timeouts and shutdown.
//! - [`guard`]: the fixed-order checks every request but `/healthz` passes.
//! - [`routes`]: [`routes::handle`], the whole service as one function that tests call
//!   without a socket.
//! - [`error`]: `{"error": CODE, "message": TEXT}` with stable codes.
//! - [`metrics`]: Prometheus text.
//! - [`secret_file`]: the per-boot secret on disk.
//! - [`client`]: what the CLI uses to talk to a running agent.
//!
//! The routes and their answers are documented in `agent/openapi.yaml`.

pub mod client;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod routes;
pub mod secret_file;
pub mod server;

use crate::adapters::aws::AwsService;
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
    started: Instant,
    started_at: SystemTime,
}

impl ApiState {
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
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    /// Adds the catalog service.
    pub fn with_catalog(mut self, catalog: CatalogHandle) -> Self {
        self.catalog = Some(catalog);
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

/// Per-connection facts the guard needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// TCP or Unix socket.
    pub transport: Transport,
}

#[cfg(test)]
mod tests;
