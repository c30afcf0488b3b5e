//! End to end: every kind of change to a catalog file Backstage already reads reaches the
//! real Backstage catalog backend after a real `git push`, and `catalog diff` is empty
//! afterwards: a rename, an entity added to a multi-document file, a removed entity,
//! a kind and a namespace change, several files in one push, a moved file (with and
//! without `catalog.unregister_deleted`), a deleted file, a file emptied of entities or
//! left with only invalid ones, a file someone else registered under another spelling of
//! its URL (GitHub's `tree` against `blob`), and a file a Location entity (as discovery
//! emits them) named before it existed.
//!
//! Each test runs its own Backstage with a 10 minute processing interval, so only the
//! agent's pushes explain a change before the hang guard (90 s). How soon a change shows is
//! measured by the benchmark (`bench`, catalog section; its target is 5 s), never asserted
//! here: each wait prints what it measured (`measured: ...`).
//!
//! Entities that leave a file are handled as Backstage handles orphans (its default
//! `orphanStrategy`, `delete`, deletes them at the next cleanup, every 30 s); the tests
//! accept them deleted, marked or without a parent, and require the agent's push to say
//! what became of each (a note per entity, recorded when the push made Backstage read the
//! file again, so no race with the cleanup).

// Test helpers: a failing setup step must fail the test loudly.
use crate::catalog_support;

use std::time::{Duration, Instant};

use catalog_support::wait;
use catalog_support::world::{
    HANG_GUARD, Repo, State, component, entity, location_targets, managed_by, orphaned_or_gone,
    parents, private_backstage_options, start, token, wait_entity,
};
use stagepass::catalog::{CatalogHandle, CatalogStatus};
use stagepass_e2e::support::{free_port, unique_name};
use stagepass_e2e::{Backstage, BackstageOptions, Bed};

const FILE: &str = "svc/catalog-info.yaml";

fn cref(name: &str) -> String {
    format!("component:default/{name}")
}

/// Documents joined into one multi-document file.
fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

/// A repository pushed to the git host, a private Backstage and a state dir; the agent is
/// started by [`World::start`].
struct World {
    bed: Bed,
    bs: Backstage,
    repo: Repo,
    state: State,
}

impl World {
    async fn new(files: &[(&str, String)]) -> World {
        Self::with_backstage(files, |_, _| {}).await
    }

