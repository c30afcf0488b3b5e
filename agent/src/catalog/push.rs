//! The push worker: drains the outbox into Backstage.
//!
//! Due jobs are pushed per file: Backstage reads a file whole, so a rename, an added or a
//! removed entity only shows once the file is read again, which refreshing the Location
//! entity that reads it does ([`super::location`] finds it from Backstage). A file no
//! location reads is registered as a `url` location (dry run first, so a `catalog.rules`
//! violation is reported instead of silently dropped). A file left with no entity (a
//! `refresh` job) is only refreshed, so Backstage orphans what it read from it, never
//! registered (that would add a location yielding nothing). A moved file's old location is
//! unregistered first when `catalog.unregister_deleted` is on, and reported otherwise.
//! Each entity that left the file (renamed, removed, emptied out) gets a note once the file
//! is read again, saying what Backstage does with it ([`left_notes`]).
//! Unreachable or 5xx: retry with capped backoff. 401/403: report once naming the profile
//! and pause every push until the token changes; but a 403 `NotAllowedError` is Backstage's
//! permission policy refusing this user this action: only that file's jobs fail, naming who,
//! which entity and which permission, and the rest goes on. Other 4xx: the file's jobs fail
//! visibly. A failed job stays in the outbox (shown by status and diff) and is not retried
//! until the file changes.
//!
//! Signed in as a user, the Location entity may be refused: it has no owner, and a policy
//! that lets users refresh only what their groups own (Backstage's documented
//! `isEntityOwner` condition) refuses it to everyone. The file is then pushed by refreshing
//! one of the entities this push changes: Backstage checks the user's ownership of that
//! entity, and its refresh schedules the entity's Location ancestors too, so the file is
//! re-read just the same ([`through_entities`]).

use super::backstage::{Backstage, BackstageError, Registration, RemoteEntity};
use super::location;
use super::outbox::{Action, Job, Outbox};
use super::refs::EntityRef;
use super::token::BackstageTokens;
use super::{Command, Shared};
use crate::secret::Secret;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

/// Everything needed to talk to Backstage: made by the engine (which also queues jobs in
/// the outbox and wakes the worker) and shared with the push worker.
pub(crate) struct SyncCtx {
    pub(crate) backstage: Backstage,
    /// The Location entity each file URL was last pushed through (see
    /// [`location::refresh_owner`]).
    pub(crate) owners: Mutex<std::collections::BTreeMap<String, location::Owner>>,
    pub(crate) tokens: BackstageTokens,
    pub(crate) outbox: Arc<Mutex<Outbox>>,
    pub(crate) wake: Arc<Notify>,
}

/// How often a paused worker looks whether the token changed.
const PAUSE_RECHECK: Duration = Duration::from_secs(5);

pub(crate) struct Worker {
    pub(crate) ctx: Arc<SyncCtx>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) recheck: UnboundedSender<Command>,
    pub(crate) backoff_cap: Duration,
    /// `catalog.unregister_deleted`: a moved file's old location is unregistered.
    pub(crate) unregister_moved: bool,
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
            .unwrap_or("(none configured: set catalog.profile)")
            .to_string()
    }

    /// Sorts a failure; returns whether the rest of this round should wait. `this`: how
    /// many of `rest` belong to the unit that failed. `who`: the token's subject, named when
    /// Backstage's permission policy refuses it.
    async fn failed(
        &self,
        err: BackstageError,
        rest: &[(String, Job)],
        this: usize,
        fingerprint: &str,
        who: Option<&str>,
        paused: &mut Option<String>,
    ) -> Next {
        let msg = match &err {
            BackstageError::Denied { .. } => refusal(who, &err),
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
        for (k, j) in rest.iter().take(this) {
            tracing::error!(entity = %j.entity, file = %j.file.display(), "catalog push failed: {msg}");
            self.with_outbox(|o| o.fail(k, &j.hash, msg.clone()));
        }
        Next::Continue
    }
}

