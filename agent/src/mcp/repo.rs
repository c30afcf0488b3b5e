//! The repository's catalog as the files say it: one scan, the same rules as
//! `stagepass catalog check`, paths relative to the repository root.
//!
//! Every path an MCP client sends is resolved here and must stay inside the repository
//! (lexically, and again followed link by link like the kernel does, a link judged by where
//! it points and not by whether its target exists), so a tool can never be used to probe
//! the rest of the file system: any path out of it gets the same answer, whether it exists
//! there or not.

use crate::catalog::check::duplicate_findings;
use crate::catalog::diff::humanize;
use crate::catalog::discover::{self, Matcher};
use crate::catalog::finding::Finding;
use crate::catalog::refs::{EntityRef, parse_ref};
use crate::catalog::validate::{self, Entity, FileReport};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Longest path or reference a client may send (anything longer is not a real path here).
const MAX_INPUT: usize = 4096;

/// Why an input was refused; each becomes an MCP `invalid_params` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The path leaves the repository (`..`, an absolute path elsewhere, a symlink out).
    #[error("{0:?} is outside the repository")]
    OutsideRepo(String),
    /// Empty, too long, or holding a NUL byte.
    #[error("{0}")]
    Malformed(String),
    /// The reference does not parse.
    #[error("{0}")]
    BadRef(String),
    /// The reference parses but no catalog file of the repository defines it.
    #[error("unknown entity {0}: no catalog file of this repository defines it")]
    UnknownEntity(String),
}

/// One scan of the repository's catalog files.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Repository root, canonical.
    pub root: PathBuf,
    /// Reports per catalog file, keyed by the path relative to the root.
    pub files: BTreeMap<PathBuf, FileReport>,
    /// Every finding, duplicates across files included, ordered by file and line.
    pub findings: Vec<Finding>,
}

/// Where an entity comes from.
#[derive(Debug, Clone, Copy)]
pub struct Located<'a> {
    /// The catalog file, relative to the root.
    pub file: &'a Path,
    /// The entity.
    pub entity: &'a Entity,
}

impl Snapshot {
    /// Scans `root` for the files `matcher` takes (catalog-info.yaml|yml plus the configured
    /// globs, .gitignore respected).
    pub fn scan(root: &Path, matcher: &Matcher) -> Snapshot {
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let walk = discover::walk(&root, &root, None, matcher);
        let mut files = BTreeMap::new();
        for f in walk.files {
            let rel = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
            let report = validate::check_file(&f, &rel);
            files.insert(rel, report);
        }
        let mut findings: Vec<Finding> = files.values().flat_map(|r| r.findings.clone()).collect();
        findings.extend(duplicate_findings(&files));
        findings.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        Snapshot {
            root,
            files,
            findings,
        }
    }

