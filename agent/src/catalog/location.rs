//! Which Backstage location owns a catalog file, asked of Backstage itself.
//!
//! Refreshing an entity only re-reads entities Backstage already has; a file's new content
//! (a renamed, added or removed entity) comes from re-reading the file, which is what
//! processing its Location entity does. That entity is found from Backstage: an entity
//! Backstage read from the file (its `backstage.io/managed-by-location`) names the file, and
//! that entity's parent in `/ancestry` is the Location entity that read it. Without such an
//! entity, a registered location for the same file is looked up in `GET /locations`, and
//! last the Location entity Backstage's discovery or a Location file would have emitted for
//! it is asked for by its name ([`refresh_owner`] says why each step is needed).
//!
//! "The same file" allows other spellings of one URL ([`same_file`], GitHub's `blob`, `tree`,
//! raw and API forms among them), so a location someone else registered, or Backstage's
//! discovery emitted, is reused instead of registered twice.

use super::backstage::{Backstage, BackstageError, RemoteEntity};
use super::file_url;
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

/// What the lookup of a file's Location entity found.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// The Location entity refreshed; `None`: none reads the file (register it).
    pub(crate) owner: Option<Owner>,
    /// Backstage's permission policy refused the refresh of the name Backstage would give
    /// the file's Location entity (step 4): it may exist (discovery emitted it, not
    /// processed yet) or not, and the answer does not say which. The push says so.
    pub(crate) guess_refused: Option<BackstageError>,
}

