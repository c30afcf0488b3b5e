//! Why a request to the IdP failed, and how the `oauth2` crate's errors are sorted into
//! those reasons (retry later, refused, unsupported).

use super::transport::{HttpFailure, Meta};
use oauth2::{ErrorResponse, RequestTokenError};
use std::sync::Mutex;
use std::time::Duration;

/// Why a request to the IdP failed. Messages are for people; no token ever appears.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdpError {
    /// The IdP answered with an OAuth error (`invalid_grant`, `access_denied`, ...).
    #[error("the identity provider refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        /// The OAuth `error` code.
        code: String,
        /// The IdP's `error_description`, if any.
        description: Option<String>,
    },
    /// Unreachable, too slow, 5xx, 429 or an answer we cannot parse: worth retrying later.
    #[error("{detail}")]
    Unavailable {
        /// What happened.
        detail: String,
        /// The IdP's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The IdP cannot do what the profile asks (no device endpoint, bad URL).
    #[error("{0}")]
    Unsupported(String),
}

impl IdpError {
    pub(super) fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// True for `invalid_grant`: the login is gone and only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Rejected { code, .. } if code == "invalid_grant")
    }
}

/// Maps an `oauth2` error of a token request to an [`IdpError`], using the status we saw.
pub(super) fn classify<TE: ErrorResponse + 'static>(
    e: RequestTokenError<HttpFailure, TE>,
    meta: &Mutex<Meta>,
) -> IdpError {
    classify_any(e, meta)
}

pub(super) fn classify_any<TE: ErrorResponse + 'static>(
    e: RequestTokenError<HttpFailure, TE>,
    meta: &Mutex<Meta>,
) -> IdpError {
    let m = meta.lock().map(|m| *m).unwrap_or_default();
    if m.status == 429 || m.status >= 500 {
        return IdpError::Unavailable {
            detail: if m.status == 429 {
                "the identity provider is rate limiting (HTTP 429)".into()
            } else {
                format!("the identity provider failed (HTTP {})", m.status)
            },
            retry_after: m.retry_after,
        };
    }
    match e {
        RequestTokenError::ServerResponse(err) => {
            // The error type's Display is its code (`invalid_grant`, ...).
            let code = serde_json::to_value(&err)
                .ok()
                .and_then(|v| v.get("error").and_then(|c| c.as_str()).map(String::from))
                .unwrap_or_else(|| "unknown_error".into());
            let description = serde_json::to_value(&err).ok().and_then(|v| {
                v.get("error_description")
                    .and_then(|c| c.as_str())
                    .map(String::from)
            });
            IdpError::Rejected { code, description }
        }
        RequestTokenError::Request(f) => {
            IdpError::unavailable(format!("cannot reach the identity provider: {f}"))
        }
        // Never include the body: a half-valid answer may hold a token.
        RequestTokenError::Parse(_, _) => IdpError::unavailable(format!(
            "the identity provider sent a malformed answer (HTTP {})",
            m.status
        )),
        RequestTokenError::Other(s) => IdpError::unavailable(format!(
            "unexpected answer from the identity provider (HTTP {}): {s}",
            m.status
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
