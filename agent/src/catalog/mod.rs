//! Catalog files: discovery, watch, Backstage-compatible validation, ownership diff,
//! a persistent outbox and the Backstage client.
//!
//! Data flows one way: [`discover`] + [`watch`] -> [`validate`] (with [`yaml`], [`refs`]) ->
//! [`diff`] -> [`outbox`] -> [`backstage`]. [`service`] runs it in the background;
//! [`Service`] / [`CatalogHandle`] is what the daemon and the API use. [`check`] is the
//! agent-less path of `stagepass catalog check`.

pub mod backstage;
mod changes;
pub mod check;
pub mod diff;
pub mod discover;
pub(crate) mod file_url;
pub mod finding;
pub mod git;
mod location;
pub mod outbox;
mod push;
pub mod refs;
pub mod root;
mod service;
pub mod token;
pub mod validate;
pub mod watch;
pub mod yaml;

use crate::broker::{Broker, TokenSource};
use crate::config::CatalogConfig;
use crate::paths::Paths;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub use diff::Change;
pub use finding::Finding;

/// Starts the catalog watcher and sync in the background.
pub struct Service;

/// Knobs that are not configuration: the token source and test hooks.
pub struct Options {
    /// Where the Backstage token comes from.
    pub tokens: Arc<dyn TokenSource>,
    /// Pretend inotify refuses watches beyond this many (exercises the polling fallback);
    /// `Some(0)` refuses the git dir's watch too.
    pub inotify_limit: Option<usize>,
    /// Poll interval of the fallback watcher.
    pub poll_interval: Duration,
    /// Working directory used to find the repository when `root` is not configured.
    pub cwd: Option<PathBuf>,
    /// `CODESPACE_VSCODE_FOLDER` (read from the environment by default).
    pub env_folder: Option<PathBuf>,
    /// Where dev containers mount repositories (`/workspaces` by default).
    pub workspaces_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tokens: Arc::new(token::NoToken),
            inotify_limit: None,
            poll_interval: Duration::from_secs(2),
            cwd: None,
            env_folder: std::env::var_os("CODESPACE_VSCODE_FOLDER")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            workspaces_dir: Some(PathBuf::from("/workspaces")),
        }
    }
}

/// Where the catalog engine stands; on the wire as the lowercase word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineState {
    /// `catalog.enabled = false`.
    Disabled,
    /// Scanning the repository for the first time.
    #[default]
    Starting,
    /// No folder to watch yet (the reason says what is missing); looks again every 2 s.
    Waiting,
    /// Watching files and pushes.
    Watching,
    /// Stopped on an error the reason names (a bad glob, a bad Backstage URL).
    Error,
}

impl EngineState {
    /// The wire word, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Starting => "starting",
            Self::Waiting => "waiting",
            Self::Watching => "watching",
            Self::Error => "error",
        }
    }
}

/// The catalog part of `/v1/status` and `/v1/catalog`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct CatalogStatus {
    /// Where the engine stands.
    pub state: EngineState,
    /// Why, when not watching.
    pub reason: Option<String>,
    /// The repository watched.
    pub root: Option<PathBuf>,
    /// Where the watched folder came from (`catalog.root`, the dev container's workspace
    /// folder, ...).
    pub root_source: Option<String>,
    /// Catalog files found.
    pub files: usize,
    /// Valid entities in them.
    pub entities: usize,
    /// Every finding (local rules, then Backstage's `validate-entity`).
    pub findings: Vec<Finding>,
    /// The ownership diff against Backstage (empty without Backstage).
    pub diff: Vec<Change>,
    /// Pending and failed pushes.
    pub outbox: Vec<outbox::JobStatus>,
    /// Backstage connection state, when configured.
    pub backstage: Option<BackstageStatus>,
    /// Watches in use.
    pub watches: WatchStatus,
    /// The remote-tracking ref whose movement triggers pushes.
    pub tracked_ref: Option<String>,
    /// The initial scan.
    pub scan: Option<ScanReport>,
    /// Successful pushes per entity since start (refresh or registration).
    pub pushes: BTreeMap<String, u32>,
    /// Things the user should know (no URL mapping, bad globs, ...).
    pub warnings: Vec<String>,
    /// What recent pushes did that the user should know (a moved file's old location,
    /// an entity Backstage reads from another file), newest last.
    pub notes: Vec<String>,
    /// Entities pushed from here, gone from the files, that Backstage holds as orphans
    /// (no location emits them any more): it deletes them, or keeps them marked
    /// `backstage.io/orphan`, as its `catalog.orphanStrategy` says.
    pub orphans: Vec<String>,
}

/// How many notes status keeps (the newest).
const NOTES_KEPT: usize = 20;

impl CatalogStatus {
    /// Adds a note (moved to the end when it is there already), keeping the newest
    /// [`NOTES_KEPT`]: notes explain what a push did, so the recent ones matter.
    pub(crate) fn add_note(&mut self, note: String) {
        self.notes.retain(|old| *old != note);
        self.notes.push(note);
        let extra = self.notes.len().saturating_sub(NOTES_KEPT);
        self.notes.drain(..extra);
    }
}

