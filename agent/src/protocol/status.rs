//! `GET /v1/status` and `GET /healthz`: what the agent says about itself, its profiles,
//! its store and its catalog sync.
//!
//! The profile and catalog parts are the broker's and the catalog's own status types,
//! re-exported so there is one definition for the agent that writes them and the clients
//! (`stagepass status`, `doctor`, MCP) that read them.

pub use crate::broker::idp::Identity;
pub use crate::broker::{ProfileState, ProfileStatus};
pub use crate::catalog::{CatalogStatus, EngineState};
use serde::{Deserialize, Serialize};

/// The `/v1/status` document (schema `StatusResponse` in `agent/openapi.yaml`).
///
/// Fields are in the order the agent wrote them before they were typed (alphabetical), so
/// the document reads the same. No `deny_unknown_fields`: a newer agent may add fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The running agent.
    pub agent: AgentInfo,
    /// Where the API listens.
    pub api: ApiInfo,
    /// The catalog sync, or why it is not running.
    pub catalog: CatalogSection,
    /// Every configured profile.
    pub profiles: Vec<ProfileStatus>,
    /// The grant store in use.
    pub store: StoreInfo,
}

/// The `agent` part of [`Status`]: which agent answers, for `doctor` and bug reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's pid.
    pub pid: u32,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Whole seconds since it started.
    pub uptime_seconds: u64,
    /// Its version (the CLI refuses another one, see [`super::version`]).
    pub version: String,
}

/// The `api` part of [`Status`]: how a client that cannot use the socket reaches the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiInfo {
    /// The bound TCP port, `null` when TCP is off.
    pub tcp_port: Option<u16>,
    /// The Unix socket, `null` when it is off.
    pub unix_socket: Option<String>,
}

/// The `store` part of [`Status`]: where logins are kept and why that backend was chosen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreInfo {
    /// `keyring` or `file`.
    pub backend: String,
    /// Why this backend (e.g. no keyring reachable).
    pub detail: String,
}

/// The `catalog` part of [`Status`]: the catalog's whole status while its sync runs, else
/// only its state (`{"state": "disabled"}`), as the agent always sent it.
///
/// Read by hand, not `#[serde(untagged)]`: untagged tries each variant and keeps the first
/// that reads, so a status that failed to read (serde's untagged buffer cannot hold the
/// scan's `u128` milliseconds) silently became `Off` and `stagepass status` lost the catalog.
/// The whole status always has `files`; only then is it read as one, and its errors show.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum CatalogSection {
    /// The sync runs (in any [`EngineState`]).
    Running(Box<CatalogStatus>),
    /// No sync in this agent, or its status could not be encoded.
    Off(CatalogOff),
}

/// A catalog sync that does not run, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogOff {
    /// `disabled`, or `error` when the status could not be encoded.
    pub state: EngineState,
    /// What went wrong, for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl<'de> Deserialize<'de> for CatalogSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        if v.get("files").is_some() {
            CatalogStatus::deserialize(v)
                .map(|c| Self::Running(Box::new(c)))
                .map_err(D::Error::custom)
        } else {
            CatalogOff::deserialize(v)
                .map(Self::Off)
                .map_err(D::Error::custom)
        }
    }
}

impl CatalogSection {
    /// The section of an agent without catalog sync.
    pub fn disabled() -> Self {
        Self::Off(CatalogOff {
            state: EngineState::Disabled,
            message: None,
        })
    }
}

/// The `GET /healthz` answer: the agent is up (no secret needed to ask).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

impl Health {
    /// The only answer there is.
    pub fn ok() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}
