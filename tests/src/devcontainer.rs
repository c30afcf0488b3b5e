//! Real dev containers: the official devcontainer CLI building and starting containers with
//! the packaged Feature on Debian's `docker.io`, as a user's machine or Codespaces does.
//!
//! `tests/run` starts the engine (`tests/peers/engine.sh`: its own `dockerd`, data root and
//! socket under a temp dir, no registry, a base image imported from the cached Debian rootfs)
//! and exports where it is. [`Engine::from_env`] reads that; where no engine can run here
//! (not root) `tests/run` says so loudly and leaves these tests out of the run.
//!
//! A [`DevContainer`] owns one workspace and the container and state volume the CLI makes for
//! it; dropping it removes both by id, so nothing outlives the test.

use crate::error::{HarnessError, Result};
use crate::support::{private_tempdir, repo_root, run, unique_name};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The remote user of the test image (uid 1000, as common-utils makes it).
pub const REMOTE_USER: &str = "vscode";
/// Its uid: the workspace is handed to it, as a host user's checkout would be.
pub const REMOTE_UID: u32 = 1000;

/// Where the engine of this run is, from the variables `tests/peers/engine.sh` exports.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Debian's docker CLI (`/usr/bin/docker`), not whatever else is first on PATH.
    pub docker: PathBuf,
    /// `unix:///.../docker.sock` of this run's dockerd.
    pub host: String,
    /// The local base image (Debian bookworm minbase, user vscode), never pulled.
    pub base_image: String,
    /// The devcontainer CLI installed by `tests/install/feature.sh`.
    pub cli: PathBuf,
}

impl Engine {
    /// The engine `tests/run` started. `Err` with the reason when there is none: the skip
    /// reason `tests/run` recorded (`STAGEPASS_TEST_ENGINE_SKIP`), or how to get one.
    pub fn from_env() -> std::result::Result<Engine, String> {
        if let Some(why) = std::env::var_os("STAGEPASS_TEST_ENGINE_SKIP") {
            return Err(format!(
                "no container engine in this run: {}",
                why.to_string_lossy()
            ));
        }
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                format!(
                    "{name} is not set: run the real-container tests through ./tests/run, which \
                     starts a container engine (tests/peers/engine.sh) and exports it"
                )
            })
        };
        let cli = crate::support::test_cache()
            .join("devcontainer-cli/current/node_modules/.bin/devcontainer");
        if !cli.exists() {
            return Err(format!(
                "{} is missing: run `sh tests/install/feature.sh` (./tests/run does)",
                cli.display()
            ));
        }
        Ok(Engine {
            docker: PathBuf::from(var("STAGEPASS_TEST_DOCKER")?),
            host: var("STAGEPASS_TEST_DOCKER_HOST")?,
            base_image: var("STAGEPASS_TEST_BASE_IMAGE")?,
            cli,
        })
    }

    /// A `docker` command against this run's engine.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(&self.docker);
        cmd.env("DOCKER_HOST", &self.host);
        cmd
    }

    /// A devcontainer CLI command against this run's engine. The CLI finds `docker` by name
    /// where it has no `--docker-path` (`features test`), so Debian's comes first on PATH.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.cli);
        cmd.env("DOCKER_HOST", &self.host);
        if let Some(dir) = self.docker.parent() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![dir.to_path_buf()];
            dirs.extend(std::env::split_paths(&path));
            if let Ok(joined) = std::env::join_paths(dirs) {
                cmd.env("PATH", joined);
            }
        }
        cmd
    }
}

/// The `stagepass` and `stagepass-core` of this build, stripped of debug info (the debug build
/// is ~400 MB, most of it symbols an image does not need), in `out/bin`; returns that dir.
pub fn stripped_binaries(out: &Path) -> Result<PathBuf> {
    stripped_binaries_of(out, &crate::support::stagepass_bin()?)
}

/// [`stripped_binaries`] of a given `stagepass` front binary and the `stagepass-core` beside it
/// (the benchmark passes its release build).
pub fn stripped_binaries_of(out: &Path, front: &Path) -> Result<PathBuf> {
    let core = front.with_file_name("stagepass-core");
    let bins = out.join("bin");
    std::fs::create_dir_all(&bins)
        .map_err(|e| HarnessError::io(format!("creating {}", bins.display()), e))?;
    for (src, name) in [(front, "stagepass"), (core.as_path(), "stagepass-core")] {
        let dst = bins.join(name);
        run(Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dst)
            .arg(src))?;
    }
    Ok(bins)
}

/// `feature/package.sh` output for the `stagepass` binaries of this build, stripped of debug
/// info ([`stripped_binaries`]).
pub fn package_feature(out: &Path) -> Result<PathBuf> {
    package_feature_from(out, &crate::support::stagepass_bin()?)
}

/// [`package_feature`] for a given `stagepass` front binary (the benchmark packages its
/// release build).
pub fn package_feature_from(out: &Path, front: &Path) -> Result<PathBuf> {
    let bins = stripped_binaries_of(out, front)?;
    let pkg = out.join("pkg");
    run(Command::new("sh")
        .arg(repo_root().join("feature/package.sh"))
        .arg(&pkg)
        .arg(format!("x86_64={}", bins.join("stagepass").display()))
        .env_remove("DEVCONTAINER"))?;
    Ok(pkg)
}

