//! What the command-line adapters get from the running agent, and how failures read.
//!
//! Every CLI adapter (git, docker, kubectl, exec) asks the agent's `GET /v1/token/{profile}`
//! and turns its [`TokenAnswer`] into an [`AgentToken`]; every failure becomes one line that names the fix
//! ([`explain`]), so each tool can print it in its own convention.

use crate::client::ClientError;
use crate::protocol::TokenAnswer;
use crate::secret::Secret;
use std::time::SystemTime;

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
    /// Takes the agent's answer: a non-empty token, and `expires_at` in RFC 3339 when set.
    pub fn from_answer(answer: TokenAnswer<'_>) -> Result<Self, TokenShapeError> {
        if answer.access_token.is_empty() {
            return Err(TokenShapeError("the access_token is empty".into()));
        }
        let expires_at = match answer.expires_at.as_deref() {
            None => None,
            Some(s) => Some(
                crate::timefmt::parse_rfc3339(s)
                    .ok_or_else(|| TokenShapeError(format!("expires_at {s:?} is not RFC 3339")))?,
            ),
        };
        Ok(Self {
            access_token: Secret::new(answer.access_token.into_owned()),
            expires_at,
        })
    }
}

pub use crate::client::encode_segment;

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

    fn answer(token: &'static str, expires_at: Option<&str>) -> TokenAnswer<'static> {
        TokenAnswer {
            access_token: token.into(),
            token_type: "Bearer".into(),
            expires_at: expires_at.map(str::to_string),
            expires_in: None,
            scope: None,
            profile: "p".into(),
        }
    }

    #[test]
    fn token_answer_with_or_without_expiry() {
        use std::time::{Duration, UNIX_EPOCH};
        let a = AgentToken::from_answer(answer("t", Some("2026-11-28T23:33:40Z"))).unwrap();
        assert_eq!(a.access_token.expose(), "t");
        assert_eq!(
            a.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_795_908_820))
        );
        let c = AgentToken::from_answer(answer("t", None)).unwrap();
        assert_eq!(c.expires_at, None);
    }

    #[test]
    fn malformed_token_answers_are_errors() {
        assert!(AgentToken::from_answer(answer("", None)).is_err());
        assert!(AgentToken::from_answer(answer("t", Some("soon"))).is_err());
        // Without a token the answer does not even read as one.
        assert!(crate::client::read_answer::<TokenAnswer<'static>>(b"{}").is_err());
    }

    #[test]
    fn paths_encode_the_profile() {
        use crate::client::token_path;
        assert_eq!(token_path("backstage", None), "/v1/token/backstage");
        assert_eq!(
            token_path("a/b c", Some(60)),
            "/v1/token/a%2Fb%20c?min_valid=60"
        );
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
