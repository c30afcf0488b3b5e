//! The one private home every test runs the real `stagepass` binary in: HOME and the XDG
//! config, state and runtime directories are fresh 0700 temp dirs, and the environment is
//! cleared of everything but PATH, so a test never reads or writes the developer's real
//! setup, and two agents of one test never share a socket or a store.
//!
//! The layout mirrors `stagepass::paths` (config `$XDG_CONFIG_HOME/stagepass/config.toml`,
//! state `$XDG_STATE_HOME/stagepass`, runtime `$XDG_RUNTIME_DIR/stagepass`). The system
//! file `/etc/stagepass/config.toml` is still read by the binary if it exists.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use crate::config::Config;
use crate::error::{HarnessError, Result};
use crate::process::{ManagedProcess, signal_pid};
use crate::support::{private_tempdir, stagepass_bin};

/// Hang guard for one CLI run and for an agent to come up (never a pass/fail threshold).
pub const RUN_GUARD: Duration = Duration::from_secs(60);

/// A private home for one `stagepass` instance.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Home {
    /// Creates the sandbox (all directories 0700) and locates the binary
    /// ([`stagepass_bin`]: built by `cargo build -p stagepass`, or `STAGEPASS_BIN`).
    pub fn new() -> Result<Home> {
        let bin = stagepass_bin()?;
        let dir = private_tempdir()?;
        let home = Home { dir, bin };
        for d in [
            home.path(),
            home.xdg_config_home(),
            home.xdg_state_home(),
            home.xdg_runtime_dir(),
        ] {
            crate::support::create_private_dir(&d)?;
        }
        Ok(home)
    }

    /// [`Home::new`] with `config` written as the user config file.
    pub fn with_config(config: &Config) -> Result<Home> {
        let home = Home::new()?;
        home.write_config(config)?;
        Ok(home)
    }

    /// `HOME` of the sandbox (also the working directory of its commands).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The sandbox's own temp dir, holding [`Home::path`] and the runtime dir: room for a
    /// test's files (secrets, scripts) that the agent must not find under HOME.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `XDG_CONFIG_HOME`.
    pub fn xdg_config_home(&self) -> PathBuf {
        self.path().join(".config")
    }

    /// `XDG_STATE_HOME`.
    pub fn xdg_state_home(&self) -> PathBuf {
        self.path().join(".local").join("state")
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

    /// The file store's grant file of `profile` (`grants/PROFILE.json` in the state dir).
    pub fn grant_file(&self, profile: &str) -> PathBuf {
        grant_file_in(&self.state_dir(), profile)
    }

    /// stagepass's runtime directory (`$XDG_RUNTIME_DIR/stagepass`).
    pub fn runtime_dir(&self) -> PathBuf {
        self.xdg_runtime_dir().join("stagepass")
    }

    /// The per-boot API secret file the agent writes in its runtime dir.
    pub fn api_secret(&self) -> PathBuf {
        self.runtime_dir().join("api-secret")
    }

    /// Writes `config` as the user config file (creating its directory 0700).
    pub fn write_config(&self, config: &Config) -> Result<PathBuf> {
        self.write_config_text(&config.to_toml()?)
    }

    /// Writes `toml` as is as the user config file: for a test that hands the agent a
    /// config [`Config`] cannot express on purpose (broken or hostile TOML).
    pub fn write_config_text(&self, toml: &str) -> Result<PathBuf> {
        let path = self.config_path();
        if let Some(parent) = path.parent() {
            crate::support::create_private_dir(parent)?;
        }
        std::fs::write(&path, toml)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// A `stagepass ARGS` command with the sandbox environment: only PATH is inherited;
    /// HOME and the XDG directories point into the sandbox, logs are at debug level for
    /// failure messages. Add env or args as needed.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command_of(&self.bin);
        cmd.args(args);
        cmd
    }

    /// [`Home::command`] running `program` (a copy of or a link to the binary, or a tool
    /// that calls it) with no arguments yet.
    pub fn command_of(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.xdg_config_home())
            .env("XDG_STATE_HOME", self.xdg_state_home())
            .env("XDG_RUNTIME_DIR", self.xdg_runtime_dir())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "stagepass=debug")
            .current_dir(self.path())
            .stdin(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd
    }

    /// The `stagepass` binary this home runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Runs `stagepass ARGS` to completion under [`RUN_GUARD`] and returns its output.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        run_guarded(self.command(args), None)
    }

    /// [`Home::run`] with `stdin` fed to the command.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<Output> {
        run_guarded(self.command(args), Some(stdin))
    }

    /// Starts `stagepass agent` in the background (stopped on drop, log printed if the
    /// test fails). Readiness is the caller's to wait for, e.g.
    /// [`ManagedProcess::wait_for_line`] or [`Home::wait_for_path`] on the socket.
    pub fn spawn_agent<I, S>(&self, extra_args: I) -> Result<ManagedProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(["agent"]);
        cmd.args(extra_args);
        ManagedProcess::spawn("stagepass-agent", cmd)
    }

    /// Starts `stagepass agent` with extra environment (e.g. the variable an `env` profile
    /// serves) and waits until it has written its endpoint file and API secret.
    pub fn start_agent(&self, env: &[(&str, &str)]) -> Result<ManagedProcess> {
        let mut cmd = self.command(["agent"]);
        cmd.envs(env.iter().copied());
        let mut agent = ManagedProcess::spawn("stagepass-agent", cmd)?;
        let endpoint = self.runtime_dir().join("endpoint.json");
        let secret = self.runtime_dir().join("api-secret");
        agent.wait_until("listening", RUN_GUARD, || {
            endpoint.exists() && secret.exists()
        })?;
        Ok(agent)
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

/// Runs `cmd` to completion with `stdin` (or /dev/null) and its output piped; kills it and
/// fails if it outlives [`RUN_GUARD`].
pub fn run_guarded(mut cmd: Command, stdin: Option<&[u8]>) -> Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let line = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|e| HarnessError::io(format!("spawning {line}"), e))?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut input)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = input.write_all(&data);
            }))
        }
        _ => None,
    };
    let out = wait_output(child);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    out
}

/// The file store's grant file of `profile` under state dir `state_dir`.
pub fn grant_file_in(state_dir: &Path, profile: &str) -> PathBuf {
    state_dir.join("grants").join(format!("{profile}.json"))
}

/// [`wait_output`] for a child whose stdout the test has been reading through `reader`:
/// the stdout goes back to the child so the guarded wait collects the rest (a read to EOF
/// outside it would block forever if the child hung); what `reader` had buffered but the
/// test had not read yet comes first in `Output::stdout`.
pub fn wait_output_after_read(
    mut child: Child,
    reader: std::io::BufReader<std::process::ChildStdout>,
) -> Result<Output> {
    let buffered = reader.buffer().to_vec();
    child.stdout = Some(reader.into_inner());
    let mut out = wait_output(child)?;
    out.stdout.splice(0..0, buffered);
    Ok(out)
}

/// Waits for a spawned child's output (pipe its stdout and stderr to get them); kills it
/// and fails if it outlives [`RUN_GUARD`].
pub fn wait_output(child: Child) -> Result<Output> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_GUARD) {
        Ok(out) => out.map_err(|e| HarnessError::io(format!("waiting for pid {pid}"), e)),
        Err(_) => {
            signal_pid(pid, Signal::KILL);
            Err(HarnessError::Timeout {
                what: format!("pid {pid} to finish (killed)"),
                secs: RUN_GUARD.as_secs(),
            })
        }
    }
}
