//! The git credential helper driven by the real git (2.47): its failure conventions, and
//! clone + push against the test bed's git host (real `git http-backend`, JWT check against
//! the real IdP), then a server-side revocation -> `erase` -> a fresh token.

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{
    Api, Config, GitHost, Home, Profile, home, run_with_stdin, stagepass_bin, start_agent,
};
use stagepass_e2e::idp::AUD_GIT;
use stagepass_e2e::{GitHost as GitServer, Idp, IdpOptions, RepoAuth};
use std::path::Path;
use std::process::Command;

/// Profile `gitbot` (an env token) serving `host`.
fn config_for(host: &str) -> Config {
    Config::new()
        .profile("gitbot", Profile::env("STAGEPASS_TEST_GIT_TOKEN"))
        .git_host(GitHost::new(host, "gitbot"))
}

fn config() -> Config {
    config_for("127.0.0.1:9")
}

/// `git credential fill` with only our helper configured and prompts off.
fn git_fill(home: &Home, input: &str) -> std::process::Output {
    let mut c = home.command_of(Path::new("git"));
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            &format!(
                "credential.helper=!{} git-credential",
                stagepass_bin().unwrap().display()
            ),
            "credential",
            "fill",
        ]);
    run_with_stdin(c, input.as_bytes())
}

#[test]
fn agent_down_gives_no_credential_and_one_line_naming_the_fix() {
    let home = home(&config());
    // The helper alone: nothing on stdout, one line on stderr.
    let out = home
        .run_with_stdin(
            &["git-credential", "get"],
            b"protocol=http\nhost=127.0.0.1:9\n\n",
        )
        .unwrap();
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
    let home = home(&config());
    let out = home
        .run_with_stdin(
            &["git-credential", "get"],
            b"protocol=https\nhost=elsewhere.example\n\n",
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn store_and_unknown_operations_are_accepted_silently() {
    let home = home(&config());
    for op in ["store", "capability", "future-op"] {
        let out = home
            .run_with_stdin(
                &["git-credential", op],
                b"protocol=http\nhost=127.0.0.1:9\nusername=x\npassword=t\n\n",
            )
            .unwrap();
        assert!(out.status.success(), "{op}: {out:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{op}: {out:?}"
        );
    }
}

#[test]
fn cleartext_http_to_a_remote_host_is_refused() {
    let home = home(&config_for("git.example"));
    let out = home
        .run_with_stdin(
            &["git-credential", "get"],
            b"protocol=http\nhost=git.example\n\n",
        )
        .unwrap();
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plain http"),
        "{out:?}"
    );
}

#[test]
fn malformed_input_is_one_typed_line() {
    let home = home(&config());
    let out = home
        .run_with_stdin(&["git-credential", "get"], b"protocol=http\nnonsense\n\n")
        .unwrap();
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "stagepass git-credential: git credential request line 2: expected key=value\n"
    );
}

/// Runs git in `cwd` with only our credential helper configured, no prompts, no user config.
fn git(home: &Home, cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut c = home.command_of(Path::new("git"));
    c.current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .args([
            "-c",
            &format!(
                "credential.helper=!{} git-credential",
                stagepass_bin().unwrap().display()
            ),
        ])
        .args(args);
    run_with_stdin(c, b"")
}

fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The agent's current token of `profile` (`stagepass token`), to tell tokens apart.
fn current_token(home: &Home, profile: &str) -> String {
    let out = ok(
        home.run_with_stdin(&["token", profile], b"").unwrap(),
        "stagepass token",
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_git_clones_and_pushes_and_a_revoked_token_is_replaced_after_erase() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let host = GitServer::start(Some(idp.issuer())).await.unwrap();
    let url = host.create_repo("adapters", RepoAuth::Token).await.unwrap();
    let home = Home::new().unwrap();
    let secret_file = home.root().join("client-secret");
    std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();
    home.write_config(
        &Config::new()
            .api(Api::port(0))
            .profile(
                "gitbot",
                Profile::client_credentials(idp.issuer(), Idp::CONFIDENTIAL_CLIENT, &secret_file)
                    .audience(AUD_GIT),
            )
            .git_host(GitHost::new(host.host_port(), "gitbot")),
    )
    .unwrap();
    let _agent = start_agent(&home, &[]);

    // Without a token the host refuses: the repository really needs one.
    let mut anon = Command::new("git");
    anon.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["ls-remote", &url]);
    assert!(!run_with_stdin(anon, b"").status.success());

    // Clone (empty) and push over HTTP with nothing but the credential helper.
    ok(
        git(&home, &home.path(), &["clone", "-q", &url, "work"]),
        "http clone",
    );
    let work = home.path().join("work");
    ok(
        git(&home, &work, &["checkout", "-q", "-b", "main"]),
        "checkout",
    );
    std::fs::write(work.join("README"), "hello\n").unwrap();
    ok(git(&home, &work, &["add", "README"]), "add");
    ok(
        git(&home, &work, &["commit", "-q", "-m", "first"]),
        "commit",
    );
    ok(git(&home, &work, &["push", "-q", "origin", "main"]), "push");
    // A second clone sees the pushed commit.
    ok(
        git(&home, &home.path(), &["clone", "-q", &url, "again"]),
        "clone after push",
    );
    let log = ok(
        git(&home, &home.path().join("again"), &["log", "--format=%s"]),
        "log",
    );
    assert_eq!(String::from_utf8_lossy(&log.stdout), "first\n");
    let t1 = current_token(&home, "gitbot");
    let before = host.stats().await.unwrap();
    assert!(before.authorized > 0 && before.pushes > 0, "{before:?}");

    // The server revokes the token: the next push is refused and git calls `erase` ...
    host.revoke_all().await.unwrap();
    std::fs::write(work.join("b.txt"), "b\n").unwrap();
    ok(git(&home, &work, &["add", "b.txt"]), "add");
    ok(
        git(&home, &work, &["commit", "-q", "-m", "second"]),
        "commit",
    );
    let refused = git(&home, &work, &["push", "-q", "origin", "main"]);
    assert!(
        !refused.status.success(),
        "push with a revoked token succeeded"
    );
    let after_refusal = host.stats().await.unwrap();
    assert!(after_refusal.unauthorized > before.unauthorized);
    // ... so the next operation gets a fresh token and succeeds.
    ok(
        git(&home, &work, &["push", "-q", "origin", "main"]),
        "push after erase",
    );
    let t2 = current_token(&home, "gitbot");
    assert_ne!(t2, t1, "a fresh token after erase");
    ok(
        git(&home, &home.path().join("again"), &["pull", "-q"]),
        "pull",
    );
    let log = ok(
        git(&home, &home.path().join("again"), &["log", "--format=%s"]),
        "log",
    );
    assert_eq!(String::from_utf8_lossy(&log.stdout), "second\nfirst\n");
}
