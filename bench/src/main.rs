//! `stagepass-bench`: the side-by-side figures of issue 8, from one command (`bench/run`).
//!
//! It starts the real IdP of the test bed on loopback, runs the release `stagepass` binary
//! as the agent, and measures each pair alternately (A B A B ...) so machine drift cancels:
//! HTTP cache hits against a bare hyper server (wrk), `stagepass token` against
//! `oidc-token`, single flight under a slow IdP, boot and memory, and a fleet simulation
//! that runs the real scheduler code (`broker::timing`) on a virtual clock. It prints a
//! markdown table, writes it with a JSON twin and an SVG chart to the output directory.
//! Nothing here is a test: no figure is asserted.

mod attest;
mod catalog;
mod catalog_live;
mod devcontainer;
mod fleet;
mod proc;
mod report;
mod signin;
mod svg;

use anyhow::{Context, Result};
use report::{Report, Series};
use stagepass_e2e::{Fault, Idp};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bare-hyper") {
        return proc::bare_hyper_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("serve") {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(serve());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .rposition(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| PathBuf::from("bench"), PathBuf::from);
    let rt = tokio::runtime::Runtime::new()?;
    // `--only attest|http|cli|restart|catalog|fleet|devcontainer`: one section (minutes less than everything, for iterating);
    // the report then holds that section only.
    let only = args
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].clone());
    let report = match only.as_deref() {
        None => rt.block_on(run(quick))?,
        Some("fleet") => {
            let mut r = Report::new(quick);
            fleet::run(&mut r);
            r
        }
        Some("devcontainer") => {
            let mut r = Report::new(quick);
            rt.block_on(devcontainer::run(&mut r, quick))?;
            r
        }
        Some(section @ ("attest" | "http" | "cli" | "restart")) => {
            rt.block_on(run_only(section, quick))?
        }
        // The live catalog and, on the same Backstage, the user's sign-in (issue 22).
        Some("catalog") => rt.block_on(catalog_only(quick))?,
        Some(other) => anyhow::bail!(
            "--only takes attest, http, cli, restart, catalog, fleet or devcontainer, not {other:?}"
        ),
    };
    report.write(&out)?;
    Ok(())
}

/// The catalog against a live Backstage (save -> diff, push -> Backstage).
async fn catalog_live(r: &mut Report, quick: bool) -> Result<()> {
    catalog_live::run(r, if quick { 5 } else { 20 }, if quick { 3 } else { 6 })
        .await
        .context("catalog against a live Backstage")
}

/// `--only catalog`.
async fn catalog_only(quick: bool) -> Result<Report> {
    let mut r = Report::new(quick);
    catalog_live(&mut r, quick).await?;
    Ok(r)
}

async fn run_only(section: &str, quick: bool) -> Result<Report> {
    let mut r = Report::new(quick);
    let bin = proc::stagepass_bin()?;
    let idp = proc::bench_idp().await?;
    if section == "attest" {
        attest::run(&mut r, &bin, &idp, quick).await?;
        return Ok(r);
    }
    if section == "restart" {
        restart(&mut r, &bin, &idp, if quick { 3 } else { 10 }).await?;
        return Ok(r);
    }
    let mut agent = boot(&mut r, &bin, &idp, 1).await?;
    if section == "http" {
        http(&mut r, &mut agent, quick).await?;
        rss_after_load(&mut r, &agent);
    } else {
        cli(&mut r, &bin, &agent, &idp, if quick { 100 } else { 500 }).await?;
    }
    Ok(r)
}

