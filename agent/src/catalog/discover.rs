//! Finding catalog files: `catalog-info.yaml|yml` anywhere plus configured globs.
//!
//! The walk respects `.gitignore` (and `.ignore`, `.git/info/exclude`) through the `ignore`
//! crate, never enters `.git`, `node_modules` or `target`, and never follows symlinks (so a
//! symlink loop cannot trap it). The directories it visits are exactly the ones the watcher
//! watches, so ignored trees cost neither time nor inotify watches.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::{Component, Path, PathBuf};

/// Directory names that are never walked or watched, whatever the ignore files say.
pub const NEVER_WALKED: [&str; 3] = [".git", "node_modules", "target"];

/// File names that are always catalog files.
pub const CATALOG_NAMES: [&str; 2] = ["catalog-info.yaml", "catalog-info.yml"];

/// A bad glob in `[catalog].globs`.
#[derive(Debug, thiserror::Error)]
#[error("catalog.globs: {glob:?} is not a valid glob: {message}")]
pub struct GlobError {
    /// The glob as configured.
    pub glob: String,
    /// Why it is invalid.
    pub message: String,
}

/// Decides which paths are catalog files.
#[derive(Debug, Clone)]
pub struct Matcher {
    globs: GlobSet,
}

impl Matcher {
    /// Builds a matcher from globs not checked yet (relative to the repository root); the
    /// config's are compiled at load, see [`Matcher::configured`].
    pub fn new(globs: &[String]) -> Result<Self, GlobError> {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            let glob = Glob::new(g).map_err(|e| GlobError {
                glob: g.clone(),
                message: e.kind().to_string(),
            })?;
            b.add(glob);
        }
        let globs = b.build().map_err(|e| GlobError {
            glob: globs.join(", "),
            message: e.to_string(),
        })?;
        Ok(Self { globs })
    }

    /// A matcher for the configured globs, compiled when the config was read.
    pub fn configured(globs: &crate::config::CatalogGlobs) -> Self {
        Self {
            globs: globs.set().clone(),
        }
    }

    /// Whether `rel` (relative to the root) is a catalog file by name or glob, outside the
    /// never-walked directories.
    pub fn is_catalog(&self, rel: &Path) -> bool {
        if is_never_walked(rel) {
            return false;
        }
        let by_name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| CATALOG_NAMES.contains(&n));
        by_name || self.globs.is_match(rel)
    }
}

/// Whether any component of `rel` is `.git`, `node_modules` or `target`.
pub fn is_never_walked(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(n) => n.to_str().is_some_and(|n| NEVER_WALKED.contains(&n)),
        _ => false,
    })
}

/// What a walk found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Catalog files, absolute.
    pub files: Vec<PathBuf>,
    /// Directories visited (to be watched), absolute.
    pub dirs: Vec<PathBuf>,
    /// Files looked at in total (for the scan report).
    pub entries: usize,
}

/// Walks `start` (inside `root`), depth-limited when `max_depth` is given. Ignore files of
/// the parents of `start` apply too, so a sub-walk after an event sees the same rules.
pub fn walk(root: &Path, start: &Path, max_depth: Option<usize>, matcher: &Matcher) -> Walk {
    let mut out = Walk::default();
    let mut builder = ignore::WalkBuilder::new(start);
    builder
        .hidden(false)
        .parents(true)
        .require_git(false)
        .follow_links(false)
        .max_depth(max_depth)
        .filter_entry(|e| {
            !(e.file_type().is_some_and(|t| t.is_dir())
                && e.file_name()
                    .to_str()
                    .is_some_and(|n| NEVER_WALKED.contains(&n)))
        });
    for entry in builder.build() {
        let Ok(entry) = entry else { continue };
        let Some(ft) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if ft.is_dir() {
            out.dirs.push(path.to_path_buf());
        } else if ft.is_file() {
            out.entries += 1;
            let rel = path.strip_prefix(root).unwrap_or(path);
            if matcher.is_catalog(rel) {
                out.files.push(path.to_path_buf());
            }
        }
    }
    out.files.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "x: 1\n").unwrap();
    }

    #[test]
    fn finds_catalog_files_and_respects_ignores() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for f in [
            "catalog-info.yaml",
            "svc/a/catalog-info.yml",
            "node_modules/pkg/catalog-info.yaml",
            ".git/catalog-info.yaml",
            "target/catalog-info.yaml",
            "build/catalog-info.yaml",
            "apis/payments.yaml",
            "apis/other.json",
            ".github/catalog-info.yaml",
        ] {
            touch(root, f);
        }
        std::fs::write(root.join(".gitignore"), "build/\n").unwrap();
        std::os::unix::fs::symlink(root, root.join("svc/loop")).unwrap();
        let m = Matcher::new(&["apis/*.yaml".into()]).unwrap();
        let w = walk(root, root, None, &m);
        let rel: Vec<_> = w
            .files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            rel,
            vec![
                ".github/catalog-info.yaml",
                "apis/payments.yaml",
                "catalog-info.yaml",
                "svc/a/catalog-info.yml"
            ]
        );
        for d in &w.dirs {
            let r = d.strip_prefix(root).unwrap();
            assert!(!is_never_walked(r), "{r:?}");
            assert!(!r.starts_with("build"), "{r:?}");
            assert!(!r.starts_with("svc/loop"), "{r:?}");
        }
    }

    #[test]
    fn bad_glob_is_named() {
        let e = Matcher::new(&["a/[".into()]).unwrap_err();
        assert!(e.to_string().contains("a/["), "{e}");
    }

    #[test]
    fn never_walked_components() {
        let m = Matcher::new(&["**/*.yaml".into()]).unwrap();
        assert!(!m.is_catalog(Path::new("x/node_modules/y/catalog-info.yaml")));
        assert!(!m.is_catalog(Path::new(".git/a.yaml")));
        assert!(m.is_catalog(Path::new("x/y.yaml")));
    }
}
