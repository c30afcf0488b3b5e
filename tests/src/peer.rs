//! One Node peer process: spawn, wait for its READY line, stop it (and everything it
//! started) by process group, and show its log when a test fails.
//!
//! The peer writes stdout and stderr into one log file in a private temp dir; the READY
//! line (`STAGEPASS_PEER_READY {json}`) is found by reading that file, so no reader thread
//! is needed and the log stays complete for post-mortems. Each peer leads its own process
//! group, so a `git http-backend` child or any other grandchild dies with it. Peers also
//! exit by themselves when their parent (the test process) disappears, which covers a test
//! killed with SIGKILL, where no destructor runs.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use serde::Deserialize;

use crate::error::{HarnessError, Result};
use crate::support::{peers_dir, private_tempdir};

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
    /// Everything the line carried (issuer, static tokens, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A running peer; stopped (with its whole process group) on drop.
pub struct Peer {
    name: String,
    child: Option<Child>,
    ready: Ready,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
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
        let dir = private_tempdir()?;
        let log_path = dir.path().join(format!("{}.log", spec.name));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| HarnessError::io(format!("creating {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;
        let mut cmd = Command::new(node());
        cmd.arg(peers.join(&spec.script))
            .args(&spec.args)
            .current_dir(&peers)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("STAGEPASS_PEER_STATE_DIR", dir.path())
            .env("STAGEPASS_PEER_REMOVE_STATE_ON_ORPHAN", "1")
            .process_group(0);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning node for peer {}", spec.name), e))?;
        let mut peer = Peer {
            name: spec.name.clone(),
            child: Some(child),
            ready: Ready {
                name: spec.name.clone(),
                url: String::new(),
                pid: 0,
                extra: serde_json::Map::new(),
            },
            log_path,
            _dir: dir,
        };
        peer.ready = peer.wait_ready(spec.ready_timeout).await?;
        Ok(peer)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<Ready> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.starts_with(READY_PREFIX)) {
                let json = &line[READY_PREFIX.len()..];
                return serde_json::from_str(json).map_err(|e| HarnessError::BadReadyLine {
                    name: self.name.clone(),
                    line: line.to_string(),
                    reason: e.to_string(),
                });
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(HarnessError::PeerExited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: crate::support::strip_ansi(&self.log()),
                });
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(HarnessError::PeerTimeout {
                    name: self.name.clone(),
                    secs: timeout.as_secs(),
                    log: crate::support::strip_ansi(&self.log()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        self.child.as_ref().map(Child::id)
    }

    /// Path of the peer's log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The peer's log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path.display()))
    }

    /// Stops the peer: SIGTERM to its process group, SIGKILL after a grace period, then
    /// SIGKILL to the group again for any grandchild that ignored SIGTERM. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Some(pgid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        let _ = kill_process_group(pgid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = kill_process_group(pgid, Signal::KILL);
                    let _ = child.wait();
                    break;
                }
            }
        }
        // Any member of the group still alive (the leader is reaped) gets SIGKILL; ESRCH
        // (no such group) is the normal case.
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- log of peer {} ({}) -----\n{}\n----- end of log of peer {} -----",
                self.name,
                self.log_path.display(),
                crate::support::strip_ansi(&self.log()),
                self.name
            );
        }
        self.stop();
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("url", &self.ready.url)
            .field("pid", &self.pid())
            .field("log", &self.log_path)
            .finish()
    }
}
