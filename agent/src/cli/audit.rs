//! `stagepass audit [--since D] [--profile P] [--json]`: the audit log as a table or JSON lines.
//!
//! Reads the files in the state dir directly (same uid, 0600), so it works with the agent
//! stopped too; oldest record first.

use crate::audit::reader::{self, Filter};
use crate::config::HumanDuration;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

/// `stagepass audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records since this: a duration back from now (`90m`, `12h`, `7d`) or an RFC
    /// 3339 time (`2026-11-29T00:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records of this profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// One JSON object per line (the log's own format) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--since`.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Some(t) = crate::timefmt::parse_rfc3339(s) {
        return Ok(t);
    }
    let d = HumanDuration::parse(s).map_err(|e| {
        format!("--since: {e}; or give an RFC 3339 time such as 2026-11-29T00:00:00Z")
    })?;
    Ok(now.checked_sub(d.0).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// `stagepass audit`.
pub fn run(extra: Option<PathBuf>, args: AuditArgs) -> ExitCode {
    let (config, paths) = match super::load(extra) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stagepass: {e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let since = match args
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
    {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("stagepass audit: {e}");
            return ExitCode::from(super::session::EXIT_USAGE);
        }
        None => None,
    };
    let dir = crate::audit::writer::dir(&paths.state_dir);
    let records = match reader::read(
        &dir,
        &Filter {
            since,
            profile: args.profile,
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stagepass audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !config.audit.enabled && records.is_empty() {
        eprintln!("stagepass audit: the audit log is off (audit.enabled = false)");
    }
    let mut out = String::new();
    if args.json {
        for r in &records {
            out.push_str(&r.to_string());
            out.push('\n');
        }
    } else {
        out = table(&records);
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("")
}

fn caller(v: &serde_json::Value) -> String {
    let c = v.get("caller").cloned().unwrap_or_default();
    if let Some(why) = c.get("unidentified").and_then(|x| x.as_str()) {
        return format!("unidentified: {why}");
    }
    let exe = s(&c, "exe");
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let pid = c.get("pid").and_then(|p| p.as_u64()).unwrap_or(0);
    format!("{name}[{pid}]")
}

/// The human table: one line per record, drop notes and unreadable lines included.
pub fn table(records: &[serde_json::Value]) -> String {
    let header = [
        "TIME",
        "PROFILE",
        "DECISION",
        "RULE/CODE",
        "CALLER",
        "VIA",
        "TOKEN",
    ];
    let mut rows = vec![header.map(String::from)];
    for r in records {
        let text = |k: &str| r.get(k).and_then(|x| x.as_str());
        if let Some(where_) = text("unreadable") {
            rows.push(["-", "-", "unreadable", "-", where_, "-", "-"].map(String::from));
            continue;
        }
        if s(r, "event") == "dropped" {
            let lost = r.get("dropped").and_then(|x| x.as_u64()).unwrap_or(0);
            let lost = format!("{lost} records lost");
            rows.push([s(r, "time"), "-", "dropped", &lost, "-", "-", "-"].map(String::from));
            continue;
        }
        let rule = match text("code") {
            Some(code) if s(r, "decision") != "allow" => code,
            _ => s(r, "rule"),
        };
        // Whole seconds are enough in a table.
        let time = match s(r, "time").split_once('.') {
            Some((whole, _)) => format!("{whole}Z"),
            None => s(r, "time").to_string(),
        };
        let caller = caller(r);
        rows.push(
            [
                time.as_str(),
                s(r, "profile"),
                s(r, "decision"),
                rule,
                &caller,
                text("adapter").unwrap_or("-"),
                text("token_fingerprint").unwrap_or("-"),
            ]
            .map(String::from),
        );
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        assert_eq!(
            parse_since("1h", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(96_400)
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:10Z", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(10)
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn the_table_names_caller_rule_and_adapter() {
        let recs = vec![
            serde_json::json!({"time":"2026-11-29T02:00:00.123Z","profile":"gh","decision":"allow","rule":"git","adapter":"git-credential","token_fingerprint":"0123456789ab","caller":{"transport":"unix","pid":7,"exe":"/usr/lib/git-core/git-remote-http"}}),
            serde_json::json!({"time":"2026-11-29T02:00:01Z","profile":"gh","decision":"deny","rule":"profiles.gh.policy.allow","code":"forbidden_caller","caller":{"transport":"tcp","unidentified":"pid 9 was reused by another process"}}),
            serde_json::json!({"time":"2026-11-29T02:00:02Z","event":"dropped","dropped":3}),
        ];
        let t = table(&recs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with("2026-11-29T02:00:00Z  gh"), "{t}");
        assert!(
            lines[1].contains("git-remote-http[7]") && lines[1].contains("git-credential"),
            "{t}"
        );
        assert!(
            lines[2].contains("forbidden_caller") && lines[2].contains("unidentified: pid 9"),
            "{t}"
        );
        assert!(lines[3].contains("3 records lost"), "{t}");
    }
}
