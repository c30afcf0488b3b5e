//! AWS container credentials: STS AssumeRoleWithWebIdentity with a profile's OIDC token.
//!
//! The API routes `GET /v1/aws/credentials/{name}` to [`AwsService::handle`], which answers
//! the shape every AWS SDK reads from `AWS_CONTAINER_CREDENTIALS_FULL_URI`:
//! `{"AccessKeyId","SecretAccessKey","Token","Expiration"}` (RFC 3339, `Z`), or on failure
//! `{"code","message"}` with a message that names the fix.
//!
//! Credentials are cached per role. SDKs refetch on every call when fewer than 15 minutes are
//! left, so we never serve with less than [`SERVE_MIN`] left, and renew ahead: from a quarter
//! of the lifetime before expiry (but at least [`RENEW_MARGIN`] before `SERVE_MIN` is reached),
//! a request renews first and, if STS fails, still gets the cached credentials. Concurrent
//! requests for one role wait for one STS call.

use crate::broker::{Broker, BrokerError, TokenRequest, TokenSource};
use crate::config::AwsRoleConfig;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::Instrument;

pub mod sts;

use sts::{AssumeRequest, StsClient, StsCredentials, StsError};

/// Never serve credentials with less than this left (AWS SDKs refetch below 15 minutes).
pub const SERVE_MIN: Duration = Duration::from_secs(16 * 60);
/// Renewal starts at least this long before [`SERVE_MIN`] is reached.
pub const RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What to do with cached credentials at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve as they are.
    Fresh,
    /// Renew first; serve these if renewing fails.
    RenewAhead,
    /// Too close to expiry to serve: renew or fail.
    Expired,
}

/// Decides for credentials obtained at `obtained` and expiring at `expiration`.
pub fn freshness(now: SystemTime, obtained: SystemTime, expiration: SystemTime) -> Freshness {
    let left = expiration.duration_since(now).unwrap_or(Duration::ZERO);
    if left <= SERVE_MIN {
        return Freshness::Expired;
    }
    let lifetime = expiration
        .duration_since(obtained)
        .unwrap_or(Duration::ZERO);
    let renew_before = (lifetime / 4).max(SERVE_MIN + RENEW_MARGIN);
    if left <= renew_before {
        Freshness::RenewAhead
    } else {
        Freshness::Fresh
    }
}

struct Cached {
    creds: StsCredentials,
    obtained: SystemTime,
}

struct Role {
    config: AwsRoleConfig,
    cache: tokio::sync::Mutex<Option<Cached>>,
    /// The secret key and session token of the credentials served last and of those
    /// before them, for [`AwsService::known_secrets`]: a plain mutex, read by the
    /// redactor without waiting for an STS call in progress.
    served: std::sync::Mutex<Vec<Secret>>,
}

/// Credentials per role whose secrets [`AwsService::known_secrets`] keeps: the current
/// ones and the ones before (a caller may still hold those).
const KNOWN_GENERATIONS: usize = 2;

impl Role {
    /// Remembers `c`'s secrets, forgetting those older than [`KNOWN_GENERATIONS`].
    fn remember(&self, c: &StsCredentials) {
        let mut v = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if v.contains(&c.session_token) {
            return;
        }
        v.push(c.secret_access_key.clone());
        v.push(c.session_token.clone());
        let excess = v.len().saturating_sub(2 * KNOWN_GENERATIONS);
        v.drain(..excess);
    }
}

struct Inner {
    roles: BTreeMap<String, Role>,
    tokens: Arc<dyn TokenSource>,
    sts: Result<StsClient, StsError>,
}

/// Cached STS credentials per configured role.
#[derive(Clone)]
pub struct AwsService {
    inner: Arc<Inner>,
}

/// A failed answer: HTTP status, stable code, message naming the fix.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    status: http::StatusCode,
    code: &'static str,
    message: String,
}

impl AwsService {
    /// One service for all `[aws.NAME]` roles.
    pub fn new(roles: BTreeMap<String, AwsRoleConfig>, broker: Broker) -> Self {
        Self::with_token_source(roles, Arc::new(broker))
    }

