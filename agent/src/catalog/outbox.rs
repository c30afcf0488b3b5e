//! Pending pushes to Backstage, persisted so nothing is lost while Backstage is down or the
//! agent restarts.
//!
//! One job per entity (a newer push of the same entity replaces the older one: Backstage reads
//! the file from the remote anyway, so one refresh brings the newest owner). The file is
//! rewritten atomically (temp file, fsync, rename) after every change. Retry times live in
//! memory only: after a restart every pending job is due at once.

use super::changes::Hints;
use super::refs::EntityRef;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// What to do for an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refresh it, or register its file as a `url` location when Backstage does not know it.
    Sync,
    /// Its file was deleted: unregister the location it came from.
    Unregister,
    /// Its file is left with no entity at all (no document): refresh the Location entity
    /// that reads the file, so Backstage reads it again and orphans what it held. One job
    /// per file (see [`Job::key`]); `entity` is one it held before, for status and logs.
    Refresh,
}

/// A pending push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The entity.
    pub entity: EntityRef,
    /// Its file, relative to the repository root.
    pub file: PathBuf,
    /// The URL Backstage reads the file from.
    pub url: String,
    /// Hash of the entity version this job pushes.
    pub hash: String,
    /// What to do.
    pub action: Action,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last error, shown in status.
    pub error: Option<String>,
    /// A permanent failure (4xx): kept for status, not retried until a new version comes.
    pub failed: bool,
    /// The entities the file held before this version (what Backstage may still hold of it:
    /// after a rename none of the new ones), to find the file's location by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub was: Vec<EntityRef>,
    /// The URL of the file this one was moved from in the same push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// The entities that left the file in this push for no other file: once the push has
    /// Backstage read the file again, it says what became of each (orphaned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<EntityRef>,
}

impl Job {
    /// The outbox key: the entity's, or for a [`Action::Refresh`] the file's URL (an entity
    /// that left this file may be pushed from another file in the same push).
    pub fn key(&self) -> String {
        match self.action {
            Action::Refresh => format!("file:{}", self.url),
            Action::Sync | Action::Unregister => self.entity.key(),
        }
    }

    /// A new job, not tried yet.
    pub fn new(
        entity: EntityRef,
        file: PathBuf,
        url: String,
        hash: String,
        action: Action,
    ) -> Self {
        Self {
            entity,
            file,
            url,
            hash,
            action,
            attempts: 0,
            error: None,
            failed: false,
            was: Vec::new(),
            moved_from: None,
            left: Vec::new(),
        }
    }

    /// This job with what the push knows of its file's past ([`Hints`]): every job queued
    /// for a changed file carries the same, so the push can find the file's location,
    /// follow a move and say what left the file.
    pub(crate) fn with_hints(self, hints: &Hints) -> Self {
        Self {
            was: hints.was.clone(),
            moved_from: hints.moved_from.clone(),
            left: hints.left.clone(),
            ..self
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    version: u32,
    jobs: BTreeMap<String, Job>,
    /// Hash of the last version pushed successfully, per entity key.
    pushed: BTreeMap<String, String>,
    /// The tracked ref's commit when pushes were last queued.
    last_commit: Option<String>,
}

/// Why the outbox file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The outbox file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The outbox of one repository.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    data: Data,
    due: HashMap<String, Instant>,
}

/// A job as shown in status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    /// Entity reference.
    pub entity: String,
    /// File.
    pub file: PathBuf,
    /// `sync`, `unregister` or `refresh`.
    pub action: Action,
    /// `pending` or `failed` (borrowed when the agent builds it, owned when a client reads it).
    pub state: std::borrow::Cow<'static, str>,
    /// Attempts so far.
    pub attempts: u32,
    /// Last error.
    pub error: Option<String>,
}

