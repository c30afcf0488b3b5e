//! The identity provider, as the broker sees it: OIDC discovery (cached) and the token
//! endpoint flows (device authorization, refresh, client credentials, RFC 8693 exchange),
//! with every failure turned into a typed [`IdpError`] with a plain message.
//!
//! Requests go through the `oauth2` crate with our own HTTP function, so we can see the
//! status and `Retry-After` of every answer (the crate does not expose them). RFC 8693 has
//! no helper in `oauth2`; it is one form POST whose answer is parsed with the crate's types.
//!
//! [`Idp`] is here; each concept has a file: errors (`error`), the values on the wire
//! (`wire`, `identity`), the [`Flows`] trait (`flows`), the HTTP [`Transport`]
//! (`transport`), discovery, the device flow (`device`), the token endpoint's other grants
//! and revocation (`token`), and the authorization code flow (`authcode`). Every public
//! item is re-exported here, so paths stay `broker::idp::X`.

mod authcode;
mod device;
mod discovery;
mod error;
mod flows;
mod identity;
mod token;
mod transport;
mod wire;

pub use error::IdpError;
pub use flows::{FlowFuture, Flows};
pub use identity::Identity;
pub use transport::{HttpFailure, HttpFuture, Transport};
pub use wire::{
    AuthorizeRequest, ClientAuth, DeviceAuthorization, Endpoints, Grant, IdTokenField, Target,
};

use std::sync::Arc;
use std::time::Duration;
use transport::ReqwestTransport;

/// One issuer: HTTP transport, discovery cache.
pub struct Idp {
    issuer: String,
    transport: Arc<dyn Transport>,
    endpoints: tokio::sync::Mutex<Option<Arc<Endpoints>>>,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp").field("issuer", &self.issuer).finish()
    }
}

impl Idp {
    /// A client for `issuer` whose requests each give up after `timeout`.
    pub fn new(issuer: &str, timeout: Duration) -> Result<Self, IdpError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // No pooled connections: a refresh comes every few minutes, by which time the
            // IdP has usually closed an idle keep-alive connection, and reusing one it is
            // closing that very moment fails the refresh with "connection reset" (the soak
            // test saw it ~15 times in 10 minutes, each failing callers for a backoff
            // delay). A token request is not idempotent (rotation), so it is not retried
            // blindly either; a fresh connection per request avoids the race.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| IdpError::Unsupported(format!("cannot build HTTP client: {e}")))?;
        Ok(Self::with_transport(
            issuer,
            Arc::new(ReqwestTransport(http)),
        ))
    }

    /// A client for `issuer` over `transport`.
    pub fn with_transport(issuer: &str, transport: Arc<dyn Transport>) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            transport,
            endpoints: tokio::sync::Mutex::new(None),
        }
    }

    /// The issuer URL, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

#[cfg(test)]
mod tests {
    use super::token::audience_params;
    use super::transport::retry_after;
    use super::*;
    use oauth2::HttpRequest;
    use std::sync::Mutex;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn audience_goes_as_resource_only_when_it_is_a_uri() {
        let t = |a: &str| Target {
            scopes: vec![],
            audience: Some(a.into()),
        };
        assert_eq!(
            audience_params(&t("urn:stagepass:git")),
            vec![("resource", "urn:stagepass:git".to_string())]
        );
        assert_eq!(
            audience_params(&t("sts.amazonaws.com")),
            vec![("audience", "sts.amazonaws.com".to_string())]
        );
    }

