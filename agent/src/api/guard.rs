//! The request guard: small checks run in a fixed order, each refusing with its own code.
//!
//! Order (the first failing check answers): peer uid on the Unix socket, header size and
//! count, `Forwarded`/`X-Forwarded-For`, browser markers (`Origin`, `Sec-Fetch-Site`),
//! `Host` (DNS rebinding), then the per-boot secret. `/healthz` skips all but the peer
//! check: it says only that the agent lives. Methods and body size are checked by the
//! router once the caller is known to be allowed, so strangers learn nothing of our routes.

use super::error::ApiError;
use super::{ApiState, ConnInfo, Transport};
use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::{HeaderMap, StatusCode};

/// Runs every check but the peer one (see [`check_peer`]) on a request's headers.
pub fn check(state: &ApiState, conn: &ConnInfo, headers: &HeaderMap) -> Result<(), ApiError> {
    check_peer(state, conn)?;
    check_header_size(state, headers)?;
    check_forwarded(headers)?;
    check_browser(headers)?;
    check_host(state, conn, headers)?;
    check_secret(state, headers)
}

/// Unix-socket peers must run as our uid (SO_PEERCRED); TCP peers are loopback by bind.
pub fn check_peer(state: &ApiState, conn: &ConnInfo) -> Result<(), ApiError> {
    match conn.transport {
        Transport::Tcp => Ok(()),
        Transport::Unix { peer_uid } if peer_uid == Some(state.own_uid) => Ok(()),
        Transport::Unix { peer_uid } => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_peer",
            match peer_uid {
                Some(uid) => format!(
                    "the socket serves uid {} only; this client runs as uid {uid}",
                    state.own_uid
                ),
                None => "the peer's uid could not be read; refusing".to_string(),
            },
        )),
    }
}

fn check_header_size(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let limits = &state.limits;
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > limits.max_headers || bytes > limits.max_header_bytes {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_too_large",
            format!(
                "request headers over the limit ({} headers / {} bytes allowed)",
                limits.max_headers, limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

fn check_forwarded(headers: &HeaderMap) -> Result<(), ApiError> {
    for name in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
    ] {
        if headers.contains_key(name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forwarded_refused",
                format!(
                    "requests relayed by a proxy ({name} header) are refused; call the agent directly"
                ),
            ));
        }
    }
    Ok(())
}

fn check_browser(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(ORIGIN) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "requests from web pages (Origin header) are refused",
        ));
    }
    for v in headers.get_all("sec-fetch-site") {
        if v.as_bytes() != b"none" {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "requests from web pages (Sec-Fetch-Site other than none) are refused",
            ));
        }
    }
    Ok(())
}

fn check_host(state: &ApiState, conn: &ConnInfo, headers: &HeaderMap) -> Result<(), ApiError> {
    let mut hosts = headers.get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(bad_host("exactly one Host header is required"));
    };
    let host = host.to_str().unwrap_or("").to_ascii_lowercase();
    let unix = matches!(conn.transport, Transport::Unix { .. });
    if unix && host == "localhost" {
        return Ok(());
    }
    if let Some(port) = state.tcp_port {
        let ok = host.rsplit_once(':').is_some_and(|(name, p)| {
            matches!(name, "127.0.0.1" | "localhost" | "[::1]")
                && p.parse::<u16>() == Ok(port)
                && !p.starts_with('0')
        });
        if ok {
            return Ok(());
        }
    }
    Err(bad_host(match state.tcp_port {
        Some(port) => format!(
            "Host must be 127.0.0.1:{port}, localhost:{port} or [::1]:{port} (DNS rebinding guard)"
        ),
        None => "Host must be localhost (DNS rebinding guard)".to_string(),
    }))
}

fn bad_host(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, "bad_host", message)
}

fn check_secret(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (Some(v), None) => v.as_bytes(),
        (None, _) => {
            return Err(ApiError::unauthorized(
                "missing API secret: send Authorization: Bearer <content of the api-secret file>",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::unauthorized("more than one Authorization header"));
        }
    };
    // `Bearer <secret>` from scripts and the CLI; the raw secret from AWS SDKs, which send the
    // content of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE verbatim.
    let presented = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => value,
    };
    if state.secret.ct_eq(presented) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "wrong API secret (the agent makes a new one at every start)",
        ))
    }
}
