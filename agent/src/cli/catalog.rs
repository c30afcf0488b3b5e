//! `stagepass catalog check|diff|sync`.
//!
//! `check` runs locally (no agent, no Backstage) so CI and pre-commit hooks can use it;
//! `diff` and `sync` ask the running agent, which holds the Backstage token and the outbox.

use crate::catalog::check::check_path;
use crate::catalog::diff::Change;
use crate::client::{Client, ClientError};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code of `check` when the check itself could not run (bad path, bad glob).
pub const EXIT_CHECK_ERROR: u8 = 2;

/// Catalog subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Validate catalog files locally (no agent, no Backstage); exit 1 on findings.
    Check {
        /// File or directory (default: the repository root).
        path: Option<PathBuf>,
    },
    /// Show owner changes against what Backstage holds.
    Diff {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Push changed and new catalog files to Backstage now.
    Sync,
}

/// Runs a catalog subcommand.
pub fn run(extra: Option<PathBuf>, cmd: CatalogCommand) -> ExitCode {
    let (config, paths) = match super::load(extra) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stagepass: {e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    match cmd {
        CatalogCommand::Check { path } => {
            check(path, config.catalog.root.as_deref(), &config.catalog.globs)
        }
        CatalogCommand::Diff { json } => ask(&paths, |c| async move {
            let v = c.get_json("/v1/catalog/diff").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_diff(&v);
            }
            Ok(())
        }),
        CatalogCommand::Sync => ask(&paths, |c| async move {
            let v = c
                .post_json("/v1/catalog/sync", &serde_json::json!({}))
                .await?;
            print_sync(&v);
            Ok(())
        }),
    }
}

fn check(
    path: Option<PathBuf>,
    root: Option<&Path>,
    globs: &crate::config::CatalogGlobs,
) -> ExitCode {
    let target = path
        .or_else(|| root.map(Path::to_path_buf))
        .unwrap_or_else(default_root);
    match check_path(&target, globs) {
        Ok(out) => {
            for f in &out.findings {
                println!("{f}");
            }
            eprintln!(
                "{} catalog file(s), {} valid entit{}, {} finding(s)",
                out.files.len(),
                out.entities(),
                if out.entities() == 1 { "y" } else { "ies" },
                out.findings.len()
            );
            if out.findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("stagepass catalog check: {e}");
            ExitCode::from(EXIT_CHECK_ERROR)
        }
    }
}

/// The git top level of the working directory shown relative (`.`) when it is the
/// working directory itself; `.` outside a repository.
pub(crate) fn default_root() -> PathBuf {
    let top = std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let cwd = std::env::current_dir().ok();
    match (top, cwd) {
        (Some(t), Some(c)) if std::fs::canonicalize(&t).ok() != std::fs::canonicalize(&c).ok() => t,
        _ => PathBuf::from("."),
    }
}

fn ask<F, Fut>(paths: &crate::paths::Paths, f: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stagepass: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match Client::new(paths) {
        Ok(c) => c,
        Err(e) => return client_error(&e),
    };
    match rt.block_on(f(client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => client_error(&e),
    }
}

fn client_error(e: &ClientError) -> ExitCode {
    eprintln!("stagepass: {e}");
    match e {
        ClientError::NotRunning(_) | ClientError::VersionMismatch { .. } => {
            ExitCode::from(super::EXIT_AGENT_DOWN)
        }
        _ => ExitCode::FAILURE,
    }
}

fn print_diff(v: &serde_json::Value) {
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        eprintln!("stagepass: no diff: {err}");
    }
    let changes: Vec<Change> = v
        .get("changes")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    if changes.is_empty() {
        println!("no ownership changes against Backstage");
    }
    for c in changes {
        println!("{c}");
    }
    // Refused pushes: local changes Backstage does not have, and why (who, which
    // permission), until the file changes again.
    if let Some(items) = v.get("failed").and_then(|i| i.as_array()) {
        for j in items {
            let s = |k: &str| j.get(k).and_then(|x| x.as_str()).unwrap_or_default();
            println!(
                "not in Backstage: {} ({}): {}",
                s("entity"),
                s("file"),
                s("error")
            );
        }
    }
}

