//! Routing and handlers: [`handle`] is the whole API as one async function; the server
//! first offers each request to [`cache_hit`], which answers the token cache hit (nearly
//! every request) synchronously and hands anything else to [`handle`] untouched.
//!
//! The server calls it for every request the fast path declines; tests call it directly
//! with a built request, no socket needed. Each route allows only the methods it needs (405
//! with `Allow` otherwise). Handlers delegate to the broker, the catalog handle and the AWS service;
//! they hold no state of their own beyond metrics.

use super::error::ApiError;
use super::{ApiState, ConnInfo, guard};
use crate::broker::{BrokerError, TokenRequest};
use crate::protocol;
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

/// What every handler answers with.
pub type ApiResponse = Response<Full<Bytes>>;

/// A matched route with its path parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Metrics,
    Status,
    Token(&'a str),
    TokenInvalidate(&'a str),
    Login(&'a str),
    LoginCallback(&'a str),
    Catalog,
    CatalogDiff,
    CatalogSync,
    Aws(&'a str),
}

impl Route<'_> {
    /// The template used as the metrics label (bounded cardinality).
    fn label(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Metrics => "/metrics",
            Route::Status => "/v1/status",
            Route::Token(_) => TOKEN_ROUTE,
            Route::TokenInvalidate(_) => "/v1/token/{profile}/invalidate",
            Route::Login(_) => "/v1/login/{profile}",
            Route::LoginCallback(_) => "/v1/login/{profile}/callback",
            Route::Catalog => "/v1/catalog",
            Route::CatalogDiff => "/v1/catalog/diff",
            Route::CatalogSync => "/v1/catalog/sync",
            Route::Aws(_) => "/v1/aws/credentials/{name}",
        }
    }

    /// The methods the route serves.
    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Login(_) => &[Method::GET, Method::POST, Method::DELETE],
            Route::CatalogSync | Route::TokenInvalidate(_) | Route::LoginCallback(_) => {
                &[Method::POST]
            }
            _ => &[Method::GET],
        }
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    Some(match path {
        "/healthz" => Route::Healthz,
        "/metrics" => Route::Metrics,
        "/v1/status" => Route::Status,
        "/v1/catalog" => Route::Catalog,
        "/v1/catalog/diff" => Route::CatalogDiff,
        "/v1/catalog/sync" => Route::CatalogSync,
        _ => {
            if let Some(p) = path.strip_prefix("/v1/token/") {
                match p.strip_suffix("/invalidate") {
                    Some(profile) => Route::TokenInvalidate(profile),
                    None => Route::Token(p),
                }
            } else if let Some(p) = path.strip_prefix("/v1/login/") {
                match p.strip_suffix("/callback") {
                    Some(profile) => Route::LoginCallback(profile),
                    None => Route::Login(p),
                }
            } else if let Some(p) = path.strip_prefix("/v1/aws/credentials/") {
                Route::Aws(p)
            } else {
                return None;
            }
        }
    })
}

/// Request ids for log correlation, unique per agent run.
static REQUEST_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Answers one request: guard, route, method, body limit, handler; counts it in metrics.
pub async fn handle<B>(state: &ApiState, conn: &ConnInfo, req: Request<B>) -> ApiResponse
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use tracing::Instrument;
    // One monotonic read serves the cache check and the request's duration.
    let started = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    let matched = route(parts.uri.path());
    let label = matched.map_or("other", |r| r.label());
    // A shared counter bounces between cores on every request: count only when the id is
    // going to be logged.
    let id = if tracing::enabled!(tracing::Level::DEBUG) {
        REQUEST_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    } else {
        0
    };
    // The span names the route template and, for profile routes, the profile; never a header.
    let profile = match matched {
        Some(Route::Token(p) | Route::TokenInvalidate(p) | Route::Login(p) | Route::Aws(p))
            if crate::config::valid_name(p) =>
        {
            p
        }
        _ => "",
    };
    let span = tracing::debug_span!("request", id, route = label, profile, method = %parts.method);
    let answering = answer(state, conn, matched, &parts, body, started);
    // Without a debug subscriber the span is empty: skip wrapping (and moving) the future.
    let answered = if span.is_disabled() {
        answering.await
    } else {
        answering.instrument(span.clone()).await
    };
    let resp = match answered {
        Ok(r) => r,
        Err(e) => {
            span.in_scope(|| tracing::debug!(code = e.code, status = e.status.as_u16(), "refused"));
            error_response(&e)
        }
    };
    let took = started.elapsed();
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = took.as_micros() as u64,
            "answered"
        )
    });
    state
        .metrics
        .record_request(label, resp.status().as_u16(), took);
    resp
}

