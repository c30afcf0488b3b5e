//! `[api]`: where the local API listens.

use super::ConfigError;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// The documented default TCP port of the local API.
pub const DEFAULT_PORT: u16 = 7391;

/// Local API listeners.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve on loopback TCP.
    pub tcp: bool,
    /// Loopback address to bind; anything else is refused.
    pub listen: IpAddr,
    /// TCP port (0 picks a free one; the bound port is written to the runtime dir).
    pub port: u16,
    /// Serve on the Unix socket in the runtime dir.
    pub unix_socket: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            tcp: true,
            listen: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            unix_socket: true,
        }
    }
}

impl ApiConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_loopback() {
            return Err(ConfigError::Invalid {
                path: PathBuf::from("(config)"),
                line: 0,
                key: "api.listen".into(),
                message: format!(
                    "{} is not a loopback address; stagepass only listens on 127.0.0.1 or ::1",
                    self.listen
                ),
            });
        }
        Ok(())
    }
}
