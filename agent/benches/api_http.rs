//! Local API throughput and the `stagepass token` CLI, each next to a baseline measured in
//! the same run on the same machine.
//!
//! 1. HTTP cache hits of `GET /v1/token/{profile}` through the whole API (guard on: Host,
//!    browser and proxy checks, constant-time secret compare, routing, metrics) against a
//!    minimal hyper server answering the same bytes, at 16 and 64 keep-alive connections.
//!    Prints requests/s, p50 and p99 of each, and the ratio (target: at least 0.8).
//! 2. `stagepass token bench` as a process (spawn, config, socket, answer): median and p99
//!    over 200 runs (target: median at most 1 ms), and `oidc-token` from Debian's
//!    `oidc-agent-cli` when it is installed and `OIDC_SOCK` names a loaded account.
//!
//! Run with `cargo bench -p stagepass --bench api_http` (release). The token comes from an
//! `env` profile, so no IdP is involved: every measured request is a cache hit.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use stagepass::api::{ApiState, server};
use stagepass::config::{ApiConfig, Config};
use stagepass::secret::Secret;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN_VAR: &str = "STAGEPASS_BENCH_TOKEN";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RUN: Duration = Duration::from_secs(3);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The env profile reads its token from the environment: re-run ourselves with it set
    // rather than mutating our own environment.
    if std::env::var_os(TOKEN_VAR).is_none() {
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(
                TOKEN_VAR,
                "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJlLW9mLWEtYmVuY2gtdG9rZW4",
            )
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(http_bench())?;
    rt.block_on(cli_bench())?;
    Ok(())
}

fn config() -> Result<Config, Box<dyn std::error::Error>> {
    let text = format!(
        "[api]\nport = 0\nunix_socket = false\nmax_connections = 256\n\
         [store]\nbackend = \"file\"\n[profiles.bench]\ngrant = \"env\"\ntoken_env = \"{TOKEN_VAR}\"\n"
    );
    Ok(toml::from_str(&text)?)
}

async fn http_bench() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let paths = stagepass::paths::Paths {
        config_files: vec![],
        state_dir: tmp.path().join("state"),
        runtime_dir: tmp.path().join("run"),
    };
    let config = config()?;
    let broker = stagepass::broker::Broker::start(&config, &paths).await?;
    let api: ApiConfig = config.api.clone();
    let bound = server::bind(&api, &paths).await?;
    let port = bound.tcp_port().ok_or("no port")?;
    let state = ApiState::new(broker, Secret::new(SECRET), api, Some(port), None);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::run(
        bound,
        Arc::new(state),
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(1),
    ));

    // The exact bytes the API answers, for the baseline to serve.
    let body = one_get(port).await?;
    let base_port = baseline_server(Bytes::from(body)).await?;

    println!("GET /v1/token/bench cache hits, {}s per run", RUN.as_secs());
    println!(
        "{:<10} {:>6} {:>12} {:>10} {:>10}",
        "server", "conns", "req/s", "p50 us", "p99 us"
    );
    for conns in [16usize, 64] {
        let ours = load(port, conns).await?;
        let base = load(base_port, conns).await?;
        ours.print("stagepass", conns);
        base.print("baseline", conns);
        println!(
            "ratio at {conns} connections: {:.2} (target >= 0.80)",
            ours.rps / base.rps
        );
    }
    let _ = stop_tx.send(());
    Ok(())
}

async fn one_get(port: u16) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = send.send_request(request(port)?).await?;
    if resp.status() != 200 {
        return Err(format!("the API answered {}", resp.status()).into());
    }
    Ok(resp.into_body().collect().await?.to_bytes().to_vec())
}

fn request(port: u16) -> Result<http::Request<Full<Bytes>>, http::Error> {
    http::Request::builder()
        .uri("/v1/token/bench")
        .header("host", format!("127.0.0.1:{port}"))
        .header("authorization", format!("Bearer {SECRET}"))
        .body(Full::new(Bytes::new()))
}

/// A minimal hyper server answering `body` to everything, as the API would.
async fn baseline_server(body: Bytes) -> Result<u16, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = http::Response::new(Full::new(body));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(port)
}

