//! systemd-style readiness and watchdog notifications (`NOTIFY_SOCKET`).
//!
//! Without a service manager (`NOTIFY_SOCKET` unset, the usual case in a dev container)
//! every call is a cheap no-op, so the agent behaves the same everywhere.

use sd_notify::NotifyState;
use tokio_util::task::AbortOnDropHandle;

/// `STATUS=`: a one-line human summary for `systemctl status`.
pub fn status(text: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(text)]);
}

/// `READY=1` with a status, once the API is bound and the boot refresh has finished.
pub fn ready(text: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(text)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pets the watchdog at half its period when `WATCHDOG_USEC` asks for it. The task ends
/// when the returned handle is dropped.
pub fn spawn_watchdog() -> Option<AbortOnDropHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 2).max(std::time::Duration::from_millis(100));
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    });
    Some(AbortOnDropHandle::new(task))
}
