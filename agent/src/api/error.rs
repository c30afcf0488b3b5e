//! API errors: a stable machine code, a human message and the HTTP status that goes with them.
//!
//! Every refusal the API makes, from the guard or a handler, is one [`ApiError`]. The body
//! is always `{"error": CODE, "message": TEXT}`, built with serde. Messages never carry a
//! secret: they are written here or come from [`BrokerError`]'s `Display`, which holds none.

use crate::broker::BrokerError;
use crate::protocol::ErrorBody;
use http::StatusCode;

/// One refusal or failure, ready to be turned into a JSON response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code clients switch on (documented in `agent/openapi.yaml`).
    pub code: &'static str,
    /// What happened and, where useful, what to do.
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401 `unauthorized`: the per-boot secret is missing or wrong.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`: no such route.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// 400 `bad_request`: a malformed parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 413 `request_too_large`: the body is over the limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("request body over {limit} bytes"),
        )
    }

    /// The JSON body bytes.
    pub fn body(&self) -> Vec<u8> {
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message.clone(),
        };
        // Serializing two strings cannot fail; fall back to a fixed body all the same.
        serde_json::to_vec(&body)
            .unwrap_or_else(|_| br#"{"error":"internal","message":""}"#.to_vec())
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        let status = match &e {
            BrokerError::UnknownProfile(_) => StatusCode::NOT_FOUND,
            BrokerError::LoginRequired { .. } => StatusCode::CONFLICT,
            BrokerError::IdpUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            BrokerError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            BrokerError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_code_and_message() {
        let e = ApiError::unauthorized("missing \"secret\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"], "unauthorized");
        assert_eq!(v["message"], "missing \"secret\"");
    }

    #[test]
    fn broker_errors_map_to_stable_codes_and_statuses() {
        let e = ApiError::from(BrokerError::LoginRequired {
            profile: "p".into(),
            reason: "invalid_grant".into(),
        });
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "login_required"));
        let e = ApiError::from(BrokerError::UnknownProfile("x".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "unknown_profile")
        );
        let e = ApiError::from(BrokerError::IdpUnavailable {
            profile: "p".into(),
            detail: "timeout".into(),
        });
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
