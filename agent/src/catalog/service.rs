//! The catalog engine: one task that owns the file state, reacts to file and git-ref events,
//! answers diff/sync commands and queues pushes; the push worker ([`super::push`]) drains
//! the outbox beside it.

use super::backstage::{Backstage, RemoteEntity};
use super::changes::{self, Hints};
use super::check::duplicate_findings;
use super::diff::{self, Change};
use super::discover::{self, Matcher};
use super::finding::{Finding, MAX_FINDINGS, message_excerpt};
use super::git::{Repo, UrlMap};
use super::location;
use super::outbox::{Action, Job, Outbox};
use super::push::{self, SyncCtx, Worker};
use super::refs::EntityRef;
use super::root;
use super::token::BackstageTokens;
use super::validate::{self, FileReport, Sink};
use super::watch::{self, DirWatcher, WatchEvent};
use super::{
    BackstageStatus, CatalogStatus, Command, DiffReport, EngineState, Options, ScanReport, Shared,
    SyncReport, WatchStatus,
};
use crate::config::CatalogConfig;
use crate::paths::Paths;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

struct Engine {
    config: CatalogConfig,
    shared: Arc<Shared>,
    root: PathBuf,
    matcher: Matcher,
    files: BTreeMap<PathBuf, FileReport>,
    remote_findings: BTreeMap<PathBuf, Vec<Finding>>,
    watcher: DirWatcher,
    repo: Option<Repo>,
    urls: Option<UrlMap>,
    sync: Option<Arc<SyncCtx>>,
    logged_diff: BTreeSet<Change>,
    logged_findings: BTreeSet<String>,
    warnings: Vec<String>,
}

pub(crate) async fn spawn(
    config: CatalogConfig,
    paths: Paths,
    options: Options,
    shared: Arc<Shared>,
    commands_tx: mpsc::UnboundedSender<Command>,
    commands: mpsc::UnboundedReceiver<Command>,
) -> Vec<JoinHandle<()>> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "catalog",
        profile = config.profile.as_deref().unwrap_or("-"),
        backstage = config
            .backstage_url
            .as_ref()
            .map_or("-", crate::config::HttpUrl::as_str)
    );
    vec![tokio::spawn(
        run(config, paths, options, shared, commands_tx, commands).instrument(span),
    )]
}

fn fail(shared: &Shared, state: EngineState, reason: String) {
    tracing::warn!(reason = %reason, "catalog watcher {}", state.as_str());
    shared.update(|s| {
        s.state = state;
        s.reason = Some(reason);
    });
}

async fn run(
    config: CatalogConfig,
    paths: Paths,
    options: Options,
    shared: Arc<Shared>,
    commands_tx: mpsc::UnboundedSender<Command>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let inputs = root::Inputs {
        config_root: config.root.clone(),
        hint_file: Some(paths.state_dir.join(root::HINT_FILE)),
        env_folder: options.env_folder.clone(),
        cwd: options.cwd.clone().or_else(|| std::env::current_dir().ok()),
        workspaces_dir: options.workspaces_dir.clone(),
    };
    let Some((root, source)) = wait_for_root(&inputs, &shared, &mut commands).await else {
        return;
    };
    let matcher = Matcher::configured(&config.globs);
    let (fs_tx, fs_rx) = mpsc::unbounded_channel();
    let watcher = DirWatcher::new(fs_tx, options.inotify_limit, options.poll_interval);
    let mut engine = Engine::new(
        config.clone(),
        shared.clone(),
        root.clone(),
        matcher,
        watcher,
    );
    engine.initial_scan().await;

    let git = open_git(&mut engine, &root, &config, &options).await;

    if let Some(t) = &config.url_template
        && !t.contains("{path}")
    {
        engine.warnings.push(format!(
            "catalog.url_template {t:?} has no {{path}}: every file would map to the same URL"
        ));
    }
    let pending_worker = connect_backstage(
        &mut engine,
        &config,
        &paths,
        &root,
        &options,
        &shared,
        &commands_tx,
    );
    engine.shared.update(|s| {
        s.root = Some(root.clone());
        s.root_source = Some(source.describe().into());
        s.tracked_ref = engine.repo.as_ref().and_then(|r| r.tracked_ref.clone());
    });
    engine.publish();
    // Pushes that happened while the agent was not running, queued before the push worker
    // starts: a job a killed agent left for an older version of an entity is replaced by
    // the newest one instead of being pushed twice (stale, then fresh).
    engine.on_ref_moved().await;
    // The worker must not outlive the engine.
    let _worker = pending_worker.map(|w| AbortOnDropHandle::new(tokio::spawn(push::run(w))));
    let all: Vec<PathBuf> = engine.files.keys().cloned().collect();
    engine.validate_remote(&all).await;
    engine.refresh_diff().await;
    engine.publish();
    engine.shared.update(|s| s.state = EngineState::Watching);

    watch(engine, fs_rx, git, commands, &config, &options).await;
}

