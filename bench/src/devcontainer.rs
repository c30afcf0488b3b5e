//! (7) Real dev containers: what the Feature costs and how fast tools work after a start.
//!
//! On the run's own `dockerd` (`tests/peers/engine.sh`, started by `bench/run`) with the
//! official devcontainer CLI, the same base image with and without the Feature:
//!
//! - `devcontainer up` time: the image alone (baseline) against the image with the Feature,
//!   each as a rebuild (`--remove-existing-container`) with the image layers cached, plus the
//!   Feature's first, uncached build;
//! - container start -> first fresh token from a stored login (`docker start`, then
//!   `stagepass token` over `docker exec` until it answers) against start -> `docker exec true`
//!   answering, the floor of the same container in the same round.
//!
//! Rounds alternate (baseline, ours, baseline, ...) so machine drift cancels.

use crate::report::Report;
use anyhow::{Context, Result, anyhow};
use stagepass_e2e::devcontainer::{DevContainer, Engine, package_feature_from};
use stagepass_e2e::support::{free_port, repo_root};
use stagepass_e2e::{Idp, IdpOptions};
use std::process::Command;
use std::time::{Duration, Instant};

/// Hang guard of every wait; not a performance bound.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn git(ws: &std::path::Path, args: &[&str]) -> Result<()> {
    let st = Command::new("git")
        .arg("-C")
        .arg(ws)
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .status()?;
    anyhow::ensure!(st.success(), "git {args:?} failed");
    Ok(())
}

/// A workspace that is a git checkout (the catalog scan has a repository to watch).
fn workspace(dc: &DevContainer) -> Result<()> {
    let ws = dc.workspace();
    git(&ws, &["init", "-q", "-b", "main"])?;
    std::fs::write(ws.join(".git/info/exclude"), ".devcontainer/\n")?;
    std::fs::write(ws.join("README"), "bench\n")?;
    git(&ws, &["add", "-A"])?;
    git(&ws, &["commit", "-q", "-m", "initial"])?;
    dc.chown_workspace()?;
    Ok(())
}

/// Polls `f` until it succeeds; the time from `since`.
fn until(since: Instant, what: &str, mut f: impl FnMut() -> bool) -> Result<Duration> {
    loop {
        if f() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > HANG_GUARD {
            return Err(anyhow!("hang guard: {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ok<E>(out: std::result::Result<std::process::Output, E>) -> bool {
    out.is_ok_and(|o| o.status.success())
}

/// Measures the Feature's cost and start -> first token on a real engine.
pub async fn run(r: &mut Report, quick: bool) -> Result<()> {
    let engine = match Engine::from_env() {
        Ok(e) => e,
        Err(why) => {
            r.note(format!("real dev containers: not measured: {why}"));
            return Ok(());
        }
    };
    let rounds = if quick { 2 } else { 5 };
    let idp = Idp::start(IdpOptions::default()).await?;
    idp.auto_approve(Some("alice")).await?;
    let pkg_dir = tempfile::tempdir()?;
    let pkg = package_feature_from(pkg_dir.path(), &crate::proc::stagepass_bin()?)
        .context("packaging the Feature")?;
    let with_feature =
        std::fs::read_to_string(repo_root().join("devcontainer/test/devcontainer.json"))?;
    // The same image and run arguments, no Feature: what `up` costs anyway.
    let bare = serde_json::json!({
        "name": "baseline",
        "image": engine.base_image,
        "remoteUser": "vscode",
        "runArgs": ["--network=host"],
    })
    .to_string();
    let port = free_port()?.to_string();
    let env = [
        ("STAGEPASS_TEST_BASE_IMAGE", engine.base_image.as_str()),
        ("STAGEPASS_TEST_ISSUER", idp.issuer()),
        ("STAGEPASS_TEST_PORT", port.as_str()),
        ("STAGEPASS_TEST_BACKSTAGE_URL", ""),
        ("STAGEPASS_TEST_URL_TEMPLATE", ""),
    ];
    let mut ours = DevContainer::new(&engine, &pkg, &with_feature, &env)?;
    let mut base = DevContainer::new(&engine, &pkg, &bare, &[])?;
    workspace(&ours)?;
    workspace(&base)?;

    // The Feature's first build (its image layer is not cached yet), then rebuilds.
    let (_, first_build) = ours.up(&[]).map_err(|e| anyhow!("{e}"))?;
    base.up(&[]).map_err(|e| anyhow!("{e}"))?;
    let (mut up_base, mut up_ours) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        up_base.push(
            base.up(&["--remove-existing-container"])
                .map_err(|e| anyhow!("{e}"))?
                .1,
        );
        up_ours.push(
            ours.up(&["--remove-existing-container"])
                .map_err(|e| anyhow!("{e}"))?
                .1,
        );
    }

    // A stored login, then start -> first fresh token against start -> exec answering.
    let login = ours
        .exec(&["stagepass", "login", "backstage"])
        .map_err(|e| anyhow!("{e}"))?;
    anyhow::ensure!(
        login.status.success(),
        "login failed: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    let (mut floor, mut token) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (dc, out, probe) in [
            (&base, &mut floor, &["true"][..]),
            (&ours, &mut token, &["stagepass", "token", "backstage"][..]),
        ] {
            dc.stop().map_err(|e| anyhow!("{e}"))?;
            let t0 = Instant::now();
            dc.start().map_err(|e| anyhow!("{e}"))?;
            out.push(until(t0, "the container answering", || {
                ok(dc.docker_exec("vscode", probe))
            })?);
        }
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let med = |v: &[Duration]| crate::series("", v.to_vec()).p50;
    let (ub, uo, fl, tk) = (med(&up_base), med(&up_ours), med(&floor), med(&token));
    let md = format!(
        "\n## Real dev containers (devcontainer CLI {cli}, Debian docker.io, local base image), median of {rounds}\n\n\
         | what | baseline | with stagepass | ratio |\n|---|---:|---:|---:|\n\
         | `devcontainer up` rebuild, layers cached (baseline: same image, no Feature) | {:.0} ms | {:.0} ms | {:.2}x |\n\
         | `devcontainer up`, the Feature's first (uncached) build | | {:.0} ms | |\n\
         | `docker start` -> first fresh token from a stored login (baseline: `docker exec true` answering) | {:.0} ms | {:.0} ms | {:.2}x |\n",
        ms(ub),
        ms(uo),
        ms(uo) / ms(ub),
        ms(first_build),
        ms(fl),
        ms(tk),
        ms(tk) / ms(fl),
        cli = engine_cli_version(&engine),
    );
    let all = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>();
    r.section(
        &md,
        "devcontainer",
        serde_json::json!({
            "up_rebuild_baseline_ms": all(&up_base),
            "up_rebuild_with_feature_ms": all(&up_ours),
            "up_first_build_with_feature_ms": ms(first_build),
            "start_to_exec_ms": all(&floor),
            "start_to_first_token_ms": all(&token),
        }),
    );
    Ok(())
}

fn engine_cli_version(engine: &Engine) -> String {
    Command::new(&engine.cli)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}
