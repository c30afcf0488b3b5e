//! The single-instance lock: an exclusive `flock` on a file in the runtime dir.
//!
//! A kernel lock dies with the process, so a crashed agent never blocks the next one (a
//! pidfile would, or would name a recycled pid); see [`crate::lockfile`].

use crate::lockfile::FileLock;
use std::io;
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another agent of this user holds it.
    #[error(
        "another stagepass agent is already running for this user (lock {0} is held); stop it first or use it"
    )]
    Held(PathBuf),
    /// Another agent, with another runtime dir, uses the same state dir.
    #[error(
        "another stagepass agent uses the state dir {0} (lock {1} is held), with another runtime dir: two agents would refresh and rotate the same grants; stop it, or give this one its own XDG_STATE_HOME"
    )]
    StateHeld(PathBuf, PathBuf),
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
    _lock: FileLock,
}

/// Takes the state dir's lock (`paths.state_lock()`) without waiting.
pub fn acquire_state(state_dir: &Path, path: &Path) -> Result<InstanceLock, LockError> {
    match acquire(path) {
        Err(LockError::Held(p)) => Err(LockError::StateHeld(state_dir.to_path_buf(), p)),
        other => other,
    }
}

/// Takes the lock without waiting.
pub fn acquire(path: &Path) -> Result<InstanceLock, LockError> {
    match FileLock::try_acquire(path) {
        Ok(Some(lock)) => Ok(InstanceLock { _lock: lock }),
        Ok(None) => Err(LockError::Held(path.to_path_buf())),
        Err(source) => Err(LockError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
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
