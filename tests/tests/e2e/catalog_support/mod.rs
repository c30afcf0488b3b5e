//! What the in-process catalog tests (`catalog_sync.rs`, `faults_outbox_kill.rs`) share.

pub mod world;

use stagepass::catalog::{CatalogHandle, CatalogStatus};
use std::time::{Duration, Instant};

/// Polls the catalog service's status until `cond` holds; panics with the last status
/// (pretty JSON) once `hang_guard` has passed. A hang guard, not a time budget.
pub async fn wait(
    h: &CatalogHandle,
    what: &str,
    hang_guard: Duration,
    cond: impl Fn(&CatalogStatus) -> bool,
) -> CatalogStatus {
    let deadline = Instant::now() + hang_guard;
    loop {
        let s = h.status();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: timed out waiting for {what}; status: {}",
            serde_json::to_string_pretty(&s).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
