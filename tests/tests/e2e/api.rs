//! End-to-end tests of the local API against the running `stagepass agent` binary and the
//! real test IdP: one test per guard rule (refused with the right status and code, and the
//! same request passing once the rule is satisfied), listener hygiene, and the OpenAPI
//! document checked against real answers on every route.

use crate::support;

use stagepass_e2e::Idp;
use support::{Agent, Api, Config, OpenApi, Profile, start_idp, tcp_request};

/// No profile, a free port, a short header timeout (the guard tests need no IdP).
fn bare() -> Config {
    Config::new()
        .api(Api {
            port: Some(0),
            header_read_timeout_secs: Some(2),
            ..Api::default()
        })
        .store("file")
}

/// Starts an agent with `config` plus a client-credentials profile `ci` at `idp` (no login
/// needed).
fn agent(idp: &Idp, config: Config) -> Agent {
    let secret_dir = tempfile::tempdir().unwrap().keep();
    let secret_file = secret_dir.join("ci-secret");
    std::fs::write(&secret_file, "stagepass-ci-secret").unwrap();
    Agent::start(&config.profile("ci", Profile::ci_for_backstage(idp.issuer(), &secret_file)))
}

/// An agent with no profile at all.
fn bare_agent() -> Agent {
    Agent::start(&bare())
}

#[test]
fn no_secret_is_refused_and_the_secret_passes() {
    let a = bare_agent();
    let raw = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        a.port
    );
    let r = a.tcp(&raw);
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "unauthorized"),
        "{}",
        a.log()
    );
    assert_eq!(a.get("/v1/status").status, 200);
}

#[test]
fn wrong_secret_is_refused_and_raw_secret_passes() {
    let a = bare_agent();
    let mut wrong = a.secret.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    let raw = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {wrong}\r\n\r\n",
        a.port
    );
    let r = a.tcp(&raw);
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    // AWS SDKs send the token file's content verbatim.
    let raw = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {}\r\n\r\n",
        a.port, a.secret
    );
    assert_eq!(a.tcp(&raw).status, 200);
}

#[test]
fn dns_rebinding_host_is_refused_and_loopback_hosts_pass() {
    let a = bare_agent();
    let raw = format!(
        "GET /v1/status HTTP/1.1\r\nHost: attacker.example:{}\r\nAuthorization: Bearer {}\r\n\r\n",
        a.port, a.secret
    );
    let r = a.tcp(&raw);
    assert_eq!((r.status, r.code().as_str()), (421, "bad_host"));
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        let raw = format!(
            "GET /v1/status HTTP/1.1\r\nHost: {host}:{}\r\nAuthorization: Bearer {}\r\n\r\n",
            a.port, a.secret
        );
        assert_eq!(a.tcp(&raw).status, 200, "{host}");
    }
}

#[test]
fn web_page_origin_is_refused_and_plain_requests_pass() {
    let a = bare_agent();
    let r = a.tcp(&a.head("GET", "/v1/status", &["Origin: https://evil.example"]));
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden_origin"));
    let r = a.tcp(&a.head("GET", "/v1/status", &["Sec-Fetch-Site: cross-site"]));
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden_origin"));
    let r = a.tcp(&a.head("GET", "/v1/status", &["Sec-Fetch-Site: none"]));
    assert_eq!(r.status, 200);
}

#[test]
fn forwarded_requests_are_refused_and_direct_ones_pass() {
    let a = bare_agent();
    let r = a.tcp(&a.head("GET", "/v1/status", &["X-Forwarded-For: 203.0.113.9"]));
    assert_eq!((r.status, r.code().as_str()), (403, "forwarded_refused"));
    let r = a.tcp(&a.head("GET", "/v1/status", &["Forwarded: for=203.0.113.9"]));
    assert_eq!((r.status, r.code().as_str()), (403, "forwarded_refused"));
    assert_eq!(a.get("/v1/status").status, 200);
}

