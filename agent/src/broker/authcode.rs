//! Authorization code sign-in with PKCE (S256), for Backstage's own authorization server,
//! whose tokens are the user's (the permission framework applies the user's rights), where
//! the IdP path only gives Backstage a service principal.
//!
//! `start` makes a fresh `state` and PKCE verifier, binds the redirect listener on
//! 127.0.0.1 (loopback only, the configured `redirect_port` or any free one) and returns the
//! authorization URL for the user's browser. The browser comes back to
//! `http://127.0.0.1:PORT/callback?code=...&state=...`: either to the listener, or, where it
//! cannot reach it (a browser Codespace), the user pastes that address into `stagepass login`
//! and it reaches [`complete`] through the API. Both paths are the same function: the state
//! must match (constant time), the pending sign-in is taken out before the code is
//! redeemed, so an answer works once; the verifier never leaves the agent.

use super::device::{end_refused, finish, login_error, set_state};
use super::idp::{AuthorizeRequest, Target};
use super::login::{LoginRecord, PendingCode};
use super::slot::Slot;
use super::{BrokerError, LoginPhase, LoginState};
use crate::secret::Secret;
use crate::timefmt::rfc3339;
use base64::Engine;
use sha2::Digest;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long a started sign-in waits for its redirect.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// A browser connection to the listener that sends nothing gives up after this long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The path of the redirect URI.
const CALLBACK_PATH: &str = "/callback";

/// 32 random bytes, base64url without padding (43 characters: a valid PKCE verifier).
fn random_token() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 section 4.2).
fn challenge(verifier: &Secret) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.expose().as_bytes()))
}

fn internal(slot: &Slot, detail: String) -> BrokerError {
    BrokerError::Internal {
        profile: slot.name.clone(),
        detail,
    }
}

fn refused(slot: &Slot, detail: &str) -> BrokerError {
    BrokerError::Unsupported {
        profile: slot.name.clone(),
        detail: format!("sign-in answer refused: {detail}"),
    }
}

/// Starts a sign-in, or returns the one still waiting for its redirect.
pub(super) async fn start(slot: &Arc<Slot>) -> Result<LoginState, BrokerError> {
    {
        let l = slot.login.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = l.as_ref()
            && rec.state.state == LoginPhase::Pending
            && rec.code.is_some()
            && rec.expires > Instant::now()
        {
            return Ok(rec.state.clone());
        }
    }
    let idp = slot
        .idp
        .clone()
        .ok_or_else(|| internal(slot, "no issuer configured".into()))?;
    let client = slot.client()?;
    let port = slot.cfg.redirect_port.unwrap_or(0);
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|e| {
            internal(
                slot,
                format!("cannot listen on 127.0.0.1:{port} for the sign-in redirect: {e}"),
            )
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| internal(slot, format!("redirect listener: {e}")))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
    let state = random_token();
    let verifier = random_token();
    let req = AuthorizeRequest {
        redirect_uri: redirect_uri.clone(),
        state: state.expose().to_string(),
        code_challenge: challenge(&verifier),
    };
    let target = Target {
        scopes: slot.cfg.scopes.clone(),
        audience: None,
    };
    let url = idp
        .authorize_url(&client, &target, &req)
        .await
        .map_err(|e| login_error(slot, e))?;
    let login = LoginState {
        profile: slot.name.clone(),
        state: LoginPhase::Pending,
        verification_uri: Some(url.to_string()),
        verification_uri_complete: None,
        user_code: None,
        expires_at: Some(rfc3339(SystemTime::now() + LOGIN_TTL)),
        message: None,
        redirect_uri: Some(redirect_uri.clone()),
    };
    let expires = Instant::now() + LOGIN_TTL;
    tracing::info!(profile = %slot.name, redirect_uri = %redirect_uri, "authorization code sign-in started");
    // Replacing an older record aborts its listener (LoginRecord's drop).
    *slot.login.lock().unwrap_or_else(|p| p.into_inner()) = Some(LoginRecord {
        state: login.clone(),
        expires,
        task: None,
        code: Some(PendingCode {
            state,
            verifier,
            redirect_uri,
        }),
    });
    let task = tokio::spawn(listen(slot.clone(), listener, expires));
    if let Some(rec) = slot
        .login
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        && rec.code.is_some()
    {
        rec.task = Some(task.abort_handle());
    }
    Ok(login)
}

