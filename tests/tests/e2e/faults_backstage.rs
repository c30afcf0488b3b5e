//! Backstage in trouble, seen by the real `stagepass agent` binary: the shared test bed's
//! real Backstage behind a fault proxy (`tests/peers/faultproxy.mjs`) that makes it answer
//! 5xx, drop connections, or answer slowly (longer than the agent's 15 s Backstage timeout).
//!
//! Whatever Backstage does: token serving and the local API keep answering while a push
//! hangs, pushes fail with a clear error and stay queued in the outbox, and the change
//! arrives (once) as soon as Backstage answers normally. Stopping Backstage outright
//! (connection refused) with an agent restart in between is covered by
//! `catalog_sync::backstage_down_with_a_service_restart_loses_nothing_and_pushes_once`.

use crate::support;

use std::time::{Duration, Instant};

use stagepass_e2e::idp::AUD_BACKSTAGE;
use stagepass_e2e::support::unique_name;
use stagepass_e2e::{Bed, FaultProxy, Idp, ProxyFault, RepoAuth, Worktree};
use support::{Agent, Catalog, Config, Profile, block_on};

/// Hang guard of every wait (not a performance bound).
const HANG_GUARD: Duration = Duration::from_secs(120);
/// Longer than the agent's Backstage request timeout (15 s), so every call times out.
const SLOWER_THAN_TIMEOUT: Duration = Duration::from_secs(25);

fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