async fn answer<B>(
    state: &ApiState,
    conn: &ConnInfo,
    matched: Option<Route<'_>>,
    parts: &http::request::Parts,
    body: B,
    started: tokio::time::Instant,
) -> Result<ApiResponse, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if matched == Some(Route::Healthz) {
        guard::check_peer(state, conn)?;
    } else {
        guard::check(state, conn, &parts.headers)?;
    }
    let Some(route) = matched else {
        return Err(ApiError::not_found());
    };
    let method = &parts.method;
    if !route.methods().contains(method) {
        let allow = route
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut resp = error_response(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} {} is not served; allowed: {allow}",
                method,
                route.label()
            ),
        ));
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(ALLOW, v);
        }
        return Ok(resp);
    }
    let query = parts.uri.query();
    // A GET without a body (every cache hit) skips the body reader; hyper knows the body is
    // empty when the request has neither Content-Length nor Transfer-Encoding.
    let body = if *method == Method::GET && body.is_end_stream() {
        Bytes::new()
    } else {
        Box::pin(read_body(state.limits.max_body_bytes, &parts.headers, body)).await?
    };
    // The rare routes are boxed so the hot path's future (token) stays small.
    match route {
        Route::Healthz => Ok(json(StatusCode::OK, &protocol::Health::ok())),
        Route::Metrics => Ok(metrics(state)),
        Route::Status => Ok(json(StatusCode::OK, &status_body(state))),
        Route::Token(p) => token(state, conn, name(p)?, query, started).await,
        Route::TokenInvalidate(p) => Box::pin(invalidate(state, name(p)?, &body)).await,
        Route::Login(p) => Box::pin(login(state, name(p)?, method)).await,
        Route::LoginCallback(p) => Box::pin(login_callback(state, name(p)?, &body)).await,
        Route::Catalog => {
            let c = catalog(state)?;
            Ok(json(StatusCode::OK, &c.status()))
        }
        Route::CatalogDiff => {
            let c = catalog(state)?;
            Ok(json(StatusCode::OK, &Box::pin(c.diff()).await))
        }
        Route::CatalogSync => {
            let c = catalog(state)?;
            Ok(json(StatusCode::ACCEPTED, &Box::pin(c.sync_now()).await))
        }
        Route::Aws(n) => {
            let Some(aws) = &state.aws else {
                return Err(unavailable("AWS credentials are not served by this agent"));
            };
            Box::pin(aws_credentials(state, conn, aws, name(n)?)).await
        }
    }
}

fn name(s: &str) -> Result<&str, ApiError> {
    if crate::config::valid_name(s) {
        Ok(s)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_profile",
            "not a valid profile name (letters, digits, '-', '_', '.')",
        ))
    }
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
}

fn catalog(state: &ApiState) -> Result<&crate::catalog::CatalogHandle, ApiError> {
    state
        .catalog
        .as_ref()
        .ok_or_else(|| unavailable("catalog sync is not running in this agent"))
}

async fn read_body<B>(limit: usize, headers: &http::HeaderMap, body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::body_too_large(limit))
        }
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}

fn parse_min_valid(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let mut min_valid = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "min_valid" => {
                let secs: u64 = v.parse().map_err(|_| {
                    ApiError::bad_request("min_valid must be a whole number of seconds")
                })?;
                if secs > 86_400 {
                    return Err(ApiError::bad_request(
                        "min_valid must be at most 86400 seconds",
                    ));
                }
                min_valid = Some(Duration::from_secs(secs));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}; only min_valid is accepted"
                )));
            }
        }
    }
    Ok(min_valid)
}

async fn token(
    state: &ApiState,
    conn: &ConnInfo,
    profile: &str,
    query: Option<&str>,
    started: tokio::time::Instant,
) -> Result<ApiResponse, ApiError> {
    let min_valid = parse_min_valid(query)?;
    let gate = super::caller::admit(state, conn, profile, TOKEN_ROUTE, None)?;
    let gate = match answer_hit(state, gate, profile, min_valid, started) {
        Ok(resp) => return Ok(resp),
        Err(gate) => gate,
    };
    let now = SystemTime::now();
    match state
        .broker
        .token(profile, TokenRequest { min_valid })
        .await
    {
        Ok(t) => {
            state.metrics.record_token(profile, "ok");
            let (body, fingerprint) =
                state
                    .token_bodies
                    .body_and_fingerprint(&t, now)
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "could not encode the token",
                        )
                    })?;
            state.token_bodies.remember(
                &state.broker,
                &state.metrics,
                &t,
                &body,
                &fingerprint,
                now,
            );
            gate.done(Ok(fingerprint));
            Ok(bytes_response(StatusCode::OK, &JSON_HEADERS, body))
        }
        Err(e) => {
            if !matches!(e, BrokerError::UnknownProfile(_)) {
                state.metrics.record_token(profile, e.code());
                gate.done(Err((e.code().to_string(), e.to_string())));
            }
            Err(e.into())
        }
    }
}