/// Backstage as seen by the sync.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct BackstageStatus {
    /// Base URL.
    pub url: String,
    /// Whether the last call got an answer.
    pub reachable: Option<bool>,
    /// The last error.
    pub error: Option<String>,
    /// Set while pushes are paused because the token was refused (names the profile).
    pub paused: Option<String>,
}

/// Watch counts.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, Default)]
pub struct WatchStatus {
    /// Directories under inotify.
    pub inotify: usize,
    /// Directories polled (inotify exhausted).
    pub polled: usize,
}

/// What the initial scan found and how long it took.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct ScanReport {
    /// Files looked at.
    pub files_seen: usize,
    /// Directories walked.
    pub dirs: usize,
    /// Catalog files found.
    pub catalog_files: usize,
    /// Milliseconds.
    pub millis: u128,
}

/// Answer of `/v1/catalog/diff`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct DiffReport {
    /// The changes.
    pub changes: Vec<Change>,
    /// Why there is no diff (no Backstage configured, unreachable, ...).
    pub error: Option<String>,
    /// Pushes Backstage refused for good (e.g. its permission policy refusing this user
    /// this entity): the local change that is not in Backstage, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<outbox::JobStatus>,
}

/// Answer of `/v1/catalog/sync`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct SyncReport {
    /// Pushes queued.
    pub queued: usize,
    /// Entities already up to date.
    pub unchanged: usize,
    /// Files not pushed because they have findings.
    pub invalid: Vec<Finding>,
    /// Why nothing could be queued.
    pub error: Option<String>,
}

pub(crate) enum Command {
    Diff(oneshot::Sender<DiffReport>),
    Sync(oneshot::Sender<SyncReport>),
    Recheck,
}

pub(crate) struct Shared {
    pub(crate) status: Mutex<CatalogStatus>,
}

impl Shared {
    pub(crate) fn update(&self, f: impl FnOnce(&mut CatalogStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Handle the daemon and API keep; dropping the last clone stops the catalog tasks.
#[derive(Clone)]
pub struct CatalogHandle {
    inner: Arc<Inner>,
}

impl Service {
    /// Scans, starts watching and (when Backstage is configured) syncing. Never fails the
    /// agent: problems show up in [`CatalogHandle::status`].
    pub async fn start(
        config: &CatalogConfig,
        paths: &Paths,
        broker: Option<Broker>,
    ) -> CatalogHandle {
        let tokens: Arc<dyn TokenSource> = match broker {
            Some(broker) => Arc::new(broker),
            None => Arc::new(token::NoToken),
        };
        Self::start_with(
            config,
            paths,
            Options {
                tokens,
                ..Options::default()
            },
        )
        .await
    }

    /// Like [`Service::start`] with explicit [`Options`] (tests feed a token directly).
    pub async fn start_with(
        config: &CatalogConfig,
        paths: &Paths,
        options: Options,
    ) -> CatalogHandle {
        let shared = Arc::new(Shared {
            status: Mutex::new(CatalogStatus {
                state: if config.enabled {
                    EngineState::Starting
                } else {
                    EngineState::Disabled
                },
                ..CatalogStatus::default()
            }),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        if config.enabled {
            tasks = service::spawn(
                config.clone(),
                paths.clone(),
                options,
                shared.clone(),
                tx.clone(),
                rx,
            )
            .await;
        }
        CatalogHandle {
            inner: Arc::new(Inner {
                shared,
                commands: tx,
                tasks,
            }),
        }
    }
}

impl CatalogHandle {
    /// Catalog status for `/v1/status` and `/v1/catalog` (files, findings, diff, outbox).
    pub fn status(&self) -> CatalogStatus {
        self.inner
            .shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The ownership diff against Backstage, fetched now, for `/v1/catalog/diff`.
    pub async fn diff(&self) -> DiffReport {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Diff(tx)).is_err() {
            return DiffReport {
                changes: Vec::new(),
                error: Some("the catalog watcher is not running".into()),
                failed: Vec::new(),
            };
        }
        let mut report = rx.await.unwrap_or_else(|_| DiffReport {
            changes: Vec::new(),
            error: Some("the catalog watcher stopped".into()),
            failed: Vec::new(),
        });
        report.failed = self
            .status()
            .outbox
            .into_iter()
            .filter(|j| j.state == "failed")
            .collect();
        report
    }

    /// Queues a push of every changed or new file now (`stagepass catalog sync`).
    pub async fn sync_now(&self) -> SyncReport {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Sync(tx)).is_err() {
            return SyncReport {
                error: Some("the catalog watcher is not running".into()),
                ..SyncReport::default()
            };
        }
        rx.await.unwrap_or_else(|_| SyncReport {
            error: Some("the catalog watcher stopped".into()),
            ..SyncReport::default()
        })
    }
}

#[cfg(test)]
mod fake_backstage;
#[cfg(test)]
pub(crate) mod hostile_tests;
#[cfg(test)]
mod push_tests;
#[cfg(test)]
mod tests;
