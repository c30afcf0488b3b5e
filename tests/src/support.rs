//! Small helpers every end-to-end test needs: where things are, free ports, private temp
//! dirs, the `stagepass` binary, and polling with a hang guard ([`poll_until`] in async
//! tests, [`wait_until`] in blocking ones).

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// The repository root (the workspace), found from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `tests/peers`, the Node package holding the peers.
pub fn peers_dir() -> PathBuf {
    repo_root().join("tests").join("peers")
}

/// The cache `tests/run` installs into (`STAGEPASS_TEST_CACHE`, default
/// `~/.cache/stagepass-test`): the devcontainer CLI, the Debian rootfs, the build.
pub fn test_cache() -> PathBuf {
    match std::env::var_os("STAGEPASS_TEST_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/stagepass-test"),
    }
}

/// A port that was free a moment ago on 127.0.0.1 (bind to 0, read, close).
///
/// Another process may take it before the caller binds it; prefer letting a server bind
/// port 0 itself (all peers do) and use this only where a port must be known in advance.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("reading the bound address", e))?
        .port();
    Ok(port)
}

/// A temporary directory with mode 0700, removed on drop: the agent refuses state and
/// runtime directories that others can read, so tests hand it private ones.
pub fn private_tempdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("stagepass-test-")
        .tempdir()
        .map_err(|e| HarnessError::io("creating a temp dir", e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HarnessError::io(format!("chmod 0700 {}", dir.path().display()), e))?;
    Ok(dir)
}

/// Path of the built `stagepass` binary.
///
/// `CARGO_BIN_EXE_stagepass` exists only inside the `stagepass` package, so this looks for
/// `stagepass` next to the test executable's `deps/` directory (`target/<profile>/`), or
/// takes `STAGEPASS_BIN` when set. Building it is the test runner's job: `tests/run` runs
/// `cargo build -p stagepass` before the tests (do the same when running one test by hand).
pub fn stagepass_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STAGEPASS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe =
        std::env::current_exe().map_err(|e| HarnessError::io("locating the test executable", e))?;
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/stagepass
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("stagepass"))
        .ok_or_else(|| HarnessError::Other(format!("unexpected test path {}", exe.display())))?;
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(HarnessError::Other(format!(
            "{} does not exist: run `cargo build -p stagepass` first (tests/run does), or set STAGEPASS_BIN",
            candidate.display()
        )))
    }
}

/// Calls `probe` until it returns `Some`, sleeping `every` in between; fails after
/// `timeout`, which is a hang guard, not a performance assertion.
///
/// Uses the real clock for the deadline, so it also terminates under a paused tokio clock.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// The blocking twin of [`poll_until`] for tests without a runtime: calls `probe` every
/// `every` until it returns `Some`; after `timeout` (a hang guard, not a performance
/// assertion) fails with a [`HarnessError::Timeout`] naming `what`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(every);
    }
}

/// Runs a command to completion and returns its stdout, or a [`HarnessError::Command`]
/// holding its stderr.
pub fn run(cmd: &mut std::process::Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(format!("running {line}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HarnessError::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A name unique across the processes of one test run (pid, counter, time): repositories
/// and catalog entities on the shared bed must not collide between tests.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Removes ANSI colour sequences (`ESC [ ... letter`), so peer logs read well in test output.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Creates `dir` and its missing parents, then sets it to 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HarnessError::io(format!("chmod 0700 {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colour_codes_only() {
        assert_eq!(
            strip_ansi("\u{1b}[2mtime\u{1b}[22m \u{1b}[34mcatalog\u{1b}[39m info [x]"),
            "time catalog info [x]"
        );
    }

    #[test]
    fn unique_names_differ_within_a_process() {
        assert_ne!(unique_name("repo"), unique_name("repo"));
    }
}