    /// Like [`World::new`], with the private Backstage's options changed by `opts`.
    async fn with_backstage(
        files: &[(&str, String)],
        opts: impl FnOnce(&Bed, &mut BackstageOptions),
    ) -> World {
        let bed = Bed::get().await.unwrap();
        let mut o = private_backstage_options(&bed, free_port().unwrap());
        opts(&bed, &mut o);
        let bs = Backstage::start(o).await.unwrap();
        let repo = Repo::new(&bed, files).await;
        World {
            bed,
            bs,
            repo,
            state: State::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/main/{path}", self.repo.raw_base)
    }

    /// Starts the agent, registers the repository's files (`catalog sync`) and waits until
    /// Backstage holds `expect`.
    async fn start(&self, unregister_deleted: bool, expect: &[String]) -> CatalogHandle {
        self.start_with(None, unregister_deleted, expect).await
    }

    /// [`World::start`] with another `catalog.url_template` (the URL form the agent uses).
    async fn start_with(
        &self,
        url_template: Option<String>,
        unregister_deleted: bool,
        expect: &[String],
    ) -> CatalogHandle {
        let base = self.repo.config(self.bs.url());
        let config = stagepass::config::CatalogConfig {
            unregister_deleted,
            url_template: url_template.or(base.url_template.clone()),
            ..base
        };
        let h = start(&config, &self.state, token(&self.bed).await).await;
        let sync = h.sync_now().await;
        assert!(sync.error.is_none() && sync.invalid.is_empty(), "{sync:?}");
        for r in expect {
            wait_entity(&self.bs, r, "registered", Instant::now(), |e| e.is_some()).await;
        }
        wait(&h, "first sync settled", HANG_GUARD, |s| {
            s.outbox.is_empty() && s.diff.is_empty()
        })
        .await;
        h
    }

    /// Pushes what is committed; returns when the push started.
    fn push(&self) -> Instant {
        let t = Instant::now();
        self.repo.push();
        t
    }

    /// `git mv FROM TO`, commit, push; returns when the push started.
    fn move_file(&self, from: &str, to: &str) -> Instant {
        if let Some(dir) = std::path::Path::new(to).parent() {
            std::fs::create_dir_all(self.repo.wt.path().join(dir)).unwrap();
        }
        self.repo.wt.git(&["mv", from, to]).unwrap();
        self.repo
            .wt
            .commit_all(&format!("move {from} to {to}"))
            .unwrap();
        self.push()
    }

    /// Waits until Backstage holds `r` (hang guard only); prints how long after `since`.
    async fn appears(&self, r: &str, what: &str, since: Instant) {
        let took = wait_entity(&self.bs, r, "to appear", since, |e| e.is_some()).await;
        eprintln!("measured: {what}: {r} visible in Backstage {took:?} after the push started");
    }

    /// Waits until Backstage is done with `r` as an orphan (hang guard only); prints how
    /// long after `since`.
    async fn orphaned(&self, r: &str, since: Instant) {
        while !orphaned_or_gone(&self.bs, r).await {
            assert!(
                since.elapsed() < HANG_GUARD,
                "hang guard: {r} is still read from a location: {:?}",
                entity(&self.bs, r).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = since.elapsed();
        eprintln!("measured: {r} orphaned {took:?} after the push started");
    }
}

/// Waits until the agent's status has an empty diff and an empty outbox, and `catalog diff`
/// (fetched now) is empty too; returns the status.
async fn settled(h: &CatalogHandle, what: &str) -> CatalogStatus {
    let s = wait(h, what, HANG_GUARD, |s| {
        s.diff.is_empty() && s.outbox.is_empty()
    })
    .await;
    let d = h.diff().await;
    assert!(
        d.error.is_none() && d.changes.is_empty(),
        "catalog diff after {what}: {d:?}"
    );
    s
}

/// The agent says what happened to `r`, which left `file`: the push that made Backstage
/// read the file again records it as a note, so the test needs no race against Backstage's
/// orphan cleanup (which deletes the entity by default, every 30 s).
async fn reported_left(h: &CatalogHandle, r: &str, file: &str) {
    let prefix = format!("{r} left {file}; Backstage orphans it");
    note(
        h,
        "the agent says what became of the entity that left",
        |n| n.starts_with(&prefix) && n.contains("catalog.orphanStrategy"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_shows_the_new_name_and_the_old_one_is_an_orphan() {
    let (old, new) = (unique_name("ren-old"), unique_name("ren-new"));
    let w = World::new(&[(FILE, component(&old, "team-a"))]).await;
    let h = w.start(false, &[cref(&old)]).await;

    w.repo
        .change(FILE, &component(&new, "team-a"), "rename the component");
    let t = w.push();
    w.appears(&cref(&new), "rename", t).await;
    w.orphaned(&cref(&old), t).await;
    reported_left(&h, &cref(&old), FILE).await;
    settled(&h, "the rename").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_added_to_a_registered_multi_document_file_appears() {
    let (first, added) = (unique_name("multi-a"), unique_name("multi-added"));
    let w = World::new(&[(FILE, component(&first, "team-a"))]).await;
    let h = w.start(false, &[cref(&first)]).await;

    w.repo.change(
        FILE,
        &docs(&[component(&first, "team-a"), component(&added, "team-b")]),
        "add an entity",
    );
    let t = w.push();
    w.appears(&cref(&added), "added entity", t).await;
    let s = settled(&h, "the added entity").await;
    assert!(s.orphans.is_empty(), "{:?}", s.orphans);
    assert_eq!(
        location_targets(&w.bs).await,
        vec![w.url(FILE)],
        "no second location for the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_removed_from_a_file_is_an_orphan_and_leaves_the_diff() {
    let (kept, removed) = (unique_name("rm-kept"), unique_name("rm-gone"));
    let w = World::new(&[(
        FILE,
        docs(&[component(&kept, "team-a"), component(&removed, "team-a")]),
    )])
    .await;
    let h = w.start(false, &[cref(&kept), cref(&removed)]).await;

    // The remaining entity is unchanged: the file must be re-read all the same.
    w.repo
        .change(FILE, &component(&kept, "team-a"), "remove an entity");
    let t = w.push();
    w.orphaned(&cref(&removed), t).await;
    reported_left(&h, &cref(&removed), FILE).await;
    settled(&h, "the removal").await;
    assert!(entity(&w.bs, &cref(&kept)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_and_a_namespace_change_reach_backstage() {
    let (k, n) = (unique_name("kind"), unique_name("ns"));
    let w = World::new(&[(
        FILE,
        docs(&[component(&k, "team-a"), component(&n, "team-a")]),
    )])
    .await;
    let h = w.start(false, &[cref(&k), cref(&n)]).await;

    let system = format!(
        "apiVersion: backstage.io/v1alpha1\nkind: System\nmetadata:\n  name: {k}\nspec:\n  owner: team-a\n"
    );
    let in_ops = component(&n, "team-a").replace("  name:", "  namespace: ops\n  name:");
    w.repo
        .change(FILE, &docs(&[system, in_ops]), "kind and namespace");
    let t = w.push();
    w.appears(&format!("system:default/{k}"), "kind change", t)
        .await;
    w.appears(&format!("component:ops/{n}"), "namespace change", t)
        .await;
    w.orphaned(&cref(&k), t).await;
    w.orphaned(&cref(&n), t).await;
    reported_left(&h, &cref(&k), FILE).await;
    reported_left(&h, &cref(&n), FILE).await;
    settled(&h, "the kind and namespace change").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_files_changed_in_one_push_all_reach_backstage() {
    let (a, a2) = (unique_name("sev-a"), unique_name("sev-a2"));
    let b = unique_name("sev-b");
    let (c, c2) = (unique_name("sev-c"), unique_name("sev-c2"));
    let w = World::new(&[
        ("a/catalog-info.yaml", component(&a, "team-a")),
        ("b/catalog-info.yaml", component(&b, "team-a")),
        ("c/catalog-info.yaml", component(&c, "team-a")),
    ])
    .await;
    let h = w.start(false, &[cref(&a), cref(&b), cref(&c)]).await;

    w.repo
        .change("a/catalog-info.yaml", &component(&a2, "team-a"), "rename a");
    w.repo.change(
        "b/catalog-info.yaml",
        &component(&b, "team-b"),
        "owner of b",
    );
    w.repo.change(
        "c/catalog-info.yaml",
        &docs(&[component(&c, "team-a"), component(&c2, "team-c")]),
        "add to c",
    );
    let t = w.push();
    w.appears(&cref(&a2), "rename in one of three files", t)
        .await;
    w.appears(&cref(&c2), "added entity in one of three files", t)
        .await;
    let took = wait_entity(&w.bs, &cref(&b), "owned by team-b", t, |e| {
        e.is_some_and(|e| e["spec"]["owner"] == "team-b")
    })
    .await;
    eprintln!("measured: owner edit in one of three files visible {took:?} after the push");
    w.orphaned(&cref(&a), t).await;
    reported_left(&h, &cref(&a), "a/catalog-info.yaml").await;
    settled(&h, "three files in one push").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_file_is_registered_and_its_old_location_unregistered_when_configured() {
    let name = unique_name("moved");
    let w = World::new(&[("old/catalog-info.yaml", component(&name, "team-a"))]).await;
    let h = w.start(true, &[cref(&name)]).await;

    let t = w.move_file("old/catalog-info.yaml", "new/catalog-info.yaml");
    let new_url = format!("url:{}", w.url("new/catalog-info.yaml"));
    let took = wait_entity(&w.bs, &cref(&name), "read from the new path", t, |e| {
        e.and_then(managed_by) == Some(new_url.as_str())
    })
    .await;
    eprintln!("measured: moved file: {name} read from the new path {took:?} after the push");
    assert_eq!(
        location_targets(&w.bs).await,
        vec![w.url("new/catalog-info.yaml")],
        "the old location is unregistered, the new one registered"
    );
    let s = settled(&h, "the move").await;
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("moved from") && n.contains("unregistered")),
        "{:?}",
        s.notes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_file_keeps_its_old_location_by_default_and_the_agent_says_so() {
    let name = unique_name("moved-kept");
    let w = World::new(&[("old/catalog-info.yaml", component(&name, "team-a"))]).await;
    let h = w.start(false, &[cref(&name)]).await;

    let t = w.move_file("old/catalog-info.yaml", "new/catalog-info.yaml");
    let new_url = w.url("new/catalog-info.yaml");
    while !location_targets(&w.bs).await.contains(&new_url) {
        assert!(
            t.elapsed() < HANG_GUARD,
            "hang guard: new path never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "measured: moved file: new location registered {:?} after the push",
        t.elapsed()
    );
    let mut targets = location_targets(&w.bs).await;
    targets.sort();
    assert_eq!(
        targets,
        vec![new_url, w.url("old/catalog-info.yaml")],
        "the old location stays registered"
    );
    let s = settled(&h, "the move").await;
    assert!(
        s.notes.iter().any(|n| n.contains("moved from")
            && n.contains("catalog.unregister_deleted is off")
            && n.contains(&cref(&name))),
        "{:?}",
        s.notes
    );
    assert!(entity(&w.bs, &cref(&name)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_registered_by_someone_else_under_another_url_is_reused_not_duplicated() {
    let (old, new) = (unique_name("other-url"), unique_name("other-url-new"));
    let w = World::new(&[(FILE, component(&old, "team-a"))]).await;
    // Someone registered the file by hand, spelling its URL differently.
    let theirs = w.url("svc/./catalog-info.yaml");
    let r =
        w.bs.register_location(&theirs, w.bs.static_token())
            .await
            .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let h = w.start(false, &[cref(&old)]).await;
    assert_eq!(location_targets(&w.bs).await, vec![theirs.clone()]);

    w.repo
        .change(FILE, &component(&new, "team-b"), "rename the component");
    let t = w.push();
    w.appears(
        &cref(&new),
        "rename in a file registered by someone else",
        t,
    )
    .await;
    settled(&h, "the rename").await;
    assert_eq!(
        location_targets(&w.bs).await,
        vec![theirs],
        "the agent reused their location instead of registering {}",
        w.url(FILE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_backstage_found_through_a_location_file_is_refreshed_there_not_registered() {
    let (old, new) = (unique_name("found"), unique_name("found-new"));
    // A Location file (not a catalog file of the agent's) points Backstage at the catalog
    // file, as a discovery provider or an operator would.
    let locations = "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: all\nspec:\n  targets:\n    - ./svc/catalog-info.yaml\n";
    let w = World::new(&[
        (FILE, component(&old, "team-a")),
        ("locations.yaml", locations.to_string()),
    ])
    .await;
    let theirs = w.url("locations.yaml");
    let r =
        w.bs.register_location(&theirs, w.bs.static_token())
            .await
            .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let found = wait_entity(&w.bs, &cref(&old), "found", Instant::now(), |e| e.is_some()).await;
    eprintln!("Backstage found {old} through locations.yaml in {found:?}");
    let h = w.start(false, &[cref(&old)]).await;

    w.repo
        .change(FILE, &component(&new, "team-a"), "rename the component");
    let t = w.push();
    w.appears(
        &cref(&new),
        "rename in a file found through a Location file",
        t,
    )
    .await;
    w.orphaned(&cref(&old), t).await;
    settled(&h, "the rename").await;
    assert_eq!(
        location_targets(&w.bs).await,
        vec![theirs],
        "the agent refreshed the Location entity Backstage reads the file with"
    );
}

/// Waits until the agent's status has a note for which `cond` holds; returns it.
async fn note(h: &CatalogHandle, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let s = wait(h, what, HANG_GUARD, |s| s.notes.iter().any(|n| cond(n))).await;
    let n = s.notes.into_iter().find(|n| cond(n)).unwrap();
    eprintln!("note: {n}");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_registered_under_its_github_tree_url_is_reused_by_an_agent_using_blob() {
    let (old, new) = (unique_name("gh-form"), unique_name("gh-form-new"));
    // Backstage reads GitHub-shaped URLs on `localhost:PORT` (the git host under another
    // name) through its GitHub reader, as it reads GitHub Enterprise: owner `raw`, raw base
    // the git host, so it fetches the git host's /raw/REPO/REF/PATH.
    let w = World::with_backstage(&[(FILE, component(&old, "team-a"))], |bed, o| {
        let port = bed.git.host_port().rsplit(':').next().unwrap().to_string();
        o.github = Some((format!("localhost:{port}"), bed.git.url().to_string()));
    })
    .await;
    let gh = |form: &str| {
        let port = w
            .bed
            .git
            .host_port()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        format!("http://localhost:{port}/raw/{}/{form}", w.repo.name)
    };
    // Someone registered the file by its tree URL (Backstage's own spelling: its GitHub
    // integration resolves every target to `tree`, so that is what the entities name).
    let theirs = format!("{}/main/{FILE}", gh("tree"));
    let r =
        w.bs.register_location(&theirs, w.bs.static_token())
            .await
            .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    wait_entity(
        &w.bs,
        &cref(&old),
        "read by its tree URL",
        Instant::now(),
        |e| e.is_some(),
    )
    .await;
    // The agent names the file by its blob URL, its default for GitHub remotes.
    let template = format!("{}/{{branch}}/{{path}}", gh("blob"));
    let h = w.start_with(Some(template), false, &[cref(&old)]).await;
    assert_eq!(
        location_targets(&w.bs).await,
        vec![theirs.clone()],
        "catalog sync registered the blob URL beside their tree URL"
    );

    w.repo
        .change(FILE, &component(&new, "team-b"), "rename the component");
    let t = w.push();
    w.appears(
        &cref(&new),
        "rename in a file registered by its tree URL",
        t,
    )
    .await;
    w.orphaned(&cref(&old), t).await;
    settled(&h, "the rename").await;
    assert_eq!(
        location_targets(&w.bs).await,
        vec![theirs],
        "the agent refreshed their location instead of registering the blob URL"
    );
}

/// The name Backstage gives the Location entity of `url:TARGET`
/// (`locationSpecToMetadataName`), which its GitHub discovery uses for each file it finds.
fn generated_location_name(target: &str) -> String {
    use sha1::{Digest, Sha1};
    let d = Sha1::digest(format!("url:{target}").as_bytes());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("generated-{hex}")
}

/// A Location file holding one Location entity for `target`, as discovery emits it.
fn location_entity(name: &str, target: &str, presence: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: {name}\nspec:\n  type: url\n  target: {target}\n  presence: {presence}\n"
    )
}

/// Registers `locations.yaml` (someone else's) and waits until Backstage processed it.
async fn register_location_file(w: &World) -> String {
    let theirs = w.url("locations.yaml");
    let r =
        w.bs.register_location(&theirs, w.bs.static_token())
            .await
            .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let filter = format!(
        "/entities?filter=kind=location,metadata.annotations.backstage.io/managed-by-location=url:{theirs}"
    );
    let t = Instant::now();
    loop {
        let e = w.bs.get(&filter, Some(w.bs.static_token())).await.unwrap();
        if e.body.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            t.elapsed() < HANG_GUARD,
            "hang guard: locations.yaml never processed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    theirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_location_not_processed_yet_is_refreshed_not_duplicated() {
    let name = unique_name("discovered");
    let w = World::new(&[("README.md", "a service\n".to_string())]).await;
    // Backstage's GitHub discovery emits a Location entity per file, named after its URL,
    // without registering a location. Here one names the catalog file before it exists:
    // its first read failed (404), so Backstage holds it unprocessed, in no API answer.
    let url = w.url(FILE);
    let generated = generated_location_name(&url);
    w.repo.change(
        "locations.yaml",
        &location_entity(&generated, &url, "required"),
        "discovery's Location",
    );
    w.repo.push();
    let theirs = register_location_file(&w).await;
    let h = w.start(false, &[]).await;

    w.repo
        .change(FILE, &component(&name, "team-a"), "add the discovered file");
    let t = w.push();
    w.appears(
        &cref(&name),
        "a file discovery named before it was processed",
        t,
    )
    .await;
    settled(&h, "the new file").await;
    assert_eq!(
        location_targets(&w.bs).await,
        vec![theirs],
        "the agent refreshed discovery's Location entity instead of registering the file"
    );
    assert_eq!(
        parents(&w.bs, &cref(&name)).await.unwrap(),
        vec![format!("location:default/{generated}")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_entity_naming_the_file_is_refreshed_not_duplicated() {
    let name = unique_name("named");
    let holder = unique_name("holder");
    let w = World::new(&[("README.md", "a service\n".to_string())]).await;
    // An operator's Location entity for the file, optional so it is in the catalog while
    // the file does not exist yet (discovery's are optional too).
    let url = w.url(FILE);
    w.repo.change(
        "locations.yaml",
        &location_entity(&holder, &url, "optional"),
        "an operator's Location",
    );
    w.repo.push();
    let theirs = register_location_file(&w).await;
    wait_entity(
        &w.bs,
        &format!("location:default/{holder}"),
        "processed",
        Instant::now(),
        |e| e.is_some(),
    )
    .await;
    let h = w.start(false, &[]).await;

    w.repo
        .change(FILE, &component(&name, "team-a"), "add the named file");
    let t = w.push();
    w.appears(&cref(&name), "a file a Location entity names", t)
        .await;
    settled(&h, "the new file").await;
    assert_eq!(
        location_targets(&w.bs).await,
        vec![theirs],
        "the agent refreshed the Location entity naming the file instead of registering it"
    );
    assert_eq!(
        parents(&w.bs, &cref(&name)).await.unwrap(),
        vec![format!("location:default/{holder}")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_emptied_of_entities_is_read_again_and_they_become_orphans() {
    let (a, b) = (unique_name("empty-a"), unique_name("empty-b"));
    let w = World::new(&[(
        FILE,
        docs(&[component(&a, "team-a"), component(&b, "team-a")]),
    )])
    .await;
    let h = w.start(false, &[cref(&a), cref(&b)]).await;

    // No document left: only a comment.
    w.repo.change(
        FILE,
        "# moved to the payments repository\n",
        "empty the file",
    );
    let t = w.push();
    w.orphaned(&cref(&a), t).await;
    w.orphaned(&cref(&b), t).await;
    reported_left(&h, &cref(&a), FILE).await;
    reported_left(&h, &cref(&b), FILE).await;
    let s = settled(&h, "the emptied file").await;
    assert!(s.outbox.is_empty(), "{:?}", s.outbox);
    note(&h, "the agent says the file was read again", |n| {
        n.starts_with(&format!("{FILE} has no entities left: refreshed "))
    })
    .await;
    assert_eq!(location_targets(&w.bs).await, vec![w.url(FILE)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_left_with_only_invalid_entities_is_held_and_the_agent_says_so() {
    let a = unique_name("held");
    let w = World::new(&[(FILE, component(&a, "team-a"))]).await;
    let h = w.start(false, &[cref(&a)]).await;

    // The only entity lost its owner: invalid, so nothing valid is left in the file.
    let broken = component(&a, "team-b").replace("  owner: team-b\n", "");
    w.repo.change(FILE, &broken, "break the file");
    let t = w.push();
    note(&h, "the agent says the file is held", |n| {
        n.contains(FILE) && n.contains("no valid entity left") && n.contains(&cref(&a))
    })
    .await;
    eprintln!(
        "measured: held file reported {:?} after the push",
        t.elapsed()
    );
    let s = h.status();
    assert!(s.outbox.is_empty(), "nothing was queued: {:?}", s.outbox);
    assert!(
        s.findings.iter().any(|f| f.message.contains("spec.owner")),
        "{:?}",
        s.findings
    );
    assert_eq!(
        parents(&w.bs, &cref(&a)).await.map(|p| p.len()),
        Some(1),
        "Backstage keeps the last good entity, still read from its location"
    );
    assert_eq!(
        entity(&w.bs, &cref(&a)).await.unwrap()["spec"]["owner"],
        "team-a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_keeps_its_location_by_default_and_the_agent_says_so() {
    let a = unique_name("deleted-kept");
    let w = World::new(&[
        (FILE, component(&a, "team-a")),
        (
            "other/catalog-info.yaml",
            component(&unique_name("stays"), "team-a"),
        ),
    ])
    .await;
    let h = w.start(false, &[cref(&a)]).await;

    w.repo.wt.git(&["rm", "-q", FILE]).unwrap();
    w.repo.wt.commit_all("delete the file").unwrap();
    w.push();
    note(&h, "the agent says the location stays", |n| {
        n.contains(FILE)
            && n.contains("deleted")
            && n.contains("catalog.unregister_deleted is off")
            && n.contains(&cref(&a))
    })
    .await;
    assert!(location_targets(&w.bs).await.contains(&w.url(FILE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_is_unregistered_when_configured_and_its_entity_orphaned() {
    let a = unique_name("deleted");
    let stays = unique_name("stays");
    let w = World::new(&[
        (FILE, component(&a, "team-a")),
        ("other/catalog-info.yaml", component(&stays, "team-a")),
    ])
    .await;
    let h = w.start(true, &[cref(&a), cref(&stays)]).await;

    w.repo.wt.git(&["rm", "-q", FILE]).unwrap();
    w.repo.wt.commit_all("delete the file").unwrap();
    let t = w.push();
    w.orphaned(&cref(&a), t).await;
    assert_eq!(
        location_targets(&w.bs).await,
        vec![w.url("other/catalog-info.yaml")],
        "the deleted file's location is unregistered"
    );
    settled(&h, "the deletion").await;
    assert!(entity(&w.bs, &cref(&stays)).await.is_some());
}