/// The bed, a proxy in front of its Backstage, a pushed repository with one component, and
/// an agent whose catalog talks to Backstage through the proxy with a client-credentials
/// token of the bed's IdP.
struct World {
    bed: Bed,
    proxy: FaultProxy,
    wt: Worktree,
    name: String,
    agent: Agent,
    _secret: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let bed = block_on(Bed::get()).unwrap();
        let proxy = block_on(FaultProxy::start(bed.backstage.url())).unwrap();
        let repo = unique_name("bsfault");
        let name = unique_name("bsfault");
        let url = block_on(bed.git.create_repo(&repo, RepoAuth::None)).unwrap();
        let wt = Worktree::init().unwrap();
        wt.write("catalog-info.yaml", &component(&name, "team-a"))
            .unwrap();
        wt.commit_all("initial").unwrap();
        wt.git(&["remote", "add", "origin", &url]).unwrap();
        wt.git(&["push", "--quiet", "-u", "origin", "main"])
            .unwrap();
        let secret = tempfile::tempdir().unwrap();
        let secret_file = secret.path().join("ci-secret");
        std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();
        let config = Config::agent_on_ephemeral_port()
            .catalog(Catalog {
                enabled: Some(true),
                url_template: Some(format!("{}/raw/{repo}/{{branch}}/{{path}}", bed.git.url())),
                retry_max_ms: Some(500),
                ..Catalog::pushing(&wt.path(), proxy.url(), "bs")
            })
            .profile(
                "bs",
                Profile::client_credentials(
                    bed.idp.issuer(),
                    Idp::CONFIDENTIAL_CLIENT,
                    &secret_file,
                )
                .audience(AUD_BACKSTAGE)
                .scopes(&["catalog:read", "catalog:write"]),
            );
        let agent = Agent::start(&config);
        let w = World {
            bed,
            proxy,
            wt,
            name,
            agent,
            _secret: secret,
        };
        w.wait_catalog("watching", |c| c["state"] == "watching");
        w
    }

    fn catalog(&self) -> serde_json::Value {
        let r = self.agent.get("/v1/status");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["catalog"].clone()
    }

    fn wait_catalog(
        &self,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + HANG_GUARD;
        loop {
            let c = self.catalog();
            if cond(&c) {
                return c;
            }
            assert!(
                Instant::now() < end,
                "hang guard: {what}; catalog status: {c:#}\nagent log:\n{}",
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Commits and pushes a new owner: the agent queues a push for the entity.
    fn change_owner(&self, owner: &str) {
        self.wt
            .write("catalog-info.yaml", &component(&self.name, owner))
            .unwrap();
        self.wt.commit_all(&format!("owner -> {owner}")).unwrap();
        self.wt.git(&["push", "--quiet", "origin", "main"]).unwrap();
    }

    /// The one pending job once it failed at least `attempts` times.
    fn pending_job(&self, attempts: u64) -> serde_json::Value {
        let c = self.wait_catalog("a failed push attempt", |c| {
            c["outbox"]
                .as_array()
                .is_some_and(|o| o.len() == 1 && o[0]["attempts"].as_u64() >= Some(attempts))
        });
        c["outbox"][0].clone()
    }

    /// Waits until Backstage shows `owner` (read directly, not through the proxy).
    fn wait_owner(&self, owner: &str) {
        let end = Instant::now() + HANG_GUARD;
        loop {
            let got = block_on(self.bed.backstage.entity(
                "component",
                "default",
                &self.name,
                self.bed.backstage.static_token(),
            ))
            .unwrap()
            .and_then(|e| e["spec"]["owner"].as_str().map(str::to_string));
            if got.as_deref() == Some(owner) {
                return;
            }
            assert!(
                Instant::now() < end,
                "hang guard: Backstage never showed owner {owner} (has {got:?}); agent log:\n{}",
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The agent serves a valid token for `bs`.
    fn token_ok(&self) {
        let r = self.agent.get("/v1/token/bs");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            r.json()["access_token"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
    }
}

#[test]
fn backstage_5xx_and_dropped_connections_keep_the_push_queued_until_it_answers() {
    let w = World::new();
    block_on(w.proxy.set_fault(ProxyFault::ServerError(503), None)).unwrap();
    w.change_owner("team-b");
    let job = w.pending_job(2);
    assert_eq!(job["state"], "pending", "{job:#}");
    let err = job["error"].as_str().unwrap_or_default();
    assert!(err.contains("503"), "the error names the status: {job:#}");
    w.token_ok();

    block_on(w.proxy.set_fault(ProxyFault::Down, None)).unwrap();
    let before = job["attempts"].as_u64().unwrap();
    let job = w.pending_job(before + 2);
    assert_eq!(job["state"], "pending", "{job:#}");
    w.token_ok();

    block_on(w.proxy.reset_stats()).unwrap();
    block_on(w.proxy.set_fault(ProxyFault::None, None)).unwrap();
    w.wait_owner("team-b");
    let c = w.wait_catalog("outbox drained", |c| {
        c["outbox"].as_array().is_some_and(Vec::is_empty)
    });
    let key = format!("component:default/{}", w.name);
    assert_eq!(c["pushes"][&key], 1, "pushed once: {c:#}");
    let stats = block_on(w.proxy.stats()).unwrap();
    assert!(
        stats
            .by_route
            .keys()
            .any(|r| r.starts_with("POST /api/catalog/")),
        "the push went through the proxy: {stats:?}"
    );
}

#[test]
fn backstage_slower_than_the_timeout_blocks_neither_tokens_nor_the_api_and_the_push_arrives_later()
{
    let w = World::new();
    w.token_ok();
    block_on(
        w.proxy
            .set_fault(ProxyFault::Slow(SLOWER_THAN_TIMEOUT), None),
    )
    .unwrap();
    w.change_owner("team-slow");

    // Wait until a catalog call is hanging in the proxy, then use the API meanwhile.
    let end = Instant::now() + HANG_GUARD;
    while block_on(w.proxy.stats()).unwrap().in_flight == 0 {
        assert!(
            Instant::now() < end,
            "hang guard: no Backstage call started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        w.token_ok();
        let r = w.agent.get("/v1/catalog");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let r = w.agent.get("/healthz");
        assert_eq!(r.status, 200);
    }
    assert!(
        block_on(w.proxy.stats()).unwrap().in_flight >= 1,
        "the Backstage call was still hanging while the API answered"
    );

    // The push times out with a clear error and stays queued.
    let job = w.pending_job(1);
    assert_eq!(job["state"], "pending", "{job:#}");
    let err = job["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("timeout"),
        "the error says it timed out: {job:#}"
    );
    w.token_ok();

    block_on(w.proxy.set_fault(ProxyFault::None, None)).unwrap();
    w.wait_owner("team-slow");
    let c = w.wait_catalog("outbox drained", |c| {
        c["outbox"].as_array().is_some_and(Vec::is_empty)
    });
    let key = format!("component:default/{}", w.name);
    assert_eq!(c["pushes"][&key], 1, "pushed once: {c:#}");
    let stats = block_on(w.proxy.stats()).unwrap();
    assert!(
        stats.abandoned >= 1,
        "a timed-out call was abandoned: {stats:?}"
    );
}
