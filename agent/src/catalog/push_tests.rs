//! The push path against a small fake Backstage, with real git (a bare remote and a clone):
//! push detection, refresh vs registration, dry-run refusal, invalid files, outage with a
//! restart, token refusal.

use super::fake_backstage::Fake;
use super::tests::{component, git, wait_for, write};
use super::token::StaticToken;
use super::*;
use crate::secret::Secret;
use std::path::{Path, PathBuf};

struct Bed {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    paths: Paths,
    fake: Fake,
}

const URL: &str = "http://git.test/";

async fn bed(files: &[(&str, String)]) -> Bed {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    git(&base, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(&base, &["clone", "-q", "remote.git", "work"]);
    let work = base.join("work");
    git(&work, &["config", "user.email", "t@example.com"]);
    git(&work, &["config", "user.name", "t"]);
    git(&work, &["checkout", "-q", "-b", "main"]);
    for (p, text) in files {
        write(&work, p, text);
    }
    commit_push(&work, "initial");
    git(&work, &["branch", "-q", "--set-upstream-to=origin/main"]);
    Bed {
        paths: Paths {
            config_files: Vec::new(),
            state_dir: base.join("state"),
            runtime_dir: base.join("run"),
        },
        _tmp: tmp,
        work,
        fake: Fake::start().await,
    }
}

fn commit_push(work: &Path, msg: &str) {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["push", "-q", "origin", "main"]);
}

impl Bed {
    fn config(&self) -> CatalogConfig {
        CatalogConfig {
            root: Some(self.work.clone()),
            backstage_url: Some(crate::config::HttpUrl::parse(&self.fake.url).unwrap()),
            url_template: Some(format!("{URL}{{path}}")),
            retry_max: Duration::from_millis(200),
            profile: Some("backstage".into()),
            ..CatalogConfig::default()
        }
    }

    async fn start(&self, token: Arc<StaticToken>) -> CatalogHandle {
        self.start_with(&self.config(), token).await
    }

    /// Starts the service with `config` (a variant of [`Bed::config`]) and waits until it
    /// watches.
    async fn start_with(&self, config: &CatalogConfig, token: Arc<StaticToken>) -> CatalogHandle {
        let h = Service::start_with(
            config,
            &self.paths,
            Options {
                tokens: token,
                ..Options::default()
            },
        )
        .await;
        wait_for(&h, "watching", |s| s.state == EngineState::Watching).await;
        h
    }

    /// Backstage holds `entity` (owned by `owner`), read from `file`'s registered location.
    fn known(&self, entity: &str, owner: &str, file: &str) {
        let url = format!("{URL}{file}");
        self.fake.with(|s| {
            s.entities.insert(entity.into(), Some(owner.into()));
            if !s.registered.contains(&url) {
                s.registered.push(url.clone());
            }
            s.origin.insert(entity.into(), url);
        });
    }

    /// The Location entity the fake made for `file`'s registered location.
    fn location_of(&self, file: &str) -> String {
        let url = format!("{URL}{file}");
        self.fake.with(|s| {
            let id = s.registered.iter().position(|r| *r == url).unwrap() + 1;
            format!("location:default/generated-{id}")
        })
    }

    /// Refreshes of `file`'s Location entity.
    fn refreshes(&self, file: &str) -> usize {
        let location = self.location_of(file);
        self.fake
            .calls("POST", "/api/catalog/refresh")
            .iter()
            .filter(|c| c.body["entityRef"] == location.as_str())
            .count()
    }
}

