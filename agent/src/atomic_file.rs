//! Replacing a private file so that a reader, a crash or a full disk leaves the old content
//! or the new, never a mix: every file the agent rewrites (stored logins, the catalog
//! outbox, the per-boot secret, `endpoint.json`) goes through [`write`].

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Which step failed, on which path: the callers put it in their own typed errors.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct WriteError {
    /// The step: `create temp file`, `write temp file`, `fsync temp file`,
    /// `rename into place`, `open dir`, `fsync dir`.
    pub op: &'static str,
    /// The file the step was about.
    pub path: PathBuf,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

/// Replaces `path` with `bytes`, mode 0600: a temp file beside it (`NAME.tmp`, opened with
/// `O_NOFOLLOW` so a symlink planted there is refused, truncated if a crash left one),
/// written and fsynced, renamed over `path`, then the directory fsynced so the rename itself
/// survives a power loss. On failure the temp file is removed and `path` is untouched.
/// Writers of one path are serialised by their caller (the grant lock, the single agent).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let err = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| WriteError { op, path, source }
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(err("create temp file", &tmp))?;
        // A temp file a crash left behind keeps its mode through O_CREAT: set it again.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(err("create temp file", &tmp))?;
        f.write_all(bytes).map_err(err("write temp file", &tmp))?;
        f.sync_all().map_err(err("fsync temp file", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err("rename into place", path))?;
        let d = std::fs::File::open(dir).map_err(err("open dir", dir))?;
        d.sync_all().map_err(err("fsync dir", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_file_0600_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, b"old").unwrap();
        // A crash's leftover temp file, open to others: truncated and made private again.
        std::fs::write(dir.path().join("state.json.tmp"), b"torn-and-longer").unwrap();
        std::fs::set_permissions(
            dir.path().join("state.json.tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_symlink_at_the_temp_name_is_refused_and_the_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, b"old").unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).unwrap();
        let e = write(&p, b"new").unwrap_err();
        assert_eq!(e.op, "create temp file", "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
