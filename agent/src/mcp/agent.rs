//! What the MCP server asks the running agent: the ownership diff against Backstage, the
//! catalog state and the profiles' sign-in state, over the agent's Unix socket.
//!
//! Errors are reduced to fixed, secret-free sentences: the client's own errors may name the
//! per-boot secret file or the socket path, and neither may cross MCP.

use crate::client::{Client, ClientError};
use crate::paths::Paths;

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

    /// `GET path` on the agent, as JSON, with an MCP-safe error.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let client = Client::new(&self.paths).map_err(safe)?;
        client.get_json(path).await.map_err(safe)
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