/// The metrics label and audit route of `GET /v1/token/{profile}`.
const TOKEN_ROUTE: &str = "/v1/token/{profile}";

/// Answers an admitted token request from this thread's copy of the broker's cached token,
/// counting and auditing it; the gate comes back when there is no usable copy (or the
/// profile's login can age out: `policy.max_grant_age` is checked by the broker on every
/// request) and the broker must answer.
fn answer_hit<'a>(
    state: &ApiState,
    gate: super::caller::Admitted<'a>,
    profile: &str,
    min_valid: Option<Duration>,
    started: tokio::time::Instant,
) -> Result<ApiResponse, super::caller::Admitted<'a>> {
    if gate.checks_grant_age() {
        return Err(gate);
    }
    let now = SystemTime::now();
    let Some((body, fingerprint)) = state
        .token_bodies
        .local_hit(profile, min_valid, now, started)
    else {
        return Err(gate);
    };
    gate.done_at(Ok(fingerprint), now);
    Ok(bytes_response(StatusCode::OK, &JSON_HEADERS, body))
}

/// The cache hit of `GET /v1/token/{profile}`, answered without a future: `None` hands the
/// request to [`handle`], which answers everything, this case included.
///
/// Nearly every request the API gets is this one, and the full handler's state machine
/// (every route's locals, moved into hyper's dispatcher and polled) cost a tenth of a hit
/// (callgrind). Nothing here has a side effect until the answer is certain: a refused,
/// malformed or missed request goes to [`handle`] untouched, which checks it again and
/// answers, counts and audits it there, once. At debug level a hit logs the same
/// `answered` line in the same `request` span as [`handle`] does.
pub fn cache_hit<B>(state: &ApiState, conn: &ConnInfo, req: &Request<B>) -> Option<ApiResponse>
where
    B: hyper::body::Body,
{
    if req.method() != Method::GET || !req.body().is_end_stream() {
        return None;
    }
    let started = tokio::time::Instant::now();
    let profile = req
        .uri()
        .path()
        .strip_prefix("/v1/token/")
        .filter(|p| crate::config::valid_name(p))?;
    guard::check(state, conn, req.headers()).ok()?;
    let min_valid = parse_min_valid(req.uri().query()).ok()?;
    let gate = super::caller::decide(state, conn, profile, TOKEN_ROUTE, None).ok()?;
    let resp = answer_hit(state, gate, profile, min_valid, started).ok()?;
    let took = started.elapsed();
    state.metrics.record_token_route_ok(took);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let id = REQUEST_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::debug_span!("request", id, route = TOKEN_ROUTE, profile, method = %Method::GET);
        span.in_scope(|| {
            tracing::debug!(
                status = StatusCode::OK.as_u16(),
                micros = took.as_micros() as u64,
                "answered"
            );
        });
    }
    Some(resp)
}

/// `GET /v1/aws/credentials/{name}`: the role's profile policy applies; answers keep the
/// AWS container-credentials shape (`{"code","message"}` on failure), refusals included.
async fn aws_credentials(
    state: &ApiState,
    conn: &ConnInfo,
    aws: &crate::aws::AwsService,
    role: &str,
) -> Result<ApiResponse, ApiError> {
    let Some(profile) = aws.profile_of(role) else {
        let (status, body) = aws.handle(role).await;
        return Ok(json(status, &body));
    };
    let route = "/v1/aws/credentials/{name}";
    let gate = match super::caller::admit(state, conn, profile, route, Some(role)) {
        Ok(g) => g,
        Err(e) => {
            let body = protocol::AwsErrorBody {
                code: e.code.to_string(),
                message: e.message,
            };
            return Ok(json(e.status, &body));
        }
    };
    let (status, body) = aws.handle(role).await;
    if gate.audited() {
        let str_of = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        gate.done(if status.is_success() {
            Ok(crate::secret::Secret::new(str_of("Token"))
                .fingerprint()
                .into())
        } else {
            Err((str_of("code").to_string(), str_of("message").to_string()))
        });
    }
    Ok(json(status, &body))
}

/// `POST /v1/token/{profile}/invalidate` `{"fingerprint": F}`: a server refused the token with
/// fingerprint F (git `erase` after a 401), so the next request for the profile refreshes first.
/// A fingerprint that is not the cached token's changes nothing (an old token was refused).
async fn invalidate(state: &ApiState, profile: &str, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let req: protocol::InvalidateRequest = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("expected a JSON body {\"fingerprint\": \"<12 hex chars>\"}")
    })?;
    let fp = req.fingerprint;
    if fp.len() != 12 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "fingerprint must be the token's 12 hex character fingerprint",
        ));
    }
    state.broker.invalidate(profile, &fp).await?;
    let answer = protocol::Invalidated {
        profile: profile.to_string(),
        fingerprint: fp,
    };
    Ok(json(StatusCode::OK, &answer))
}