impl Lookup {
    fn found(owner: Owner) -> Self {
        Self {
            owner: Some(owner),
            guess_refused: None,
        }
    }
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

/// The Location entity owning the file at `url`, found from what Backstage answers.
/// `known` is what Backstage holds of the file's entities, old and new (absent ones left
/// out). Each candidate, in order, is refreshed until Backstage takes one (a refresh of a
/// Location entity it lacks answers 404), and that one is returned; `None`: no Location
/// entity reads this file yet, so it must be registered.
///
/// The candidates:
/// 1. the `/ancestry` parent of an entity Backstage read from the file (the Location entity
///    that read it, whoever registered or emitted it);
/// 2. a registered location (`GET /locations`, the locations table: filled at registration,
///    before Backstage produced the Location entity or read the file) for the same file;
/// 3. a Location entity whose `spec.target` is the file (under our URL or any other GitHub
///    spelling of it [`same_file`] recognises: `blob`, `tree`, `raw`,
///    `raw.githubusercontent.com`, the contents API): Backstage's GitHub discovery emits one per file it finds, an
///    operator's Location file may hold one, and neither registers a location; such an
///    entity with `presence: optional` is in the catalog even while its file is missing;
/// 4. the Location entity Backstage names after the file's URL ([`generated_location`]),
///    as discovery names its Location entities: one whose first read failed (the file was
///    not pushed yet) or that was not processed yet is in no API answer, and only its
///    name leads to it. The name is only tried, never trusted: Backstage's answer to the
///    refresh says whether that entity exists, except that a permission policy's refusal
///    says nothing either way ([`Lookup::guess_refused`], which the push reports).
///
/// Registering instead of refreshing one of these would give the file a second Location
/// entity: Backstage refuses the second one's entities as a conflict (or, for 3, the
/// registration's own Location entity, which has the same name as in 4), so the file stays
/// unread.
///
/// `remembered` is the owner an earlier push of this file found: tried first, because an
/// entity Backstage has just produced from the file may not have its ancestry yet (a
/// Location file's `spec.targets` names the file only relatively, so step 1 is the only way
/// to that Location entity), and a 404 sends the lookup through the steps again.
pub(crate) async fn refresh_owner(
    bs: &Backstage,
    url: &str,
    known: &[RemoteEntity],
    token: Option<&Secret>,
    remembered: Option<&Owner>,
) -> Result<Lookup, BackstageError> {
    if let Some(o) = remembered
        && bs.refresh(&o.location, token).await?
    {
        return Ok(Lookup::found(Owner {
            found: format!("{}, as at an earlier push", o.found),
            ..o.clone()
        }));
    }
    if let Some(owner) = by_parent(bs, url, known, token).await? {
        return Ok(Lookup::found(owner));
    }
    if let Some(owner) = by_registered_location(bs, url, token).await? {
        return Ok(Lookup::found(owner));
    }
    let targets: Vec<String> = std::iter::once(url.to_string())
        .chain(file_url::github_target_spellings(url))
        .collect();
    if let Some(owner) = by_location_entity(bs, url, &targets, token).await? {
        return Ok(Lookup::found(owner));
    }
    // Discovery emits `blob` URLs (a person copies `blob` or `tree`): only those are guessed.
    let spellings: Vec<String> = std::iter::once(url.to_string())
        .chain(file_url::github_spellings(url))
        .collect();
    by_generated_name(bs, spellings, token).await
}

/// Step 1: the Location entity that is the parent of an entity read from the file.
async fn by_parent(
    bs: &Backstage,
    url: &str,
    known: &[RemoteEntity],
    token: Option<&Secret>,
) -> Result<Option<Owner>, BackstageError> {
    for e in known.iter().filter(|e| read_from(e, url)) {
        let parents = bs.parents(&e.entity_ref, token).await?.unwrap_or_default();
        if let Some(location) = parents.into_iter().find(|p| p.kind == "location") {
            let owner = Owner {
                location,
                target: e
                    .location
                    .as_deref()
                    .and_then(url_target)
                    .unwrap_or(url)
                    .to_string(),
                found: format!("parent of {}", e.entity_ref),
            };
            if bs.refresh(&owner.location, token).await? {
                return Ok(Some(owner));
            }
        }
    }
    Ok(None)
}

/// Step 2: the Location entity of a registered location of the file.
async fn by_registered_location(
    bs: &Backstage,
    url: &str,
    token: Option<&Secret>,
) -> Result<Option<Owner>, BackstageError> {
    for l in bs.locations(token).await? {
        if l.kind != "url" || !same_file(&l.target, url) {
            continue;
        }
        // An older Backstage lists no `entityRef`: the name it gives the entity then.
        let location = l
            .entity_ref
            .unwrap_or_else(|| generated_location(&l.kind, &l.target));
        if bs.refresh(&location, token).await? {
            return Ok(Some(Owner {
                location,
                target: l.target,
                found: "registered location".into(),
            }));
        }
    }
    Ok(None)
}

/// Step 3: a Location entity whose target is (a spelling of) the file's URL.
async fn by_location_entity(
    bs: &Backstage,
    url: &str,
    spellings: &[String],
    token: Option<&Secret>,
) -> Result<Option<Owner>, BackstageError> {
    for spelling in spellings {
        for (location, target) in bs.location_entities_targeting(spelling, token).await? {
            if same_file(&target, url) && bs.refresh(&location, token).await? {
                return Ok(Some(Owner {
                    location,
                    target,
                    found: "Location entity naming the file (discovery or a Location file)".into(),
                }));
            }
        }
    }
    Ok(None)
}

/// Step 4: the Location entity Backstage names after (a spelling of) the file's URL.
async fn by_generated_name(
    bs: &Backstage,
    spellings: Vec<String>,
    token: Option<&Secret>,
) -> Result<Lookup, BackstageError> {
    let mut guess_refused = None;
    for target in spellings {
        let location = generated_location("url", &target);
        // A guess: under a policy that lets users refresh only what they own, Backstage
        // refuses a refresh of an entity it does not have just as of one it has, so a
        // refusal here says nothing about the file and must not stop its registration;
        // it is kept, so the push can say that a Location entity may stand in its way.
        match bs.refresh(&location, token).await {
            Ok(true) => {
                return Ok(Lookup::found(Owner {
                    location,
                    target,
                    found: "Location entity Backstage made for the file, not registered here (discovery or a Location file)".into(),
                }));
            }
            Ok(false) => {}
            Err(denied @ BackstageError::Denied { .. }) => {
                guess_refused.get_or_insert(denied);
            }
            Err(other) => return Err(other),
        }
    }
    Ok(Lookup {
        owner: None,
        guess_refused,
    })
}

/// The Location entity Backstage makes for a `kind:target` location, registered or emitted
/// (`locationSpecToMetadataName` of `@backstage/plugin-catalog-node`:
/// `generated-` + hex SHA-1 of `kind:target`).
pub(crate) fn generated_location(kind: &str, target: &str) -> EntityRef {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(format!("{kind}:{target}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    EntityRef::new("location", "default", &format!("generated-{hex}"))
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
    fn generated_location_is_backstages_name() {
        // node -e 'console.log(require("crypto").createHash("sha1")
        //   .update("url:https://github.com/a/b/blob/main/catalog-info.yaml").digest("hex"))'
        assert_eq!(
            generated_location("url", "https://github.com/a/b/blob/main/catalog-info.yaml")
                .to_string(),
            "location:default/generated-b391f89a5f26c51a5e4a7c6473375b8c42a1e55c"
        );
    }

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