/// What tells the engine that the tracked ref moved: the git dir watcher's events, or, when
/// the kernel refuses that watch, a timer to poll it with.
struct GitEvents {
    rx: Option<mpsc::UnboundedReceiver<WatchEvent>>,
    poll: Option<tokio::time::Interval>,
    /// Keeps the watcher alive.
    _watch: Option<notify::RecommendedWatcher>,
}

/// Opens the repository (the ref whose movement means "pushed", and the URL of each file)
/// and starts watching its git dir, or polling it where that watch is refused.
async fn open_git(
    engine: &mut Engine,
    root: &std::path::Path,
    config: &CatalogConfig,
    options: &Options,
) -> GitEvents {
    let (git_tx, rx) = mpsc::unbounded_channel();
    let mut git = GitEvents {
        rx: Some(rx),
        poll: None,
        _watch: None,
    };
    match Repo::open(root, config.branch.as_deref()).await {
        Ok(repo) => {
            let refused = options.inotify_limit == Some(0);
            match watch::watch_git_dir(&repo.common_dir, git_tx, refused) {
                Ok(w) => git._watch = Some(w),
                Err(e) => {
                    engine.warnings.push(format!(
                        "cannot watch the git dir for pushes ({e}): polling it every {:?}",
                        options.poll_interval
                    ));
                    git.rx = None;
                    git.poll = Some(git_poller(options.poll_interval));
                }
            }
            engine.urls = UrlMap::new(
                config.url_template.as_deref(),
                repo.remote_url.as_deref(),
                repo.remote_branch.as_deref(),
            );
            engine.repo = Some(repo);
        }
        Err(e) => engine
            .warnings
            .push(format!("not a git repository ({e}): pushes are off")),
    }
    git
}

/// Connects the engine to Backstage when one is configured: the outbox, the sync context
/// and the push worker (returned, to be started once pushes made while the agent was down
/// are queued); `None` without Backstage. The URL was checked when the config was read.
fn connect_backstage(
    engine: &mut Engine,
    config: &CatalogConfig,
    paths: &Paths,
    root: &std::path::Path,
    options: &Options,
    shared: &Arc<Shared>,
    commands_tx: &mpsc::UnboundedSender<Command>,
) -> Option<Worker> {
    let mut pending_worker = None;
    if let Some(url) = &config.backstage_url {
        match Backstage::new(url.as_str()) {
            Ok(bs) => {
                if engine.urls.is_none() {
                    engine.warnings.push(
                        "cannot map catalog files to URLs (the remote is not on github.com): set catalog.url_template"
                            .into(),
                    );
                }
                let outbox = Arc::new(Mutex::new(Outbox::load(&outbox_path(paths, root))));
                if let Err(e) = crate::paths::ensure_private_dir(&paths.state_dir) {
                    engine.warnings.push(format!(
                        "state dir unusable, the outbox will not persist: {e}"
                    ));
                }
                let ctx = Arc::new(SyncCtx {
                    backstage: bs,
                    owners: Mutex::default(),
                    tokens: BackstageTokens::new(options.tokens.clone(), config.profile.clone()),
                    outbox,
                    wake: Arc::new(Notify::new()),
                });
                let worker = Worker {
                    ctx: ctx.clone(),
                    shared: shared.clone(),
                    recheck: commands_tx.clone(),
                    backoff_cap: config.retry_max.max(Duration::from_millis(100)),
                    unregister_moved: config.unregister_deleted,
                };
                pending_worker = Some(worker);
                shared.update(|s| {
                    s.backstage = Some(BackstageStatus {
                        url: url.as_str().to_string(),
                        ..BackstageStatus::default()
                    });
                });
                engine.sync = Some(ctx);
            }
            Err(e) => engine.warnings.push(format!("Backstage client: {e}")),
        }
    }
    pending_worker
}