async fn run(quick: bool) -> Result<Report> {
    let mut r = Report::new(quick);
    let bin = proc::stagepass_bin()?;
    r.fact(
        "binary sizes",
        format!(
            "stagepass (front) {} bytes, {}; stagepass-core {} bytes",
            std::fs::metadata(&bin)?.len(),
            if proc::is_static(&bin)? {
                "static PIE"
            } else {
                "dynamically linked (build it with bench/run for the static front)"
            },
            std::fs::metadata(bin.with_file_name("stagepass-core"))?.len()
        ),
    );
    let idp = proc::bench_idp().await?;

    // (6) and (5) first: no agent running, no noise from the others.
    fleet::run(&mut r);
    catalog::run(&mut r, quick)?;
    catalog_live(&mut r, quick).await?;
    // (7) real dev containers, before any agent runs on the host.
    devcontainer::run(&mut r, quick)
        .await
        .context("real dev containers")?;

    // (4) boot, then keep the last agent for (1) and (2).
    let mut agent = boot(&mut r, &bin, &idp, if quick { 2 } else { 5 }).await?;

    // (1) HTTP cache hits vs bare hyper.
    http(&mut r, &mut agent, quick).await?;

    // (2) stagepass token vs oidc-token.
    cli(&mut r, &bin, &agent, &idp, if quick { 100 } else { 500 }).await?;

    // Issue 11: attestation + audit on vs off, HTTP and CLI.
    attest::run(&mut r, &bin, &idp, quick).await?;

    // Idle CPU of the agent (it watches a generated 10k-file repository).
    let idle = if quick { 10 } else { 60 };
    let cpu = proc::cpu_ticks(agent.pid());
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let ticks = proc::cpu_ticks(agent.pid()).saturating_sub(cpu);
    r.fact(
        "idle CPU (agent watching a 10k-file repository)",
        format!(
            "{:.3} % of one core over {idle} s ({ticks} clock ticks)",
            ticks as f64 / proc::ticks_per_second() / idle as f64 * 100.0
        ),
    );

    rss_after_load(&mut r, &agent);
    drop(agent);

    // (4b) restarts with and without a stored access token.
    restart(&mut r, &bin, &idp, if quick { 3 } else { 10 }).await?;

    // (3) single flight.
    single_flight(&mut r, &idp, quick).await?;
    Ok(r)
}

/// `stagepass-bench serve`: the HTTP pair of benchmark (1) left running for a profiler
/// (`perf record -p PID` while wrk runs against each port), until stdin closes.
async fn serve() -> Result<()> {
    let bin = proc::stagepass_bin()?;
    let idp = proc::bench_idp().await?;
    let home = prepare_home(&idp, None).await?;
    let paths = proc::paths_of(home.path());
    let child = proc::spawn_agent(&bin, home.path())?;
    proc::wait_for_200(
        &paths,
        "/v1/token/dev",
        Instant::now() + Duration::from_secs(30),
    )?;
    let (port, secret) = proc::endpoint(&paths)?;
    let body = proc::token_answer(port, &secret).await?;
    let bare = proc::spawn_bare_hyper(&body)?;
    println!(
        "agent pid {} port {port}\nbare hyper port {}\nsecret file {}\n\
         wrk -c16 -d5s -H \"Authorization: Bearer $(cat {})\" http://127.0.0.1:PORT/v1/token/dev\n\
         close stdin (Ctrl-D) to stop",
        child.pid(),
        bare.port,
        paths.api_secret().display(),
        paths.api_secret().display()
    );
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    drop(bare);
    drop(child);
    Ok(())
}

/// A running agent with a stored device login, and how to reach it.
pub struct Agent {
    child: proc::Child,
    /// Its HOME (runtime dir, config, state below it).
    pub home: tempfile::TempDir,
    /// TCP port.
    pub port: u16,
    /// The per-boot secret.
    pub secret: String,
    /// Requests the benchmarks sent it (for the RSS line).
    pub requests_served: u64,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.pid()
    }
    fn runtime_dir(&self) -> PathBuf {
        self.home.path().join("xdg/stagepass")
    }
}

