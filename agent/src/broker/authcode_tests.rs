//! The redirect listener and the pasted address, against a fake IdP: only `GET /callback`
//! is served, every answer says `Cache-Control: no-store` and `Referrer-Policy: no-referrer`,
//! the listener is bound to 127.0.0.1 only and closed once the sign-in completes (by the
//! browser or by a paste) or expires, and a pasted address must be the pending redirect URI.

use super::LOGIN_TTL;
use crate::broker::idp::{AuthorizeRequest, ClientAuth, FlowFuture, Flows, Grant, Target};
use crate::broker::timing::Backoff;
use crate::broker::{Broker, BrokerOptions, LoginPhase, TokenRequest};
use crate::config::Config;
use crate::paths::Paths;
use crate::secret::Secret;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An authorization server that approves at once: the authorize URL carries the request's
/// state (as a real one sends it back), any code is redeemed, userinfo names alice. It keeps
/// the PKCE challenge it was sent and what each redemption carried, so a test can check that
/// the agent redeems the code it got with the verifier of that challenge and the same
/// redirect URI (a real server refuses anything else).
#[derive(Default)]
struct FakeIdp {
    exchanges: AtomicUsize,
    challenge: std::sync::Mutex<Option<String>>,
    /// (code, verifier, redirect_uri) of each redemption.
    redeemed: std::sync::Mutex<Vec<(String, String, String)>>,
}

impl FakeIdp {
    /// Asserts the last redemption carried `code`, the verifier of the challenge sent at
    /// authorize, and `redirect_uri`.
    fn assert_redeemed(&self, code: &str, redirect_uri: &str) {
        let redeemed = self.redeemed.lock().unwrap();
        let (c, verifier, r) = redeemed.last().expect("a redemption");
        assert_eq!(c, code);
        assert_eq!(r, redirect_uri);
        let sent = self.challenge.lock().unwrap().clone().expect("a challenge");
        assert_eq!(
            super::challenge(&Secret::new(verifier.clone())),
            sent,
            "the verifier of the challenge sent at authorize"
        );
    }
}

impl Flows for FakeIdp {
    fn issuer(&self) -> &str {
        "https://idp.invalid"
    }
    fn revoke<'a>(&'a self, _c: &'a ClientAuth, _t: &'a Secret) -> FlowFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn authorize_url<'a>(
        &'a self,
        _c: &'a ClientAuth,
        _t: &'a Target,
        req: &'a AuthorizeRequest,
    ) -> FlowFuture<'a, url::Url> {
        *self.challenge.lock().unwrap() = Some(req.code_challenge.clone());
        Box::pin(async move {
            let mut u = url::Url::parse("https://idp.invalid/v1/authorize").unwrap();
            u.query_pairs_mut()
                .append_pair("redirect_uri", &req.redirect_uri)
                .append_pair("state", &req.state);
            Ok(u)
        })
    }
    fn code_exchange<'a>(
        &'a self,
        _c: &'a ClientAuth,
        code: &'a Secret,
        verifier: &'a Secret,
        redirect_uri: &'a str,
    ) -> FlowFuture<'a, Grant> {
        self.redeemed.lock().unwrap().push((
            code.expose().to_string(),
            verifier.expose().to_string(),
            redirect_uri.to_string(),
        ));
        Box::pin(async move {
            let n = self.exchanges.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Grant {
                access_token: Secret::new(format!("at-{n}")),
                token_type: "Bearer".into(),
                expires_in: Some(Duration::from_secs(3600)),
                refresh_token: Some(Secret::new(format!("rt-{n}"))),
                scope: None,
                identity: None,
            })
        })
    }
    fn userinfo<'a>(&'a self, _t: &'a Secret) -> FlowFuture<'a, serde_json::Value> {
        Box::pin(async {
            Ok(serde_json::json!({"claims": {
                "sub": "user:default/alice",
                "ent": ["user:default/alice", "group:default/team-a"],
            }}))
        })
    }
}

const CONFIG: &str = "[store]\nbackend = \"file\"\n[profiles.p]\ngrant = \"authorization-code\"\nissuer = \"https://idp.invalid\"\nclient_id = \"c\"\nscopes = [\"openid\", \"offline_access\"]\n";

