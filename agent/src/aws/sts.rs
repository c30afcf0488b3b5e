//! A minimal AWS STS client: `AssumeRoleWithWebIdentity`, the one call that needs no AWS
//! signature (the OIDC token is the proof), and the parser of its XML answer.
//!
//! The request is a form POST (`Action`, `RoleArn`, `RoleSessionName`, `WebIdentityToken`,
//! `DurationSeconds`, `Version=2011-06-15`); the answer is either
//! `AssumeRoleWithWebIdentityResponse/.../Credentials` or `ErrorResponse/Error/{Code,Message}`.

use crate::secret::Secret;
use std::time::{Duration, SystemTime};

/// STS API version of the query protocol.
pub const STS_VERSION: &str = "2011-06-15";

/// Hang guard on one STS call; SDKs give the container endpoint a few seconds in all.
pub const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest STS answer we read.
const MAX_BODY: usize = 256 * 1024;

/// Temporary AWS credentials.
#[derive(Clone)]
pub struct StsCredentials {
    /// `AccessKeyId` (not secret on its own, but kept private to the answer).
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: Secret,
    /// `SessionToken`.
    pub session_token: Secret,
    /// `Expiration`.
    pub expiration: SystemTime,
}

impl std::fmt::Debug for StsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// Why STS gave no credentials.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StsError {
    /// STS refused (4xx with an AWS error: AccessDenied, InvalidIdentityToken, ...).
    #[error("STS refused AssumeRoleWithWebIdentity: {code}: {message}")]
    Refused {
        /// AWS error code.
        code: String,
        /// AWS message.
        message: String,
    },
    /// STS could not be reached, timed out or failed on its side (5xx).
    #[error("STS unavailable: {0}")]
    Unavailable(String),
    /// The answer is not what the protocol says.
    #[error("STS answer malformed: {0}")]
    Malformed(String),
}

/// One AssumeRoleWithWebIdentity call's parameters (the token travels separately).
#[derive(Debug, Clone)]
pub struct AssumeRequest {
    /// STS endpoint URL.
    pub endpoint: String,
    /// Role to assume.
    pub role_arn: String,
    /// Session name.
    pub session_name: String,
    /// Seconds.
    pub duration_seconds: u32,
}

/// The form body of the request. It carries the token, so it is a [`Secret`].
pub fn request_body(req: &AssumeRequest, web_identity_token: &Secret) -> Secret {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    ser.append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("RoleArn", &req.role_arn)
        .append_pair("RoleSessionName", &req.session_name)
        .append_pair("WebIdentityToken", web_identity_token.expose())
        .append_pair("DurationSeconds", &req.duration_seconds.to_string())
        .append_pair("Version", STS_VERSION);
    Secret::new(ser.finish())
}

/// Calls STS with a shared HTTP client.
#[derive(Clone)]
pub struct StsClient {
    http: reqwest::Client,
}

