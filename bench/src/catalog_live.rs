//! (5) Catalog against a live Backstage: save -> diff latency (an owner edit saved in the
//! editor until the diff against what Backstage holds shows it), and commit + push -> the
//! change visible in Backstage, for an owner edit, a rename and an entity added to a
//! multi-document file (each in its own file, registered at the start).
//!
//! It runs the agent's catalog service in-process (the same code `stagepass agent` runs)
//! against the test bed's real peers on loopback: the IdP, the git host and the Backstage
//! catalog backend, with a processing interval of 10 minutes so only our pushes explain a
//! fast change. The save -> diff figure includes the watcher's 150 ms debounce on purpose:
//! it is what a user waits for.

use crate::report::Report;
use anyhow::{Context, Result, bail};
use stagepass::catalog::token::StaticToken;
use stagepass::catalog::{CatalogHandle, CatalogStatus, Options, Service};
use stagepass::config::CatalogConfig;
use stagepass::paths::Paths;
use stagepass::secret::Secret;
use stagepass_e2e::idp::AUD_BACKSTAGE;
use stagepass_e2e::support::{private_tempdir, unique_name};
use stagepass_e2e::{Backstage, BackstageOptions, GitHost, Idp, IdpOptions, RepoAuth, Worktree};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hang guard of every wait; not a performance bound.
const HANG_GUARD: Duration = Duration::from_secs(90);

fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

/// Entity `component:default/NAME` exists in Backstage.
async fn exists(bs: &Backstage, name: &str) -> Result<bool> {
    Ok(bs
        .entity("component", "default", name, bs.static_token())
        .await?
        .is_some())
}

