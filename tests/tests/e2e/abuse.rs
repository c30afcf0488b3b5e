//! Abuse tests of the running `stagepass agent` that the guard tests in `api.rs` do not
//! cover: HTTP request smuggling (conflicting framing, obs-fold), oversized chunked bodies,
//! symlink attacks on the state and runtime dirs, and file modes under a permissive umask.
//! The threat-model table in SECURITY.md points at each test here.

use crate::support;

use stagepass_e2e::home::wait_output;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::{Agent, Api, Config, Home, Profile, tcp_request};

/// An agent with no profile at all.
fn bare_agent() -> Agent {
    Agent::start(
        &Config::new()
            .api(Api {
                port: Some(0),
                header_read_timeout_secs: Some(2),
                ..Api::default()
            })
            .store("file"),
    )
}

/// How many HTTP answers a raw byte stream holds.
fn answers(raw: &[u8]) -> usize {
    raw.windows(9).filter(|w| w == b"HTTP/1.1 ").count()
}

/// Sends `raw` as is (no `Connection: close` added) and reads until the server closes.
fn send_raw(port: u16, raw: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(support::GUARD)).unwrap();
    // The server may refuse and close before reading everything: a failed write is fine.
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    // A reset after the answer is fine: we keep what was read.
    let _ = s.read_to_end(&mut buf);
    buf
}

/// The smuggled request: a guarded GET that would answer 200 if it were ever run.
fn smuggled(a: &Agent) -> String {
    format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        a.port, a.secret
    )
}