/// The engine's life once it watches: file events, pushes, and the commands of the API.
async fn watch(
    mut engine: Engine,
    mut fs_rx: mpsc::UnboundedReceiver<WatchEvent>,
    mut git: GitEvents,
    mut commands: mpsc::UnboundedReceiver<Command>,
    config: &CatalogConfig,
    options: &Options,
) {
    let debounce = config.debounce;
    let mut recheck_at: Option<Instant> = None;
    loop {
        tokio::select! {
            ev = fs_rx.recv() => {
                let Some(ev) = ev else { break };
                let (paths, rescan) = collect(ev, &mut fs_rx, debounce).await;
                if rescan {
                    engine.rescan().await;
                } else {
                    engine.on_paths(paths).await;
                }
            }
            ev = recv_opt(&mut git.rx) => {
                let Some(rx) = git.rx.as_mut() else { continue };
                if ev.is_none() {
                    // The watcher's thread is gone: poll from now on instead of spinning on
                    // a closed channel.
                    tracing::warn!("the git dir watcher stopped; polling it every {:?}", options.poll_interval);
                    git.rx = None;
                    git.poll = Some(git_poller(options.poll_interval));
                    continue;
                }
                let _ = collect(WatchEvent::Rescan, rx, Duration::from_millis(30)).await;
                engine.on_ref_moved().await;
            }
            _ = tick_opt(&mut git.poll) => {
                engine.on_ref_moved().await;
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::Diff(tx) => {
                        let d = engine.refresh_diff().await;
                        let _ = tx.send(d);
                    }
                    Command::Sync(tx) => {
                        let r = engine.sync_now().await;
                        let _ = tx.send(r);
                    }
                    Command::Recheck => {
                        recheck_at = Some(Instant::now() + Duration::from_millis(2500));
                    }
                }
            }
            _ = sleep_until_opt(recheck_at) => {
                recheck_at = None;
                engine.refresh_diff().await;
            }
        }
        engine.publish();
    }
}

