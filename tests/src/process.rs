//! A child process owned by a test: its own process group, its stdout and stderr in one log
//! file, stopped with its whole group on drop, its log printed when the test is failing.
//!
//! Used for the Node peers ([`crate::peer`]) and for the `stagepass` agent
//! ([`crate::home`]). Each process leads its own process group, so a grandchild
//! (e.g. `git http-backend` under the git host) dies with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use rustix::process::{Pid, Signal, kill_process_group};

use crate::error::{HarnessError, Result};
use crate::support::{private_tempdir, strip_ansi};

/// Grace period between SIGTERM and SIGKILL when stopping.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running child process, stopped (with its process group) on drop.
pub struct ManagedProcess {
    name: String,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl ManagedProcess {
    /// Spawns `cmd` as the leader of a new process group, stdin from /dev/null, stdout and
    /// stderr into `<private dir>/<name>.log`. `cmd` may set its own environment; the
    /// private dir is passed as `STAGEPASS_PEER_STATE_DIR` for peers that want one.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<ManagedProcess> {
        let dir = private_tempdir()?;
        let log_path = dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| HarnessError::io(format!("creating {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("STAGEPASS_PEER_STATE_DIR", dir.path())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning {name} ({cmd:?})"), e))?;
        Ok(ManagedProcess {
            name: name.to_string(),
            child: Some(child),
            exit: None,
            log_path,
            dir,
        })
    }

    /// Name used in logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PID (also the process group id) while the process runs or is not yet reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The private directory holding the log (also the peer's state dir).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far, colour codes removed.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| strip_ansi(&String::from_utf8_lossy(&b)))
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path.display()))
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            self.exit = Some(status);
        }
        self.exit
    }

    /// Waits until a log line satisfies `pred` and returns it; fails if the process exits
    /// first or after `timeout` (a hang guard). Uses the real clock for the deadline.
    pub async fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| pred(l)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.try_exit_status() {
                return Err(HarnessError::PeerExited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(HarnessError::PeerTimeout {
                    name: format!("{} ({what})", self.name),
                    secs: timeout.as_secs(),
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` to the whole process group (e.g. SIGHUP to test a reload).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pgid = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| HarnessError::Other(format!("{} is not running", self.name)))?;
        kill_process_group(pgid, signal)
            .map_err(|e| HarnessError::io(format!("signalling {}", self.name), e.into()))
    }

    /// The blocking twin of [`ManagedProcess::wait_for_line`] for tests without a runtime:
    /// waits until `ready()` holds, failing with the log if the process exits first or
    /// after `timeout` (a hang guard).
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.try_exit_status() {
                return Err(HarnessError::PeerExited {
                    name: format!("{} (before {what})", self.name),
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::PeerTimeout {
                    name: format!("{} ({what})", self.name),
                    secs: timeout.as_secs(),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process like [`ManagedProcess::stop`], but says whether SIGTERM alone
    /// did it: the exit status if the process left within the grace period, `None` if it
    /// had to be killed (a test of graceful shutdown asserts on this).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let (status, graceful) = self.stop_with_grace();
        status.filter(|_| graceful)
    }

    /// Stops the process: SIGTERM to its group, SIGKILL after a grace period, then SIGKILL
    /// to the group again for any member that ignored SIGTERM. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_with_grace().0
    }

    /// [`ManagedProcess::stop`], and whether the process exited within the grace period.
    fn stop_with_grace(&mut self) -> (Option<ExitStatus>, bool) {
        let Some(mut child) = self.child.take() else {
            return (self.exit, true);
        };
        let Some(pgid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
            let _ = child.kill();
            self.exit = child.wait().ok();
            return (self.exit, false);
        };
        let _ = kill_process_group(pgid, Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        let graceful = loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    break true;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = kill_process_group(pgid, Signal::KILL);
                    self.exit = child.wait().ok();
                    break false;
                }
            }
        };
        // Members of the group still alive get SIGKILL; ESRCH (no such group) is normal.
        let _ = kill_process_group(pgid, Signal::KILL);
        (self.exit, graceful)
    }
}

/// Sends `signal` to one process by PID, for a child the test holds itself (a CLI run under
/// a hang guard, a process started by a script); errors (it already left) are ignored.
pub fn signal_pid(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}\n----- end of log of {} -----",
                self.name,
                self.log_path.display(),
                self.log(),
                self.name
            );
        }
        self.stop();
    }
}

impl std::fmt::Debug for ManagedProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedProcess")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("log", &self.log_path)
            .finish()
    }
}
