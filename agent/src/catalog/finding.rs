//! A problem found in a catalog file, printed as `file:line:col: message (rule)`.
//!
//! One type for local validation, YAML syntax and Backstage's own `validate-entity` answers,
//! so the CLI, status and logs all show problems the same way (the format editors and CI
//! annotators already understand).
//!
//! A message quotes what it found through [`excerpt`], never the whole value: a value can be
//! an alias to 100 KB of text, and a finding per use repeated it in full (5,000 uses printed
//! 500 MB). Findings per file are capped at [`MAX_FINDINGS`], with one more saying how many
//! were left out.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Findings kept per file; the rest are counted in one last finding.
pub const MAX_FINDINGS: usize = 100;

/// Characters of a value a message quotes at most.
pub const EXCERPT_CHARS: usize = 64;

/// `value` quoted (`{value:?}`) when short; otherwise its first [`EXCERPT_CHARS`] characters
/// quoted, then how long it really is.
pub fn excerpt(value: &str) -> String {
    match value.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// `value` as is when short; otherwise its first [`EXCERPT_CHARS`] characters and `...`
/// (for values that are part of a path in a message, such as a label key).
pub fn cut(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(EXCERPT_CHARS) {
        None => value.into(),
        Some((at, _)) => format!("{}...", &value[..at]).into(),
    }
}

/// Characters of a message written elsewhere (Backstage's `validate-entity`) kept at most:
/// longer than [`EXCERPT_CHARS`] since such a message is a sentence, not a value, but
/// bounded all the same (it may quote the entity's values whole).
pub const MESSAGE_CHARS: usize = 512;

/// A message from elsewhere as a finding shows it: whole when short, else its first
/// [`MESSAGE_CHARS`] characters, `...` and how long it really is.
pub fn message_excerpt(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_CHARS) {
        None => message.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &message[..cut], message.len()),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_quotes_short_values_whole_and_cuts_long_ones() {
        assert_eq!(excerpt("team-a"), "\"team-a\"");
        let long = "é".repeat(100_000);
        let e = excerpt(&long);
        assert!(e.len() < 200, "{}", e.len());
        assert!(e.ends_with("... (200000 bytes)"), "{e}");
    }

    #[test]
    fn message_excerpt_keeps_sentences_and_cuts_walls_of_text() {
        assert_eq!(message_excerpt("owner not allowed"), "owner not allowed");
        let long = format!("bad value {}", "x".repeat(100_000));
        let e = message_excerpt(&long);
        assert!(e.len() < MESSAGE_CHARS + 40, "{}", e.len());
        assert!(
            e.starts_with("bad value xxx") && e.ends_with("... (100010 bytes)"),
            "{e}"
        );
    }
}