/// Writes a config with one device profile `dev` and a stored grant for it.
/// With `repo_files`, the catalog watches a generated repository of that many files;
/// without, the catalog is off.
pub(crate) async fn prepare_home(
    idp: &Idp,
    repo_files: Option<usize>,
) -> Result<tempfile::TempDir> {
    let home = stagepass_e2e::support::private_tempdir()?;
    let repo = home.path().join("repo");
    let catalog = match repo_files {
        Some(n) => {
            catalog::generate(&repo, n)?;
            format!("[catalog]\nroot = \"{}\"\n", repo.display())
        }
        None => "[catalog]\nenabled = false\n".to_string(),
    };
    let cfg = home.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nport = 0\nmax_connections = 256\n[store]\nbackend = \"file\"\n\
             {catalog}\
             [profiles.dev]\ngrant = \"device\"\nissuer = \"{}\"\nclient_id = \"stagepass-cli\"\n\
             scopes = [\"openid\", \"offline_access\", \"catalog:read\"]\naudience = \"{}\"\n",
            idp.issuer(),
            stagepass_e2e::idp::AUD_BACKSTAGE
        ),
    )?;
    let t = idp
        .device_login(
            Idp::PUBLIC_CLIENT,
            "openid offline_access catalog:read",
            Some(stagepass_e2e::idp::AUD_BACKSTAGE),
            "bench",
        )
        .await?;
    let rt = t.refresh_token.context("the IdP gave no refresh token")?;
    let config = stagepass::config::Config::load_files(&[cfg])?;
    let store =
        stagepass::store::GrantStore::open(&config.store, &home.path().join("state/stagepass"))
            .await?;
    store.save(
        "dev",
        &stagepass::store::StoredGrant::new(idp.issuer(), Idp::PUBLIC_CLIENT, rt, None),
    )?;
    Ok(home)
}

/// RSS after the HTTP load (with how many requests it served).
fn rss_after_load(r: &mut Report, agent: &Agent) {
    r.fact(
        "RSS after the HTTP load",
        format!(
            "{} after {} requests",
            proc::rss_line(agent.pid()),
            agent.requests_served
        ),
    );
}

/// (4) Boot: start -> socket answering, start -> first fresh token (stored grant), idle RSS.
async fn boot(r: &mut Report, bin: &Path, idp: &Idp, runs: usize) -> Result<Agent> {
    let mut answering = Vec::new();
    let mut fresh = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let home = prepare_home(idp, Some(10_000)).await?;
        let paths = proc::paths_of(home.path());
        let t0 = Instant::now();
        let child = proc::spawn_agent(bin, home.path())?;
        let deadline = t0 + Duration::from_secs(30);
        proc::wait_for_200(&paths, "/healthz", deadline)?;
        answering.push(t0.elapsed());
        proc::wait_for_200(&paths, "/v1/token/dev", deadline)?;
        fresh.push(t0.elapsed());
        last = Some((child, home));
    }
    let (child, home) = last.context("no boot run")?;
    std::thread::sleep(Duration::from_secs(1));
    let (port, secret) = proc::endpoint(&proc::paths_of(home.path()))?;
    let agent = Agent {
        child,
        port,
        secret,
        home,
        requests_served: 0,
    };
    r.boot(&answering, &fresh);
    r.fact("RSS idle", proc::rss_line(agent.pid()));
    settled(r, &agent)?;
    Ok(agent)
}

/// (4, continued) The agent gives its start-up code pages back `daemon::trim::SETTLE` after
/// ready: RSS once it has, and what that costs the next caller (the first cache hit faults
/// the serving path back in) against the hit after it, each on a new connection.
fn settled(r: &mut Report, agent: &Agent) -> Result<()> {
    std::thread::sleep(stagepass::daemon::trim::SETTLE + Duration::from_secs(1));
    r.fact(
        "RSS settled (start-up code pages given back 10 s after ready)",
        proc::rss_line(agent.pid()),
    );
    // A bare HTTP/1.1 exchange on a new connection, so the figure is the agent's, not a
    // client library's first-use cost.
    let hit = || -> Result<Duration> {
        use std::io::{Read, Write};
        let t = Instant::now();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", agent.port))?;
        write!(
            c,
            "GET /v1/token/dev HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            agent.port, agent.secret
        )?;
        let mut answer = Vec::new();
        c.read_to_end(&mut answer)?;
        anyhow::ensure!(
            answer.starts_with(b"HTTP/1.1 200"),
            "the agent did not answer 200"
        );
        Ok(t.elapsed())
    };
    let (first, second) = (hit()?, hit()?);
    r.fact(
        "first cache hit after the trim / the next (new connection each)",
        format!(
            "{:.0} us / {:.0} us",
            first.as_secs_f64() * 1e6,
            second.as_secs_f64() * 1e6
        ),
    );
    r.fact("RSS after those two hits", proc::rss_line(agent.pid()));
    Ok(())
}