struct World {
    broker: Broker,
    fake: Arc<FakeIdp>,
    _tmp: tempfile::TempDir,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let config: Config = toml::from_str(CONFIG).unwrap();
    let paths = Paths {
        config_files: vec![],
        state_dir: tmp.path().join("state"),
        runtime_dir: tmp.path().join("run"),
    };
    let fake = Arc::new(FakeIdp::default());
    let f: Arc<dyn Flows> = fake.clone();
    let broker = Broker::start_with_flows(
        &config,
        &paths,
        BrokerOptions {
            http_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            background_refresh: false,
        },
        &move |_| Ok(f.clone()),
    )
    .await
    .unwrap();
    World {
        broker,
        fake,
        _tmp: tmp,
    }
}

/// A started sign-in: its redirect URI, port and state.
struct Started {
    redirect_uri: String,
    port: u16,
    state: String,
}

impl Started {
    /// The address the browser is sent back to, with `state`.
    fn redirect(&self, state: &str) -> String {
        format!("{}?code=the-code&state={state}", self.redirect_uri)
    }
}

async fn start(w: &World) -> Started {
    let login = w.broker.login_start("p").await.unwrap();
    let redirect_uri = login.redirect_uri.clone().unwrap();
    let url = url::Url::parse(login.verification_uri.as_deref().unwrap()).unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let port = url::Url::parse(&redirect_uri).unwrap().port().unwrap();
    Started {
        redirect_uri,
        port,
        state,
    }
}

/// An HTTP/1.1 answer: status and headers (names lowercased).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD TARGET` to 127.0.0.1:`port` and reads the whole answer.
async fn request(port: u16, method: &str, target: &str) -> Answer {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status, headers }
}

