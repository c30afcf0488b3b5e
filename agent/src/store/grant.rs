//! The record kept per grant, and its on-disk (or in-keyring) JSON form.

use super::StoreError;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A stored login: the refresh token and what it belongs to.
///
/// The issuer and client id are kept so that a grant is never replayed against a profile
/// whose configuration has since moved to another IdP or client.
#[derive(Debug, Clone, PartialEq)]
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
    /// The last access token issued on this grant, kept so that an agent restarted within
    /// its usable life serves it without spending the refresh token (issue 23). `None` in
    /// grants of format 1 and when the stored one was unreadable.
    pub access: Option<StoredAccess>,
    /// Why an access token present in the record was dropped while reading it (malformed);
    /// the refresh token is kept regardless. The broker rewrites the record without it.
    pub access_dropped: Option<&'static str>,
}

/// An access token at rest, with what decides whether a restarted agent may serve it.
///
/// Times are Unix milliseconds of *our* clock when the answer arrived (never the IdP's
/// `iat`/`exp`), like the in-memory lifetimes, so an IdP clock off by minutes does not shift
/// them. The requested scopes and audience are kept so a token is never served to a profile
/// whose configuration has since asked for something else.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAccess {
    /// The access token.
    pub access_token: Secret,
    /// Usually `Bearer`.
    pub token_type: String,
    /// Scope the IdP granted, space separated.
    pub scope: Option<String>,
    /// When it was received (Unix ms).
    pub issued_at_ms: u64,
    /// When it stops being valid (Unix ms; after any `policy.max_token_lifetime` cap).
    pub expires_at_ms: u64,
    /// When the scheduler planned to renew it (Unix ms).
    pub refresh_at_ms: u64,
    /// The scopes the profile asked for.
    pub scopes: Vec<String>,
    /// The audience the profile asked for.
    pub audience: Option<String>,
    /// Non-secret ID token claims of the answer (the broker's `Identity`), opaque here.
    pub identity: Option<serde_json::Value>,
}

/// The record format written now. Format 1 (no access token) is still read.
const VERSION: u32 = 2;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access: Option<AccessField>,
}

/// The access part is read on its own terms: whatever is wrong with it (a missing field, a
/// wrong type, a field from a later version) drops it alone, never the refresh token beside it.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum AccessField {
    Good(AccessWire),
    #[serde(skip_serializing)]
    Bad(serde::de::IgnoredAny),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessWire {
    access_token: String,
    token_type: String,
    #[serde(default)]
    scope: Option<String>,
    issued_at_ms: u64,
    expires_at_ms: u64,
    refresh_at_ms: u64,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<serde_json::Value>,
}