    /// A scripted IdP: discovery, device authorization without `interval` (like
    /// oidc-provider), then the token endpoint's answers in order.
    struct Script {
        token_answers: Mutex<std::collections::VecDeque<(u16, &'static str)>>,
        token_calls: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Transport for Script {
        fn send(&self, req: HttpRequest) -> HttpFuture {
            let path = req.uri().path().to_string();
            let (status, body): (u16, String) = match path.as_str() {
                "/.well-known/openid-configuration" => (
                    200,
                    r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth"}"#.into(),
                ),
                "/device/auth" => (
                    200,
                    r#"{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"https://idp.test/device","expires_in":600}"#.into(),
                ),
                _ => {
                    self.token_calls.lock().unwrap().push(tokio::time::Instant::now());
                    let (st, b) = self.token_answers.lock().unwrap().pop_front().unwrap();
                    (st, b.into())
                }
            };
            let ct = if body.starts_with('{') {
                "application/json"
            } else {
                "text/html"
            };
            let mut resp = http::Response::new(body.into_bytes());
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            Box::pin(async move { Ok(resp) })
        }
    }

    /// A discovery document that sends an https issuer's credentials to http endpoints.
    struct Downgrade(&'static str);

    impl Transport for Downgrade {
        fn send(&self, _req: HttpRequest) -> HttpFuture {
            let mut resp = http::Response::new(self.0.as_bytes().to_vec());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                "application/json".parse().unwrap(),
            );
            Box::pin(async move { Ok(resp) })
        }
    }

    /// Issue 19: discovery may not point an https issuer at plain http endpoints.
    #[tokio::test]
    async fn discovery_pointing_https_at_http_is_refused() {
        let client = ClientAuth {
            client_id: "c".into(),
            secret: None,
        };
        for doc in [
            r#"{"issuer":"https://idp.test","token_endpoint":"http://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth"}"#,
            r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"http://127.0.0.1/device/auth"}"#,
        ] {
            let idp = Idp::with_transport("https://idp.test", Arc::new(Downgrade(doc)));
            let err = idp
                .device_authorize(&client, &Target::default())
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("clear text"), "{err}");
        }
        // An all-https document passes discovery (and fails later, on the scripted answer).
        let ok = r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth"}"#;
        let idp = Idp::with_transport("https://idp.test", Arc::new(Downgrade(ok)));
        let err = idp
            .device_authorize(&client, &Target::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("clear text"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn device_poll_defaults_to_5s_and_slow_down_adds_5s_across_transient_errors() {
        let script = Arc::new(Script {
            token_answers: Mutex::new(
                [
                    (400, r#"{"error":"authorization_pending"}"#),
                    (400, r#"{"error":"slow_down"}"#),
                    (503, "<html>down</html>"),
                    (400, r#"{"error":"authorization_pending"}"#),
                    (200, r#"{"access_token":"at","token_type":"Bearer","expires_in":60,"refresh_token":"rt","id_token":"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAiZ3JvdXBzIjogWyJ0ZWFtLWEiLCAib3BzIl0sICJpc3MiOiAiaHR0cHM6Ly9pZHAudGVzdCJ9.sig"}"#),
                ]
                .into_iter()
                .collect(),
            ),
            token_calls: Mutex::new(Vec::new()),
        });
        let idp = Idp::with_transport("https://idp.test", script.clone());
        let client = ClientAuth {
            client_id: "c".into(),
            secret: None,
        };
        let auth = idp
            .device_authorize(&client, &Target::default())
            .await
            .unwrap();
        assert_eq!(auth.interval(), Duration::from_secs(5), "RFC 8628 default");
        assert_eq!(auth.user_code(), "ABCD-EFGH");
        let start = tokio::time::Instant::now();
        let g = idp.device_poll(&client, &auth).await.unwrap();
        assert_eq!(g.access_token.expose(), "at");
        // The ID token's claims are kept (not the token): who signed in, for whoami.
        let who = g.identity.clone().unwrap();
        assert_eq!(who.sub.as_deref(), Some("alice"));
        assert_eq!(who.groups, ["team-a", "ops"]);
        assert_eq!(g.refresh_token.unwrap().expose(), "rt");
        let at: Vec<u64> = script
            .token_calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - start).as_secs())
            .collect();
        // 0: pending -> 5 s; 5: slow_down -> 10 s; 15: 503 -> wait 10 s, restart keeping 10 s;
        // 25: pending -> 10 s; 35: token.
        assert_eq!(at, vec![0, 5, 15, 25, 35]);
    }

    #[tokio::test(start_paused = true)]
    async fn device_poll_reports_denial_and_expiry_as_rejections() {
        for (answer, code) in [
            (r#"{"error":"access_denied"}"#, "access_denied"),
            (r#"{"error":"expired_token"}"#, "expired_token"),
        ] {
            let script = Arc::new(Script {
                token_answers: Mutex::new([(400, answer)].into_iter().collect()),
                token_calls: Mutex::new(Vec::new()),
            });
            let idp = Idp::with_transport("https://idp.test", script);
            let client = ClientAuth {
                client_id: "c".into(),
                secret: None,
            };
            let auth = idp
                .device_authorize(&client, &Target::default())
                .await
                .unwrap();
            let err = idp.device_poll(&client, &auth).await.unwrap_err();
            assert!(
                matches!(&err, IdpError::Rejected { code: c, .. } if c == code),
                "{err:?}"
            );
        }
    }

    #[test]
    fn rejected_message_is_plain() {
        let e = IdpError::Rejected {
            code: "invalid_grant".into(),
            description: Some("grant request is invalid".into()),
        };
        assert!(e.is_invalid_grant());
        assert_eq!(
            e.to_string(),
            "the identity provider refused: invalid_grant (grant request is invalid)"
        );
    }
}