/// (4b) Restart: IdP calls per restart and process start -> first token, with the access token
/// the previous run stored (issue 23) against without it (the record rewritten without its
/// access part, which is how every start went before: a boot refresh), `runs` of each,
/// alternately in one home and against one IdP so the two share the machine's state. Catalog
/// off, so the figure is the broker's.
async fn restart(r: &mut Report, bin: &Path, idp: &Idp, runs: usize) -> Result<()> {
    let home = prepare_home(idp, None).await?;
    let paths = proc::paths_of(home.path());
    let config = stagepass::config::Config::load_files(&paths.config_files)?;
    let store = stagepass::store::GrantStore::open(&config.store, &paths.state_dir).await?;
    let hang_guard = Duration::from_secs(30);
    // A first start refreshes the seeded login and stores the access token.
    let first = proc::spawn_agent(bin, home.path())?;
    proc::wait_for_200(&paths, "/v1/token/dev", Instant::now() + hang_guard)?;
    first.terminate()?;
    let mut stored = (Vec::new(), Vec::new());
    let mut without = (Vec::new(), Vec::new());
    for i in 0..2 * runs {
        let with_stored = i % 2 == 0;
        if !with_stored {
            let g = store.load("dev")?.context("the login is gone")?;
            store.save("dev", &g.with_access(None))?;
        }
        idp.reset_stats().await?;
        let t0 = Instant::now();
        let child = proc::spawn_agent(bin, home.path())?;
        proc::wait_for_200(&paths, "/v1/token/dev", t0 + hang_guard)?;
        let took = t0.elapsed();
        // A boot refresh still under way would be counted below: give it time to land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calls = idp.stats().await?.token.requests;
        child.terminate()?;
        let into = if with_stored {
            &mut stored
        } else {
            &mut without
        };
        into.0.push(took);
        into.1.push(calls);
    }
    r.restart(&stored, &without);
    Ok(())
}

/// (1) HTTP cache hits through the whole guard vs a bare hyper server sending the same bytes.
async fn http(r: &mut Report, agent: &mut Agent, quick: bool) -> Result<()> {
    let url = format!("http://127.0.0.1:{}/v1/token/dev", agent.port);
    let body = proc::token_answer(agent.port, &agent.secret).await?;
    let bare = proc::spawn_bare_hyper(&body)?;
    let base_url = format!("http://127.0.0.1:{}/v1/token/dev", bare.port);
    let secs = if quick { 2 } else { 5 };
    let rounds = if quick { 1 } else { 3 };
    let auth = format!("Authorization: Bearer {}", agent.secret);
    for conns in [1usize, 16, 64] {
        let mut ours = Vec::new();
        let mut base = Vec::new();
        for _ in 0..rounds {
            let w = proc::wrk(&url, conns, secs, Some(&auth))?;
            agent.requests_served += w.requests;
            ours.push(w);
            base.push(proc::wrk(&base_url, conns, secs, Some(&auth))?);
        }
        r.http(conns, &ours, &base);
    }
    drop(bare);
    Ok(())
}