#[test]
fn oversized_headers_are_refused_and_normal_ones_pass() {
    let a = bare_agent();
    let big = format!("X-Pad: {}", "a".repeat(20 * 1024));
    let r = a.tcp(&a.head("GET", "/v1/status", &[&big]));
    assert_eq!((r.status, r.code().as_str()), (431, "request_too_large"));
    let small = format!("X-Pad: {}", "a".repeat(1024));
    assert_eq!(a.tcp(&a.head("GET", "/v1/status", &[&small])).status, 200);
}

#[test]
fn slowloris_is_cut_by_the_header_timeout_and_a_prompt_request_passes() {
    use std::io::{Read, Write};
    let a = bare_agent();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(support::GUARD)).unwrap();
    // Half a request head, then silence: the agent must close the connection unanswered.
    s.write_all(format!("GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", a.port).as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    assert!(read.is_ok(), "connection not closed by the agent: {read:?}");
    assert!(
        !String::from_utf8_lossy(&buf).contains(" 200 "),
        "answered a slow request"
    );
    // Meanwhile the agent still serves others.
    assert_eq!(a.get("/v1/status").status, 200);
}

#[test]
fn another_uid_on_the_socket_is_refused_and_ours_passes() {
    let a = bare_agent();
    let sock = a.socket();
    // Open the path to uid 65534 so that only SO_PEERCRED can refuse it.
    use std::os::unix::fs::PermissionsExt;
    let mut p = sock.parent().unwrap().to_path_buf();
    loop {
        let mode = if p == sock { 0o666 } else { 0o711 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        if p == a.home.root() {
            break;
        }
        p = p.parent().unwrap().to_path_buf();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let curl = |as_nobody: bool| {
        let mut c = if as_nobody {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
            c
        } else {
            std::process::Command::new("curl")
        };
        c.args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&sock)
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", a.secret))
        .arg("http://localhost/v1/status");
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            body.to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, body, err) = curl(true);
    assert_eq!(code, "403", "{body} {err}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "forbidden_peer");
    let (code, body, err) = curl(false);
    assert_eq!(code, "200", "{body} {err}");
}

#[test]
fn binding_any_address_is_refused() {
    let home = support::home(&Config::new().api(Api {
        listen: Some("0.0.0.0".into()),
        port: Some(0),
        ..Api::default()
    }));
    let out = home.run(&["agent"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0.0.0.0 is not a loopback address"), "{err}");
    assert!(!home.runtime_dir().join("agent.sock").exists());
}

/// Socket inodes the process holds open (from /proc/PID/fd).
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn nothing_of_ours_listens_on_a_non_loopback_address() {
    let idp = start_idp();
    let a = agent(&idp, bare());
    assert_eq!(a.get("/v1/token/ci").status, 200, "{}", a.log());
    let inodes = socket_inodes(a.pid());
    let mut ours = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f[1], f[3], f[9]);
            if !inodes.iter().any(|i| i == inode) || state != "0A" {
                continue;
            }
            ours += 1;
            let addr = local.split(':').next().unwrap();
            let loopback = addr == "0100007F" || addr == "00000000000000000000000001000000";
            assert!(loopback, "agent listens on {local} ({table})");
        }
    }
    assert_eq!(
        ours, 1,
        "expected exactly our one TCP listener; inodes {inodes:?}"
    );
}

#[test]
fn token_route_serves_the_idp_token_and_unknown_profiles_say_so() {
    let idp = start_idp();
    let a = agent(&idp, bare());
    let r = a.get("/v1/token/ci?min_valid=60");
    assert_eq!(r.status, 200, "{}", a.log());
    let v = r.json();
    assert_eq!(v["profile"], "ci");
    assert_eq!(
        v["token_type"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("bearer")
    );
    assert!(
        v["access_token"].as_str().unwrap().split('.').count() == 3,
        "a JWT from the IdP"
    );
    assert!(v["expires_in"].as_u64().unwrap() > 60);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = a.get("/v1/token/nobody");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_profile"));
    let m = a.get("/metrics");
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("stagepass_token_requests_total{profile=\"ci\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("stagepass_token_expires_in_seconds{profile=\"ci\"}"),
        "{text}"
    );
}

/// The cache hit is answered on a fast path that hands everything else to the full handler:
/// on one keep-alive connection, hits and refusals interleaved each get their own answer,
/// every request is counted once (a refusal is not counted by both paths), and each hit
/// logs its `answered` line like any other request.
#[test]
fn cache_hits_and_refusals_on_one_connection_are_answered_and_counted_once() {
    use std::io::{Read, Write};
    let idp = start_idp();
    let a = agent(&idp, bare());
    // The first request fills the cache (a miss, from the broker).
    assert_eq!(a.get("/v1/token/ci").status, 200, "{}", a.log());
    let hit = a.head("GET", "/v1/token/ci", &[]);
    let mut wire = String::new();
    let mut want = Vec::new();
    for i in 0..30 {
        wire.push_str(&hit);
        want.push(200);
        let refused = match i % 6 {
            1 => Some((
                format!(
                    "GET /v1/token/ci HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer wrong\r\n\r\n",
                    a.port
                ),
                401,
            )),
            2 => Some((
                a.head("GET", "/v1/token/ci", &["Origin: https://evil.example"]),
                403,
            )),
            3 => Some((a.head("POST", "/v1/token/ci", &["Content-Length: 0"]), 405)),
            4 => Some((a.head("GET", "/v1/token/ci?min_valid=soon", &[]), 400)),
            5 => Some((
                a.head("GET", "/v1/token/ci", &["X-Forwarded-For: 10.0.0.1"]),
                403,
            )),
            _ => None,
        };
        if let Some((raw, status)) = refused {
            wire.push_str(&raw);
            want.push(status);
        }
    }
    wire.push_str(&a.head("GET", "/v1/token/ci", &["Connection: close"]));
    want.push(200);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(wire.as_bytes()).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    let statuses: Vec<u16> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, m)| text[i + m.len()..i + m.len() + 3].parse().unwrap())
        .collect();
    assert_eq!(statuses, want, "{text}");
    let hits = want.iter().filter(|s| **s == 200).count() + 1;
    let count = |status: u16| want.iter().filter(|s| **s == status).count();
    let m = a.get("/metrics");
    let metrics = String::from_utf8_lossy(&m.body);
    for (status, n) in [
        (200, hits),
        (401, count(401)),
        (403, count(403)),
        (405, count(405)),
        (400, count(400)),
    ] {
        let line = format!(
            "stagepass_api_requests_total{{route=\"/v1/token/{{profile}}\",status=\"{status}\"}} {n}\n"
        );
        assert!(metrics.contains(&line), "want {line}in\n{metrics}");
    }
    let ok = format!("stagepass_token_requests_total{{profile=\"ci\",outcome=\"ok\"}} {hits}\n");
    assert!(metrics.contains(&ok), "want {ok}in\n{metrics}");
    // Every hit logged its answer in its request span (the log is written as it goes).
    let answered = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains("answered") && l.contains("status=200") && l.contains("profile=\"ci\"")
            })
            .count()
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while answered(&a.log()) < hits && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(answered(&a.log()), hits, "{}", a.log());
    // Written to a file, the log is plain text (no terminal colour codes).
    assert!(!a.log().contains('\u{1b}'), "{}", a.log());
}

