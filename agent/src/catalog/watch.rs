//! Watching the directories the scan visited, one non-recursive watch each.
//!
//! A recursive inotify watch would also cover `node_modules` and ignored build trees, which
//! can exhaust `fs.inotify.max_user_watches` on a big repository. Watching exactly the walked
//! directories keeps ignored trees out; new directories are added as they appear. When the
//! kernel refuses more watches, the remaining directories are polled instead, with one warning
//! that names the sysctl to raise.

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// What the watchers report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Something changed at this path (created, written, removed, renamed from or to).
    Path(PathBuf),
    /// The kernel dropped events (queue overflow): everything must be rescanned.
    Rescan,
}

/// How a directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Inotify,
    Poll,
}

/// The watches over a repository's non-ignored directories.
pub struct DirWatcher {
    inotify: Option<RecommendedWatcher>,
    poll: Option<PollWatcher>,
    tx: UnboundedSender<WatchEvent>,
    watched: BTreeMap<PathBuf, Mode>,
    inotify_limit: Option<usize>,
    poll_interval: Duration,
    warned: bool,
}

/// The sysctl that bounds inotify watches, named in the fallback warning.
pub const INOTIFY_SYSCTL: &str = "fs.inotify.max_user_watches";

fn handler(tx: UnboundedSender<WatchEvent>) -> impl notify::EventHandler {
    move |res: notify::Result<notify::Event>| match res {
        // Opening or reading a file is not a change. inotify reports opens, and our own
        // reads (validation, `git rev-parse`) would otherwise feed back into endless rechecks.
        Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) && !ev.need_rescan() => {}
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.send(WatchEvent::Rescan);
            }
            for p in ev.paths {
                let _ = tx.send(WatchEvent::Path(p));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error; rescanning");
            let _ = tx.send(WatchEvent::Rescan);
        }
    }
}

impl DirWatcher {
    /// A watcher sending events to `tx`. `inotify_limit` pretends the kernel refuses watches
    /// beyond that many (to exercise the polling fallback without root).
    pub fn new(
        tx: UnboundedSender<WatchEvent>,
        inotify_limit: Option<usize>,
        poll_interval: Duration,
    ) -> Self {
        let inotify = match RecommendedWatcher::new(handler(tx.clone()), notify::Config::default())
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; polling catalog directories");
                None
            }
        };
        Self {
            inotify,
            poll: None,
            tx,
            watched: BTreeMap::new(),
            inotify_limit,
            poll_interval,
            warned: false,
        }
    }

    /// Whether `dir` is watched.
    pub fn is_watched(&self, dir: &Path) -> bool {
        self.watched.contains_key(dir)
    }

    /// `(inotify watches, polled directories)`.
    pub fn counts(&self) -> (usize, usize) {
        let inotify = self
            .watched
            .values()
            .filter(|m| **m == Mode::Inotify)
            .count();
        (inotify, self.watched.len() - inotify)
    }

    /// Watches `dir` (non-recursively); falls back to polling when inotify is exhausted.
    pub fn watch(&mut self, dir: &Path) {
        if self.watched.contains_key(dir) {
            return;
        }
        let over_limit = self.inotify_limit.is_some_and(|l| self.counts().0 >= l);
        if let (Some(w), false) = (self.inotify.as_mut(), over_limit) {
            match w.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.to_path_buf(), Mode::Inotify);
                    return;
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {}
                Err(e) if is_enospc(&e) => {}
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory");
                    return;
                }
            }
        }
        if !self.warned && self.inotify.is_some() {
            self.warned = true;
            tracing::warn!(
                dir = %dir.display(),
                "inotify watches exhausted; polling this and further directories every {:?}. Raise the limit with: sysctl -w {INOTIFY_SYSCTL}=524288",
                self.poll_interval
            );
        }
        if self.poll.is_none() {
            let cfg = notify::Config::default().with_poll_interval(self.poll_interval);
            match PollWatcher::new(handler(self.tx.clone()), cfg) {
                Ok(p) => self.poll = Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the polling watcher");
                    return;
                }
            }
        }
        if let Some(p) = self.poll.as_mut()
            && p.watch(dir, RecursiveMode::NonRecursive).is_ok()
        {
            self.watched.insert(dir.to_path_buf(), Mode::Poll);
        }
    }

    /// Whether the polling fallback is in use (for status).
    pub fn polling(&self) -> bool {
        self.warned
    }

    /// Drops the watches of `dir` and everything under it (it was removed or moved away).
    pub fn unwatch_under(&mut self, dir: &Path) {
        let gone: Vec<(PathBuf, Mode)> = self
            .watched
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, m)| (p.clone(), *m))
            .collect();
        for (p, mode) in gone {
            let _ = match mode {
                Mode::Inotify => self.inotify.as_mut().map(|w| w.unwatch(&p)),
                Mode::Poll => self.poll.as_mut().map(|w| w.unwatch(&p)),
            };
            self.watched.remove(&p);
        }
    }
}

fn is_enospc(e: &notify::Error) -> bool {
    matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC))
}

/// Watches the git dir for movement of the tracked remote-tracking ref: the ref files under
/// `refs/` (recursively: a small tree) and `packed-refs` in the common dir. `refused`
/// pretends the kernel has no watch left (the test hook behind `inotify_limit: Some(0)`).
pub fn watch_git_dir(
    common_dir: &Path,
    tx: UnboundedSender<WatchEvent>,
    refused: bool,
) -> notify::Result<RecommendedWatcher> {
    if refused {
        return Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
    }
    let mut w = RecommendedWatcher::new(handler(tx), notify::Config::default())?;
    w.watch(common_dir, RecursiveMode::NonRecursive)?;
    let refs = common_dir.join("refs");
    if refs.is_dir() {
        w.watch(&refs, RecursiveMode::Recursive)?;
    }
    Ok(w)
}