    /// Every valid entity with its file, in file order.
    pub fn entities(&self) -> impl Iterator<Item = Located<'_>> {
        self.files.iter().flat_map(|(file, r)| {
            r.entities.iter().map(move |entity| Located {
                file: file.as_path(),
                entity,
            })
        })
    }

    /// The entities whose owner is one of `ownership_refs` (a Backstage user's `ent`: the
    /// user entity and their groups, as full refs); compared case-insensitively, like
    /// Backstage compares refs.
    pub fn owned_by<'a>(&'a self, ownership_refs: &[String]) -> Vec<Located<'a>> {
        let mine: std::collections::BTreeSet<String> =
            ownership_refs.iter().map(|r| r.to_lowercase()).collect();
        self.entities()
            .filter(|l| {
                l.entity
                    .owner
                    .as_ref()
                    .is_some_and(|o| mine.contains(&o.key()))
            })
            .collect()
    }

    /// The entity `text` names (`[kind:][namespace/]name`, kind defaulting to component).
    pub fn find(&self, text: &str) -> Result<Located<'_>, InputError> {
        check_text(text, "entity")?;
        let r = parse_ref(text.trim(), Some("component"), "default")
            .map_err(|e| InputError::BadRef(e.to_string()))?;
        let key = r.key();
        self.entities()
            .find(|l| l.entity.entity_ref.key() == key)
            .ok_or_else(|| InputError::UnknownEntity(r.to_string()))
    }

    /// Resolves a client path (relative to the root, or absolute inside it) to a path
    /// relative to the root; refuses anything outside the repository.
    pub fn resolve(&self, text: &str) -> Result<PathBuf, InputError> {
        check_text(text, "path")?;
        let given = Path::new(text);
        let rel_input = if given.is_absolute() {
            given
                .strip_prefix(&self.root)
                .map_err(|_| InputError::OutsideRepo(text.to_string()))?
                .to_path_buf()
        } else {
            given.to_path_buf()
        };
        let mut rel = PathBuf::new();
        for c in rel_input.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !rel.pop() {
                        return Err(InputError::OutsideRepo(text.to_string()));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(InputError::OutsideRepo(text.to_string()));
                }
            }
        }
        // A symlink inside the tree may point out of it: follow the path as the kernel
        // would, link by link. Canonicalizing its deepest existing part answered "outside"
        // for a link to `/etc/passwd` and went on for a (dangling) link to a missing file:
        // an oracle for what exists outside the repository.
        // Both the path as given (what a shell would open) and its lexical form (what the
        // tools join to the root): they differ when `..` follows a link.
        if !self.stays_inside(&rel_input) || !self.stays_inside(&rel) {
            return Err(InputError::OutsideRepo(text.to_string()));
        }
        Ok(rel)
    }

    /// Whether `rel` (relative to the root) stays inside the repository at every step when
    /// followed like the kernel does: each symlink read (not followed) and its target put
    /// in its place, relative to the link's directory. A link is judged by where it
    /// points, never by whether its target exists, and the walk is refused the moment it
    /// leaves the root, so nothing outside is ever looked at. A missing entry is no link
    /// and is followed as text.
    fn stays_inside(&self, rel: &Path) -> bool {
        use std::collections::VecDeque;
        /// Links followed before giving up, like the kernel's `ELOOP`.
        const MAX_LINKS: usize = 40;
        let Some(first) = steps(rel) else {
            return false;
        };
        let mut todo: VecDeque<Step> = first.into();
        let mut real = self.root.clone();
        let mut links = 0;
        while let Some(step) = todo.pop_front() {
            let name = match step {
                Step::Up if real == self.root => return false,
                Step::Up => {
                    real.pop();
                    continue;
                }
                Step::Name(name) => name,
            };
            let next = real.join(&name);
            // A missing entry is no link: followed as text.
            let is_link =
                std::fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink());
            if !is_link {
                real = next;
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return false;
            }
            let Ok(target) = std::fs::read_link(&next) else {
                return false;
            };
            // An absolute target is taken when it names a place under the root; anything
            // else is outside whether it exists or not.
            let target = if target.is_absolute() {
                match target.strip_prefix(&self.root) {
                    Ok(under) => {
                        real = self.root.clone();
                        under.to_path_buf()
                    }
                    Err(_) => return false,
                }
            } else {
                target
            };
            let Some(more) = steps(&target) else {
                return false;
            };
            for p in more.into_iter().rev() {
                todo.push_front(p);
            }
        }
        real.starts_with(&self.root)
    }

    /// The entity owning `rel` (a path relative to the root): the first entity with an owner
    /// in the nearest catalog file of its directory or a parent directory.
    pub fn owner_of_path(&self, rel: &Path) -> Option<Located<'_>> {
        let full = self.root.join(rel);
        let mut dir = if full.is_dir() || rel.as_os_str().is_empty() {
            rel.to_path_buf()
        } else {
            rel.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        loop {
            let here = self
                .files
                .iter()
                .filter(|(f, _)| f.parent().unwrap_or(Path::new("")) == dir)
                .flat_map(|(f, r)| {
                    r.entities.iter().map(move |entity| Located {
                        file: f.as_path(),
                        entity,
                    })
                })
                .find(|l| l.entity.owner.is_some());
            if here.is_some() {
                return here;
            }
            if !dir.pop() {
                return None;
            }
        }
    }
}

fn check_text(text: &str, what: &str) -> Result<(), InputError> {
    if text.trim().is_empty() {
        return Err(InputError::Malformed(format!("{what} must not be empty")));
    }
    if text.len() > MAX_INPUT {
        return Err(InputError::Malformed(format!(
            "{what} is longer than {MAX_INPUT} bytes"
        )));
    }
    if text.contains('\0') {
        return Err(InputError::Malformed(format!(
            "{what} must not contain a NUL byte"
        )));
    }
    Ok(())
}

/// One step of a relative path followed by [`Snapshot::stays_inside`].
enum Step {
    /// `..`
    Up,
    /// A directory entry.
    Name(std::ffi::OsString),
}

/// The steps of a relative path (`.` dropped); `None` if it is absolute.
fn steps(p: &Path) -> Option<Vec<Step>> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Some(Step::Name(n.to_os_string()))),
            Component::ParentDir => Some(Some(Step::Up)),
            Component::CurDir => None,
            Component::RootDir | Component::Prefix(_) => Some(None),
        })
        .collect()
}

/// The owner as people write it (`group:team-a` in the default namespace).
pub fn owner_text(r: Option<&EntityRef>) -> Option<String> {
    r.map(humanize)
}

