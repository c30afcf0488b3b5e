//! Issue 11's figures: what caller attestation and the audit log cost, in the same run.
//!
//! Two agents on the same kind of home (a stored device login, catalog off): one with the
//! defaults (attestation and audit on), one with `STAGEPASS_ATTESTATION__ENABLED=false` and
//! `STAGEPASS_AUDIT__ENABLED=false`. Rounds alternate on / off / bare hyper so drift cancels:
//! the HTTP cache hit at 16 and 64 keep-alive connections (attested once per connection,
//! repeats counted into one audit line per connection and second) and `stagepass token dev`
//! (a new connection, so one attestation, per run). The targets: with both on, at least 0.7x bare hyper; the CLI
//! median within 0.2 ms of the figure with both off. Nothing is asserted here.

use crate::proc::{self, WrkResult};
use crate::report::Report;
use anyhow::Result;
use serde_json::json;
use stagepass_e2e::Idp;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// One agent for the comparison.
struct Side {
    _child: proc::Child,
    home: tempfile::TempDir,
    port: u16,
    secret: String,
}

const OFF: &[(&str, &str)] = &[
    ("STAGEPASS_ATTESTATION__ENABLED", "false"),
    ("STAGEPASS_AUDIT__ENABLED", "false"),
];

async fn start(bin: &Path, idp: &Idp, env: &[(&str, &str)]) -> Result<Side> {
    let home = crate::prepare_home(idp, None).await?;
    let paths = proc::paths_of(home.path());
    let child = proc::spawn_agent_env(bin, home.path(), env)?;
    proc::wait_for_200(
        &paths,
        "/v1/token/dev",
        Instant::now() + Duration::from_secs(30),
    )?;
    let (port, secret) = proc::endpoint(&paths)?;
    Ok(Side {
        _child: child,
        port,
        secret,
        home,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn rps(v: &[WrkResult]) -> f64 {
    median(v.iter().map(|w| w.rps).collect())
}

fn p99_us(v: &[WrkResult]) -> f64 {
    median(v.iter().map(|w| w.p99.as_secs_f64() * 1e6).collect())
}

/// Runs both comparisons and adds their section to the report.
pub async fn run(r: &mut Report, bin: &Path, idp: &Idp, quick: bool) -> Result<()> {
    let on = start(bin, idp, &[]).await?;
    let off = start(bin, idp, OFF).await?;
    let url = |s: &Side| format!("http://127.0.0.1:{}/v1/token/dev", s.port);
    let body = proc::token_answer(on.port, &on.secret).await?;
    let bare = proc::spawn_bare_hyper(&body)?;
    let bare_url = format!("http://127.0.0.1:{}/v1/token/dev", bare.port);
    let (secs, rounds) = if quick { (2, 1) } else { (5, 3) };
    let mut md = String::from(
        "\n## Attestation + audit log: on vs off (issue 11)\n\n\
         Same run, rounds alternate on / off / bare hyper. HTTP: wrk keep-alive cache hits \
         (attested once per connection, repeats counted into one audit line per connection and second). CLI: `stagepass token dev` \
         spawn to exit (a new connection, so one attestation, per run).\n\n\
         | conns | on req/s | off req/s | bare req/s | on/bare | off/bare | on p99 | off p99 |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut j = json!({});
    for conns in [16usize, 64] {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(proc::wrk(
                &url(&on),
                conns,
                secs,
                Some(&format!("Authorization: Bearer {}", on.secret)),
            )?);
            b.push(proc::wrk(
                &url(&off),
                conns,
                secs,
                Some(&format!("Authorization: Bearer {}", off.secret)),
            )?);
            c.push(proc::wrk(
                &bare_url,
                conns,
                secs,
                Some(&format!("Authorization: Bearer {}", on.secret)),
            )?);
        }
        let (ra, rb, rc) = (rps(&a), rps(&b), rps(&c));
        let _ = writeln!(
            md,
            "| {conns} | {ra:.0} | {rb:.0} | {rc:.0} | **{:.2}x** | {:.2}x | {:.0} us | {:.0} us |",
            ra / rc.max(1.0),
            rb / rc.max(1.0),
            p99_us(&a),
            p99_us(&b)
        );
        j["http"][conns.to_string()] = json!({
            "on_rps": ra, "off_rps": rb, "bare_rps": rc,
            "on_over_bare": ra / rc.max(1.0), "off_over_bare": rb / rc.max(1.0),
        });
    }
    drop(bare);
    let runs = if quick { 100 } else { 500 };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (side, out) in [(&on, &mut a), (&off, &mut b)] {
            let runtime_parent = side.home.path().join("xdg");
            out.push(proc::time_cmd(
                std::process::Command::new(bin)
                    .args(["token", "dev"])
                    .env_clear()
                    .env("HOME", side.home.path())
                    .env("XDG_RUNTIME_DIR", &runtime_parent),
            )?);
        }
    }
    let sa = crate::series("stagepass token (attestation+audit on)", a);
    let sb = crate::series("stagepass token (off)", b);
    let diff_ms = (sa.p50.as_secs_f64() - sb.p50.as_secs_f64()) * 1e3;
    let _ = writeln!(
        md,
        "\n| `stagepass token dev` | runs | median | p90 | p99 |\n|---|---:|---:|---:|---:|\n\
         | attestation + audit on | {} | {:.0} us | {:.0} us | {:.0} us |\n\
         | both off | {} | {:.0} us | {:.0} us | {:.0} us |\n\n\
         CLI median difference on - off: **{diff_ms:.3} ms** (target: at most 0.2 ms).",
        sa.n,
        sa.p50.as_secs_f64() * 1e6,
        sa.p90.as_secs_f64() * 1e6,
        sa.p99.as_secs_f64() * 1e6,
        sb.n,
        sb.p50.as_secs_f64() * 1e6,
        sb.p90.as_secs_f64() * 1e6,
        sb.p99.as_secs_f64() * 1e6,
    );
    j["cli"] = json!({
        "on_p50_us": sa.p50.as_secs_f64() * 1e6,
        "off_p50_us": sb.p50.as_secs_f64() * 1e6,
        "median_diff_ms": diff_ms,
    });
    let audit_lines =
        std::fs::read_to_string(on.home.path().join("state/stagepass/audit/audit.jsonl"))
            .map_or(0, |t| t.lines().count());
    let _ = writeln!(
        md,
        "\nAudit records written by the `on` agent during the run: {audit_lines}."
    );
    j["audit_records_written"] = json!(audit_lines);
    r.section(&md, "attestation_audit", j);
    Ok(())
}
