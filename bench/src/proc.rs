//! Processes the benchmarks drive: the agent, the bare hyper baseline, wrk, oidc-agent.
//!
//! Each one is started on loopback, owned by a [`Child`] that kills it by PID on drop.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped (by its PID) when dropped.
pub struct Child(std::process::Child);

impl Child {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops it as a container stop would (SIGTERM) and waits for it to exit.
    pub fn terminate(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release `stagepass` binary next to this one, or `STAGEPASS_BENCH_BIN` (e.g. a
/// `--profile profiling` build with symbols for perf).
pub fn stagepass_bin() -> Result<PathBuf> {
    if let Some(b) = std::env::var_os("STAGEPASS_BENCH_BIN") {
        return Ok(PathBuf::from(b));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .map(|d| d.join("stagepass"))
        .context("cannot locate the stagepass binary")?;
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p stagepass`",
            bin.display()
        );
    }
    Ok(bin)
}

/// Is `bin` statically linked (an ELF file with no `PT_INTERP` program header)? The report
/// says so, since the front's start-up time depends on it and only `bench/run` links it so.
pub fn is_static(bin: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let elf = std::fs::read(bin)?;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let field = |o: usize, n: usize| -> Option<u64> {
        let b = elf.get(o..o + n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        bail!("{} is not a 64-bit ELF file", bin.display());
    }
    let (phoff, phentsize, phnum) = match (field(0x20, 8), u16_at(0x36), u16_at(0x38)) {
        (Some(o), Some(s), Some(n)) => (o as usize, s as usize, n as usize),
        _ => bail!("{} has a truncated ELF header", bin.display()),
    };
    for i in 0..phnum {
        let p_type = field(phoff + i * phentsize, 4)
            .with_context(|| format!("{} has a truncated program header", bin.display()))?;
        if p_type as u32 == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The agent paths under a benchmark HOME (same layout as `spawn_agent` sets up).
pub fn paths_of(home: &Path) -> stagepass::paths::Paths {
    stagepass::paths::Paths {
        config_files: vec![home.join("config.toml")],
        state_dir: home.join("state/stagepass"),
        runtime_dir: home.join("xdg/stagepass"),
    }
}

/// Starts `stagepass agent` with its HOME, XDG dirs and config under `home`.
pub fn spawn_agent(bin: &Path, home: &Path) -> Result<Child> {
    spawn_agent_env(bin, home, &[])
}

/// [`spawn_agent`] with extra environment (e.g. `STAGEPASS_AUDIT__ENABLED=false`).
pub fn spawn_agent_env(bin: &Path, home: &Path, env: &[(&str, &str)]) -> Result<Child> {
    let log = std::fs::File::create(home.join("agent.log"))?;
    let child = Command::new(bin)
        .args([
            "--config",
            &home.join("config.toml").to_string_lossy(),
            "agent",
        ])
        .env_clear()
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("xdg"))
        .env("XDG_CONFIG_HOME", home.join("cfg"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .current_dir(home)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Child(child))
}

/// Polls `GET path` on a started agent's socket until it answers 200, or fails at
/// `deadline` (a hang guard, not a measurement: callers time what they need themselves).
pub fn wait_for_200(paths: &stagepass::paths::Paths, path: &str, deadline: Instant) -> Result<()> {
    while !matches!(
        stagepass::client::quick::get(paths, path),
        Ok(Some((200, _)))
    ) {
        if Instant::now() > deadline {
            bail!("{path} did not answer 200 in time (hang guard)");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// A running agent's TCP port and per-boot secret, from its runtime dir.
pub fn endpoint(paths: &stagepass::paths::Paths) -> Result<(u16, String)> {
    let endpoint = stagepass::protocol::EndpointFile::read(paths).context("no endpoint.json")?;
    let port = endpoint.port.context("TCP is off")?;
    Ok((port, std::fs::read_to_string(paths.api_secret())?))
}

/// Resident set size of a process in KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// One `KiB` line of `/proc/PID/status` (0 when unreadable).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The RSS with its two parts: anonymous memory (heap, stacks: what the agent allocated)
/// and file pages (the binary's code and constants, clean and shared with the page cache,
/// which the kernel maps around each page a fault touches), so a change to either shows.
pub fn rss_line(pid: u32) -> String {
    format!(
        "{} KiB (anonymous {} KiB, file-backed {} KiB)",
        rss_kib(pid),
        status_kib(pid, "RssAnon:"),
        status_kib(pid, "RssFile:")
    )
}

/// CPU time (user + system) of a process in clock ticks (0 when unreadable).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = s.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0)
}

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    100.0
}

/// The bare hyper baseline, in its own process like the agent.
pub struct Bare {
    _child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Starts `stagepass-bench bare-hyper BODY_FILE` and reads its port from stdout.
pub fn spawn_bare_hyper(body: &[u8]) -> Result<Bare> {
    let dir = tempfile::tempdir()?;
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, body)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("bare-hyper")
        .arg(&body_file)
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().context("no stdout")?;
    let child = Child(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let port = line.trim().parse().context("bare-hyper printed no port")?;
    Ok(Bare {
        _child: child,
        port,
        _dir: dir,
    })
}

/// The minimal hyper server: answers the file's bytes, with the agent's response headers,
/// to every request on every connection. Prints its port, serves until killed.
pub fn bare_hyper_main(args: &[String]) -> Result<()> {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let file = args.first().context("usage: bare-hyper BODY_FILE")?;
    let body = Bytes::from(std::fs::read(file)?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = http::Response::new(Full::new(body));
                        let h = r.headers_mut();
                        h.insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        h.insert(
                            http::header::CACHE_CONTROL,
                            http::HeaderValue::from_static("no-store"),
                        );
                        h.insert(
                            "x-content-type-options",
                            http::HeaderValue::from_static("nosniff"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// The test bed IdP every benchmark uses: 1 h access tokens, so none expires mid-run.
pub async fn bench_idp() -> Result<stagepass_e2e::Idp> {
    stagepass_e2e::Idp::start(stagepass_e2e::IdpOptions {
        access_ttl: 3600,
        ..stagepass_e2e::IdpOptions::default()
    })
    .await
    .context("starting the test bed IdP (run tests/install/node.sh first)")
}

/// The agent's exact answer to `GET /v1/token/dev` on `port`, for the bare hyper baseline
/// to serve byte for byte.
pub async fn token_answer(port: u16, secret: &str) -> Result<bytes::Bytes> {
    Ok(reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/token/dev"))
        .bearer_auth(secret)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?)
}

/// One wrk run: requests/s and latency percentiles (wrk's HdrHistogram).
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile (issue 23: the tail beside p99), from [`WRK_PCT`].
    pub p999: Duration,
    /// Requests completed.
    pub requests: u64,
}

/// A wrk script whose `done` hook prints the 99.9th percentile, which `--latency` leaves out
/// (it prints 50/75/90/99 only), in microseconds.
const WRK_PCT: &str = "done = function(summary, latency, requests)\n  \
    io.write(string.format(\"P999 %d\\n\", latency:percentile(99.9)))\nend\n";

/// Runs wrk against `url` with `conns` keep-alive connections for `secs`.
pub fn wrk(url: &str, conns: usize, secs: u64, header: Option<&str>) -> Result<WrkResult> {
    let script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    std::fs::write(script.path(), WRK_PCT)?;
    let mut cmd = Command::new("wrk");
    cmd.arg("-s").arg(script.path());
    cmd.args([
        "-t",
        if conns == 1 { "1" } else { "2" },
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{secs}s"),
        "--latency",
    ]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") {
        bail!("wrk failed or saw errors:\n{text}");
    }
    let mut r = WrkResult {
        rps: 0.0,
        p50: Duration::ZERO,
        p90: Duration::ZERO,
        p99: Duration::ZERO,
        p999: Duration::ZERO,
        requests: 0,
    };
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("Requests/sec:"), Some(v)) => r.rps = v.parse().unwrap_or(0.0),
            (Some("50%"), Some(v)) => r.p50 = parse_wrk_time(v),
            (Some("90%"), Some(v)) => r.p90 = parse_wrk_time(v),
            (Some("99%"), Some(v)) => r.p99 = parse_wrk_time(v),
            (Some("P999"), Some(v)) => {
                r.p999 = Duration::from_micros(v.parse().unwrap_or(0));
            }
            (Some(n), Some("requests")) => r.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    if r.rps <= 0.0 {
        bail!("could not read wrk's output:\n{text}");
    }
    Ok(r)
}

fn parse_wrk_time(v: &str) -> Duration {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let x: f64 = num.parse().unwrap_or(0.0);
    Duration::from_secs_f64(match unit {
        "us" => x / 1e6,
        "ms" => x / 1e3,
        "s" => x,
        "m" => x * 60.0,
        _ => 0.0,
    })
}

/// Times one run of a command from spawn to exit; it must succeed.
pub fn time_cmd(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let took = t.elapsed();
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// Debian's oidc-agent, loaded non-interactively with a refresh token of the confidential
/// client `stagepass-ci` from the same IdP; stopped by PID on drop.
pub struct OidcAgent {
    pid: u32,
    sock: String,
    home: tempfile::TempDir,
}

impl OidcAgent {
    /// Starts oidc-agent and runs `oidc-gen` for the account `bench`.
    pub async fn start(idp: &stagepass_e2e::Idp) -> Result<OidcAgent> {
        let home = tempfile::tempdir()?;
        let out = Command::new("oidc-agent")
            .env("HOME", home.path())
            .env("OIDC_CONFIG_DIR", home.path().join("oidc"))
            .output()
            .context("running oidc-agent (apt-get install oidc-agent-cli)")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let var = |name: &str| {
            text.split(';')
                .find_map(|p| p.trim().strip_prefix(&format!("{name}=")))
                .map(str::to_string)
        };
        let (Some(sock), Some(pid)) = (var("OIDC_SOCK"), var("OIDCD_PID")) else {
            bail!("oidc-agent printed no OIDC_SOCK/OIDCD_PID: {text}");
        };
        let agent = OidcAgent {
            pid: pid.parse().context("OIDCD_PID")?,
            sock,
            home,
        };
        let rt = confidential_refresh_token(idp).await?;
        let gen_out = Command::new("oidc-gen")
            .env("HOME", agent.home.path())
            .env("OIDC_CONFIG_DIR", agent.home.path().join("oidc"))
            .env("OIDC_SOCK", &agent.sock)
            .env("OIDC_ENCRYPTION_PW", "bench-pw")
            .args([
                "-m",
                &format!("--iss={}", idp.issuer()),
                &format!("--client-id={}", stagepass_e2e::Idp::CONFIDENTIAL_CLIENT),
                &format!(
                    "--client-secret={}",
                    stagepass_e2e::Idp::DEFAULT_CLIENT_SECRET
                ),
                "--scope=openid offline_access",
                &format!("--rt={rt}"),
                "--pw-env",
                "--confirm-default",
                "--prompt=none",
                "--no-url-call",
                "bench",
            ])
            .stdin(Stdio::null())
            .output()?;
        if !gen_out.status.success() {
            bail!(
                "oidc-gen failed: {}{}",
                String::from_utf8_lossy(&gen_out.stdout),
                String::from_utf8_lossy(&gen_out.stderr)
            );
        }
        // The first call may refresh; later ones are cache hits.
        time_cmd(&mut agent.command()).context("first oidc-token")?;
        Ok(agent)
    }

    /// `oidc-token bench` against this agent.
    pub fn command(&self) -> Command {
        let mut c = Command::new("oidc-token");
        c.arg("bench")
            .env_clear()
            .env("HOME", self.home.path())
            .env("OIDC_SOCK", &self.sock);
        c
    }
}

impl Drop for OidcAgent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

/// A refresh token of `stagepass-ci` through the IdP's device flow (client secret in Basic).
async fn confidential_refresh_token(idp: &stagepass_e2e::Idp) -> Result<String> {
    let client = reqwest::Client::new();
    let (id, secret) = (
        stagepass_e2e::Idp::CONFIDENTIAL_CLIENT,
        stagepass_e2e::Idp::DEFAULT_CLIENT_SECRET,
    );
    let auth: serde_json::Value = client
        .post(idp.device_authorization_endpoint())
        .basic_auth(id, Some(secret))
        .form(&[("scope", "openid offline_access")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let user_code = auth["user_code"].as_str().context("no user_code")?;
    let device_code = auth["device_code"].as_str().context("no device_code")?;
    idp.approve(user_code, "bench").await?;
    let t = idp
        .token_request(
            &[
                ("grant_type", stagepass_e2e::idp::GRANT_DEVICE_CODE),
                ("device_code", device_code),
            ],
            Some((id, secret)),
        )
        .await?
        .map_err(|e| anyhow::anyhow!("device code redemption: {e:?}"))?;
    t.refresh_token.context("no refresh token")
}
