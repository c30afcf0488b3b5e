//! A cross-process advisory lock per grant (`flock(2)` on a lock file).
//!
//! A rotating IdP revokes the whole grant when a refresh token is used twice, so two agents
//! (or an agent and a CLI) sharing one state directory must never refresh the same grant at
//! the same time. The lock is held from reading the stored refresh token until the rotated
//! one is durably written. The kernel drops it when the process dies (even on kill -9).

use super::StoreError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Held lock; released on drop (or by the kernel when the process dies).
#[derive(Debug)]
pub struct GrantLock {
    file: File,
}

impl GrantLock {
    /// Opens (creating 0600) and exclusively locks `path`, waiting for another holder.
    pub fn acquire(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                op: "open lock file",
                source,
            })?;
        loop {
            match flock(&file, libc::LOCK_EX) {
                Ok(()) => return Ok(Self { file }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        path: path.to_path_buf(),
                        op: "lock",
                        source,
                    });
                }
            }
        }
    }

    /// Tries to lock without waiting; `Ok(None)` when someone else holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                op: "open lock file",
                source,
            })?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(Self { file })),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: path.to_path_buf(),
                op: "lock",
                source,
            }),
        }
    }
}

impl Drop for GrantLock {
    fn drop(&mut self) {
        let _ = flock(&self.file, libc::LOCK_UN);
    }
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock takes a valid open descriptor (borrowed from `file`, alive for the call)
    // and an integer operation; it touches no memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
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
        // flock locks belong to the open file description: a second open conflicts.
        assert!(GrantLock::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(GrantLock::try_acquire(&p).unwrap().is_some());
    }
}
