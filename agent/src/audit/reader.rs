//! Reading the audit log back for `stagepass audit`: every kept file, oldest first, filtered.

use super::writer::FILE;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Which records to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only records of this profile.
    pub profile: Option<String>,
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file exists but cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The log files in `dir`, oldest first (`audit.jsonl.N` .. `.1`, then `audit.jsonl`).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u32 = name.strip_prefix(FILE)?.strip_prefix('.')?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(FILE);
    if current.exists() {
        out.push(current);
    }
    out
}

/// Records (and drop notes) matching `filter`, oldest first. A line that is not JSON (a
/// torn write after a crash) is returned as `{"unreadable": "FILE:LINE"}` rather than hidden.
pub fn read(dir: &Path, filter: &Filter) -> Result<Vec<serde_json::Value>, ReadError> {
    let mut out = Vec::new();
    for path in files(dir) {
        let text = std::fs::read_to_string(&path).map_err(|source| ReadError::Io {
            path: path.clone(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(_) => {
                    out.push(serde_json::json!({
                        "unreadable": format!("{}:{}", path.display(), i + 1)
                    }));
                    continue;
                }
            };
            if keep(&v, filter) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

fn keep(v: &serde_json::Value, f: &Filter) -> bool {
    let line = Line::of(v);
    if let Some(since) = f.since {
        let t = line.time.as_deref().and_then(crate::timefmt::parse_rfc3339);
        if t.is_none_or(|t| t < since) {
            return false;
        }
    }
    if let Some(p) = &f.profile
        && line.event.is_none()
        && line.profile.as_deref() != Some(p.as_str())
    {
        return false;
    }
    true
}

/// A line of the log as it is read back: a record ([`super::record::Record::to_line`]), a
/// drop note ([`super::record::dropped_line`]) or the note [`read`] puts in place of a line
/// it could not read. Every field is optional, so a line from another version reads.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Line {
    /// When, RFC 3339.
    pub time: Option<String>,
    /// The profile asked for.
    pub profile: Option<String>,
    /// `allow`, `deny` or `error`.
    pub decision: Option<String>,
    /// The rule that decided.
    pub rule: Option<String>,
    /// The error code of a refusal.
    pub code: Option<String>,
    /// The adapter that asked (`git-credential`, ...).
    pub adapter: Option<String>,
    /// The fingerprint of the token handed out.
    pub token_fingerprint: Option<String>,
    /// Who asked.
    pub caller: Option<Caller>,
    /// `dropped` for a drop note.
    pub event: Option<String>,
    /// How many records a drop note stands for.
    pub dropped: Option<u64>,
    /// `FILE:LINE` of a line that could not be read.
    pub unreadable: Option<String>,
}

/// The caller of a [`Line`]: the process, or why it is not known.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Caller {
    /// Why the caller is not known.
    pub unidentified: Option<String>,
    /// Its executable.
    pub exe: Option<String>,
    /// Its pid.
    pub pid: Option<u64>,
}

impl Line {
    /// The line `v` as read by [`read`]; one whose fields have other types reads as empty.
    pub fn of(v: &serde_json::Value) -> Self {
        serde::Deserialize::deserialize(v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_rotated_files_in_order_and_filters() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let line = |t: &str, p: &str| format!("{{\"time\":\"{t}\",\"profile\":\"{p}\"}}\n");
        std::fs::write(d.join("audit.jsonl.2"), line("2026-01-01T00:00:00Z", "a")).unwrap();
        std::fs::write(d.join("audit.jsonl.1"), line("2026-01-02T00:00:00Z", "b")).unwrap();
        std::fs::write(
            d.join(FILE),
            format!("{}{{torn\n", line("2026-01-03T00:00:00Z", "a")),
        )
        .unwrap();
        let all = read(d, &Filter::default()).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0]["time"], "2026-01-01T00:00:00Z");
        assert!(
            all[3]["unreadable"]
                .as_str()
                .unwrap()
                .ends_with("audit.jsonl:2")
        );
        let a = read(
            d,
            &Filter {
                profile: Some("a".into()),
                since: crate::timefmt::parse_rfc3339("2026-01-01T12:00:00Z"),
            },
        )
        .unwrap();
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a[0]["time"], "2026-01-03T00:00:00Z");
        let none = read(
            d,
            &Filter {
                since: Some(SystemTime::now() + Duration::from_secs(60)),
                profile: None,
            },
        )
        .unwrap();
        assert_eq!(none.len(), 1, "only the unreadable line: {none:?}");
    }
}
