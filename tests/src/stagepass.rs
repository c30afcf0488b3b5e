//! Running the real `stagepass` binary in a sandbox: a private home whose XDG config,
//! state and runtime directories are fresh temp dirs, and an environment cleared of
//! everything but PATH, so a test never reads or writes the developer's real setup.
//!
//! The layout mirrors `stagepass::paths` (config `$XDG_CONFIG_HOME/stagepass/config.toml`,
//! state `$XDG_STATE_HOME/stagepass`, runtime `$XDG_RUNTIME_DIR/stagepass`). The system
//! file `/etc/stagepass/config.toml` is still read by the binary if it exists.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{HarnessError, Result};
use crate::process::ManagedProcess;
use crate::support::{private_tempdir, stagepass_bin};

/// A private home for one `stagepass` instance.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Sandbox {
    /// Creates the sandbox (all directories 0700) and locates the binary
    /// ([`stagepass_bin`]: built by `cargo build -p stagepass`, or `STAGEPASS_BIN`).
    pub fn new() -> Result<Sandbox> {
        let bin = stagepass_bin()?;
        let dir = private_tempdir()?;
        let sandbox = Sandbox { dir, bin };
        for d in [
            sandbox.home(),
            sandbox.xdg_config_home(),
            sandbox.xdg_state_home(),
            sandbox.xdg_runtime_dir(),
        ] {
            crate::support::create_private_dir(&d)?;
        }
        Ok(sandbox)
    }

    /// `HOME` of the sandbox.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `XDG_CONFIG_HOME`.
    pub fn xdg_config_home(&self) -> PathBuf {
        self.home().join(".config")
    }

    /// `XDG_STATE_HOME`.
    pub fn xdg_state_home(&self) -> PathBuf {
        self.home().join(".local").join("state")
    }

    /// `XDG_RUNTIME_DIR`.
    pub fn xdg_runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The user config file stagepass reads (`$XDG_CONFIG_HOME/stagepass/config.toml`).
    pub fn config_path(&self) -> PathBuf {
        self.xdg_config_home().join("stagepass").join("config.toml")
    }

    /// stagepass's state directory (`$XDG_STATE_HOME/stagepass`).
    pub fn state_dir(&self) -> PathBuf {
        self.xdg_state_home().join("stagepass")
    }

    /// stagepass's runtime directory (`$XDG_RUNTIME_DIR/stagepass`).
    pub fn runtime_dir(&self) -> PathBuf {
        self.xdg_runtime_dir().join("stagepass")
    }

    /// Writes the user config file (creating its directory 0700).
    pub fn write_config(&self, toml: &str) -> Result<PathBuf> {
        let path = self.config_path();
        if let Some(parent) = path.parent() {
            crate::support::create_private_dir(parent)?;
        }
        std::fs::write(&path, toml)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// A `stagepass ARGS` command with the sandbox environment: only PATH is inherited;
    /// HOME and the XDG directories point into the sandbox. Add env or args as needed.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.xdg_config_home())
            .env("XDG_STATE_HOME", self.xdg_state_home())
            .env("XDG_RUNTIME_DIR", self.xdg_runtime_dir())
            .env("NO_COLOR", "1")
            .current_dir(self.home());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd
    }

    /// Starts `stagepass agent` in the background (stopped on drop, log printed if the
    /// test fails). Readiness is the caller's to wait for, e.g.
    /// [`ManagedProcess::wait_for_line`] or [`Sandbox::wait_for_path`] on the socket.
    pub fn spawn_agent<I, S>(&self, extra_args: I) -> Result<ManagedProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(["agent"]);
        cmd.args(extra_args);
        ManagedProcess::spawn("stagepass-agent", cmd)
    }

    /// Waits until `path` exists (hang guard `timeout`), e.g. the agent's socket.
    pub async fn wait_for_path(&self, path: &Path, timeout: std::time::Duration) -> Result<()> {
        crate::support::poll_until(
            &format!("{} to exist", path.display()),
            timeout,
            std::time::Duration::from_millis(20),
            || async { Ok(path.exists().then_some(())) },
        )
        .await
    }
}
