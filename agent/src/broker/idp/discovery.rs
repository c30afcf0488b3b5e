//! OIDC discovery: the issuer's endpoints, fetched once, checked and cached.

use super::Idp;
use super::error::IdpError;
use super::transport::retry_after;
use super::wire::Endpoints;
use std::sync::Arc;

impl Idp {
    /// The discovery document's endpoints, fetched once and cached (a failure is not cached).
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, IdpError> {
        let mut cached = self.endpoints.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let req = http::Request::get(&url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| IdpError::Unsupported(format!("bad issuer URL {url}: {e}")))?;
        let resp = self
            .transport
            .send(req)
            .await
            .map_err(|e| IdpError::unavailable(format!("discovery at {url} failed: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(IdpError::Unavailable {
                detail: format!("discovery at {url} answered HTTP {}", status.as_u16()),
                retry_after: retry_after(resp.headers()),
            });
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            issuer: Option<String>,
            token_endpoint: url::Url,
            device_authorization_endpoint: Option<url::Url>,
            revocation_endpoint: Option<url::Url>,
            authorization_endpoint: Option<url::Url>,
            userinfo_endpoint: Option<url::Url>,
        }
        let doc: Doc = serde_json::from_slice(resp.body()).map_err(|e| {
            IdpError::unavailable(format!("discovery at {url} is not a valid document: {e}"))
        })?;
        if let Some(i) = &doc.issuer
            && i.trim_end_matches('/') != self.issuer
        {
            return Err(IdpError::Unsupported(format!(
                "discovery at {url} names issuer {i}, not {}",
                self.issuer
            )));
        }
        // The client secret and tokens go to these endpoints (an access token to
        // userinfo, the user's sign-in to authorization): an https issuer may not send
        // them to plain http, and nothing goes over plain http off this machine.
        let https_issuer = self.issuer.starts_with("https://");
        for (name, ep) in [
            ("token_endpoint", Some(&doc.token_endpoint)),
            (
                "device_authorization_endpoint",
                doc.device_authorization_endpoint.as_ref(),
            ),
            ("revocation_endpoint", doc.revocation_endpoint.as_ref()),
            ("userinfo_endpoint", doc.userinfo_endpoint.as_ref()),
            (
                "authorization_endpoint",
                doc.authorization_endpoint.as_ref(),
            ),
        ] {
            if let Some(ep) = ep
                && (!crate::cleartext::allows(ep) || (https_issuer && ep.scheme() != "https"))
            {
                return Err(IdpError::Unsupported(format!(
                    "discovery at {url} gives {name} {ep}, which is not https: credentials would travel in clear text; refused"
                )));
            }
        }
        let e = Arc::new(Endpoints {
            token: doc.token_endpoint,
            device: doc.device_authorization_endpoint,
            revocation: doc.revocation_endpoint,
            authorization: doc.authorization_endpoint,
            userinfo: doc.userinfo_endpoint,
        });
        *cached = Some(e.clone());
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::idp::{ClientAuth, HttpFuture, Target, Transport};
    use oauth2::HttpRequest;

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

    /// Issue 19: discovery may not point an https issuer at plain http endpoints, for any
    /// endpoint a credential goes to (token, device, userinfo, authorization).
    #[tokio::test]
    async fn discovery_pointing_https_at_http_is_refused() {
        let client = ClientAuth {
            client_id: "c".into(),
            secret: None,
        };
        for doc in [
            r#"{"issuer":"https://idp.test","token_endpoint":"http://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth"}"#,
            r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"http://127.0.0.1/device/auth"}"#,
            r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","userinfo_endpoint":"http://idp.test/userinfo"}"#,
            r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","authorization_endpoint":"http://idp.test/authorize"}"#,
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
        let ok = r#"{"issuer":"https://idp.test","token_endpoint":"https://idp.test/token","device_authorization_endpoint":"https://idp.test/device/auth","userinfo_endpoint":"https://idp.test/userinfo","authorization_endpoint":"https://idp.test/authorize"}"#;
        let idp = Idp::with_transport("https://idp.test", Arc::new(Downgrade(ok)));
        let err = idp
            .device_authorize(&client, &Target::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("clear text"), "{err}");
    }
}
