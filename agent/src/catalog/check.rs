//! `stagepass catalog check`: local validation of a file or a tree, without an agent or a
//! Backstage, for CI and pre-commit hooks.

use super::discover::{self, Matcher};
use super::finding::Finding;
use super::validate::{self, FileReport};
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
    /// A configured glob is invalid.
    #[error(transparent)]
    Glob(#[from] discover::GlobError),
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
pub fn check_path(path: &Path, globs: &[String]) -> Result<CheckOutcome, CheckError> {
    let meta = std::fs::metadata(path).map_err(|source| CheckError::Path {
        path: path.to_path_buf(),
        source,
    })?;
    let mut files = BTreeMap::new();
    if meta.is_dir() {
        let matcher = Matcher::new(globs)?;
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
        let out = check_path(root, &[]).unwrap();
        assert_eq!(out.files.len(), 2);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].rule, "duplicate-entity");
        assert!(out.findings[0].file.ends_with("b/catalog-info.yaml"));
    }

    #[test]
    fn missing_path_is_an_error() {
        assert!(matches!(
            check_path(Path::new("/nonexistent/x"), &[]),
            Err(CheckError::Path { .. })
        ));
    }
}
