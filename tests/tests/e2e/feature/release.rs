//! The release command (`release/release.sh`) and what it ships, without a container engine:
//!
//! - one version: the Feature's metadata carries the workspace version of Cargo.toml;
//! - the command writes versioned tarballs, the `.deb` and SHA-256 checksums, publishes the
//!   Feature to a local OCI registry (Debian's `docker-registry` on loopback, [`Registry`])
//!   with the devcontainer CLI's tags `0`, `0.1`, `0.1.0`, and refuses (exit 3) to publish the
//!   same version twice, leaving the published artifact as it was;
//! - the Debian package installs into the Debian rootfs of the container tests, with its
//!   systemd user unit, which `systemd-analyze verify` accepts; the agent it starts speaks the
//!   notify protocol the unit relies on (`READY=1`, then `WATCHDOG=1` pings).
//!
//! The release command is given this build's binaries, stripped of debug info
//! (`--bin-dir`), so no release build is needed; `release/release.sh` without it builds them.
//! The dev-container tests that consume the published Feature by reference are under
//! `real::release` (they need the engine).

use super::container::{Container, REMOTE_UID, check, run, workspace_root};
use stagepass_e2e::Registry;
use stagepass_e2e::devcontainer::stripped_binaries;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The devcontainer CLI `tests/install/feature.sh` installs.
pub fn cli() -> PathBuf {
    stagepass_e2e::support::test_cache()
        .join("devcontainer-cli/current/node_modules/.bin/devcontainer")
}

