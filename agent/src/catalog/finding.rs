//! A problem found in a catalog file, printed as `file:line:col: message (rule)`.
//!
//! One type for local validation, YAML syntax and Backstage's own `validate-entity` answers,
//! so the CLI, status and logs all show problems the same way (the format editors and CI
//! annotators already understand).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A finding about a catalog file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The file, as given to the scanner (relative to the repository root when scanned from it).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, in words.
    pub message: String,
    /// The stable name of the rule broken (e.g. `required-field`, `name-format`).
    pub rule: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} ({})",
            self.file.display(),
            self.line,
            self.col,
            self.message,
            self.rule
        )
    }
}