/// The answer of `devcontainer up`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpResult {
    /// `success` or `error`.
    pub outcome: String,
    /// The container the CLI made or started.
    pub container_id: Option<String>,
    /// Where the workspace is inside the container.
    pub remote_workspace_folder: Option<String>,
}

/// One workspace folder with `.devcontainer/` (config + packaged Feature), the container the
/// CLI makes for it and the volumes it mounts; all removed on drop.
pub struct DevContainer {
    engine: Engine,
    dir: tempfile::TempDir,
    id_label: String,
    env: Vec<(String, String)>,
    /// The current container, once `up` ran.
    container: Option<String>,
    /// Named volumes the containers mounted, removed on drop.
    volumes: Vec<String>,
    /// Output of every CLI call, printed by [`DevContainer::diagnostics`].
    log: std::sync::Mutex<String>,
}

impl DevContainer {
    /// A workspace at `dir/workspace` (a git checkout the caller prepares), with
    /// `devcontainer_json` and the packaged Feature (`feature_pkg`, from [`package_feature`])
    /// under `.devcontainer/`, handed to the remote user's uid. `env` is the environment the
    /// CLI substitutes `${localEnv:...}` from.
    pub fn new(
        engine: &Engine,
        feature_pkg: &Path,
        devcontainer_json: &str,
        env: &[(&str, &str)],
    ) -> Result<DevContainer> {
        Self::create(engine, Some(feature_pkg), devcontainer_json, env)
    }

    /// [`DevContainer::new`] for a `devcontainer_json` that names the Feature by its registry
    /// reference (`localhost:PORT/stagepass/features/stagepass:0`): the CLI fetches it, so no
    /// copy of the Feature is put beside the config.
    pub fn by_reference(
        engine: &Engine,
        devcontainer_json: &str,
        env: &[(&str, &str)],
    ) -> Result<DevContainer> {
        Self::create(engine, None, devcontainer_json, env)
    }

    fn create(
        engine: &Engine,
        feature_pkg: Option<&Path>,
        devcontainer_json: &str,
        env: &[(&str, &str)],
    ) -> Result<DevContainer> {
        let dir = private_tempdir()?;
        let ws = dir.path().join("workspace");
        let dc = ws.join(".devcontainer");
        std::fs::create_dir_all(&dc)
            .map_err(|e| HarnessError::io(format!("creating {}", dc.display()), e))?;
        std::fs::write(dc.join("devcontainer.json"), devcontainer_json)
            .map_err(|e| HarnessError::io("writing devcontainer.json", e))?;
        if let Some(pkg) = feature_pkg {
            run(Command::new("cp")
                .arg("-R")
                .arg(pkg.join("src/stagepass"))
                .arg(dc.join("stagepass")))?;
        }
        Ok(DevContainer {
            engine: engine.clone(),
            dir,
            id_label: format!("stagepass-test={}", unique_name("dc")),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            container: None,
            volumes: Vec::new(),
            log: std::sync::Mutex::new(String::new()),
        })
    }

    /// The workspace folder on the host.
    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// Replaces `.devcontainer/devcontainer.json` (the next `up` builds from it).
    pub fn write_config(&self, devcontainer_json: &str) -> Result<()> {
        let path = self.workspace().join(".devcontainer/devcontainer.json");
        std::fs::write(&path, devcontainer_json)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// `.devcontainer/devcontainer-lock.json`, which `up` writes: the exact version and
    /// digest each Feature reference resolved to (a rebuild keeps them).
    pub fn lockfile(&self) -> Option<String> {
        std::fs::read_to_string(
            self.workspace()
                .join(".devcontainer/devcontainer-lock.json"),
        )
        .ok()
    }

    /// `devcontainer upgrade`: moves the lockfile to the newest version each Feature's tag
    /// names now (how a user takes a new release before rebuilding).
    pub fn upgrade_lockfile(&self) -> Result<()> {
        let out = self
            .engine
            .cli()
            .arg("upgrade")
            .arg("--workspace-folder")
            .arg(self.workspace())
            .arg("--docker-path")
            .arg(&self.engine.docker)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::io("running devcontainer upgrade", e))?;
        self.note("devcontainer upgrade", &out);
        if out.status.success() {
            Ok(())
        } else {
            Err(HarnessError::Other(format!(
                "devcontainer upgrade failed\n{}",
                self.diagnostics()
            )))
        }
    }

    /// The current container id.
    pub fn id(&self) -> Result<&str> {
        self.container
            .as_deref()
            .ok_or_else(|| HarnessError::Other("no container: call up() first".into()))
    }