fn assert_private(a: &Answer, what: &str) {
    assert_eq!(a.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{what}");
}

/// Waits (hang guard: a bounded number of tries) until nothing listens on `port` any more.
/// Probes by binding the port, not by connecting: a connection would wake the listener's
/// accept, which then notices an ended sign-in by itself and hides a listener left open.
async fn wait_closed(port: u16) {
    for _ in 0..1000 {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the redirect listener on port {port} never closed");
}

fn waiting(w: &World) -> bool {
    super::waiting(w.broker.inner.slot("p").unwrap())
}

#[tokio::test]
async fn redirect_listener_serves_only_get_callback_never_cached_nor_referred() {
    let w = world().await;
    let s = start(&w).await;
    let good = s.redirect(&s.state);
    let query = good.split_once('?').map(|(_, q)| q).unwrap();

    let a = request(s.port, "GET", &format!("/other?{query}")).await;
    assert_eq!(a.status, 404, "another path");
    assert_private(&a, "404");
    let a = request(s.port, "GET", &format!("/callback/x?{query}")).await;
    assert_eq!(a.status, 404, "a longer path");
    for method in ["POST", "PUT", "DELETE"] {
        let a = request(s.port, method, &format!("/callback?{query}")).await;
        assert_eq!(a.status, 405, "{method} /callback");
        assert_eq!(a.header("allow"), Some("GET"));
        assert_private(&a, "405");
    }
    let a = request(s.port, "GET", "/callback?code=c&state=forged").await;
    assert_eq!(a.status, 400, "a wrong state");
    assert_private(&a, "400");
    assert_eq!(
        w.fake.exchanges.load(Ordering::SeqCst),
        0,
        "no code redeemed"
    );
    assert!(waiting(&w), "none of these ended the pending sign-in");

    let a = request(s.port, "GET", &format!("/callback?{query}")).await;
    assert_eq!(a.status, 200);
    assert_private(&a, "200");
    assert_eq!(w.fake.exchanges.load(Ordering::SeqCst), 1);
    assert_eq!(
        w.broker.login_state("p").unwrap().state,
        LoginPhase::Complete
    );
    let t = w.broker.token("p", TokenRequest::default()).await.unwrap();
    assert_eq!(t.access_token.expose(), "at-1");
}

#[tokio::test]
async fn redirect_listener_is_bound_to_127_0_0_1_only() {
    let w = world().await;
    let s = start(&w).await;
    assert!(
        s.redirect_uri.starts_with("http://127.0.0.1:"),
        "{}",
        s.redirect_uri
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", s.port))
            .await
            .is_ok()
    );
    // Another loopback address and IPv6 loopback: a socket bound to 127.0.0.1 answers
    // neither (one bound to 0.0.0.0 or :: would, and so would every other interface).
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.2", s.port))
            .await
            .is_err(),
        "reachable on 127.0.0.2"
    );
    assert!(
        tokio::net::TcpStream::connect(("::1", s.port))
            .await
            .is_err(),
        "reachable on ::1"
    );
}

#[tokio::test]
async fn redirect_listener_closes_after_the_sign_in_completes() {
    // By the browser, through the listener.
    let w = world().await;
    let s = start(&w).await;
    let query = s.redirect(&s.state).split_once('?').unwrap().1.to_string();
    assert_eq!(
        request(s.port, "GET", &format!("/callback?{query}"))
            .await
            .status,
        200
    );
    w.fake.assert_redeemed("the-code", &s.redirect_uri);
    wait_closed(s.port).await;

    // By a paste: the listener stops too, also while it waits in `accept` (one request
    // first puts it there; a listener never polled yet would close at its first look).
    let w = world().await;
    let s = start(&w).await;
    assert_eq!(request(s.port, "GET", "/").await.status, 404);
    let done = w
        .broker
        .login_callback("p", &s.redirect(&s.state))
        .await
        .unwrap();
    assert_eq!(done.state, LoginPhase::Complete);
    wait_closed(s.port).await;
}

#[tokio::test(start_paused = true)]
async fn redirect_listener_closes_when_the_sign_in_expires() {
    let w = world().await;
    let s = start(&w).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", s.port))
            .await
            .is_ok()
    );
    tokio::time::sleep(LOGIN_TTL + Duration::from_secs(1)).await;
    wait_closed(s.port).await;
    let e = w
        .broker
        .login_callback("p", &s.redirect(&s.state))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no sign-in is waiting"), "{e}");
    assert_eq!(w.fake.exchanges.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_pasted_address_of_another_scheme_host_port_or_path_is_refused() {
    let w = world().await;
    let s = start(&w).await;
    let q = format!("code=the-code&state={}", s.state);
    let port = s.port;
    let other_port = if port == u16::MAX { port - 1 } else { port + 1 };
    for (pasted, part) in [
        (format!("https://127.0.0.1:{port}/callback?{q}"), "scheme"),
        (format!("http://localhost:{port}/callback?{q}"), "host"),
        (format!("http://127.0.0.2:{port}/callback?{q}"), "host"),
        (
            format!("http://attacker.example:{port}/callback?{q}"),
            "host",
        ),
        (
            format!("http://127.0.0.1:{other_port}/callback?{q}"),
            "port",
        ),
        (format!("http://127.0.0.1/callback?{q}"), "port"),
        (format!("http://127.0.0.1:{port}/other?{q}"), "path"),
        (format!("http://127.0.0.1:{port}/callback/x?{q}"), "path"),
    ] {
        let e = w.broker.login_callback("p", &pasted).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("its {part} differs from {}", s.redirect_uri)),
            "{pasted}: {text}"
        );
        assert!(
            !text.contains(&s.state) && !text.contains("the-code"),
            "the error never echoes the input"
        );
    }
    assert_eq!(
        w.fake.exchanges.load(Ordering::SeqCst),
        0,
        "no code redeemed"
    );
    assert!(waiting(&w), "a wrong address does not cancel the sign-in");

    // The exact redirect completes it (surrounding blanks, as pasted, are fine).
    let done = w
        .broker
        .login_callback("p", &format!("  {}\n", s.redirect(&s.state)))
        .await
        .unwrap();
    assert_eq!(done.state, LoginPhase::Complete);
    assert_eq!(w.fake.exchanges.load(Ordering::SeqCst), 1);
    w.fake.assert_redeemed("the-code", &s.redirect_uri);
}

#[tokio::test]
async fn a_pasted_bare_query_still_completes_the_sign_in() {
    let w = world().await;
    let s = start(&w).await;
    let done = w
        .broker
        .login_callback("p", &format!("?code=the-code&state={}", s.state))
        .await
        .unwrap();
    assert_eq!(done.state, LoginPhase::Complete);
}
