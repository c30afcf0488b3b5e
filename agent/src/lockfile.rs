//! Advisory whole-file locks (`flock(2)` through `std::fs::File::lock`) on 0600 lock files.
//!
//! The kernel drops such a lock when its holder dies, even on `kill -9`, so nothing left over
//! from a crashed process (or a previous container boot) can block the next one: that is why
//! stagepass uses them for the agent's single instance and for per-grant refreshes, and never
//! a pidfile. Locks belong to the open file description, so two opens in one process conflict
//! just as two processes do.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A held lock; released when dropped (the file is closed) or when the process exits.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A symlink planted where the lock goes is refused, not followed (it would create
        // and lock the link's target).
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl FileLock {
    /// Opens (creating 0600) and exclusively locks `path`, waiting for another holder.
    pub fn acquire(path: &Path) -> io::Result<Self> {
        let file = open(path)?;
        file.lock()?;
        Ok(Self { _file: file })
    }

    /// Like [`FileLock::acquire`] without waiting: `Ok(None)` when someone else holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn second_holder_waits_until_release() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("g.lock");
        let first = FileLock::acquire(&p).unwrap();
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(FileLock::try_acquire(&p).unwrap().is_some());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// Issue 19: a symlink where the lock goes is not followed, so its target is never
    /// created.
    #[test]
    fn a_symlink_at_the_lock_path_is_refused_and_its_target_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        let p = tmp.path().join("agent.lock");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let err = FileLock::try_acquire(&p).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        assert!(!target.exists());
    }
}
