//! Soak: the running agent under 64 connections for 10 minutes while its access token
//! rotates about every 5 s and a catalog file changes every second. Goals: 0 failed
//! requests, 0 expired tokens served, RSS growth under 5 %, open file descriptors flat.
//!
//! Ignored (reported as skipped) because it takes 10 minutes; asked to run without
//! `STAGEPASS_SOAK=1` it fails rather than pass without running:
//!
//! ```sh
//! STAGEPASS_SOAK=1 cargo nextest run -p stagepass-e2e --run-ignored only -E 'test(/^soak::/)' --no-capture
//! ```
//!
//! `STAGEPASS_SOAK_SECS` shortens or lengthens the run (default 600).
//!
//! The agent logs at `info`, its default level (`agent.log_level`), not at the
//! `stagepass=debug` the other end-to-end tests use: at debug every request opens a
//! `request` span and writes a line (hundreds of MB in 10 minutes), and tracing-subscriber's
//! span registry keeps slots, their extension maps and formatted fields for those spans,
//! which grew the live heap by ~145 KiB in 3.5 minutes under this load while it stayed flat
//! at info (docs/reliability.md, "Soak"). `STAGEPASS_SOAK_LOG` sets another filter, e.g.
//! `stagepass=debug` to look at that growth.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use support::{Agent, Catalog, Config, Profile};

const CONNECTIONS: usize = 64;

/// `VmRSS` in KiB and the number of open fds of `pid`.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
}

#[test]
#[ignore = "10-minute soak; run with STAGEPASS_SOAK=1 (see the module docs)"]
fn soak_64_connections_rotating_tokens_and_changing_catalog() {
    // Asked to run (`--run-ignored`) without the flag: fail, so a soak that did not run is
    // never reported as one that passed. Not asked: nextest reports it as skipped.
    assert!(
        std::env::var_os("STAGEPASS_SOAK").is_some(),
        "soak not run: set STAGEPASS_SOAK=1 to run it (10 minutes; see the module docs)"
    );
    let secs: u64 = std::env::var("STAGEPASS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Access tokens live 8 s: the agent renews each at about 3/4 of its life (~5-6 s).
    let idp = rt
        .block_on(stagepass_e2e::Idp::start(stagepass_e2e::IdpOptions {
            access_ttl: 8,
            ..stagepass_e2e::IdpOptions::default()
        }))
        .unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("ci-secret"), "stagepass-ci-secret").unwrap();
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    let file = repo.path().join("catalog-info.yaml");
    let component = |n: u64| {
        format!(
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: soak\n  description: edit {n}\nspec:\n  type: service\n  lifecycle: production\n  owner: team-{}\n",
            n % 7
        )
    };
    std::fs::write(&file, component(0)).unwrap();
    let config = Config::agent_on_ephemeral_port()
        .catalog(Catalog {
            enabled: Some(true),
            root: Some(repo.path().to_path_buf()),
            ..Catalog::default()
        })
        .profile(
            "ci",
            Profile::ci_for_backstage(idp.issuer(), &secret_dir.path().join("ci-secret")),
        );
    // The agent's own default level unless asked otherwise (see the module docs).
    let log_filter = std::env::var("STAGEPASS_SOAK_LOG").unwrap_or_else(|_| "info".to_string());
    println!("agent log filter: RUST_LOG={log_filter}");
    let agent = Agent::start_env(&config, &[("RUST_LOG", log_filter.as_str())]);
    let pid = agent.pid();
    let url = format!("http://127.0.0.1:{}/v1/token/ci", agent.port);
    let auth = format!("Bearer {}", agent.secret);
    let counters = Arc::new(Counters::default());
    let fingerprints = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let end = Instant::now() + Duration::from_secs(secs);

    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        // One client per connection: a pool of one keeps exactly 64 connections open.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (url, auth, counters, fps) = (
            url.clone(),
            auth.clone(),
            counters.clone(),
            fingerprints.clone(),
        );
        tasks.push(rt.spawn(async move {
            while Instant::now() < end {
                let r = client.get(&url).header("authorization", &auth).send().await;
                let body = match r {
                    Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                    _ => None,
                };
                let Some(body) = body else {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let expires = body["expires_at"].as_str().and_then(|s| {
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .ok()
                });
                match expires {
                    Some(e) if SystemTime::from(e) > SystemTime::now() => {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counters.expired.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(t) = body["access_token"].as_str() {
                    let tail = t.len().saturating_sub(16);
                    fps.lock().unwrap().insert(t[tail..].to_string());
                }
            }
        }));
    }

    // Warm up (connections, first tokens, caches, allocator arenas), then take the
    // baseline after a minute (a tenth of a shorter run); the RSS at 15 s is printed too.
    // At debug level the RSS kept growing by ~80 KiB a minute (+5.3 % in 10 minutes): the
    // span registry of the per-request debug spans, not agent state (docs/reliability.md, "Soak").
    std::thread::sleep(Duration::from_secs(15.min(secs / 10)));
    let (rss_early, _) = rss_and_fds(pid);
    std::thread::sleep(Duration::from_secs((secs / 10).min(60).saturating_sub(15)));
    let (rss0, fds0) = rss_and_fds(pid);
    // The end figures are taken under the same load as the baseline (64 open connections):
    // the last sample before the clients stop.
    let (mut rss1, mut fds1) = (rss0, fds0);
    // RSS about once a minute, to tell a steady leak from a one-off step.
    let mut minutes = Vec::new();
    let mut n = 1;
    while Instant::now() < end {
        std::fs::write(&file, component(n)).unwrap();
        n += 1;
        std::thread::sleep(Duration::from_secs(1));
        if Instant::now() < end {
            (rss1, fds1) = rss_and_fds(pid);
            if n % 60 == 0 {
                minutes.push(rss1);
            }
        }
    }
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let (_, fds_idle) = rss_and_fds(pid);
    let ok = counters.ok.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let expired = counters.expired.load(Ordering::Relaxed);
    let tokens = fingerprints.lock().unwrap().len();
    let growth = (rss1 as f64 - rss0 as f64) / rss0 as f64 * 100.0;
    println!("| soak ({secs} s, {CONNECTIONS} connections) | figure |");
    println!("|---|---|");
    println!("| requests answered 200 | {ok} |");
    println!("| failed requests | {failed} |");
    println!("| expired tokens served | {expired} |");
    println!("| distinct access tokens (rotations + 1) | {tokens} |");
    println!("| catalog file edits | {n} |");
    println!("| RSS after warm-up -> end | {rss0} KiB -> {rss1} KiB ({growth:+.1} %) |");
    println!("| RSS about every minute (KiB) | {minutes:?} |");
    println!("| RSS 15 s into the run (before warm-up ends) | {rss_early} KiB |");
    println!("| open fds after warm-up -> end (under load) | {fds0} -> {fds1} |");
    println!("| open fds once the clients closed | {fds_idle} |");
    // A debug log of 10 minutes is hundreds of MB: show only its warnings and errors.
    let log = agent.log();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(50)
        .collect();
    assert_eq!(
        failed,
        0,
        "warnings and errors in the agent log (first 50):\n{}",
        trouble.join("\n")
    );
    assert_eq!(expired, 0);
    assert!(ok > 0);
    assert!(
        tokens as u64 >= secs / 10,
        "tokens did not rotate: {tokens}"
    );
    assert!(growth < 5.0, "RSS grew {growth:.1} %");
    assert!(fds1 <= fds0 + 2, "fds {fds0} -> {fds1}");
}