/// The push worker: waits for due jobs, takes a token for the round (unless Backstage
/// refused that very token), and pushes the round unit by unit.
pub(crate) async fn run(w: Worker) {
    let mut paused: Option<String> = None;
    loop {
        let (due, next) = w.due();
        if due.is_empty() {
            w.idle(next).await;
            continue;
        }
        let Some(round) = w.round_token(&due, &mut paused).await else {
            continue;
        };
        if w.push_round(due, &round, &mut paused).await {
            let _ = w.recheck.send(Command::Recheck);
        }
    }
}

/// The token of one push round, with its fingerprint and subject.
struct RoundToken {
    token: Option<Secret>,
    fingerprint: String,
    who: Option<String>,
}

impl Worker {
    /// Waits until woken or until the next job is due.
    async fn idle(&self, next: Option<Instant>) {
        tokio::select! {
            _ = self.ctx.wake.notified() => {}
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }

    /// The token for a round over `due`; `None` (the jobs postponed) when there is none or
    /// it is the one Backstage refused. A new token ends the pause.
    async fn round_token(
        &self,
        due: &[(String, Job)],
        paused: &mut Option<String>,
    ) -> Option<RoundToken> {
        let token = match self.ctx.tokens.token().await {
            Ok(t) => t,
            Err(e) => {
                let why = format!("no token for profile {}: {e}", self.profile());
                tracing::warn!("catalog push waiting: {why}");
                self.postpone_all(due, &why);
                return None;
            }
        };
        let fingerprint = token.as_ref().map(Secret::fingerprint).unwrap_or_default();
        let who = token.as_ref().and_then(subject);
        if paused.as_deref() == Some(fingerprint.as_str()) {
            self.postpone_all(
                due,
                "paused: Backstage refused this token; waiting for a new one",
            );
            return None;
        }
        if paused.take().is_some() {
            tracing::info!(profile = %self.profile(), "token changed; resuming catalog pushes");
            self.shared.update(|s| {
                if let Some(b) = s.backstage.as_mut() {
                    b.paused = None;
                }
            });
        }
        Some(RoundToken {
            token,
            fingerprint,
            who,
        })
    }

    /// Pushes `due` unit by unit until done or a failure stops the round; whether anything
    /// was pushed.
    async fn push_round(
        &self,
        due: Vec<(String, Job)>,
        round: &RoundToken,
        paused: &mut Option<String>,
    ) -> bool {
        let token = round.token.as_ref();
        let who = round.who.as_deref();
        let units = units(due);
        let mut pushed = false;
        for (i, unit) in units.iter().enumerate() {
            let result = match unit[0].1.action {
                Action::Sync | Action::Refresh => {
                    sync_file(&self.ctx, unit, token, who, self.unregister_moved).await
                }
                Action::Unregister => unregister_one(&self.ctx.backstage, &unit[0].1, token)
                    .await
                    .map(Outcome::done),
            };
            match result {
                Ok(outcome) => {
                    self.settle(unit, outcome);
                    pushed = true;
                }
                Err(e) => {
                    let rest: Vec<(String, Job)> = units[i..].concat();
                    let next = self
                        .failed(e, &rest, unit.len(), &round.fingerprint, who, paused)
                        .await;
                    if let Next::StopRound = next {
                        break;
                    }
                }
            }
        }
        pushed
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

/// The jobs of one round as units of work: each unregistration alone (first, so a moved
/// entity is free before its new file is read), then the sync jobs of each file together
/// (a file is read whole: one refresh or registration serves all its entities).
fn units(due: Vec<(String, Job)>) -> Vec<Vec<(String, Job)>> {
    let (unregister, sync): (Vec<_>, Vec<_>) = due
        .into_iter()
        .partition(|(_, j)| j.action == Action::Unregister);
    let mut units: Vec<Vec<(String, Job)>> = unregister.into_iter().map(|j| vec![j]).collect();
    let mut files: Vec<Vec<(String, Job)>> = Vec::new();
    for job in sync {
        match files.iter_mut().find(|f| f[0].1.url == job.1.url) {
            Some(f) => f.push(job),
            None => files.push(vec![job]),
        }
    }
    units.extend(files);
    units
}

/// What pushing one unit did.
struct Outcome {
    /// For the log.
    what: String,
    /// Jobs Backstage refused for good (entity key, why); the others are done.
    refused: Vec<(String, String)>,
    /// What the user should know (moves, entities Backstage reads from elsewhere).
    notes: Vec<String>,
}

impl Outcome {
    fn done(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            refused: Vec::new(),
            notes: Vec::new(),
        }
    }
}

impl Worker {
    /// Records a unit's outcome: jobs done or refused, notes logged and shown.
    fn settle(&self, unit: &[(String, Job)], outcome: Outcome) {
        // Notes first: whoever sees the outbox drained must also see why (a status reader
        // polls for "outbox empty", then reads the notes).
        for n in &outcome.notes {
            tracing::warn!("catalog: {n}");
        }
        self.shared.update(|s| {
            if let Some(b) = s.backstage.as_mut() {
                b.reachable = Some(true);
                b.error = None;
            }
            for n in &outcome.notes {
                s.add_note(n.clone());
            }
        });
        for (key, job) in unit {
            match outcome.refused.iter().find(|(k, _)| k == key) {
                Some((_, why)) => {
                    tracing::error!(entity = %job.entity, file = %job.file.display(), "catalog push failed: {why}");
                    self.with_outbox(|o| o.fail(key, &job.hash, why.clone()));
                }
                None if job.action == Action::Refresh => {
                    tracing::info!(file = %job.file.display(), "catalog push: {}", outcome.what);
                    self.with_outbox(|o| o.complete(key, &job.hash));
                }
                None => {
                    tracing::info!(entity = %job.entity, file = %job.file.display(), "catalog push: {}", outcome.what);
                    self.with_outbox(|o| o.complete(key, &job.hash));
                    self.shared.update(|s| {
                        *s.pushes.entry(job.entity.to_string()).or_insert(0) += 1;
                    });
                }
            }
        }
    }
}

/// Pushes one file: refresh the Location entity that reads it, or register it.
async fn sync_file(
    ctx: &SyncCtx,
    unit: &[(String, Job)],
    token: Option<&Secret>,
    who: Option<&str>,
    unregister_moved: bool,
) -> Result<Outcome, BackstageError> {
    let bs = &ctx.backstage;
    let (url, file) = (&unit[0].1.url, unit[0].1.file.display());
    let known: Vec<RemoteEntity> = bs
        .by_refs(&candidates(unit), token)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let mut notes = Vec::new();
    let moved_from = unit.iter().find_map(|(_, j)| j.moved_from.as_deref());
    if let Some(from) = moved_from {
        notes.extend(moved(bs, from, &unit[0].1, &known, token, unregister_moved).await?);
    }
    notes.extend(read_elsewhere(unit, &known, moved_from));
    let only_emptied = unit.iter().all(|(_, j)| j.action == Action::Refresh);
    let mut guess_refused = None;
    match refresh_owner(ctx, url, &known, token).await {
        Ok(location::Lookup {
            owner: Some(owner), ..
        }) => {
            notes.extend(left_notes(unit, &known));
            if only_emptied {
                // What becomes of each entity is in `left_notes` (an entity that moved to
                // another file is not orphaned); this says only why the file was refreshed.
                notes.push(format!(
                    "{file} has no entities left: refreshed {} so Backstage reads it again",
                    owner.location
                ));
            }
            return Ok(Outcome {
                what: format!(
                    "refreshed {} ({}; reads {})",
                    owner.location, owner.found, owner.target
                ),
                refused: Vec::new(),
                notes,
            });
        }
        Ok(location::Lookup {
            owner: None,
            guess_refused: g,
        }) => guess_refused = g,
        Err(denied @ BackstageError::Denied { .. }) => {
            if let Some(mut outcome) =
                through_entities(bs, unit, url, &known, token, denied, who).await?
            {
                if outcome.refused.is_empty() {
                    notes.extend(left_notes(unit, &known));
                }
                outcome.notes.splice(0..0, notes);
                return Ok(outcome);
            }
        }
        Err(other) => return Err(other),
    }
    if only_emptied {
        // Registering a file without entities would add a location that yields nothing.
        return Ok(Outcome {
            what: "no entities left and no Location entity reads the file: nothing to re-read"
                .into(),
            refused: Vec::new(),
            notes,
        });
    }
    if let Some(denied) = guess_refused {
        notes.push(guess_refused_note(who, &denied, &file.to_string()));
    }
    let mut outcome = register(bs, unit, token).await?;
    outcome.notes.splice(0..0, notes);
    Ok(outcome)
}

/// The note for a refused refresh of the Location entity name Backstage's discovery would
/// give the file ([`location::Lookup::guess_refused`]): the file is registered all the same,
/// but an owner-only policy refuses that name whether or not the entity exists, so a
/// discovery Location not processed yet cannot be told from none. If it exists, Backstage
/// refuses the registration's Location entity (same name) as a conflict and the file is
/// read only when Backstage's own processing loop comes to discovery's entity. Said, so a
/// change that does not show is explained.
fn guess_refused_note(who: Option<&str>, denied: &BackstageError, file: &str) -> String {
    let who = who.map(|w| format!("{w}: ")).unwrap_or_default();
    format!(
        "{who}{denied} (the name Backstage's discovery gives {file}'s Location entity), so the agent cannot tell whether discovery already emitted it; {file} is registered instead, and if that entity exists Backstage refuses the registration as a conflict with it and reads the file only when its own processing loop comes round (allowing users catalog.entity.refresh on Location entities avoids this)"
    )
}

/// Every entity the unit's file has or had, once each: what to ask Backstage about.
fn candidates(unit: &[(String, Job)]) -> Vec<EntityRef> {
    let mut candidates: Vec<EntityRef> = Vec::new();
    for r in unit
        .iter()
        .flat_map(|(_, j)| std::iter::once(&j.entity).chain(&j.was))
    {
        if !candidates.iter().any(|c| c.key() == r.key()) {
            candidates.push(r.clone());
        }
    }
    candidates
}

/// Notes for entities of this file that Backstage reads from another file (not the one it
/// was moved from): it keeps that one, so the push changes nothing for them.
fn read_elsewhere(
    unit: &[(String, Job)],
    known: &[RemoteEntity],
    moved_from: Option<&str>,
) -> Vec<String> {
    let (url, file) = (&unit[0].1.url, unit[0].1.file.display());
    let mut notes = Vec::new();
    for e in known {
        let elsewhere = e.location.as_deref().and_then(location::url_target);
        if let Some(other) = elsewhere.filter(|o| {
            !location::same_file(o, url) && !moved_from.is_some_and(|m| location::same_file(o, m))
        }) && unit
            .iter()
            .any(|(_, j)| j.action == Action::Sync && j.entity.key() == e.entity_ref.key())
        {
            notes.push(format!(
                "{} ({file}): Backstage reads it from {other}, not from this file; it keeps that one until it is removed there",
                e.entity_ref
            ));
        }
    }
    notes
}

/// One note per entity that left the unit's file in this push for no other file
/// ([`Job::left`]), said once the push made Backstage read the file again: what Backstage
/// does with it, from what it held before (`known`). One it read from this file loses its
/// only source: Backstage orphans it, and its `catalog.orphanStrategy` decides the rest
/// (the default, `delete`, deletes it at the next orphan cleanup, every 30 s in Backstage
/// 4.x; `keep` keeps it marked `backstage.io/orphan`). The agent cannot see that setting,
/// so the note names both; the test bed runs the default.
fn left_notes(unit: &[(String, Job)], known: &[RemoteEntity]) -> Vec<String> {
    let (url, file) = (&unit[0].1.url, unit[0].1.file.display());
    let mut said: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    for r in unit.iter().flat_map(|(_, j)| &j.left) {
        if said.contains(&r.key()) {
            continue;
        }
        said.push(r.key());
        let held = known.iter().find(|e| e.entity_ref.key() == r.key());
        notes.push(match held {
            Some(e) if location::read_from(e, url) => format!(
                "{r} left {file}; Backstage orphans it now that it reads the file again (catalog.orphanStrategy: the default, delete, deletes it at the next orphan cleanup, every 30 s; keep keeps it, marked backstage.io/orphan)"
            ),
            Some(e) => match e.location.as_deref() {
                Some(other) => format!(
                    "{r} left {file}; Backstage reads it from {other}, not from this file, so it stays"
                ),
                None => format!(
                    "{r} left {file}; Backstage holds it from no location (already an orphan), so this push changes nothing for it"
                ),
            },
            None => format!("{r} left {file}; Backstage does not hold it: nothing to orphan"),
        });
    }
    notes
}

/// Refreshes the Location entity that reads `url`, trying first the one it was last pushed
/// through; remembers the one found (or forgets it when there is none).
async fn refresh_owner(
    ctx: &SyncCtx,
    url: &str,
    known: &[RemoteEntity],
    token: Option<&Secret>,
) -> Result<location::Lookup, BackstageError> {
    let remembered = ctx.owners.lock().ok().and_then(|o| o.get(url).cloned());
    let found =
        location::refresh_owner(&ctx.backstage, url, known, token, remembered.as_ref()).await;
    if let Ok(mut owners) = ctx.owners.lock() {
        match &found {
            Ok(location::Lookup {
                owner: Some(owner), ..
            }) => {
                owners.insert(url.to_string(), owner.clone());
            }
            Ok(location::Lookup { owner: None, .. }) => {
                owners.remove(url);
            }
            Err(_) => {}
        }
    }
    found
}

/// Backstage's permission policy refused refreshing the file's Location entity (`denied`),
/// which has no owner: push the file through one of its entities instead. Backstage checks
/// `catalog.entity.refresh` against the entity it is asked to refresh (an owner-only
/// policy: does the user own it?), and that refresh schedules the entity's Location
/// ancestors too, so the whole file is re-read as a Location refresh would: one allowed
/// refresh pushes every job of the unit.
///
/// Tried in order until one is allowed: the unit's own entities that Backstage read from
/// this file (what this push changes); only when the unit has none (an added or renamed
/// entity: nothing in Backstage to check ownership of yet), the file's previous entities
/// (`was`) stand for it. A refusal of the unit's own entities is never routed around
/// through another entity of the file. None allowed: every job fails with the first
/// refusal (the unit's own entity, the permission, who). `None`: Backstage lost every
/// entity tried (register the file instead).
async fn through_entities(
    bs: &Backstage,
    unit: &[(String, Job)],
    url: &str,
    known: &[RemoteEntity],
    token: Option<&Secret>,
    denied: BackstageError,
    who: Option<&str>,
) -> Result<Option<Outcome>, BackstageError> {
    let from_file = |r: &EntityRef| {
        known
            .iter()
            .any(|e| e.entity_ref.key() == r.key() && location::read_from(e, url))
    };
    let mut own: Vec<&EntityRef> = Vec::new();
    for r in unit.iter().map(|(_, j)| &j.entity).filter(|r| from_file(r)) {
        if !own.iter().any(|o| o.key() == r.key()) {
            own.push(r);
        }
    }
    let mut previous: Vec<&EntityRef> = Vec::new();
    for r in unit
        .iter()
        .flat_map(|(_, j)| &j.was)
        .filter(|r| from_file(r))
    {
        if !previous.iter().any(|o| o.key() == r.key()) {
            previous.push(r);
        }
    }
    let mut refused: Option<BackstageError> = None;
    let mut gone = 0;
    let mut tried = 0;
    for candidates in [own, previous] {
        for r in candidates {
            tried += 1;
            match bs.refresh(r, token).await {
                Ok(true) => {
                    return Ok(Some(Outcome::done(format!(
                        "refreshed {r} (the file's Location is refused to this token; Backstage re-reads the file through the entity's Location ancestors)"
                    ))));
                }
                Ok(false) => gone += 1,
                Err(d @ BackstageError::Denied { .. }) => {
                    refused.get_or_insert(d);
                }
                Err(other) => return Err(other),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    if tried > 0 && gone == tried {
        return Ok(None);
    }
    let why = refusal(who, &refused.unwrap_or(denied));
    Ok(Some(Outcome {
        what: "refused".into(),
        refused: unit.iter().map(|(k, _)| (k.clone(), why.clone())).collect(),
        notes: Vec::new(),
    }))
}

/// A permission refusal as the outbox keeps it: who was refused, and that it waits for the
/// file to change (a refusal does not go away by itself, so it is not retried).
fn refusal(who: Option<&str>, err: &BackstageError) -> String {
    match who {
        Some(who) => format!("{who}: {err}; not retried until the file changes"),
        None => format!("{err}; not retried until the file changes"),
    }
}

/// Registers the file as a `url` location, after a dry run that must yield each entity
/// (a `catalog.rules` violation is refused visibly instead of dropped silently).
async fn register(
    bs: &Backstage,
    unit: &[(String, Job)],
    token: Option<&Secret>,
) -> Result<Outcome, BackstageError> {
    let url = &unit[0].1.url;
    let yielded = match bs.add_location(url, true, token).await? {
        Registration::AlreadyExists => {
            return Ok(Outcome::done(
                "location already registered; Backstage has not produced its Location entity yet",
            ));
        }
        Registration::Created(refs) => refs,
    };
    let got: Vec<String> = yielded.iter().map(ToString::to_string).collect();
    let syncs = unit.iter().filter(|(_, j)| j.action == Action::Sync);
    let refused: Vec<(String, String)> = syncs
        .clone()
        .filter(|(_, j)| !yielded.iter().any(|r| r.key() == j.entity.key()))
        .map(|(k, j)| {
            (
                k.clone(),
                format!(
                    "dry run of {url} yields [{}] but not {}: Backstage's catalog.rules forbid it (or the pushed file differs); not registered",
                    got.join(", "),
                    j.entity
                ),
            )
        })
        .collect();
    if refused.len() == syncs.count() {
        return Ok(Outcome {
            what: "not registered".into(),
            refused,
            notes: Vec::new(),
        });
    }
    let what = match bs.add_location(url, false, token).await? {
        Registration::Created(_) => "registered",
        Registration::AlreadyExists => "already registered",
    };
    Ok(Outcome {
        what: what.into(),
        refused,
        notes: Vec::new(),
    })
}

/// The file of `job` was moved from `from` in this push. Backstage reads the entities it
/// holds from `from` until that location goes: unregister it (`catalog.unregister_deleted`)
/// or say that it stays.
async fn moved(
    bs: &Backstage,
    from: &str,
    job: &Job,
    known: &[RemoteEntity],
    token: Option<&Secret>,
    unregister: bool,
) -> Result<Option<String>, BackstageError> {
    let held: Vec<&RemoteEntity> = known
        .iter()
        .filter(|e| location::read_from(e, from))
        .collect();
    let Some(first) = held.first() else {
        return Ok(None);
    };
    let names: Vec<String> = held.iter().map(|e| e.entity_ref.to_string()).collect();
    let file = job.file.display();
    if !unregister {
        return Ok(Some(format!(
            "{file} was moved from {from}: that location stays registered (catalog.unregister_deleted is off), so Backstage keeps reading {} from there and not from {file} until it is unregistered",
            names.join(", ")
        )));
    }
    Ok(Some(
        match bs.location_of(&first.entity_ref, token).await? {
            Some(l) if location::same_file(&l.target, from) => {
                bs.delete_location(&l.id, token).await?;
                format!(
                    "{file} was moved from {from}: unregistered that location ({})",
                    names.join(", ")
                )
            }
            Some(l) => format!(
                "{file} was moved from {from}, which Backstage reads through location {} (registered for more than that file): left alone",
                l.target
            ),
            None => format!("{file} was moved from {from}, which is not a registered location"),
        },
    ))
}

/// Unregisters the location the entity came from, if it is this file's URL.
async fn unregister_one(
    bs: &Backstage,
    job: &Job,
    token: Option<&Secret>,
) -> Result<&'static str, BackstageError> {
    match bs.location_of(&job.entity, token).await? {
        Some(l) if location::same_file(&l.target, &job.url) => {
            bs.delete_location(&l.id, token).await?;
            Ok("location unregistered")
        }
        Some(_) => Ok("entity comes from another location; left alone"),
        None => Ok("no location to unregister"),
    }
}