fn print_sync(v: &serde_json::Value) {
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        eprintln!("stagepass: sync: {err}");
    }
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    println!(
        "{} push(es) queued, {} entit(ies) unchanged",
        n("queued"),
        n("unchanged")
    );
    if let Some(items) = v.get("invalid").and_then(|i| i.as_array()) {
        for f in items {
            let s = |k: &str| {
                f.get(k)
                    .map(|x| match x {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            println!(
                "not pushed: {}:{}:{}: {} ({})",
                s("file"),
                s("line"),
                s("col"),
                s("message"),
                s("rule")
            );
        }
    }
}

/// The catalog section of `stagepass status` (text), from the `catalog` object of
/// `/v1/status`: state, counts, findings, owner diff, pending and failed pushes, pauses.
/// Kept here so `status` shows the catalog the same way `catalog diff` does.
pub fn status_text(catalog: &serde_json::Value) -> String {
    let str_of = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string()
    };
    let num = |k: &str| catalog.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let mut out = format!("catalog: {}", str_of(catalog, "state"));
    if let Some(reason) = catalog.get("reason").and_then(|r| r.as_str()) {
        out.push_str(&format!(" ({reason})"));
    }
    if let Some(root) = catalog.get("root").and_then(|r| r.as_str()) {
        let source = catalog
            .get("root_source")
            .and_then(|s| s.as_str())
            .map(|s| format!(" (from {s})"))
            .unwrap_or_default();
        out.push_str(&format!(
            ", {root}{source}: {} file(s), {} entit(ies)",
            num("files"),
            num("entities")
        ));
    }
    out.push('\n');
    let list = |k: &str| {
        catalog
            .get(k)
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default()
    };
    for f in list("findings") {
        let finding: Result<crate::catalog::Finding, _> = serde_json::from_value(f);
        if let Ok(f) = finding {
            out.push_str(&format!("  {f}\n"));
        }
    }
    for c in list("diff") {
        if let Ok(c) = serde_json::from_value::<Change>(c) {
            out.push_str(&format!("  diff: {c}\n"));
        }
    }
    for j in list("outbox") {
        let error = j
            .get("error")
            .and_then(|e| e.as_str())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  push {} {} ({}){error}\n",
            str_of(&j, "state"),
            str_of(&j, "entity"),
            str_of(&j, "file")
        ));
    }
    if let Some(b) = catalog.get("backstage").filter(|b| !b.is_null()) {
        if let Some(p) = b.get("paused").and_then(|p| p.as_str()) {
            out.push_str(&format!("  pushes paused: {p}\n"));
        } else if let Some(e) = b.get("error").and_then(|p| p.as_str()) {
            out.push_str(&format!("  backstage: {e}\n"));
        }
    }
    for o in list("orphans") {
        if let Some(o) = o.as_str() {
            out.push_str(&format!(
                "  orphaned: {o} (gone from the files; Backstage deletes it or keeps it marked backstage.io/orphan)\n"
            ));
        }
    }
    for n in list("notes") {
        if let Some(n) = n.as_str() {
            out.push_str(&format!("  note: {n}\n"));
        }
    }
    for w in list("warnings") {
        if let Some(w) = w.as_str() {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_shows_findings_diff_and_pushes() {
        let v = serde_json::json!({
            "state": "watching", "root": "/r", "files": 2, "entities": 1,
            "findings": [{"file": "a.yaml", "line": 6, "col": 3, "message": "spec.owner is missing", "rule": "required-field"}],
            "diff": [{"change": "owner_changed", "entity": "component:default/p", "from": "group:team-a", "to": "group:team-b"}],
            "outbox": [{"entity": "component:default/t", "file": "t.yaml", "action": "sync", "state": "failed", "attempts": 1, "error": "400"}],
            "backstage": {"url": "http://b", "paused": "token of profile backstage refused"},
            "orphans": ["component:default/old"],
            "notes": ["b.yaml was moved from a.yaml: unregistered that location"],
            "warnings": []
        });
        let t = status_text(&v);
        assert_eq!(
            t,
            "catalog: watching, /r: 2 file(s), 1 entit(ies)\n  a.yaml:6:3: spec.owner is missing (required-field)\n  diff: component:default/p: group:team-a -> group:team-b\n  push failed component:default/t (t.yaml): 400\n  pushes paused: token of profile backstage refused\n  orphaned: component:default/old (gone from the files; Backstage deletes it or keeps it marked backstage.io/orphan)\n  note: b.yaml was moved from a.yaml: unregistered that location\n"
        );
        assert_eq!(
            status_text(&serde_json::json!({"state": "disabled"})),
            "catalog: disabled\n"
        );
    }
}
