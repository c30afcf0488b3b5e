//! The workspace id: a random id created once in the state dir (`workspace-id`, 0600) and
//! filled into an `authorization-code` profile's `client_id` where it says `{workspace}`.
//!
//! Why: Backstage 0.31 keeps one offline session per (user, client id) and deletes the older
//! one when the same user signs in again with the same client
//! (`OfflineSessionDatabase.createSession` in `@backstage/plugin-auth-backend`). Two
//! workspaces sharing one client id therefore log each other out. With a Client ID Metadata
//! Document URL template (`https://host/stagepass/{workspace}.json`, allowed by one
//! `allowedClientIdPatterns` entry) every workspace is its own client with no per-workspace
//! setup. The state dir is the Feature's per-workspace volume, so the id (and with it the
//! client) survives container rebuilds, while two Codespaces of one repository differ.

use std::io;
use std::path::{Path, PathBuf};

/// File name of the workspace id in the state dir.
pub const FILE_NAME: &str = "workspace-id";

/// Length of a generated id: 26 base32 characters, 130 bits.
const LEN: usize = 26;

/// The lowercase RFC 4648 base32 alphabet: URL-path-safe, no case to mix up.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why the workspace id could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceIdError {
    /// Reading the existing file failed.
    #[error("cannot read the workspace id {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The file holds something that is not an id this module wrote (edited by hand?).
    #[error(
        "the workspace id {} is not 1-64 letters, digits, - or _; remove it to get a new one (the next sign-in then uses a new client)",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// Writing a new id failed.
    #[error("cannot write the workspace id: {0}")]
    Write(#[from] crate::atomic_file::WriteError),
}

/// An id that may go into a URL path segment unescaped.
fn valid(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new random id.
fn generate() -> String {
    (0..LEN)
        .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>() & 31)]))
        .collect()
}

/// This workspace's id: the one in `state_dir/workspace-id`, else a new one written there
/// (0600, atomically). The caller holds the state dir's lock (one agent per state dir), so
/// no other process creates it at the same time.
pub fn load_or_create(state_dir: &Path) -> Result<String, WorkspaceIdError> {
    let path = state_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if valid(id) {
                Ok(id.to_string())
            } else {
                Err(WorkspaceIdError::Malformed { path })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = generate();
            crate::atomic_file::write(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(source) => Err(WorkspaceIdError::Read { path, source }),
    }
}

/// `client_id` with every `{workspace}` replaced by `id`.
pub fn fill(client_id: &str, id: &str) -> String {
    client_id.replace(crate::config::WORKSPACE_PLACEHOLDER, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert_eq!(a.len(), LEN);
        assert!(valid(&a), "{a}");
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_or_create(dir.path()).unwrap(),
            a,
            "the same id next time"
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            load_or_create(other.path()).unwrap(),
            a,
            "another state dir is another workspace"
        );
    }

    #[test]
    fn a_hand_written_id_is_used_and_a_malformed_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "my-codespace_1\n").unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), "my-codespace_1");
        std::fs::write(dir.path().join(FILE_NAME), "../x").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, WorkspaceIdError::Malformed { .. }), "{e}");
    }

    #[test]
    fn fill_replaces_the_placeholder() {
        assert_eq!(
            fill("https://h/stagepass/{workspace}.json", "abc"),
            "https://h/stagepass/abc.json"
        );
        assert_eq!(fill("stagepass", "abc"), "stagepass");
    }
}