async fn login(state: &ApiState, profile: &str, method: &Method) -> Result<ApiResponse, ApiError> {
    if method == Method::POST {
        let s = state.broker.login_start(profile).await?;
        Ok(json(StatusCode::ACCEPTED, &s))
    } else if method == Method::DELETE {
        state.broker.logout(profile).await?;
        Ok(json(StatusCode::OK, &protocol::LoggedOut::new(profile)))
    } else {
        let s = state.broker.login_state(profile)?;
        Ok(json(StatusCode::OK, &s))
    }
}

/// `POST /v1/login/{profile}/callback` `{"url": "..."}`: the address the browser was sent
/// back to, pasted by the user; completes the pending authorization code sign-in.
async fn login_callback(
    state: &ApiState,
    profile: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let p: protocol::CallbackRequest = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("expected {\"url\": \"the redirected address\"}"))?;
    // The address carries a (single-use) code: held as a secret from here on.
    let url = crate::secret::Secret::new(p.url);
    let s = state.broker.login_callback(profile, url.expose()).await?;
    Ok(json(StatusCode::OK, &s))
}

/// The `/v1/status` document (shape documented in `agent/openapi.yaml`).
pub fn status_body(state: &ApiState) -> protocol::Status {
    use protocol::status::{AgentInfo, ApiInfo, CatalogOff, CatalogSection, StoreInfo};
    let (backend, detail) = state.broker.store_backend();
    let catalog = match &state.catalog {
        None => CatalogSection::disabled(),
        Some(c) => {
            let status = c.status();
            // A path that is not UTF-8 cannot be encoded: say so in the catalog part alone
            // rather than failing the whole status. Encoded into a sink: only whether it
            // encodes matters here (the answer encodes it once more).
            match serde_json::to_writer(std::io::sink(), &status) {
                Ok(_) => CatalogSection::Running(Box::new(status)),
                Err(e) => CatalogSection::Off(CatalogOff {
                    state: crate::catalog::EngineState::Error,
                    message: Some(e.to_string()),
                }),
            }
        }
    };
    protocol::Status {
        agent: AgentInfo {
            pid: std::process::id(),
            started_at: crate::timefmt::rfc3339(state.started_at),
            uptime_seconds: state.started.elapsed().as_secs(),
            version: protocol::version::VERSION.to_string(),
        },
        api: ApiInfo {
            tcp_port: state.tcp_port,
            unix_socket: state.socket.as_ref().map(|p| p.display().to_string()),
        },
        catalog,
        profiles: state.broker.status(),
        store: StoreInfo { backend, detail },
    }
}

fn metrics(state: &ApiState) -> ApiResponse {
    let mut text = state.metrics.render(
        &state.broker.status(),
        &state.broker.refresh_stats(),
        state.started.elapsed(),
        SystemTime::now(),
    );
    if let Some(a) = &state.audit {
        crate::audit::writer::render_metrics(a.counters(), &mut text);
    }
    bytes_response(StatusCode::OK, &PROMETHEUS_HEADERS, text.into_bytes())
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> ApiResponse {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(status, &JSON_HEADERS, bytes),
        Err(_) => error_response(&ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not encode the answer",
        )),
    }
}

/// The JSON response of an error.
pub fn error_response(e: &ApiError) -> ApiResponse {
    let mut resp = bytes_response(e.status, &JSON_HEADERS, e.body());
    if e.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

// The header names and values of every answer, made at compile time: `from_static` at run
// time validated each byte and parsed the custom name again on every cache hit.
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const PROMETHEUS_TEXT: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

/// The headers of every JSON answer, built once. An answer clones them (two allocations);
/// building the map and hashing three inserts per answer cost three times that (callgrind).
static JSON_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| answer_headers(APPLICATION_JSON));
/// The headers of `/metrics`.
static PROMETHEUS_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| answer_headers(PROMETHEUS_TEXT));

fn answer_headers(content_type: HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(4);
    h.insert(CONTENT_TYPE, content_type);
    h.insert(
        HeaderName::from_static(crate::protocol::version::HEADER),
        HeaderValue::from_static(crate::protocol::version::VERSION),
    );
    h.insert(CACHE_CONTROL, NO_STORE);
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    h
}

fn bytes_response(status: StatusCode, headers: &HeaderMap, body: impl Into<Bytes>) -> ApiResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers.clone();
    resp
}
