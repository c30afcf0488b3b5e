//! The ownership diff: what the repository says against what Backstage holds.
//!
//! Owners are compared as full, normalised references (an owner `team-a` in namespace
//! `default` is `group:default/team-a`), so `team-a` and `group:team-a` are no change.

use super::backstage::RemoteEntity;
use super::refs::EntityRef;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One difference between the files and Backstage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// In the files, not (yet) in Backstage.
    Added {
        /// Entity reference.
        entity: String,
        /// Its owner in the files.
        owner: Option<String>,
    },
    /// Synced from this repository before, gone from the files, still in Backstage.
    Removed {
        /// Entity reference.
        entity: String,
        /// Its owner in Backstage.
        owner: Option<String>,
    },
    /// The owner in the files differs from Backstage's.
    OwnerChanged {
        /// Entity reference.
        entity: String,
        /// Backstage's owner.
        from: Option<String>,
        /// The files' owner.
        to: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = |x: &Option<String>| x.clone().unwrap_or_else(|| "(no owner)".into());
        match self {
            Change::Added { entity, owner } => write!(f, "{entity}: added (owner {})", o(owner)),
            Change::Removed { entity, owner } => {
                write!(f, "{entity}: removed (owner {})", o(owner))
            }
            Change::OwnerChanged { entity, from, to } => {
                write!(f, "{entity}: {} -> {}", o(from), o(to))
            }
        }
    }
}

/// `group:team-a` for the default namespace, `group:ops/team-a` otherwise (Backstage's
/// humanised form, as people write owners).
pub fn humanize(r: &EntityRef) -> String {
    if r.namespace == "default" {
        format!("{}:{}", r.kind, r.name)
    } else {
        r.to_string()
    }
}

/// Computes the diff. `local` and `remote` are keyed by [`EntityRef::key`]; `known` holds the
/// keys synced from this repository before (the only ones that can be "removed").
pub fn owner_diff(
    local: &BTreeMap<String, (EntityRef, Option<EntityRef>)>,
    remote: &BTreeMap<String, RemoteEntity>,
    known: &BTreeSet<String>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (key, (r, owner)) in local {
        match remote.get(key) {
            None => out.push(Change::Added {
                entity: r.to_string(),
                owner: owner.as_ref().map(humanize),
            }),
            Some(rem) => {
                let a = rem.owner.as_ref().map(EntityRef::key);
                let b = owner.as_ref().map(EntityRef::key);
                if a != b {
                    out.push(Change::OwnerChanged {
                        entity: r.to_string(),
                        from: rem.owner.as_ref().map(humanize),
                        to: owner.as_ref().map(humanize),
                    });
                }
            }
        }
    }
    for key in known {
        if local.contains_key(key) {
            continue;
        }
        if let Some(rem) = remote.get(key) {
            out.push(Change::Removed {
                entity: rem.entity_ref.to_string(),
                owner: rem.owner.as_ref().map(humanize),
            });
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> EntityRef {
        super::super::refs::parse_ref(s, Some("group"), "default").unwrap()
    }

    #[test]
    fn owner_change_added_and_removed() {
        let mut local = BTreeMap::new();
        let pay = r("component:payments");
        local.insert(pay.key(), (pay.clone(), Some(r("team-b"))));
        let new = r("component:new");
        local.insert(new.key(), (new.clone(), Some(r("team-a"))));
        let same = r("component:same");
        local.insert(same.key(), (same.clone(), Some(r("group:default/Team-C"))));
        let gone = r("component:gone");
        let mut remote = BTreeMap::new();
        remote.insert(
            pay.key(),
            RemoteEntity {
                entity_ref: pay.clone(),
                owner: Some(r("team-a")),
                location: None,
                orphan: false,
            },
        );
        remote.insert(
            same.key(),
            RemoteEntity {
                entity_ref: same.clone(),
                owner: Some(r("team-c")),
                location: None,
                orphan: false,
            },
        );
        remote.insert(
            gone.key(),
            RemoteEntity {
                entity_ref: gone.clone(),
                owner: Some(r("user:ops/jane")),
                location: None,
                orphan: false,
            },
        );
        let known: BTreeSet<String> = [gone.key(), pay.key()].into_iter().collect();
        let d = owner_diff(&local, &remote, &known);
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "component:default/new: added (owner group:team-a)",
                "component:default/gone: removed (owner user:ops/jane)",
                "component:default/payments: group:team-a -> group:team-b",
            ]
        );
    }

    #[test]
    fn unknown_remote_entities_are_not_removed() {
        let remote: BTreeMap<String, RemoteEntity> = [(
            "component:default/x".to_string(),
            RemoteEntity {
                entity_ref: r("component:x"),
                owner: None,
                location: None,
                orphan: false,
            },
        )]
        .into_iter()
        .collect();
        assert!(owner_diff(&BTreeMap::new(), &remote, &BTreeSet::new()).is_empty());
    }
}
