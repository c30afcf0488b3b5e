//! What the in-process catalog tests (`catalog_sync.rs`, `faults_outbox_kill.rs`) share.

pub mod world;

use stagepass::catalog::{CatalogHandle, CatalogStatus};
use stagepass_e2e::support::poll_until;
use std::time::Duration;

/// Polls the catalog service's status until `cond` holds; panics with the last status
/// (pretty JSON) once `hang_guard` has passed. A hang guard, not a time budget.
pub async fn wait(
    h: &CatalogHandle,
    what: &str,
    hang_guard: Duration,
    cond: impl Fn(&CatalogStatus) -> bool,
) -> CatalogStatus {
    let mut last = None;
    let found = poll_until(what, hang_guard, Duration::from_millis(50), || {
        let s = h.status();
        let done = cond(&s).then(|| s.clone());
        last = Some(s);
        async move { Ok(done) }
    })
    .await;
    found.unwrap_or_else(|e| {
        panic!(
            "hang guard: {e}; status: {}",
            serde_json::to_string_pretty(&last).unwrap()
        )
    })
}