/// Polls until `name` is in Backstage.
async fn wait_exists(bs: &Backstage, name: &str) -> Result<()> {
    let deadline = Instant::now() + HANG_GUARD;
    while !exists(bs, name).await? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {name} in Backstage");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Measures `rounds` save -> diff pairs and `pushes` push -> Backstage rounds of each kind.
pub async fn run(r: &mut Report, rounds: usize, pushes: usize) -> Result<()> {
    let idp = Idp::start(IdpOptions::default())
        .await
        .context("starting the IdP")?;
    let git = GitHost::start(Some(idp.issuer()))
        .await
        .context("starting the git host")?;
    // A long processing interval: only the agent's pushes explain a fast change.
    let bs = &Backstage::start(BackstageOptions {
        processing_interval_secs: 600,
        ..BackstageOptions::new(idp.issuer(), git.host_port())
    })
    .await
    .context("starting Backstage")?;
    let name = unique_name("bench");
    let url = git.create_repo(&name, RepoAuth::None).await?;
    let wt = Worktree::init()?;
    wt.write("svc/catalog-info.yaml", &component(&name, "team-a"))?;
    let renamed = |i: usize| format!("{name}-r{i}");
    wt.write("ren/catalog-info.yaml", &component(&renamed(0), "team-a"))?;
    let added = |i: usize| format!("{name}-a{i}");
    let mut multi = vec![component(&added(0), "team-a")];
    wt.write("multi/catalog-info.yaml", &multi.join("---\n"))?;
    wt.commit_all("initial")?;
    wt.git(&["remote", "add", "origin", &url])?;
    wt.git(&["push", "--quiet", "-u", "origin", "main"])?;

    let state = private_tempdir()?;
    let paths = Paths {
        config_files: Vec::new(),
        state_dir: state.path().join("state"),
        runtime_dir: state.path().join("run"),
    };
    let config = CatalogConfig {
        root: Some(wt.path()),
        backstage_url: Some(
            stagepass::config::HttpUrl::parse(bs.url()).map_err(|e| anyhow::anyhow!(e))?,
        ),
        profile: Some("backstage".into()),
        url_template: Some(format!("{}/raw/{name}/{{branch}}/{{path}}", git.url())),
        retry_max: std::time::Duration::from_secs(1),
        ..CatalogConfig::default()
    };
    let minted = idp.mint("catalog-bench", AUD_BACKSTAGE, 3600).await?;
    let tokens = Arc::new(StaticToken::new(
        "backstage",
        Secret::new(minted.access_token),
    ));
    let h = Service::start_with(
        &config,
        &paths,
        Options {
            tokens,
            ..Options::default()
        },
    )
    .await;
    wait(&h, "catalog watching", |s| {
        s.state == stagepass::catalog::EngineState::Watching
    })
    .await?;
    let sync = h.sync_now().await;
    if sync.queued != 3 {
        bail!("the first sync queued {} registrations, not 3", sync.queued);
    }
    wait_owner(bs, &name, "team-a").await?;
    wait_exists(bs, &renamed(0)).await?;
    wait_exists(bs, &added(0)).await?;

    // Save -> diff: alternate the owner; each save shows (team-b) or clears (team-a) the diff.
    let mut shown = Vec::new();
    let mut cleared = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        wt.write("svc/catalog-info.yaml", &component(&name, "team-b"))?;
        wait(&h, "owner diff shown", |s| {
            s.diff.len() == 1 && s.diff[0].to_string().contains("group:team-b")
        })
        .await?;
        shown.push(t.elapsed());
        let t = Instant::now();
        wt.write("svc/catalog-info.yaml", &component(&name, "team-a"))?;
        wait(&h, "owner diff cleared", |s| s.diff.is_empty()).await?;
        cleared.push(t.elapsed());
    }

    // Commit + push -> the new owner in Backstage (by name, through the catalog API).
    let mut pushed = Vec::new();
    for i in 0..pushes {
        let owner = if i % 2 == 0 { "team-b" } else { "team-a" };
        wt.write("svc/catalog-info.yaml", &component(&name, owner))?;
        wt.commit_all(&format!("owner {owner}"))?;
        let t = Instant::now();
        wt.git(&["push", "--quiet", "origin", "main"])?;
        wait_owner(bs, &name, owner).await?;
        pushed.push(t.elapsed());
    }
    // Commit + push -> a renamed entity, then an added one, in Backstage.
    let mut renames = Vec::new();
    for i in 1..=pushes {
        wt.write("ren/catalog-info.yaml", &component(&renamed(i), "team-a"))?;
        wt.commit_all(&format!("rename {i}"))?;
        let t = Instant::now();
        wt.git(&["push", "--quiet", "origin", "main"])?;
        wait_exists(bs, &renamed(i)).await?;
        renames.push(t.elapsed());
    }
    let mut additions = Vec::new();
    for i in 1..=pushes {
        multi.push(component(&added(i), "team-a"));
        wt.write("multi/catalog-info.yaml", &multi.join("---\n"))?;
        wt.commit_all(&format!("add {i}"))?;
        let t = Instant::now();
        wt.git(&["push", "--quiet", "origin", "main"])?;
        wait_exists(bs, &added(i)).await?;
        additions.push(t.elapsed());
    }
    r.catalog_live(&shown, &cleared, &pushed, &renames, &additions);
    drop(h);
    // Issue 22 on the same Backstage: the user's sign-in, refresh and push as the user,
    // a member of the team that owns the entity after the last push (alice: team-a, bob:
    // team-b in the test org).
    let user = if pushes % 2 == 1 { "bob" } else { "alice" };
    crate::signin::run(
        r,
        &idp,
        bs,
        &format!("component:default/{name}"),
        user,
        pushes.max(5),
    )
    .await
    .context("signing in to Backstage as the user")?;
    Ok(())
}

async fn wait(
    h: &CatalogHandle,
    what: &str,
    cond: impl Fn(&CatalogStatus) -> bool,
) -> Result<CatalogStatus> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let s = h.status();
        if cond(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; status: {}",
                serde_json::to_string(&s)?
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_owner(bs: &Backstage, name: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let owner = bs
            .entity("component", "default", name, bs.static_token())
            .await?
            .and_then(|e| e["spec"]["owner"].as_str().map(str::to_string));
        if owner.as_deref() == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {name} owned by {want} in Backstage (now {owner:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