/// Whether the latest sign-in still waits for its redirect.
fn waiting(slot: &Slot) -> bool {
    let l = slot.login.lock().unwrap_or_else(|p| p.into_inner());
    l.as_ref()
        .is_some_and(|r| r.code.is_some() && r.expires > Instant::now())
}

/// The redirect listener: serves one connection at a time until the sign-in ends or expires.
async fn listen(slot: Arc<Slot>, listener: tokio::net::TcpListener, deadline: Instant) {
    use hyper::service::service_fn;
    while waiting(&slot) {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let svc_slot = slot.clone();
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let slot = svc_slot.clone();
            async move { Ok::<_, std::convert::Infallible>(answer(&slot, &req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        if tokio::time::timeout(CONNECTION_TIMEOUT, conn)
            .await
            .is_err()
        {
            tracing::debug!(profile = %slot.name, "redirect connection timed out");
        }
    }
    tracing::debug!(profile = %slot.name, "redirect listener closed");
}

/// The browser's page after the redirect: plain text, never cached, no referrer sent on.
async fn answer(
    slot: &Arc<Slot>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    let (status, text) = if req.uri().path() != CALLBACK_PATH {
        (404, "not found\n".to_string())
    } else if req.method() != hyper::Method::GET {
        (405, "only GET\n".to_string())
    } else {
        match complete(slot, req.uri().query().unwrap_or_default(), false).await {
            Ok(_) => (
                200,
                format!(
                    "stagepass: signed in (profile {}). You can close this tab.\n",
                    slot.name
                ),
            ),
            Err(e) => (400, format!("stagepass: {e}\n")),
        }
    };
    let mut resp = hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from(text)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        hyper::header::REFERRER_POLICY,
        hyper::header::HeaderValue::from_static("no-referrer"),
    );
    if status == 405 {
        h.insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
    }
    resp
}

/// The input of a redirect split once: the address when it is one (its scheme, host, port
/// and path must then be the pending sign-in's redirect URI's), and its query. Text that is
/// no URL (the listener's query, a pasted bare query, or an address pasted without its
/// `http://`) gives what follows its first `?`, or all of it.
fn split(input: &str) -> (Option<url::Url>, String) {
    let input = input.trim();
    match url::Url::parse(input) {
        Ok(u) => {
            let query = u.query().unwrap_or_default().to_string();
            (Some(u), query)
        }
        Err(_) => {
            let query = input.split_once('?').map_or(input, |(_, q)| q);
            (None, query.to_string())
        }
    }
}

/// Which part of `pasted` differs from the pending `redirect_uri` (`None`: it is that
/// address). Only names the part, never echoes the pasted text.
fn address_mismatch(pasted: &url::Url, redirect_uri: &str) -> Option<&'static str> {
    let Ok(want) = url::Url::parse(redirect_uri) else {
        return Some("address");
    };
    if pasted.scheme() != want.scheme() {
        Some("scheme")
    } else if pasted.host_str() != want.host_str() {
        Some("host")
    } else if pasted.port_or_known_default() != want.port_or_known_default() {
        Some("port")
    } else if pasted.path() != want.path() {
        Some("path")
    } else {
        None
    }
}

/// The parameters of a sign-in redirect that matter here.
#[derive(Default)]
struct Redirect {
    code: Option<Secret>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Redirect {
    /// Reads them from a redirect's query.
    fn parse(query: &str) -> Self {
        let mut r = Self::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "code" => r.code = Some(Secret::new(v.into_owned())),
                "state" => r.state = Some(v.into_owned()),
                "error" => r.error = Some(v.into_owned()),
                "error_description" => r.error_description = Some(v.into_owned()),
                _ => {}
            }
        }
        r
    }
}

