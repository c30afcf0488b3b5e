//! (5) Catalog against a live Backstage: save -> diff latency (an owner edit saved in the
//! editor until the diff against what Backstage holds shows it), and commit + push -> the
//! change visible in Backstage for every kind of change of issue 20: an owner edit, a
//! rename, an entity added to a multi-document file, an entity removed from one (until
//! Backstage no longer reads it from the file: orphaned or deleted), a kind or a namespace
//! change (alternately), a moved file (until the entity is read from the new path) and
//! three files changed in one push (an owner edit, a rename and an added entity, until all
//! three show). Each kind has its own files, registered at the start.
//!
//! It runs the agent's catalog service in-process (the same code `stagepass agent` runs)
//! against the test bed's real peers on loopback: the IdP, the git host and the Backstage
//! catalog backend, with a processing interval of 10 minutes so only our pushes explain a
//! fast change. The save -> diff figure includes the watcher's 150 ms debounce on purpose:
//! it is what a user waits for. `catalog.unregister_deleted` is on, so a moved file's old
//! location goes (with it off Backstage keeps reading the entity from the old path, and the
//! agent says so: nothing to measure).

use crate::report::{Live, Report};
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
    poll(&format!("{name} in Backstage"), || exists(bs, name)).await
}

/// Polls `cond` every 20 ms until it holds; fails after the hang guard.
async fn poll<F, Fut>(what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + HANG_GUARD;
    while !cond().await? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One entity YAML document of any kind and namespace (owned by `owner`).
fn entity(kind: &str, ns: &str, name: &str, owner: &str) -> String {
    let spec = if kind == "Component" {
        format!("  type: service\n  lifecycle: production\n  owner: {owner}\n")
    } else {
        format!("  owner: {owner}\n")
    };
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

/// The entity `kind:ns/name` as Backstage holds it, if it does.
async fn get(
    bs: &Backstage,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<Option<serde_json::Value>> {
    Ok(bs.entity(kind, ns, name, bs.static_token()).await?)
}

/// Backstage no longer reads `component:default/NAME` from any location: gone (deleted by
/// its orphan cleanup), marked `backstage.io/orphan`, or without a parent in `/ancestry`.
async fn orphaned_or_gone(bs: &Backstage, name: &str) -> Result<bool> {
    let Some(e) = get(bs, "component", "default", name).await? else {
        return Ok(true);
    };
    if e["metadata"]["annotations"]["backstage.io/orphan"] == "true" {
        return Ok(true);
    }
    let a = bs
        .get(
            &format!("/entities/by-name/component/default/{name}/ancestry"),
            Some(bs.static_token()),
        )
        .await?;
    if a.status == 404 {
        return Ok(true);
    }
    let parents = a.body["items"].as_array().and_then(|items| {
        items
            .iter()
            .find(|i| i["entity"]["metadata"]["name"] == name)
            .and_then(|i| i["parentEntityRefs"].as_array())
            .map(Vec::len)
    });
    Ok(parents == Some(0))
}

/// Commits what is written and pushes it; returns when the push started.
fn commit_push(wt: &Worktree, msg: &str) -> Result<Instant> {
    wt.commit_all(msg)?;
    let t = Instant::now();
    wt.git(&["push", "--quiet", "origin", "main"])?;
    Ok(t)
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
    // One entity is removed per round; the first stays.
    let removed = |i: usize| format!("{name}-x{i}");
    let mut shrinking: Vec<String> = (0..=pushes)
        .map(|i| component(&removed(i), "team-a"))
        .collect();
    wt.write("rm/catalog-info.yaml", &shrinking.join("---\n"))?;
    let changing = format!("{name}-k");
    wt.write("kind/catalog-info.yaml", &component(&changing, "team-a"))?;
    let moving = format!("{name}-m");
    let moved = |i: usize| format!("mv{i}/catalog-info.yaml");
    wt.write(moved(0), &component(&moving, "team-a"))?;
    let several = |f: &str| format!("{name}-{f}");
    for f in ["sa", "sb", "sc"] {
        wt.write(
            format!("{f}/catalog-info.yaml"),
            &component(&several(f), "team-a"),
        )?;
    }
    let entities = 3 + shrinking.len() + 1 + 1 + 3;
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
        unregister_deleted: true,
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
    if sync.queued != entities {
        bail!(
            "the first sync queued {} registrations, not {entities}",
            sync.queued
        );
    }
    wait_owner(bs, &name, "team-a").await?;
    for n in [renamed(0), added(0), changing.clone(), moving.clone()]
        .into_iter()
        .chain((0..=pushes).map(removed))
        .chain(["sa", "sb", "sc"].map(several))
    {
        wait_exists(bs, &n).await?;
    }

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
    let mut removals = Vec::new();
    for i in 1..=pushes {
        shrinking.pop();
        wt.write("rm/catalog-info.yaml", &shrinking.join("---\n"))?;
        let t = commit_push(&wt, &format!("remove {i}"))?;
        let gone = removed(pushes + 1 - i);
        poll(&format!("{gone} orphaned or deleted"), || {
            orphaned_or_gone(bs, &gone)
        })
        .await?;
        removals.push(t.elapsed());
    }
    // A namespace change on odd rounds, a kind change (Component <-> System) on even ones.
    let mut kind_changes = Vec::new();
    let (mut kind, mut ns) = ("Component", "default".to_string());
    for i in 1..=pushes {
        if i % 2 == 1 {
            ns = format!("ns{i}");
        } else {
            kind = if kind == "Component" {
                "System"
            } else {
                "Component"
            };
        }
        wt.write(
            "kind/catalog-info.yaml",
            &entity(kind, &ns, &changing, "team-a"),
        )?;
        let t = commit_push(&wt, &format!("kind or namespace {i}"))?;
        let lower = kind.to_ascii_lowercase();
        poll(&format!("{lower}:{ns}/{changing}"), || async {
            Ok(get(bs, &lower, &ns, &changing).await?.is_some())
        })
        .await?;
        kind_changes.push(t.elapsed());
    }
    let mut moves = Vec::new();
    for i in 1..=pushes {
        let dir = format!("mv{i}");
        std::fs::create_dir_all(wt.path().join(&dir))?;
        wt.git(&["mv", &moved(i - 1), &moved(i)])?;
        let t = commit_push(&wt, &format!("move {i}"))?;
        let want = format!("url:{}/raw/{name}/main/{}", git.url(), moved(i));
        poll(&format!("{moving} read from {}", moved(i)), || async {
            Ok(get(bs, "component", "default", &moving)
                .await?
                .is_some_and(|e| {
                    e["metadata"]["annotations"]["backstage.io/managed-by-location"]
                        == want.as_str()
                }))
        })
        .await?;
        moves.push(t.elapsed());
    }
    // Three files in one push: an owner edit (sa), a rename (sb), an added entity (sc).
    let mut severals = Vec::new();
    let mut sc = vec![component(&several("sc"), "team-a")];
    for i in 1..=pushes {
        let owner = if i % 2 == 1 { "team-b" } else { "team-a" };
        wt.write("sa/catalog-info.yaml", &component(&several("sa"), owner))?;
        let sb = several(&format!("sb{i}"));
        wt.write("sb/catalog-info.yaml", &component(&sb, "team-a"))?;
        let sc_new = several(&format!("sc{i}"));
        sc.push(component(&sc_new, "team-a"));
        wt.write("sc/catalog-info.yaml", &sc.join("---\n"))?;
        let t = commit_push(&wt, &format!("three files {i}"))?;
        wait_owner(bs, &several("sa"), owner).await?;
        wait_exists(bs, &sb).await?;
        wait_exists(bs, &sc_new).await?;
        severals.push(t.elapsed());
    }
    r.catalog_live(&[
        Live::save(
            "save (owner changed) -> diff shows it",
            "save_to_diff",
            shown,
        ),
        Live::save(
            "save (owner restored) -> diff cleared",
            "save_to_diff_cleared",
            cleared,
        ),
        Live::push("new owner in Backstage", "push_to_backstage", pushed),
        Live::push(
            "renamed entity in Backstage",
            "push_rename_to_backstage",
            renames,
        ),
        Live::push(
            "entity added to a multi-document file in Backstage",
            "push_added_to_backstage",
            additions,
        ),
        Live::push(
            "entity removed from a file orphaned (or deleted) in Backstage",
            "push_removed_to_backstage",
            removals,
        ),
        Live::push(
            "kind or namespace change (alternately) in Backstage",
            "push_kind_namespace_to_backstage",
            kind_changes,
        ),
        Live::push(
            "moved file: its entity read from the new path in Backstage",
            "push_moved_to_backstage",
            moves,
        ),
        Live::push(
            "three files in one push (owner edit, rename, added entity): all three in Backstage",
            "push_several_files_to_backstage",
            severals,
        ),
    ]);
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
