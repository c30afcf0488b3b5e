//! `agent`, `login`, `token`, `status`, `logout`, `doctor`.
//!
//! Every command but `agent` is a thin client of the running agent's Unix socket
//! ([`crate::client`]). When no agent answers, the command says so plainly and exits
//! with [`super::EXIT_AGENT_DOWN`]; it never waits longer than the client's connect timeout.
//! Exit codes: 0 success, 1 the agent refused (the message names the code), 64 bad usage
//! (e.g. no profile named and more than one configured), 69 agent not running, 78 bad config,
//! 130 interrupted.

mod doctor;
mod login;
mod output;

use crate::client::{Client, ClientError};
use crate::config::{Config, GrantKind};
use crate::paths::Paths;
use crate::protocol::TokenAnswer;
use clap::Args;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for bad usage (EX_USAGE), e.g. a profile must be named.
pub const EXIT_USAGE: u8 = 64;
/// Exit code when interrupted with Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// `stagepass login [PROFILE]`.
#[derive(Debug, Args)]
#[command(
    long_about = "Start a login: for a device profile, prints the URL to open and the code to enter (and \
a QR code on a terminal); for an authorization-code profile (Backstage), prints the URL to open \
and accepts the address the browser ends on, pasted, where the browser cannot reach this \
machine. Then waits until you have approved it. Ctrl-C stops waiting."
)]
pub struct LoginArgs {
    /// Profile to log in (default: the only device or authorization-code profile).
    pub profile: Option<String>,
}

/// `stagepass token [PROFILE]`.
#[derive(Debug, Args)]
#[command(long_about = "Print a fresh access token and nothing else, for \
`curl -H \"Authorization: Bearer $(stagepass token backstage)\" ...`.")]
pub struct TokenArgs {
    /// Profile (default: the only profile).
    pub profile: Option<String>,
    /// The token must stay valid at least this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub min_valid: Option<u64>,
    /// Print the whole JSON answer instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

impl TokenArgs {
    /// The arguments of `stagepass token NAME [--json] [--min-valid S]` read without clap,
    /// or `None` for anything else (no profile, `--help`, `--config`, an unknown flag, a
    /// bad number), which clap then parses and explains. With a profile named, the command
    /// reads no config, so skipping clap changes nothing but the start-up time.
    pub fn from_plain_args(mut args: impl Iterator<Item = std::ffi::OsString>) -> Option<Self> {
        if args.next()?.to_str()? != "token" {
            return None;
        }
        let mut out = TokenArgs {
            profile: None,
            min_valid: None,
            json: false,
        };
        while let Some(arg) = args.next() {
            let arg = arg.into_string().ok()?;
            match arg.as_str() {
                "--json" if !out.json => out.json = true,
                "--min-valid" if out.min_valid.is_none() => {
                    out.min_valid = Some(args.next()?.to_str()?.parse().ok()?);
                }
                a if a.starts_with("--min-valid=") && out.min_valid.is_none() => {
                    out.min_valid = Some(a["--min-valid=".len()..].parse().ok()?);
                }
                a if out.profile.is_none()
                    && !a.starts_with('-')
                    && crate::config::valid_name(a) =>
                {
                    out.profile = Some(arg);
                }
                _ => return None,
            }
        }
        out.profile.is_some().then_some(out)
    }
}

/// Prints a raw token answer of the fast path (or the error it carries).
fn print_token(status: u16, body: &[u8], json: bool) -> Result<(), ClientError> {
    crate::client::check_status(status, body)?;
    print_answer(&crate::client::read_answer(body)?, json);
    Ok(())
}

/// The bare token, or with `--json` the whole answer.
fn print_answer(answer: &TokenAnswer<'_>, json: bool) {
    if json {
        output::print_json(answer);
    } else {
        output::print_line(&answer.access_token);
    }
}

/// `stagepass status`.
#[derive(Debug, Args)]
#[command(
    long_about = "Show each profile's state and token expiry, the store backend and the catalog state. \
--json prints the agent's /v1/status document (schema StatusResponse in agent/openapi.yaml)."
)]
pub struct StatusArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `stagepass logout [PROFILE]`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Profile to log out (default: the only device profile).
    pub profile: Option<String>,
}

