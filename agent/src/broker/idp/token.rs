//! The token endpoint's grants without a user at the browser: refresh, client credentials,
//! RFC 8693 exchange; revocation; and how a token endpoint's answer is read.

use super::Idp;
use super::error::{IdpError, classify};
use super::transport::{Meta, retry_after};
use super::wire::{ClientAuth, Grant, OidcTokenResponse, Target, grant_from, oauth_client};
use crate::secret::Secret;
use oauth2::basic::BasicErrorResponse;
use oauth2::{AuthType, HttpResponse, RefreshToken, Scope, TokenUrl};
use std::sync::{Arc, Mutex};

impl Idp {
    /// Uses a refresh token (RFC 6749 section 6). The answer may carry a rotated refresh token.
    pub async fn refresh(
        &self,
        client: &ClientAuth,
        refresh_token: &Secret,
        target: &Target,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let c = oauth_client(client)
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(ep.token.clone()));
        let rt = RefreshToken::new(refresh_token.expose().to_string());
        let meta = Arc::new(Mutex::new(Meta::default()));
        let mut req = c.exchange_refresh_token(&rt);
        for (k, v) in audience_params(target) {
            req = req.add_extra_param(k, v);
        }
        let t = req
            .request_async(&self.http_fn(meta.clone()))
            .await
            .map_err(|e| classify(e, &meta))?;
        Ok(grant_from(&t))
    }

    /// Client credentials grant (RFC 6749 section 4.4).
    pub async fn client_credentials(
        &self,
        client: &ClientAuth,
        target: &Target,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let c = oauth_client(client).set_token_uri(TokenUrl::from_url(ep.token.clone()));
        let meta = Arc::new(Mutex::new(Meta::default()));
        let mut req = c
            .exchange_client_credentials()
            .add_scopes(target.scopes.iter().cloned().map(Scope::new));
        for (k, v) in audience_params(target) {
            req = req.add_extra_param(k, v);
        }
        let t = req
            .request_async(&self.http_fn(meta.clone()))
            .await
            .map_err(|e| classify(e, &meta))?;
        Ok(grant_from(&t))
    }

    /// RFC 8693 token exchange of `subject_token` for a token of `target`'s audience.
    pub async fn exchange(
        &self,
        client: &ClientAuth,
        subject_token: &Secret,
        target: &Target,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let mut form: Vec<(&'static str, String)> = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".into(),
            ),
            ("subject_token", subject_token.expose().to_string()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token".into(),
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token".into(),
            ),
        ];
        if let Some(a) = &target.audience {
            // RFC 8693 knows both; `resource` must be an absolute URI.
            form.push(("audience", a.clone()));
            if is_absolute_uri(a) {
                form.push(("resource", a.clone()));
            }
        }
        if !target.scopes.is_empty() {
            form.push(("scope", target.scopes.join(" ")));
        }
        let resp = self
            .post_form(&ep.token, client, form)
            .await
            .map_err(|e| IdpError::unavailable(format!("token exchange: {e}")))?;
        token_answer(&resp)
    }
    /// Revokes a refresh token (RFC 7009) where the IdP supports it; best effort.
    pub async fn revoke(&self, client: &ClientAuth, token: &Secret) -> Result<(), IdpError> {
        let ep = self.endpoints().await?;
        let Some(url) = ep.revocation.clone() else {
            return Ok(());
        };
        let form = vec![
            ("token", token.expose().to_string()),
            ("token_type_hint", "refresh_token".to_string()),
        ];
        let resp = self
            .post_form(&url, client, form)
            .await
            .map_err(|e| IdpError::unavailable(format!("revocation: {e}")))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(IdpError::unavailable(format!(
                "revocation endpoint answered HTTP {}",
                resp.status().as_u16()
            )))
        }
    }
}

/// A token endpoint's answer as a [`Grant`] or a classified error.
pub(super) fn token_answer(resp: &HttpResponse) -> Result<Grant, IdpError> {
    {
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let body = resp.body();
        if status == 429 || status >= 500 {
            return Err(IdpError::Unavailable {
                detail: format!("token endpoint answered HTTP {status}"),
                retry_after: ra,
            });
        }
        if status != 200 {
            return match serde_json::from_slice::<BasicErrorResponse>(body) {
                Ok(e) => Err(IdpError::Rejected {
                    code: e.error().to_string(),
                    description: e.error_description().cloned(),
                }),
                Err(_) => Err(IdpError::unavailable(format!(
                    "token endpoint answered HTTP {status} with a body that is not an OAuth error"
                ))),
            };
        }
        let t: OidcTokenResponse = serde_json::from_slice(body).map_err(|_| {
            IdpError::unavailable("token endpoint answered 200 with a malformed token response")
        })?;
        Ok(grant_from(&t))
    }
}

/// RFC 8707 `resource` when the audience is an absolute URI, else the widespread (non-standard)
/// `audience` parameter: an IdP with resource indicators refuses a `resource` that is not a URI.
pub(super) fn audience_params(target: &Target) -> Vec<(&'static str, String)> {
    match &target.audience {
        Some(a) if is_absolute_uri(a) => vec![("resource", a.clone())],
        Some(a) => vec![("audience", a.clone())],
        None => Vec::new(),
    }
}

pub(super) fn is_absolute_uri(s: &str) -> bool {
    url::Url::parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
