//! `stagepass audit [--since D] [--profile P] [--json]`: the audit log as a table or JSON lines.
//!
//! Reads the files in the state dir directly (same uid, 0600), so it works with the agent
//! stopped too; oldest record first.

use crate::audit::reader::{self, Caller, Filter, Line};
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

fn caller(c: Option<&Caller>) -> String {
    let c = c.unwrap_or(&NO_CALLER);
    if let Some(why) = &c.unidentified {
        return format!("unidentified: {why}");
    }
    let exe = c.exe.as_deref().unwrap_or("");
    let name = exe.rsplit('/').next().unwrap_or(exe);
    format!("{name}[{}]", c.pid.unwrap_or(0))
}

const NO_CALLER: Caller = Caller {
    unidentified: None,
    exe: None,
    pid: None,
};

/// The human table: one line per record, drop notes and unreadable lines included.
pub fn table(records: &[serde_json::Value]) -> String {
    let mut rows = vec![[
        "TIME".to_string(),
        "PROFILE".into(),
        "DECISION".into(),
        "RULE/CODE".into(),
        "CALLER".into(),
        "VIA".into(),
        "TOKEN".into(),
    ]];
    rows.extend(records.iter().map(|r| row(&Line::of(r))));
    aligned(&rows)
}

/// One line of the log as a row of the table.
fn row(r: &Line) -> [String; 7] {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    if let Some(where_) = &r.unreadable {
        let d = || "-".to_string();
        return [d(), d(), "unreadable".into(), d(), where_.clone(), d(), d()];
    }
    if r.event.as_deref() == Some("dropped") {
        let d = || "-".to_string();
        let lost = format!("{} records lost", r.dropped.unwrap_or(0));
        return [s(&r.time), d(), "dropped".into(), lost, d(), d(), d()];
    }
    let rule = match &r.code {
        Some(code) if r.decision.as_deref() != Some("allow") => code.clone(),
        _ => s(&r.rule),
    };
    let mut time = s(&r.time);
    // Whole seconds are enough in a table.
    if let Some(dot) = time.find('.') {
        time = format!("{}Z", &time[..dot]);
    }
    [
        time,
        s(&r.profile),
        s(&r.decision),
        rule,
        caller(r.caller.as_ref()),
        dash(&r.adapter),
        dash(&r.token_fingerprint),
    ]
}

/// Columns padded to their widest cell.
fn aligned(rows: &[[String; 7]]) -> String {
    let mut widths = [0usize; 7];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
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