fn token(t: &str) -> Arc<StaticToken> {
    Arc::new(StaticToken::new("backstage", Secret::new(t)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_change_is_diffed_on_save_and_refreshed_after_push() {
    let bed = bed(&[("svc/catalog-info.yaml", component("payments", "team-a"))]).await;
    bed.known(
        "component:default/payments",
        "group:default/team-a",
        "svc/catalog-info.yaml",
    );
    let h = bed.start(token("tok-1")).await;
    let s = h.status();
    assert!(s.diff.is_empty(), "{:?}", s.diff);
    assert_eq!(s.tracked_ref.as_deref(), Some("refs/remotes/origin/main"));

    write(
        &bed.work,
        "svc/catalog-info.yaml",
        &component("payments", "team-b"),
    );
    let s = wait_for(&h, "diff", |s| !s.diff.is_empty()).await;
    assert_eq!(
        s.diff[0].to_string(),
        "component:default/payments: group:team-a -> group:team-b"
    );
    assert_eq!(h.diff().await.changes, s.diff);
    assert_eq!(
        bed.refreshes("svc/catalog-info.yaml"),
        0,
        "saving is not pushing"
    );

    commit_push(&bed.work, "owner b");
    wait_for(&h, "refresh", |s| {
        s.pushes.get("component:default/payments") == Some(&1)
    })
    .await;
    let calls = bed.fake.calls("POST", "/api/catalog/refresh");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].auth.as_deref(), Some("Bearer tok-1"));
    assert!(h.status().outbox.is_empty());
    // Validate-entity ran on the edit with the file's URL as location.
    let v = bed.fake.calls("POST", "/api/catalog/validate-entity");
    assert!(
        v.iter()
            .any(|c| c.body["location"] == format!("url:{URL}svc/catalog-info.yaml"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_are_registered_after_a_dry_run_and_rule_violations_are_reported() {
    let bed = bed(&[("svc/catalog-info.yaml", component("payments", "team-a"))]).await;
    bed.known(
        "component:default/payments",
        "group:default/team-a",
        "svc/catalog-info.yaml",
    );
    bed.fake.with(|s| {
        s.locations.insert(
            format!("{URL}new/catalog-info.yaml"),
            vec!["component:default/billing".into()],
        );
        // catalog.rules drop the entity: the dry run yields nothing.
        s.locations
            .insert(format!("{URL}bad/catalog-info.yaml"), vec![]);
    });
    let h = bed.start(token("tok")).await;
    write(
        &bed.work,
        "new/catalog-info.yaml",
        &component("billing", "team-b"),
    );
    write(
        &bed.work,
        "bad/catalog-info.yaml",
        &component("forbidden", "team-b"),
    );
    commit_push(&bed.work, "two new files");
    let s = wait_for(&h, "register + refusal", |s| {
        s.pushes.contains_key("component:default/billing")
            && s.outbox.iter().any(|j| j.state == "failed")
    })
    .await;
    let failed = s.outbox.iter().find(|j| j.state == "failed").unwrap();
    assert_eq!(failed.entity, "component:default/forbidden");
    assert!(
        failed.error.as_ref().unwrap().contains("catalog.rules"),
        "{failed:?}"
    );
    let regs = bed.fake.calls("POST", "/api/catalog/locations");
    assert_eq!(regs.len(), 1, "only billing is registered for real");
    assert_eq!(
        regs[0].body["target"],
        format!("{URL}new/catalog-info.yaml")
    );
    assert_eq!(
        bed.fake
            .calls("POST", "/api/catalog/locations?dryRun=true")
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_not_pushed() {
    let bed = bed(&[
        ("a/catalog-info.yaml", component("a", "team-a")),
        ("b/catalog-info.yaml", component("b", "team-a")),
    ])
    .await;
    bed.known(
        "component:default/a",
        "group:default/team-a",
        "a/catalog-info.yaml",
    );
    bed.known(
        "component:default/b",
        "group:default/team-a",
        "b/catalog-info.yaml",
    );
    let h = bed.start(token("tok")).await;
    write(
        &bed.work,
        "a/catalog-info.yaml",
        &component("a", "team-b").replace("  owner: team-b\n", ""),
    );
    let s = wait_for(&h, "local finding", |s| !s.findings.is_empty()).await;
    assert_eq!(
        s.findings[0].to_string(),
        "a/catalog-info.yaml:6:3: spec.owner is missing; kind Component requires it (required-field)"
    );
    commit_push(&bed.work, "broken a");
    write(&bed.work, "b/catalog-info.yaml", &component("b", "team-b"));
    commit_push(&bed.work, "b to team-b");
    wait_for(&h, "b pushed", |s| {
        s.pushes.contains_key("component:default/b")
    })
    .await;
    assert_eq!(bed.refreshes("a/catalog-info.yaml"), 0);
    assert!(h.status().outbox.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_restart_lose_nothing_and_push_each_entity_once() {
    let files: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| (format!("{n}/catalog-info.yaml"), component(n, "team-a")))
        .collect();
    let refs: Vec<(&str, String)> = files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
    let bed = bed(&refs).await;
    for n in ["a", "b", "c"] {
        bed.known(
            &format!("component:default/{n}"),
            "group:default/team-a",
            &format!("{n}/catalog-info.yaml"),
        );
    }
    bed.fake.with(|s| s.fail_with = Some(503));
    let h = bed.start(token("tok")).await;
    write(&bed.work, "a/catalog-info.yaml", &component("a", "team-b"));
    commit_push(&bed.work, "a");
    wait_for(&h, "a retried", |s| {
        s.outbox.iter().any(|j| j.attempts >= 1)
    })
    .await;
    drop(h);

    // While the agent is down: b changes twice (coalesced), c once.
    write(&bed.work, "b/catalog-info.yaml", &component("b", "team-b"));
    commit_push(&bed.work, "b1");
    write(&bed.work, "b/catalog-info.yaml", &component("b", "team-c"));
    commit_push(&bed.work, "b2");
    write(&bed.work, "c/catalog-info.yaml", &component("c", "team-b"));
    commit_push(&bed.work, "c");

    let h = bed.start(token("tok")).await;
    let s = wait_for(&h, "three pending", |s| {
        s.outbox.len() == 3 && s.outbox.iter().all(|j| j.attempts >= 1)
    })
    .await;
    assert!(
        s.outbox.iter().all(|j| j.state == "pending"),
        "{:?}",
        s.outbox
    );
    let before = bed.fake.with(|s| {
        s.fail_with = None;
        s.seen.len()
    });
    wait_for(&h, "all pushed", |s| {
        s.pushes.len() == 3 && s.outbox.is_empty()
    })
    .await;
    let after: Vec<_> = bed.fake.with(|s| s.seen[before..].to_vec());
    for n in ["a", "b", "c"] {
        let location = bed.location_of(&format!("{n}/catalog-info.yaml"));
        let n_refresh = after
            .iter()
            .filter(|c| {
                c.path == "/api/catalog/refresh" && c.body["entityRef"] == location.as_str()
            })
            .count();
        assert_eq!(n_refresh, 1, "{n} refreshed once");
    }
}

/// Regression (found by `tests/tests/e2e/faults_outbox_kill.rs`): an agent stopped while the
/// outbox held a job for an older version of an entity, with a newer version pushed while
/// it was down, used to push the stale job at once on restart and then the newest version
/// again. Pushes made meanwhile are now queued before the worker starts: one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_job_left_by_a_stopped_agent_is_replaced_not_pushed_twice() {
    let bed = bed(&[("a/catalog-info.yaml", component("a", "team-a"))]).await;
    bed.known(
        "component:default/a",
        "group:default/team-a",
        "a/catalog-info.yaml",
    );
    bed.fake.with(|s| s.fail_with = Some(503));
    let h = bed.start(token("tok")).await;
    write(&bed.work, "a/catalog-info.yaml", &component("a", "team-b"));
    commit_push(&bed.work, "a -> b");
    wait_for(&h, "a queued and retried", |s| {
        s.outbox.iter().any(|j| j.attempts >= 1)
    })
    .await;
    drop(h);

    // While the agent is down: a newer version, and Backstage recovers.
    write(&bed.work, "a/catalog-info.yaml", &component("a", "team-c"));
    commit_push(&bed.work, "a -> c");
    let before = bed.fake.with(|s| {
        s.fail_with = None;
        s.seen.len()
    });
    // `start` returns once the engine watches, i.e. after the catch-up queued the newer
    // version: once the outbox is empty, every push of this restart has happened.
    let h = bed.start(token("tok")).await;
    let s = wait_for(&h, "a pushed", |s| {
        s.pushes.contains_key("component:default/a") && s.outbox.is_empty()
    })
    .await;
    assert_eq!(
        s.pushes.get("component:default/a"),
        Some(&1),
        "{:?}",
        s.pushes
    );
    let location = bed.location_of("a/catalog-info.yaml");
    let refreshes = bed.fake.with(|s| {
        s.seen[before..]
            .iter()
            .filter(|c| {
                c.path == "/api/catalog/refresh" && c.body["entityRef"] == location.as_str()
            })
            .count()
    });
    assert_eq!(refreshes, 1, "a refreshed once after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_pauses_pushes_until_it_changes() {
    let bed = bed(&[("svc/catalog-info.yaml", component("payments", "team-a"))]).await;
    bed.known(
        "component:default/payments",
        "group:default/team-a",
        "svc/catalog-info.yaml",
    );
    bed.fake.with(|s| s.accept_token = Some("good".into()));
    let tok = token("wrong-audience");
    let h = bed.start(tok.clone()).await;
    write(
        &bed.work,
        "svc/catalog-info.yaml",
        &component("payments", "team-b"),
    );
    commit_push(&bed.work, "b");
    let s = wait_for(&h, "paused", |s| {
        s.backstage
            .as_ref()
            .and_then(|b| b.paused.as_ref())
            .is_some()
    })
    .await;
    let why = s.backstage.unwrap().paused.unwrap();
    assert!(why.contains("profile backstage"), "{why}");
    let refused = bed.fake.with(|s| {
        s.seen
            .iter()
            .filter(|c| {
                c.path == "/api/catalog/entities/by-refs"
                    && c.auth.as_deref() == Some("Bearer wrong-audience")
            })
            .count()
    });
    tok.set(Secret::new("good"));
    wait_for(&h, "resumed", |s| {
        s.pushes.contains_key("component:default/payments")
    })
    .await;
    let s = h.status();
    assert!(s.backstage.unwrap().paused.is_none());
    let refused_after = bed.fake.with(|s| {
        s.seen
            .iter()
            .filter(|c| {
                c.path == "/api/catalog/entities/by-refs"
                    && c.auth.as_deref() == Some("Bearer wrong-audience")
            })
            .count()
    });
    assert!(
        refused_after <= refused + 1,
        "paused pushes do not hammer Backstage: {refused} -> {refused_after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_files_are_unregistered_only_when_configured() {
    let bed = bed(&[
        ("a/catalog-info.yaml", component("a", "team-a")),
        ("b/catalog-info.yaml", component("b", "team-a")),
    ])
    .await;
    let url_a = format!("{URL}a/catalog-info.yaml");
    bed.fake.with(|s| {
        s.entities.insert(
            "component:default/a".into(),
            Some("group:default/team-a".into()),
        );
        s.registered.push(url_a.clone());
        s.origin.insert("component:default/a".into(), url_a.clone());
    });
    let config = CatalogConfig {
        unregister_deleted: true,
        ..bed.config()
    };
    let h = bed.start_with(&config, token("tok")).await;
    std::fs::remove_dir_all(bed.work.join("a")).unwrap();
    wait_for(&h, "file gone", |s| s.files == 1).await;
    commit_push(&bed.work, "remove a");
    wait_for(&h, "unregistered", |s| {
        s.pushes.contains_key("component:default/a")
    })
    .await;
    assert_eq!(
        bed.fake.calls("DELETE", "/api/catalog/locations/1").len(),
        1
    );
    assert!(bed.fake.calls("POST", "/api/catalog/refresh").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_files_stay_registered_by_default() {
    let bed = bed(&[
        ("a/catalog-info.yaml", component("a", "team-a")),
        ("b/catalog-info.yaml", component("b", "team-a")),
    ])
    .await;
    bed.known(
        "component:default/b",
        "group:default/team-a",
        "b/catalog-info.yaml",
    );
    let h = bed.start(token("tok")).await;
    std::fs::remove_dir_all(bed.work.join("a")).unwrap();
    write(&bed.work, "b/catalog-info.yaml", &component("b", "team-b"));
    commit_push(&bed.work, "remove a, change b");
    wait_for(&h, "b pushed", |s| {
        s.pushes.contains_key("component:default/b")
    })
    .await;
    let deletes = bed
        .fake
        .with(|s| s.seen.iter().filter(|c| c.method == "DELETE").count());
    assert_eq!(deletes, 0);
    assert!(!h.status().pushes.contains_key("component:default/a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_from_a_linked_worktree_are_detected() {
    // A linked worktree has a `.git` *file* (`gitdir: ...`); its remote-tracking refs live
    // in the main repository's common dir, which is what must be watched.
    let bed = bed(&[("svc/catalog-info.yaml", component("payments", "team-a"))]).await;
    bed.known(
        "component:default/payments",
        "group:default/team-a",
        "svc/catalog-info.yaml",
    );
    let linked = bed.work.parent().unwrap().join("linked");
    git(
        &bed.work,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "feature",
            linked.to_str().unwrap(),
        ],
    );
    assert!(linked.join(".git").is_file());
    git(&linked, &["push", "-q", "-u", "origin", "feature"]);
    let config = CatalogConfig {
        root: Some(linked.clone()),
        ..bed.config()
    };
    let h = bed.start_with(&config, token("tok")).await;
    let s = h.status();
    assert_eq!(
        s.tracked_ref.as_deref(),
        Some("refs/remotes/origin/feature")
    );
    write(
        &linked,
        "svc/catalog-info.yaml",
        &component("payments", "team-b"),
    );
    git(&linked, &["add", "-A"]);
    git(&linked, &["commit", "-q", "-m", "b"]);
    git(&linked, &["push", "-q"]);
    wait_for(&h, "refresh", |s| {
        s.pushes.contains_key("component:default/payments")
    })
    .await;
    assert_eq!(bed.refreshes("svc/catalog-info.yaml"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_refreshes_the_location_the_old_name_came_from() {
    let bed = bed(&[("svc/catalog-info.yaml", component("payments", "team-a"))]).await;
    bed.known(
        "component:default/payments",
        "group:default/team-a",
        "svc/catalog-info.yaml",
    );
    let h = bed.start(token("tok")).await;
    write(
        &bed.work,
        "svc/catalog-info.yaml",
        &component("billing", "team-a"),
    );
    commit_push(&bed.work, "rename");
    let s = wait_for(&h, "renamed pushed", |s| {
        s.pushes.contains_key("component:default/billing") && s.outbox.is_empty()
    })
    .await;
    assert_eq!(bed.refreshes("svc/catalog-info.yaml"), 1);
    // The push itself says what became of the old name: no waiting for Backstage.
    assert!(
        s.notes.iter().any(|n| n.starts_with(
            "component:default/payments left svc/catalog-info.yaml; Backstage orphans it"
        ) && n.contains("catalog.orphanStrategy")),
        "{:?}",
        s.notes
    );
    assert!(
        bed.fake.with(|s| s
            .seen
            .iter()
            .all(|c| !c.path.starts_with("/api/catalog/locations"))),
        "the file's location is known: nothing is registered"
    );
}

/// An entity removed from a file is reported by the push that re-reads the file; one that
/// went to another file of the same push is not (Backstage reads it from there), and one
/// Backstage never held is said to be so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_that_left_a_file_are_reported_by_its_push() {
    let a = "a/catalog-info.yaml";
    let three = format!(
        "{}---\n{}---\n{}",
        component("kept", "team-a"),
        component("removed", "team-a"),
        component("wandered", "team-a")
    );
    let bed = bed(&[
        (a, three),
        ("b/catalog-info.yaml", component("other", "team-a")),
    ])
    .await;
    for e in ["kept", "removed", "wandered"] {
        bed.known(&format!("component:default/{e}"), "group:default/team-a", a);
    }
    bed.known(
        "component:default/other",
        "group:default/team-a",
        "b/catalog-info.yaml",
    );
    let h = bed.start(token("tok")).await;
    write(&bed.work, a, &component("kept", "team-a"));
    write(
        &bed.work,
        "b/catalog-info.yaml",
        &format!(
            "{}---\n{}",
            component("other", "team-a"),
            component("wandered", "team-a")
        ),
    );
    commit_push(&bed.work, "remove one entity, move one to b");
    let s = wait_for(&h, "both files pushed", |s| {
        s.outbox.is_empty() && s.pushes.contains_key("component:default/kept")
    })
    .await;
    let left: Vec<&String> = s.notes.iter().filter(|n| n.contains(" left ")).collect();
    assert_eq!(left.len(), 1, "{:?}", s.notes);
    assert!(
        left[0].starts_with(
            "component:default/removed left a/catalog-info.yaml; Backstage orphans it"
        ),
        "{left:?}"
    );
    assert_eq!(bed.refreshes(a), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_file_unregisters_its_old_location_first_when_configured() {
    for unregister_deleted in [true, false] {
        let bed = bed(&[("a/catalog-info.yaml", component("a", "team-a"))]).await;
        bed.known(
            "component:default/a",
            "group:default/team-a",
            "a/catalog-info.yaml",
        );
        bed.fake.with(|s| {
            s.locations.insert(
                format!("{URL}b/catalog-info.yaml"),
                vec!["component:default/a".into()],
            );
        });
        let config = CatalogConfig {
            unregister_deleted,
            ..bed.config()
        };
        let h = bed.start_with(&config, token("tok")).await;
        std::fs::create_dir_all(bed.work.join("b")).unwrap();
        git(
            &bed.work,
            &["mv", "a/catalog-info.yaml", "b/catalog-info.yaml"],
        );
        commit_push(&bed.work, "move");
        let s = wait_for(&h, "moved", |s| {
            s.pushes.contains_key("component:default/a") && s.outbox.is_empty()
        })
        .await;
        let mutations: Vec<String> = bed.fake.with(|s| {
            s.seen
                .iter()
                .filter(|c| {
                    c.method == "DELETE"
                        || (c.method == "POST" && c.path == "/api/catalog/locations")
                })
                .map(|c| format!("{} {}", c.method, c.path))
                .collect()
        });
        let note = s.notes.join("\n");
        assert!(
            note.contains(&format!("moved from {URL}a/catalog-info.yaml")),
            "{note}"
        );
        if unregister_deleted {
            assert_eq!(
                mutations,
                [
                    "DELETE /api/catalog/locations/1",
                    "POST /api/catalog/locations"
                ],
                "the old location goes before the new one is read"
            );
            assert!(note.contains("unregistered that location"), "{note}");
        } else {
            assert_eq!(mutations, ["POST /api/catalog/locations"]);
            assert!(note.contains("catalog.unregister_deleted is off"), "{note}");
        }
    }
}

/// CPU time this process has used (user + system, all threads, from /proc/self/stat): the
/// test runs in its own process under nextest, so a spinning task shows as a core's worth
/// per wall second.
fn cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command (which may hold spaces) start at field 3: utime is 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    let hz = rustix::param::clock_ticks_per_second();
    std::time::Duration::from_millis((f[0] + f[1]) * 1000 / hz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_polled_when_the_git_dir_cannot_be_watched() {
    let bed = bed(&[("svc/catalog-info.yaml", component("payments", "team-a"))]).await;
    bed.known(
        "component:default/payments",
        "group:default/team-a",
        "svc/catalog-info.yaml",
    );
    let h = Service::start_with(
        &bed.config(),
        &bed.paths,
        Options {
            tokens: token("tok-1"),
            // No inotify watch at all: not the catalog dirs, not the git dir.
            inotify_limit: Some(0),
            poll_interval: std::time::Duration::from_millis(200),
            ..Options::default()
        },
    )
    .await;
    let s = wait_for(&h, "watching", |s| s.state == EngineState::Watching).await;
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("cannot watch the git dir") && w.contains("polling")),
        "{:?}",
        s.warnings
    );
    // Idle: the engine must not spin on the git watcher's closed channel. A spin costs a
    // whole core (seen: 1.3 s of CPU in 2 s on a loaded machine); polling costs a few git
    // runs (seen: 10 ms).
    let before = cpu_time();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let used = cpu_time() - before;
    assert!(
        used < std::time::Duration::from_millis(300),
        "idle engine used {used:?} of CPU in 2 s"
    );
    // And a push is still seen.
    write(
        &bed.work,
        "svc/catalog-info.yaml",
        &component("payments", "team-b"),
    );
    commit_push(&bed.work, "owner b");
    wait_for(&h, "refresh", |s| {
        s.pushes.get("component:default/payments") == Some(&1)
    })
    .await;
    assert_eq!(bed.refreshes("svc/catalog-info.yaml"), 1);
}

/// A user token as Backstage's authorization server issues it (only `sub` is read, for
/// messages; the fake does not check signatures).
fn user_token(user: &str) -> Arc<StaticToken> {
    use base64::Engine;
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    token(&format!(
        "{}.{}.sig",
        enc(r#"{"alg":"ES256"}"#),
        enc(&format!(r#"{{"sub":"user:default/{user}"}}"#))
    ))
}

/// Signed in as a user under an owner-only policy (the Location entity, which has no
/// owner, is refused to everyone): a file is pushed through the refresh of an entity the
/// push changes, which Backstage allows only to its owners and which re-reads the file
/// through the entity's Location ancestors. A change to another team's entity is refused
/// naming who, which entity and which permission, kept and not retried, and never routed
/// through an entity the user owns in the same file; an added entity is pushed through
/// the file's previous entities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_pushes_through_the_entities_they_own_and_is_refused_the_rest() {
    let file = "svc/catalog-info.yaml";
    let both = |ledger: &str, payments: &str| {
        format!(
            "{}---\n{}",
            component("ledger", ledger),
            component("payments", payments)
        )
    };
    let bed = bed(&[(file, both("team-a", "team-b"))]).await;
    bed.known("component:default/ledger", "group:default/team-a", file);
    bed.known("component:default/payments", "group:default/team-b", file);
    bed.fake
        .with(|s| s.owner_policy = Some(vec!["group:default/team-a".into()]));
    let h = bed.start(user_token("alice")).await;
    let refreshed = |r: &str| {
        bed.fake
            .calls("POST", "/api/catalog/refresh")
            .iter()
            .filter(|c| c.body["entityRef"] == r)
            .count()
    };

    // alice's change to team-a's entity lands through the entity's own refresh.
    write(&bed.work, file, &both("team-c", "team-b"));
    commit_push(&bed.work, "ledger to team-c");
    let s = wait_for(&h, "ledger pushed", |s| {
        s.pushes.contains_key("component:default/ledger") && s.outbox.is_empty()
    })
    .await;
    assert!(s.outbox.is_empty(), "{:?}", s.outbox);
    assert_eq!(refreshed("component:default/ledger"), 1);
    assert_eq!(
        bed.refreshes(file),
        1,
        "the Location was tried first, refused"
    );

    // Her change to team-b's entity in the same file is refused, not routed through ledger.
    write(&bed.work, file, &both("team-c", "team-c"));
    commit_push(&bed.work, "payments to team-c");
    let s = wait_for(&h, "payments refused", |s| {
        s.outbox.iter().any(|j| j.state == "failed")
    })
    .await;
    let job = s
        .outbox
        .iter()
        .find(|j| j.entity == "component:default/payments")
        .unwrap();
    let err = job.error.clone().unwrap_or_default();
    for part in [
        "user:default/alice",
        "catalog.entity.refresh",
        "component:default/payments",
        "permission policy",
        "not retried",
    ] {
        assert!(err.contains(part), "{part:?} missing from {err:?}");
    }
    assert_eq!(
        refreshed("component:default/ledger"),
        1,
        "not routed: {s:?}"
    );
    assert!(
        s.backstage.as_ref().is_none_or(|b| b.paused.is_none()),
        "a refusal pauses nothing: {s:?}"
    );
    let attempts = job.attempts;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let s = h.status();
    assert_eq!(s.outbox.len(), 1, "kept: {:?}", s.outbox);
    assert_eq!(
        s.outbox[0].attempts, attempts,
        "not retried: {:?}",
        s.outbox
    );
    assert!(
        h.diff()
            .await
            .failed
            .iter()
            .any(|j| j.entity == "component:default/payments"),
        "the diff shows the refusal"
    );

    // An entity added to the file rides on the re-read through ledger, which she owns.
    write(
        &bed.work,
        file,
        &format!(
            "{}---\n{}",
            both("team-c", "team-c"),
            component("extra", "team-a")
        ),
    );
    commit_push(&bed.work, "extra");
    wait_for(&h, "extra pushed", |s| {
        s.pushes.contains_key("component:default/extra")
    })
    .await;
    assert_eq!(refreshed("component:default/ledger"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_file_refreshes_its_location_and_a_broken_one_is_held() {
    let bed = bed(&[
        ("a/catalog-info.yaml", component("payments", "team-a")),
        ("b/catalog-info.yaml", component("billing", "team-a")),
    ])
    .await;
    bed.known(
        "component:default/payments",
        "group:default/team-a",
        "a/catalog-info.yaml",
    );
    bed.known(
        "component:default/billing",
        "group:default/team-a",
        "b/catalog-info.yaml",
    );
    let h = bed.start(token("tok")).await;
    // a: no document left; b: its only entity is invalid (no owner).
    write(&bed.work, "a/catalog-info.yaml", "# gone\n");
    write(
        &bed.work,
        "b/catalog-info.yaml",
        &component("billing", "team-a").replace("  owner: team-a\n", ""),
    );
    commit_push(&bed.work, "empty a, break b");
    let s = wait_for(&h, "both reported", |s| {
        s.outbox.is_empty()
            && s.notes.iter().any(|n| n.contains("no entities left"))
            && s.notes.iter().any(|n| n.contains("no valid entity left"))
    })
    .await;
    assert_eq!(bed.refreshes("a/catalog-info.yaml"), 1, "{:?}", s.notes);
    assert_eq!(
        bed.refreshes("b/catalog-info.yaml"),
        0,
        "held: {:?}",
        s.notes
    );
    assert!(
        !s.pushes.contains_key("component:default/payments"),
        "the refresh is not a push of the entity that left: {:?}",
        s.pushes
    );
    assert!(
        s.notes.iter().any(|n| n.starts_with(
            "component:default/payments left a/catalog-info.yaml; Backstage orphans it"
        )),
        "{:?}",
        s.notes
    );
    assert_eq!(
        s.notes
            .iter()
            .filter(|n| n.contains("component:default/payments"))
            .count(),
        1,
        "what became of the entity is said once: {:?}",
        s.notes
    );
    assert!(
        s.notes
            .iter()
            .all(|n| !n.starts_with("component:default/billing left")),
        "a held file is not read again, so nothing left it yet: {:?}",
        s.notes
    );
    assert!(
        bed.fake.with(|s| s
            .seen
            .iter()
            .all(|c| !(c.method == "POST" && c.path.starts_with("/api/catalog/locations")))),
        "nothing is registered"
    );
}

/// Signed in as a user under an owner-only policy, a new file's lookup ends with a refresh
/// of the name Backstage's discovery would give its Location entity, which the policy
/// refuses whether or not that entity exists: the file is registered all the same, and a
/// note says the refusal hid whether a discovery Location stands in its way (who, which
/// entity, which permission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_guess_at_discoverys_location_registers_the_file_and_says_so() {
    let bed = bed(&[("README.md", "a service\n".to_string())]).await;
    let file = "new/catalog-info.yaml";
    bed.fake.with(|s| {
        s.owner_policy = Some(vec!["group:default/team-a".into()]);
        s.locations.insert(
            format!("{URL}{file}"),
            vec!["component:default/fresh".into()],
        );
    });
    let h = bed.start(user_token("alice")).await;
    write(&bed.work, file, &component("fresh", "team-a"));
    commit_push(&bed.work, "a new file");
    let s = wait_for(&h, "registered", |s| {
        s.pushes.contains_key("component:default/fresh") && s.outbox.is_empty()
    })
    .await;
    let guess = location::generated_location("url", &format!("{URL}{file}")).to_string();
    let note = s
        .notes
        .iter()
        .find(|n| n.contains(&guess))
        .unwrap_or_else(|| panic!("no note names {guess}: {:?}", s.notes));
    for part in [
        "user:default/alice",
        "catalog.entity.refresh",
        "permission policy",
        "discovery",
        "registered instead",
        "conflict",
        file,
    ] {
        assert!(note.contains(part), "{part:?} missing from {note:?}");
    }
    assert!(
        bed.fake
            .with(|s| s.registered.contains(&format!("{URL}{file}"))),
        "the file is registered all the same"
    );
}

/// Issue 19: Backstage's own `validate-entity` messages are bounded like local findings:
/// 300 messages of 10 KB each become 100 short findings and one count, not 3 MB of status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backstage_messages_are_cut_and_capped_per_file() {
    use super::finding::{MAX_FINDINGS, MESSAGE_CHARS};
    let bed = bed(&[("svc/catalog-info.yaml", component("wordy", "wordy-owner"))]).await;
    let h = bed.start(token("tok-1")).await;
    let s = wait_for(&h, "Backstage's findings", |s| {
        s.findings.iter().any(|f| f.rule == "backstage")
    })
    .await;
    let remote: Vec<_> = s
        .findings
        .iter()
        .filter(|f| f.rule == "backstage")
        .collect();
    assert_eq!(remote.len(), MAX_FINDINGS);
    for f in &remote {
        assert!(
            f.message.len() < MESSAGE_CHARS + 100,
            "{} bytes",
            f.message.len()
        );
        assert!(
            f.message.ends_with(" bytes)") && f.message.contains("... (100"),
            "{}",
            &f.message[..80]
        );
    }
    let rest: Vec<_> = s
        .findings
        .iter()
        .filter(|f| f.rule == "too-many-findings")
        .collect();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(
        rest[0]
            .message
            .starts_with("200 more findings from Backstage"),
        "{}",
        rest[0].message
    );
    let total: usize = s.findings.iter().map(|f| f.message.len()).sum();
    assert!(total < 100 * 1024, "{total} bytes of findings");
}