    /// Hands the workspace to the remote user (the host user of a real checkout owns it; git
    /// refuses a repository owned by someone else).
    pub fn chown_workspace(&self) -> Result<()> {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{REMOTE_UID}:{REMOTE_UID}"))
            .arg(self.workspace()))?;
        Ok(())
    }

    fn note(&self, what: &str, out: &Output) {
        if let Ok(mut log) = self.log.lock() {
            log.push_str(&format!(
                "--- {what}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = self.engine.cli();
        cmd.args(args)
            .arg("--workspace-folder")
            .arg(self.workspace())
            .arg("--id-label")
            .arg(&self.id_label)
            .arg("--docker-path")
            .arg(&self.engine.docker)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // The CLI leaves a ~100 MB build context per `up` under $TMPDIR and never removes
            // it; in this workspace's temp dir it goes when the test does.
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// `devcontainer up` (with `extra` flags, e.g. `--remove-existing-container`); returns the
    /// CLI's answer and how long the command took.
    pub fn up(&mut self, extra: &[&str]) -> Result<(UpResult, Duration)> {
        let mut args = vec!["up"];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let out = self
            .cli(&args)
            .output()
            .map_err(|e| HarnessError::io("running devcontainer up", e))?;
        let took = started.elapsed();
        self.note("devcontainer up", &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result: Option<UpResult> = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l.trim()).ok());
        match result {
            Some(r) if out.status.success() && r.outcome == "success" => {
                self.container.clone_from(&r.container_id);
                self.record_volumes()?;
                Ok((r, took))
            }
            _ => Err(HarnessError::Other(format!(
                "devcontainer up failed\n{}",
                self.diagnostics()
            ))),
        }
    }

    fn record_volumes(&mut self) -> Result<()> {
        let id = self.id()?.to_string();
        let names = run(self.engine.docker().args([
            "inspect",
            "-f",
            "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
            &id,
        ]))?;
        for name in names.split_whitespace() {
            if !self.volumes.iter().any(|v| v == name) {
                self.volumes.push(name.to_string());
            }
        }
        Ok(())
    }

    /// The named volumes the containers mounted (the Feature's state volume among them).
    pub fn volumes(&self) -> &[String] {
        &self.volumes
    }

    /// `devcontainer exec CMD...` as the remote user, in the workspace folder, the way a
    /// terminal in VS Code runs it.
    pub fn exec(&self, cmd: &[&str]) -> Result<Output> {
        let out = self
            .cli(&["exec"])
            .args(cmd)
            .output()
            .map_err(|e| HarnessError::io("running devcontainer exec", e))?;
        self.note(&format!("devcontainer exec {}", cmd.join(" ")), &out);
        Ok(out)
    }

    /// `docker exec` as `user` (the quick way, for polling): no CLI start-up, no env probe.
    pub fn docker_exec(&self, user: &str, cmd: &[&str]) -> Result<Output> {
        let id = self.id()?.to_string();
        self.engine
            .docker()
            .args(["exec", "-u", user, &id])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::io("running docker exec", e))
    }

    /// `docker stop`, as closing the window or stopping a Codespace does.
    pub fn stop(&self) -> Result<()> {
        run(self.engine.docker().args(["stop", "-t", "5", self.id()?]))?;
        Ok(())
    }

    /// `docker start` of the stopped container (PID 1 runs the Feature's entrypoint again);
    /// the lifecycle hooks run on the next `up`.
    pub fn start(&self) -> Result<()> {
        run(self.engine.docker().args(["start", self.id()?]))?;
        Ok(())
    }

    /// PIDs and argv of the container's processes that are `stagepass agent`, with their uid.
    pub fn agents(&self) -> Result<Vec<(u32, u32)>> {
        let out = self.docker_exec(
            "root",
            &[
                "sh",
                "-c",
                "for p in /proc/[0-9]*; do \
                 if tr '\\0' ' ' <$p/cmdline 2>/dev/null | grep -q '^/usr/local/bin/stagepass agent'; then \
                 echo \"${p#/proc/} $(stat -c %u $p)\"; fi; done",
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
            .collect())
    }

    /// The CLI's output so far, the container's log and the agent's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut text = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        if let Some(id) = &self.container {
            if let Ok(out) = self.engine.docker().args(["logs", id]).output() {
                text.push_str(&format!(
                    "--- docker logs\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if let Ok(out) = self.docker_exec(
                "root",
                &["tail", "-n", "80", "/var/lib/stagepass/agent.log"],
            ) {
                text.push_str(&format!(
                    "--- agent.log\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        text
    }
}

impl Drop for DevContainer {
    fn drop(&mut self) {
        // Every container this workspace had (a rebuild leaves none behind, but a failed one
        // may), then its volumes.
        let label = format!("label={}", self.id_label);
        if let Ok(ids) = run(self.engine.docker().args(["ps", "-aq", "--filter", &label])) {
            for id in ids.split_whitespace() {
                let _ = run(self.engine.docker().args(["rm", "-f", "-v", id]));
            }
        }
        for v in &self.volumes {
            let _ = run(self.engine.docker().args(["volume", "rm", "-f", v]));
        }
        // The container user's files in the workspace belong to uid 1000; the temp dir's own
        // removal (as root) takes them.
    }
}
