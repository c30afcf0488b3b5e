//! `[api]`: where the local API listens and the limits that keep it hard to abuse.

use super::ConfigError;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The documented default TCP port of the local API.
pub const DEFAULT_PORT: u16 = 7391;

/// Local API listeners and limits.
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
    /// Time a client has to send a whole request head (slowloris guard);
    /// `header_read_timeout_secs`, at least 1.
    #[serde(
        rename = "header_read_timeout_secs",
        deserialize_with = "super::duration::positive_secs"
    )]
    pub header_read_timeout: Duration,
    /// Time an open connection may sit without traffic or a request in flight;
    /// `idle_timeout_secs`, at least 1.
    #[serde(
        rename = "idle_timeout_secs",
        deserialize_with = "super::duration::positive_secs"
    )]
    pub idle_timeout: Duration,
    /// Open connections at once per listener (TCP and the socket each); more wait in the
    /// accept queue.
    pub max_connections: usize,
    /// Bytes of request headers (names + values) the guard accepts.
    pub max_header_bytes: usize,
    /// Number of request headers the guard accepts.
    pub max_headers: usize,
    /// Bytes of request body accepted (our routes need none or a tiny JSON).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            tcp: true,
            listen: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            unix_socket: true,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 128,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl ApiConfig {
    /// The header-read timeout (the field, for the server's callers).
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// The idle timeout (the field, for the server's callers).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Refuses a non-loopback `listen` with the message shown to the user; the server
    /// calls it again right before binding, so no code path can skip it.
    pub fn check_listen(&self) -> Result<(), String> {
        check_loopback(self.listen)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: PathBuf::from("(config)"),
            line: 0,
            column: 0,
            key: format!("api.{key}"),
            message,
        };
        if let Err(message) = check_loopback(self.listen) {
            return Err(invalid("listen", message));
        }
        if !self.tcp && !self.unix_socket {
            return Err(invalid(
                "tcp",
                "both listeners are off (tcp = false, unix_socket = false); nothing could reach the agent".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if self.max_headers == 0 {
            return Err(invalid("max_headers", "must be at least 1".into()));
        }
        if self.max_header_bytes < 1024 {
            return Err(invalid("max_header_bytes", "must be at least 1024".into()));
        }
        Ok(())
    }
}

/// Refuses any address that is not loopback: the API hands out tokens, and reachable from
/// another host anyone on the network could take them.
fn check_loopback(addr: IpAddr) -> Result<(), String> {
    if addr.is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; stagepass only listens on 127.0.0.1 or ::1 \
             (the API hands out tokens and must not be reachable from other hosts)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = ApiConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.port, DEFAULT_PORT);
    }

    #[test]
    fn any_address_is_refused() {
        let c = ApiConfig {
            listen: IpAddr::from([0, 0, 0, 0]),
            ..ApiConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("0.0.0.0 is not a loopback address"), "{err}");
        assert!(check_loopback("::".parse().unwrap()).is_err());
        assert!(check_loopback("::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn both_listeners_off_is_refused() {
        let c = ApiConfig {
            tcp: false,
            unix_socket: false,
            ..ApiConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
