//! The device authorization flow (RFC 8628): the start and the poll loop.

use super::Idp;
use super::error::{IdpError, classify, classify_any};
use super::token::audience_params;
use super::transport::Meta;
use super::wire::{ClientAuth, DeviceAuthorization, Grant, Target, grant_from, oauth_client};
use oauth2::{
    AuthType, DeviceAuthorizationUrl, DeviceCodeErrorResponseType, RequestTokenError, Scope,
    StandardDeviceAuthorizationResponse, TokenUrl,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl Idp {
    /// Starts a device authorization (RFC 8628 section 3.1).
    pub async fn device_authorize(
        &self,
        client: &ClientAuth,
        target: &Target,
    ) -> Result<DeviceAuthorization, IdpError> {
        let ep = self.endpoints().await?;
        let Some(device) = ep.device.clone() else {
            return Err(IdpError::Unsupported(format!(
                "{} has no device_authorization_endpoint; this IdP cannot do the device flow",
                self.issuer
            )));
        };
        let c = oauth_client(client)
            .set_auth_type(AuthType::RequestBody)
            .set_device_authorization_url(DeviceAuthorizationUrl::from_url(device));
        let meta = Arc::new(Mutex::new(Meta::default()));
        let mut req = c
            .exchange_device_code()
            .add_scopes(target.scopes.iter().cloned().map(Scope::new));
        for (k, v) in audience_params(target) {
            req = req.add_extra_param(k, v);
        }
        let resp: StandardDeviceAuthorizationResponse = req
            .request_async(&self.http_fn(meta.clone()))
            .await
            .map_err(|e| classify(e, &meta))?;
        Ok(DeviceAuthorization { response: resp })
    }

    /// Polls the token endpoint until the user approves, denies, or the code expires.
    ///
    /// Uses the `oauth2` poll loop (interval default 5 s, `slow_down` adds 5 s); transient
    /// failures (IdP down, 5xx, garbage) restart the loop after the current interval instead of
    /// ending the login.
    pub async fn device_poll(
        &self,
        client: &ClientAuth,
        auth: &DeviceAuthorization,
    ) -> Result<Grant, IdpError> {
        let deadline = tokio::time::Instant::now() + auth.expires_in();
        let interval = Arc::new(Mutex::new(auth.interval()));
        let mut current = auth.response.clone();
        loop {
            // A restart after a transient failure keeps the interval slow_down raised
            // (RFC 8628 section 3.5): the oauth2 loop starts from the response's interval.
            let now_interval = interval.lock().map(|i| *i).unwrap_or(current.interval());
            if now_interval != current.interval() {
                current = with_interval(&current, now_interval).unwrap_or(current);
            }
            let ep = match self.endpoints().await {
                Ok(ep) => ep,
                Err(e) => {
                    sleep_or_expire(&interval, deadline, &e).await?;
                    continue;
                }
            };
            let c = oauth_client(client)
                .set_auth_type(AuthType::RequestBody)
                .set_token_uri(TokenUrl::from_url(ep.token.clone()));
            let meta = Arc::new(Mutex::new(Meta::default()));
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let seen = interval.clone();
            let res = c
                .exchange_device_access_token(&current)
                .request_async(
                    &self.http_fn(meta.clone()),
                    move |d: Duration| {
                        if let Ok(mut i) = seen.lock() {
                            *i = d;
                        }
                        tokio::time::sleep(d)
                    },
                    Some(remaining),
                )
                .await;
            match res {
                Ok(t) => return Ok(grant_from(&t)),
                Err(RequestTokenError::ServerResponse(e)) => {
                    let code = match e.error() {
                        DeviceCodeErrorResponseType::AccessDenied => "access_denied".to_string(),
                        DeviceCodeErrorResponseType::ExpiredToken => "expired_token".to_string(),
                        other => other.to_string(),
                    };
                    let status = meta.lock().map(|m| m.status).unwrap_or(0);
                    if status == 429 || status >= 500 {
                        let err =
                            IdpError::unavailable(format!("token endpoint answered HTTP {status}"));
                        sleep_or_expire(&interval, deadline, &err).await?;
                        continue;
                    }
                    return Err(IdpError::Rejected {
                        code,
                        description: e.error_description().cloned(),
                    });
                }
                Err(other) => {
                    let err = classify_any(other, &meta);
                    if matches!(err, IdpError::Rejected { .. } | IdpError::Unsupported(_)) {
                        return Err(err);
                    }
                    sleep_or_expire(&interval, deadline, &err).await?;
                }
            }
        }
    }
}

/// The same device authorization with another poll interval (the type has no setter).
pub(super) fn with_interval(
    r: &StandardDeviceAuthorizationResponse,
    interval: Duration,
) -> Option<StandardDeviceAuthorizationResponse> {
    let mut v = serde_json::to_value(r).ok()?;
    v.as_object_mut()?
        .insert("interval".into(), serde_json::json!(interval.as_secs()));
    serde_json::from_value(v).ok()
}

pub(super) async fn sleep_or_expire(
    interval: &Mutex<Duration>,
    deadline: tokio::time::Instant,
    why: &IdpError,
) -> Result<(), IdpError> {
    let d = interval
        .lock()
        .map(|i| *i)
        .unwrap_or(Duration::from_secs(5));
    let d = match why {
        IdpError::Unavailable {
            retry_after: Some(r),
            ..
        } => d.max(*r),
        _ => d,
    };
    if tokio::time::Instant::now() + d >= deadline {
        return Err(IdpError::Rejected {
            code: "expired_token".into(),
            description: Some(format!(
                "the device code expired while the IdP was failing: {why}"
            )),
        });
    }
    tracing::debug!(error = %why, "device poll failed; retrying");
    tokio::time::sleep(d).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::idp::{HttpFuture, Transport};
    use oauth2::HttpRequest;

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
}
