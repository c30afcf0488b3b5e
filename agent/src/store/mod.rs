//! Logins at rest: a persistent keyring when one answers, else a 0600 file store.
//!
//! One record per profile: the refresh token and what is needed to use it (issuer, client id,
//! scope), and since format 2 the last access token with its expiry, so that a restart within
//! its usable life costs the IdP nothing and spends no refresh token (issue 23; SECURITY.md
//! says why that is no weaker than the refresh token beside it). Every write is atomic (see [`file`]), and a per-grant
//! advisory lock ([`lock`]) makes sure two processes never refresh the same grant at once,
//! which a rotating IdP would punish by revoking the whole grant.

mod file;
mod grant;
mod keyring;
pub mod lock;

pub use grant::{StoredAccess, StoredGrant};
pub use lock::GrantLock;

use crate::config::{StoreBackendChoice, StoreConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the store could not do its job. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What we were doing.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A stored grant exists but cannot be read back.
    #[error("{path}: stored grant is corrupt: {detail}")]
    Corrupt {
        /// Where it is (file path or keyring entry name).
        path: String,
        /// What is wrong (never the content).
        detail: String,
    },
    /// The Secret Service keyring failed.
    #[error("keyring: {0}")]
    Keyring(String),
}

/// Which backend holds the grants, and why it was chosen (shown by status and doctor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// `keyring` or `file`.
    pub name: &'static str,
    /// Plain words: why this one.
    pub reason: String,
}

enum Backend {
    File(file::FileStore),
    Keyring(keyring::KeyringStore),
}

/// The grant store the broker uses; cheap operations, blocking I/O (call from `spawn_blocking`
/// where latency matters).
pub struct GrantStore {
    backend: Backend,
    info: BackendInfo,
    lock_dir: PathBuf,
}

/// How long the keyring probe may take before we fall back to files (a Secret Service that
/// is registered but hangs must not stall the agent's start).
const KEYRING_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl GrantStore {
    /// Opens the store chosen by `cfg` under `state_dir` (`<state_dir>/grants` by default).
    ///
    /// `auto` probes the Secret Service with a write/read/delete round trip; when it does not
    /// answer, the file store is used and the reason is logged and kept for status.
    pub async fn open(cfg: &StoreConfig, state_dir: &Path) -> Result<Self, StoreError> {
        // The state dir itself is checked first: creating `grants` under a symlinked state
        // dir would otherwise follow the link (only the leaf was checked).
        crate::paths::ensure_private_dir(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_path_buf(),
            op: "create state dir",
            source,
        })?;
        let dir = cfg.dir.clone().unwrap_or_else(|| state_dir.join("grants"));
        let lock_dir = state_dir.join("locks");
        let (backend, info) = match cfg.backend {
            StoreBackendChoice::File => (
                Backend::File(file::FileStore::open(&dir)?),
                BackendInfo {
                    name: "file",
                    reason: format!("configured: store.backend = \"file\" ({})", dir.display()),
                },
            ),
            StoreBackendChoice::Keyring => match probe_keyring().await {
                Ok(k) => (
                    Backend::Keyring(k),
                    BackendInfo {
                        name: "keyring",
                        reason: "configured: store.backend = \"keyring\"; Secret Service answered"
                            .into(),
                    },
                ),
                Err(why) => {
                    return Err(StoreError::Keyring(format!(
                        "store.backend = \"keyring\" but the Secret Service is not usable: {why}"
                    )));
                }
            },
            StoreBackendChoice::Auto => match probe_keyring().await {
                Ok(k) => (
                    Backend::Keyring(k),
                    BackendInfo {
                        name: "keyring",
                        reason: "a Secret Service keyring answered on the session bus".into(),
                    },
                ),
                Err(why) => (
                    Backend::File(file::FileStore::open(&dir)?),
                    BackendInfo {
                        name: "file",
                        reason: format!(
                            "no usable Secret Service ({why}); using 0600 files in {}",
                            dir.display()
                        ),
                    },
                ),
            },
        };
        crate::paths::ensure_private_dir(&lock_dir).map_err(|source| StoreError::Io {
            path: lock_dir.clone(),
            op: "create lock dir",
            source,
        })?;
        tracing::info!(backend = info.name, reason = %info.reason, "grant store selected");
        Ok(Self {
            backend,
            info,
            lock_dir,
        })
    }

    /// The backend in use and why.
    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// Reads the grant of `key` (a profile name), if any.
    pub fn load(&self, key: &str) -> Result<Option<StoredGrant>, StoreError> {
        match &self.backend {
            Backend::File(f) => f.load(key),
            Backend::Keyring(k) => k.load(key),
        }
    }

    /// Writes the grant of `key` durably (for files: temp, fsync, rename, fsync dir).
    pub fn save(&self, key: &str, grant: &StoredGrant) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(f) => f.save(key, grant),
            Backend::Keyring(k) => k.save(key, grant),
        }
    }

    /// Forgets the grant of `key`; absent is fine.
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(f) => f.delete(key),
            Backend::Keyring(k) => k.delete(key),
        }
    }

    /// Takes the cross-process lock of `key`'s grant, waiting for another holder (blocking).
    pub fn lock(&self, key: &str) -> Result<GrantLock, StoreError> {
        GrantLock::acquire(&self.lock_dir.join(format!("{}.lock", file_stem(key))))
    }
}

async fn probe_keyring() -> Result<keyring::KeyringStore, String> {
    let probe = tokio::task::spawn_blocking(keyring::KeyringStore::probe);
    match tokio::time::timeout(KEYRING_PROBE_TIMEOUT, probe).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(format!("keyring probe failed: {join}")),
        Err(_) => Err(format!(
            "the Secret Service did not answer within {} s",
            KEYRING_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// A file-name-safe, collision-free name for a grant key: the key itself when it is made of
/// `[A-Za-z0-9_.-]` (and does not start with a dot), else `x-` and its hex bytes.
pub(crate) fn file_stem(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 100
        && !key.starts_with('.')
        && !key.starts_with("x-")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if plain {
        key.to_string()
    } else {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stem_is_safe_and_injective() {
        assert_eq!(file_stem("github"), "github");
        assert_eq!(file_stem("a/b"), "x-612f62");
        assert_eq!(file_stem(".."), "x-2e2e");
        assert_ne!(file_stem("x-61"), file_stem("a"));
        assert_ne!(file_stem("x-61"), "x-61");
    }

    #[tokio::test]
    async fn file_backend_when_configured() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            backend: StoreBackendChoice::File,
            dir: None,
        };
        let state = tmp.path().join("state");
        let store = GrantStore::open(&cfg, &state).await.unwrap();
        assert_eq!(store.info().name, "file");
        assert!(store.load("p").unwrap().is_none());
        let g = StoredGrant::new("https://idp", "cli", "rt-1", Some("openid".into()));
        store.save("p", &g).unwrap();
        let back = store.load("p").unwrap().unwrap();
        assert_eq!(back.refresh_token.expose(), "rt-1");
        assert_eq!(back.issuer, "https://idp");
        store.delete("p").unwrap();
        assert!(store.load("p").unwrap().is_none());
        store.delete("p").unwrap();
    }
}