/// `release/version.sh`: the workspace version.
pub fn workspace_version() -> String {
    let out = check(Command::new("sh").arg(workspace_root().join("release/version.sh")));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `release/release.sh ARGS` of the repository at `root` (the workspace, or a copy of it with
/// another version), with the prebuilt `bins` and the test's CLI.
pub fn release(root: &Path, bins: &Path, out: &Path, args: &[&str]) -> Output {
    run(Command::new("sh")
        .arg(root.join("release/release.sh"))
        .arg("--out")
        .arg(out)
        .arg("--bin-dir")
        .arg(bins)
        .arg("--devcontainer")
        .arg(cli())
        .args(args))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The tags the registry has for `reference`, as the devcontainer CLI reads them.
pub fn published_tags(reference: &str) -> Vec<String> {
    let out = check(Command::new(cli()).args([
        "features",
        "info",
        "tags",
        reference,
        "--output-format",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tags: Vec<String> = v["publishedTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

/// The manifest digest a tag points at, read from the registry's own storage.
fn tag_digest(reg: &Registry, repo: &str, tag: &str) -> String {
    std::fs::read_to_string(reg.storage().join(format!(
        "docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"
    )))
    .unwrap_or_else(|e| panic!("tag {tag} of {repo}: {e}\n{}", reg.log()))
}

#[test]
fn the_features_version_is_the_workspace_version() {
    let version = workspace_version();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("feature/src/stagepass/devcontainer-feature.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        json["version"], version,
        "feature/src/stagepass/devcontainer-feature.json and Cargo.toml's workspace version \
         must agree (release/release.sh refuses to run otherwise)"
    );
}

#[test]
fn package_sh_stamps_the_feature_with_the_workspace_version() {
    // A tree whose Cargo.toml says 7.8.9 while the Feature's source json still says the old
    // version: the staged Feature is 7.8.9, taken from Cargo.toml.
    let tmp = tempfile::tempdir().unwrap();
    let root = copy_release_tree(tmp.path(), &workspace_version());
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        cargo.replacen(
            &format!("version = \"{}\"", workspace_version()),
            "version = \"7.8.9\"",
            1,
        ),
    )
    .unwrap();
    let bins = stripped_binaries(tmp.path()).unwrap();
    let out = tmp.path().join("pkg");
    check(
        Command::new("sh")
            .arg(root.join("feature/package.sh"))
            .arg(&out)
            .arg(format!("x86_64={}", bins.join("stagepass").display()))
            .env_remove("DEVCONTAINER"),
    );
    let staged: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("src/stagepass/devcontainer-feature.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(staged["version"], "7.8.9");
    // The option named `version` is untouched.
    assert_eq!(staged["options"]["version"]["default"], "bundled");
}

#[test]
fn release_writes_checksummed_artifacts_publishes_and_refuses_a_second_publish() {
    let version = workspace_version();
    let tmp = tempfile::tempdir().unwrap();
    let bins = stripped_binaries(tmp.path()).unwrap();
    let out = tmp.path().join("dist");
    let reg = Registry::start().unwrap();
    let reference = format!("{}/stagepass/features/stagepass", reg.address());

    let started = Instant::now();
    let first = release(
        &workspace_root(),
        &bins,
        &out,
        &["--registry", &reg.address()],
    );
    println!(
        "release/release.sh --bin-dir (package + publish): {:?}",
        started.elapsed()
    );
    assert!(
        first.status.success(),
        "{}\nregistry log:\n{}",
        text(&first),
        reg.log()
    );

    // Versioned artifacts, each listed in SHA256SUMS, which verifies.
    let tarball = format!("stagepass-{version}-x86_64-linux-gnu.tar.gz");
    let deb = format!("stagepass_{version}_amd64.deb");
    let feature = format!("devcontainer-feature-stagepass-{version}.tgz");
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for name in [&tarball, &deb, &feature] {
        assert!(
            sums.lines().any(|l| l.ends_with(&format!("  {name}"))),
            "{name} not in SHA256SUMS:\n{sums}"
        );
    }
    check(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&out),
    );
    let listing = check(Command::new("tar").arg("-tzf").arg(out.join(&tarball)));
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in [
        "stagepass",
        "stagepass-core",
        "README.md",
        "SECURITY.md",
        "docs/configuration.md",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l == format!("stagepass-{version}-x86_64-linux-gnu/{f}")),
            "{listing}"
        );
    }
    // A tampered artifact fails the check.
    std::fs::write(out.join(&tarball), b"tampered").unwrap();
    let bad = run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out));
    assert!(!bad.status.success(), "{}", text(&bad));

    // Published with the Features convention's tags, the Feature's version the workspace's.
    let mut want = vec![
        "0".to_string(),
        "0.1".to_string(),
        version.clone(),
        "latest".to_string(),
    ];
    want.sort();
    assert_eq!(published_tags(&reference), want);
    let manifest = check(Command::new(cli()).args([
        "features",
        "info",
        "manifest",
        &format!("{reference}:0"),
        "--output-format",
        "json",
    ]));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        manifest["manifest"]["annotations"]["dev.containers.metadata"]
            .as_str()
            .unwrap_or_else(|| panic!("no metadata annotation: {manifest}")),
    )
    .unwrap();
    assert_eq!(meta["version"], version.as_str(), "{meta}");

    // The same version again: refused before anything is pushed, the tags unchanged.
    let repo = "stagepass/features/stagepass";
    let before: Vec<String> = ["0", "0.1", &version, "latest"]
        .iter()
        .map(|t| tag_digest(&reg, repo, t))
        .collect();
    let again = release(
        &workspace_root(),
        &bins,
        &tmp.path().join("dist-again"),
        &["--registry", &reg.address()],
    );
    let t = text(&again);
    assert_eq!(again.status.code(), Some(3), "{t}");
    assert!(
        t.contains(&format!(
            "refused: {reference}:{version} is already published"
        )),
        "{t}"
    );
    let after: Vec<String> = ["0", "0.1", &version, "latest"]
        .iter()
        .map(|t| tag_digest(&reg, repo, t))
        .collect();
    assert_eq!(before, after, "a refused publish changed no tag");
}

#[test]
fn release_refuses_a_feature_version_other_than_the_workspace_version() {
    let tmp = tempfile::tempdir().unwrap();
    let root = copy_release_tree(tmp.path(), "0.1.0");
    let json = root.join("feature/src/stagepass/devcontainer-feature.json");
    let text_json = std::fs::read_to_string(&json).unwrap();
    std::fs::write(
        &json,
        text_json.replacen("\"version\": \"0.1.0\"", "\"version\": \"9.9.9\"", 1),
    )
    .unwrap();
    let bins = tmp.path().join("bins");
    std::fs::create_dir_all(&bins).unwrap();
    let out = release(&root, &bins, &tmp.path().join("dist"), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("says version '9.9.9'"), "{t}");
}

/// A copy of what the release command reads (Cargo.toml, feature/, release/, the docs) with
/// `version` as the workspace and Feature version: a maintainer's tree after a version bump.
pub fn copy_release_tree(dir: &Path, version: &str) -> PathBuf {
    let root = dir.join("repo");
    std::fs::create_dir_all(&root).unwrap();
    for item in ["feature", "release", "README.md", "SECURITY.md", "docs"] {
        check(
            Command::new("cp")
                .arg("-R")
                .arg(workspace_root().join(item))
                .arg(&root),
        );
    }
    let current = workspace_version();
    let cargo = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        cargo.replacen(
            &format!("version = \"{current}\""),
            &format!("version = \"{version}\""),
            1,
        ),
    )
    .unwrap();
    let json = root.join("feature/src/stagepass/devcontainer-feature.json");
    let j = std::fs::read_to_string(&json).unwrap();
    std::fs::write(
        &json,
        j.replacen(
            &format!("\"version\": \"{current}\""),
            &format!("\"version\": \"{version}\""),
            1,
        ),
    )
    .unwrap();
    root
}

/// The unit as the package installs it.
fn unit_text(c: &Container) -> String {
    std::fs::read_to_string(c.path("/usr/lib/systemd/user/stagepass.service")).unwrap()
}

#[test]
fn the_deb_installs_into_the_debian_rootfs_with_a_user_unit_that_verifies() {
    let version = workspace_version();
    let tmp = tempfile::tempdir().unwrap();
    let bins = stripped_binaries(tmp.path()).unwrap();
    check(
        Command::new("sh")
            .arg(workspace_root().join("release/deb.sh"))
            .arg(&version)
            .arg("x86_64")
            .arg(&bins)
            .arg(tmp.path()),
    );
    let deb = format!("stagepass_{version}_amd64.deb");
    let c = Container::new();
    std::fs::copy(tmp.path().join(&deb), c.path(&format!("/tmp/{deb}"))).unwrap();
    check(
        Command::new("chroot")
            .arg(c.root())
            .args(["dpkg", "-i", &format!("/tmp/{deb}")]),
    );
    let status = check(Command::new("chroot").arg(c.root()).args([
        "dpkg-query",
        "-W",
        "-f",
        "${Status} ${Version}",
        "stagepass",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        format!("install ok installed {version}")
    );
    for bin in ["/usr/bin/stagepass", "/usr/bin/stagepass-core"] {
        let out = check(
            Command::new("chroot")
                .arg(c.root())
                .args([bin, "--version"]),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&version),
            "{bin}: {}",
            text(&out)
        );
    }
    // Nothing enabled for anyone, git's credential helper not registered.
    assert!(!c.path("/etc/systemd/user/default.target.wants").exists());
    assert!(!c.path("/etc/gitconfig").exists());

    let unit = unit_text(&c);
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/stagepass agent",
        "Restart=on-failure",
        "WatchdogSec=30",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "ReadWritePaths=%h/.local/state/stagepass",
        "RuntimeDirectory=stagepass",
        "Environment=XDG_STATE_HOME=%h/.local/state",
        "WantedBy=default.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in:\n{unit}");
    }

    // systemd cannot run here: the Debian minbase rootfs has no systemd and this machine's
    // PID 1 is not systemd, so no user manager can start the unit. Say so, then check the unit
    // with `systemd-analyze verify` (user mode) on the host; its ExecStart points at the
    // binary in the rootfs (verify checks it is executable), the rest is the packaged unit.
    eprintln!(
        "NOTE: no systemd user manager can run in this test bed (no systemd in the rootfs, \
         PID 1 is not systemd): the unit is checked with `systemd-analyze verify --user`, and \
         READY=1 / WATCHDOG=1 are checked on a notify socket of the test's own"
    );
    let verify_dir = tempfile::tempdir().unwrap();
    let unit_file = verify_dir.path().join("stagepass.service");
    std::fs::write(
        &unit_file,
        unit.replace(
            "ExecStart=/usr/bin/stagepass",
            &format!(
                "ExecStart={}",
                c.path("/usr/bin/stagepass").to_str().unwrap()
            ),
        ),
    )
    .unwrap();
    let runtime = verify_dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let verify = run(Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&unit_file)
        .env("XDG_RUNTIME_DIR", &runtime));
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify ({}):\n{}",
        verify.status,
        text(&verify)
    );

    // The agent the unit starts, as the user, with the environment the unit gives it
    // (XDG_STATE_HOME, XDG_RUNTIME_DIR, NOTIFY_SOCKET, WATCHDOG_USEC): READY=1 once it
    // serves, then WATCHDOG=1 pings.
    let port = super::free_port();
    let home = c.path("/home/vscode");
    std::fs::create_dir_all(home.join(".config/stagepass")).unwrap();
    stagepass_e2e::Config::new()
        .api(stagepass_e2e::config::Api::port(port.parse().unwrap()))
        .write_to(&home.join(".config/stagepass/config.toml"))
        .unwrap();
    std::fs::create_dir_all(c.path("/run/user/1000")).unwrap();
    check(
        Command::new("chown")
            .arg("-R")
            .arg("1000:1000")
            .args([home.join(".config"), c.path("/run/user/1000")]),
    );
    check(
        Command::new("chmod")
            .arg("0700")
            .arg(c.path("/run/user/1000")),
    );
    let sock_path = c.path("/run/notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    check(Command::new("chmod").arg("0666").arg(&sock_path));
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut agent = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child"])
        .arg(format!("--mount-proc={}", c.path("/proc").display()))
        .arg("chroot")
        .arg(format!("--userspec={REMOTE_UID}:{REMOTE_UID}"))
        .arg(c.root())
        .args([
            "/usr/bin/env",
            "-i",
            "HOME=/home/vscode",
            "USER=vscode",
            "PATH=/usr/bin:/bin",
            "XDG_STATE_HOME=/home/vscode/.local/state",
            "XDG_RUNTIME_DIR=/run/user/1000",
            "NOTIFY_SOCKET=/run/notify.sock",
            "WATCHDOG_USEC=2000000",
            "/usr/bin/stagepass",
            "agent",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    // The watchdog pings from the start (a slow boot refresh must not look hung to systemd),
    // so a ping may come before READY=1: wait for one after it.
    let ping_after_ready = |seen: &str| {
        seen.find("READY=1")
            .is_some_and(|r| seen.rfind("WATCHDOG=1").is_some_and(|w| w > r))
    };
    while !ping_after_ready(&seen) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
        // A hang guard, not a performance threshold.
        if started.elapsed() > Duration::from_secs(60) || agent.try_wait().unwrap().is_some() {
            let _ = agent.kill();
            let out = agent.wait_with_output().unwrap();
            panic!(
                "no READY=1 and WATCHDOG=1 from the agent; got:\n{seen}\nagent:\n{}",
                text(&out)
            );
        }
    }
    let ready_at = seen.find("READY=1").unwrap();
    let ping_at = seen.rfind("WATCHDOG=1").unwrap();
    assert!(ready_at < ping_at, "a ping after READY=1: {seen}");
    let _ = agent.kill();
    let _ = agent.wait();
}
