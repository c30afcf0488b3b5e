//! The HTTP request path (`api::routes::handle`, guard included) under arbitrary methods,
//! paths, queries and headers: never a panic, always a 2xx or a JSON error whose code is one
//! of the documented ones.

use super::config;
use crate::api::{ApiState, ConnInfo, Transport, routes};
use crate::broker::Broker;
use crate::config::{ApiConfig, Config};
use crate::protocol::ErrorBody;
use crate::secret::Secret;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const PORT: u16 = 48123;
const UID: u32 = 4242;
const SECRET: &str = "s3cret-0123456789";

/// Every error code the API may answer with (see `agent/openapi.yaml`).
const KNOWN_CODES: &[&str] = &[
    "bad_host",
    "bad_request",
    "forbidden_origin",
    "forbidden_peer",
    "forwarded_refused",
    "idp_unavailable",
    "internal",
    "login_required",
    "method_not_allowed",
    "not_found",
    "request_too_large",
    "unauthorized",
    "unavailable",
    "unknown_profile",
    "unsupported",
];

#[derive(Debug, Clone)]
struct Input {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    unix: Option<Option<u32>>,
}

fn path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just("/healthz"),
        Just("/metrics"),
        Just("/v1/status"),
        Just("/v1/token/"),
        Just("/v1/login/"),
        Just("/v1/catalog"),
        Just("/v1/catalog/diff"),
        Just("/v1/catalog/sync"),
        Just("/v1/aws/credentials/"),
        Just("/"),
        Just("//"),
    ];
    // Characters a URI path may hold, so the request builds and reaches `handle`.
    let tail = prop_oneof![
        "[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,24}",
        Just("../../etc/passwd".to_string()),
        Just("%2e%2e/%00".to_string()),
        Just("work/invalidate".to_string()),
        Just("work".to_string()),
        Just(".hidden".to_string()),
    ];
    (prefix, tail).prop_map(|(p, t)| format!("{p}{t}"))
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        Just("host".to_string()),
        Just("origin".to_string()),
        Just("referer".to_string()),
        Just("authorization".to_string()),
        Just("content-length".to_string()),
        Just("transfer-encoding".to_string()),
        Just("forwarded".to_string()),
        Just("x-forwarded-for".to_string()),
        Just("x-forwarded-host".to_string()),
        Just("sec-fetch-site".to_string()),
        Just("sec-fetch-mode".to_string()),
        Just("content-type".to_string()),
        "[a-z0-9-]{1,20}",
    ];
    let value = prop_oneof![
        Just(format!("127.0.0.1:{PORT}").into_bytes()),
        Just(format!("localhost:{PORT}").into_bytes()),
        Just(format!("Bearer {SECRET}").into_bytes()),
        Just(SECRET.as_bytes().to_vec()),
        Just(b"null".to_vec()),
        Just(b"https://evil.example".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"cross-site".to_vec()),
        Just(b"99999999999999999999".to_vec()),
        Just(b"[::1]:48123".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    (name, value)
}

fn input() -> impl Strategy<Value = Input> {
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("DELETE".to_string()),
        Just("PUT".to_string()),
        Just("OPTIONS".to_string()),
        Just("HEAD".to_string()),
        "[A-Z]{1,10}",
    ];
    let query = proptest::option::of("[A-Za-z0-9._~%!$&'()*+,;=:@/?=-]{0,40}");
    let unix = proptest::option::of(proptest::option::of(prop_oneof![Just(UID), any::<u32>()]));
    (
        method,
        path(),
        query,
        proptest::collection::vec(header(), 0..8),
        proptest::collection::vec(any::<u8>(), 0..64),
        unix,
    )
        .prop_map(|(method, path, query, headers, body, unix)| Input {
            method,
            path,
            query,
            headers,
            body,
            unix,
        })
}

/// Builds the request, or `None` when `http` itself refuses the parts (hyper would too,
/// before `handle` is ever called).
fn build(i: &Input) -> Option<Request<Full<Bytes>>> {
    let uri = match &i.query {
        Some(q) => format!("{}?{q}", i.path),
        None => i.path.clone(),
    };
    let mut b = Request::builder().method(i.method.as_str()).uri(uri);
    for (n, v) in &i.headers {
        let name = http::HeaderName::from_bytes(n.as_bytes()).ok()?;
        let value = http::HeaderValue::from_bytes(v).ok()?;
        b = b.header(name, value);
    }
    b.body(Full::new(Bytes::from(i.body.clone()))).ok()
}

async fn state(dir: &std::path::Path) -> ApiState {
    let paths = crate::paths::Paths {
        config_files: vec![],
        state_dir: dir.join("state"),
        runtime_dir: dir.join("run"),
    };
    let broker = Broker::start(&Config::default(), &paths).await.unwrap();
    let mut s = ApiState::new(
        broker,
        Secret::new(SECRET),
        ApiConfig::default(),
        Some(PORT),
        None,
    );
    s.own_uid = UID;
    s
}

/// Sends one request through `handle` and checks the answer's shape.
async fn check(s: &ApiState, i: &Input) -> Result<(), TestCaseError> {
    let Some(req) = build(i) else {
        return Ok(());
    };
    let conn = ConnInfo {
        transport: match i.unix {
            None => Transport::Tcp,
            Some(peer_uid) => Transport::Unix { peer_uid },
        },
        peer: None,
    };
    let resp = routes::handle(s, &conn, req).await;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| TestCaseError::fail(format!("body: {e}")))?
        .to_bytes();
    if status.is_success() {
        return Ok(());
    }
    let err: ErrorBody = serde_json::from_slice(&body).map_err(|e| {
        TestCaseError::fail(format!(
            "{status} with a non-JSON body {:?} ({e}) for {i:?}",
            String::from_utf8_lossy(&body)
        ))
    })?;
    prop_assert!(
        KNOWN_CODES.contains(&err.error.as_str()),
        "unknown code {:?} ({status}) for {i:?}",
        err.error
    );
    prop_assert!(!err.message.contains(SECRET), "secret echoed for {i:?}");
    Ok(())
}

#[test]
fn any_request_gets_a_2xx_or_a_known_json_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let s = rt.block_on(state(tmp.path()));
    let mut runner = TestRunner::new(config(1000));
    let result = runner.run(&input(), |i| rt.block_on(check(&s, &i)));
    assert!(result.is_ok(), "{result:?}");
}
