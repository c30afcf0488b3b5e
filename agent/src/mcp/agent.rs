//! What the MCP server asks the running agent: the ownership diff against Backstage, the
//! catalog state and the profiles' sign-in state, over the agent's Unix socket.
//!
//! Errors are reduced to fixed, secret-free sentences: the client's own errors may name the
//! per-boot secret file or the socket path, and neither may cross MCP.

use crate::client::{Client, ClientError};
use crate::paths::Paths;
use crate::protocol::{CatalogStatus, DiffReport, Status};

/// A way to reach the running agent; a fresh client per call, so an agent restarted while
/// the assistant runs is found again.
#[derive(Clone)]
pub struct AgentLink {
    paths: Paths,
}

impl AgentLink {
    /// Talks to the agent of these paths.
    pub fn new(paths: Paths) -> Self {
        Self { paths }
    }

    /// `GET /v1/status`, with an MCP-safe error.
    pub async fn status(&self) -> Result<Status, String> {
        self.client()?.status().await.map_err(safe)
    }

    /// `GET /v1/catalog`, with an MCP-safe error.
    pub async fn catalog(&self) -> Result<CatalogStatus, String> {
        self.client()?.catalog().await.map_err(safe)
    }

    /// `GET /v1/catalog/diff`, with an MCP-safe error.
    pub async fn diff(&self) -> Result<DiffReport, String> {
        self.client()?.catalog_diff().await.map_err(safe)
    }

    fn client(&self) -> Result<Client, String> {
        Client::new(&self.paths).map_err(safe)
    }
}

/// The error text an assistant may see: never a path, header or token.
fn safe(e: ClientError) -> String {
    match e {
        ClientError::NotRunning(_) => {
            "the stagepass agent is not running (start it with `stagepass agent`)".into()
        }
        ClientError::Api { code, .. } if code == "unavailable" => {
            "catalog sync is not running in the agent".into()
        }
        ClientError::Api { code, status, .. } => {
            format!("the agent refused the request ({code}, HTTP {status})")
        }
        ClientError::Protocol(_) => "talking to the stagepass agent failed".into(),
        ClientError::VersionMismatch { .. } => e.to_string(),
    }
}
