//! The encoded body of `GET /v1/token/{profile}`, kept per profile and token version.
//!
//! A cache hit is the API's hot path: thousands of `$(stagepass token)` and SDK calls answer
//! from the same cached token. Encoding it (RFC 3339 time, JSON) on every hit costs more than
//! the guard, so the bytes are kept and reused while the token and its whole-second
//! `expires_in` are unchanged; a new token or the next second re-encodes once.
//!
//! The entry holds the broker's own `Arc` of the token (no extra copy of the secret; its
//! [`crate::secret::Secret`] is zeroized when the last holder drops it); the body bytes are
//! shared with responses the same way every answer's bytes are.

use super::routes::rfc3339;
use crate::broker::IssuedToken;
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// `GET /v1/token/{profile}` answer.
#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_at: Option<String>,
    expires_in: Option<u64>,
    scope: Option<&'a str>,
    profile: &'a str,
}

struct Entry {
    /// The token the body was encoded from (shared with the broker's cache, not a copy).
    token: Arc<IssuedToken>,
    expires_in: Option<u64>,
    body: Bytes,
    /// The token's fingerprint, for audit records (hashed once per token version).
    fingerprint: Arc<str>,
}

/// Encoded token bodies by profile; one per [`super::ApiState`].
#[derive(Default)]
pub struct TokenBodies {
    entries: RwLock<HashMap<String, Entry>>,
}

impl TokenBodies {
    /// The JSON body for `t` at `now`: the kept bytes when they still say the same, else a
    /// fresh encoding that replaces them.
    pub fn body(&self, t: &Arc<IssuedToken>, now: SystemTime) -> Result<Bytes, serde_json::Error> {
        self.body_and_fingerprint(t, now).map(|(b, _)| b)
    }

    /// [`TokenBodies::body`] and the token's fingerprint (kept with the body, so the audit
    /// record of a cache hit costs no hashing).
    pub fn body_and_fingerprint(
        &self,
        t: &Arc<IssuedToken>,
        now: SystemTime,
    ) -> Result<(Bytes, Arc<str>), serde_json::Error> {
        let expires_in = t
            .expires_at
            .map(|e| e.duration_since(now).map_or(0, |d| d.as_secs()));
        if let Ok(m) = self.entries.read()
            && let Some(e) = m.get(&t.profile)
            && e.expires_in == expires_in
            && (Arc::ptr_eq(&e.token, t)
                || e.token.access_token.expose() == t.access_token.expose())
        {
            return Ok((e.body.clone(), e.fingerprint.clone()));
        }
        let body = Bytes::from(serde_json::to_vec(&TokenBody {
            access_token: t.access_token.expose(),
            token_type: &t.token_type,
            expires_at: t.expires_at.and_then(rfc3339),
            expires_in,
            scope: t.scope.as_deref(),
            profile: &t.profile,
        })?);
        let fingerprint: Arc<str> = match self.entries.read() {
            // Same token, next second: keep its fingerprint.
            Ok(m) => match m.get(&t.profile) {
                Some(e)
                    if Arc::ptr_eq(&e.token, t)
                        || e.token.access_token.expose() == t.access_token.expose() =>
                {
                    e.fingerprint.clone()
                }
                _ => t.access_token.fingerprint().into(),
            },
            Err(_) => t.access_token.fingerprint().into(),
        };
        if let Ok(mut m) = self.entries.write() {
            m.insert(
                t.profile.clone(),
                Entry {
                    token: t.clone(),
                    expires_in,
                    body: body.clone(),
                    fingerprint: fingerprint.clone(),
                },
            );
        }
        Ok((body, fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::time::Duration;

    fn token(value: &str, exp: SystemTime) -> Arc<IssuedToken> {
        Arc::new(IssuedToken {
            access_token: Secret::new(value),
            token_type: "Bearer".into(),
            expires_at: Some(exp),
            scope: Some("read".into()),
            profile: "p".into(),
        })
    }

    #[test]
    fn reuses_bytes_only_while_token_and_second_are_unchanged() {
        let bodies = TokenBodies::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let exp = now + Duration::from_millis(100_500);
        let a = bodies.body(&token("t1", exp), now).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["access_token"], "t1");
        assert_eq!(v["expires_in"], 100);
        assert_eq!(v["expires_at"], "2023-11-14T22:15:00.5Z");
        // Same token, same second: the very same bytes.
        let b = bodies
            .body(&token("t1", exp), now + Duration::from_millis(400))
            .unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr());
        // The next second re-encodes.
        let c = bodies
            .body(&token("t1", exp), now + Duration::from_secs(1))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["expires_in"], 99);
        // A new token re-encodes at once.
        let d = bodies
            .body(&token("t2", exp), now + Duration::from_secs(1))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(v["access_token"], "t2");
    }
}
