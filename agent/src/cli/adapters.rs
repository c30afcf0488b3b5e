//! `git-credential`, `kube-credential`, `docker-credential`, `env`, `exec`.
//!
//! Process glue around the protocol code in [`crate::adapters`]: read stdin, ask the running
//! agent for a token over its socket, write the answer, and fail at once in each tool's own
//! convention when the agent is down, the profile unknown or the login gone:
//! git gets no credential and one line on stderr; docker gets the protocol's plain message on
//! stdout and exit 1; kubectl and exec get a message on stderr and a non-zero exit. Nothing
//! here prompts, and every agent request is bounded by the client's timeouts.

use crate::adapters::docker::{self, DockerError, DockerOperation, DockerRouter};
use crate::adapters::git::{self, GitAnswer, GitOperation, GitRequest, GitRouter};
use crate::adapters::{env as envvars, kube, token};
use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::paths::Paths;
use clap::Args;
use std::io::{Read, Write};
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
pub struct EnvArgs {
    /// AWS role (`[aws.NAME]`) the AWS variables point at; default: the only one, else
    /// `default`, else the first by name.
    #[arg(long = "aws-role")]
    pub aws_role: Option<String>,
}

/// `stagepass exec [--profile P]... -- CMD ARGS`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Profiles whose tokens are put in the environment.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// AWS role the AWS variables point at (as for `stagepass env`).
    #[arg(long = "aws-role")]
    pub aws_role: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// A failed token fetch: the line to print, and whether the agent is down.
struct FetchError {
    message: String,
    agent_down: bool,
}

impl FetchError {
    fn exit_code(&self) -> ExitCode {
        if self.agent_down {
            ExitCode::from(super::EXIT_AGENT_DOWN)
        } else {
            ExitCode::FAILURE
        }
    }
}

/// One runtime and one client for the few requests a command makes.
struct Agent {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Agent {
    fn connect(paths: &Paths) -> Result<Self, FetchError> {
        let rt = super::runtime().map_err(|e| FetchError {
            message: format!("cannot start the runtime: {e}"),
            agent_down: false,
        })?;
        let client = Client::new(paths).map_err(|e| fetch_error("", &e))?;
        Ok(Self { rt, client })
    }

    fn token(&self, profile: &str) -> Result<token::AgentToken, FetchError> {
        let answer = self
            .rt
            .block_on(self.client.token(profile, None))
            .map_err(|e| fetch_error(profile, &e))?;
        token::AgentToken::from_answer(answer).map_err(|e| FetchError {
            message: format!("{e}; run `stagepass doctor`"),
            agent_down: false,
        })
    }

