//! One Node peer from `tests/peers/`: spawn it as a [`ManagedProcess`] and wait for its
//! READY line (`STAGEPASS_PEER_READY {json}`, see `tests/peers/README.md`).
//!
//! Peers also exit by themselves when their parent (the test process) disappears, which
//! covers a test killed with SIGKILL, where no destructor runs.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{HarnessError, Result};
use crate::process::ManagedProcess;
use crate::support::peers_dir;

/// Prefix of the one line a peer prints when it serves requests.
pub const READY_PREFIX: &str = "STAGEPASS_PEER_READY ";

/// How a peer is started: which script, with which arguments and environment.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Name for logs and errors (`idp`, `git`, `backstage`).
    pub name: String,
    /// Script inside `tests/peers`, e.g. `idp.mjs`.
    pub script: String,
    /// Command-line arguments after the script.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// Hang guard for the READY line.
    pub ready_timeout: Duration,
}

impl PeerSpec {
    /// A spec with no arguments and a 30 s hang guard.
    pub fn new(name: &str, script: &str) -> Self {
        Self {
            name: name.to_string(),
            script: script.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    /// Adds `--flag value`.
    pub fn arg_pair(mut self, flag: &str, value: impl Into<OsString>) -> Self {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    /// Runs the peer on a clock `offset_secs` seconds off the real one (negative: behind),
    /// through the `lib/clock.cjs` preload: the only way to skew one process here (no
    /// libfaketime). The peer may change the offset later (the IdP's `/__test/clock`).
    pub fn clock_offset(mut self, offset_secs: i64) -> Self {
        let mut require = OsString::from("--require=");
        require.push(peers_dir().join("lib").join("clock.cjs"));
        self.env.push(("NODE_OPTIONS".into(), require));
        self.env.push((
            "STAGEPASS_PEER_CLOCK_OFFSET_S".into(),
            offset_secs.to_string().into(),
        ));
        self
    }
}

/// The JSON of a READY line: the peer's base URL plus peer-specific fields.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    /// Peer name as the peer reports it.
    pub name: String,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// PID of the peer process.
    pub pid: u32,
    /// Everything else the line carried (issuer, static token, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A running peer; stopped (with its whole process group) on drop, its log printed then
/// if the test is failing.
#[derive(Debug)]
pub struct Peer {
    process: ManagedProcess,
    ready: Ready,
}

/// The Node executable: `STAGEPASS_NODE` or `node` from PATH.
fn node() -> OsString {
    std::env::var_os("STAGEPASS_NODE").unwrap_or_else(|| "node".into())
}

impl Peer {
    /// Spawns the peer and waits (asynchronously) for its READY line.
    pub async fn spawn(spec: PeerSpec) -> Result<Peer> {
        let peers = peers_dir();
        let modules = peers.join("node_modules");
        if !modules.join("oidc-provider").exists() {
            return Err(HarnessError::NodeModulesMissing(modules));
        }
        let mut cmd = Command::new(node());
        cmd.arg(peers.join(&spec.script))
            .args(&spec.args)
            .current_dir(&peers)
            .env("STAGEPASS_PEER_REMOVE_STATE_ON_ORPHAN", "1");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut process = ManagedProcess::spawn(&spec.name, cmd)?;
        let line = process
            .wait_for_line("READY line", spec.ready_timeout, |l| {
                l.starts_with(READY_PREFIX)
            })
            .await?;
        let ready = serde_json::from_str(&line[READY_PREFIX.len()..]).map_err(|e| {
            HarnessError::BadReadyLine {
                name: spec.name.clone(),
                line: line.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Peer { process, ready })
    }

    /// The READY line's content.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// Base URL of the peer.
    pub fn url(&self) -> &str {
        &self.ready.url
    }

    /// PID of the peer process (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Path of the peer's log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The peer's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The underlying process (signals, exit status).
    pub fn process(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }

    /// Stops the peer and its process group now (also done on drop).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
