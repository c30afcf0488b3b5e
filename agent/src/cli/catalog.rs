//! `stagepass catalog check|diff|sync`.
//!
//! STUB: the catalog work fills these in.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

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
pub fn run(_extra: Option<PathBuf>, _cmd: CatalogCommand) -> ExitCode {
    eprintln!("stagepass catalog: not implemented yet");
    ExitCode::FAILURE
}
