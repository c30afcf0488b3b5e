//! The `stagepass` command line: one binary, one subcommand per job.
//!
//! Each subcommand lives in the file of its concern: [`session`] (agent, login, token,
//! status, logout, doctor), [`catalog`], [`mcp`], [`adapters`] (git, kubectl, docker, env, exec),
//! [`audit`] (the audit log). [`front`] is the small `stagepass` binary that answers
//! `token` itself and `exec`s the full one (`stagepass-core`, whose entry is [`main`]) for
//! everything else.

pub mod adapters;
pub mod audit;
pub mod catalog;
pub mod front;
pub mod mcp;
pub mod session;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code when the agent is not running (documented in the README).
pub const EXIT_AGENT_DOWN: u8 = 69; // EX_UNAVAILABLE
/// Exit code for a bad configuration.
pub const EXIT_CONFIG: u8 = 78; // EX_CONFIG

/// Fresh tokens on localhost and true Backstage ownership, for dev containers.
#[derive(Debug, Parser)]
#[command(name = "stagepass", version, about, long_about = None)]
pub struct Cli {
    /// Extra config file, read after the system and user ones.
    #[arg(long, global = true, env = "STAGEPASS_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground (what the dev container entrypoint starts).
    #[command(
        long_about = "Run the agent in the foreground: it serves tokens on 127.0.0.1 and a Unix socket in the \
runtime dir, refreshes them ahead of expiry, and syncs catalog files. Stop it with SIGTERM or Ctrl-C. \
Only one agent runs per user (a lock in the runtime dir)."
    )]
    Agent,
    /// Log in to a profile with the device flow.
    Login(session::LoginArgs),
    /// Print a fresh access token (only the token, for `$(stagepass token NAME)`).
    Token(session::TokenArgs),
    /// Show profiles, token states, store backend and catalog state.
    Status(session::StatusArgs),
    /// Forget a profile's login (revoking it at the IdP where supported).
    Logout(session::LogoutArgs),
    /// Check the setup and say how to fix what is wrong.
    Doctor(session::DoctorArgs),
    /// Catalog files: check, diff against Backstage, sync.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// git credential helper (`credential.helper = "!stagepass git-credential"`).
    GitCredential(adapters::GitCredentialArgs),
    /// kubectl exec credential plugin.
    KubeCredential(adapters::KubeCredentialArgs),
    /// docker credential helper (also as `docker-credential-stagepass`).
    DockerCredential(adapters::DockerCredentialArgs),
    /// Print environment exports for tools (AWS container credentials, ...).
    Env(adapters::EnvArgs),
    /// Run a command with fresh credentials in its environment.
    Exec(adapters::ExecArgs),
    /// MCP server over stdio: catalog and ownership for AI assistants (never a token).
    Mcp(mcp::McpArgs),
    /// Show the audit log: which process got or was refused which credential, when.
    Audit(audit::AuditArgs),
}

/// Entry point of the full binary (`stagepass-core`), which the front `exec`s.
pub fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "docker-credential-stagepass" {
        return adapters::docker_main();
    }
    if let Some(args) = session::TokenArgs::from_plain_args(std::env::args_os().skip(1)) {
        // `$(stagepass token NAME)` runs in prompts and scripts many times a minute; building
        // the whole clap command tree costs more than the request itself. Anything but the
        // plain forms (help, --config, typos) goes through clap below.
        return session::token(None, args);
    }
    let cli = Cli::parse();
    let extra = cli.config.clone();
    match cli.command {
        Command::Agent => session::agent(extra),
        Command::Login(a) => session::login(extra, a),
        Command::Token(a) => session::token(extra, a),
        Command::Status(a) => session::status(extra, a),
        Command::Logout(a) => session::logout(extra, a),
        Command::Doctor(a) => session::doctor(extra, a),
        Command::Catalog(c) => catalog::run(extra, c),
        Command::GitCredential(a) => adapters::git_credential(extra, a),
        Command::KubeCredential(a) => adapters::kube_credential(extra, a),
        Command::DockerCredential(a) => adapters::docker_credential(extra, a),
        Command::Env(a) => adapters::env(extra, a),
        Command::Exec(a) => adapters::exec(extra, a),
        Command::Mcp(a) => mcp::run(extra, a),
        Command::Audit(a) => audit::run(extra, a),
    }
}

/// Resolves paths and loads the config, for every subcommand.
pub fn load(
    extra: Option<std::path::PathBuf>,
) -> Result<(crate::config::Config, crate::paths::Paths), crate::config::ConfigError> {
    let mut paths = crate::paths::Paths::from_env();
    if let Some(p) = extra {
        paths.config_files.push(p);
    }
    let mut config = crate::config::Config::load_from_process(&paths.config_files)?;
    config.default_profiles_from_env();
    if let Some(dir) = &config.agent.state_dir {
        paths.state_dir.clone_from(dir);
    }
    Ok((config, paths))
}

/// A current-thread runtime for one-shot client commands.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
