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
