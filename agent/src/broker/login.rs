//! A profile's latest device login, as the slot keeps it: its own module so the slot (which
//! holds it) and the device flow (which writes it) both depend on it and not on each other.

use super::LoginState;
use tokio::time::Instant;

/// The latest device login of a profile.
pub(super) struct LoginRecord {
    pub(super) state: LoginState,
    pub(super) expires: Instant,
    pub(super) task: Option<tokio::task::AbortHandle>,
}

impl Drop for LoginRecord {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}
