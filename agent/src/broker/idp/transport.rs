//! How requests reach the IdP: the [`Transport`] (reqwest, or a script in tests), the status
//! and `Retry-After` each answer leaves behind, and the client-authenticated form POST.

use super::Idp;
use super::wire::ClientAuth;
use oauth2::{HttpRequest, HttpResponse};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// HTTP status and `Retry-After` of the last answer of one request.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Meta {
    pub(super) status: u16,
    pub(super) retry_after: Option<Duration>,
}

/// The HTTP error type handed to `oauth2` (connection refused, timeout, ...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpFailure(String);

/// A boxed future of one HTTP exchange.
pub type HttpFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, HttpFailure>> + Send>>;

/// Sends one HTTP request to the IdP and reads the whole answer. The real one is `reqwest`;
/// the unit tests of the device poll loop script the IdP's answers under paused time.
pub trait Transport: Send + Sync {
    /// Sends `req`.
    fn send(&self, req: HttpRequest) -> HttpFuture;
}

/// The real transport: `reqwest` with the broker's timeout and no redirects.
pub(super) struct ReqwestTransport(pub(super) reqwest::Client);

impl Transport for ReqwestTransport {
    fn send(&self, req: HttpRequest) -> HttpFuture {
        let http = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpFailure(plain_reqwest(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| HttpFailure(plain_reqwest(&e)))?;
            let mut out = http::Response::new(body.to_vec());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}

/// A reqwest error in words, without the URL's query (which never holds secrets here, but
/// the message stays short) and with the kind made plain.
pub(super) fn plain_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed (is it running?)".into()
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the answer".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }
}

/// Parses `Retry-After` (delay seconds or an HTTP date).
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs(
        delta.whole_seconds().clamp(0, 24 * 3600) as u64,
    ))
}

impl Idp {
    pub(super) fn http_fn(
        &self,
        meta: Arc<Mutex<Meta>>,
    ) -> impl Fn(HttpRequest) -> HttpFuture + use<> {
        let transport = self.transport.clone();
        move |req: HttpRequest| {
            let transport = transport.clone();
            let meta = meta.clone();
            Box::pin(async move {
                let resp = transport.send(req).await?;
                if let Ok(mut m) = meta.lock() {
                    *m = Meta {
                        status: resp.status().as_u16(),
                        retry_after: retry_after(resp.headers()),
                    };
                }
                Ok(resp)
            }) as HttpFuture
        }
    }

    /// A form POST to `url` with client authentication: HTTP Basic (RFC 6749 section 2.3.1,
    /// form-urlencoded id and secret) for confidential clients, `client_id` in the body else.
    pub(super) async fn post_form(
        &self,
        url: &url::Url,
        client: &ClientAuth,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<HttpResponse, HttpFailure> {
        let mut req = http::Request::post(url.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        match &client.secret {
            Some(s) => {
                let enc = |v: &str| {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                };
                let pair = zeroize::Zeroizing::new(format!(
                    "{}:{}",
                    enc(&client.client_id),
                    enc(s.expose())
                ));
                let b64 = zeroize::Zeroizing::new(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    pair.as_bytes(),
                ));
                req = req.header(
                    http::header::AUTHORIZATION,
                    format!("Basic {}", b64.as_str()),
                );
            }
            None => form.push(("client_id", client.client_id.clone())),
        }
        let body = {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &form {
                ser.append_pair(k, v);
            }
            zeroize::Zeroizing::new(ser.finish())
        };
        for (_, v) in form.iter_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        let req = req
            .body(body.as_bytes().to_vec())
            .map_err(|e| HttpFailure(format!("cannot build request: {e}")))?;
        self.transport.send(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