    fn invalidate(&self, profile: &str, fingerprint: &str) -> Result<(), FetchError> {
        self.rt
            .block_on(self.client.invalidate(profile, fingerprint))
            .map(|_| ())
            .map_err(|e| fetch_error(profile, &e))
    }
}

fn fetch_error(profile: &str, e: &ClientError) -> FetchError {
    FetchError {
        message: token::explain(profile, e),
        agent_down: matches!(e, ClientError::NotRunning(_)),
    }
}

/// Reads stdin up to `max` bytes (one more is read to detect oversize input).
fn read_stdin(max: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    std::io::stdin().lock().take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stagepass: cannot write the answer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn profile_names(config: &Config) -> std::collections::BTreeSet<String> {
    config.profiles.keys().cloned().collect()
}

/// `stagepass git-credential`.
pub fn git_credential(extra: Option<PathBuf>, args: GitCredentialArgs) -> ExitCode {
    // git: unknown operations must be ignored.
    let Some(op) = GitOperation::parse(&args.operation) else {
        return ExitCode::SUCCESS;
    };
    let fail = |msg: &str| {
        eprintln!("stagepass git-credential: {msg}");
        ExitCode::FAILURE
    };
    let input = match read_stdin(git::MAX_REQUEST_BYTES) {
        Ok(i) => i,
        Err(e) => return fail(&format!("cannot read stdin: {e}")),
    };
    let req = match GitRequest::parse(&input) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if op == GitOperation::Store {
        // The agent owns and refreshes tokens; nothing to keep.
        return ExitCode::SUCCESS;
    }
    let (config, paths) = match super::load(extra) {
        Ok(v) => v,
        Err(e) => return fail(&e.to_string()),
    };
    let route = match GitRouter::new(&config.git, &profile_names(&config)).route(&req) {
        Ok(Some(r)) => r,
        // Not ours: no output, git asks its next helper.
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => return fail(&e.to_string()),
    };
    let agent = match Agent::connect(&paths) {
        Ok(a) => a,
        Err(e) => return fail(&e.message),
    };
    match op {
        GitOperation::Get => {
            let t = match agent.token(&route.profile) {
                Ok(t) => t,
                Err(e) => return fail(&e.message),
            };
            let answer = GitAnswer::for_request(&req, &route, t.access_token, t.expires_at);
            if let Err(e) = answer.validate() {
                return fail(&format!("profile {}: {e}; not answering", route.profile));
            }
            write_stdout(&answer.to_bytes())
        }
        GitOperation::Erase => {
            let Some(used) = req.used_secret() else {
                return ExitCode::SUCCESS;
            };
            match agent.invalidate(&route.profile, &used.fingerprint()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.message),
            }
        }
        GitOperation::Store => ExitCode::SUCCESS,
    }
}

/// `stagepass kube-credential`.
pub fn kube_credential(extra: Option<PathBuf>, args: KubeCredentialArgs) -> ExitCode {
    let fail = |msg: &str, code: ExitCode| {
        eprintln!("stagepass kube-credential: {msg}");
        code
    };
    let info = std::env::var("KUBERNETES_EXEC_INFO").ok();
    if let Err(e) = kube::check_exec_info(info.as_deref()) {
        return fail(&e.to_string(), ExitCode::FAILURE);
    }
    let paths = match super::load(extra) {
        Ok((_, p)) => p,
        Err(e) => return fail(&e.to_string(), ExitCode::from(super::EXIT_CONFIG)),
    };
    let t = match Agent::connect(&paths).and_then(|a| a.token(&args.profile)) {
        Ok(t) => t,
        Err(e) => return fail(&e.message, e.exit_code()),
    };
    let mut out = kube::exec_credential(&t.access_token, t.expires_at).to_json();
    out.push('\n');
    write_stdout(out.as_bytes())
}

/// `docker-credential-stagepass` entry (argv[0] dispatch): the operation is argv[1].
pub fn docker_main() -> ExitCode {
    let op = std::env::args().nth(1).unwrap_or_default();
    let extra = std::env::var_os("STAGEPASS_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    docker_run(extra, &op)
}

/// `stagepass docker-credential`.
pub fn docker_credential(extra: Option<PathBuf>, args: DockerCredentialArgs) -> ExitCode {
    docker_run(extra, &args.operation)
}

fn docker_run(extra: Option<PathBuf>, op: &str) -> ExitCode {
    match docker_answer(extra, op) {
        Ok(text) => write_stdout(text.as_bytes()),
        Err(e) => {
            // The protocol: a plain message on stdout, non-zero exit.
            let _ = write_stdout(format!("{e}\n").as_bytes());
            ExitCode::FAILURE
        }
    }
}

fn docker_answer(extra: Option<PathBuf>, op: &str) -> Result<String, DockerError> {
    let op = DockerOperation::parse(op).ok_or_else(|| DockerError::UnknownOperation(op.into()))?;
    let input = match op {
        DockerOperation::List => Vec::new(),
        _ => read_stdin(docker::MAX_INPUT_BYTES)
            .map_err(|e| DockerError::Agent(format!("cannot read stdin: {e}")))?,
    };
    match op {
        DockerOperation::Store => {
            return Err(DockerError::StoreRefused(format!(
                "{} is served by the agent or not at all",
                docker::store_server(&input)
            )));
        }
        DockerOperation::Erase => return Ok(String::new()),
        DockerOperation::Get | DockerOperation::List => {}
    }
    let (config, paths) = super::load(extra).map_err(|e| DockerError::Agent(e.to_string()))?;
    let router = DockerRouter::new(&config.docker);
    if op == DockerOperation::List {
        return Ok(format!("{}\n", router.list_json()));
    }
    let server_url = docker::parse_get_input(&input)?;
    let route = router.route(&server_url)?;
    let t = Agent::connect(&paths)
        .and_then(|a| a.token(&route.profile))
        .map_err(|e| DockerError::Agent(e.message))?;
    Ok(format!(
        "{}\n",
        docker::get_json(&server_url, &route, &t.access_token)
    ))
}

/// The agent's TCP port: the endpoint file the running agent writes, else the config.
fn agent_port(config: &Config, paths: &Paths) -> u16 {
    crate::protocol::EndpointFile::read(paths)
        .and_then(|e| e.port)
        .unwrap_or(config.api.port)
}

/// The variables pointing tools at the agent (API URL, AWS pair), with a note on stderr
/// naming the roles not chosen.
fn agent_vars(
    config: &Config,
    paths: &Paths,
    aws_role: Option<&str>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let picked = envvars::pick_aws_role(config.aws.keys(), aws_role)?;
    if let Some((role, others)) = &picked
        && !others.is_empty()
    {
        eprintln!(
            "stagepass: AWS variables point at role {role}; others: {} (choose with --aws-role)",
            others.join(", ")
        );
    }
    Ok(envvars::agent_vars(
        agent_port(config, paths),
        &paths.api_secret(),
        picked.as_ref().map(|(r, _)| r.as_str()),
    ))
}

/// `stagepass env`.
pub fn env(extra: Option<PathBuf>, args: EnvArgs) -> ExitCode {
    let (config, paths) = match super::load(extra) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stagepass env: {e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    match agent_vars(&config, &paths, args.aws_role.as_deref()) {
        Ok(vars) => write_stdout(envvars::exports(&vars).as_bytes()),
        Err(e) => {
            eprintln!("stagepass env: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `stagepass exec`.
pub fn exec(extra: Option<PathBuf>, args: ExecArgs) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let fail = |msg: &str, code: ExitCode| {
        eprintln!("stagepass exec: {msg}");
        code
    };
    let (config, paths) = match super::load(extra) {
        Ok(v) => v,
        Err(e) => return fail(&e.to_string(), ExitCode::from(super::EXIT_CONFIG)),
    };
    let mut vars = match agent_vars(&config, &paths, args.aws_role.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(&e, ExitCode::FAILURE),
    };
    let mut tokens = Vec::new();
    if !args.profiles.is_empty() {
        let agent = match Agent::connect(&paths) {
            Ok(a) => a,
            Err(e) => return fail(&e.message, e.exit_code()),
        };
        for p in &args.profiles {
            match agent.token(p) {
                Ok(t) => tokens.push((envvars::token_var(p), t.access_token)),
                Err(e) => return fail(&e.message, e.exit_code()),
            }
        }
    }
    let Some((program, rest)) = args.command.split_first() else {
        return fail("no command given", ExitCode::FAILURE);
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (k, v) in vars.iter_mut() {
        cmd.env(k, v);
    }
    for (k, v) in &tokens {
        cmd.env(k, v.expose());
    }
    // Only returns on failure.
    let err = cmd.exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(
        &format!("cannot run {program:?}: {err}"),
        ExitCode::from(code),
    )
}
