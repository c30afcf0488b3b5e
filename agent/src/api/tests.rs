//! In-process tests of the guard and routes: [`routes::handle`] called without a socket,
//! and the server on port 0 for what needs a real connection (timeouts, peers, shutdown).

use super::*;
use crate::broker::Broker;
use crate::config::Config;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;

const PORT: u16 = 48123;
const UID: u32 = 4242;

fn paths(dir: &std::path::Path) -> crate::paths::Paths {
    crate::paths::Paths {
        config_files: vec![],
        state_dir: dir.join("state"),
        runtime_dir: dir.join("run"),
    }
}

async fn state() -> (ApiState, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&Config::default(), &paths(tmp.path()))
        .await
        .unwrap();
    let mut s = ApiState::new(
        broker,
        Secret::new("s3cret-0123456789"),
        ApiConfig::default(),
        Some(PORT),
        None,
    );
    s.own_uid = UID;
    (s, tmp)
}

const TCP: ConnInfo = ConnInfo {
    transport: Transport::Tcp,
    peer: None,
};

fn req(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{PORT}"))
}

fn authed(method: &str, path: &str) -> http::request::Builder {
    req(method, path).header("authorization", "Bearer s3cret-0123456789")
}

async fn send(
    s: &ApiState,
    conn: ConnInfo,
    b: http::request::Builder,
) -> (StatusCode, serde_json::Value) {
    let resp = routes::handle(s, &conn, b.body(Full::new(Bytes::new())).unwrap()).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, v)
}