/// `stagepass doctor`.
#[derive(Debug, Args)]
#[command(
    long_about = "Check the setup, each check with its fix: agent running, socket and port, secret file, \
store backend, IdP discovery, Backstage, clock skew, Codespaces variables, port auto-forward protection. \
Exits 69 when the agent is not running, 1 when another check fails."
)]
pub struct DoctorArgs {}

/// Runs the agent in the foreground.
pub fn agent(extra: Option<PathBuf>) -> ExitCode {
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

/// `stagepass login`.
pub fn login(extra: Option<PathBuf>, args: LoginArgs) -> ExitCode {
    with_agent(extra, |client, config, _| async move {
        let profile = match pick_profile(args.profile, &config, Some(GrantKind::stores_login)) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        login::run(&client, &profile).await
    })
}

/// `stagepass token`.
///
/// With a profile named, the config is not read at all: the agent already has it, and this
/// command is on the hot path of every `$(stagepass token NAME)`.
pub fn token(extra: Option<PathBuf>, args: TokenArgs) -> ExitCode {
    if let Some(code) = token_over_socket(&args) {
        return ExitCode::from(code);
    }
    let TokenArgs {
        profile,
        min_valid,
        json,
    } = args;
    let print = move |client: Client, profile: String| async move {
        let answer = client.token(&profile, min_valid).await?;
        print_answer(&answer, json);
        Ok(ExitCode::SUCCESS)
    };
    match profile {
        Some(p) if crate::config::valid_name(&p) => {
            // No socket (a TCP-only agent, or none): the full client finds the TCP endpoint
            // or says plainly that no agent runs.
            let paths = Paths::from_env();
            let rt = match super::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("stagepass: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(async { print(Client::new(&paths)?, p).await }) {
                Ok(code) => code,
                Err(e) => report(&e),
            }
        }
        named => with_agent(extra, |client, config, _| async move {
            match pick_profile(named, &config, None) {
                Ok(p) => print(client, p).await,
                Err(code) => Ok(code),
            }
        }),
    }
}

/// The fast path of `stagepass token NAME`: a blocking request on the Unix socket, no
/// runtime, no config, no clap; the small front binary ([`super::front`]) runs only this.
/// `None` when it cannot answer here (no profile named, or no socket), so the caller goes on
/// with the full client; else the exit code, after printing the token or the error.
///
/// The code is a plain `u8`: the front binary returns it from its C `main`.
pub fn token_over_socket(args: &TokenArgs) -> Option<u8> {
    let profile = args
        .profile
        .as_deref()
        .filter(|p| crate::config::valid_name(p))?;
    let paths = Paths::from_env();
    let path = crate::client::token_path(profile, args.min_valid);
    match crate::client::quick::get(&paths, &path) {
        Ok(Some((status, body))) => Some(match print_token(status, &body, args.json) {
            Ok(()) => 0,
            Err(e) => report_code(&e),
        }),
        Ok(None) => None,
        Err(e) => Some(report_code(&e)),
    }
}

/// `stagepass status`.
pub fn status(extra: Option<PathBuf>, args: StatusArgs) -> ExitCode {
    with_agent(extra, |client, _, _| async move {
        let answer = client.status().await?;
        if args.json {
            output::print_json(&answer);
        } else {
            output::print_status(&answer, std::time::SystemTime::now());
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `stagepass logout`.
pub fn logout(extra: Option<PathBuf>, args: LogoutArgs) -> ExitCode {
    with_agent(extra, |client, config, _| async move {
        let profile = match pick_profile(args.profile, &config, Some(GrantKind::stores_login)) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        client.logout(&profile).await?;
        output::print_line(&format!("logged out of {profile}"));
        Ok(ExitCode::SUCCESS)
    })
}

/// `stagepass doctor`.
pub fn doctor(extra: Option<PathBuf>, _args: DoctorArgs) -> ExitCode {
    let (config, paths, rt) = match setup(extra) {
        Ok(v) => v,
        Err(code) => return code,
    };
    rt.block_on(doctor::run(&config, &paths))
}

/// Config, paths and a current-thread runtime for a one-shot command, or the exit code
/// (after saying why on stderr).
fn setup(extra: Option<PathBuf>) -> Result<(Config, Paths, tokio::runtime::Runtime), ExitCode> {
    let (config, paths) = super::load(extra).map_err(|e| {
        eprintln!("stagepass: {e}");
        ExitCode::from(super::EXIT_CONFIG)
    })?;
    let rt = super::runtime().map_err(|e| {
        eprintln!("stagepass: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })?;
    Ok((config, paths, rt))
}

/// Loads config, connects to the agent and runs `f`; maps client errors to exit codes.
fn with_agent<F, Fut>(extra: Option<PathBuf>, f: F) -> ExitCode
where
    F: FnOnce(Client, Config, Paths) -> Fut,
    Fut: Future<Output = Result<ExitCode, ClientError>>,
{
    let (config, paths, rt) = match setup(extra) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let client = Client::new(&paths)?;
        f(client, config, paths).await
    });
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Prints a client error and returns its exit code.
fn report(e: &ClientError) -> ExitCode {
    ExitCode::from(report_code(e))
}

/// [`report`] as the plain exit code.
fn report_code(e: &ClientError) -> u8 {
    eprintln!("stagepass: {e}");
    match e {
        ClientError::NotRunning(_) | ClientError::VersionMismatch { .. } => super::EXIT_AGENT_DOWN,
        ClientError::Api { code, .. } if code == "login_required" => {
            eprintln!("stagepass: run `stagepass login` for this profile");
            1
        }
        _ => 1,
    }
}

/// The profile to act on: the one named, else the only one configured (of `kind`, if given).
fn pick_profile(
    named: Option<String>,
    config: &Config,
    kind: Option<fn(GrantKind) -> bool>,
) -> Result<String, ExitCode> {
    if let Some(p) = named {
        if crate::config::valid_name(&p) {
            return Ok(p);
        }
        eprintln!("stagepass: {p:?} is not a valid profile name (letters, digits, '-', '_', '.')");
        return Err(ExitCode::from(EXIT_USAGE));
    }
    let candidates: Vec<&String> = config
        .profiles
        .iter()
        .filter(|(_, p)| kind.is_none_or(|k| k(p.grant)))
        .map(|(n, _)| n)
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            eprintln!(
                "stagepass: no profile configured; name one or add [profiles.NAME] to the config"
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "stagepass: more than one profile is configured; name one of: {}",
                names.join(", ")
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plain(args: &[&str]) -> Option<TokenArgs> {
        TokenArgs::from_plain_args(args.iter().map(std::ffi::OsString::from))
    }

    /// The clap-free reading of `token` must agree with clap wherever it answers.
    #[test]
    fn plain_token_args_agree_with_clap() {
        let forms: &[&[&str]] = &[
            &["token", "dev"],
            &["token", "dev", "--json"],
            &["token", "--json", "dev"],
            &["token", "dev", "--min-valid", "300"],
            &["token", "--min-valid=60", "backstage.prod", "--json"],
            &["token", "a_b-c"],
        ];
        for form in forms {
            let fast = plain(form).unwrap_or_else(|| panic!("{form:?} should be read plainly"));
            let mut argv = vec!["stagepass"];
            argv.extend_from_slice(form);
            let super::super::Command::Token(slow) = super::super::Cli::parse_from(argv).command
            else {
                panic!("clap did not read {form:?} as token");
            };
            assert_eq!(fast.profile, slow.profile, "{form:?}");
            assert_eq!(fast.min_valid, slow.min_valid, "{form:?}");
            assert_eq!(fast.json, slow.json, "{form:?}");
        }
    }

    /// Everything else is left to clap (help, errors, config, the default profile).
    #[test]
    fn other_forms_go_to_clap() {
        let forms: &[&[&str]] = &[
            &[],
            &["status"],
            &["token"],
            &["token", "--json"],
            &["token", "--help"],
            &["token", "-h"],
            &["token", "dev", "other"],
            &["token", "dev", "--json", "--json"],
            &["token", "dev", "--min-valid"],
            &["token", "dev", "--min-valid", "soon"],
            &["token", "dev", "--min-valid=-1"],
            &["token", "dev", "--config", "x.toml"],
            &["token", ".hidden"],
            &["token", "bad/name"],
            &["--config", "x.toml", "token", "dev"],
        ];
        for form in forms {
            assert!(plain(form).is_none(), "{form:?} must go through clap");
        }
    }
}
