//! In-process tests of the catalog service on a real directory tree and real git (no
//! Backstage): scan, watch, atomic saves, new directories, ignored trees, polling fallback.

use super::*;
use crate::config::CatalogConfig;
use std::path::Path;

pub(crate) const COMPONENT: &str = "apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: NAME
spec:
  type: service
  lifecycle: production
  owner: OWNER
";

pub(crate) fn component(name: &str, owner: &str) -> String {
    COMPONENT.replace("NAME", name).replace("OWNER", owner)
}

pub(crate) fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Polls the status until `cond` holds; the timeout is only a hang guard.
pub(crate) async fn wait_for(
    h: &CatalogHandle,
    what: &str,
    cond: impl Fn(&CatalogStatus) -> bool,
) -> CatalogStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let s = h.status();
        if cond(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {}",
            serde_json::to_string_pretty(&s).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn paths(tmp: &Path) -> Paths {
    Paths {
        config_files: Vec::new(),
        state_dir: tmp.join("state"),
        runtime_dir: tmp.join("run"),
    }
}

fn repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    git(&root, &["init", "-q", "-b", "main"]);
    write(
        &root,
        "svc/catalog-info.yaml",
        &component("payments", "team-a"),
    );
    write(
        &root,
        "node_modules/dep/catalog-info.yaml",
        "kind: [broken\n",
    );
    write(&root, ".git/catalog-info.yaml", "kind: [broken\n");
    write(&root, "dist/catalog-info.yaml", "kind: [broken\n");
    write(&root, ".gitignore", "dist/\n");
    tmp
}

