//! The released Feature as users get it: published by the release command
//! (`release/release.sh`) to a local OCI registry (Debian's `docker-registry` on loopback),
//! then named in `devcontainer.json` by its registry reference and version tag
//! (`localhost:PORT/stagepass/features/stagepass:0`); `devcontainer up` on the real engine
//! fetches it from there, and the agent runs. Then version N+1 is published (the same
//! binaries under the next version, from a copy of the tree with the version bumped, as a
//! maintainer's release would). The lockfile `up` wrote (`devcontainer-lock.json`) pins `:0`
//! to N, so a rebuild alone stays on N; after `devcontainer upgrade` the rebuild installs N+1,
//! and the login and state on the state volume are kept.

use super::{World, checkout, devcontainer_json, login, status, text, token, wait};
use crate::feature::release::{copy_release_tree, published_tags, release, workspace_version};
use stagepass_e2e::Registry;
use stagepass_e2e::devcontainer::{DevContainer, REMOTE_UID};
use stagepass_e2e::git_host::RepoAuth;
use stagepass_e2e::idp::{AUD_BACKSTAGE, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN};
use stagepass_e2e::jwt;
use stagepass_e2e::support::{free_port, repo_root, unique_name};
use std::time::Instant;

/// The repository's test configuration with the Feature named by `reference` instead of the
/// local `./stagepass` folder.
fn by_reference(reference: &str) -> String {
    let json = devcontainer_json();
    assert!(json.contains("\"./stagepass\""), "{json}");
    json.replacen("\"./stagepass\"", &format!("\"{reference}\""), 1)
}

/// The version of the Feature installed in the container (install.sh keeps a copy of its
/// devcontainer-feature.json).
fn installed_feature_version(dc: &DevContainer) -> String {
    let out = dc
        .docker_exec(
            "root",
            &[
                "cat",
                "/usr/local/share/stagepass/devcontainer-feature.json",
            ],
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out), dc.diagnostics()));
    v["version"].as_str().unwrap().to_string()
}

/// The files of the state volume (grants and what the agent keeps), logs left out.
fn state_files(dc: &DevContainer) -> String {
    let out = dc
        .docker_exec(
            "root",
            &[
                "sh",
                "-c",
                "cd /var/lib/stagepass && find . -type f ! -name '*.log*' | sort",
            ],
        )
        .unwrap();
    text(&out)
}

/// The next minor version: 0.1.0 -> 0.2.0.
fn next_minor(v: &str) -> String {
    let mut it = v.split('.');
    let major: u32 = it.next().unwrap().parse().unwrap();
    let minor: u32 = it.next().unwrap().parse().unwrap();
    format!("{major}.{}.0", minor + 1)
}

