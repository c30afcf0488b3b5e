//! What the command-line adapters get from the running agent, and how failures read.
//!
//! Every CLI adapter (git, docker, kubectl, exec) asks the agent's `GET /v1/token/{profile}`
//! and turns its JSON into an [`AgentToken`]; every failure becomes one line that names the fix
//! ([`explain`]), so each tool can print it in its own convention.

use crate::client::ClientError;
use crate::secret::Secret;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A token as answered by `GET /v1/token/{profile}`.
pub struct AgentToken {
    /// The access token.
    pub access_token: Secret,
    /// Expiry, when the agent knows it.
    pub expires_at: Option<SystemTime>,
}

/// The agent's answer did not have the documented shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the agent's token answer is malformed: {0}")]
pub struct TokenShapeError(pub String);

impl AgentToken {
    /// Reads `{"access_token", "expires_at", ...}`; `expires_at` may be RFC 3339 or Unix seconds.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, TokenShapeError> {
        let token = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenShapeError("no access_token string".into()))?;
        let expires_at = match v.get("expires_at") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => {
                let secs = n
                    .as_u64()
                    .ok_or_else(|| TokenShapeError("expires_at is not a Unix time".into()))?;
                Some(UNIX_EPOCH + Duration::from_secs(secs))
            }
            Some(serde_json::Value::String(s)) => Some(
                crate::timefmt::parse_rfc3339(s)
                    .ok_or_else(|| TokenShapeError(format!("expires_at {s:?} is not RFC 3339")))?,
            ),
            Some(_) => return Err(TokenShapeError("expires_at has the wrong type".into())),
        };
        Ok(Self {
            access_token: Secret::new(token),
            expires_at,
        })
    }
}

/// The API path of a profile's token (the name percent-encoded as one path segment).
pub fn token_path(profile: &str) -> String {
    format!("/v1/token/{}", encode_segment(profile))
}

/// The API path that tells the agent a token was refused by a server (git `erase` after a 401).
///
/// `POST` with `{"fingerprint": Secret::fingerprint()}`; the agent then refreshes before its
/// next answer for that profile (`Broker::invalidate`).
pub fn invalidate_path(profile: &str) -> String {
    format!("/v1/token/{}/invalidate", encode_segment(profile))
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A profile or role name as one URL path segment (names are already restricted, so this
/// is a second line of defence, not the rule).
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// One line saying what failed for `profile` and the command that fixes it.
pub fn explain(profile: &str, err: &ClientError) -> String {
    match err {
        ClientError::NotRunning(_) | ClientError::VersionMismatch { .. } => err.to_string(),
        ClientError::Api { code, message, .. } => match code.as_str() {
            "login_required" => {
                format!(
                    "profile {profile}: login required ({message}); run `stagepass login {profile}`"
                )
            }
            "forbidden_caller" => {
                format!("profile {profile}: refused by the profile's caller policy: {message}")
            }
            "unknown_profile" => format!(
                "profile {profile} is not configured in stagepass; run `stagepass status` to list profiles"
            ),
            "idp_unavailable" => format!(
                "profile {profile}: the identity provider is unavailable ({message}); run `stagepass doctor`"
            ),
            _ => format!("profile {profile}: {message} ({code}); run `stagepass doctor`"),
        },
        ClientError::Protocol(_) => format!("{err}; run `stagepass doctor`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answer_with_rfc3339_or_epoch() {
        let a = AgentToken::from_json(&serde_json::json!({
            "access_token": "t", "token_type": "Bearer", "expires_at": "2026-11-28T23:33:40Z"
        }))
        .unwrap();
        assert_eq!(a.access_token.expose(), "t");
        assert_eq!(
            a.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_795_908_820))
        );
        let b = AgentToken::from_json(&serde_json::json!({"access_token": "t", "expires_at": 5}))
            .unwrap();
        assert_eq!(b.expires_at, Some(UNIX_EPOCH + Duration::from_secs(5)));
        let c =
            AgentToken::from_json(&serde_json::json!({"access_token": "t", "expires_at": null}))
                .unwrap();
        assert_eq!(c.expires_at, None);
    }

    #[test]
    fn malformed_token_answers_are_errors() {
        assert!(AgentToken::from_json(&serde_json::json!({})).is_err());
        assert!(AgentToken::from_json(&serde_json::json!({"access_token": ""})).is_err());
        assert!(
            AgentToken::from_json(&serde_json::json!({"access_token": "t", "expires_at": "soon"}))
                .is_err()
        );
        assert!(
            AgentToken::from_json(&serde_json::json!({"access_token": "t", "expires_at": -1}))
                .is_err()
        );
    }

    #[test]
    fn paths_encode_the_profile() {
        assert_eq!(token_path("backstage"), "/v1/token/backstage");
        assert_eq!(token_path("a/b c"), "/v1/token/a%2Fb%20c");
        assert_eq!(invalidate_path("git"), "/v1/token/git/invalidate");
    }

    #[test]
    fn explanations_name_the_fix() {
        let login = ClientError::Api {
            status: 401,
            code: "login_required".into(),
            message: "refresh token revoked".into(),
        };
        assert!(explain("git", &login).contains("stagepass login git"));
        let down = ClientError::NotRunning("no socket".into());
        assert!(explain("git", &down).contains("stagepass doctor"));
        let unknown = ClientError::Api {
            status: 404,
            code: "unknown_profile".into(),
            message: "x".into(),
        };
        assert!(explain("nope", &unknown).contains("not configured"));
        let idp = ClientError::Api {
            status: 503,
            code: "idp_unavailable".into(),
            message: "x".into(),
        };
        assert!(explain("p", &idp).contains("stagepass doctor"));
        let forbidden = ClientError::Api {
            status: 403,
            code: "forbidden_caller".into(),
            message: "/usr/bin/curl (pid 1, uid 0) matches none of the rules of profiles.p.policy.allow (git)".into(),
        };
        let line = explain("p", &forbidden);
        assert!(
            line.contains("caller policy") && line.contains("profiles.p.policy.allow"),
            "{line}"
        );
    }
}