struct Result_ {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

impl Result_ {
    fn print(&self, name: &str, conns: usize) {
        println!(
            "{name:<10} {conns:>6} {:>12.0} {:>10} {:>10}",
            self.rps,
            self.p50.as_micros(),
            self.p99.as_micros()
        );
    }
}

/// `conns` keep-alive connections sending requests back to back for [`RUN`].
async fn load(port: u16, conns: usize) -> Result<Result_, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return lat;
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return lat;
            };
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let Ok(req) = request(port) else { break };
                let t = Instant::now();
                let Ok(resp) = send.send_request(req).await else {
                    break;
                };
                if resp.into_body().collect().await.is_err() {
                    break;
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    if all.is_empty() {
        return Err("no request succeeded".into());
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    Ok(Result_ {
        rps: all.len() as f64 / RUN.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

/// Runs the real agent in this process and times `stagepass token bench` as a process.
async fn cli_bench() -> Result<(), Box<dyn std::error::Error>> {
    let bin = match std::env::var_os("STAGEPASS_BIN") {
        Some(b) => std::path::PathBuf::from(b),
        None => {
            let exe = std::env::current_exe()?;
            exe.parent()
                .and_then(|d| d.parent())
                .map(|d| d.join("stagepass"))
                .ok_or("cannot locate the stagepass binary")?
        }
    };
    if !bin.is_file() {
        println!(
            "\nstagepass token: {} not built; run `cargo build --release -p stagepass`",
            bin.display()
        );
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let cfg_path = tmp.path().join("config.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[api]\nport = 0\n[store]\nbackend = \"file\"\n[profiles.bench]\ngrant = \"env\"\ntoken_env = \"{TOKEN_VAR}\"\n"
        ),
    )?;
    let paths = stagepass::paths::Paths {
        config_files: vec![cfg_path.clone()],
        state_dir: tmp.path().join("state"),
        runtime_dir: tmp.path().join("xdg/stagepass"),
    };
    let config = Config::load_files(&paths.config_files)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(stagepass::daemon::run_until(config, paths.clone(), async {
        let _ = stop_rx.await;
    }));
    let end = Instant::now() + Duration::from_secs(30);
    while !paths.socket().exists() || !paths.api_secret().exists() {
        if Instant::now() > end {
            return Err("the agent did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut times = Vec::new();
    for _ in 0..200 {
        let (b, home, cfg) = (bin.clone(), tmp.path().to_path_buf(), cfg_path.clone());
        times.push(tokio::task::spawn_blocking(move || run_cli(&b, &home, &cfg)).await??);
    }
    times.sort_unstable();
    println!(
        "\nstagepass token (process): median {} us, p99 {} us over {} runs (target: median <= 1000 us)",
        times[times.len() / 2].as_micros(),
        times[times.len() * 99 / 100].as_micros(),
        times.len()
    );
    oidc_token_baseline();
    let _ = stop_tx.send(());
    agent.await??;
    Ok(())
}

/// One `stagepass token bench` process, timed from spawn to exit.
fn run_cli(
    bin: &std::path::Path,
    home: &std::path::Path,
    cfg: &std::path::Path,
) -> Result<Duration, String> {
    let t = Instant::now();
    let out = std::process::Command::new(bin)
        .args(["token", "bench"])
        .env_clear()
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("xdg"))
        .env("XDG_CONFIG_HOME", home.join("cfg"))
        .env("STAGEPASS_CONFIG", cfg)
        .output()
        .map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "stagepass token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}

/// `oidc-token ACCOUNT` from Debian's oidc-agent-cli, when set up (`OIDC_SOCK`, `STAGEPASS_BENCH_OIDC_ACCOUNT`).
fn oidc_token_baseline() {
    let (Some(_), Some(account)) = (
        std::env::var_os("OIDC_SOCK"),
        std::env::var_os("STAGEPASS_BENCH_OIDC_ACCOUNT"),
    ) else {
        println!(
            "oidc-token: skipped (set OIDC_SOCK and STAGEPASS_BENCH_OIDC_ACCOUNT to a loaded oidc-agent account)"
        );
        return;
    };
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        match std::process::Command::new("oidc-token")
            .arg(&account)
            .output()
        {
            Ok(o) if o.status.success() => times.push(t.elapsed()),
            _ => {
                println!("oidc-token: failed; skipped");
                return;
            }
        }
    }
    times.sort_unstable();
    println!(
        "oidc-token (process):      median {} us, p99 {} us over {} runs",
        times[times.len() / 2].as_micros(),
        times[times.len() * 99 / 100].as_micros(),
        times.len()
    );
}
