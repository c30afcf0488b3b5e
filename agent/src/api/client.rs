//! Client of the agent's local API over its Unix socket, for the CLI commands.
//!
//! INTERFACE STUB: the API work implements it; callers rely on these signatures.

use crate::paths::Paths;

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answers on the socket (not running, or another user's).
    #[error(
        "the stagepass agent is not running ({0}); start it with `stagepass agent` or run `stagepass doctor`"
    )]
    NotRunning(String),
    /// The agent answered with an API error.
    #[error("{message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Human message.
        message: String,
    },
    /// Transport or protocol failure.
    #[error("talking to the agent failed: {0}")]
    Protocol(String),
}

/// A connection factory to the running agent.
pub struct Client {
    _paths: Paths,
}

impl Client {
    /// Prepares a client for the agent of these paths (reads the per-boot secret).
    pub fn new(paths: &Paths) -> Result<Self, ClientError> {
        Ok(Self {
            _paths: paths.clone(),
        })
    }

    /// `GET path`, returning the JSON body of a 2xx answer.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        Err(ClientError::NotRunning(format!("GET {path}: stub")))
    }

    /// `POST path` with a JSON body, returning the JSON body of a 2xx answer.
    pub async fn post_json(
        &self,
        path: &str,
        _body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        Err(ClientError::NotRunning(format!("POST {path}: stub")))
    }

    /// `DELETE path`, returning the JSON body of a 2xx answer.
    pub async fn delete_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        Err(ClientError::NotRunning(format!("DELETE {path}: stub")))
    }
}
