//! End-to-end tests of the session CLI (`token`, `status`, `login`, `logout`, `doctor`)
//! against the running agent binary and the real test IdP, and with no agent at all.

use crate::support;

#[path = "cli/signin.rs"]
pub(crate) mod signin;

use stagepass_e2e::Idp;
use std::io::BufRead;
use support::{Agent, Config, Home, OpenApi, Profile, start_idp};

/// EX_UNAVAILABLE, documented as `cli::EXIT_AGENT_DOWN`.
const EXIT_AGENT_DOWN: i32 = 69;

/// A client-credentials profile `ci` (its secret written in `dir`) and a device profile
/// `dev`, both at `idp`.
fn config(idp: &Idp, dir: &std::path::Path) -> Config {
    let secret_file = dir.join("ci-secret");
    std::fs::write(&secret_file, "stagepass-ci-secret").unwrap();
    Config::agent_on_ephemeral_port()
        .profile("ci", Profile::ci_for_backstage(idp.issuer(), &secret_file))
        .profile("dev", Profile::device_for_backstage(idp.issuer()))
}

/// Only an env profile `gh`, and no agent settings.
fn gh_only() -> Config {
    Config::new().profile("gh", Profile::env("GH"))
}

fn agent(idp: &Idp) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Agent::start(&config(idp, dir.path())), dir)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn token_prints_only_the_token_the_http_route_serves() {
    let idp = start_idp();
    let (a, _d) = agent(&idp);
    let out = a.home.run(&["token", "ci"]).unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), a.log());
    let http = a.get("/v1/token/ci").json();
    assert_eq!(
        stdout(&out),
        format!("{}\n", http["access_token"].as_str().unwrap())
    );
    let out = a
        .home
        .run(&["token", "ci", "--json", "--min-valid", "30"])
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    OpenApi::load().check_schema("Token", &v);
    assert_eq!(v["access_token"], http["access_token"]);
    // More than one profile configured: the CLI asks for a name instead of guessing.
    let out = a.home.run(&["token"]).unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("name one of: ci, dev"),
        "{}",
        stderr(&out)
    );
}

