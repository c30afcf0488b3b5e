//! Where stagepass keeps things, following XDG with fallbacks that work in containers.
//!
//! - config: `/etc/stagepass/config.toml`, then `$XDG_CONFIG_HOME/stagepass/config.toml`
//!   (default `~/.config/stagepass/config.toml`).
//! - state (survives restarts): `$XDG_STATE_HOME/stagepass` (default `~/.local/state/stagepass`).
//! - runtime (gone at stop): `$XDG_RUNTIME_DIR/stagepass`, else `/tmp/stagepass-$UID`.
//!
//! Every directory we create is 0700 and must be owned by us: a pre-existing directory
//! owned by someone else or open to others is refused (symlink and squatting attacks).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The set of directories one agent instance uses; tests build it explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Config files read in order; later ones override earlier ones.
    pub config_files: Vec<PathBuf>,
    /// Persistent state: file store, outbox.
    pub state_dir: PathBuf,
    /// Per-boot state: socket, API secret, lock.
    pub runtime_dir: PathBuf,
}

/// The current real uid, for runtime dir naming and ownership checks.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

impl Paths {
    /// Resolves the directories from the process environment.
    pub fn from_env() -> Self {
        let config_home = env_dir("XDG_CONFIG_HOME").unwrap_or_else(|| home().join(".config"));
        let state_home = env_dir("XDG_STATE_HOME").unwrap_or_else(|| home().join(".local/state"));
        let runtime_dir = match env_dir("XDG_RUNTIME_DIR") {
            Some(d) => d.join("stagepass"),
            None => PathBuf::from(format!("/tmp/stagepass-{}", current_uid())),
        };
        Self {
            config_files: vec![
                PathBuf::from("/etc/stagepass/config.toml"),
                config_home.join("stagepass/config.toml"),
            ],
            state_dir: state_home.join("stagepass"),
            runtime_dir,
        }
    }

    /// The Unix socket of the local API.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("agent.sock")
    }

    /// The per-boot API secret (0600, no trailing newline).
    pub fn api_secret(&self) -> PathBuf {
        self.runtime_dir.join("api-secret")
    }

    /// The single-instance lock of the agent.
    pub fn lock(&self) -> PathBuf {
        self.runtime_dir.join("agent.lock")
    }

    /// The state dir's lock: one agent per state dir, whatever its runtime dir.
    pub fn state_lock(&self) -> PathBuf {
        self.state_dir.join("agent.lock")
    }

    /// A small JSON file telling clients the TCP port the running agent bound.
    pub fn endpoint(&self) -> PathBuf {
        self.runtime_dir.join("endpoint.json")
    }
}

/// Creates `dir` (and parents) as 0700 and checks it is ours and closed to others.
///
/// An existing directory that is a symlink, owned by another uid, or group/world
/// accessible is refused rather than silently fixed, because someone else may hold it.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => check_private_dir(dir, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let meta = std::fs::symlink_metadata(dir)?;
            // umask may have narrowed further but never widened; make it exact.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            check_private_dir(dir, &meta)
        }
        Err(e) => Err(e),
    }
}

fn check_private_dir(dir: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a plain directory (symlink or file); refusing to use it",
                dir.display()
            ),
        ));
    }
    if meta.uid() != current_uid() {
        // Someone else made it first (for `/tmp/stagepass-UID`, any local user can): name
        // them and say how to get going without them.
        let owner = user_name(meta.uid()).map_or(String::new(), |n| format!(" ({n})"));
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {}{owner}, not by us (uid {}): another user created it \
                 first; refusing to use it. Fix: point stagepass at a directory of yours \
                 (XDG_RUNTIME_DIR for the runtime dir, XDG_STATE_HOME for the state dir, e.g. \
                 `export XDG_RUNTIME_DIR=$HOME/.run`), or have root remove {}",
                dir.display(),
                meta.uid(),
                current_uid(),
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {:o}; it must be 0700 (run: chmod 700 {})",
                dir.display(),
                meta.mode() & 0o777,
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// The name `/etc/passwd` gives `uid`, if any (for messages only).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id.parse() == Ok(uid)).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: a runtime dir another uid created first (any local user can create
    /// `/tmp/stagepass-UID`) is refused with a message naming the squatter and the fix.
    #[test]
    fn a_squatted_dir_names_its_owner_and_the_fix() {
        if current_uid() != 0 {
            eprintln!("skipped: needs root to give a directory to another uid");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("stagepass-0");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        let err = ensure_private_dir(&d).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
        assert!(err.contains("another user created it first"), "{err}");
    }

    #[test]
    fn creates_0700_and_refuses_open_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        ensure_private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&d).unwrap_err();
        assert!(err.to_string().contains("must be 0700"), "{err}");
    }

    #[test]
    fn refuses_symlinked_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        ensure_private_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(ensure_private_dir(&link).is_err());
    }
}
