//! The push worker: drains the outbox into Backstage.
//!
//! For each due entity: refresh it when Backstage knows it, else register its file as a `url`
//! location (dry run first, so a `catalog.rules` violation is reported instead of silently
//! dropped). Unreachable or 5xx: retry with capped backoff. 401/403: report once naming the
//! profile and pause every push until the token changes; but a 403 `NotAllowedError` is
//! Backstage's permission policy refusing this user this entity: only that job fails, naming
//! who, which entity and which permission, and the rest goes on. Other 4xx: the job fails
//! visibly. A failed job stays in the outbox (shown by status and diff) and is not retried
//! until the file changes.

use super::backstage::{Backstage, BackstageError, Registration};
use super::outbox::{Action, Job};
use super::service::SyncCtx;
use super::{Command, Shared};
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

/// How often a paused worker looks whether the token changed.
const PAUSE_RECHECK: Duration = Duration::from_secs(5);

pub(crate) struct Worker {
    pub(crate) ctx: Arc<SyncCtx>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) recheck: UnboundedSender<Command>,
    pub(crate) backoff_cap: Duration,
}

enum Next {
    Continue,
    StopRound,
}

impl Worker {
    fn due(&self) -> (Vec<(String, Job)>, Option<Instant>) {
        let Ok(o) = self.ctx.outbox.lock() else {
            return (Vec::new(), None);
        };
        let jobs = o
            .due(Instant::now())
            .into_iter()
            .filter_map(|k| o.job(&k).cloned().map(|j| (k, j)))
            .collect();
        (jobs, o.next_due())
    }

    fn with_outbox(&self, f: impl FnOnce(&mut super::outbox::Outbox)) {
        if let Ok(mut o) = self.ctx.outbox.lock() {
            f(&mut o);
            if let Err(e) = o.save() {
                tracing::warn!(error = %e, "cannot save the catalog outbox");
            }
            let jobs = o.status();
            self.shared.update(|s| s.outbox = jobs);
        }
    }

    fn postpone_all(&self, jobs: &[(String, Job)], why: &str) {
        let until = Instant::now() + PAUSE_RECHECK;
        self.with_outbox(|o| {
            for (k, _) in jobs {
                o.postpone(k, until, why.to_string());
            }
        });
    }

    fn profile(&self) -> String {
        self.ctx
            .tokens
            .profile()
            .unwrap_or_else(|| "(none configured: set catalog.profile)".into())
    }

    /// Sorts a failure; returns whether the rest of this round should wait. `who`: the
    /// token's subject, named when Backstage's permission policy refuses it.
    async fn failed(
        &self,
        err: BackstageError,
        rest: &[(String, Job)],
        fingerprint: &str,
        who: Option<&str>,
        paused: &mut Option<String>,
    ) -> Next {
        let msg = match (&err, who) {
            (BackstageError::Denied { .. }, Some(who)) => {
                format!("{who}: {err}; not retried until the file changes")
            }
            (BackstageError::Denied { .. }, None) => {
                format!("{err}; not retried until the file changes")
            }
            _ => err.to_string(),
        };
        if err.is_retryable() {
            let now = Instant::now();
            self.with_outbox(|o| {
                for (k, j) in rest {
                    o.retry(k, &j.hash, msg.clone(), now, self.backoff_cap);
                }
            });
            self.shared.update(|s| {
                if let Some(b) = s.backstage.as_mut() {
                    b.reachable = Some(matches!(err, BackstageError::Server { .. }));
                    b.error = Some(msg.clone());
                }
            });
            tracing::warn!(pending = rest.len(), "catalog push postponed: {msg}");
            return Next::StopRound;
        }
        if let BackstageError::Auth { .. } = err {
            let profile = self.profile();
            let why = format!(
                "Backstage refused the token of profile {profile} ({msg}); pushes are paused until its token changes (check the profile's audience, or run `stagepass login {profile}`)"
            );
            tracing::error!("{why}");
            self.shared.update(|s| {
                if let Some(b) = s.backstage.as_mut() {
                    b.paused = Some(why.clone());
                }
            });
            *paused = Some(fingerprint.to_string());
            self.ctx.tokens.refused(fingerprint).await;
            self.postpone_all(rest, &why);
            return Next::StopRound;
        }
        if let Some((k, j)) = rest.first() {
            tracing::error!(entity = %j.entity, file = %j.file.display(), "catalog push failed: {msg}");
            self.with_outbox(|o| o.fail(k, &j.hash, msg.clone()));
        }
        Next::Continue
    }
}

