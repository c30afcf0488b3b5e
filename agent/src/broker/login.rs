//! A profile's latest login (device flow or authorization code), as the slot keeps it: its own module so the slot (which
//! holds it) and the device flow (which writes it) both depend on it and not on each other.

use super::LoginState;
use crate::secret::Secret;
use tokio::time::Instant;

/// The latest device login of a profile.
pub(super) struct LoginRecord {
    pub(super) state: LoginState,
    pub(super) expires: Instant,
    pub(super) task: Option<tokio::task::AbortHandle>,
    /// An authorization code sign-in waiting for its redirect (taken when it comes: single use).
    pub(super) code: Option<PendingCode>,
}

impl Drop for LoginRecord {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// What a started authorization code sign-in keeps until its redirect comes: the state the
/// redirect must carry, the PKCE verifier the code exchange sends, and the exact redirect URI.
pub(super) struct PendingCode {
    pub(super) state: Secret,
    pub(super) verifier: Secret,
    pub(super) redirect_uri: String,
}