impl Outbox {
    /// Loads the outbox at `path` (an unreadable or corrupt file is moved aside with a warning
    /// and an empty outbox is used, so a bad file never stops the agent).
    pub fn load(path: &Path) -> Self {
        let data = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Data>(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    let aside = path.with_extension("corrupt");
                    tracing::warn!(path = %path.display(), error = %e, aside = %aside.display(), "catalog outbox is corrupt; starting empty");
                    let _ = std::fs::rename(path, &aside);
                    Data::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Data::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read catalog outbox; starting empty");
                Data::default()
            }
        };
        let now = Instant::now();
        let due = data
            .jobs
            .iter()
            .filter(|(_, j)| !j.failed)
            .map(|(k, _)| (k.clone(), now))
            .collect();
        Self {
            path: path.to_path_buf(),
            data,
            due,
        }
    }

    /// Writes the outbox atomically ([`crate::atomic_file::write`]).
    pub fn save(&self) -> Result<(), OutboxError> {
        let io = |source| OutboxError::Io {
            path: self.path.clone(),
            source,
        };
        let mut data = serde_json::to_vec_pretty(&self.data).map_err(|e| io(e.into()))?;
        data.push(b'\n');
        crate::atomic_file::write(&self.path, &data).map_err(|e| io(e.source))
    }

    /// Queues a job, replacing any job of the same entity. Returns `false` when there is
    /// nothing to do: this version was pushed already, or it failed already for good.
    pub fn enqueue(&mut self, job: Job) -> bool {
        let key = job.key();
        if job.action == Action::Sync && self.data.pushed.get(&key) == Some(&job.hash) {
            if self
                .data
                .jobs
                .get(&key)
                .is_some_and(|j| j.action == Action::Sync)
            {
                self.data.jobs.remove(&key);
                self.due.remove(&key);
            }
            return false;
        }
        if let Some(old) = self.data.jobs.get(&key) {
            if old.failed && old.hash == job.hash && old.action == job.action {
                return false;
            }
            if !old.failed && old.hash == job.hash && old.action == job.action {
                return false; // already pending
            }
        }
        self.data.jobs.insert(key.clone(), job);
        self.due.insert(key, Instant::now());
        true
    }

    /// Keys of jobs due at `now`, oldest entity first.
    pub fn due(&self, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = self
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// When the next job is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The job of an entity key.
    pub fn job(&self, key: &str) -> Option<&Job> {
        self.data.jobs.get(key)
    }

    /// The job for version `hash` was pushed: forget it and remember the version. A newer
    /// job queued meanwhile for the same entity stays.
    pub fn complete(&mut self, key: &str, hash: &str) {
        if self.data.jobs.get(key).is_none_or(|j| j.hash != hash) {
            return;
        }
        self.due.remove(key);
        if let Some(job) = self.data.jobs.remove(key) {
            match job.action {
                Action::Sync => {
                    self.data.pushed.insert(key.to_string(), job.hash);
                }
                Action::Unregister => {
                    self.data.pushed.remove(key);
                }
                // Nothing of the file is left to remember as pushed.
                Action::Refresh => {}
            }
        }
    }

    /// A retryable failure: try again after a capped, jittered backoff.
    pub fn retry(&mut self, key: &str, hash: &str, error: String, now: Instant, cap: Duration) {
        if let Some(job) = self.data.jobs.get_mut(key).filter(|j| j.hash == hash) {
            job.attempts = job.attempts.saturating_add(1);
            job.error = Some(error);
            let delay = backoff(job.attempts, cap, rand::random::<f64>());
            self.due.insert(key.to_string(), now + delay);
        }
    }

    /// Postpones a job without counting an attempt (pushes paused, e.g. token refused).
    pub fn postpone(&mut self, key: &str, until: Instant, error: String) {
        if let Some(job) = self.data.jobs.get_mut(key) {
            job.error = Some(error);
            self.due.insert(key.to_string(), until);
        }
    }

    /// A permanent failure (4xx): visible in status, not retried.
    pub fn fail(&mut self, key: &str, hash: &str, error: String) {
        if let Some(job) = self.data.jobs.get_mut(key).filter(|j| j.hash == hash) {
            self.due.remove(key);
            job.attempts = job.attempts.saturating_add(1);
            job.error = Some(error);
            job.failed = true;
        }
    }

    /// Hash of the last version pushed for an entity key.
    pub fn pushed_hash(&self, key: &str) -> Option<&str> {
        self.data.pushed.get(key).map(String::as_str)
    }

    /// Keys of every entity ever pushed from this repository.
    pub fn pushed_keys(&self) -> impl Iterator<Item = &String> {
        self.data.pushed.keys()
    }

    /// Remembers that a version is what Backstage already has (e.g. registered by someone else).
    pub fn mark_pushed(&mut self, key: &str, hash: &str) {
        self.data.pushed.insert(key.to_string(), hash.to_string());
    }

    /// Drops a failed job of an entity, so an explicit `catalog sync` tries it again.
    pub fn drop_failed(&mut self, key: &str) {
        if self.data.jobs.get(key).is_some_and(|j| j.failed) {
            self.data.jobs.remove(key);
        }
    }

    /// Forgets the pushed version of an entity, so the next enqueue pushes even an unchanged
    /// version (Backstage disagrees with what we pushed).
    pub fn forget_pushed(&mut self, key: &str) {
        self.data.pushed.remove(key);
    }

    /// The commit of the tracked ref last handled.
    pub fn last_commit(&self) -> Option<&str> {
        self.data.last_commit.as_deref()
    }

    /// Records the commit of the tracked ref handled now.
    pub fn set_last_commit(&mut self, commit: &str) {
        self.data.last_commit = Some(commit.to_string());
    }

    /// Jobs for status.
    pub fn status(&self) -> Vec<JobStatus> {
        self.data
            .jobs
            .values()
            .map(|j| JobStatus {
                entity: j.entity.to_string(),
                file: j.file.clone(),
                action: j.action,
                state: if j.failed { "failed" } else { "pending" }.into(),
                attempts: j.attempts,
                error: j.error.clone(),
            })
            .collect()
    }
}

