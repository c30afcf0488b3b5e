//! The git credential helper driven by the real git (2.47): failure conventions now; clone,
//! push, revoke -> `erase` -> fresh token against the test bed's git host once it lands.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adapters_support;

use adapters_support::{
    Agent, Home, IDP_CLIENT_SECRET, Idp, MiniServer, Reply, Seen, run_with_stdin, stagepass_bin,
};
use base64::Engine;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

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

/// A git host for the success path: the real `git http-backend` (CGI) behind a loopback
/// server that demands a token (Bearer, or Basic with the token as password) whose JWT
/// audience is `urn:stagepass:git`, not expired and not revoked. Stand-in until the test
/// bed's git host (branch `peers`) lands; it does not verify signatures (the agent only ever
/// receives tokens from the real IdP here).
struct GitHost {
    server: MiniServer,
    root: PathBuf,
    revoked: Arc<Mutex<HashSet<String>>>,
    /// (scheme, token) of every accepted request, in order.
    accepted: Arc<Mutex<Vec<(String, String)>>>,
}

fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn token_of(req: &Seen) -> Option<(String, String)> {
    let auth = req.header("authorization")?;
    if let Some(t) = auth.strip_prefix("Bearer ") {
        return Some(("Bearer".into(), t.to_string()));
    }
    let b64 = auth.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, pass) = text.split_once(':')?;
    Some(("Basic".into(), pass.to_string()))
}

fn acceptable(token: &str, revoked: &HashSet<String>) -> bool {
    let Some(claims) = jwt_claims(token) else {
        return false;
    };
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(a) => a == "urn:stagepass:git",
        serde_json::Value::Array(a) => a.iter().any(|x| x == "urn:stagepass:git"),
        _ => false,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    aud_ok && claims["exp"].as_u64().is_some_and(|e| e > now) && !revoked.contains(token)
}

fn cgi(root: &Path, req: &Seen) -> Reply {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let mut c = Command::new("git");
    c.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string());
    for (h, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(v) = req.header(h) {
            c.env(var, v);
        }
    }
    let out = run_with_stdin(c, &req.body);
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .unwrap_or_else(|| panic!("http-backend: {}", String::from_utf8_lossy(&out.stderr)));
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            status = v.trim()[..3].parse().unwrap();
        } else {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Reply {
        status,
        headers,
        body: out.stdout[split.0 + split.1..].to_vec(),
    }
}

impl GitHost {
    fn start(dir: &Path) -> Self {
        let root = dir.join("git-root");
        std::fs::create_dir_all(&root).unwrap();
        let revoked = Arc::new(Mutex::new(HashSet::new()));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (r, a, rt) = (revoked.clone(), accepted.clone(), root.clone());
        let server = MiniServer::start(move |req| {
            let tok = token_of(req);
            let ok = tok
                .as_ref()
                .is_some_and(|(_, t)| acceptable(t, &r.lock().unwrap()));
            if !ok {
                let mut reply = Reply::new(401, "text/plain", b"token required\n".to_vec());
                reply.headers.push((
                    "WWW-Authenticate".into(),
                    "Basic realm=\"stagepass-test\"".into(),
                ));
                return reply;
            }
            a.lock().unwrap().push(tok.unwrap());
            cgi(&rt, req)
        });
        Self {
            server,
            root,
            revoked,
            accepted,
        }
    }

    /// Revokes every token accepted so far (the server-side revocation of the test).
    fn revoke_all(&self) {
        let seen: Vec<String> = self
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.clone())
            .collect();
        self.revoked.lock().unwrap().extend(seen);
    }

    fn accepted(&self) -> Vec<(String, String)> {
        self.accepted.lock().unwrap().clone()
    }

    fn host(&self) -> String {
        self.server.url.trim_start_matches("http://").to_string()
    }
}

/// Runs git in `cwd` with only our credential helper configured, no prompts, no user config.
fn git(home: &Home, cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut c = home.command(Path::new("git"));
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
                stagepass_bin().display()
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

#[test]
fn real_git_clones_and_pushes_and_a_revoked_token_is_replaced_after_erase() {
    let home = Home::new("");
    let idp = Idp::start(home.path());
    let host = GitHost::start(home.path());
    let secret_file = home.path().join("client-secret");
    std::fs::write(&secret_file, IDP_CLIENT_SECRET).unwrap();
    home.write_config(&format!(
        r#"
[api]
port = 0

[profiles.gitbot]
grant = "client-credentials"
issuer = "{issuer}"
client_id = "stagepass-ci"
client_secret_file = "{secret}"
audience = "urn:stagepass:git"

[[git.hosts]]
host = "{host}"
profile = "gitbot"
"#,
        issuer = idp.url,
        secret = secret_file.display(),
        host = host.host(),
    ));
    let _agent = Agent::start(&home);

    // A bare repository with one commit, made locally.
    let seed = home.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    ok(git(&home, &seed, &["init", "-q", "-b", "main"]), "init");
    std::fs::write(seed.join("README"), "hello\n").unwrap();
    ok(git(&home, &seed, &["add", "README"]), "add");
    ok(
        git(&home, &seed, &["commit", "-q", "-m", "first"]),
        "commit",
    );
    let bare = host.root.join("repo.git");
    ok(
        git(
            &home,
            home.path(),
            &[
                "clone",
                "-q",
                "--bare",
                seed.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        ),
        "bare clone",
    );

    // Clone and push over HTTP with nothing but the credential helper.
    let url = format!("{}/repo.git", host.server.url);
    ok(
        git(&home, home.path(), &["clone", "-q", &url, "work"]),
        "http clone",
    );
    let work = home.path().join("work");
    std::fs::write(work.join("a.txt"), "a\n").unwrap();
    ok(git(&home, &work, &["add", "a.txt"]), "add");
    ok(
        git(&home, &work, &["commit", "-q", "-m", "second"]),
        "commit",
    );
    ok(git(&home, &work, &["push", "-q", "origin", "main"]), "push");
    let log = ok(git(&home, &bare, &["log", "--format=%s", "main"]), "log");
    assert_eq!(String::from_utf8_lossy(&log.stdout), "second\nfirst\n");
    let first = host.accepted();
    assert!(!first.is_empty());
    // git 2.47 announced `capability[]=authtype`, so it sent our token as Bearer.
    assert!(
        first.iter().all(|(scheme, _)| scheme == "Bearer"),
        "{:?}",
        first.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let t1 = first[0].1.clone();
    assert!(
        first.iter().all(|(_, t)| *t == t1),
        "one token while it is valid"
    );

    // The server revokes it: the next push is refused and git calls `erase` ...
    host.revoke_all();
    std::fs::write(work.join("b.txt"), "b\n").unwrap();
    ok(git(&home, &work, &["add", "b.txt"]), "add");
    ok(
        git(&home, &work, &["commit", "-q", "-m", "third"]),
        "commit",
    );
    let refused = git(&home, &work, &["push", "-q", "origin", "main"]);
    assert!(
        !refused.status.success(),
        "push with a revoked token succeeded"
    );
    // ... so the next operation gets a fresh token and succeeds.
    ok(
        git(&home, &work, &["push", "-q", "origin", "main"]),
        "push after erase",
    );
    let after = host.accepted();
    let t2 = &after.last().unwrap().1;
    assert_ne!(*t2, t1, "a fresh token after erase");
    let log = ok(git(&home, &bare, &["log", "--format=%s", "main"]), "log");
    assert_eq!(
        String::from_utf8_lossy(&log.stdout),
        "third\nsecond\nfirst\n"
    );
}
