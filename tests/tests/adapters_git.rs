//! The git credential helper driven by the real git (2.47): failure conventions now; clone,
//! push, revoke -> `erase` -> fresh token against the test bed's git host once it lands.

mod adapters_support;

use adapters_support::{Home, run_with_stdin, stagepass_bin};

fn config() -> String {
    r#"
[profiles.gitbot]
grant = "env"
token_env = "STAGEPASS_TEST_GIT_TOKEN"

[[git.hosts]]
host = "127.0.0.1:9"
profile = "gitbot"
"#
    .to_string()
}

/// `git credential fill` with only our helper configured and prompts off.
fn git_fill(home: &Home, input: &str) -> std::process::Output {
    let mut c = home.command(std::path::Path::new("git"));
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            &format!(
                "credential.helper=!{} git-credential",
                stagepass_bin().display()
            ),
            "credential",
            "fill",
        ]);
    run_with_stdin(c, input.as_bytes())
}

#[test]
fn agent_down_gives_no_credential_and_one_line_naming_the_fix() {
    let home = Home::new(&config());
    // The helper alone: nothing on stdout, one line on stderr.
    let out = home.run(
        &["git-credential", "get"],
        b"protocol=http\nhost=127.0.0.1:9\n\n",
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("stagepass doctor"), "{err}");

    // Through the real git: no credential, git does not prompt, our line is shown.
    let out = git_fill(&home, "protocol=http\nhost=127.0.0.1:9\n\n");
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stagepass git-credential:"), "{err}");
    assert!(err.contains("terminal prompts disabled"), "{err}");
}

#[test]
fn unknown_host_falls_through_silently() {
    let home = Home::new(&config());
    let out = home.run(
        &["git-credential", "get"],
        b"protocol=https\nhost=elsewhere.example\n\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn store_and_unknown_operations_are_accepted_silently() {
    let home = Home::new(&config());
    for op in ["store", "capability", "future-op"] {
        let out = home.run(
            &["git-credential", op],
            b"protocol=http\nhost=127.0.0.1:9\nusername=x\npassword=t\n\n",
        );
        assert!(out.status.success(), "{op}: {out:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{op}: {out:?}"
        );
    }
}

#[test]
fn cleartext_http_to_a_remote_host_is_refused() {
    let home = Home::new(
        r#"
[profiles.gitbot]
grant = "env"
token_env = "STAGEPASS_TEST_GIT_TOKEN"

[[git.hosts]]
host = "git.example"
profile = "gitbot"
"#,
    );
    let out = home.run(
        &["git-credential", "get"],
        b"protocol=http\nhost=git.example\n\n",
    );
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plain http"),
        "{out:?}"
    );
}

#[test]
fn malformed_input_is_one_typed_line() {
    let home = Home::new(&config());
    let out = home.run(&["git-credential", "get"], b"protocol=http\nnonsense\n\n");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "stagepass git-credential: git credential request line 2: expected key=value\n"
    );
}