    /// The same with any token source (tests use a fake one).
    pub fn with_token_source(
        roles: BTreeMap<String, AwsRoleConfig>,
        tokens: Arc<dyn TokenSource>,
    ) -> Self {
        let roles = roles
            .into_iter()
            .map(|(name, config)| {
                (
                    name,
                    Role {
                        config,
                        cache: tokio::sync::Mutex::new(None),
                        served: std::sync::Mutex::new(Vec::new()),
                    },
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                roles,
                tokens,
                sts: StsClient::new(),
            }),
        }
    }

    /// The profile whose token role `name` exchanges (for the caller policy and audit).
    pub fn profile_of(&self, name: &str) -> Option<&str> {
        self.inner
            .roles
            .get(name)
            .map(|r| r.config.profile.as_str())
    }

    /// The secrets of the credentials handed out lately (secret access key and session
    /// token, current and previous per role): values no audit record or syslog line may
    /// hold, like the broker's tokens (a caller may pass them on its command line).
    pub fn known_secrets(&self) -> Vec<Secret> {
        self.inner
            .roles
            .values()
            .flat_map(|r| r.served.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Names of the configured roles.
    pub fn roles(&self) -> Vec<String> {
        self.inner.roles.keys().cloned().collect()
    }

    /// The whole HTTP answer for role `name`: status and JSON body (the container-credentials
    /// shape on success; `{"code","message"}` on failure, as AWS SDKs expect).
    pub async fn handle(&self, name: &str) -> (http::StatusCode, serde_json::Value) {
        match self.credentials(name).await {
            Ok(c) => (
                http::StatusCode::OK,
                serde_json::json!({
                    "AccessKeyId": c.access_key_id,
                    "SecretAccessKey": c.secret_access_key.expose(),
                    "Token": c.session_token.expose(),
                    "Expiration": crate::timefmt::rfc3339_z(c.expiration),
                }),
            ),
            Err(f) => (
                f.status,
                serde_json::json!({"code": f.code, "message": f.message}),
            ),
        }
    }

    async fn credentials(&self, name: &str) -> Result<StsCredentials, Failure> {
        let role = self.inner.roles.get(name).ok_or_else(|| Failure {
            status: http::StatusCode::NOT_FOUND,
            code: "unknown_profile",
            message: format!(
                "no AWS role {name:?} configured (configured: {}); add [aws.{name}] to the config",
                if self.inner.roles.is_empty() {
                    "none".to_string()
                } else {
                    self.roles().join(", ")
                }
            ),
        })?;
        let span =
            tracing::info_span!("aws_credentials", role = name, profile = %role.config.profile);
        self.cached_or_assume(name, role).instrument(span).await
    }

    async fn cached_or_assume(&self, name: &str, role: &Role) -> Result<StsCredentials, Failure> {
        // One STS call per role at a time: later callers find the fresh cache.
        let mut cache = role.cache.lock().await;
        let now = SystemTime::now();
        let state = cache
            .as_ref()
            .map(|c| freshness(now, c.obtained, c.creds.expiration));
        if let (Some(Freshness::Fresh), Some(c)) = (state, cache.as_ref()) {
            return Ok(c.creds.clone());
        }
        match self.assume(name, role).await {
            Ok(creds) => {
                let obtained = SystemTime::now();
                if freshness(obtained, obtained, creds.expiration) == Freshness::Expired {
                    return Err(Failure {
                        status: http::StatusCode::BAD_GATEWAY,
                        code: "sts_short_session",
                        message: format!(
                            "STS granted role {name:?} less than {} minutes; raise the role's maximum session duration or aws.{name}.duration_seconds",
                            SERVE_MIN.as_secs() / 60
                        ),
                    });
                }
                tracing::info!(access_key_id = %creds.access_key_id, "assumed AWS role");
                role.remember(&creds);
                *cache = Some(Cached {
                    creds: creds.clone(),
                    obtained,
                });
                Ok(creds)
            }
            Err(f) => match (state, cache.as_ref()) {
                (Some(Freshness::RenewAhead), Some(c)) => {
                    tracing::warn!(code = f.code, reason = %f.message, "renewing AWS credentials failed; serving the cached ones");
                    Ok(c.creds.clone())
                }
                _ => Err(f),
            },
        }
    }

    async fn assume(&self, name: &str, role: &Role) -> Result<StsCredentials, Failure> {
        let profile = role.config.profile.as_str();
        let token: Secret = self
            .inner
            .tokens
            .token(profile, TokenRequest::default())
            .await
            .map_err(|e| broker_failure(name, profile, &e))?
            .access_token
            .clone();
        let sts = self.inner.sts.as_ref().map_err(|e| Failure {
            status: http::StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: e.to_string(),
        })?;
        let req = AssumeRequest {
            endpoint: role.config.endpoint().to_string(),
            role_arn: role.config.role_arn.clone(),
            session_name: role.config.session().to_string(),
            duration_seconds: role.config.duration(),
        };
        tracing::debug!(token = %token.fingerprint(), endpoint = %req.endpoint, "calling STS AssumeRoleWithWebIdentity");
        sts.assume_role_with_web_identity(&req, &token)
            .await
            .map_err(|e| match e {
                StsError::Refused { .. } => Failure {
                    status: http::StatusCode::FORBIDDEN,
                    code: "sts_refused",
                    message: format!(
                        "{e}; check the role's trust policy for profile {profile}'s issuer and audience, then run `stagepass doctor`"
                    ),
                },
                StsError::Unavailable(_) | StsError::Malformed(_) => Failure {
                    status: http::StatusCode::BAD_GATEWAY,
                    code: "sts_unavailable",
                    message: format!("{e}; run `stagepass doctor`"),
                },
            })
    }
}

fn broker_failure(role: &str, profile: &str, e: &BrokerError) -> Failure {
    let (status, message) = match e {
        // 409 as the API answers login_required (401 is the guard's "no secret").
        BrokerError::LoginRequired { reason, .. } => (
            http::StatusCode::CONFLICT,
            format!(
                "AWS role {role:?}: profile {profile} needs a login ({reason}); run `stagepass login {profile}`"
            ),
        ),
        BrokerError::UnknownProfile(_) => (
            http::StatusCode::NOT_FOUND,
            format!(
                "AWS role {role:?} uses profile {profile:?}, which is not configured; fix aws.{role}.profile"
            ),
        ),
        BrokerError::IdpUnavailable { .. } => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("AWS role {role:?}: {e}; run `stagepass doctor`"),
        ),
        BrokerError::Unsupported { .. } | BrokerError::Internal { .. } => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("AWS role {role:?}: {e}; run `stagepass doctor`"),
        ),
    };
    Failure {
        status,
        code: e.code(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BoxFuture, IssuedToken};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T0: Duration = Duration::from_secs(1_800_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    #[test]
    fn freshness_thresholds() {
        // One hour session: fresh until 21 min before expiry (quarter = 15 min < 21 min).
        let (o, e) = (at(0), at(3600));
        assert_eq!(freshness(at(0), o, e), Freshness::Fresh);
        assert_eq!(freshness(at(3600 - 21 * 60 - 1), o, e), Freshness::Fresh);
        assert_eq!(freshness(at(3600 - 21 * 60), o, e), Freshness::RenewAhead);
        assert_eq!(
            freshness(at(3600 - 16 * 60 - 1), o, e),
            Freshness::RenewAhead
        );
        assert_eq!(freshness(at(3600 - 16 * 60), o, e), Freshness::Expired);
        assert_eq!(freshness(at(4000), o, e), Freshness::Expired);
        // Twelve hours: renew from a quarter (3 h) before expiry.
        let e12 = at(43_200);
        assert_eq!(freshness(at(32_399), o, e12), Freshness::Fresh);
        assert_eq!(freshness(at(32_400), o, e12), Freshness::RenewAhead);
    }

    struct FakeTokens {
        calls: AtomicUsize,
        fail: Mutex<Option<BrokerError>>,
    }

    impl TokenSource for FakeTokens {
        fn token<'a>(
            &'a self,
            profile: &'a str,
            _req: TokenRequest,
        ) -> BoxFuture<'a, Result<Arc<IssuedToken>, BrokerError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.lock().unwrap().take();
            Box::pin(async move {
                if let Some(e) = fail {
                    return Err(e);
                }
                Ok(Arc::new(IssuedToken {
                    access_token: Secret::new(format!("oidc-token-{n}")),
                    token_type: "Bearer".into(),
                    expires_at: None,
                    scope: None,
                    profile: profile.to_string(),
                }))
            })
        }
    }

