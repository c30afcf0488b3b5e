//! A cross-process lock per grant.
//!
//! A rotating IdP revokes the whole grant when a refresh token is used twice, so two agents
//! (or an agent and a CLI) sharing one state directory must never refresh the same grant at
//! the same time. The lock is held from reading the stored refresh token until the rotated
//! one is durably written; see [`crate::lockfile`] for why a kernel lock.

use super::StoreError;
use crate::lockfile::FileLock;
use std::path::Path;

/// Held lock on one grant; released on drop (or by the kernel when the process dies).
#[derive(Debug)]
pub struct GrantLock {
    _lock: FileLock,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        op: "lock",
        source,
    }
}

impl GrantLock {
    /// Exclusively locks `path` (created 0600), waiting for another holder.
    pub fn acquire(path: &Path) -> Result<Self, StoreError> {
        let lock = FileLock::acquire(path).map_err(io_error(path))?;
        Ok(Self { _lock: lock })
    }

    /// Tries to lock without waiting; `Ok(None)` when someone else holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, StoreError> {
        let lock = FileLock::try_acquire(path).map_err(io_error(path))?;
        Ok(lock.map(|l| Self { _lock: l }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_until_release() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("g.lock");
        let first = GrantLock::acquire(&p).unwrap();
        assert!(GrantLock::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(GrantLock::try_acquire(&p).unwrap().is_some());
    }
}