/// Ends the pending sign-in with the redirect's parameters (`input`: the query, or the
/// whole address when pasted). `pasted`: the listener is stopped afterwards.
pub(super) async fn complete(
    slot: &Arc<Slot>,
    input: &str,
    pasted: bool,
) -> Result<LoginState, BrokerError> {
    let (address, query) = split(input);
    let r = Redirect::parse(&query);
    let Some(state) = r.state else {
        return Err(refused(slot, "it carries no state"));
    };
    let address = address.filter(|_| pasted);
    let pending = take_pending(slot, &state, address.as_ref(), pasted)?;
    if let Some(err) = r.error {
        let message = end_refused(slot, &err, r.error_description.as_deref());
        return Err(refused(slot, &message));
    }
    let Some(code) = r.code else {
        set_state(
            slot,
            LoginPhase::Failed,
            Some("the redirect carries no code".into()),
        );
        return Err(refused(slot, "it carries no code"));
    };
    let idp = slot
        .idp
        .clone()
        .ok_or_else(|| internal(slot, "no issuer configured".into()))?;
    let client = slot.client()?;
    let g = match idp
        .code_exchange(&client, &code, &pending.verifier, &pending.redirect_uri)
        .await
    {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(profile = %slot.name, error = %e, "code exchange failed");
            set_state(slot, LoginPhase::Failed, Some(e.to_string()));
            return Err(login_error(slot, e));
        }
    };
    let msg = finish(slot, idp.issuer(), &client.client_id, &g).await;
    slot.learn_ownership(&g.access_token).await;
    tracing::info!(profile = %slot.name, "authorization code sign-in complete");
    set_state(slot, LoginPhase::Complete, msg);
    super::device::state(slot)
}

/// Takes the pending sign-in, only if `state` matches it and a pasted `address` is its
/// redirect URI (scheme, host, port, path): neither a wrong state nor a wrong address
/// cancels it. An answer is used once; `pasted` also stops the redirect listener.
fn take_pending(
    slot: &Slot,
    state: &str,
    address: Option<&url::Url>,
    pasted: bool,
) -> Result<PendingCode, BrokerError> {
    let pending = {
        let mut l = slot.login.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rec) = l.as_mut().filter(|r| r.expires > Instant::now()) else {
            return Err(refused(
                slot,
                "no sign-in is waiting (start one with `stagepass login`)",
            ));
        };
        let Some(p) = rec.code.as_ref() else {
            return Err(refused(
                slot,
                "this sign-in already ended; an answer is used once",
            ));
        };
        if let Some(part) = address.and_then(|a| address_mismatch(a, &p.redirect_uri)) {
            tracing::warn!(profile = %slot.name, part, "pasted sign-in address refused");
            return Err(refused(
                slot,
                &format!(
                    "the pasted address is not this sign-in's redirect: its {part} differs from {}",
                    p.redirect_uri
                ),
            ));
        }
        if !p.state.ct_eq(state.as_bytes()) {
            tracing::warn!(profile = %slot.name, "sign-in redirect with a wrong state refused");
            return Err(refused(
                slot,
                "the state does not match the pending sign-in",
            ));
        }
        let p = rec.code.take();
        if pasted && let Some(t) = rec.task.take() {
            t.abort();
        }
        p
    };
    pending.ok_or_else(|| refused(slot, "this sign-in already ended"))
}

#[cfg(test)]
#[path = "authcode_tests.rs"]
mod listener_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        let v = Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(challenge(&v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let r = random_token();
        assert_eq!(r.expose().len(), 43);
        assert_ne!(r.expose(), random_token().expose());
    }

    #[test]
    fn a_pasted_address_or_a_bare_query_gives_the_query() {
        let q = |input: &str| split(input).1;
        let (address, query) = split(" http://127.0.0.1:8055/callback?code=c&state=s \n");
        assert_eq!(query, "code=c&state=s");
        assert_eq!(address.map(|u| u.port()), Some(Some(8055)));
        assert_eq!(q("?code=c&state=s"), "code=c&state=s");
        assert_eq!(q("code=c&state=s"), "code=c&state=s");
        // An address pasted without its `http://` is no URL: its query still reads right
        // (it was read as `127.0.0.1:8055/callback?code=c` = ..., losing the code).
        let (address, query) = split("127.0.0.1:8055/callback?code=c&state=s");
        assert!(address.is_none());
        assert_eq!(query, "code=c&state=s");
    }
}
