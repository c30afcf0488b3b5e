//! Which Backstage location owns a catalog file, asked of Backstage itself.
//!
//! Refreshing an entity only re-reads entities Backstage already has; a file's new content
//! (a renamed, added or removed entity) comes from re-reading the file, which is what
//! processing its Location entity does. That entity is found from Backstage, never guessed
//! from a hash of the URL: an entity Backstage read from the file (its
//! `backstage.io/managed-by-location`) names the file, and that entity's parent in
//! `/ancestry` is the Location entity that read it. Without such an entity, a registered
//! location for the same file is looked up in `GET /locations`.
//!
//! "The same file" allows other spellings of one URL ([`same_file`], GitHub's `blob`, `tree`,
//! raw and API forms among them), so a location someone else registered, or Backstage's
//! discovery emitted, is reused instead of registered twice.

use super::backstage::{Backstage, BackstageError, RemoteEntity};
use super::refs::EntityRef;
use crate::secret::Secret;
use std::collections::{BTreeMap, BTreeSet};

/// The Location entity that owns a file, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// The Location entity (`location:default/generated-...`) to refresh.
    pub(crate) location: EntityRef,
    /// The URL Backstage reads the file by (may be another spelling of ours).
    pub(crate) target: String,
    /// How it was found, for the log (`parent of component:default/x`, `registered`).
    pub(crate) found: String,
}

/// The URL of a `url:` location reference (`backstage.io/managed-by-location`).
pub(crate) fn url_target(location_ref: &str) -> Option<&str> {
    location_ref.strip_prefix("url:")
}

pub(crate) use super::file_url::same_file;

/// Whether Backstage read `e` from the file at `url`.
pub(crate) fn read_from(e: &RemoteEntity, url: &str) -> bool {
    e.location
        .as_deref()
        .and_then(url_target)
        .is_some_and(|t| same_file(t, url))
}

/// The Location entity owning the file at `url`. `known` is what Backstage holds of the
/// file's entities, old and new (absent ones left out). `None`: Backstage does not read
/// this file yet.
pub(crate) async fn owner(
    bs: &Backstage,
    url: &str,
    known: &[RemoteEntity],
    token: Option<&Secret>,
) -> Result<Option<Owner>, BackstageError> {
    for e in known.iter().filter(|e| read_from(e, url)) {
        let parents = bs.parents(&e.entity_ref, token).await?.unwrap_or_default();
        if let Some(location) = parents.into_iter().find(|p| p.kind == "location") {
            return Ok(Some(Owner {
                location,
                target: e
                    .location
                    .as_deref()
                    .and_then(url_target)
                    .unwrap_or(url)
                    .to_string(),
                found: format!("parent of {}", e.entity_ref),
            }));
        }
    }
    let registered = bs.locations(token).await?;
    Ok(registered
        .into_iter()
        .filter(|l| l.kind == "url" && same_file(&l.target, url))
        .find_map(|l| {
            Some(Owner {
                location: l.entity_ref?,
                target: l.target,
                found: "registered location".into(),
            })
        }))
}

/// Takes out of `remote` the entities pushed from here (`known`), gone from the files
/// (`local`), that Backstage holds as orphans: marked [`ORPHAN`](super::backstage::ORPHAN),
/// or with no parent left in `/ancestry` (Backstage marks them only when it re-stitches
/// them, and by default deletes them at its next orphan cleanup, every 30 s). They are
/// not "removed" changes (nothing is left to push) but reported as orphans. A failed
/// lookup leaves the entity in `remote`, shown as removed.
pub(crate) async fn take_orphans<L>(
    bs: &Backstage,
    remote: &mut BTreeMap<String, RemoteEntity>,
    local: &BTreeMap<String, L>,
    known: &BTreeSet<String>,
    token: Option<&Secret>,
) -> Vec<EntityRef> {
    let mut orphans = Vec::new();
    for key in known.iter().filter(|k| !local.contains_key(*k)) {
        let Some(e) = remote.get(key) else { continue };
        let orphan = e.orphan
            || match bs.parents(&e.entity_ref, token).await {
                Ok(parents) => parents.is_some_and(|p| p.is_empty()),
                Err(err) => {
                    tracing::debug!(entity = %e.entity_ref, error = %err, "cannot ask Backstage for the parents");
                    false
                }
            };
        if orphan && let Some(e) = remote.remove(key) {
            orphans.push(e.entity_ref);
        }
    }
    orphans
}

/// Replaces the status' orphan list, logging each orphan once when it first shows.
pub(crate) fn record_orphans(list: &mut Vec<String>, now: Vec<EntityRef>) {
    let now: Vec<String> = now.iter().map(ToString::to_string).collect();
    for o in now.iter().filter(|o| !list.contains(o)) {
        tracing::warn!(
            "catalog: {o} is gone from the files; Backstage holds it as an orphan (no location reads it any more) and deletes it or keeps it marked backstage.io/orphan, as its catalog.orphanStrategy says"
        );
    }
    *list = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_compares_the_managed_by_location() {
        let mut e = RemoteEntity {
            entity_ref: EntityRef::new("component", "default", "a"),
            owner: None,
            location: Some("url:http://h/raw/r/main/./c.yaml".into()),
            orphan: false,
        };
        assert!(read_from(&e, "http://h/raw/r/main/c.yaml"));
        assert!(!read_from(&e, "http://h/raw/r/main/d.yaml"));
        e.location = Some("file:/tmp/c.yaml".into());
        assert!(!read_from(&e, "http://h/raw/r/main/c.yaml"));
        e.location = None;
        assert!(!read_from(&e, "http://h/raw/r/main/c.yaml"));
    }
}