/// The timer that replaces the git dir watcher when the kernel refuses it (inotify watches
/// exhausted, as in a large monorepo): a `git rev-parse` per tick, and pushes are still seen.
fn git_poller(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// The next event of a channel that may be gone; pending forever once it is, so a closed
/// channel never wins a `select!` again (it would otherwise spin a core).
async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next tick of an optional timer; pending forever without one.
async fn tick_opt(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// How often a waiting engine looks again for a folder to watch (a stat and a directory
/// listing; git runs only when they changed).
const ROOT_POLL: Duration = Duration::from_secs(2);

/// Finds the folder to watch, waiting (state `waiting`, with the reason) until there is one:
/// in a dev container the start hook writes the workspace hint a moment after the agent
/// started. Diff and sync requests meanwhile get the reason as their error. `None` when the
/// service is being stopped.
async fn wait_for_root(
    inputs: &root::Inputs,
    shared: &Shared,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<(PathBuf, root::Source)> {
    let mut seen = inputs.fingerprint();
    let mut reason = match root::resolve(inputs).await {
        root::Resolution::Found { root, source } => return Some((root, source)),
        root::Resolution::NotYet(reason) => reason,
    };
    loop {
        fail(shared, EngineState::Waiting, reason.clone());
        let mut tick = tokio::time::interval(ROOT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let error = Some(format!("the catalog is not watching: {reason}"));
                    match cmd? {
                        Command::Diff(tx) => {
                            let _ = tx.send(DiffReport {
                                changes: Vec::new(),
                                error,
                                failed: Vec::new(),
                            });
                        }
                        Command::Sync(tx) => {
                            let _ = tx.send(SyncReport { error, ..SyncReport::default() });
                        }
                        Command::Recheck => {}
                    }
                }
                _ = tick.tick() => {
                    let now = inputs.fingerprint();
                    if now != seen {
                        seen = now;
                        break;
                    }
                }
            }
        }
        match root::resolve(inputs).await {
            root::Resolution::Found { root, source } => {
                tracing::info!(root = %root.display(), source = source.describe(), "catalog folder found");
                return Some((root, source));
            }
            root::Resolution::NotYet(r) => reason = r,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Gathers events until `quiet` passes without one (bounded to 8 x quiet in total).
async fn collect(
    first: WatchEvent,
    rx: &mut mpsc::UnboundedReceiver<WatchEvent>,
    quiet: Duration,
) -> (BTreeSet<PathBuf>, bool) {
    let mut paths = BTreeSet::new();
    let mut rescan = false;
    let mut add = |ev: WatchEvent| match ev {
        WatchEvent::Path(p) => {
            paths.insert(p);
        }
        WatchEvent::Rescan => rescan = true,
    };
    add(first);
    let hard_stop = Instant::now() + quiet * 8;
    loop {
        let wait = quiet.min(hard_stop.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(ev)) => add(ev),
            _ => break,
        }
        if Instant::now() >= hard_stop {
            break;
        }
    }
    (paths, rescan)
}

/// Validates a file on the blocking pool: parsing and checking a hostile file takes real
/// time (bounded, see `validate`), and on the engine's task it held a runtime worker, so
/// token answers waited behind it (15.7 s for a file with 40,000 bad tags).
async fn check_file_off(abs: PathBuf, rel: PathBuf) -> FileReport {
    let display = rel.clone();
    tokio::task::spawn_blocking(move || validate::check_file(&abs, &rel))
        .await
        .unwrap_or_else(|e| validate::failed(&display, &e.to_string()))
}

/// [`check_file_off`] for content already read (from a commit).
async fn check_bytes_off(bytes: Vec<u8>, path: &Path) -> FileReport {
    let display = path.to_path_buf();
    tokio::task::spawn_blocking(move || validate::check_bytes(&bytes, &display))
        .await
        .unwrap_or_else(|e| validate::failed(path, &e.to_string()))
}

/// One outbox per repository, in the state dir.
fn outbox_path(paths: &Paths, root: &Path) -> PathBuf {
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let id: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    paths.state_dir.join(format!("catalog-outbox-{id}.json"))
}

impl Engine {
    /// An engine for `root` that has read nothing yet: no files, no repository, no sync.
    fn new(
        config: CatalogConfig,
        shared: Arc<Shared>,
        root: PathBuf,
        matcher: Matcher,
        watcher: DirWatcher,
    ) -> Self {
        Self {
            config,
            shared,
            root,
            matcher,
            files: BTreeMap::new(),
            remote_findings: BTreeMap::new(),
            watcher,
            repo: None,
            urls: None,
            sync: None,
            logged_diff: BTreeSet::new(),
            logged_findings: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }

    fn rel<'a>(&self, p: &'a Path) -> Option<&'a Path> {
        p.strip_prefix(&self.root).ok()
    }

    async fn initial_scan(&mut self) {
        let started = std::time::Instant::now();
        let w = discover::walk(&self.root, &self.root, None, &self.matcher);
        for d in &w.dirs {
            self.watcher.watch(d);
        }
        for f in &w.files {
            if let Some(rel) = self.rel(f).map(Path::to_path_buf) {
                let report = check_file_off(f.clone(), rel.clone()).await;
                self.files.insert(rel, report);
            }
        }
        let report = ScanReport {
            files_seen: w.entries,
            dirs: w.dirs.len(),
            catalog_files: w.files.len(),
            millis: started.elapsed().as_millis(),
        };
        let (inotify, polled) = self.watcher.counts();
        tracing::info!(
            catalog_files = report.catalog_files,
            entities = self.files.values().map(|r| r.entities.len()).sum::<usize>(),
            files_seen = report.files_seen,
            dirs = report.dirs,
            inotify_watches = inotify,
            polled_dirs = polled,
            millis = report.millis as u64,
            "catalog scan done"
        );
        self.shared.update(|s| s.scan = Some(report));
        self.log_findings();
    }

    async fn rescan(&mut self) {
        let w = discover::walk(&self.root, &self.root, None, &self.matcher);
        for d in &w.dirs {
            self.watcher.watch(d);
        }
        let found: BTreeSet<PathBuf> = w
            .files
            .iter()
            .filter_map(|f| self.rel(f).map(Path::to_path_buf))
            .collect();
        let mut changed: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|k| !found.contains(*k))
            .cloned()
            .collect();
        changed.extend(found);
        self.recheck_files(changed).await;
    }

    /// Whether `p` (an existing file) is not ignored by the ignore files.
    fn visible(&self, p: &Path) -> bool {
        let Some(parent) = p.parent() else {
            return false;
        };
        discover::walk(&self.root, parent, Some(1), &self.matcher)
            .files
            .iter()
            .any(|f| f == p)
    }

    async fn on_paths(&mut self, paths: BTreeSet<PathBuf>) {
        let mut changed = BTreeSet::new();
        for p in paths {
            let Some(rel) = self.rel(&p).map(Path::to_path_buf) else {
                continue;
            };
            if discover::is_never_walked(&rel) {
                continue;
            }
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    if self.watcher.is_watched(&p) {
                        continue;
                    }
                    let w = discover::walk(&self.root, &p, None, &self.matcher);
                    let parent_sees_it = p
                        .parent()
                        .map(|parent| {
                            discover::walk(&self.root, parent, Some(1), &self.matcher)
                                .dirs
                                .contains(&p)
                        })
                        .unwrap_or(false);
                    if !parent_sees_it {
                        continue;
                    }
                    for d in &w.dirs {
                        self.watcher.watch(d);
                    }
                    changed.extend(
                        w.files
                            .iter()
                            .filter_map(|f| self.rel(f).map(Path::to_path_buf)),
                    );
                }
                Ok(m) if m.is_file() => {
                    if self.matcher.is_catalog(&rel)
                        && (self.files.contains_key(&rel) || self.visible(&p))
                    {
                        changed.insert(rel);
                    }
                }
                // A symlink or a special file where a catalog file was: its old report goes
                // (it is not read, so it is no longer a catalog file).
                Ok(_) => {
                    if self.files.contains_key(&rel) {
                        changed.insert(rel);
                    }
                }
                Err(_) => {
                    // Gone: a file, or a directory with files under it.
                    changed.extend(self.files.keys().filter(|k| k.starts_with(&rel)).cloned());
                    self.watcher.unwatch_under(&p);
                }
            }
        }
        if !changed.is_empty() {
            self.recheck_files(changed.into_iter().collect()).await;
        }
    }

    async fn recheck_files(&mut self, rels: Vec<PathBuf>) {
        let mut present = Vec::new();
        for rel in rels {
            let abs = self.root.join(&rel);
            if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_file()) {
                let report = check_file_off(abs, rel.clone()).await;
                self.files.insert(rel.clone(), report);
                present.push(rel);
            } else if self.files.remove(&rel).is_some() {
                self.remote_findings.remove(&rel);
                tracing::info!(file = %rel.display(), "catalog file removed");
            }
        }
        self.log_findings();
        self.validate_remote(&present).await;
        self.refresh_diff().await;
    }

    fn all_findings(&self) -> Vec<Finding> {
        let mut v: Vec<Finding> = self
            .files
            .values()
            .flat_map(|r| r.findings.iter().cloned())
            .chain(self.remote_findings.values().flatten().cloned())
            .collect();
        v.extend(duplicate_findings(&self.files));
        v.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        v
    }

    /// Logs each finding once, when it first appears.
    fn log_findings(&mut self) {
        let now: BTreeSet<String> = self
            .all_findings()
            .iter()
            .map(ToString::to_string)
            .collect();
        for f in now.difference(&self.logged_findings) {
            tracing::warn!("catalog: {f}");
        }
        self.logged_findings = now;
    }

    async fn token(&self) -> Option<crate::secret::Secret> {
        let ctx = self.sync.as_ref()?;
        match ctx.tokens.token().await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "no token for Backstage");
                None
            }
        }
    }

    fn location_of(&self, rel: &Path) -> String {
        match &self.urls {
            Some(u) => u.url(rel),
            None => format!("file://{}", self.root.join(rel).display()),
        }
    }

    /// Backstage's own `validate-entity` verdict on each valid entity of these files.
    ///
    /// Its messages are bounded like local findings: each cut to an excerpt
    /// ([`message_excerpt`]), and no more per file than the local
    /// findings leave room for under [`MAX_FINDINGS`], the rest counted in one finding.
    async fn validate_remote(&mut self, rels: &[PathBuf]) {
        let Some(ctx) = self.sync.clone() else { return };
        if rels.is_empty() {
            return;
        }
        let token = self.token().await;
        for rel in rels {
            let Some(report) = self.files.get(rel) else {
                continue;
            };
            let url = self.location_of(rel);
            let mut found = Sink::with_room(MAX_FINDINGS.saturating_sub(report.findings.len()));
            for e in &report.entities {
                match ctx
                    .backstage
                    .validate_entity(&url, &e.json, token.as_ref())
                    .await
                {
                    Ok(msgs) => {
                        for m in msgs {
                            found.push(Finding {
                                file: rel.clone(),
                                line: e.pos.line,
                                col: e.pos.col,
                                message: format!("{}: {}", e.entity_ref, message_excerpt(&m)),
                                rule: "backstage".into(),
                            });
                        }
                    }
                    Err(err) => {
                        self.note_backstage(Err(err.to_string()));
                        return;
                    }
                }
            }
            let at = report
                .entities
                .last()
                .map_or((1, 1), |e| (e.pos.line, e.pos.col));
            self.note_backstage(Ok(()));
            self.remote_findings.insert(
                rel.clone(),
                found.finish(rel, "findings from Backstage", at),
            );
        }
        self.log_findings();
    }

    fn note_backstage(&self, r: Result<(), String>) {
        self.shared.update(|s| {
            if let Some(b) = s.backstage.as_mut() {
                match r {
                    Ok(()) => {
                        b.reachable = Some(true);
                        b.error = None;
                    }
                    Err(e) => {
                        b.reachable = Some(!e.contains("unreachable"));
                        b.error = Some(e);
                    }
                }
            }
        });
    }

    /// Fetches Backstage's view of our entities and recomputes the diff; logs new changes once.
    async fn refresh_diff(&mut self) -> DiffReport {
        let Some(ctx) = self.sync.clone() else {
            return DiffReport {
                changes: Vec::new(),
                error: Some("no Backstage configured (catalog.backstage_url)".into()),
                failed: Vec::new(),
            };
        };
        let mut local = BTreeMap::new();
        for report in self.files.values() {
            for e in &report.entities {
                local.insert(e.entity_ref.key(), (e.entity_ref.clone(), e.owner.clone()));
            }
        }
        let known: BTreeSet<String> = ctx
            .outbox
            .lock()
            .map(|o| o.pushed_keys().cloned().collect())
            .unwrap_or_default();
        let mut refs: Vec<EntityRef> = local.values().map(|(r, _)| r.clone()).collect();
        for k in known.iter().filter(|k| !local.contains_key(*k)) {
            if let Ok(r) = super::refs::parse_ref(k, None, "default") {
                refs.push(r);
            }
        }
        let token = self.token().await;
        let remote = match ctx.backstage.by_refs(&refs, token.as_ref()).await {
            Ok(items) => items,
            Err(e) => {
                self.note_backstage(Err(e.to_string()));
                return DiffReport {
                    changes: Vec::new(),
                    error: Some(e.to_string()),
                    failed: Vec::new(),
                };
            }
        };
        self.note_backstage(Ok(()));
        let mut remote: BTreeMap<String, RemoteEntity> = remote
            .into_iter()
            .flatten()
            .map(|r| (r.entity_ref.key(), r))
            .collect();
        let orphans =
            location::take_orphans(&ctx.backstage, &mut remote, &local, &known, token.as_ref())
                .await;
        let changes = diff::owner_diff(&local, &remote, &known);
        let now: BTreeSet<Change> = changes.iter().cloned().collect();
        for c in now.difference(&self.logged_diff) {
            tracing::info!("catalog diff: {c}");
        }
        self.logged_diff = now;
        self.shared.update(|s| {
            s.diff = changes.clone();
            location::record_orphans(&mut s.orphans, orphans);
        });
        DiffReport {
            changes,
            error: None,
            failed: Vec::new(),
        }
    }

    /// The tracked ref may have moved: queue pushes for the catalog files the push changed.
    async fn on_ref_moved(&mut self) {
        let (Some(repo), Some(ctx)) = (self.repo.clone(), self.sync.clone()) else {
            return;
        };
        let Some(new) = repo.tracked_commit().await else {
            return;
        };
        let old = ctx
            .outbox
            .lock()
            .ok()
            .and_then(|o| o.last_commit().map(str::to_string));
        if old.as_deref() == Some(new.as_str()) {
            return;
        }
        let Some(old) = old else {
            // First sight of this repository: remember where the branch is; `catalog sync`
            // pushes everything explicitly.
            self.with_outbox(|o| o.set_last_commit(&new));
            tracing::info!(commit = %new, "catalog sync: tracking {}", repo.tracked_ref.as_deref().unwrap_or("?"));
            return;
        };
        let changed = match repo.changed_files(&old, &new).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot diff {old}..{new}; checking every catalog file");
                match repo.files_at(&new).await {
                    Ok(all) => all.into_iter().map(|p| (p, false)).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list files at {new}");
                        return;
                    }
                }
            }
        };
        let mut queued = 0;
        let files = changes::plan(&repo, &old, &new, changed, |p| self.matcher.is_catalog(p)).await;
        for f in files {
            if f.deleted {
                // A moved file's old location is dealt with by the new file's push.
                if self.config.unregister_deleted && !f.moved_away {
                    queued += self.queue_unregister(&repo, &old, &f.path).await;
                } else if !f.moved_away && !f.was.is_empty() {
                    let was: Vec<String> = f.was.iter().map(ToString::to_string).collect();
                    let note = format!(
                        "{} was deleted: its location stays registered (catalog.unregister_deleted is off), so Backstage keeps {} until the location is unregistered",
                        f.path.display(),
                        was.join(", ")
                    );
                    tracing::warn!("catalog: {note}");
                    self.shared.update(|s| s.add_note(note));
                }
                continue;
            }
            let hints = Hints {
                was: f.was,
                left: f.left,
                moved_from: f
                    .moved_from
                    .as_deref()
                    .and_then(|p| self.urls.as_ref().map(|u| u.url(p))),
            };
            let force = f.lost_entities || hints.moved_from.is_some();
            let (n, _) = self
                .queue_file_at(&repo, &new, &f.path, force, &hints)
                .await;
            queued += n;
        }
        self.with_outbox(|o| o.set_last_commit(&new));
        tracing::info!(commit = %new, queued, "catalog sync: push detected");
        ctx.wake.notify_one();
    }

    fn with_outbox(&self, f: impl FnOnce(&mut Outbox)) {
        if let Some(ctx) = &self.sync
            && let Ok(mut o) = ctx.outbox.lock()
        {
            f(&mut o);
            if let Err(e) = o.save() {
                tracing::warn!(error = %e, "cannot save the catalog outbox");
            }
        }
    }

    /// Validates a file as committed and queues its valid entities. Returns (queued, findings).
    async fn queue_file_at(
        &mut self,
        repo: &Repo,
        commit: &str,
        path: &Path,
        force: bool,
        hints: &Hints,
    ) -> (usize, Vec<Finding>) {
        let Some(urls) = self.urls.clone() else {
            tracing::warn!(file = %path.display(), "not pushed: no URL mapping (set catalog.url_template)");
            return (0, Vec::new());
        };
        let bytes = match repo.show(commit, path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read committed file");
                return (0, Vec::new());
            }
        };
        let report = check_bytes_off(bytes, path).await;
        for f in &report.findings {
            tracing::warn!("catalog: not pushed: {f}");
        }
        let url = urls.url(path);
        if report.entities.is_empty() && !hints.was.is_empty() {
            return (
                self.queue_emptied(commit, path, url, hints, &report.findings),
                report.findings,
            );
        }
        let mut n = 0;
        for e in &report.entities {
            let job = Job::new(
                e.entity_ref.clone(),
                path.to_path_buf(),
                url.clone(),
                e.hash.clone(),
                Action::Sync,
            )
            .with_hints(hints);
            let mut queued = false;
            self.with_outbox(|o| {
                if force {
                    o.forget_pushed(&e.entity_ref.key());
                    o.drop_failed(&e.entity_ref.key());
                }
                queued = o.enqueue(job);
            });
            if queued {
                n += 1;
            }
        }
        (n, report.findings)
    }

    /// A file that held entities has none left. Without any document (emptied, or only
    /// comments) the file is pushed all the same: refreshing its Location entity makes
    /// Backstage read it again and orphan what it held, which nothing else would do until
    /// Backstage's own processing loop comes round. With documents that are all invalid it
    /// is held: the user most likely broke the file rather than emptied it, and Backstage
    /// keeps the last good entities instead of reading a broken file; the findings say why,
    /// and a note says that Backstage keeps the old entities. Returns the jobs queued.
    fn queue_emptied(
        &mut self,
        commit: &str,
        path: &Path,
        url: String,
        hints: &Hints,
        findings: &[Finding],
    ) -> usize {
        let was: Vec<String> = hints.was.iter().map(ToString::to_string).collect();
        if let Some(first) = findings.first() {
            let note = format!(
                "{} was pushed with no valid entity left ({} findings, first: {first}): not pushed, so Backstage keeps what it last read from it ({}) until the file is fixed",
                path.display(),
                findings.len(),
                was.join(", ")
            );
            tracing::warn!("catalog: {note}");
            self.shared.update(|s| s.add_note(note));
            return 0;
        }
        let Some(first) = hints.was.first() else {
            return 0;
        };
        let job = Job::new(
            first.clone(),
            path.to_path_buf(),
            url,
            format!("emptied:{commit}"),
            Action::Refresh,
        )
        .with_hints(hints);
        let mut queued = false;
        self.with_outbox(|o| queued = o.enqueue(job));
        tracing::info!(file = %path.display(), "catalog: no entities left in the file ({}); queued a refresh of its location", was.join(", "));
        usize::from(queued)
    }

    async fn queue_unregister(&mut self, repo: &Repo, old: &str, path: &Path) -> usize {
        let (Some(urls), Ok(bytes)) = (self.urls.clone(), repo.show(old, path).await) else {
            return 0;
        };
        let report = check_bytes_off(bytes, path).await;
        let mut n = 0;
        for e in &report.entities {
            let job = Job::new(
                e.entity_ref.clone(),
                path.to_path_buf(),
                urls.url(path),
                format!("deleted:{}", e.hash),
                Action::Unregister,
            );
            self.with_outbox(|o| {
                if o.enqueue(job) {
                    n += 1;
                }
            });
        }
        n
    }

    /// `stagepass catalog sync`: queue every entity Backstage lacks, disagrees with, or that
    /// changed since the last push, as committed on the tracked branch.
    async fn sync_now(&mut self) -> SyncReport {
        let Some(ctx) = self.sync.clone() else {
            return SyncReport {
                error: Some("no Backstage configured (catalog.backstage_url)".into()),
                ..SyncReport::default()
            };
        };
        let Some(repo) = self.repo.clone() else {
            return SyncReport {
                error: Some("not a git repository".into()),
                ..SyncReport::default()
            };
        };
        let Some(commit) = repo.tracked_commit().await else {
            return SyncReport {
                error: Some(format!(
                    "{} does not exist yet: push the branch first",
                    repo.tracked_ref
                        .as_deref()
                        .unwrap_or("the tracked remote branch")
                )),
                ..SyncReport::default()
            };
        };
        let files = match repo.files_at(&commit).await {
            Ok(f) => f,
            Err(e) => {
                return SyncReport {
                    error: Some(e.to_string()),
                    ..SyncReport::default()
                };
            }
        };
        let diff = self.refresh_diff().await;
        let differing: BTreeSet<String> = diff
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Added { entity, .. } | Change::OwnerChanged { entity, .. } => {
                    Some(entity.to_ascii_lowercase())
                }
                Change::Removed { .. } => None,
            })
            .collect();
        let mut report = SyncReport::default();
        let mut total = 0;
        let catalog_files: Vec<PathBuf> = files
            .into_iter()
            .filter(|p| self.matcher.is_catalog(p))
            .collect();
        for path in &catalog_files {
            let bytes = repo.show(&commit, path).await.unwrap_or_default();
            let parsed = check_bytes_off(bytes, path).await;
            total += parsed.entities.len();
            let force = parsed
                .entities
                .iter()
                .any(|e| differing.contains(&e.entity_ref.key()));
            let (n, findings) = self
                .queue_file_at(&repo, &commit, path, force, &Hints::default())
                .await;
            report.queued += n;
            report.invalid.extend(findings);
        }
        report.unchanged = total.saturating_sub(report.queued);
        self.with_outbox(|o| o.set_last_commit(&commit));
        ctx.wake.notify_one();
        report
    }

    fn publish(&self) {
        let findings = self.all_findings();
        let files = self.files.len();
        let entities = self.files.values().map(|r| r.entities.len()).sum();
        let (inotify, polled) = self.watcher.counts();
        let outbox = self
            .sync
            .as_ref()
            .and_then(|c| c.outbox.lock().ok().map(|o| o.status()))
            .unwrap_or_default();
        let warnings = self.warnings.clone();
        self.shared.update(|s: &mut CatalogStatus| {
            s.files = files;
            s.entities = entities;
            s.findings = findings;
            s.watches = WatchStatus { inotify, polled };
            s.outbox = outbox;
            s.warnings = warnings;
        });
    }
}
