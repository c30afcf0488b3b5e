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
    let v: serde_json::Value =
        serde_json::from_str(info).map_err(|e| KubeError::BadExecInfo(e.to_string()))?;
    match v.get("apiVersion").and_then(|a| a.as_str()) {
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(KubeError::WrongVersion(other.to_string())),
        None => Err(KubeError::BadExecInfo("no apiVersion".into())),
    }
}

/// The `ExecCredential` JSON kubectl reads; `expirationTimestamp` only when the expiry is known.
pub fn exec_credential(token: &Secret, expires_at: Option<SystemTime>) -> serde_json::Value {
    let mut status = serde_json::Map::new();
    status.insert("token".into(), token.expose().into());
    if let Some(t) = expires_at {
        status.insert(
            "expirationTimestamp".into(),
            crate::timefmt::rfc3339_z(t).into(),
        );
    }
    serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "ExecCredential",
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn v1_shape_exact_bytes() {
        let v = exec_credential(
            &Secret::new("tok"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_908_820)),
        );
        assert_eq!(
            v.to_string(),
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"expirationTimestamp":"2026-11-28T23:33:40Z","token":"tok"}}"#
        );
        let no_exp = exec_credential(&Secret::new("tok"), None);
        assert_eq!(no_exp["status"].as_object().map(|o| o.len()), Some(1));
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
