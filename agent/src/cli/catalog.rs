//! `stagepass catalog check|diff|sync`.
//!
//! `check` runs locally (no agent, no Backstage) so CI and pre-commit hooks can use it;
//! `diff` and `sync` ask the running agent, which holds the Backstage token and the outbox.

use crate::catalog::check::check_path;
use crate::client::{Client, ClientError};
use crate::protocol::{CatalogSection, CatalogStatus, DiffReport, SyncReport};
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
            let v = c.catalog_diff().await?;
            if json {
                match serde_json::to_string_pretty(&v) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("stagepass: cannot encode the diff as JSON: {e}"),
                }
            } else {
                print_diff(&v);
            }
            Ok(())
        }),
        CatalogCommand::Sync => ask(&paths, |c| async move {
            let v = c.catalog_sync().await?;
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
    let target = path.unwrap_or_else(|| match root {
        Some(r) => from_cwd(r, std::env::current_dir().ok().as_deref()),
        None => default_root(),
    });
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
    match top {
        Some(t) => from_cwd(&t, std::env::current_dir().ok().as_deref()),
        None => PathBuf::from("."),
    }
}

/// `root` as the user reads it: relative to the working directory when it lies inside it
/// (`.` when it is it), as compilers print paths and as the MCP tools and the default root
/// show them; an outside root stays as configured.
fn from_cwd(root: &Path, cwd: Option<&Path>) -> PathBuf {
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    match (canonical(root), cwd.and_then(canonical)) {
        (Some(r), Some(c)) => match r.strip_prefix(&c) {
            Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
            Ok(rel) => rel.to_path_buf(),
            Err(_) => root.to_path_buf(),
        },
        _ => root.to_path_buf(),
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

fn print_diff(v: &DiffReport) {
    if let Some(err) = &v.error {
        eprintln!("stagepass: no diff: {err}");
    }
    if v.changes.is_empty() {
        println!("no ownership changes against Backstage");
    }
    for c in &v.changes {
        println!("{c}");
    }
    // Refused pushes: local changes Backstage does not have, and why (who, which
    // permission), until the file changes again.
    for j in &v.failed {
        println!(
            "not in Backstage: {} ({}): {}",
            j.entity,
            j.file.display(),
            j.error.as_deref().unwrap_or_default()
        );
    }
}

fn print_sync(v: &SyncReport) {
    if let Some(err) = &v.error {
        eprintln!("stagepass: sync: {err}");
    }
    println!(
        "{} push(es) queued, {} entit(ies) unchanged",
        v.queued, v.unchanged
    );
    for f in &v.invalid {
        println!("not pushed: {f}");
    }
}

/// The catalog section of `stagepass status` (text), from the `catalog` part of
/// `/v1/status`: state, counts, findings, owner diff, pending and failed pushes, pauses.
/// Kept here so `status` shows the catalog the same way `catalog diff` does.
pub fn status_text(catalog: &CatalogSection) -> String {
    match catalog {
        CatalogSection::Running(c) => running_text(c),
        CatalogSection::Off(off) => match &off.message {
            Some(m) => format!("catalog: {} ({m})\n", off.state.as_str()),
            None => format!("catalog: {}\n", off.state.as_str()),
        },
    }
}

/// The first line (state, reason, root, counts), then one line per thing to know.
fn running_text(c: &CatalogStatus) -> String {
    let mut out = format!("catalog: {}", c.state.as_str());
    if let Some(reason) = &c.reason {
        out.push_str(&format!(" ({reason})"));
    }
    if let Some(root) = &c.root {
        let source = c
            .root_source
            .as_deref()
            .map(|s| format!(" (from {s})"))
            .unwrap_or_default();
        out.push_str(&format!(
            ", {}{source}: {} file(s), {} entit(ies)",
            root.display(),
            c.files,
            c.entities
        ));
    }
    out.push('\n');
    for f in &c.findings {
        out.push_str(&format!("  {f}\n"));
    }
    for d in &c.diff {
        out.push_str(&format!("  diff: {d}\n"));
    }
    for j in &c.outbox {
        let error = j
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  push {} {} ({}){error}\n",
            j.state,
            j.entity,
            j.file.display()
        ));
    }
    if let Some(b) = &c.backstage {
        if let Some(p) = &b.paused {
            out.push_str(&format!("  pushes paused: {p}\n"));
        } else if let Some(e) = &b.error {
            out.push_str(&format!("  backstage: {e}\n"));
        }
    }
    for o in &c.orphans {
        out.push_str(&format!(
            "  orphaned: {o} (gone from the files; Backstage deletes it or keeps it marked backstage.io/orphan)\n"
        ));
    }
    for n in &c.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    for w in &c.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_root_is_shown_from_the_working_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("svc")).unwrap();
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(from_cwd(&repo, Some(&repo)), Path::new("."));
        assert_eq!(from_cwd(&repo.join("svc"), Some(&repo)), Path::new("svc"));
        assert_eq!(from_cwd(&repo, Some(&other)), repo);
        assert_eq!(from_cwd(&repo, None), repo);
        let gone = tmp.path().join("gone");
        assert_eq!(from_cwd(&gone, Some(&repo)), gone);
    }

    #[test]
    fn status_text_shows_findings_diff_and_pushes() {
        let v: CatalogSection = serde_json::from_value(serde_json::json!({
            "state": "watching", "root": "/r", "files": 2, "entities": 1,
            "findings": [{"file": "a.yaml", "line": 6, "col": 3, "message": "spec.owner is missing", "rule": "required-field"}],
            "diff": [{"change": "owner_changed", "entity": "component:default/p", "from": "group:team-a", "to": "group:team-b"}],
            "outbox": [{"entity": "component:default/t", "file": "t.yaml", "action": "sync", "state": "failed", "attempts": 1, "error": "400"}],
            "backstage": {"url": "http://b", "paused": "token of profile backstage refused"},
            "orphans": ["component:default/old"],
            "notes": ["b.yaml was moved from a.yaml: unregistered that location"],
            "warnings": [],
            "watches": {"inotify": 1, "polled": 0},
            "pushes": {}
        }))
        .unwrap();
        let t = status_text(&v);
        assert_eq!(
            t,
            "catalog: watching, /r: 2 file(s), 1 entit(ies)\n  a.yaml:6:3: spec.owner is missing (required-field)\n  diff: component:default/p: group:team-a -> group:team-b\n  push failed component:default/t (t.yaml): 400\n  pushes paused: token of profile backstage refused\n  orphaned: component:default/old (gone from the files; Backstage deletes it or keeps it marked backstage.io/orphan)\n  note: b.yaml was moved from a.yaml: unregistered that location\n"
        );
        assert_eq!(
            status_text(&CatalogSection::disabled()),
            "catalog: disabled\n"
        );
    }
}