/// `stagepass` is the small front binary: it answers `token NAME` on its own, and every other
/// command runs `stagepass-core` from the same directory. A front copied away from its core
/// still serves tokens, and says plainly what is missing for the rest.
#[test]
fn the_front_serves_tokens_alone_and_names_the_missing_core_for_the_rest() {
    let idp = start_idp();
    let (a, _d) = agent(&idp);
    let lonely = tempfile::tempdir().unwrap();
    let front = lonely.path().join("stagepass");
    std::fs::copy(stagepass_e2e::support::stagepass_bin().unwrap(), &front).unwrap();
    let run = |args: &[&str]| {
        let mut c = a.home.command_of(&front);
        c.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        stagepass_e2e::home::wait_output(c.spawn().unwrap()).unwrap()
    };
    let out = run(&["token", "ci"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), a.log());
    let http = a.get("/v1/token/ci").json();
    assert_eq!(
        stdout(&out),
        format!("{}\n", http["access_token"].as_str().unwrap())
    );
    // The front's own error path: an unknown profile is the agent's refusal, printed as the
    // core would print it, with no core to fall back on.
    let out = run(&["token", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown_profile"), "{}", stderr(&out));
    for args in [&["status"][..], &["token"], &["--version"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(127), "{args:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains(&format!("{}/stagepass-core", lonely.path().display())),
            "{args:?}: {text}"
        );
        assert!(text.contains("side by side"), "{args:?}: {text}");
        assert!(stdout(&out).is_empty());
    }
    // Beside its core, the same commands work.
    let out = a.home.run(&["status", "--json"]).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn status_json_matches_its_documented_shape_and_the_table_shows_profiles() {
    let idp = start_idp();
    let (a, _d) = agent(&idp);
    assert!(a.home.run(&["token", "ci"]).unwrap().status.success());
    let out = a.home.run(&["status", "--json"]).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    OpenApi::load().check_schema("Status", &v);
    assert_eq!(v["api"]["tcp_port"], a.port);
    assert_eq!(v["agent"]["pid"], a.pid());
    let names: Vec<&str> = v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["profile"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "dev"]);
    let out = a.home.run(&["status"]).unwrap();
    assert!(out.status.success());
    let table = stdout(&out);
    let ci = table
        .lines()
        .find(|l| l.starts_with("ci "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        ci.contains("client-credentials") && ci.contains("valid"),
        "{table}"
    );
    assert!(table.contains("store:   file"), "{table}");
}

#[test]
fn login_shows_the_code_waits_for_approval_then_token_and_logout_work() {
    let idp = start_idp();
    let (a, _d) = agent(&idp);
    let mut cmd = a.home.command_of(a.home.bin());
    cmd.args(["login", "dev"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let code = loop {
        let line = lines
            .next()
            .expect("login ended before printing a code")
            .unwrap();
        seen.push(line.clone());
        if seen
            .iter()
            .rev()
            .nth(2)
            .is_some_and(|l| l.contains("enter the code"))
        {
            break line.trim().to_string();
        }
    };
    assert!(seen.iter().any(|l| l.contains(idp.issuer())), "{seen:?}");
    support::block_on(idp.approve(&code, "alice")).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = stagepass_e2e::home::wait_output(child).unwrap();
    assert!(
        out.status.success(),
        "{rest:?} {}\n{}",
        stderr(&out),
        a.log()
    );
    assert!(
        rest.iter().any(|l| l.contains("dev: logged in")),
        "{rest:?}"
    );
    let tok = a.home.run(&["token", "dev"]).unwrap();
    assert!(tok.status.success(), "{}", stderr(&tok));
    assert!(!stdout(&tok).trim().is_empty());
    let out = a.home.run(&["logout", "dev"]).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tok = a.home.run(&["token", "dev"]).unwrap();
    assert_eq!(tok.status.code(), Some(1));
    assert!(stderr(&tok).contains("login_required"), "{}", stderr(&tok));
}

#[test]
fn commands_say_the_agent_is_down_with_the_documented_exit_code() {
    let home = support::home(&gh_only());
    for args in [
        &["token", "gh"][..],
        &["status"],
        &["logout", "gh"],
        &["login", "gh"],
    ] {
        let out = home.run(args).unwrap();
        assert_eq!(
            out.status.code(),
            Some(EXIT_AGENT_DOWN),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("agent is not running"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
    }
}

/// A runtime dir that looks like a running agent's (a valid 0600 secret file) for a fake
/// agent at its socket path.
fn fake_runtime(home: &Home) -> std::path::PathBuf {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let run = home.runtime_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&run)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(run.join("api-secret"))
        .unwrap()
        .write_all(&[b'a'; 64])
        .unwrap();
    run.join("agent.sock")
}

/// Issue 19: every wait of the CLI is bounded as the README says: an agent whose socket
/// takes no connection (a full backlog: stopped, or stuck with clients queued) is "not
/// running" after the 2 s connect timeout; one that takes the connection and never answers
/// is a clear error after the 30 s deadline. Both the `stagepass token` fast path and the
/// full client (`status`). Before, the fast path's connect waited forever. The bounds
/// asserted are 10x the connect timeout and the harness's hang guard (2x the deadline).
#[test]
fn a_stuck_agent_is_a_clear_error_within_the_documented_bounds() {
    use std::time::{Duration, Instant};
    let home = support::home(&gh_only());
    let sock = fake_runtime(&home);

    // A socket nobody accepts on, its backlog (0: one connection) full.
    {
        use socket2::{Domain, SockAddr, Socket, Type};
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&sock).unwrap()).unwrap();
        listener.listen(0).unwrap();
        let _queued = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        for args in [&["token", "gh"][..], &["status"]] {
            let t = Instant::now();
            let out = home.run(args).unwrap();
            let took = t.elapsed();
            eprintln!(
                "{args:?} against a full backlog: {took:?}: {}",
                stderr(&out)
            );
            assert_eq!(
                out.status.code(),
                Some(EXIT_AGENT_DOWN),
                "{args:?}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("did not accept the connection within 2s"),
                "{args:?}: {}",
                stderr(&out)
            );
            assert!(took < Duration::from_secs(20), "{args:?} waited {took:?}");
        }
        std::fs::remove_file(&sock).unwrap();
    }

    // A socket that takes every connection and never answers.
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (tx, held) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            if tx.send(s).is_err() {
                return;
            }
        }
    });
    let runs: Vec<_> = [&["token", "gh"][..], &["status"]]
        .into_iter()
        .map(|args| {
            let mut c = home.command_of(home.bin());
            c.args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let child = c.spawn().unwrap();
            (
                args,
                Instant::now(),
                std::thread::spawn(move || stagepass_e2e::home::wait_output(child).unwrap()),
            )
        })
        .collect();
    for (args, started, run) in runs {
        let out = run.join().unwrap();
        let took = started.elapsed();
        eprintln!(
            "{args:?} against a silent agent: {took:?}: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("the agent sent no complete answer within 30s"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    drop(held);
}

#[test]
fn doctor_fails_and_names_the_fix_when_the_agent_is_down() {
    let home = support::home(&Config::new());
    let out = home.run(&["doctor"]).unwrap();
    assert_eq!(out.status.code(), Some(EXIT_AGENT_DOWN), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("[FAIL] agent running"), "{text}");
    assert!(
        text.contains("fix: start it with `stagepass agent`"),
        "{text}"
    );
}

#[test]
fn doctor_passes_with_the_agent_and_idp_up() {
    let idp = start_idp();
    let (a, _d) = agent(&idp);
    let out = a.home.run(&["doctor"]).unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for check in [
        "agent running",
        "unix socket",
        "tcp port",
        "api secret",
        "store backend",
    ] {
        assert!(text.contains(&format!("[ok]   {check}")), "{check}: {text}");
    }
    assert!(
        text.contains(&format!("[ok]   IdP discovery {}", idp.issuer())),
        "{text}"
    );
    assert!(
        text.contains(&format!("[ok]   clock skew vs {}", idp.issuer())),
        "{text}"
    );
}

#[test]
fn with_the_socket_off_the_cli_uses_the_tcp_port_from_endpoint_json() {
    let a = Agent::start(
        &Config::new()
            .api(support::Api {
                port: Some(0),
                unix_socket: Some(false),
                ..support::Api::default()
            })
            .store("file")
            .profile("gh", Profile::env("HOME")),
    );
    assert!(!a.socket().exists());
    let out = a.home.run(&["token", "gh"]).unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), a.log());
    // The env profile serves the variable's value; HOME is the agent's private home.
    assert_eq!(stdout(&out).trim(), a.home.path().to_str().unwrap());
    let out = a.home.run(&["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v["api"]["unix_socket"].is_null());
}
