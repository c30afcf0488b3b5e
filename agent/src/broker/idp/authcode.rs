//! The authorization code flow's IdP side: the authorize URL, the code exchange, userinfo.

use super::Idp;
use super::error::IdpError;
use super::token::token_answer;
use super::transport::retry_after;
use super::wire::{AuthorizeRequest, ClientAuth, Grant, Target};
use crate::secret::Secret;

impl Idp {
    /// The authorization endpoint URL for a code flow with PKCE S256 (RFC 6749 section
    /// 4.1.1, RFC 7636).
    pub async fn authorize_url(
        &self,
        client: &ClientAuth,
        target: &Target,
        req: &AuthorizeRequest,
    ) -> Result<url::Url, IdpError> {
        let ep = self.endpoints().await?;
        let Some(mut url) = ep.authorization.clone() else {
            return Err(IdpError::Unsupported(format!(
                "{} has no authorization_endpoint; it cannot do the authorization code flow",
                self.issuer
            )));
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &client.client_id)
                .append_pair("redirect_uri", &req.redirect_uri)
                .append_pair("state", &req.state)
                .append_pair("code_challenge", &req.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if !target.scopes.is_empty() {
                q.append_pair("scope", &target.scopes.join(" "));
            }
        }
        Ok(url)
    }

    /// Redeems an authorization code (RFC 6749 section 4.1.3) with its PKCE verifier.
    pub async fn code_exchange(
        &self,
        client: &ClientAuth,
        code: &Secret,
        verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<Grant, IdpError> {
        let ep = self.endpoints().await?;
        let form: Vec<(&'static str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.expose().to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", verifier.expose().to_string()),
        ];
        let resp = self
            .post_form(&ep.token, client, form)
            .await
            .map_err(|e| IdpError::unavailable(format!("code exchange: {e}")))?;
        token_answer(&resp)
    }

    /// The userinfo endpoint's claims for `access_token` (Backstage wraps them in `claims`).
    pub async fn userinfo(&self, access_token: &Secret) -> Result<serde_json::Value, IdpError> {
        let ep = self.endpoints().await?;
        let Some(url) = ep.userinfo.clone() else {
            return Err(IdpError::Unsupported(format!(
                "{} has no userinfo_endpoint",
                self.issuer
            )));
        };
        let auth = zeroize::Zeroizing::new(format!("Bearer {}", access_token.expose()));
        let req = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, auth.as_str())
            .body(Vec::new())
            .map_err(|e| IdpError::Unsupported(format!("bad userinfo URL: {e}")))?;
        let resp = self
            .transport
            .send(req)
            .await
            .map_err(|e| IdpError::unavailable(format!("userinfo: {e}")))?;
        if !resp.status().is_success() {
            return Err(IdpError::Unavailable {
                detail: format!("userinfo endpoint answered HTTP {}", resp.status().as_u16()),
                retry_after: retry_after(resp.headers()),
            });
        }
        serde_json::from_slice(resp.body())
            .map_err(|_| IdpError::unavailable("userinfo endpoint answered with malformed JSON"))
    }
}