#[test]
fn openapi_matches_every_route() {
    let idp = start_idp();
    let dev = bare().profile("dev", Profile::device_for_backstage(idp.issuer()));
    let a = agent(&idp, dev);
    let spec = OpenApi::load();
    let h = |m: &str, p: &str| a.head(m, p, &[]);
    // (template, method, raw request, expected status)
    let healthz = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        a.port
    );
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("/healthz", "get", healthz, 200),
        ("/metrics", "get", h("GET", "/metrics"), 200),
        ("/v1/status", "get", h("GET", "/v1/status"), 200),
        (
            "/v1/status",
            "get",
            format!(
                "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
                a.port
            ),
            401,
        ),
        ("/v1/token/{profile}", "get", h("GET", "/v1/token/ci"), 200),
        (
            "/v1/token/{profile}/invalidate",
            "post",
            format!(
                "{}{{\"fingerprint\":\"0123456789ab\"}}",
                a.head(
                    "POST",
                    "/v1/token/ci/invalidate",
                    &[
                        "Content-Type: application/json",
                        "Content-Length: 30",
                        "Connection: close"
                    ]
                )
            ),
            200,
        ),
        (
            "/v1/token/{profile}/invalidate",
            "post",
            h("POST", "/v1/token/ci/invalidate"),
            400,
        ),
        (
            "/v1/token/{profile}/invalidate",
            "post",
            format!(
                "{}{{\"fingerprint\":\"0123456789ab\"}}",
                a.head(
                    "POST",
                    "/v1/token/nobody/invalidate",
                    &[
                        "Content-Type: application/json",
                        "Content-Length: 30",
                        "Connection: close"
                    ]
                )
            ),
            404,
        ),
        (
            "/v1/token/{profile}",
            "get",
            h("GET", "/v1/token/nobody"),
            404,
        ),
        (
            "/v1/token/{profile}",
            "get",
            h("GET", "/v1/token/ci?min_valid=x"),
            400,
        ),
        (
            "/v1/login/{profile}",
            "get",
            h("GET", "/v1/login/nobody"),
            404,
        ),
        (
            "/v1/login/{profile}",
            "post",
            h("POST", "/v1/login/nobody"),
            404,
        ),
        (
            "/v1/login/{profile}",
            "delete",
            h("DELETE", "/v1/login/nobody"),
            404,
        ),
        (
            "/v1/login/{profile}/callback",
            "post",
            h("POST", "/v1/login/nobody/callback"),
            400,
        ),
        ("/v1/catalog", "get", h("GET", "/v1/catalog"), 200),
        ("/v1/catalog/diff", "get", h("GET", "/v1/catalog/diff"), 200),
        (
            "/v1/catalog/sync",
            "post",
            h("POST", "/v1/catalog/sync"),
            202,
        ),
        (
            "/v1/aws/credentials/{name}",
            "get",
            h("GET", "/v1/aws/credentials/nobody"),
            404,
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (template, method, raw, want) in &cases {
        let r = a.tcp(raw);
        assert_eq!(
            r.status,
            *want,
            "{method} {template}: {}",
            String::from_utf8_lossy(&r.body)
        );
        spec.check(template, method, &r);
        seen.insert((template.to_string(), method.to_string()));
    }
    for op in spec.operations() {
        assert!(
            seen.contains(&op),
            "documented operation {op:?} is not exercised"
        );
    }
    // Unknown routes and wrong methods answer in the documented error shape too.
    let r = a.tcp(&h("GET", "/v2/nothing"));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = a.tcp(&h("PUT", "/v1/token/ci"));
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    assert_eq!(r.header("allow"), Some("GET"));
}