/// (2) `stagepass token dev` vs `oidc-token bench`, alternately, `runs` each.
async fn cli(r: &mut Report, bin: &Path, agent: &Agent, idp: &Idp, runs: usize) -> Result<()> {
    let oidc = match proc::OidcAgent::start(idp).await {
        Ok(o) => Some(o),
        Err(e) => {
            r.note(format!("oidc-token: not measured ({e:#})"));
            None
        }
    };
    let mut ours = Vec::new();
    let mut core = Vec::new();
    let mut theirs = Vec::new();
    let core_bin = bin.with_file_name("stagepass-core");
    let runtime_parent = agent
        .runtime_dir()
        .parent()
        .map(Path::to_path_buf)
        .context("runtime dir")?;
    let token = |program: &Path| {
        let mut c = std::process::Command::new(program);
        c.args(["token", "dev"])
            .env_clear()
            .env("HOME", agent.home.path())
            .env("XDG_RUNTIME_DIR", &runtime_parent);
        c
    };
    // The floor: what starting any process costs here, spawned and read the same way in the
    // same loop (`echo` printing a token-sized line). A token command cannot be faster than
    // this, and on a slow or busy VM this alone can approach a millisecond.
    let mut floor = Vec::new();
    let mut nothing = std::process::Command::new("echo");
    nothing.arg("x".repeat(450));
    for _ in 0..runs {
        ours.push(proc::time_cmd(&mut token(bin))?);
        if let Some(o) = &oidc {
            theirs.push(proc::time_cmd(&mut o.command())?);
        }
        floor.push(proc::time_cmd(&mut nothing)?);
    }
    // The full binary doing the same request, for what the front saves: a loop of its own
    // after the pair, since a 15 MB binary run between two front runs evicts what the
    // front's next start finds cached and would slow the pair's own figure.
    for _ in 0..runs {
        core.push(proc::time_cmd(&mut token(&core_bin))?);
    }
    r.cli(&ours, &core, &theirs, &floor);
    Ok(())
}

/// (3) N concurrent callers on an expired token, IdP answering in 50 ms.
async fn single_flight(r: &mut Report, idp: &Idp, quick: bool) -> Result<()> {
    use stagepass::broker::{Broker, BrokerOptions, TokenRequest};
    let sizes: &[usize] = if quick {
        &[1, 100, 1000]
    } else {
        &[1, 100, 1000, 10_000]
    };
    // 2 s tokens so the cached one expires quickly (the broker keeps a quarter as skew).
    idp.set_ttl(Some(2), None, None).await?;
    for &n in sizes {
        let home = prepare_home(idp, None).await?;
        let paths = stagepass::paths::Paths {
            config_files: vec![home.path().join("config.toml")],
            state_dir: home.path().join("state/stagepass"),
            runtime_dir: home.path().join("run"),
        };
        let config = stagepass::config::Config::load_files(&paths.config_files)?;
        let broker = Broker::start_with(
            &config,
            &paths,
            BrokerOptions {
                background_refresh: false,
                ..BrokerOptions::default()
            },
        )
        .await?;
        let first = broker.token("dev", TokenRequest::default()).await?;
        let exp = first.expires_at.context("no expiry")?;
        while std::time::SystemTime::now() < exp {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        idp.set_fault(Fault::Slow(Duration::from_millis(50)))
            .await?;
        idp.reset_stats().await?;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n + 1));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (b, barrier) = (broker.clone(), barrier.clone());
            set.spawn(async move {
                barrier.wait().await;
                b.token("dev", TokenRequest::default()).await.is_ok()
            });
        }
        barrier.wait().await;
        let t0 = Instant::now();
        let mut ok = 0usize;
        while let Some(res) = set.join_next().await {
            if res.unwrap_or(false) {
                ok += 1;
            }
        }
        let took = t0.elapsed();
        idp.set_fault(Fault::None).await?;
        let calls = idp
            .stats()
            .await?
            .grant(stagepass_e2e::idp::GRANT_REFRESH_TOKEN)
            .requests;
        r.single_flight(n, ok, calls, took);
    }
    idp.set_ttl(Some(3600), None, None).await?;
    Ok(())
}

/// Percentile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Convenience for [`Series`] building.
pub fn series(name: &str, mut samples: Vec<Duration>) -> Series {
    samples.sort_unstable();
    Series {
        name: name.to_string(),
        p50: pct(&samples, 0.50),
        p90: pct(&samples, 0.90),
        p99: pct(&samples, 0.99),
        n: samples.len(),
    }
}
