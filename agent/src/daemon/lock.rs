//! The single-instance lock: an exclusive `flock` on a file in the runtime dir.
//!
//! A lock held by the kernel dies with the process, so a crashed agent never blocks the
//! next one (a pidfile would, or would name a recycled pid).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another agent of this user holds it.
    #[error(
        "another stagepass agent is already running for this user (lock {0} is held); stop it first or use it"
    )]
    Held(PathBuf),
    /// The lock file could not be opened or locked.
    #[error("cannot take the lock {path}: {source}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Held for the agent's lifetime; dropping it (or exiting) releases the lock.
pub struct InstanceLock {
    _file: File,
}

/// Takes the lock without waiting.
pub fn acquire(path: &Path) -> Result<InstanceLock, LockError> {
    let io_err = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    // SAFETY: flock on a file descriptor we own and keep open for the call; no memory is shared.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            LockError::Held(path.to_path_buf())
        } else {
            io_err(e)
        });
    }
    Ok(InstanceLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("agent.lock");
        let first = acquire(&p).unwrap();
        let err = acquire(&p).err().unwrap();
        assert!(matches!(err, LockError::Held(_)), "{err}");
        assert!(err.to_string().contains("already running"));
        drop(first);
        assert!(acquire(&p).is_ok());
    }
}
