//! A local OCI registry for the release tests: Debian's `docker-registry` (the CNCF
//! distribution registry, installed by `tests/install/registry.sh`) on a free loopback port,
//! with its own storage under a temp dir; stopped by PID on drop.
//!
//! Its address is `localhost:PORT`: the devcontainer CLI talks plain http to a registry whose
//! host is `localhost` (https to any other), so no TLS and no test CA are needed. The registry
//! runs as a [`ManagedProcess`]: its log is printed when a test fails, and
//! [`Registry::log`] returns it for failure messages.

use crate::error::{HarnessError, Result};
use crate::process::ManagedProcess;
use crate::support::{free_port, private_tempdir};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where `tests/install/registry.sh` puts the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; stopped and its storage removed on drop.
pub struct Registry {
    process: ManagedProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free 127.0.0.1 port and waits until `GET /v2/` answers 200.
    pub fn start() -> Result<Registry> {
        if !std::path::Path::new(REGISTRY_BIN).exists() {
            return Err(HarnessError::Other(format!(
                "{REGISTRY_BIN} is missing: run `sh tests/install/registry.sh` as root \
                 (./tests/run does)"
            )));
        }
        let dir = private_tempdir()?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .map_err(|e| HarnessError::io("writing the registry config", e))?;
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(&config);
        let mut process = ManagedProcess::spawn("docker-registry", cmd)?;
        // A hang guard, not a performance threshold.
        process.wait_until("GET /v2/ answering 200", Duration::from_secs(30), || {
            v2_status(port) == Some(200)
        })?;
        Ok(Registry { process, port, dir })
    }

    /// `localhost:PORT`, the registry as the devcontainer CLI and the release command name it.
    pub fn address(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Where the registry keeps its blobs and manifests.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// The status of `GET /v2/` on 127.0.0.1:`port`, or `None` when nothing answers.
fn v2_status(port: u16) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}
