//! kubectl's exec credential plugin protocol (`client.authentication.k8s.io/v1`).
//!
//! kubectl runs `stagepass kube-credential PROFILE` (configured under `users[].user.exec` of a
//! kubeconfig), passing its request in `KUBERNETES_EXEC_INFO`, and reads an `ExecCredential`
//! from stdout. It caches the token until `status.expirationTimestamp`, then runs us again.

use crate::secret::Secret;
use std::time::SystemTime;

/// The only API version we speak.
pub const API_VERSION: &str = "client.authentication.k8s.io/v1";

/// Why kubectl's request cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeError {
    /// `KUBERNETES_EXEC_INFO` is not JSON of the expected shape.
    #[error("KUBERNETES_EXEC_INFO is not an ExecCredential: {0}")]
    BadExecInfo(String),
    /// kubectl asked for another API version.
    #[error(
        "kubectl asked for {0:?}; stagepass speaks {API_VERSION} (set apiVersion: {API_VERSION} in the kubeconfig's exec section)"
    )]
    WrongVersion(String),
}

/// Checks kubectl's request, when it sent one (older callers send none).
pub fn check_exec_info(info: Option<&str>) -> Result<(), KubeError> {
    let Some(info) = info.filter(|s| !s.trim().is_empty()) else {
        return Ok(());
    };
    /// The one field of kubectl's `KUBERNETES_EXEC_INFO` checked here.
    #[derive(serde::Deserialize)]
    struct ExecInfo {
        #[serde(rename = "apiVersion")]
        api_version: Option<String>,
    }
    let v: ExecInfo =
        serde_json::from_str(info).map_err(|e| KubeError::BadExecInfo(e.to_string()))?;
    match v.api_version.as_deref() {
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(KubeError::WrongVersion(other.to_string())),
        None => Err(KubeError::BadExecInfo("no apiVersion".into())),
    }
}

/// The `ExecCredential` kubectl reads (client.authentication.k8s.io/v1). No `Debug`: it
/// holds the token.
#[derive(serde::Serialize)]
pub struct ExecCredential<'a> {
    /// Always [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    /// Always `ExecCredential`.
    pub kind: &'static str,
    /// The credential.
    pub status: ExecCredentialStatus<'a>,
}

/// The `status` of an [`ExecCredential`].
#[derive(serde::Serialize)]
pub struct ExecCredentialStatus<'a> {
    /// When kubectl must ask again, RFC 3339 UTC; absent when the expiry is unknown.
    #[serde(
        rename = "expirationTimestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_timestamp: Option<String>,
    /// The bearer token.
    pub token: &'a str,
}

/// The `ExecCredential` for `token`; `expirationTimestamp` only when the expiry is known.
pub fn exec_credential(token: &Secret, expires_at: Option<SystemTime>) -> ExecCredential<'_> {
    ExecCredential {
        api_version: API_VERSION,
        kind: "ExecCredential",
        status: ExecCredentialStatus {
            expiration_timestamp: expires_at.map(crate::timefmt::rfc3339_z),
            token: token.expose(),
        },
    }
}

impl ExecCredential<'_> {
    /// The JSON line kubectl reads.
    pub fn to_json(&self) -> String {
        // Four strings always serialize; fall back to an empty object regardless.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn v1_shape_exact_bytes() {
        let tok = Secret::new("tok");
        let v = exec_credential(&tok, Some(UNIX_EPOCH + Duration::from_secs(1_795_908_820)));
        assert_eq!(
            v.to_json(),
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"expirationTimestamp":"2026-11-28T23:33:40Z","token":"tok"}}"#
        );
        let no_exp = exec_credential(&tok, None);
        assert_eq!(
            no_exp.to_json(),
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"tok"}}"#
        );
    }

    #[test]
    fn exec_info_checked() {
        assert_eq!(check_exec_info(None), Ok(()));
        assert_eq!(
            check_exec_info(Some(
                r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#
            )),
            Ok(())
        );
        assert!(matches!(
            check_exec_info(Some(
                r#"{"apiVersion":"client.authentication.k8s.io/v1beta1"}"#
            )),
            Err(KubeError::WrongVersion(_))
        ));
        assert!(matches!(
            check_exec_info(Some("{")),
            Err(KubeError::BadExecInfo(_))
        ));
    }
}
