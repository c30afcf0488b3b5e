//! What a push did to each catalog file, beyond "changed": which entities the file held
//! before (a rename or a kind/namespace change leaves Backstage with none of the new ones,
//! only the old ones, and those lead to the file's location), whether an entity left it
//! (the file must be re-read even if every remaining entity is unchanged), and which files
//! were moved (a deleted file whose entities show up in a file this push added), and which
//! entities left a file for no other file of the push (what Backstage orphans once it reads
//! the file again: the push says so for each).
//!
//! git's own rename detection is not used: a moved file is often edited in the same commit,
//! and what matters to Backstage is where the entities went, not the file's similarity.

use super::git::Repo;
use super::refs::EntityRef;
use super::validate;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One catalog file the push touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileChange {
    /// Relative to the repository root.
    pub(crate) path: PathBuf,
    /// Gone in the new commit.
    pub(crate) deleted: bool,
    /// The valid entities it held in the old commit.
    pub(crate) was: Vec<EntityRef>,
    /// An entity it held before is no longer in it: push even unchanged entities, so the
    /// file is re-read and Backstage drops the missing ones.
    pub(crate) lost_entities: bool,
    /// Added by this push, holding entities of this deleted file.
    pub(crate) moved_from: Option<PathBuf>,
    /// Deleted by this push, its entities now in another file (the move's other half).
    pub(crate) moved_away: bool,
    /// The entities of `was` that neither this file nor any other file the push changed
    /// holds now: Backstage orphans them once it reads this file again, and the push says
    /// so. One that went to another file is not here (that file's push carries it).
    pub(crate) left: Vec<EntityRef>,
}

/// What a push job carries besides its entity, to find the file's location with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hints {
    /// The entities the file held before.
    pub(crate) was: Vec<EntityRef>,
    /// The URL of the file this one was moved from.
    pub(crate) moved_from: Option<String>,
    /// The entities that left the file for no other file ([`FileChange::left`]).
    pub(crate) left: Vec<EntityRef>,
}

async fn refs_at(repo: &Repo, commit: &str, path: &Path) -> Vec<EntityRef> {
    match repo.show(commit, path).await {
        Ok(bytes) => validate::check_bytes(&bytes, path)
            .entities
            .into_iter()
            .map(|e| e.entity_ref)
            .collect(),
        Err(_) => Vec::new(), // not in that commit
    }
}

/// The catalog files among `changed` (`(path, deleted)` between `old` and `new`), with
/// what they held before and the moves among them.
pub(crate) async fn plan(
    repo: &Repo,
    old: &str,
    new: &str,
    changed: Vec<(PathBuf, bool)>,
    is_catalog: impl Fn(&Path) -> bool,
) -> Vec<FileChange> {
    let mut files = Vec::new();
    let mut now = Vec::new();
    for (path, deleted) in changed {
        if !is_catalog(&path) {
            continue;
        }
        let was = refs_at(repo, old, &path).await;
        let new_refs: BTreeSet<String> = if deleted {
            BTreeSet::new()
        } else {
            refs_at(repo, new, &path)
                .await
                .iter()
                .map(EntityRef::key)
                .collect()
        };
        files.push(FileChange {
            lost_entities: !deleted && was.iter().any(|r| !new_refs.contains(&r.key())),
            path,
            deleted,
            was,
            moved_from: None,
            moved_away: false,
            left: Vec::new(),
        });
        now.push(new_refs);
    }
    link_moves(&mut files, &now);
    mark_left(&mut files, &now);
    files
}

/// Sets each file's [`FileChange::left`]: what it held before and no changed file holds
/// now (`now[i]`: the entity keys file `i` holds in the new commit).
fn mark_left(files: &mut [FileChange], now: &[BTreeSet<String>]) {
    for f in files.iter_mut() {
        f.left = f
            .was
            .iter()
            .filter(|r| !now.iter().any(|n| n.contains(&r.key())))
            .cloned()
            .collect();
    }
}

/// Pairs each deleted file with an added file (one that held none of its entities
/// before) that holds one of them now.
fn link_moves(files: &mut [FileChange], now: &[BTreeSet<String>]) {
    for d in 0..files.len() {
        if !files[d].deleted {
            continue;
        }
        let gone: BTreeSet<String> = files[d].was.iter().map(EntityRef::key).collect();
        let target = (0..files.len()).find(|&f| {
            !files[f].deleted
                && files[f].moved_from.is_none()
                && files[f].was.iter().all(|r| !gone.contains(&r.key()))
                && now[f].iter().any(|k| gone.contains(k))
        });
        if let Some(f) = target {
            files[f].moved_from = Some(files[d].path.clone());
            files[d].moved_away = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, deleted: bool, was: &[&str]) -> FileChange {
        FileChange {
            path: PathBuf::from(path),
            deleted,
            was: was
                .iter()
                .map(|n| EntityRef::new("component", "default", n))
                .collect(),
            lost_entities: false,
            moved_from: None,
            moved_away: false,
            left: Vec::new(),
        }
    }

    fn keys(names: &[&str]) -> BTreeSet<String> {
        names
            .iter()
            .map(|n| EntityRef::new("component", "default", n).key())
            .collect()
    }

    #[test]
    fn a_deleted_file_whose_entities_appear_in_a_new_file_is_a_move() {
        let mut files = vec![
            change("a/catalog-info.yaml", true, &["x", "y"]),
            change("b/catalog-info.yaml", false, &[]),
            change("c/catalog-info.yaml", false, &["z"]),
        ];
        link_moves(&mut files, &[keys(&[]), keys(&["x", "y"]), keys(&["z"])]);
        assert_eq!(
            files[1].moved_from.as_deref(),
            Some(Path::new("a/catalog-info.yaml"))
        );
        assert!(files[0].moved_away);
        assert_eq!(files[2].moved_from, None);
    }

    #[test]
    fn entities_left_are_those_no_changed_file_holds_now() {
        // a: x renamed to x2, y moved to b; c emptied of z.
        let mut files = vec![
            change("a/catalog-info.yaml", false, &["x", "y"]),
            change("b/catalog-info.yaml", false, &["w"]),
            change("c/catalog-info.yaml", false, &["z"]),
        ];
        mark_left(&mut files, &[keys(&["x2"]), keys(&["w", "y"]), keys(&[])]);
        let left =
            |f: &FileChange| -> Vec<String> { f.left.iter().map(ToString::to_string).collect() };
        assert_eq!(left(&files[0]), ["component:default/x"]);
        assert!(files[1].left.is_empty());
        assert_eq!(left(&files[2]), ["component:default/z"]);
    }

    #[test]
    fn a_file_that_already_held_the_entity_is_no_move_target() {
        // x was in both a and b (a duplicate); deleting a moves nothing.
        let mut files = vec![
            change("a/catalog-info.yaml", true, &["x"]),
            change("b/catalog-info.yaml", false, &["x"]),
        ];
        link_moves(&mut files, &[keys(&[]), keys(&["x"])]);
        assert_eq!(files[1].moved_from, None);
        assert!(!files[0].moved_away);
    }
}