#[test]
fn content_length_with_transfer_encoding_never_runs_the_smuggled_request() {
    let a = bare_agent();
    let inner = smuggled(&a);
    // A front proxy using Content-Length would forward all of this as one body; a server
    // using Transfer-Encoding would see the chunked body end and a second request start.
    let raw = format!(
        "POST /v1/catalog/sync HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}",
        a.port,
        a.secret,
        5 + inner.len()
    );
    let out = send_raw(a.port, raw.as_bytes());
    // hyper lets Transfer-Encoding win (RFC 9112 6.3) and closes the connection after the
    // answer, so the bytes after the chunked body are never read as a second request.
    assert!(
        support::parse_resp(&out).is_some(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(answers(&out), 1, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn two_different_content_lengths_are_refused_and_one_passes() {
    let a = bare_agent();
    let raw = format!(
        "POST /v1/catalog/sync HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nContent-Length: 52\r\n\r\n{}",
        a.port,
        a.secret,
        &smuggled(&a)[..52]
    );
    let out = send_raw(a.port, raw.as_bytes());
    assert_eq!(support::parse_resp(&out).unwrap().status, 400);
    assert_eq!(answers(&out), 1, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn obs_fold_header_is_refused_and_the_unfolded_header_passes() {
    let a = bare_agent();
    let raw = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer\r\n {}\r\nConnection: close\r\n\r\n",
        a.port, a.secret
    );
    let out = send_raw(a.port, raw.as_bytes());
    let r = support::parse_resp(&out).unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&out));
    assert_eq!(a.get("/v1/status").status, 200);
}

#[test]
fn transfer_encoding_other_than_chunked_is_refused() {
    let a = bare_agent();
    let raw = format!(
        "POST /v1/catalog/sync HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n",
        a.port, a.secret
    );
    let out = send_raw(a.port, raw.as_bytes());
    assert_eq!(
        support::parse_resp(&out).unwrap().status,
        400,
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn oversized_chunked_body_is_refused_without_reading_it_all() {
    let a = bare_agent();
    // 2 MiB in 64 KiB chunks: the limit is 64 KiB, counted on the decoded body.
    let chunk = "a".repeat(64 * 1024);
    let mut raw = format!(
        "POST /v1/catalog/sync HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        a.port, a.secret
    );
    for _ in 0..32 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    let out = send_raw(a.port, raw.as_bytes());
    // Either the 413 arrived before the server closed, or the connection was cut while we
    // were still sending: in no case is the body accepted.
    if let Some(r) = support::parse_resp(&out) {
        assert_eq!(
            (r.status, r.code().as_str()),
            (413, "request_too_large"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    // The agent is still up and serving.
    assert_eq!(a.get("/v1/status").status, 200);
}

#[test]
fn a_huge_chunk_size_is_refused() {
    let a = bare_agent();
    let raw = format!(
        "POST /v1/catalog/sync HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffffff\r\nxx\r\n",
        a.port, a.secret
    );
    let out = send_raw(a.port, raw.as_bytes());
    let r = support::parse_resp(&out).unwrap();
    assert!(
        r.status == 400 || r.status == 413,
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(a.get("/v1/status").status, 200);
}

/// Runs `stagepass agent` in `home` expecting it to refuse to start; returns its stderr.
fn refused_start(home: &Home) -> String {
    let mut c = home.command(["agent"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = wait_output(c.spawn().unwrap()).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "agent started; stderr:\n{err}");
    err
}

/// An agent with no profile, on an ephemeral port.
fn bare() -> Config {
    Config::agent_on_ephemeral_port()
}

#[test]
fn a_symlinked_state_dir_is_refused_and_a_real_one_is_used() {
    let home = support::home(&bare());
    let elsewhere = home.root().join("attacker-owned");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(home.xdg_state_home()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, home.state_dir()).unwrap();
    let err = refused_start(&home);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // Without the link, the same home starts.
    std::fs::remove_file(home.state_dir()).unwrap();
    drop(Agent::start_in(home, &[]));
}

#[test]
fn a_symlinked_runtime_dir_is_refused() {
    let home = support::home(&bare());
    let elsewhere = home.root().join("attacker-owned");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, home.runtime_dir()).unwrap();
    let err = refused_start(&home);
    assert!(err.contains("symlink"), "{err}");
    assert!(
        !elsewhere.join("api-secret").exists(),
        "secret written through the link"
    );
}

#[test]
fn an_open_runtime_dir_is_refused() {
    let home = support::home(&bare());
    std::fs::create_dir_all(home.runtime_dir()).unwrap();
    std::fs::set_permissions(home.runtime_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused_start(&home);
    assert!(err.contains("0700"), "{err}");
    assert!(!home.runtime_dir().join("api-secret").exists());
}

/// Every file and directory under `dir`, with its mode bits.
fn modes(dir: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            modes(&e.path(), out);
        }
    }
}

#[test]
fn files_stay_private_under_a_world_writable_umask() {
    let idp = support::start_idp();
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("ci-secret"), "stagepass-ci-secret").unwrap();
    let config = bare().profile(
        "ci",
        Profile::ci_for_backstage(idp.issuer(), &secret_dir.path().join("ci-secret")),
    );
    let home = support::home(&config);
    // umask 000 through a shell: whatever the agent creates must still be private.
    // The same environment `Home::command` gives the agent, run through a shell that opens
    // the umask first.
    let agent_cmd = home.command(["agent"]);
    let mut sh = std::process::Command::new("/bin/sh");
    sh.env_clear();
    for (k, v) in agent_cmd.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh.env("SP_BIN", stagepass_e2e::support::stagepass_bin().unwrap())
        .args(["-c", "umask 000; exec \"$SP_BIN\" agent"])
        .current_dir(home.path());
    let mut proc = support::ManagedProcess::spawn("stagepass agent (umask 000)", sh).unwrap();
    let run = home.runtime_dir();
    let mut found = None;
    proc.wait_until("/healthz answering", support::GUARD, || {
        let ep = std::fs::read(run.join("endpoint.json")).ok();
        let secret = std::fs::read_to_string(run.join("api-secret")).ok();
        if let (Some(ep), Some(secret)) = (ep, secret) {
            let ep: serde_json::Value = serde_json::from_slice(&ep).unwrap();
            let port = ep["port"].as_u64().unwrap() as u16;
            let health = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
            if tcp_request(port, health).is_ok_and(|r| r.status == 200) {
                found = Some((port, secret));
            }
        }
        found.is_some()
    })
    .unwrap();
    let (port, secret) = found.unwrap();
    let r = tcp_request(
        port,
        &format!(
            "GET /v1/token/ci HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {secret}\r\n\r\n"
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", proc.log());
    let mut all = Vec::new();
    modes(&run, &mut all);
    modes(&home.state_dir(), &mut all);
    assert!(
        all.iter().any(|(p, _, _)| p.ends_with("api-secret")),
        "{all:?}"
    );
    for (path, mode, is_dir) in &all {
        if path.extension().is_some_and(|e| e == "sock") {
            // The socket is guarded by the 0700 dir and SO_PEERCRED, not its mode.
            continue;
        }
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} has mode {mode:o}", path.display());
    }
    proc.terminate();
}

/// Issue 19: the single-instance lock was in the runtime dir only, so two agents with
/// different runtime dirs ran on one state dir at the same time (both refreshing and
/// rotating the same grants). The second is now refused, naming the state dir.
#[test]
fn a_second_agent_on_the_same_state_dir_is_refused_even_with_another_runtime_dir() {
    let first = Agent::start(&bare());
    let other_run = tempfile::tempdir().unwrap();
    let mut c = first.home.command(["agent"]);
    c.env("XDG_RUNTIME_DIR", other_run.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = wait_output(c.spawn().unwrap()).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "a second agent started; stderr:\n{err}"
    );
    assert!(err.contains("uses the state dir"), "{err}");
    assert!(
        err.contains(&first.home.xdg_state_home().display().to_string()),
        "{err}"
    );
    // The first one still serves.
    assert_eq!(first.get("/healthz").status, 200);
}