fn rels(s: &CatalogStatus) -> Vec<String> {
    s.findings
        .iter()
        .map(|f| format!("{}:{}:{}", f.file.display(), f.line, f.rule))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_config_watches_the_repository_of_the_working_directory() {
    let tmp = repo();
    let root = tmp.path().join("repo");
    let h = Service::start_with(
        &CatalogConfig::default(),
        &paths(tmp.path()),
        Options {
            cwd: Some(root.join("svc")),
            ..Options::default()
        },
    )
    .await;
    let s = wait_for(&h, "watching", |s| s.state == EngineState::Watching).await;
    assert_eq!(
        s.root.as_deref(),
        Some(std::fs::canonicalize(&root).unwrap().as_path())
    );
    assert_eq!(s.files, 1, "only svc/catalog-info.yaml: {s:?}");
    assert_eq!(s.entities, 1);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert!(s.backstage.is_none());
    let scan = s.scan.unwrap();
    assert_eq!(scan.catalog_files, 1);
    // root, svc (dist and node_modules are neither walked nor watched; .git neither)
    assert_eq!(s.watches.inotify, 2, "watches: {:?}", s.watches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_atomic_saves_new_dirs_and_deletes_are_followed() {
    let tmp = repo();
    let root = std::fs::canonicalize(tmp.path().join("repo")).unwrap();
    let config = CatalogConfig {
        root: Some(root.clone()),
        ..CatalogConfig::default()
    };
    let h = Service::start_with(&config, &paths(tmp.path()), Options::default()).await;
    wait_for(&h, "scan", |s| {
        s.state == EngineState::Watching && s.files == 1
    })
    .await;

    // Invalid edit: owner removed -> finding with its line.
    write(
        &root,
        "svc/catalog-info.yaml",
        &component("payments", "team-a").replace("  owner: team-a\n", ""),
    );
    let s = wait_for(&h, "missing owner finding", |s| !s.findings.is_empty()).await;
    assert_eq!(rels(&s), vec!["svc/catalog-info.yaml:6:required-field"]);
    assert_eq!(s.entities, 0);

    // Atomic save (temp file + rename) fixes it.
    write(
        &root,
        "svc/.catalog-info.yaml.swp",
        &component("payments", "team-b"),
    );
    std::fs::rename(
        root.join("svc/.catalog-info.yaml.swp"),
        root.join("svc/catalog-info.yaml"),
    )
    .unwrap();
    wait_for(&h, "fixed by atomic save", |s| {
        s.findings.is_empty() && s.entities == 1
    })
    .await;

    // A new directory tree with a catalog file (created in one go, as `mv` or `git checkout` do).
    let staging = tmp.path().join("staging");
    write(
        &staging,
        "deep/er/catalog-info.yml",
        &component("billing", "team-c"),
    );
    std::fs::rename(&staging, root.join("newdir")).unwrap();
    wait_for(&h, "new dir picked up", |s| s.files == 2 && s.entities == 2).await;
    // ...and it is watched: an edit deep inside is seen.
    write(
        &root,
        "newdir/deep/er/catalog-info.yml",
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: Bad Name\n",
    );
    let s = wait_for(&h, "edit in new dir", |s| s.findings.len() >= 2).await;
    assert!(
        rels(&s).contains(&"newdir/deep/er/catalog-info.yml:4:name-format".to_string()),
        "{:?}",
        rels(&s)
    );

    // Ignored trees created later stay unwatched and unreported.
    write(
        &root,
        "node_modules/other/catalog-info.yaml",
        "kind: [broken\n",
    );
    write(&root, "dist/more/catalog-info.yaml", "kind: [broken\n");
    // Delete the whole new dir: its file disappears.
    std::fs::remove_dir_all(root.join("newdir")).unwrap();
    let s = wait_for(&h, "dir removed", |s| s.files == 1).await;
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert!(
        s.watches.inotify <= 3,
        "node_modules/dist must not be watched: {:?}",
        s.watches
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_inotify_falls_back_to_polling() {
    let tmp = repo();
    let root = std::fs::canonicalize(tmp.path().join("repo")).unwrap();
    // The poller compares whole-second mtimes: age the file so the edit below is newer.
    let f = std::fs::File::options()
        .write(true)
        .open(root.join("svc/catalog-info.yaml"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(10))
        .unwrap();
    drop(f);
    let config = CatalogConfig {
        root: Some(root.clone()),
        ..CatalogConfig::default()
    };
    let h = Service::start_with(
        &config,
        &paths(tmp.path()),
        Options {
            inotify_limit: Some(1),
            poll_interval: std::time::Duration::from_millis(100),
            ..Options::default()
        },
    )
    .await;
    let s = wait_for(&h, "scan", |s| s.state == EngineState::Watching).await;
    assert_eq!((s.watches.inotify, s.watches.polled), (1, 1));
    write(
        &root,
        "svc/catalog-info.yaml",
        &component("payments", "team-a").replace("name: payments", "name: -bad"),
    );
    let s = wait_for(&h, "polled change", |s| !s.findings.is_empty()).await;
    assert_eq!(rels(&s), vec!["svc/catalog-info.yaml:4:name-format"]);
}

#[tokio::test]
async fn disabled_and_outside_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Service::start_with(
        &CatalogConfig {
            enabled: false,
            ..CatalogConfig::default()
        },
        &paths(tmp.path()),
        Options::default(),
    )
    .await;
    assert_eq!(h.status().state, EngineState::Disabled);
    let h = Service::start_with(
        &CatalogConfig::default(),
        &paths(tmp.path()),
        Options {
            cwd: Some(tmp.path().to_path_buf()),
            env_folder: None,
            workspaces_dir: None,
            ..Options::default()
        },
    )
    .await;
    let s = wait_for(&h, "waiting", |s| s.state != EngineState::Starting).await;
    assert_eq!(s.state, EngineState::Waiting);
    assert!(
        s.reason.unwrap().contains("no workspace folder known yet"),
        "{:?}",
        h.status()
    );
    let d = h.diff().await;
    assert!(
        d.error.as_deref().unwrap().contains("not watching"),
        "{d:?}"
    );

    // The dev container's start hook names the workspace folder: the waiting engine takes it.
    let repo = repo();
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    std::fs::write(
        tmp.path()
            .join("state")
            .join(crate::catalog::root::HINT_FILE),
        format!("{}\n", repo.path().join("repo/svc").display()),
    )
    .unwrap();
    let s = wait_for(&h, "watching the hinted folder", |s| {
        s.state == EngineState::Watching
    })
    .await;
    assert_eq!(
        s.root.as_deref(),
        Some(
            std::fs::canonicalize(repo.path().join("repo"))
                .unwrap()
                .as_path()
        )
    );
    assert_eq!(
        s.root_source.as_deref(),
        Some("the dev container's workspace folder")
    );
    assert_eq!(s.files, 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_files_does_not_feed_back_into_rechecks() {
    // inotify reports opens; the service's own reads must not trigger new checks (idle CPU).
    let tmp = repo();
    let root = std::fs::canonicalize(tmp.path().join("repo")).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut w = watch::DirWatcher::new(tx, None, std::time::Duration::from_secs(1));
    w.watch(&root.join("svc"));
    let _ = std::fs::read(root.join("svc/catalog-info.yaml")).unwrap();
    write(&root, "svc/other.txt", "x");
    // The write arrives; the read before it produced nothing.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, watch::WatchEvent::Path(root.join("svc/other.txt")));
}

/// The test repository watched with a 10 ms debounce: (its temp dir, the canonical root,
/// the service).
async fn watch_repo_fast() -> (tempfile::TempDir, std::path::PathBuf, CatalogHandle) {
    let tmp = repo();
    let root = std::fs::canonicalize(tmp.path().join("repo")).unwrap();
    let config = CatalogConfig {
        root: Some(root.clone()),
        debounce: Duration::from_millis(10),
        ..CatalogConfig::default()
    };
    let h = Service::start_with(&config, &paths(tmp.path()), Options::default()).await;
    (tmp, root, h)
}

/// Validation runs on the blocking pool, not on the engine's task: on a runtime with one
/// worker, a task ticking every 5 ms keeps ticking while a file with 40,000 bad tags is
/// checked (issue 19: on the engine's task such a file stalled token answers for 15.7 s).
/// Self-calibrated: the longest gap between ticks must be well under the time the same
/// check takes when run directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn validation_runs_off_the_async_workers() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (_tmp, root, h) = watch_repo_fast().await;
    wait_for(&h, "scan", |s| {
        s.state == EngineState::Watching && s.files == 1
    })
    .await;

    let text = super::hostile_tests::bad_tags(80_000);
    let t = std::time::Instant::now();
    let direct = validate::check_text(&text, Path::new("x.yaml"));
    let alone = t.elapsed();
    assert_eq!(direct.findings.last().unwrap().rule, "too-many-findings");
    assert!(alone > std::time::Duration::from_millis(40), "{alone:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let max_gap_us = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (stop, max_gap_us) = (stop.clone(), max_gap_us.clone());
        tokio::spawn(async move {
            let mut last = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let gap = u64::try_from(last.elapsed().as_micros()).unwrap_or(u64::MAX);
                max_gap_us.fetch_max(gap, Ordering::Relaxed);
                last = std::time::Instant::now();
            }
        })
    };
    write(&root, "svc/catalog-info.yaml", &text);
    wait_for(&h, "the big file checked", |s| {
        s.findings.iter().any(|f| f.rule == "too-many-findings")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap();
    let gap = std::time::Duration::from_micros(max_gap_us.load(Ordering::Relaxed));
    assert!(
        gap < alone / 2,
        "the only worker was blocked {gap:?}; the check alone takes {alone:?}"
    );
}

/// A catalog file replaced by a symlink is not a catalog file any more: its report goes,
/// and the link's target is not read (issue 19: the stale report stayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_by_a_symlink_drops_its_report() {
    let (tmp, root, h) = watch_repo_fast().await;
    wait_for(&h, "scan", |s| {
        s.state == EngineState::Watching && s.entities == 1
    })
    .await;
    let outside = tmp.path().join("outside.yaml");
    std::fs::write(&outside, component("secret-elsewhere", "team-x")).unwrap();
    let file = root.join("svc/catalog-info.yaml");
    let tmp_link = root.join("svc/.link");
    std::os::unix::fs::symlink(&outside, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &file).unwrap();
    let s = wait_for(&h, "report dropped", |s| s.files == 0).await;
    assert_eq!(s.entities, 0, "{s:?}");
    // A regular file again is read again.
    std::fs::remove_file(&file).unwrap();
    write(&root, "svc/catalog-info.yaml", &component("back", "team-a"));
    wait_for(&h, "file back", |s| s.files == 1 && s.entities == 1).await;
}
