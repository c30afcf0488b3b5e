//! The file backend: one 0600 JSON file per grant in a 0700 directory, written atomically.
//!
//! Atomic write ([`crate::atomic_file::write`]): a temp file beside the target (`NAME.tmp`,
//! 0600, opened with `O_NOFOLLOW` so a symlink planted at that name is refused, truncated
//! if a crash left one), write, fsync, rename over the target, fsync the directory. A crash
//! (or kill -9) at any point leaves either the old or the new file, never a torn one; the
//! planted-link case is `atomic_file.rs::a_symlink_at_the_temp_name_is_refused_and_the_file_kept`.

use super::{StoreError, StoredGrant, file_stem};
use std::path::{Path, PathBuf};

pub(super) struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub(super) fn open(dir: &Path) -> Result<Self, StoreError> {
        crate::paths::ensure_private_dir(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            op: "create grant dir",
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.json", file_stem(key)))
    }

    pub(super) fn load(&self, key: &str) -> Result<Option<StoredGrant>, StoreError> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => zeroize::Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path,
                    op: "read",
                    source,
                });
            }
        };
        StoredGrant::from_json(&path.display().to_string(), &bytes).map(Some)
    }

    pub(super) fn save(&self, key: &str, grant: &StoredGrant) -> Result<(), StoreError> {
        crate::atomic_file::write(&self.path(key), &grant.to_json()).map_err(|e| StoreError::Io {
            path: e.path,
            op: e.op,
            source: e.source,
        })
    }

    pub(super) fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    path,
                    op: "delete",
                    source,
                });
            }
        }
        let d = std::fs::File::open(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            op: "open dir",
            source,
        })?;
        d.sync_all().map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            op: "fsync dir",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_0600_in_a_0700_dir_and_no_temp_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("grants");
        let s = FileStore::open(&dir).unwrap();
        s.save("p", &StoredGrant::new("i", "c", "rt", None))
            .unwrap();
        s.save("p", &StoredGrant::new("i", "c", "rt2", None))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("p.json")), 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("p.json")]);
        assert_eq!(s.load("p").unwrap().unwrap().refresh_token.expose(), "rt2");
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let s = FileStore::open(tmp.path().join("g").as_path()).unwrap();
        std::fs::write(tmp.path().join("g/p.json"), b"{not json").unwrap();
        let err = s.load("p").unwrap_err().to_string();
        assert!(err.contains("p.json"), "{err}");
    }
}
