//! `stagepass catalog check`: local validation of a file or a tree, without an agent or a
//! Backstage, for CI and pre-commit hooks.

use super::discover::{self, Matcher};
use super::finding::Finding;
use super::validate::{self, FileReport};
use crate::config::CatalogGlobs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a check could not run at all (as opposed to findings in files).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The path does not exist or cannot be read.
    #[error("{path}: {source}")]
    Path {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The result of a check.
#[derive(Debug, Default)]
pub struct CheckOutcome {
    /// Files checked, with their reports, by display name.
    pub files: BTreeMap<PathBuf, FileReport>,
    /// All findings, including duplicates across files, in file order.
    pub findings: Vec<Finding>,
}

impl CheckOutcome {
    /// Number of valid entities.
    pub fn entities(&self) -> usize {
        self.files.values().map(|r| r.entities.len()).sum()
    }
}

/// Checks a file (whatever its name) or every catalog file under a directory.
pub fn check_path(path: &Path, globs: &CatalogGlobs) -> Result<CheckOutcome, CheckError> {
    let meta = std::fs::metadata(path).map_err(|source| CheckError::Path {
        path: path.to_path_buf(),
        source,
    })?;
    let mut files = BTreeMap::new();
    if let Some(repo) = leaves_repository(path, meta.is_dir()) {
        let finding = Finding {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!(
                "not read: this path leads out of the repository {} (through a symbolic link)",
                repo.display()
            ),
            rule: "outside-repository".into(),
        };
        files.insert(
            path.to_path_buf(),
            FileReport {
                entities: Vec::new(),
                findings: vec![finding.clone()],
            },
        );
        return Ok(CheckOutcome {
            files,
            findings: vec![finding],
        });
    }
    if meta.is_dir() {
        let matcher = Matcher::configured(globs);
        let walk = discover::walk(path, path, None, &matcher);
        for f in walk.files {
            let rel = f.strip_prefix(path).unwrap_or(&f);
            let display = if path == Path::new(".") {
                rel.to_path_buf()
            } else {
                path.join(rel)
            };
            let report = validate::check_file(&f, &display);
            files.insert(display, report);
        }
    } else {
        files.insert(path.to_path_buf(), validate::check_file(path, path));
    }
    let mut findings: Vec<Finding> = files.values().flat_map(|r| r.findings.clone()).collect();
    findings.extend(duplicate_findings(&files));
    findings.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    Ok(CheckOutcome { files, findings })
}

/// The repository `path` is in, when following its links leads out of it.
///
/// The repository is found from the path as written, without following links: the nearest
/// ancestor of its absolute, lexically normalised form that holds `.git`. Where the path
/// leads is the directory as given, canonicalized (links then `..`, as the kernel opens
/// it: normalising `..` as text first let `linkdir/../catalog-info.yaml` read a file out
/// of the repository). Outside any repository nothing is refused (there is nothing to
/// leave). The check follows links in the directories only; a link as the file itself is never opened (`O_NOFOLLOW` in
/// [`validate::check_file`]).
fn leaves_repository(path: &Path, is_dir: bool) -> Option<PathBuf> {
    use std::path::Component;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    // The repository from the text; where the path really is from the kernel.
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let repo = lexical
        .ancestors()
        .find(|a| std::fs::symlink_metadata(a.join(".git")).is_ok())?
        .to_path_buf();
    let real_repo = std::fs::canonicalize(&repo).ok()?;
    // The directory as given, not the lexical one: `linkdir/../x` is `x` next to where
    // the link points, not next to the link.
    let dir = if is_dir { abs.as_path() } else { abs.parent()? };
    let real = std::fs::canonicalize(dir).ok()?;
    (!real.starts_with(&real_repo)).then_some(repo)
}

/// An entity defined twice (Backstage keeps only one and flags a conflict on the other).
pub fn duplicate_findings(files: &BTreeMap<PathBuf, FileReport>) -> Vec<Finding> {
    let mut seen: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    let mut out = Vec::new();
    for (file, report) in files {
        for e in &report.entities {
            let key = e.entity_ref.key();
            match seen.get(&key) {
                Some((first, line)) => out.push(Finding {
                    file: file.clone(),
                    line: e.pos.line,
                    col: e.pos.col,
                    message: format!(
                        "{} is already defined at {}:{}",
                        e.entity_ref,
                        first.display(),
                        line
                    ),
                    rule: "duplicate-entity".into(),
                }),
                None => {
                    seen.insert(key, (file.clone(), e.pos.line));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: NAME\nspec:\n  type: service\n  lifecycle: production\n  owner: team-a\n";

    #[test]
    fn tree_check_finds_problems_and_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::create_dir_all(root.join("node_modules/x")).unwrap();
        std::fs::write(root.join("a/catalog-info.yaml"), C.replace("NAME", "pay")).unwrap();
        std::fs::write(root.join("b/catalog-info.yaml"), C.replace("NAME", "pay")).unwrap();
        std::fs::write(root.join("node_modules/x/catalog-info.yaml"), "bad: [").unwrap();
        let out = check_path(root, &CatalogGlobs::default()).unwrap();
        assert_eq!(out.files.len(), 2);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].rule, "duplicate-entity");
        assert!(out.findings[0].file.ends_with("b/catalog-info.yaml"));
    }

    /// Issue 19: `catalog check PATH` reads regular files only and stays in the repository;
    /// a link to /dev/zero, a FIFO and a link out of the repository each get a finding,
    /// at once (a FIFO hung forever, /dev/zero read a gigabyte).
    #[test]
    fn links_special_files_and_paths_out_of_the_repository_are_findings() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("catalog-info.yaml"), C.replace("NAME", "far")).unwrap();
        std::os::unix::fs::symlink(&outside, repo.join("linkdir")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", repo.join("zero.yaml")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("catalog-info.yaml"),
            repo.join("file-link.yaml"),
        )
        .unwrap();
        let fifo = repo.join("fifo.yaml");
        crate::test_fs::mkfifo(&fifo);
        let rule = |p: &Path| {
            let out = check_path(p, &CatalogGlobs::default()).unwrap();
            assert_eq!(out.entities(), 0, "{p:?}");
            assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
            out.findings[0].rule.clone()
        };
        assert_eq!(rule(&repo.join("zero.yaml")), "not-a-regular-file");
        assert_eq!(rule(&fifo), "not-a-regular-file");
        assert_eq!(rule(&repo.join("file-link.yaml")), "not-a-regular-file");
        assert_eq!(
            rule(&repo.join("linkdir/catalog-info.yaml")),
            "outside-repository"
        );
        assert_eq!(rule(&repo.join("linkdir")), "outside-repository");
        // `..` after a link: the kernel follows the link first (this is
        // outside/catalog-info.yaml), the text says repo/catalog-info.yaml.
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("sub"), repo.join("subdir")).unwrap();
        assert_eq!(
            rule(&repo.join("subdir/../catalog-info.yaml")),
            "outside-repository"
        );
        assert_eq!(rule(&repo.join("subdir/..")), "outside-repository");
        // The same file through its real path, and a real file inside, are read.
        assert_eq!(
            check_path(&outside.join("catalog-info.yaml"), &CatalogGlobs::default())
                .unwrap()
                .entities(),
            1
        );
        std::fs::write(repo.join("catalog-info.yaml"), C.replace("NAME", "near")).unwrap();
        assert_eq!(
            check_path(&repo, &CatalogGlobs::default())
                .unwrap()
                .entities(),
            1
        );
    }

    #[test]
    fn missing_path_is_an_error() {
        assert!(matches!(
            check_path(Path::new("/nonexistent/x"), &CatalogGlobs::default()),
            Err(CheckError::Path { .. })
        ));
    }
}