impl StsClient {
    /// A client with the hang guard; fails only if the TLS backend cannot start.
    pub fn new() -> Result<Self, StsError> {
        let http = reqwest::Client::builder()
            .timeout(STS_TIMEOUT)
            .connect_timeout(STS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StsError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(Self { http })
    }

    /// `AssumeRoleWithWebIdentity` with `token` as the web identity.
    pub async fn assume_role_with_web_identity(
        &self,
        req: &AssumeRequest,
        token: &Secret,
    ) -> Result<StsCredentials, StsError> {
        let body = request_body(req, token);
        let resp = self
            .http
            .post(&req.endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header(reqwest::header::ACCEPT, "text/xml")
            .body(body.expose().to_string())
            .send()
            .await
            // reqwest's error text holds the URL only, never the body.
            .map_err(|e| StsError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| StsError::Unavailable(e.without_url().to_string()))?;
        if bytes.len() > MAX_BODY {
            return Err(StsError::Malformed(format!("{} byte answer", bytes.len())));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| StsError::Malformed("answer is not UTF-8".into()))?;
        if status.is_success() {
            return parse_credentials(text);
        }
        match parse_error(text) {
            Some((code, message)) if status.is_client_error() => {
                Err(StsError::Refused { code, message })
            }
            Some((code, message)) => Err(StsError::Unavailable(format!(
                "HTTP {}: {code}: {message}",
                status.as_u16()
            ))),
            None => Err(StsError::Unavailable(format!(
                "HTTP {} without an AWS error document",
                status.as_u16()
            ))),
        }
    }
}

/// `AssumeRoleWithWebIdentityResponse` as STS writes it (only what we read; the root's
/// name and namespace are not checked, the path below it is).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeResponse {
    assume_role_with_web_identity_result: AssumeResult,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeResult {
    credentials: WireCredentials,
}

/// The credentials as text; the secrets go into [`Secret`] at once.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// `ErrorResponse` as every AWS query API writes it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// Parses a successful answer.
pub fn parse_credentials(xml: &str) -> Result<StsCredentials, StsError> {
    let answer: AssumeResponse = quick_xml::de::from_str(xml).map_err(|e| {
        StsError::Malformed(format!(
            "not an AssumeRoleWithWebIdentityResult with Credentials/AccessKeyId, \
             SecretAccessKey, SessionToken and Expiration: {e}"
        ))
    })?;
    let c = answer.assume_role_with_web_identity_result.credentials;
    let secret_access_key = Secret::new(c.secret_access_key);
    let session_token = Secret::new(c.session_token);
    for (name, empty) in [
        ("AccessKeyId", c.access_key_id.trim().is_empty()),
        (
            "SecretAccessKey",
            secret_access_key.expose().trim().is_empty(),
        ),
        ("SessionToken", session_token.expose().trim().is_empty()),
    ] {
        if empty {
            return Err(StsError::Malformed(format!("Credentials/{name} is empty")));
        }
    }
    let exp_text = c.expiration.trim();
    let expiration = crate::timefmt::parse_rfc3339(exp_text)
        .ok_or_else(|| StsError::Malformed(format!("Expiration {exp_text:?} is not RFC 3339")))?;
    Ok(StsCredentials {
        access_key_id: c.access_key_id.trim().to_string(),
        secret_access_key,
        session_token,
        expiration,
    })
}

/// Parses `ErrorResponse/Error/{Code,Message}`.
pub fn parse_error(xml: &str) -> Option<(String, String)> {
    let e: ErrorResponse = quick_xml::de::from_str(xml).ok()?;
    Some((
        e.error.code.trim().to_string(),
        e.error.message.trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const MOTO: &str = include_str!("testdata/moto_assume_role_with_web_identity.xml");
    const ERR: &str = include_str!("testdata/sts_error_invalid_identity_token.xml");

    #[test]
    fn parses_real_moto_answer() {
        let c = parse_credentials(MOTO).unwrap();
        assert_eq!(c.access_key_id, "ASIARZPUZDIKJPU3CR2N");
        assert_eq!(
            c.secret_access_key.expose(),
            "fPjPo31lQHHw9SgJFvjk66xpRRKxkKDsSjoQ9mq3"
        );
        assert!(
            c.session_token
                .expose()
                .starts_with("FQoGZXIvYXdzEBYaD9O+a6B27")
        );
        assert!(c.session_token.expose().ends_with("EM8Gsi0="));
        assert_eq!(
            crate::timefmt::rfc3339_z(c.expiration),
            "2026-11-29T00:36:00Z"
        );
        assert!(c.expiration > UNIX_EPOCH);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("fPjPo31l") && !dbg.contains("FQoG"), "{dbg}");
    }

    #[test]
    fn parses_error_document_with_entities() {
        assert_eq!(
            parse_error(ERR),
            Some((
                "InvalidIdentityToken".into(),
                "Couldn't retrieve verification key from your identity provider & try again".into()
            ))
        );
        assert_eq!(parse_error(MOTO), None);
        assert_eq!(parse_error("<html>500</html>"), None);
    }

    #[test]
    fn malformed_answers_are_typed() {
        assert!(matches!(
            parse_credentials(ERR),
            Err(StsError::Malformed(m)) if m.contains("AccessKeyId")
        ));
        assert!(matches!(
            parse_credentials("<a><b>"),
            Err(StsError::Malformed(_))
        ));
        let bad_exp = MOTO.replace("2026-11-29T00:36:00.349004Z", "tomorrow");
        assert!(matches!(
            parse_credentials(&bad_exp),
            Err(StsError::Malformed(m)) if m.contains("tomorrow")
        ));
        // The right names at the wrong depth do not count.
        assert!(
            parse_credentials("<Credentials><AccessKeyId>x</AccessKeyId></Credentials>").is_err()
        );
        let empty = MOTO.replace("ASIARZPUZDIKJPU3CR2N", "");
        assert!(matches!(
            parse_credentials(&empty),
            Err(StsError::Malformed(m)) if m.contains("AccessKeyId is empty")
        ));
    }

    #[test]
    fn request_body_exact_bytes() {
        let req = AssumeRequest {
            endpoint: "http://127.0.0.1:1/".into(),
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            session_name: "stagepass".into(),
            duration_seconds: 3600,
        };
        let body = request_body(&req, &Secret::new("a.b+c/d="));
        assert_eq!(
            body.expose(),
            "Action=AssumeRoleWithWebIdentity&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdev\
             &RoleSessionName=stagepass&WebIdentityToken=a.b%2Bc%2Fd%3D&DurationSeconds=3600&Version=2011-06-15"
        );
    }
}