impl StoredAccess {
    /// Checks what can be checked without a clock: a token, and times in order.
    fn check(&self) -> Result<(), &'static str> {
        if self.access_token.expose().trim().is_empty() {
            return Err("empty access token");
        }
        if !(self.issued_at_ms <= self.refresh_at_ms && self.refresh_at_ms <= self.expires_at_ms) {
            return Err("issue, refresh and expiry times out of order");
        }
        if self.issued_at_ms == self.expires_at_ms {
            return Err("zero lifetime");
        }
        Ok(())
    }

    fn from_wire(w: AccessWire) -> Result<Self, &'static str> {
        let a = Self {
            access_token: Secret::new(w.access_token),
            token_type: w.token_type,
            scope: w.scope,
            issued_at_ms: w.issued_at_ms,
            expires_at_ms: w.expires_at_ms,
            refresh_at_ms: w.refresh_at_ms,
            scopes: w.scopes,
            audience: w.audience,
            identity: w.identity,
        };
        a.check().map(|()| a)
    }

    fn to_wire(&self) -> AccessWire {
        AccessWire {
            access_token: self.access_token.expose().to_string(),
            token_type: self.token_type.clone(),
            scope: self.scope.clone(),
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            refresh_at_ms: self.refresh_at_ms,
            scopes: self.scopes.clone(),
            audience: self.audience.clone(),
            identity: self.identity.clone(),
        }
    }
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
            access: None,
            access_dropped: None,
        }
    }

    /// The same grant, written now, holding `access` (or no access token).
    pub fn with_access(&self, access: Option<StoredAccess>) -> Self {
        let mut g = self.clone();
        g.updated_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        g.access = access;
        g.access_dropped = None;
        g
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
            version: VERSION,
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            refresh_token: self.refresh_token.expose().to_string(),
            scope: self.scope.clone(),
            updated_at: self.updated_at,
            logged_in_at: self.logged_in_at,
            access: self.access.as_ref().map(|a| AccessField::Good(a.to_wire())),
        };
        let out = serde_json::to_vec(&wire).unwrap_or_default();
        // Dropping the wrappers zeroes the plain copies of the tokens.
        drop(Zeroizing::new(wire.refresh_token));
        if let Some(AccessField::Good(a)) = wire.access {
            drop(Zeroizing::new(a.access_token));
        }
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
        if !(1..=VERSION).contains(&wire.version) {
            return Err(StoreError::Corrupt {
                path: origin.to_string(),
                detail: format!("unsupported version {}", wire.version),
            });
        }
        let (access, access_dropped) = match wire.access {
            None => (None, None),
            Some(AccessField::Bad(_)) => (None, Some("unreadable access token record")),
            Some(AccessField::Good(a)) => match StoredAccess::from_wire(a) {
                Ok(a) => (Some(a), None),
                Err(why) => (None, Some(why)),
            },
        };
        Ok(Self {
            issuer: wire.issuer,
            client_id: wire.client_id,
            refresh_token: Secret::new(wire.refresh_token),
            scope: wire.scope,
            updated_at: wire.updated_at,
            logged_in_at: wire.logged_in_at,
            access,
            access_dropped,
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

    fn access() -> StoredAccess {
        StoredAccess {
            access_token: Secret::new("at-secret-value"),
            token_type: "Bearer".into(),
            scope: Some("openid".into()),
            issued_at_ms: 1_000_000,
            expires_at_ms: 4_600_000,
            refresh_at_ms: 3_700_000,
            scopes: vec!["openid".into(), "offline_access".into()],
            audience: Some("urn:a".into()),
            identity: Some(serde_json::json!({"sub": "alice"})),
        }
    }

    #[test]
    fn the_access_token_round_trips_in_format_2_and_format_1_still_reads() {
        let g = StoredGrant::new("https://i", "c", "rt1", None).with_access(Some(access()));
        let json = g.to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["version"], 2);
        let back = StoredGrant::from_json("f", &json).unwrap();
        assert_eq!(back, g);
        assert_eq!(
            back.access.unwrap().access_token.expose(),
            "at-secret-value"
        );
        // Format 1, as every earlier version wrote it: the login, no access token.
        let old = br#"{"version":1,"issuer":"https://i","client_id":"c","refresh_token":"rt1","scope":null,"updated_at":1000,"logged_in_at":900}"#;
        let g1 = StoredGrant::from_json("f", old).unwrap();
        assert_eq!(g1.refresh_token.expose(), "rt1");
        assert_eq!((g1.access, g1.access_dropped), (None, None));
        // A later format is refused, not half read.
        let later = br#"{"version":3,"issuer":"https://i","client_id":"c","refresh_token":"rt1"}"#;
        assert!(StoredGrant::from_json("f", later).is_err());
    }

    /// Whatever is wrong with the access part, the refresh token is read, the access token is
    /// dropped with a reason, and no error names a token.
    #[test]
    fn a_malformed_access_part_drops_only_the_access_token() {
        let good = StoredGrant::new("https://i", "c", "rt-keep", None).with_access(Some(access()));
        let v: serde_json::Value = serde_json::from_slice(&good.to_json()).unwrap();
        let variants: Vec<(&str, serde_json::Value)> = vec![
            ("a string", serde_json::json!("garbage")),
            ("a number", serde_json::json!(7)),
            ("an empty object", serde_json::json!({})),
            ("a wrong type", {
                let mut a = v["access"].clone();
                a["expires_at_ms"] = serde_json::json!("soon");
                a
            }),
            ("an unknown field", {
                let mut a = v["access"].clone();
                a["from_the_future"] = serde_json::json!(1);
                a
            }),
            ("a missing token", {
                let mut a = v["access"].clone();
                a.as_object_mut().unwrap().remove("access_token");
                a
            }),
            ("an empty token", {
                let mut a = v["access"].clone();
                a["access_token"] = serde_json::json!("");
                a
            }),
            ("times out of order", {
                let mut a = v["access"].clone();
                a["expires_at_ms"] = serde_json::json!(10);
                a
            }),
        ];
        for (what, access) in variants {
            let mut rec = v.clone();
            rec["access"] = access;
            let bytes = serde_json::to_vec(&rec).unwrap();
            let g = StoredGrant::from_json("f", &bytes)
                .unwrap_or_else(|e| panic!("{what}: the record must still load: {e}"));
            assert_eq!(g.refresh_token.expose(), "rt-keep", "{what}");
            assert_eq!(g.access, None, "{what}");
            let why = g
                .access_dropped
                .unwrap_or_else(|| panic!("{what}: no reason"));
            assert!(!why.contains("at-secret-value"), "{what}: {why}");
        }
        // `null` is no access token, not a malformed one.
        let mut rec = v.clone();
        rec["access"] = serde_json::Value::Null;
        let g = StoredGrant::from_json("f", &serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!((g.access, g.access_dropped), (None, None));
    }
}
