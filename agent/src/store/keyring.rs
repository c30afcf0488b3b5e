//! The Secret Service backend (through the `keyring` crate), used when a persistent keyring
//! answers on the session bus. Entries: service `stagepass`, user = grant key, secret = the
//! same JSON as the file store.

use super::{StoreError, StoredGrant};

const SERVICE: &str = "stagepass";
const PROBE_USER: &str = "stagepass-probe";

pub(super) struct KeyringStore;

fn kerr(e: keyring::Error) -> StoreError {
    // keyring errors describe the platform failure; they never include the secret.
    StoreError::Keyring(e.to_string())
}

impl KeyringStore {
    /// Connects and proves the keyring works with a write, read and delete of a probe entry.
    /// Blocking (D-Bus round trips); run it off the async threads.
    pub(super) fn probe() -> Result<Self, String> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none_or(|v| v.is_empty()) {
            return Err("DBUS_SESSION_BUS_ADDRESS is not set (no session bus)".into());
        }
        if let Err(e) = keyring::Entry::store_status() {
            return Err(format!("cannot connect to the Secret Service: {e}"));
        }
        let entry = keyring::Entry::new(SERVICE, PROBE_USER).map_err(|e| e.to_string())?;
        let value = format!("probe-{:016x}", rand::random::<u64>());
        entry
            .set_password(&value)
            .map_err(|e| format!("cannot write to the Secret Service: {e}"))?;
        let back = entry
            .get_password()
            .map_err(|e| format!("cannot read back from the Secret Service: {e}"))?;
        let _ = entry.delete_credential();
        if back != value {
            return Err("the Secret Service returned a different value than written".into());
        }
        Ok(Self)
    }

    pub(super) fn load(&self, key: &str) -> Result<Option<StoredGrant>, StoreError> {
        let entry = keyring::Entry::new(SERVICE, key).map_err(kerr)?;
        match entry.get_secret() {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                StoredGrant::from_json(&format!("keyring entry {SERVICE}/{key}"), &bytes).map(Some)
            }
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(kerr(e)),
        }
    }

    pub(super) fn save(&self, key: &str, grant: &StoredGrant) -> Result<(), StoreError> {
        let entry = keyring::Entry::new(SERVICE, key).map_err(kerr)?;
        entry.set_secret(&grant.to_json()).map_err(kerr)
    }

    pub(super) fn delete(&self, key: &str) -> Result<(), StoreError> {
        let entry = keyring::Entry::new(SERVICE, key).map_err(kerr)?;
        match entry.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(kerr(e)),
        }
    }
}
