//! `endpoint.json`: written by the agent at start, read by every client to find it.

use crate::paths::Paths;
use std::path::PathBuf;

/// `endpoint.json` in the runtime dir: how clients find the running agent's TCP port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointFile {
    /// Bound TCP port, `null` when TCP is off.
    pub port: Option<u16>,
    /// The agent's pid.
    pub pid: u32,
    /// The Unix socket, `null` when it is off.
    pub socket: Option<PathBuf>,
}

impl EndpointFile {
    /// Reads the endpoint file of these paths.
    pub fn read(paths: &Paths) -> Option<Self> {
        let text = std::fs::read(paths.endpoint()).ok()?;
        serde_json::from_slice(&text).ok()
    }
}
