//! Catalog files: discovery, watch, Backstage-compatible validation, ownership diff,
//! a persistent outbox and the Backstage client.
//!
//! INTERFACE STUB: filled in by the catalog work. [`Service`] / [`CatalogHandle`] is what
//! the daemon and API use.

pub mod finding;
pub mod refs;
pub mod validate;
pub mod yaml;

use crate::broker::Broker;
use crate::config::CatalogConfig;
use crate::paths::Paths;

/// Starts the catalog watcher and sync in the background.
pub struct Service;

/// Handle the daemon and API keep; dropping it stops the catalog tasks.
#[derive(Clone)]
pub struct CatalogHandle {
    _private: (),
}

impl Service {
    /// Scans, starts watching and (when Backstage is configured) syncing. Never fails the
    /// agent: problems show up in [`CatalogHandle::status`].
    pub async fn start(
        _config: &CatalogConfig,
        _paths: &Paths,
        _broker: Option<Broker>,
    ) -> CatalogHandle {
        CatalogHandle { _private: () }
    }
}

impl CatalogHandle {
    /// Catalog status for `/v1/status` and `/v1/catalog` (files, findings, diff, outbox).
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({"state": "disabled"})
    }

    /// The ownership diff against Backstage, for `/v1/catalog/diff`.
    pub async fn diff(&self) -> serde_json::Value {
        serde_json::json!({"changes": []})
    }

    /// Queues a push of every changed or new file now (`stagepass catalog sync`).
    pub async fn sync_now(&self) -> serde_json::Value {
        serde_json::json!({"queued": 0})
    }
}
