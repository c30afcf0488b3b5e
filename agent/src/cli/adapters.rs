//! `git-credential`, `kube-credential`, `docker-credential`, `env`, `exec`.
//!
//! STUB: the adapters work fills these in.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `stagepass git-credential get|store|erase`.
#[derive(Debug, Args)]
pub struct GitCredentialArgs {
    /// `get`, `store` or `erase` (git passes it).
    pub operation: String,
}

/// `stagepass kube-credential PROFILE`.
#[derive(Debug, Args)]
pub struct KubeCredentialArgs {
    /// Profile whose token kubectl gets.
    pub profile: String,
}

/// `stagepass docker-credential get|store|erase|list`.
#[derive(Debug, Args)]
pub struct DockerCredentialArgs {
    /// The helper operation.
    pub operation: String,
}

/// `stagepass env`.
#[derive(Debug, Args)]
pub struct EnvArgs {}

/// `stagepass exec [--profile P]... -- CMD ARGS`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Profiles whose tokens are put in the environment.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn not_yet(what: &str) -> ExitCode {
    eprintln!("stagepass {what}: not implemented yet");
    ExitCode::FAILURE
}

/// `docker-credential-stagepass` entry (argv[0] dispatch).
pub fn docker_main() -> ExitCode {
    not_yet("docker-credential")
}
/// `stagepass git-credential`.
pub fn git_credential(_extra: Option<PathBuf>, _args: GitCredentialArgs) -> ExitCode {
    not_yet("git-credential")
}
/// `stagepass kube-credential`.
pub fn kube_credential(_extra: Option<PathBuf>, _args: KubeCredentialArgs) -> ExitCode {
    not_yet("kube-credential")
}
/// `stagepass docker-credential`.
pub fn docker_credential(_extra: Option<PathBuf>, _args: DockerCredentialArgs) -> ExitCode {
    not_yet("docker-credential")
}
/// `stagepass env`.
pub fn env(_extra: Option<PathBuf>, _args: EnvArgs) -> ExitCode {
    not_yet("env")
}
/// `stagepass exec`.
pub fn exec(_extra: Option<PathBuf>, _args: ExecArgs) -> ExitCode {
    not_yet("exec")
}
