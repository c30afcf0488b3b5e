//! `GET /v1/catalog`, `GET /v1/catalog/diff` and `POST /v1/catalog/sync`.
//!
//! The catalog's own status and report types, re-exported: one definition for the agent's
//! catalog engine that builds them and for `stagepass catalog`, `status` and MCP.

pub use crate::catalog::diff::Change;
pub use crate::catalog::outbox::{Action, JobStatus};
pub use crate::catalog::{
    BackstageStatus, CatalogStatus, DiffReport, EngineState, Finding, ScanReport, SyncReport,
    WatchStatus,
};