fn code(v: &serde_json::Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

#[tokio::test]
async fn healthz_needs_no_secret_and_says_only_ok() {
    let (s, _t) = state().await;
    let (st, v) = send(&s, TCP, Request::builder().uri("/healthz")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn secret_missing_wrong_bearer_and_raw() {
    let (s, _t) = state().await;
    let (st, v) = send(&s, TCP, req("GET", "/v1/status")).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (st, v) = send(
        &s,
        TCP,
        req("GET", "/v1/status").header("authorization", "Bearer s3cret-0123456780"),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (st, v) = send(&s, TCP, authed("GET", "/v1/status")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["api"]["tcp_port"], PORT);
    // AWS SDKs send the token file's content verbatim, without a scheme.
    let (st, _) = send(
        &s,
        TCP,
        req("GET", "/v1/status").header("authorization", "s3cret-0123456789"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send(
        &s,
        TCP,
        req("GET", "/v1/status").header("authorization", "bearer s3cret-0123456789"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn host_must_be_a_loopback_literal_or_localhost_with_our_port() {
    let (s, _t) = state().await;
    for bad in [
        "evil.example:48123",
        "127.0.0.1:80",
        "127.0.0.1",
        "localhost",
        "0.0.0.0:48123",
        "127.0.0.2:48123",
    ] {
        let b = Request::builder()
            .uri("/v1/status")
            .header("host", bad)
            .header("authorization", "Bearer s3cret-0123456789");
        let (st, v) = send(&s, TCP, b).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::MISDIRECTED_REQUEST, "bad_host"),
            "{bad}"
        );
    }
    for good in [
        "127.0.0.1:48123",
        "localhost:48123",
        "LOCALHOST:48123",
        "[::1]:48123",
    ] {
        let b = Request::builder()
            .uri("/v1/status")
            .header("host", good)
            .header("authorization", "Bearer s3cret-0123456789");
        assert_eq!(send(&s, TCP, b).await.0, StatusCode::OK, "{good}");
    }
    let b = Request::builder()
        .uri("/v1/status")
        .header("authorization", "Bearer s3cret-0123456789");
    assert_eq!(send(&s, TCP, b).await.0, StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn browsers_and_proxies_are_refused() {
    let (s, _t) = state().await;
    let (st, v) = send(
        &s,
        TCP,
        authed("GET", "/v1/status").header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "forbidden_origin"));
    let (st, v) = send(
        &s,
        TCP,
        authed("GET", "/v1/status").header("sec-fetch-site", "cross-site"),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "forbidden_origin"));
    let (st, _) = send(
        &s,
        TCP,
        authed("GET", "/v1/status").header("sec-fetch-site", "none"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    for h in ["x-forwarded-for", "forwarded"] {
        let (st, v) = send(
            &s,
            TCP,
            authed("GET", "/v1/status").header(h, "for=10.0.0.1"),
        )
        .await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::FORBIDDEN, "forwarded_refused"),
            "{h}"
        );
    }
}

#[tokio::test]
async fn checks_run_in_a_fixed_order() {
    let (s, _t) = state().await;
    // No secret, a bad host, an Origin and a proxy header: the proxy check comes first.
    let b = Request::builder()
        .uri("/v1/status")
        .header("host", "evil.example")
        .header("origin", "https://evil.example")
        .header("x-forwarded-for", "1.2.3.4");
    assert_eq!(code(&send(&s, TCP, b).await.1), "forwarded_refused");
    let b = Request::builder()
        .uri("/v1/status")
        .header("host", "evil.example")
        .header("origin", "https://e");
    assert_eq!(code(&send(&s, TCP, b).await.1), "forbidden_origin");
    let b = Request::builder()
        .uri("/v1/status")
        .header("host", "evil.example");
    assert_eq!(code(&send(&s, TCP, b).await.1), "bad_host");
    // Unknown routes look the same as known ones to a caller without the secret.
    let (st, v) = send(&s, TCP, req("GET", "/nope")).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (st, v) = send(&s, TCP, authed("GET", "/nope")).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn unix_peers_must_share_our_uid() {
    let (s, _t) = state().await;
    let other = ConnInfo {
        transport: Transport::Unix {
            peer_uid: Some(UID + 1),
        },
        peer: None,
    };
    let mine = ConnInfo {
        transport: Transport::Unix {
            peer_uid: Some(UID),
        },
        peer: None,
    };
    let unknown = ConnInfo {
        transport: Transport::Unix { peer_uid: None },
        peer: None,
    };
    let b = || {
        Request::builder()
            .uri("/v1/status")
            .header("host", "localhost")
            .header("authorization", "Bearer s3cret-0123456789")
    };
    let (st, v) = send(&s, other.clone(), b()).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "forbidden_peer"));
    assert_eq!(code(&send(&s, unknown, b()).await.1), "forbidden_peer");
    assert_eq!(send(&s, mine, b()).await.0, StatusCode::OK);
    // Even /healthz is closed to other users' processes.
    let (st, _) = send(&s, other, Request::builder().uri("/healthz")).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Bare `localhost` is a socket-only Host.
    let b = Request::builder()
        .uri("/v1/status")
        .header("host", "localhost")
        .header("authorization", "Bearer s3cret-0123456789");
    assert_eq!(send(&s, TCP, b).await.0, StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused() {
    let (s, _t) = state().await;
    let big = "a".repeat(20 * 1024);
    let (st, v) = send(
        &s,
        TCP,
        authed("GET", "/v1/status").header("x-big", big.as_str()),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_too_large"
        )
    );
    let mut b = authed("GET", "/v1/status");
    for i in 0..70 {
        b = b.header(format!("x-h{i}"), "1");
    }
    assert_eq!(
        send(&s, TCP, b).await.0,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let body = vec![b'x'; 70 * 1024];
    let r = authed("POST", "/v1/catalog/sync")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = routes::handle(&s, &TCP, r).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn methods_are_per_route() {
    let (s, _t) = state().await;
    let r = authed("POST", "/v1/token/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = routes::handle(&s, &TCP, r).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET");
    let (st, v) = send(&s, TCP, authed("PUT", "/v1/login/x")).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (st, _) = send(&s, TCP, authed("GET", "/v1/catalog/sync")).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn token_route_validates_its_input() {
    let (s, _t) = state().await;
    let (st, v) = send(&s, TCP, authed("GET", "/v1/token/nobody")).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "unknown_profile"));
    let (st, v) = send(&s, TCP, authed("GET", "/v1/token/x?min_valid=soon")).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (st, _) = send(&s, TCP, authed("GET", "/v1/token/x?other=1")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = send(&s, TCP, authed("GET", "/v1/token/..%2Fx")).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "unknown_profile"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let (s, _t) = state().await;
    send(&s, TCP, authed("GET", "/v1/token/a")).await;
    send(&s, TCP, authed("GET", "/v1/token/b")).await;
    send(&s, TCP, req("GET", "/v1/status")).await;
    let r = authed("GET", "/metrics")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = routes::handle(&s, &TCP, r).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            "stagepass_api_requests_total{route=\"/v1/token/{profile}\",status=\"404\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("stagepass_api_requests_total{route=\"/v1/status\",status=\"401\"} 1"),
        "{text}"
    );
}

/// A server on port 0 in a temp runtime dir, stopped when the test drops the sender.
struct Running {
    port: u16,
    socket: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _tmp: tempfile::TempDir,
}

async fn serve(cfg: ApiConfig) -> Running {
    let tmp = tempfile::tempdir().unwrap();
    let p = paths(tmp.path());
    let broker = Broker::start(&Config::default(), &p).await.unwrap();
    let bound = server::bind(&cfg, &p).await.unwrap();
    let port = bound.tcp_port().unwrap();
    let socket = bound.socket().unwrap().to_path_buf();
    let state = ApiState::new(
        broker,
        Secret::new("s3cret-0123456789"),
        cfg,
        Some(port),
        Some(socket.clone()),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::run(
        bound,
        Arc::new(state),
        async {
            let _ = rx.await;
        },
        std::time::Duration::from_secs(5),
    ));
    Running {
        port,
        socket,
        stop: Some(tx),
        task,
        _tmp: tmp,
    }
}

async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let guard = std::time::Duration::from_secs(30);
    tokio::time::timeout(guard, s.read_to_end(&mut buf))
        .await
        .expect("hang guard")
        .ok();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn server_serves_tcp_and_socket_then_stops_and_removes_the_socket() {
    use tokio::io::AsyncWriteExt;
    let cfg = ApiConfig {
        port: 0,
        ..ApiConfig::default()
    };
    let mut r = serve(cfg).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&r.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .unwrap();
    let head = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer s3cret-0123456789\r\nConnection: close\r\n\r\n",
        r.port
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let text = read_all(&mut tcp).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let mut unix = tokio::net::UnixStream::connect(&r.socket).await.unwrap();
    unix.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret-0123456789\r\nConnection: close\r\n\r\n").await.unwrap();
    let text = read_all(&mut unix).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let _ = r.stop.take().unwrap().send(());
    r.task.await.unwrap();
    assert!(!r.socket.exists());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", r.port))
            .await
            .is_err()
    );
}

/// Reads until the peer closes, failing if that takes longer than `within` (a hang bound:
/// the timeouts under test are a second, `within` is several times that).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: std::time::Duration,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut buf)).await {
        Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => panic!(
            "still open after {within:?}; read so far: {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut() {
    use tokio::io::AsyncWriteExt;
    let bound = std::time::Duration::from_secs(10);
    // Each timeout is tested with the other one out of the way (30 s, beyond the bound).
    let r = serve(ApiConfig {
        port: 0,
        header_read_timeout: std::time::Duration::from_secs(1),
        idle_timeout: std::time::Duration::from_secs(30),
        ..ApiConfig::default()
    })
    .await;
    // Slowloris: half a request head, then nothing. The header timeout closes it.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let text = closed_within(&mut slow, bound).await;
    assert!(!text.contains("200 OK"), "{text}");

    // Idle keep-alive connection after a full answer, from a client that showed the secret
    // (so only the idle timeout applies): the idle timeout closes it.
    let r = serve(ApiConfig {
        port: 0,
        header_read_timeout: std::time::Duration::from_secs(30),
        idle_timeout: std::time::Duration::from_secs(1),
        ..ApiConfig::default()
    })
    .await;
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .unwrap();
    let authed = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer s3cret-0123456789\r\n\r\n",
        r.port
    );
    idle.write_all(authed.as_bytes()).await.unwrap();
    let text = closed_within(&mut idle, bound).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_trickled_head_is_cut_though_bytes_keep_coming_and_keep_alive_survives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = ApiConfig {
        port: 0,
        header_read_timeout: std::time::Duration::from_secs(1),
        idle_timeout: std::time::Duration::from_secs(30),
        ..ApiConfig::default()
    };
    let r = serve(cfg).await;
    // A keep-alive client (one that showed the secret) that waits longer than the header
    // timeout between two complete requests is not cut: the timeout is about a head in
    // progress, not the pause.
    let mut ok = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let authed = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer s3cret-0123456789\r\n\r\n",
        r.port
    );
    for _ in 0..2 {
        ok.write_all(authed.as_bytes()).await.unwrap();
        let n = ok.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    }
    // Slowloris proper, from a client that showed the secret (so the first-request timeout
    // is out of the way): a byte every 100 ms for 10 s, never finishing the second head.
    // Each byte is well within the idle timeout; the head timeout (1 s) must cut it long
    // before the last byte.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .unwrap();
    slow.write_all(authed.as_bytes()).await.unwrap();
    let n = slow.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let (mut rd, mut wr) = slow.into_split();
    let mut closed = Box::pin(async move {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
        sink
    });
    let head = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}",
        "a".repeat(57)
    );
    let mut sent = 0;
    let answer = loop {
        let Some(byte) = head.as_bytes().get(sent) else {
            panic!("the whole trickled head ({sent} bytes over 10 s) went through uncut");
        };
        if wr.write_all(&[*byte]).await.is_err() {
            break Vec::new();
        }
        sent += 1;
        tokio::select! {
            got = &mut closed => break got,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    };
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn connection_cap_queues_extra_clients() {
    use tokio::io::AsyncWriteExt;
    let cfg = ApiConfig {
        port: 0,
        max_connections: 1,
        header_read_timeout: std::time::Duration::from_secs(30),
        ..ApiConfig::default()
    };
    let r = serve(cfg).await;
    // The first shows the secret: a proven connection keeps its slot (an unproven one would
    // give it up to the newcomer, see the next test).
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .unwrap();
    first
        .write_all(
            format!(
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer s3cret-0123456789\r\n\r\n",
                r.port
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Its answer: the request passed the guard (kept alive, so read only what came).
    let mut head = [0u8; 256];
    let n = {
        use tokio::io::AsyncReadExt;
        first.read(&mut head).await.unwrap()
    };
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut second = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .unwrap();
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The second is not served while the first holds the only slot...
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt;
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the connection cap");
    // ...and is served once the first goes away.
    drop(first);
    let text = read_all(&mut second).await;
    assert!(text.contains("200 OK"), "{text}");
}

/// Issue 19: TCP connections (any local uid can open them) and the socket have separate
/// budgets, so TCP clients holding every slot do not delay the socket's owner; and a TCP
/// connection that never shows the secret is cut after the first-request timeout.
#[tokio::test]
async fn a_full_tcp_budget_leaves_the_socket_free_and_unproven_connections_are_cut() {
    use tokio::io::AsyncWriteExt;
    let cfg = ApiConfig {
        port: 0,
        max_connections: 2,
        header_read_timeout: std::time::Duration::from_secs(30),
        ..ApiConfig::default()
    };
    let r = serve(cfg).await;
    // Two idle TCP connections hold TCP's whole budget (once accepted).
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
            .await
            .unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        hogs.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let mut sock = tokio::net::UnixStream::connect(&r.socket).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = tokio::time::timeout(std::time::Duration::from_millis(1500), read_all(&mut sock))
        .await
        .expect("the socket waited for a TCP slot");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let socket_took = started.elapsed();
    // The hogs showed no secret: both are closed after the first-request timeout (2 s, cut
    // within 1.5x), well before the 60 s idle timeout.
    for mut h in hogs {
        let t = tokio::time::timeout(std::time::Duration::from_secs(10), read_all(&mut h)).await;
        assert!(t.is_ok(), "an unproven connection stayed open");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    eprintln!("socket answered in {socket_took:?} with TCP's budget full");
}

#[tokio::test]
async fn non_loopback_bind_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ApiConfig {
        listen: "0.0.0.0".parse().unwrap(),
        port: 0,
        ..ApiConfig::default()
    };
    let err = server::bind(&cfg, &paths(tmp.path())).await.err().unwrap();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
}