/// Delay before attempt `attempts + 1`: 1 s doubling up to `cap`, equal jitter so many
/// agents do not retry in step. `jitter` is in `[0, 1)`.
pub fn backoff(attempts: u32, cap: Duration, jitter: f64) -> Duration {
    crate::broker::timing::Backoff {
        base: Duration::from_secs(1),
        cap,
    }
    .equal_jitter(attempts, jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, hash: &str) -> Job {
        Job::new(
            EntityRef::new("component", "default", name),
            PathBuf::from("catalog-info.yaml"),
            "http://h/catalog-info.yaml".into(),
            hash.into(),
            Action::Sync,
        )
    }

    #[test]
    fn coalesces_per_entity_and_skips_pushed_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = Outbox::load(&tmp.path().join("outbox.json"));
        assert!(o.enqueue(job("a", "h1")));
        assert!(o.enqueue(job("a", "h2")));
        assert!(!o.enqueue(job("a", "h2")));
        assert!(o.enqueue(job("b", "h1")));
        assert_eq!(o.status().len(), 2);
        assert_eq!(o.job("component:default/a").unwrap().hash, "h2");
        o.complete("component:default/a", "h2");
        assert!(
            !o.enqueue(job("a", "h2")),
            "same version again needs no push"
        );
        assert!(o.enqueue(job("a", "h3")));
        o.complete("component:default/a", "h2");
        assert_eq!(
            o.job("component:default/a").unwrap().hash,
            "h3",
            "a newer job survives completion of an older one"
        );
    }

    #[test]
    fn survives_reload_and_all_pending_are_due() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("outbox.json");
        let mut o = Outbox::load(&p);
        o.enqueue(job("a", "h1"));
        o.enqueue(job("b", "h1"));
        o.fail("component:default/b", "h1", "400 bad".into());
        o.set_last_commit("abc");
        o.save().unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let o2 = Outbox::load(&p);
        assert_eq!(
            o2.due(Instant::now()),
            vec!["component:default/a".to_string()]
        );
        assert_eq!(o2.last_commit(), Some("abc"));
        assert!(o2.job("component:default/b").unwrap().failed);
    }

    #[test]
    fn a_failed_job_is_not_retried_until_a_new_version_or_an_explicit_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = Outbox::load(&tmp.path().join("outbox.json"));
        o.enqueue(job("t", "h1"));
        o.fail("component:default/t", "h1", "400 not allowed".into());
        assert!(o.due(Instant::now()).is_empty());
        assert!(!o.enqueue(job("t", "h1")), "same version stays failed");
        assert_eq!(o.status()[0].state, "failed");
        o.drop_failed("component:default/t");
        assert!(o.enqueue(job("t", "h1")), "catalog sync retries it");
        o.fail("component:default/t", "h1", "400 again".into());
        assert!(o.enqueue(job("t", "h2")), "a new version is tried");
        assert_eq!(o.due(Instant::now()).len(), 1);
    }

    #[test]
    fn a_refresh_job_is_keyed_by_its_file_and_leaves_no_pushed_version() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = Outbox::load(&tmp.path().join("outbox.json"));
        assert!(o.enqueue(job("a", "h1")));
        let mut refresh = job("a", "emptied:c1");
        refresh.action = Action::Refresh;
        assert_eq!(refresh.key(), "file:http://h/catalog-info.yaml");
        assert!(o.enqueue(refresh.clone()), "beside the entity's own job");
        assert!(!o.enqueue(refresh.clone()), "already pending");
        assert_eq!(o.status().len(), 2);
        o.complete(&refresh.key(), "emptied:c1");
        assert!(o.pushed_hash(&refresh.key()).is_none());
        assert_eq!(o.status().len(), 1);
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("outbox.json");
        std::fs::write(&p, "{not json").unwrap();
        let o = Outbox::load(&p);
        assert!(o.status().is_empty());
        assert!(tmp.path().join("outbox.corrupt").exists());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, cap, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(3, cap, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(50, cap, 0.0), Duration::from_secs(15));
        assert!(backoff(50, cap, 0.999) < cap);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_for_the_backoff() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = Outbox::load(&tmp.path().join("outbox.json"));
        o.enqueue(job("a", "h1"));
        let now = Instant::now();
        assert_eq!(o.due(now).len(), 1);
        o.retry(
            "component:default/a",
            "h1",
            "503".into(),
            now,
            Duration::from_secs(8),
        );
        assert!(o.due(now).is_empty());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(
            o.due(Instant::now()).len(),
            1,
            "attempt 1 waits at most 1 s"
        );
        for _ in 0..10 {
            o.retry(
                "component:default/a",
                "h1",
                "503".into(),
                Instant::now(),
                Duration::from_secs(8),
            );
        }
        let wait = o.next_due().unwrap() - Instant::now();
        assert!(
            wait <= Duration::from_secs(8) && wait >= Duration::from_secs(4),
            "{wait:?}"
        );
        assert_eq!(o.job("component:default/a").unwrap().attempts, 11);
    }
}
