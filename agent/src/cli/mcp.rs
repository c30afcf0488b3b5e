//! `stagepass mcp`: runs the MCP server of [`crate::mcp`] on stdin/stdout.
//!
//! Stdout carries only the protocol, so logs go to stderr (the default writer) and at
//! `warn` unless `RUST_LOG` says otherwise. The repository is `--root`, else the one the
//! running agent watches, else `[catalog] root`, else the git top level of the working
//! directory.

use crate::mcp::Server;
use crate::mcp::agent::AgentLink;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `stagepass mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Repository root (default: the repository the agent watches, else the git top level).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// Entry point of `stagepass mcp`.
pub fn run(extra: Option<PathBuf>, args: McpArgs) -> ExitCode {
    let (config, paths) = match super::load(extra) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("stagepass mcp: {e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    crate::logging::init("warn", config.agent.log_format);
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stagepass mcp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut redact: Vec<String> = config
        .profiles
        .values()
        .filter_map(|p| p.client_secret_file.as_ref())
        .map(|p| p.display().to_string())
        .collect();
    redact.push(paths.api_secret().display().to_string());
    let agent = AgentLink::new(paths);
    let result = rt.block_on(async {
        let root = match args.root {
            Some(r) => r,
            None => match agent.catalog().await.ok().and_then(|s| s.root) {
                Some(r) => r,
                None => config
                    .catalog
                    .root
                    .clone()
                    .unwrap_or_else(super::catalog::default_root),
            },
        };
        tracing::info!(root = %root.display(), "serving MCP on stdio");
        Server::new(root, &config.catalog.globs, agent)
            .with_redactions(redact)
            .serve_stdio()
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stagepass mcp: {e}");
            ExitCode::FAILURE
        }
    }
}
