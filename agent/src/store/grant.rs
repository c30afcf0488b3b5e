//! The record kept per grant, and its on-disk (or in-keyring) JSON form.

use super::StoreError;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A stored login: the refresh token and what it belongs to.
///
/// The issuer and client id are kept so that a grant is never replayed against a profile
/// whose configuration has since moved to another IdP or client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    /// OIDC issuer that issued the refresh token.
    pub issuer: String,
    /// OAuth client the refresh token is bound to.
    pub client_id: String,
    /// The refresh token.
    pub refresh_token: Secret,
    /// Scope granted, space separated.
    pub scope: Option<String>,
    /// Unix seconds of the last write (for status and debugging).
    pub updated_at: u64,
    /// Unix seconds of the login (device flow) this grant descends from; kept across
    /// rotations for `policy.max_grant_age`. `None` in grants stored by older versions.
    pub logged_in_at: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: u32,
    issuer: String,
    client_id: String,
    refresh_token: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logged_in_at: Option<u64>,
}

impl StoredGrant {
    /// A grant written now.
    pub fn new(
        issuer: &str,
        client_id: &str,
        refresh_token: impl Into<String>,
        scope: Option<String>,
    ) -> Self {
        let updated_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            refresh_token: Secret::new(refresh_token),
            scope,
            updated_at,
            logged_in_at: Some(updated_at),
        }
    }

    /// The same grant rotated to `refresh_token`: the login time is carried over (for a
    /// grant of an older version, its last write is the best known lower bound of its age).
    pub fn rotated(&self, refresh_token: impl Into<String>, scope: Option<String>) -> Self {
        let mut g = Self::new(&self.issuer, &self.client_id, refresh_token, scope);
        g.logged_in_at = Some(self.login_time());
        g
    }

    /// Unix seconds of the login, or of the last write for grants stored without it.
    pub fn login_time(&self) -> u64 {
        self.logged_in_at.unwrap_or(self.updated_at)
    }

    /// Serialises to JSON; the returned buffer is zeroed when dropped.
    pub(crate) fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let wire = Wire {
            version: 1,
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            refresh_token: self.refresh_token.expose().to_string(),
            scope: self.scope.clone(),
            updated_at: self.updated_at,
            logged_in_at: self.logged_in_at,
        };
        let out = serde_json::to_vec(&wire).unwrap_or_default();
        // Dropping the wrapper zeroes the plain copy of the refresh token.
        drop(Zeroizing::new(wire.refresh_token));
        Zeroizing::new(out)
    }

    /// Parses the JSON form; `origin` names the file or entry for the error.
    pub(crate) fn from_json(origin: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: origin.to_string(),
            // serde_json's message names line/column and the field, never the value.
            detail: format!(
                "line {} column {}: {}",
                e.line(),
                e.column(),
                e.classify_msg()
            ),
        })?;
        if wire.version != 1 {
            return Err(StoreError::Corrupt {
                path: origin.to_string(),
                detail: format!("unsupported version {}", wire.version),
            });
        }
        Ok(Self {
            issuer: wire.issuer,
            client_id: wire.client_id,
            refresh_token: Secret::new(wire.refresh_token),
            scope: wire.scope,
            updated_at: wire.updated_at,
            logged_in_at: wire.logged_in_at,
        })
    }
}

trait ClassifyMsg {
    fn classify_msg(&self) -> &'static str;
}

impl ClassifyMsg for serde_json::Error {
    fn classify_msg(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "unexpected fields or types",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_secret_in_errors() {
        let g = StoredGrant::new("https://i", "c", "rt-secret-value", None);
        let json = g.to_json();
        let back = StoredGrant::from_json("f", &json).unwrap();
        assert_eq!(back, g);
        let broken =
            br#"{"version":1,"issuer":"i","client_id":"c","refresh_token":"rt-secret-value","#;
        let err = StoredGrant::from_json("f", broken).unwrap_err().to_string();
        assert!(!err.contains("rt-secret-value"), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn grants_without_a_login_time_still_load_and_rotation_keeps_it() {
        // As written before the login time was recorded.
        let old = br#"{"version":1,"issuer":"https://i","client_id":"c","refresh_token":"rt1","scope":null,"updated_at":1000}"#;
        let g = StoredGrant::from_json("f", old).unwrap();
        assert_eq!(g.logged_in_at, None);
        assert_eq!(g.login_time(), 1000);
        let r = g.rotated("rt2", None);
        assert_eq!(r.logged_in_at, Some(1000));
        assert!(r.updated_at > 1000);
        let back = StoredGrant::from_json("f", &r.to_json()).unwrap();
        assert_eq!(back.login_time(), 1000);
        // A new login records its own time.
        let n = StoredGrant::new("https://i", "c", "rt", None);
        assert_eq!(n.logged_in_at, Some(n.updated_at));
    }
}