#[test]
fn the_feature_by_reference_runs_the_agent_and_an_upgrade_keeps_the_login() {
    let w = World::new();
    let (rt, idp) = (&w.rt, &w.idp);
    let reg = Registry::start().unwrap();
    // The stripped debug binaries package_feature made for World: given to the release
    // command instead of a release build.
    let bins = w.pkg.0.path().join("bin");
    let tmp = tempfile::tempdir().unwrap();
    let v1 = workspace_version();
    let reference = format!("{}/stagepass/features/stagepass", reg.address());

    // The release command on the tree at `root` (version `v`), publishing to the registry.
    let publish = |root: &std::path::Path, v: &str| {
        let t0 = Instant::now();
        let out = release(
            root,
            &bins,
            &tmp.path().join(format!("dist-{v}")),
            &["--registry", &reg.address()],
        );
        println!(
            "release/release.sh {v} (package + publish): {:?}",
            t0.elapsed()
        );
        assert!(out.status.success(), "{}\n{}", text(&out), reg.log());
    };
    publish(&repo_root(), &v1);

    let remote = rt
        .block_on(
            w.git_host
                .create_repo(&unique_name("real-dc-ref"), RepoAuth::None),
        )
        .unwrap();
    let port = free_port().unwrap().to_string();
    let mut dc = DevContainer::by_reference(
        &w.engine,
        &by_reference(&format!("{reference}:0")),
        &[
            ("STAGEPASS_TEST_BASE_IMAGE", &w.engine.base_image),
            ("STAGEPASS_TEST_ISSUER", idp.issuer()),
            ("STAGEPASS_TEST_PORT", &port),
            ("STAGEPASS_TEST_BACKSTAGE_URL", ""),
            ("STAGEPASS_TEST_URL_TEMPLATE", ""),
        ],
    )
    .unwrap();
    assert!(!dc.workspace().join(".devcontainer/stagepass").exists());
    checkout(&dc, &remote, &[("README", "by reference\n".into())]);
    let (_, took) = dc.up(&[]).unwrap();
    println!("devcontainer up, Feature {reference}:0 by reference: {took:?}");
    assert_eq!(installed_feature_version(&dc), v1);
    let agents = wait(&dc, "the agent", || {
        dc.agents().ok().filter(|a| !a.is_empty())
    });
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0].1, REMOTE_UID, "{agents:?}");
    wait(&dc, "`stagepass status`", || status(&dc));
    login(&dc);
    let jwks = rt.block_on(idp.jwks()).unwrap();
    let first = token(&dc, "backstage").unwrap_or_else(|e| panic!("{e}\n{}", dc.diagnostics()));
    let state_before = state_files(&dc);
    assert!(state_before.contains("grants"), "{state_before}");
    let volumes = dc.volumes().to_vec();

    // Version N+1 published; the same `:0` tag now names it.
    let v2 = next_minor(&v1);
    publish(&copy_release_tree(tmp.path(), &v2), &v2);
    let tags = published_tags(&reference);
    for t in ["0", &v1, &v2, &v2[..v2.rfind('.').unwrap()], "latest"] {
        assert!(tags.iter().any(|x| x == t), "no tag {t}: {tags:?}");
    }

    // The lockfile `up` wrote pins `:0` to N: a rebuild alone stays on N.
    let lock = dc
        .lockfile()
        .expect("devcontainer up writes devcontainer-lock.json");
    assert!(lock.contains(&format!("\"version\": \"{v1}\"")), "{lock}");
    dc.up(&["--remove-existing-container"]).unwrap();
    assert_eq!(installed_feature_version(&dc), v1, "the lockfile kept N");

    // `devcontainer upgrade` moves the lockfile to N+1; the rebuild with the same workspace
    // installs it and keeps the login and state (no device login).
    dc.upgrade_lockfile().unwrap();
    let lock = dc.lockfile().unwrap();
    assert!(lock.contains(&format!("\"version\": \"{v2}\"")), "{lock}");
    rt.block_on(idp.reset_stats()).unwrap();
    let (_, took) = dc.up(&["--remove-existing-container"]).unwrap();
    println!("devcontainer up (rebuild to {v2} by reference): {took:?}");
    assert_eq!(installed_feature_version(&dc), v2, "the rebuild took N+1");
    assert_eq!(dc.volumes(), &volumes[..], "the same state volume");
    let second = wait(&dc, "a token after the upgrade", || {
        token(&dc, "backstage").ok()
    });
    assert_eq!(
        jwt::verify(&second, &jwks, idp.issuer(), AUD_BACKSTAGE).unwrap()["sub"],
        "alice"
    );
    // The IdP's control server may have closed the pooled idle connection during the
    // rebuild (IncompleteMessage on reuse): a second request goes on a new one.
    let stats = rt
        .block_on(idp.stats())
        .or_else(|_| rt.block_on(idp.stats()))
        .unwrap();
    assert_eq!(stats.device_authorization.requests, 0, "{stats:?}");
    assert_eq!(stats.grant(GRANT_DEVICE_CODE).requests, 0, "{stats:?}");
    // The stored access token is served again while it is usable (no IdP call); if its
    // planned refresh time passed during the rebuild, the stored refresh token renewed it
    // (one call). Either way no device login, and never a failed refresh.
    let refresh = stats.grant(GRANT_REFRESH_TOKEN);
    let expected = if second == first { (0, 0) } else { (1, 1) };
    assert_eq!((refresh.requests, refresh.ok), expected, "{stats:?}");
    let state_after = state_files(&dc);
    for line in state_before.lines().filter(|l| l.contains("grants")) {
        assert!(
            state_after.lines().any(|l| l == line),
            "{line} lost in the upgrade:\n{state_after}"
        );
    }
    let s = status(&dc).unwrap_or_default();
    println!("stagepass status after the upgrade:\n{s}");
}
