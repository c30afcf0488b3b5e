//! The request guard: small checks run in a fixed order, each refusing with its own code.
//!
//! Order (the first failing check answers): peer uid on the Unix socket, header size and
//! count, `Forwarded`/`X-Forwarded-For`, browser markers (`Origin`, `Sec-Fetch-Site`),
//! `Host` (DNS rebinding), then the per-boot secret. `/healthz` skips all but the peer
//! check: it says only that the agent lives. Methods and body size are checked by the
//! router once the caller is known to be allowed, so strangers learn nothing of our routes.

use super::error::ApiError;
use super::{ApiState, ConnInfo, Transport};
use http::{HeaderMap, StatusCode};

/// Runs every check but the peer one (see [`check_peer`]) on a request's headers.
///
/// One pass over the headers collects what every check needs (sizes, refused names, Host,
/// Authorization); the checks then run in the documented order. Header names are matched
/// as the lower-case strings hyper already parsed, never re-parsed per lookup: this runs on
/// every cache hit.
pub fn check(state: &ApiState, conn: &ConnInfo, headers: &HeaderMap) -> Result<(), ApiError> {
    check_peer(state, conn)?;
    let seen = Seen::scan(headers);
    check_header_size(state, headers.len(), seen.bytes)?;
    if let Some(name) = seen.forwarded {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forwarded_refused",
            format!(
                "requests relayed by a proxy ({name} header) are refused; call the agent directly"
            ),
        ));
    }
    check_browser(&seen)?;
    check_host(state, conn, &seen)?;
    check_secret(state, &seen)
}

/// What one pass over the request headers found.
#[derive(Default)]
struct Seen<'a> {
    bytes: usize,
    forwarded: Option<&'static str>,
    origin: bool,
    cross_site: bool,
    hosts: usize,
    host: Option<&'a [u8]>,
    authorizations: usize,
    authorization: Option<&'a [u8]>,
}

impl<'a> Seen<'a> {
    fn scan(headers: &'a HeaderMap) -> Self {
        let mut seen = Seen::default();
        for (name, value) in headers {
            let name = name.as_str();
            seen.bytes += name.len() + value.len();
            match name {
                "host" => {
                    seen.hosts += 1;
                    seen.host = Some(value.as_bytes());
                }
                "authorization" => {
                    seen.authorizations += 1;
                    seen.authorization = Some(value.as_bytes());
                }
                "forwarded" | "x-forwarded-for" | "x-forwarded-host" | "x-real-ip" => {
                    seen.forwarded = seen.forwarded.or(Some(match name {
                        "forwarded" => "forwarded",
                        "x-forwarded-for" => "x-forwarded-for",
                        "x-forwarded-host" => "x-forwarded-host",
                        _ => "x-real-ip",
                    }));
                }
                "origin" => seen.origin = true,
                "sec-fetch-site" if value.as_bytes() != b"none" => seen.cross_site = true,
                _ => {}
            }
        }
        seen
    }
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

fn check_header_size(state: &ApiState, count: usize, bytes: usize) -> Result<(), ApiError> {
    let limits = &state.limits;
    if count > limits.max_headers || bytes > limits.max_header_bytes {
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

fn check_browser(seen: &Seen<'_>) -> Result<(), ApiError> {
    if seen.origin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "requests from web pages (Origin header) are refused",
        ));
    }
    if seen.cross_site {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "requests from web pages (Sec-Fetch-Site other than none) are refused",
        ));
    }
    Ok(())
}

fn check_host(state: &ApiState, conn: &ConnInfo, seen: &Seen<'_>) -> Result<(), ApiError> {
    let (1, Some(host)) = (seen.hosts, seen.host) else {
        return Err(bad_host("exactly one Host header is required"));
    };
    let unix = matches!(conn.transport, Transport::Unix { .. });
    if unix && host.eq_ignore_ascii_case(b"localhost") {
        return Ok(());
    }
    if let Some(port) = state.tcp_port
        && names_us(host, port)
    {
        return Ok(());
    }
    Err(bad_host(match state.tcp_port {
        Some(port) => format!(
            "Host must be 127.0.0.1:{port}, localhost:{port} or [::1]:{port} (DNS rebinding guard)"
        ),
        None => "Host must be localhost (DNS rebinding guard)".to_string(),
    }))
}

/// Is `host` `127.0.0.1:PORT`, `[::1]:PORT` or `localhost:PORT` (any case), with `port` in
/// plain decimal (no sign, no leading zero)? Read as bytes: this runs on every request.
fn names_us(host: &[u8], port: u16) -> bool {
    let Some(colon) = host.iter().rposition(|&b| b == b':') else {
        return false;
    };
    let (name, digits) = (&host[..colon], &host[colon + 1..]);
    (name == b"127.0.0.1" || name == b"[::1]" || name.eq_ignore_ascii_case(b"localhost"))
        && decimal_port(digits) == Some(port)
}

fn decimal_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || digits[0] == b'0' {
        return None;
    }
    digits
        .iter()
        .try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
        .and_then(|n| u16::try_from(n).ok())
}

fn bad_host(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, "bad_host", message)
}

fn check_secret(state: &ApiState, seen: &Seen<'_>) -> Result<(), ApiError> {
    let value = match (seen.authorizations, seen.authorization) {
        (1, Some(v)) => v,
        (0, _) | (_, None) => {
            return Err(ApiError::unauthorized(
                "missing API secret: send Authorization: Bearer <content of the api-secret file>",
            ));
        }
        _ => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_loopback_names_with_our_port_pass() {
        for ok in [
            "127.0.0.1:7391",
            "localhost:7391",
            "LocalHost:7391",
            "[::1]:7391",
        ] {
            assert!(names_us(ok.as_bytes(), 7391), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:7392",
            "127.0.0.1:07391",
            "127.0.0.1:+7391",
            "127.0.0.1:7391 ",
            "127.0.0.1:73910",
            "127.0.0.1:99999999999",
            "127.0.0.2:7391",
            "evil.example:7391",
            "localhost.evil.example:7391",
            "[::1]",
            "::1:7391",
            ":7391",
            "",
        ] {
            assert!(!names_us(bad.as_bytes(), 7391), "{bad}");
        }
        assert!(names_us(b"localhost:65535", 65535));
        assert!(!names_us(b"localhost:65536", 0));
    }
}