#[test]
fn sigterm_stops_the_agent_and_removes_its_runtime_files() {
    let mut a = bare_agent();
    let run = a.home.runtime_dir();
    assert!(run.join("api-secret").exists());
    let st = a.proc.terminate().expect("agent did not stop on SIGTERM");
    assert!(st.success(), "{st}; log:\n{}", a.log());
    for f in ["agent.sock", "api-secret", "endpoint.json"] {
        assert!(!run.join(f).exists(), "{f} left behind");
    }
    assert!(tcp_request(a.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
}

#[test]
fn a_second_agent_is_refused_by_the_lock() {
    let a = bare_agent();
    let out = a.home.run(&["agent"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert_eq!(
        a.get("/v1/status").status,
        200,
        "the first agent must be unharmed"
    );
}

#[test]
fn service_manager_gets_ready_status_and_watchdog_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(support::GUARD)).unwrap();
    let a = Agent::start_env(
        &Config::agent_on_ephemeral_port(),
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}; got {seen:?}; log:\n{}", a.log()));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=serving 0 profile(s) on port"),
        "{ready}"
    );
    // READY comes after the listeners are bound: the API answers by then.
    assert_eq!(a.get("/v1/status").status, 200);
}

#[test]
fn a_busy_port_fails_plainly_and_leaves_no_runtime_files() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let home = support::home(&Config::new().api(Api::port(port)).store("file"));
    let out = home.run(&["agent"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("port = 0"), "the message names the fix: {err}");
    for f in ["api-secret", "endpoint.json", "agent.sock"] {
        assert!(!home.runtime_dir().join(f).exists(), "{f} left behind");
    }
}
