//! A simulated dev container without Docker: a cached Debian bookworm minbase rootfs, the
//! feature installed into it exactly as the devcontainer CLI does, and the CLI's start command
//! run as PID 1 under `unshare` (pid + mount namespaces, the host's loopback shared).
//!
//! Every process started here is found by its root directory (`/proc/PID/root` is this rootfs)
//! and killed by PID when the [`Container`] drops; the rootfs directory is removed with it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The remote user every test container has (as common-utils would create it).
pub const REMOTE_USER: &str = "vscode";
/// Its uid and gid.
pub const REMOTE_UID: u32 = 1000;

/// Where the feature is copied inside the container, as the CLI names it.
const FEATURE_DIR: &str = "/tmp/dev-container-features/stagepass_0";

/// The start command of the devcontainer CLI (`docker run --entrypoint /bin/sh -c ... -`),
/// with the feature's entrypoint in the entrypoints slot.
const START_COMMAND: &str = "echo Container started
trap \"exit 0\" 15
/usr/local/share/stagepass/entrypoint.sh
exec \"$@\"
while sleep 1 & wait $!; do :; done";

/// The install wrapper the CLI generates next to install.sh (devcontainer-features-install.sh),
/// reduced to what runs: set -e, the two env files exported with set -a, then install.sh.
const INSTALL_WRAPPER: &str = "#!/bin/sh
set -e

on_exit () {
\t[ $? -eq 0 ] && exit
\techo 'ERROR: Feature \"stagepass\" (local) failed to install!'
}

trap on_exit EXIT

set -a
. ../devcontainer-features.builtin.env
. ./devcontainer-features.env
set +a

chmod +x ./install.sh
./install.sh
";

/// The workspace root (the parent of the tests crate).
pub use stagepass_e2e::support::repo_root as workspace_root;

/// The test cache filled by `tests/install/feature.sh`.
pub fn cache_dir() -> PathBuf {
    stagepass_e2e::support::test_cache()
}

/// The cached rootfs tarball; panics with the fix when the install script has not run.
pub fn rootfs_tarball() -> PathBuf {
    let p = cache_dir().join("rootfs/bookworm-minbase.tar.zst");
    assert!(
        p.exists(),
        "{} is missing: run `sh tests/install/feature.sh` (or ./tests/run) first",
        p.display()
    );
    p
}

/// `node_modules` of the devcontainer CLI package installed by `tests/install/feature.sh`.
pub fn cli_node_modules() -> PathBuf {
    let p = cache_dir().join("devcontainer-cli/current/node_modules");
    assert!(
        p.join(".bin/devcontainer").exists(),
        "{} is missing: run `sh tests/install/feature.sh` (or ./tests/run) first",
        p.display()
    );
    p
}

/// Runs a command to completion and returns its output; panics if it cannot be spawned.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Asserts success, printing the command's output otherwise.
pub fn check(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `guard` (a hang guard, not a
/// performance threshold) with `what` and the container's logs.
pub fn wait_for<T>(c: &Container, guard: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    stagepass_e2e::support::wait_until(what, guard, Duration::from_millis(20), f)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()))
}

/// What [`Container::snapshot`] records per file: (type+mode, uid, gid, size, mtime ns,
/// ctime ns, inode).
pub type FileStamp = (u32, u32, u32, u64, i64, i64, u64);

/// A simulated dev container: a rootfs directory and, while booted, its PID 1.
pub struct Container {
    dir: tempfile::TempDir,
    pid1: Option<Booted>,
}

/// A running boot: the `unshare` process and the host pid of the container's PID 1.
struct Booted {
    unshare: Child,
    pid1: u32,
    log: PathBuf,
}

