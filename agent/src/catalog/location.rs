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
//! "The same file" allows other spellings of one URL ([`same_file`]), so a location someone
//! else registered, or Backstage's discovery emitted, is reused instead of registered twice.

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

/// Whether two URLs name the same file: scheme and host case, default ports, `.`/`..`
/// segments and percent-encoding do not count; the query does, the fragment does not.
pub(crate) fn same_file(a: &str, b: &str) -> bool {
    a == b || matches!((normalise(a), normalise(b)), (Some(x), Some(y)) if x == y)
}

/// A URL reduced to what names the file.
#[derive(PartialEq, Eq)]
struct FileUrl {
    scheme: String,
    host: String,
    port: Option<u16>,
    segments: Vec<Vec<u8>>,
    query: Option<String>,
}

fn normalise(s: &str) -> Option<FileUrl> {
    let u = url::Url::parse(s).ok()?;
    Some(FileUrl {
        scheme: u.scheme().to_string(),
        host: u.host_str()?.to_ascii_lowercase(),
        port: u.port_or_known_default(),
        segments: u
            .path_segments()?
            .map(|seg| percent_decode(seg.as_bytes()))
            .collect(),
        query: u.query().map(str::to_string),
    })
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let decoded = match (s[i], s.get(i + 1), s.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

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
    fn other_spellings_of_one_url_are_the_same_file() {
        let u = "http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml";
        for other in [
            u,
            "HTTP://127.0.0.1:9/raw/r/main/svc/catalog%2Dinfo.yaml",
            "http://127.0.0.1:9/raw/r/main/svc/./catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/main/x/../svc/catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml#L1",
        ] {
            assert!(same_file(u, other), "{other}");
        }
        assert!(same_file(
            "https://github.com/a/b/blob/main/c.yaml",
            "https://GITHUB.com:443/a/b/blob/main/c.yaml"
        ));
        for different in [
            "http://127.0.0.1:9/raw/r/main/catalog-info.yaml",
            "http://127.0.0.1:8/raw/r/main/svc/catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/dev/svc/catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml?ref=x",
            "http://127.0.0.1:9/raw/r/main/svc/Catalog-info.yaml",
            "not a url",
        ] {
            assert!(!same_file(u, different), "{different}");
        }
        assert_eq!(percent_decode(b"a%2d%zz%4"), b"a-%zz%4".to_vec());
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
