//! `agent`, `login`, `token`, `status`, `logout`, `doctor`.
//!
//! STUB: the API work fills these in.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `stagepass agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {}

/// `stagepass login [PROFILE]`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Profile to log in (default: the only device profile).
    pub profile: Option<String>,
}

/// `stagepass token [PROFILE]`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Profile (default: the only profile).
    pub profile: Option<String>,
    /// The token must stay valid at least this many seconds.
    #[arg(long)]
    pub min_valid: Option<u64>,
    /// Print the whole JSON answer instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

/// `stagepass status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `stagepass logout [PROFILE]`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Profile to log out.
    pub profile: Option<String>,
}

/// `stagepass doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {}

/// Runs the agent in the foreground.
pub fn agent(extra: Option<PathBuf>, _args: AgentArgs) -> ExitCode {
    let (config, paths) = match super::load(extra) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stagepass: {e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    crate::logging::init(&config.agent.log_level, config.agent.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stagepass: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::daemon::run(config, paths)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stagepass: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_yet(what: &str) -> ExitCode {
    eprintln!("stagepass {what}: not implemented yet");
    ExitCode::FAILURE
}

/// `stagepass login`.
pub fn login(_extra: Option<PathBuf>, _args: LoginArgs) -> ExitCode {
    not_yet("login")
}
/// `stagepass token`.
pub fn token(_extra: Option<PathBuf>, _args: TokenArgs) -> ExitCode {
    not_yet("token")
}
/// `stagepass status`.
pub fn status(_extra: Option<PathBuf>, _args: StatusArgs) -> ExitCode {
    not_yet("status")
}
/// `stagepass logout`.
pub fn logout(_extra: Option<PathBuf>, _args: LogoutArgs) -> ExitCode {
    not_yet("logout")
}
/// `stagepass doctor`.
pub fn doctor(_extra: Option<PathBuf>, _args: DoctorArgs) -> ExitCode {
    not_yet("doctor")
}