/// The summary of an entity every tool uses: ref, kind, owner, lifecycle, system, file:line.
pub fn summary(l: &Located<'_>) -> serde_json::Value {
    let e = l.entity;
    let spec = &e.json["spec"];
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    serde_json::json!({
        "entity": e.entity_ref.to_string(),
        "kind": e.json["kind"].as_str().unwrap_or(&e.entity_ref.kind),
        "namespace": e.entity_ref.namespace,
        "name": e.entity_ref.name,
        "owner": owner_text(e.owner.as_ref()),
        "type": s(&spec["type"]),
        "lifecycle": s(&spec["lifecycle"]),
        "system": s(&spec["system"]),
        "file": l.file.display().to_string(),
        "line": e.pos.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, owner: &str) -> String {
        format!(
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n  system: shop\n"
        )
    }

    fn repo() -> (tempfile::TempDir, Snapshot) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("svc/src/deep")).unwrap();
        std::fs::create_dir_all(root.join("tools")).unwrap();
        std::fs::write(
            root.join("svc/catalog-info.yaml"),
            component("pay", "team-a"),
        )
        .unwrap();
        std::fs::write(root.join("svc/src/deep/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(root.join("tools/build.sh"), "#!/bin/sh\n").unwrap();
        let snap = Snapshot::scan(
            root,
            &Matcher::configured(&crate::config::CatalogGlobs::default()),
        );
        (tmp, snap)
    }

    #[test]
    fn a_file_resolves_to_the_nearest_entity_and_none_outside_any() {
        let (_t, s) = repo();
        let rel = s.resolve("svc/src/deep/main.rs").unwrap();
        let l = s.owner_of_path(&rel).unwrap();
        assert_eq!(l.entity.entity_ref.to_string(), "component:default/pay");
        assert_eq!(l.file, Path::new("svc/catalog-info.yaml"));
        assert_eq!(summary(&l)["owner"], "group:team-a");
        assert_eq!(summary(&l)["system"], "shop");
        let rel = s.resolve("./tools/build.sh").unwrap();
        assert!(s.owner_of_path(&rel).is_none());
        // A path that does not exist yet still resolves by its directory.
        let rel = s.resolve("svc/new/file.txt").unwrap();
        assert!(s.owner_of_path(&rel).is_some());
    }

    #[test]
    fn owned_entities_are_those_of_the_ownership_refs() {
        let (_t, s) = repo();
        let refs = |v: &[&str]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let mine = s.owned_by(&refs(&["user:default/alice", "group:default/Team-A"]));
        assert_eq!(mine.len(), 1);
        assert_eq!(
            mine[0].entity.entity_ref.to_string(),
            "component:default/pay"
        );
        assert!(s.owned_by(&refs(&["group:default/team-b"])).is_empty());
        assert!(s.owned_by(&[]).is_empty());
    }

    #[test]
    fn paths_outside_the_repository_are_refused() {
        let (t, s) = repo();
        for bad in ["../x", "svc/../../etc/passwd", "/etc/passwd"] {
            assert!(
                matches!(s.resolve(bad), Err(InputError::OutsideRepo(_))),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink("/etc", t.path().join("svc/escape")).unwrap();
        // Links straight to a file outside, existing or not (a dangling link answered as
        // if inside), and a relative one out of the root.
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("svc/exists")).unwrap();
        std::os::unix::fs::symlink("/etc/no-such-file-xyz", t.path().join("svc/missing")).unwrap();
        std::os::unix::fs::symlink("../../no-such-dir/f", t.path().join("svc/up")).unwrap();
        // Inside, but `..` after it is not where the text says.
        std::os::unix::fs::symlink("src/deep", t.path().join("svc/in")).unwrap();
        // Issue 19: the same answer whether the file exists out there or not.
        for p in [
            "svc/escape/passwd",
            "svc/escape/no-such-file",
            "svc/escape/no/such/dir",
            "svc/exists",
            "svc/missing",
            "svc/missing/below",
            "svc/up",
            "svc/escape/../svc",
            "svc/in/../escape/passwd",
            "no-such/../svc/escape/passwd",
        ] {
            assert_eq!(
                s.resolve(p),
                Err(InputError::OutsideRepo(p.to_string())),
                "{p}"
            );
        }
        // Links that stay inside, dangling or not, are inside.
        std::os::unix::fs::symlink("../tools/none", t.path().join("svc/gone")).unwrap();
        let abs = s.root.join("tools");
        std::os::unix::fs::symlink(&abs, t.path().join("svc/abs")).unwrap();
        for p in [
            "svc/in/main.rs",
            "svc/gone",
            "svc/abs/build.sh",
            "svc/in/../x",
        ] {
            assert!(s.resolve(p).is_ok(), "{p}: {:?}", s.resolve(p));
        }
        // A loop of links is refused, not followed forever.
        std::os::unix::fs::symlink("loop2", t.path().join("svc/loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", t.path().join("svc/loop2")).unwrap();
        assert!(s.resolve("svc/loop1").is_err());
        // A missing path inside the repository is still inside.
        assert_eq!(
            s.resolve("svc/new/file").unwrap(),
            Path::new("svc/new/file")
        );
        let inside = s.root.join("svc/src").display().to_string();
        assert_eq!(s.resolve(&inside).unwrap(), Path::new("svc/src"));
        assert!(matches!(s.resolve(""), Err(InputError::Malformed(_))));
        assert!(matches!(s.resolve("a\0b"), Err(InputError::Malformed(_))));
    }

    #[test]
    fn entities_are_found_by_reference_and_unknown_ones_refused() {
        let (_t, s) = repo();
        assert!(s.find("pay").is_ok());
        assert!(s.find("component:default/PAY").is_ok());
        assert!(matches!(
            s.find("component:nope"),
            Err(InputError::UnknownEntity(_))
        ));
        assert!(matches!(s.find("a:/b"), Err(InputError::BadRef(_))));
    }
}
