//! `stagepass catalog check` as a black box: the real binary, no agent, no Backstage, in a
//! real git repository; output `file:line:col: message (rule)` and the exit code CI relies on.

// Test helpers: a failing setup step must fail the test loudly.
use std::path::Path;
use std::process::Command;

use stagepass_e2e::Worktree;
use stagepass_e2e::support::{private_tempdir, stagepass_bin};

const GOOD: &str = "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: payments\nspec:\n  type: service\n  lifecycle: production\n  owner: team-a\n";

/// Runs `stagepass catalog check ARGS` in `dir` with private config dirs (so no user or
/// agent configuration leaks in); returns (exit code, stdout, stderr).
fn check(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let home = private_tempdir().unwrap();
    let out = Command::new(stagepass_bin().unwrap())
        .current_dir(dir)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .env_remove("STAGEPASS_CONFIG")
        .args(["catalog", "check"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_file_line_col_and_exits_1_on_findings_0_when_clean() {
    let wt = Worktree::init().unwrap();
    wt.write("svc/catalog-info.yaml", GOOD).unwrap();
    wt.write("node_modules/x/catalog-info.yaml", "kind: [broken\n")
        .unwrap();
    std::fs::write(wt.path().join(".git/catalog-info.yaml"), "kind: [broken\n").unwrap();
    let sub = wt.path().join("svc");

    // Clean: exit 0 from anywhere in the repository (default: the git top level).
    let (code, out, err) = check(&sub, &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("1 catalog file(s), 1 valid entity, 0 finding(s)"),
        "{err}"
    );

    // Owner removed: one finding with its line and column, exit 1.
    wt.write(
        "svc/catalog-info.yaml",
        &GOOD.replace("  owner: team-a\n", ""),
    )
    .unwrap();
    let (code, out, _) = check(&wt.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "svc/catalog-info.yaml:6:3: spec.owner is missing; kind Component requires it (required-field)\n"
    );

    // A single file by path, whatever its name.
    wt.write("api.yaml", &GOOD.replace("name: payments", "name: -bad-"))
        .unwrap();
    let (code, out, _) = check(&wt.path(), &["api.yaml"]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("api.yaml:4:9: metadata.name \"-bad-\" is not valid"),
        "{out}"
    );

    // A path that does not exist is a usage error, not a finding.
    let (code, _, err) = check(&wt.path(), &["nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");
}
