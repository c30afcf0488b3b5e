//! Caller attestation and the audit log with real processes: real curl over loopback TCP,
//! the real `stagepass token` over the Unix socket, and real git through the credential
//! helper against the test bed's git host (tokens from the real IdP). Each hand-out and
//! refusal is found in the audit log with the right executable and pid; a policy that allows
//! only git serves git and refuses curl (and `stagepass token`) with `forbidden_caller`
//! naming the rule; no token appears in the log, which is 0600 in a 0700 dir.

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{Api, Config, Home, Profile, run_with_stdin, stagepass_bin, start_agent};
use stagepass_e2e::config::{AllowRule, Audit, GitHost as GitHostEntry, Policy};
use stagepass_e2e::idp::{AUD_BACKSTAGE, AUD_GIT};
use stagepass_e2e::{GitHost, Idp, IdpOptions, RepoAuth};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Hang guard while waiting for the audit writer (never a performance threshold).
const AUDIT_GUARD: Duration = Duration::from_secs(20);

fn audit_file(home: &Home) -> PathBuf {
    home.state_dir().join("audit/audit.jsonl")
}

/// The audit records once at least `n` are written.
fn records(home: &Home, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(audit_file(home)).unwrap_or_default();
        let recs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if recs.len() >= n {
            return recs;
        }
        assert!(
            start.elapsed() < AUDIT_GUARD,
            "only {} audit records after {AUDIT_GUARD:?}, want {n}:\n{text}",
            recs.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent's TCP port and API secret.
fn endpoint(home: &Home) -> (u16, String) {
    let ep: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.runtime_dir().join("endpoint.json")).unwrap(),
    )
    .unwrap();
    let port = u16::try_from(ep["port"].as_u64().unwrap()).unwrap();
    let secret = std::fs::read_to_string(home.api_secret()).unwrap();
    (port, secret.trim().to_string())
}