impl Container {
    /// Extracts the cached rootfs and creates the remote user (uid 1000), /etc/hosts and
    /// resolv.conf, like an image with common-utils would have.
    pub fn new() -> Self {
        let tarball = rootfs_tarball();
        let dir = tempfile::Builder::new()
            .prefix("stagepass-feature-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        check(
            Command::new("tar")
                .arg("--zstd")
                .arg("-xpf")
                .arg(&tarball)
                .arg("-C")
                .arg(&root),
        );
        std::fs::write(
            root.join("etc/hosts"),
            "127.0.0.1 localhost\n::1 localhost\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        check(Command::new("chroot").arg(&root).args([
            "useradd",
            "-m",
            "-u",
            "1000",
            "-U",
            "-s",
            "/bin/bash",
            REMOTE_USER,
        ]));
        Self { dir, pid1: None }
    }

    /// The rootfs directory on the host.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// A path inside the container, as seen from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// Stages the feature with the stagepass binary (feature/package.sh) and copies it to where
    /// the CLI puts it, with the two env files the CLI writes.
    pub fn stage_feature(&self, remote_user: &str, options: &[(&str, &str)]) {
        let stage = self.dir.path().join("stage");
        let bin = stagepass_e2e::support::stagepass_bin().unwrap();
        check(
            Command::new("sh")
                .arg(workspace_root().join("feature/package.sh"))
                .arg(&stage)
                .arg(format!("x86_64={}", bin.display()))
                .env_remove("DEVCONTAINER")
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        );
        let dst = self.path(FEATURE_DIR);
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        check(
            Command::new("cp")
                .arg("-a")
                .arg(stage.join("src/stagepass"))
                .arg(&dst),
        );
        let home = if remote_user == "root" {
            "/root".to_string()
        } else {
            format!("/home/{remote_user}")
        };
        // devcontainer-features.builtin.env: two lines from the CLI, two from the Dockerfile RUN.
        std::fs::write(
            dst.parent().unwrap().join("devcontainer-features.builtin.env"),
            format!(
                "_CONTAINER_USER=root\n_REMOTE_USER={remote_user}\n_CONTAINER_USER_HOME=/root\n_REMOTE_USER_HOME={home}\n"
            ),
        )
        .unwrap();
        self.set_options(options);
        std::fs::write(
            dst.join("devcontainer-features-install.sh"),
            INSTALL_WRAPPER,
        )
        .unwrap();
    }

    /// Rewrites the staged feature's devcontainer-features.env as the CLI does: `KEY="value"`
    /// lines joined by newlines, names uppercased with non-word characters as `_`.
    pub fn set_options(&self, options: &[(&str, &str)]) {
        let dst = self.path(FEATURE_DIR);
        let env = options
            .iter()
            .map(|(k, v)| format!("{}=\"{v}\"", option_env_name(k)))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dst.join("devcontainer-features.env"), env).unwrap();
    }

    /// Runs the staged feature's install as the CLI's Dockerfile does (as root, in the feature
    /// folder), in fresh pid + mount namespaces rooted at the rootfs.
    pub fn run_install(&self) -> Output {
        run(self.unshare(None).arg("/bin/sh").arg("-c").arg(format!(
            "chmod -R 0755 {FEATURE_DIR} && cd {FEATURE_DIR} && chmod +x ./devcontainer-features-install.sh && ./devcontainer-features-install.sh"
        )))
    }

    /// Stages and installs, asserting success; returns install's stdout.
    pub fn install(&self, options: &[(&str, &str)]) -> String {
        self.stage_feature(REMOTE_USER, options);
        let out = self.run_install();
        assert!(
            out.status.success(),
            "install failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn unshare(&self, setuid: Option<u32>) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--pid", "--fork", "--mount-proc"])
            .arg(format!("--root={}", self.root().display()));
        if let Some(uid) = setuid {
            cmd.arg(format!("--setuid={uid}"))
                .arg(format!("--setgid={uid}"));
        }
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env(
                "HOME",
                if setuid.is_some() {
                    "/home/vscode"
                } else {
                    "/root"
                },
            );
        cmd
    }

    /// Starts the container: the CLI's start command as PID 1, as root or as `setuid`.
    /// Returns once PID 1 exists (not when the agent is up). Extra env reaches PID 1.
    pub fn boot(&mut self, setuid: Option<u32>, env: &[(&str, &str)]) {
        assert!(self.pid1.is_none(), "already booted");
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let log = self.dir.path().join(format!("boot-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = self.unshare(setuid);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let unshare = cmd
            .args(["/bin/sh", "-c", START_COMMAND, "-"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let upid = unshare.id();
        let mut booted = Booted {
            unshare,
            pid1: 0,
            log,
        };
        let start = Instant::now();
        booted.pid1 = loop {
            let children = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
                .unwrap_or_default();
            if let Some(p) = children.split_whitespace().next() {
                break p.parse().unwrap();
            }
            if let Ok(Some(status)) = booted.unshare.try_wait() {
                panic!(
                    "unshare exited early ({status}): {}",
                    std::fs::read_to_string(&booted.log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "PID 1 did not appear"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        self.pid1 = Some(booted);
    }

    /// Host pid of the container's PID 1.
    pub fn pid1(&self) -> u32 {
        self.pid1.as_ref().expect("not booted").pid1
    }

    /// Stops the container like `docker stop`: SIGTERM to PID 1 (its trap exits, the kernel then
    /// kills the rest of the pid namespace), and waits for every process in it to be gone.
    pub fn stop(&mut self) {
        let Some(mut b) = self.pid1.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &b.pid1.to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = b.unshare.try_wait() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = b.unshare.kill();
                let _ = b.unshare.wait();
                panic!("PID 1 ignored SIGTERM for 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let start = Instant::now();
        while !self.processes().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "processes left after stop: {:?}",
                self.processes()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Empties /tmp, as a Codespace stop does.
    pub fn clear_tmp(&self) {
        let tmp = self.path("/tmp");
        for entry in std::fs::read_dir(&tmp).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }

    /// Every process whose root directory is this rootfs: (host pid, uid, argv).
    pub fn processes(&self) -> Vec<(u32, u32, Vec<String>)> {
        let root = self.root();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(r) = std::fs::read_link(format!("/proc/{pid}/root")) else {
                continue;
            };
            if r != root {
                continue;
            }
            let Ok(meta) = std::fs::metadata(format!("/proc/{pid}")) else {
                continue;
            };
            let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>();
            if argv.is_empty() {
                continue; // zombie or exiting
            }
            out.push((pid, meta.uid(), argv));
        }
        out
    }

    /// Host pids (and uids) of running `stagepass agent` processes in the container: the
    /// agents themselves, not a child an agent is starting (`git`, between fork and exec it
    /// still carries the agent's command line).
    pub fn agents(&self) -> Vec<(u32, u32)> {
        let agents: Vec<(u32, u32)> = self
            .processes()
            .into_iter()
            .filter(|(_, _, argv)| {
                argv.len() >= 2 && argv[0].ends_with("stagepass") && argv[1] == "agent"
            })
            .map(|(pid, uid, _)| (pid, uid))
            .collect();
        not_forked_from(agents, |(pid, _)| *pid)
    }

    /// Host pids of running supervisors.
    ///
    /// Only the scripts themselves: a subshell the script forks for a moment (each
    /// `$(date ...)` of a log line) carries the same command line, and its parent is the
    /// script.
    pub fn supervisors(&self) -> Vec<u32> {
        let scripts: Vec<u32> = self
            .processes()
            .into_iter()
            .filter(|(_, _, argv)| argv.iter().any(|a| a.ends_with("/supervisor.sh")))
            .map(|(pid, _, _)| pid)
            .collect();
        not_forked_from(scripts, |pid| *pid)
    }

    /// Waits (hang guard 10 s) until exactly one agent runs and returns its (pid, uid).
    pub fn wait_agent(&self) -> (u32, u32) {
        wait_for(self, Duration::from_secs(10), "one stagepass agent", || {
            let a = self.agents();
            (a.len() == 1).then(|| a[0])
        })
    }

    /// Runs a command inside the booted container's namespaces and root, as `uid`, with a
    /// clean login-like environment for that user.
    pub fn exec(&self, uid: u32, argv: &[&str]) -> Output {
        let home = if uid == 0 { "/root" } else { "/home/vscode" };
        let user = if uid == 0 { "root" } else { REMOTE_USER };
        run(Command::new("nsenter")
            .arg(format!("--target={}", self.pid1()))
            .args(["--mount", "--pid", "--root", "--wd=/"])
            .arg(format!("--setuid={uid}"))
            .arg(format!("--setgid={uid}"))
            .arg("--")
            .args([
                "/usr/bin/env",
                "-i",
                &format!("HOME={home}"),
                &format!("USER={user}"),
                "PATH=/usr/local/bin:/usr/bin:/bin",
            ])
            .args(argv))
    }

    /// [`Container::exec`], spawned with piped stdout/stderr (for commands that run on, like
    /// `stagepass login`). The caller owns and reaps the child.
    pub fn spawn(&self, uid: u32, argv: &[&str]) -> Child {
        let home = if uid == 0 { "/root" } else { "/home/vscode" };
        let user = if uid == 0 { "root" } else { REMOTE_USER };
        Command::new("nsenter")
            .arg(format!("--target={}", self.pid1()))
            .args(["--mount", "--pid", "--root", "--wd=/"])
            .arg(format!("--setuid={uid}"))
            .arg(format!("--setgid={uid}"))
            .arg("--")
            .args([
                "/usr/bin/env",
                "-i",
                &format!("HOME={home}"),
                &format!("USER={user}"),
                "PATH=/usr/local/bin:/usr/bin:/bin",
            ])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The supervisor + agent log of the remote user.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.path("/var/lib/stagepass/agent.log")).unwrap_or_default()
    }

    /// What PID 1 printed (entrypoint notes end up here).
    pub fn boot_log(&self) -> String {
        self.pid1
            .as_ref()
            .map(|b| std::fs::read_to_string(&b.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Logs and processes, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- processes\n{:#?}\n--- boot log\n{}\n--- agent.log\n{}",
            self.processes(),
            self.boot_log(),
            self.agent_log()
        )
    }

    /// Metadata of every file under the rootfs except /tmp, /proc and /dev, keyed by path:
    /// (type+mode, uid, gid, size, mtime ns, ctime ns, inode). Any write, chmod, chown or
    /// replacement changes at least one of them.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, FileStamp> {
        let root = self.root();
        let mut out = BTreeMap::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = entry.path();
                let rel = p.strip_prefix(&root).unwrap().to_path_buf();
                if ["tmp", "proc", "dev"].iter().any(|s| rel == Path::new(s)) {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                out.insert(
                    rel,
                    (
                        m.mode(),
                        m.uid(),
                        m.gid(),
                        m.size(),
                        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
                        m.ino(),
                    ),
                );
                if m.is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut b) = self.pid1.take() {
            // SIGKILL to PID 1 tears down the whole pid namespace.
            let _ = Command::new("kill")
                .args(["-KILL", &b.pid1.to_string()])
                .status();
            let _ = b.unshare.kill();
            let _ = b.unshare.wait();
        }
        // Anything left with this root (e.g. a process entered with nsenter), by PID.
        for _ in 0..100 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for (pid, _, _) in left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The feature options of `devcontainer/test/devcontainer.json` (the devcontainer.json the
/// tests use), with `${localEnv:NAME}` replaced from `vars` as the CLI would from its env.
pub fn devcontainer_options(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    let path = workspace_root().join("devcontainer/test/devcontainer.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let features = json["features"].as_object().unwrap();
    let (_, options) = features
        .iter()
        .find(|(k, _)| k.ends_with("stagepass"))
        .unwrap_or_else(|| panic!("{}: no stagepass feature", path.display()));
    options
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let mut text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for (name, value) in vars {
                text = text.replace(&format!("${{localEnv:{name}}}"), value);
            }
            assert!(
                !text.contains("${localEnv:"),
                "{k}: unreplaced variable in {text}"
            );
            (k.clone(), text)
        })
        .collect()
}

/// The devcontainer CLI's name for an option's env var: non-word chars to `_`, leading digits
/// and underscores to one `_`, uppercased.
pub fn option_env_name(option: &str) -> String {
    let replaced: String = option
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = replaced.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    let prefix = if trimmed.len() < replaced.len() {
        "_"
    } else {
        ""
    };
    format!("{prefix}{trimmed}").to_uppercase()
}

/// `found` without the processes whose parent is also in `found`: a fork that has not yet
/// `exec`ed (or a subshell) shows its parent's command line for a moment.
fn not_forked_from<T>(found: Vec<T>, pid: impl Fn(&T) -> u32) -> Vec<T> {
    let pids: Vec<u32> = found.iter().map(&pid).collect();
    found
        .into_iter()
        .filter(|p| !parent_of(pid(p)).is_some_and(|parent| pids.contains(&parent)))
        .collect()
}

/// The parent pid of a host process (field 4 of `/proc/PID/stat`), if it still runs.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}