pub(crate) async fn run(w: Worker) {
    let mut paused: Option<String> = None;
    loop {
        let (due, next) = w.due();
        if due.is_empty() {
            tokio::select! {
                _ = w.ctx.wake.notified() => {}
                _ = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            continue;
        }
        let token = match w.ctx.tokens.token().await {
            Ok(t) => t,
            Err(e) => {
                let why = format!("no token for profile {}: {e}", w.profile());
                tracing::warn!("catalog push waiting: {why}");
                w.postpone_all(&due, &why);
                continue;
            }
        };
        let fingerprint = token.as_ref().map(Secret::fingerprint).unwrap_or_default();
        let who = token.as_ref().and_then(subject);
        if paused.as_deref() == Some(fingerprint.as_str()) {
            w.postpone_all(
                &due,
                "paused: Backstage refused this token; waiting for a new one",
            );
            continue;
        }
        if paused.take().is_some() {
            tracing::info!(profile = %w.profile(), "token changed; resuming catalog pushes");
            w.shared.update(|s| {
                if let Some(b) = s.backstage.as_mut() {
                    b.paused = None;
                }
            });
        }
        let refs: Vec<_> = due.iter().map(|(_, j)| j.entity.clone()).collect();
        let exists: HashMap<String, bool> =
            match w.ctx.backstage.by_refs(&refs, token.as_ref()).await {
                Ok(items) => refs
                    .iter()
                    .zip(items)
                    .map(|(r, i)| (r.key(), i.is_some()))
                    .collect(),
                Err(e) => {
                    let _ = w
                        .failed(e, &due, &fingerprint, who.as_deref(), &mut paused)
                        .await;
                    continue;
                }
            };
        let mut pushed = false;
        for (i, (key, job)) in due.iter().enumerate() {
            let known = exists.get(key).copied().unwrap_or(false);
            let result = match job.action {
                Action::Sync => sync_one(&w.ctx.backstage, job, known, token.as_ref()).await,
                Action::Unregister => unregister_one(&w.ctx.backstage, job, token.as_ref()).await,
            };
            match result {
                Ok(what) => {
                    tracing::info!(entity = %job.entity, file = %job.file.display(), "catalog push: {what}");
                    w.with_outbox(|o| o.complete(key, &job.hash));
                    w.shared.update(|s| {
                        *s.pushes.entry(job.entity.to_string()).or_insert(0) += 1;
                        if let Some(b) = s.backstage.as_mut() {
                            b.reachable = Some(true);
                            b.error = None;
                        }
                    });
                    pushed = true;
                }
                Err(e) => {
                    let next = w
                        .failed(e, &due[i..], &fingerprint, who.as_deref(), &mut paused)
                        .await;
                    if let Next::StopRound = next {
                        break;
                    }
                }
            }
        }
        if pushed {
            let _ = w.recheck.send(Command::Recheck);
        }
    }
}

/// Who a token speaks for (its `sub`: a Backstage user token's is the user entity ref),
/// read, not verified, for messages only.
fn subject(token: &Secret) -> Option<String> {
    crate::broker::jwt::claims(token.expose())?
        .get("sub")?
        .as_str()
        .map(str::to_string)
}

/// Refresh, or register the file when Backstage does not know the entity.
async fn sync_one(
    bs: &Backstage,
    job: &Job,
    known: bool,
    token: Option<&Secret>,
) -> Result<&'static str, BackstageError> {
    if known && bs.refresh(&job.entity, token).await? {
        return Ok("refreshed");
    }
    match bs.add_location(&job.url, true, token).await? {
        Registration::AlreadyExists => {
            return Ok(if bs.refresh(&job.entity, token).await? {
                "location already registered; refreshed"
            } else {
                "location already registered; Backstage has not produced the entity yet"
            });
        }
        Registration::Created(refs) => {
            if !refs.iter().any(|r| r.key() == job.entity.key()) {
                let got: Vec<String> = refs.iter().map(ToString::to_string).collect();
                return Err(BackstageError::DryRun(format!(
                    "dry run of {} yields [{}] but not {}: Backstage's catalog.rules forbid it (or the pushed file differs); not registered",
                    job.url,
                    got.join(", "),
                    job.entity
                )));
            }
        }
    }
    Ok(match bs.add_location(&job.url, false, token).await? {
        Registration::Created(_) => "registered",
        Registration::AlreadyExists => "already registered",
    })
}

/// Unregisters the location the entity came from, if it is this file's URL.
async fn unregister_one(
    bs: &Backstage,
    job: &Job,
    token: Option<&Secret>,
) -> Result<&'static str, BackstageError> {
    match bs.location_of(&job.entity, token).await? {
        Some((id, target)) if target == job.url => {
            bs.delete_location(&id, token).await?;
            Ok("location unregistered")
        }
        Some(_) => Ok("entity comes from another location; left alone"),
        None => Ok("no location to unregister"),
    }
}