/// Real curl asking the TCP API for `path`: (pid, status, body).
fn curl(home: &Home, path: &str) -> (u32, u16, serde_json::Value) {
    let (port, secret) = endpoint(home);
    let child = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Authorization: Bearer {secret}"),
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        pid,
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

/// Real `stagepass token PROFILE` over the socket: (pid, output).
fn stagepass_token(home: &Home, profile: &str) -> (u32, std::process::Output) {
    let mut c = home.command_of(&stagepass_bin().unwrap());
    c.args(["token", profile])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    (pid, child.wait_with_output().unwrap())
}

fn real_path(p: &str) -> String {
    std::fs::canonicalize(p)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn which(program: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    real_path(String::from_utf8(out.stdout).unwrap().trim())
}

fn assert_private_and_token_free(home: &Home, secrets: &[&str]) {
    let file = audit_file(home);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(&file).unwrap();
    for s in secrets {
        assert!(s.len() > 20, "not a real token: {s:?}");
        assert!(!text.contains(s), "a token is in the audit log:\n{text}");
    }
}

fn ci_config(idp: &Idp, home: &Home) -> Config {
    let secret_file = home.root().join("client-secret");
    std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();
    Config::new().api(Api::port(0)).profile(
        "ci",
        Profile::client_credentials(idp.issuer(), Idp::CONFIDENTIAL_CLIENT, &secret_file)
            .audience(AUD_BACKSTAGE),
    )
}

/// `[audit]` sending to the syslog socket `sock` too.
fn syslog_to(sock: &Path) -> Audit {
    Audit {
        syslog: Some(true),
        syslog_socket: Some(sock.to_path_buf()),
        ..Audit::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tcp_and_stagepass_token_over_the_socket_are_audited_with_exe_and_pid() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let home = Home::new().unwrap();
    home.write_config(&ci_config(&idp, &home)).unwrap();
    let _agent = start_agent(&home, &[]);

    let (curl_pid, status, body) = curl(&home, "/v1/token/ci");
    assert_eq!(status, 200, "{body}");
    let curl_token = body["access_token"].as_str().unwrap().to_string();
    let (sp_pid, out) = stagepass_token(&home, "ci");
    assert!(out.status.success(), "{out:?}");
    let sp_token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let recs = records(&home, 2);
    let by_pid = |pid: u32| {
        recs.iter()
            .find(|r| r["caller"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no record for pid {pid}: {recs:#?}"))
    };
    let c = by_pid(curl_pid);
    assert_eq!(c["caller"]["transport"], "tcp");
    assert_eq!(c["caller"]["exe"], which("curl"));
    assert_eq!(c["decision"], "allow");
    assert_eq!(c["rule"], "default");
    assert_eq!(c["profile"], "ci");
    assert_eq!(c["audience"], "urn:stagepass:backstage");
    assert_eq!(c["route"], "/v1/token/{profile}");
    assert!(c["caller"]["start_time"].as_u64().unwrap() > 0);
    assert!(
        c["caller"]["cmdline"]
            .as_str()
            .unwrap()
            .starts_with("curl ")
    );
    assert_eq!(
        c["token_fingerprint"],
        stagepass::secret::Secret::new(curl_token.clone()).fingerprint()
    );
    let s = by_pid(sp_pid);
    assert_eq!(s["caller"]["transport"], "unix");
    assert_eq!(
        s["caller"]["exe"],
        real_path(stagepass_bin().unwrap().to_str().unwrap())
    );
    assert!(
        s["caller"]["via"].is_null(),
        "stagepass token is its own caller: {s}"
    );
    // Its parent chain names this test process.
    let me = std::process::id();
    assert!(
        s["caller"]["chain"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["pid"] == me),
        "{s}"
    );
    assert_private_and_token_free(&home, &[&curl_token, &sp_token]);
    // The audit counters are in /metrics: records queued, none dropped.
    let (port, secret) = endpoint(&home);
    let out = Command::new("curl")
        .args([
            "-sS",
            "-H",
            &format!("Authorization: Bearer {secret}"),
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8(out.stdout).unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(value("stagepass_audit_records_total") >= 2, "{metrics}");
    assert_eq!(value("stagepass_audit_dropped_total"), 0, "{metrics}");

    // `stagepass audit` shows both, as a table and as JSON.
    let table = home
        .run_with_stdin(&["audit", "--profile", "ci"], b"")
        .unwrap();
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains(&format!("curl[{curl_pid}]")), "{text}");
    assert!(text.contains(&format!("stagepass[{sp_pid}]")), "{text}");
    let json = home
        .run_with_stdin(&["audit", "--json", "--since", "1h"], b"")
        .unwrap();
    assert_eq!(String::from_utf8(json.stdout).unwrap().lines().count(), 2);
    let none = home
        .run_with_stdin(&["audit", "--profile", "other"], b"")
        .unwrap();
    assert_eq!(String::from_utf8(none.stdout).unwrap().lines().count(), 1);
    let bad = home
        .run_with_stdin(&["audit", "--since", "yesterday"], b"")
        .unwrap();
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
}

/// Runs git in `cwd` with only our credential helper configured, no prompts, no user config.
fn git(home: &Home, cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut c = home.command_of(Path::new("git"));
    c.current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_only_policy_serves_git_through_the_helper_and_refuses_curl() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let host = GitHost::start(Some(idp.issuer())).await.unwrap();
    let url = host.create_repo("attest", RepoAuth::Token).await.unwrap();
    let home = Home::new().unwrap();
    let secret_file = home.root().join("client-secret");
    std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();
    let git_bin = which("git");
    let exec_path = {
        let out = Command::new("git").arg("--exec-path").output().unwrap();
        real_path(String::from_utf8(out.stdout).unwrap().trim())
    };
    home.write_config(
        &Config::new()
            .api(Api::port(0))
            .profile(
                "gitbot",
                Profile::client_credentials(idp.issuer(), Idp::CONFIDENTIAL_CLIENT, &secret_file)
                    .audience(AUD_GIT)
                    .policy(Policy {
                        allow: Some(vec![AllowRule::exe(
                            "git",
                            &[&git_bin, &format!("{exec_path}/*")],
                        )]),
                        ..Policy::default()
                    }),
            )
            .git_host(GitHostEntry::new(host.host_port(), "gitbot")),
    )
    .unwrap();
    let _agent = start_agent(&home, &[]);

    // Real git clones through the credential helper: allowed, attributed to git.
    let out = git(&home, &home.path(), &["clone", "-q", &url, "work"]);
    assert!(
        out.status.success(),
        "clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(host.stats().await.unwrap().authorized > 0);

    // curl asks the same profile: 403 forbidden_caller naming the rule.
    let (curl_pid, status, body) = curl(&home, "/v1/token/gitbot");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden_caller");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("profiles.gitbot.policy.allow"), "{msg}");
    assert!(msg.contains("git") && msg.contains("curl"), "{msg}");
    assert!(body.get("access_token").is_none());

    // So is `stagepass token` (the CLI is a caller like any other), in one line.
    let (_, out) = stagepass_token(&home, "gitbot");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("forbidden_caller") || err.contains("caller policy"),
        "{err}"
    );

    let recs = records(&home, 3);
    let allowed: Vec<_> = recs.iter().filter(|r| r["decision"] == "allow").collect();
    assert!(!allowed.is_empty(), "{recs:#?}");
    for a in &allowed {
        let exe = a["caller"]["exe"].as_str().unwrap();
        assert!(
            exe == git_bin || exe.starts_with(&format!("{exec_path}/")),
            "attributed to {exe}: {a}"
        );
        assert_eq!(a["rule"], "git");
        assert_eq!(a["adapter"], "git-credential");
        assert!(
            a["caller"]["via"]
                .as_str()
                .unwrap()
                .starts_with("stagepass git-credential (pid "),
            "{a}"
        );
        assert_eq!(a["audience"], AUD_GIT);
    }
    let denied = recs
        .iter()
        .find(|r| r["caller"]["pid"] == curl_pid)
        .unwrap_or_else(|| panic!("no record of curl {curl_pid}: {recs:#?}"));
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["code"], "forbidden_caller");
    assert_eq!(denied["rule"], "profiles.gitbot.policy.allow");
    assert_eq!(denied["caller"]["exe"], which("curl"));
    assert!(denied["token_fingerprint"].is_null());
    let sp_denied = recs
        .iter()
        .filter(|r| r["decision"] == "deny" && r["caller"]["exe"] != which("curl"))
        .count();
    assert_eq!(sp_denied, 1, "{recs:#?}");
}

/// Issue 19: the README's own curl line puts the live API secret on curl's command line;
/// the audit record keeps curl's command line with that word redacted, and neither the
/// secret nor the token handed out is in any sink: the audit file, the syslog datagrams,
/// `stagepass audit --json` and the agent's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_line_leaves_no_secret_in_any_sink() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let home = Home::new().unwrap();
    let sock = home.root().join("syslog.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    home.write_config(&ci_config(&idp, &home).audit(syslog_to(&sock)))
        .unwrap();
    let mut agent = start_agent(&home, &[]);
    let (port, secret) = endpoint(&home);

    // The README's line as written, with this agent's port.
    let line = format!(
        r#"curl -s -H "Authorization: Bearer $(cat "${{XDG_RUNTIME_DIR:-/tmp}}"/stagepass*/api-secret)" \
  http://127.0.0.1:{port}/v1/token/ci"#
    );
    let mut sh = home.command_of(Path::new("sh"));
    sh.args(["-c", &line]);
    let out = run_with_stdin(sh, b"");
    assert!(out.status.success(), "{out:?}");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();

    let recs = records(&home, 1);
    let cmdline = recs[0]["caller"]["cmdline"].as_str().unwrap();
    assert!(cmdline.starts_with("curl "), "{cmdline}");
    assert!(cmdline.contains("[redacted]"), "{cmdline}");

    let mut sinks = vec![
        (
            "audit.jsonl",
            std::fs::read_to_string(audit_file(&home)).unwrap(),
        ),
        (
            "stagepass audit --json",
            String::from_utf8(
                home.run_with_stdin(&["audit", "--json"], b"")
                    .unwrap()
                    .stdout,
            )
            .unwrap(),
        ),
    ];
    let mut datagrams = String::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = syslog.recv(&mut buf) {
        datagrams.push_str(&String::from_utf8_lossy(&buf[..n]));
        datagrams.push('\n');
    }
    assert!(datagrams.contains("curl "), "no syslog line: {datagrams:?}");
    sinks.push(("syslog", datagrams));
    agent.stop();
    let log = agent.log();
    assert!(
        log.contains("/v1/token"),
        "the agent log is not the debug log:\n{log}"
    );
    sinks.push(("agent log", log));
    for (name, text) in &sinks {
        assert!(
            !text.contains(&secret),
            "the API secret is in the {name}:\n{text}"
        );
        assert!(
            !text.contains(&token),
            "the token is in the {name}:\n{text}"
        );
    }
}

/// Issue 19: a command line carrying tokens from earlier rotations (a script that saved the
/// access token, refresh tokens of earlier logins) is redacted too, not only the current
/// token: a real device login, the boot refresh (rotation 1), a forced refresh (rotation 2),
/// then curl with the first access token and both earlier refresh tokens on its command line.
/// No sink holds any of them, not even their first 48 characters (a command line is cut at
/// 256 bytes, so a long token may be recorded in part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_earlier_rotations_leave_no_trace_in_any_sink() {
    use stagepass::config::Config;
    use stagepass::secret::Secret;
    use stagepass::store::{GrantStore, StoredGrant};
    let idp = Idp::start(IdpOptions {
        access_ttl: 3600,
        ..IdpOptions::default()
    })
    .await
    .unwrap();
    let home = Home::new().unwrap();
    let sock = home.root().join("syslog.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let config_file = home
        .write_config(
            &stagepass_e2e::Config::agent_on_ephemeral_port()
                .audit(syslog_to(&sock))
                .profile("dev", Profile::device_for_backstage(idp.issuer())),
        )
        .unwrap();
    // A real login, stored as a previous run would have.
    let config = Config::load_files(&[config_file]).unwrap();
    let state_dir = home.state_dir();
    let store = GrantStore::open(&config.store, &state_dir).await.unwrap();
    let login = idp
        .device_login(
            Idp::PUBLIC_CLIENT,
            "openid offline_access catalog:read",
            Some(stagepass_e2e::idp::AUD_BACKSTAGE),
            "dev",
        )
        .await
        .unwrap();
    let rt0 = login.refresh_token.unwrap();
    store
        .save(
            "dev",
            &StoredGrant::new(idp.issuer(), Idp::PUBLIC_CLIENT, rt0.clone(), None),
        )
        .unwrap();
    let stored_rt = || {
        store
            .load("dev")
            .unwrap()
            .unwrap()
            .refresh_token
            .expose()
            .to_string()
    };
    let mut agent = start_agent(&home, &[]);
    let (port, secret) = endpoint(&home);
    let token = |home: &Home| {
        let (_, out) = stagepass_token(home, "dev");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    // Rotation 1 at the first request; rotation 2 forced by invalidating the token.
    let at1 = token(&home);
    let rt1 = stored_rt();
    assert_ne!(rt1, rt0, "the IdP rotates refresh tokens");
    let fingerprint = Secret::new(at1.clone()).fingerprint();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-H",
            &format!("Authorization: Bearer {secret}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(r#"{{"fingerprint":"{fingerprint}"}}"#),
            &format!("http://127.0.0.1:{port}/v1/token/dev/invalidate"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let at2 = token(&home);
    let rt2 = stored_rt();
    assert_ne!(at2, at1, "the invalidated token was refreshed");
    assert_ne!(rt2, rt1, "the forced refresh rotated the refresh token");

    // The client: old refresh tokens first (whole), then the old access token (a JWT, cut
    // at the 256-byte limit), then the README's secret from the file.
    let line = format!(
        r#"curl -s -H "X-Old: {rt1} {rt0} {at1}" -H "Authorization: Bearer $(cat "${{XDG_RUNTIME_DIR:-/tmp}}"/stagepass*/api-secret)" http://127.0.0.1:{port}/v1/token/dev"#
    );
    let mut sh = home.command_of(Path::new("sh"));
    sh.args(["-c", &line]);
    let out = run_with_stdin(sh, b"");
    assert!(out.status.success(), "{out:?}");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["access_token"].as_str(), Some(at2.as_str()));

    let recs = records(&home, 3);
    let cmdline = recs
        .iter()
        .filter_map(|r| r["caller"]["cmdline"].as_str())
        .find(|c| c.starts_with("curl "))
        .unwrap()
        .to_string();
    eprintln!("recorded: {cmdline}");
    assert!(
        cmdline.contains("X-Old: [redacted] [redacted] [redacted]"),
        "{cmdline}"
    );

    let mut sinks = vec![
        (
            "audit.jsonl",
            std::fs::read_to_string(audit_file(&home)).unwrap(),
        ),
        (
            "stagepass audit --json",
            String::from_utf8(
                home.run_with_stdin(&["audit", "--json"], b"")
                    .unwrap()
                    .stdout,
            )
            .unwrap(),
        ),
    ];
    let mut datagrams = String::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = syslog.recv(&mut buf) {
        datagrams.push_str(&String::from_utf8_lossy(&buf[..n]));
        datagrams.push('\n');
    }
    assert!(datagrams.contains("curl "), "no syslog line: {datagrams:?}");
    sinks.push(("syslog", datagrams));
    agent.stop();
    let log = agent.log();
    assert!(
        log.contains("/v1/token"),
        "the agent log is not the debug log:\n{log}"
    );
    sinks.push(("agent log", log));
    for (what, value) in [
        ("first refresh token", &rt0),
        ("second refresh token", &rt1),
        ("first access token", &at1),
        ("current refresh token", &rt2),
        ("current access token", &at2),
        ("API secret", &secret),
    ] {
        assert!(value.len() > 20, "not a real {what}: {value:?}");
        let start = &value[..value.len().min(48)];
        for (name, text) in &sinks {
            assert!(
                !text.contains(start),
                "the {what} (or its start) is in the {name}:\n{text}"
            );
        }
    }
}
