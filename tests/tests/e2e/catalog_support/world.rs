//! The world of the in-process catalog tests against the real Backstage: a repository on
//! the git host with `origin/main` tracked, a private state dir, a token from the IdP, the
//! catalog service started on them, and waits on what Backstage holds.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wait;
use stagepass::catalog::token::StaticToken;
use stagepass::catalog::{CatalogHandle, Options, Service};
use stagepass::config::CatalogConfig;
use stagepass::paths::Paths;
use stagepass::secret::Secret;
use stagepass_e2e::idp::AUD_BACKSTAGE;
use stagepass_e2e::support::{poll_until, private_tempdir, unique_name};
use stagepass_e2e::{Backstage, BackstageOptions, Bed, RepoAuth, Worktree};

/// Hang guard of every wait (not a performance bound).
pub const HANG_GUARD: Duration = Duration::from_secs(90);

pub fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

/// A clone with `origin` on the git host, `main` pushed and tracking `origin/main`.
pub struct Repo {
    pub wt: Worktree,
    /// The repository's name on the git host.
    pub name: String,
    pub raw_base: String,
}

impl Repo {
    pub async fn new(bed: &Bed, files: &[(&str, String)]) -> Repo {
        let name = unique_name("catalog");
        let url = bed.git.create_repo(&name, RepoAuth::None).await.unwrap();
        let wt = Worktree::init().unwrap();
        for (path, text) in files {
            wt.write(path, text).unwrap();
        }
        wt.commit_all("initial").unwrap();
        wt.git(&["remote", "add", "origin", &url]).unwrap();
        wt.git(&["push", "--quiet", "-u", "origin", "main"])
            .unwrap();
        Repo {
            wt,
            raw_base: format!("{}/raw/{name}", bed.git.url()),
            name,
        }
    }

    pub fn change(&self, path: &str, text: &str, msg: &str) {
        self.wt.write(path, text).unwrap();
        self.wt.commit_all(msg).unwrap();
    }

    pub fn push(&self) {
        self.wt.git(&["push", "--quiet", "origin", "main"]).unwrap();
    }

    pub fn config(&self, backstage_url: &str) -> CatalogConfig {
        CatalogConfig {
            root: Some(self.wt.path()),
            backstage_url: Some(stagepass::config::HttpUrl::parse(backstage_url).unwrap()),
            profile: Some("backstage".into()),
            url_template: Some(format!("{}/{{branch}}/{{path}}", self.raw_base)),
            retry_max: std::time::Duration::from_secs(1),
            ..CatalogConfig::default()
        }
    }
}

/// A private state dir (0700) that survives service restarts within a test.
pub struct State {
    dir: tempfile::TempDir,
}

impl State {
    pub fn new() -> State {
        State {
            dir: private_tempdir().unwrap(),
        }
    }

    pub fn paths(&self) -> Paths {
        Paths {
            config_files: Vec::new(),
            state_dir: self.dir.path().join("state"),
            runtime_dir: self.dir.path().join("run"),
        }
    }
}

pub async fn token(bed: &Bed) -> Arc<StaticToken> {
    let t = bed
        .idp
        .mint("catalog-e2e", AUD_BACKSTAGE, 3600)
        .await
        .unwrap();
    Arc::new(StaticToken::new("backstage", Secret::new(t.access_token)))
}

pub async fn start(
    config: &CatalogConfig,
    state: &State,
    tokens: Arc<StaticToken>,
) -> CatalogHandle {
    let h = Service::start_with(
        config,
        &state.paths(),
        Options {
            tokens,
            ..Options::default()
        },
    )
    .await;
    wait(&h, "catalog watching", HANG_GUARD, |s| {
        s.state == stagepass::catalog::EngineState::Watching
    })
    .await;
    h
}

/// `spec.owner` of `component:default/NAME` in Backstage, `None` when absent.
pub async fn owner(bs: &Backstage, name: &str) -> Option<String> {
    bs.entity("component", "default", name, bs.static_token())
        .await
        .unwrap()
        .and_then(|e| e["spec"]["owner"].as_str().map(str::to_string))
}