    /// A tiny STS on loopback: records each form body, answers with credentials that
    /// expire `lifetime` after now, or with the configured error.
    struct FakeSts {
        url: String,
        bodies: Arc<Mutex<Vec<String>>>,
        lifetime: Arc<Mutex<Duration>>,
        error: Arc<Mutex<Option<(u16, String)>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeSts {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn fake_sts() -> FakeSts {
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let lifetime = Arc::new(Mutex::new(Duration::from_secs(3600)));
        let error: Arc<Mutex<Option<(u16, String)>>> = Arc::new(Mutex::new(None));
        let (b, l, e) = (bodies.clone(), lifetime.clone(), error.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (b, l, e) = (b.clone(), l.clone(), e.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (b, l, e) = (b.clone(), l.clone(), e.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            b.lock()
                                .unwrap()
                                .push(String::from_utf8(body.to_vec()).unwrap());
                            let err = e.lock().unwrap().clone();
                            let (status, xml) = match err {
                                Some((s, x)) => (s, x),
                                None => {
                                    let exp = SystemTime::now() + *l.lock().unwrap();
                                    let xml = include_str!(
                                        "testdata/moto_assume_role_with_web_identity.xml"
                                    )
                                    .replace(
                                        "2026-11-29T00:36:00.349004Z",
                                        &crate::timefmt::rfc3339_z(exp),
                                    );
                                    (200, xml)
                                }
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(bytes::Bytes::from(xml)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeSts {
            url,
            bodies,
            lifetime,
            error,
            task,
        }
    }

    fn service(sts: &FakeSts, tokens: Arc<FakeTokens>) -> AwsService {
        let mut roles = BTreeMap::new();
        roles.insert(
            "dev".to_string(),
            AwsRoleConfig {
                profile: "aws".into(),
                role_arn: "arn:aws:iam::123456789012:role/dev".into(),
                session_name: None,
                duration_seconds: None,
                sts_endpoint: Some(crate::config::HttpUrl::parse(&sts.url).unwrap()),
            },
        );
        AwsService::with_token_source(roles, tokens)
    }

    fn tokens() -> Arc<FakeTokens> {
        Arc::new(FakeTokens {
            calls: AtomicUsize::new(0),
            fail: Mutex::new(None),
        })
    }

    /// Issue 19: the credentials handed out join the values the audit log and syslog
    /// redact (`ApiState::known_secrets`), like the broker's tokens.
    #[tokio::test]
    async fn credentials_handed_out_are_known_secrets_of_the_api() {
        let sts = fake_sts().await;
        let svc = service(&sts, tokens());
        let tmp = tempfile::tempdir().unwrap();
        let paths = crate::paths::Paths {
            config_files: vec![],
            state_dir: tmp.path().join("state"),
            runtime_dir: tmp.path().join("run"),
        };
        let broker = crate::broker::Broker::start(&crate::config::Config::default(), &paths)
            .await
            .unwrap();
        let state = crate::api::ApiState::new(
            broker,
            Secret::new("api-secret-0123456789"),
            crate::config::ApiConfig::default(),
            None,
            None,
        )
        .with_aws(svc.clone());
        let known = |state: &crate::api::ApiState| -> Vec<String> {
            state
                .known_secrets()
                .iter()
                .map(|s| s.expose().to_string())
                .collect()
        };
        assert_eq!(known(&state), ["api-secret-0123456789"]);
        let (status, body) = svc.handle("dev").await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        let known = known(&state);
        for field in ["SecretAccessKey", "Token"] {
            let v = body[field].as_str().unwrap();
            assert!(known.iter().any(|k| k == v), "{field} is not redacted");
        }
        // The key id is no secret (SDKs log it); it stays readable.
        assert!(
            !known
                .iter()
                .any(|k| k == body["AccessKeyId"].as_str().unwrap())
        );
    }

    #[tokio::test]
    async fn serves_container_shape_and_caches() {
        let sts = fake_sts().await;
        let svc = service(&sts, tokens());
        let (status, body) = svc.handle("dev").await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        assert_eq!(body["AccessKeyId"], "ASIARZPUZDIKJPU3CR2N");
        assert_eq!(
            body["SecretAccessKey"],
            "fPjPo31lQHHw9SgJFvjk66xpRRKxkKDsSjoQ9mq3"
        );
        assert!(body["Token"].as_str().unwrap().starts_with("FQoG"));
        let exp = body["Expiration"].as_str().unwrap();
        assert!(exp.ends_with('Z') && exp.len() == 20, "{exp}");
        for _ in 0..49 {
            assert_eq!(svc.handle("dev").await.0, http::StatusCode::OK);
        }
        let bodies = sts.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 1, "50 requests, one STS call");
        assert!(
            bodies[0].contains("WebIdentityToken=oidc-token-0&"),
            "{}",
            bodies[0]
        );
        assert!(bodies[0].contains("Action=AssumeRoleWithWebIdentity&"));
        assert!(bodies[0].contains("DurationSeconds=3600&Version=2011-06-15"));
    }

    #[tokio::test]
    async fn concurrent_requests_make_one_sts_call() {
        let sts = fake_sts().await;
        let svc = service(&sts, tokens());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let s = svc.clone();
            set.spawn(async move { s.handle("dev").await.0 });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), http::StatusCode::OK);
        }
        assert_eq!(sts.bodies.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn short_sessions_are_refused_not_served() {
        let sts = fake_sts().await;
        *sts.lifetime.lock().unwrap() = Duration::from_secs(10 * 60);
        let svc = service(&sts, tokens());
        let (status, body) = svc.handle("dev").await;
        assert_eq!(status, http::StatusCode::BAD_GATEWAY);
        assert_eq!(body["code"], "sts_short_session");
    }

    #[tokio::test]
    async fn renew_ahead_falls_back_to_cache_when_sts_fails() {
        let sts = fake_sts().await;
        // 20 minutes: servable (> 16) but inside the renewal window (< 21).
        *sts.lifetime.lock().unwrap() = Duration::from_secs(20 * 60);
        let svc = service(&sts, tokens());
        assert_eq!(svc.handle("dev").await.0, http::StatusCode::OK);
        // Every request now tries to renew; with STS failing the cached ones are served.
        *sts.error.lock().unwrap() = Some((500, "<html>down</html>".into()));
        let (status, body) = svc.handle("dev").await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        assert_eq!(sts.bodies.lock().unwrap().len(), 2);
        // STS back: renewed (a new call, with a new OIDC token).
        *sts.error.lock().unwrap() = None;
        assert_eq!(svc.handle("dev").await.0, http::StatusCode::OK);
        let bodies = sts.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 3);
        assert!(bodies[2].contains("WebIdentityToken=oidc-token-2&"));
    }

    #[tokio::test]
    async fn sts_refusal_is_a_json_error_naming_the_fix() {
        let sts = fake_sts().await;
        *sts.error.lock().unwrap() = Some((
            400,
            include_str!("testdata/sts_error_invalid_identity_token.xml").into(),
        ));
        let svc = service(&sts, tokens());
        let (status, body) = svc.handle("dev").await;
        assert_eq!(status, http::StatusCode::FORBIDDEN);
        assert_eq!(body["code"], "sts_refused");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains("InvalidIdentityToken") && msg.contains("stagepass doctor"),
            "{msg}"
        );
        assert_eq!(body.as_object().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn login_required_names_stagepass_login() {
        let sts = fake_sts().await;
        let t = tokens();
        *t.fail.lock().unwrap() = Some(BrokerError::LoginRequired {
            profile: "aws".into(),
            reason: "grant revoked".into(),
        });
        let svc = service(&sts, t);
        let (status, body) = svc.handle("dev").await;
        assert_eq!(status, http::StatusCode::CONFLICT);
        assert_eq!(body["code"], "login_required");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("stagepass login aws")
        );
        assert!(sts.bodies.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unknown_role_and_unreachable_sts() {
        let sts = fake_sts().await;
        let svc = service(&sts, tokens());
        let (status, body) = svc.handle("prod").await;
        assert_eq!(status, http::StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "unknown_profile");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("configured: dev")
        );
        // A port nothing listens on any more.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
        };
        let mut roles = BTreeMap::new();
        roles.insert(
            "dev".to_string(),
            AwsRoleConfig {
                profile: "aws".into(),
                role_arn: "arn:aws:iam::1:role/x".into(),
                session_name: None,
                duration_seconds: None,
                sts_endpoint: Some(crate::config::HttpUrl::parse(&dead).unwrap()),
            },
        );
        let svc = AwsService::with_token_source(roles, tokens());
        let (status, body) = svc.handle("dev").await;
        assert_eq!(status, http::StatusCode::BAD_GATEWAY);
        assert_eq!(body["code"], "sts_unavailable");
    }
}