pub async fn wait_owner(bs: &Backstage, name: &str, want: &str) -> Duration {
    let started = Instant::now();
    let what = format!("{name} owned by {want} in Backstage");
    let found = poll_until(&what, HANG_GUARD, Duration::from_millis(100), || async {
        Ok((owner(bs, name).await.as_deref() == Some(want)).then_some(()))
    })
    .await;
    if let Err(e) = found {
        panic!("{e} (now {:?})", owner(bs, name).await);
    }
    started.elapsed()
}

/// A private Backstage on a chosen port (so it can be stopped and started again at the same
/// URL), with a long processing interval so only the agent's pushes explain fast changes.
pub async fn private_backstage(bed: &Bed, port: u16) -> Backstage {
    Backstage::start(private_backstage_options(bed, port))
        .await
        .unwrap()
}

/// The options of [`private_backstage`], for a test that changes one.
pub fn private_backstage_options(bed: &Bed, port: u16) -> BackstageOptions {
    BackstageOptions {
        processing_interval_secs: 600,
        port: Some(port),
        ..BackstageOptions::new(bed.idp.issuer(), bed.git.host_port())
    }
}

/// `kind:namespace/name` held by Backstage (its JSON), `None` when absent.
pub async fn entity(bs: &Backstage, r: &str) -> Option<serde_json::Value> {
    let (kind, rest) = r.split_once(':').unwrap();
    let (ns, name) = rest.split_once('/').unwrap();
    bs.entity(kind, ns, name, bs.static_token()).await.unwrap()
}

/// Polls Backstage until `cond` holds for entity `r` (its JSON or `None`); returns how long
/// that took from `since`. `what` names the wait in the hang guard's message.
pub async fn wait_entity(
    bs: &Backstage,
    r: &str,
    what: &str,
    since: Instant,
    cond: impl Fn(Option<&serde_json::Value>) -> bool,
) -> Duration {
    let guard = HANG_GUARD.saturating_sub(since.elapsed());
    let found = poll_until(
        &format!("{r} {what}"),
        guard,
        Duration::from_millis(100),
        || async { Ok(cond(entity(bs, r).await.as_ref()).then_some(())) },
    )
    .await;
    if let Err(e) = found {
        panic!("hang guard: {e}; Backstage holds {:?}", entity(bs, r).await);
    }
    since.elapsed()
}

/// The parents Backstage's `/ancestry` lists for entity `r` (empty for an orphan), `None`
/// when Backstage does not hold it.
pub async fn parents(bs: &Backstage, r: &str) -> Option<Vec<String>> {
    let (kind, rest) = r.split_once(':').unwrap();
    let (ns, name) = rest.split_once('/').unwrap();
    let a = bs
        .get(
            &format!("/entities/by-name/{kind}/{ns}/{name}/ancestry"),
            Some(bs.static_token()),
        )
        .await
        .unwrap();
    if a.status == 404 {
        return None;
    }
    let item = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["entity"]["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{r} not in its own ancestry: {}", a.body));
    Some(
        item["parentEntityRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
    )
}

/// Whether Backstage is done with entity `r` as an orphan: deleted, marked
/// `backstage.io/orphan`, or with no location left that reads it.
pub async fn orphaned_or_gone(bs: &Backstage, r: &str) -> bool {
    match entity(bs, r).await {
        None => true,
        Some(e) if e["metadata"]["annotations"]["backstage.io/orphan"] == "true" => true,
        Some(_) => parents(bs, r).await.is_none_or(|p| p.is_empty()),
    }
}

/// The targets of every registered location.
pub async fn location_targets(bs: &Backstage) -> Vec<String> {
    let l = bs.get("/locations", Some(bs.static_token())).await.unwrap();
    assert_eq!(l.status, 200, "{}", l.body);
    l.body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["target"].as_str().unwrap().to_string())
        .collect()
}

/// `backstage.io/managed-by-location` of an entity's JSON.
pub fn managed_by(e: &serde_json::Value) -> Option<&str> {
    e["metadata"]["annotations"]["backstage.io/managed-by-location"].as_str()
}
