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

use super::metrics::{Metrics, TokenCounters};
use crate::broker::IssuedToken;
use crate::broker::{Broker, HotSlot};
use crate::protocol::TokenAnswer;
use crate::timefmt::rfc3339;
use bytes::Bytes;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use std::time::SystemTime;

struct Entry {
    /// The token the body was encoded from (shared with the broker's cache, not a copy).
    token: Arc<IssuedToken>,
    expires_in: Option<u64>,
    body: Bytes,
    /// The token's fingerprint, for audit records (hashed once per token version).
    fingerprint: Arc<str>,
}

/// Encoded token bodies by profile; one per [`super::ApiState`].
pub struct TokenBodies {
    /// Tells this agent's entries in the per-thread copies from another's (tests run many).
    id: u64,
    entries: RwLock<HashMap<String, Entry>>,
}

impl Default for TokenBodies {
    fn default() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            entries: RwLock::default(),
        }
    }
}

/// A worker thread's own copy of a body, valid while the broker's token version is the same.
///
/// The shared map above takes a lock and bumps a shared reference count on every hit; with
/// several worker threads those cache lines bounce between cores on every request. Each
/// thread keeps its own bytes instead and checks the version with plain atomic loads
/// ([`HotSlot::usable_version`]), and counts the hit into its own metrics shard.
struct Local {
    owner: u64,
    profile: Box<str>,
    slot: HotSlot,
    version: u64,
    /// The body's whole-second `expires_in` holds from `said_at` until `same_until`
    /// (inclusive; `None`: for ever): comparing times is cheaper than recomputing it on
    /// every hit.
    said_at: SystemTime,
    same_until: Option<SystemTime>,
    body: Bytes,
    /// This thread's own copy of the fingerprint (for audit records; no shared count).
    fingerprint: Arc<str>,
    /// This thread's counters of the profile's token requests.
    counters: TokenCounters,
}

impl Local {
    /// Does the body's `expires_in` still say the truth at `now`?
    fn same_at(&self, now: SystemTime) -> bool {
        self.said_at <= now && self.same_until.is_none_or(|u| now <= u)
    }
}

/// Until when `expires_in(expires_at, now)` stays what it is at `now` (for [`Local`]); `None`
/// for ever (no expiry, or less than a second left: it says 0 from then on).
fn same_until(expires_at: Option<SystemTime>, now: SystemTime) -> Option<SystemTime> {
    let e = expires_at?;
    let whole = e.duration_since(now).ok()?.as_secs();
    // It drops a second a nanosecond after `e - whole`.
    (whole > 0).then(|| e.checked_sub(Duration::from_secs(whole)))?
}

/// At most this many per-thread copies (profiles times agents in one process).
const LOCAL_MAX: usize = 32;

thread_local! {
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

fn expires_in(expires_at: Option<SystemTime>, now: SystemTime) -> Option<u64> {
    expires_at.map(|e| e.duration_since(now).map_or(0, |d| d.as_secs()))
}

impl TokenBodies {
    /// The body for `profile` from this thread's copy, if the broker's cached token is still
    /// the same version, usable for `min_valid`, and its whole-second `expires_in` unchanged;
    /// with the token's fingerprint (for the audit record). The hit is counted as a token
    /// request answered `ok`. `now` and `mono` are the request's own clock reads. No lock and
    /// no shared counter: the cache-hit path of `GET /v1/token`.
    pub fn local_hit(
        &self,
        profile: &str,
        min_valid: Option<Duration>,
        now: SystemTime,
        mono: tokio::time::Instant,
    ) -> Option<(Bytes, Arc<str>)> {
        LOCAL.with(|l| {
            let l = l.borrow();
            let e = l
                .iter()
                .find(|e| e.owner == self.id && &*e.profile == profile)?;
            let version = e.slot.usable_version(min_valid, mono)?;
            (version == e.version && e.same_at(now)).then(|| {
                e.counters.count_ok();
                (e.body.clone(), e.fingerprint.clone())
            })
        })
    }

    /// Keeps this thread's copy of `body` (just answered for `t`) if `t` is still the
    /// broker's cached token, under that token's version.
    pub fn remember(
        &self,
        broker: &Broker,
        metrics: &Metrics,
        t: &Arc<IssuedToken>,
        body: &Bytes,
        fingerprint: &str,
        now: SystemTime,
    ) {
        let Some(slot) = broker.hot(&t.profile) else {
            return;
        };
        let Some((version, cached)) = slot.snapshot() else {
            return;
        };
        if !Arc::ptr_eq(&cached, t) {
            return;
        }
        let local = Local {
            owner: self.id,
            profile: t.profile.as_str().into(),
            slot,
            version,
            said_at: now,
            same_until: same_until(t.expires_at, now),
            body: Bytes::copy_from_slice(body),
            fingerprint: fingerprint.into(),
            counters: metrics.token_counters(&t.profile),
        };
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if let Some(e) = l
                .iter_mut()
                .find(|e| e.owner == self.id && *e.profile == *t.profile)
            {
                *e = local;
            } else {
                if l.len() >= LOCAL_MAX {
                    l.clear();
                }
                l.push(local);
            }
        });
    }

    /// The JSON body for `t` at `now` (the kept bytes when they still say the same, else a
    /// fresh encoding that replaces them) and the token's fingerprint (kept with the body,
    /// so the audit record of a cache hit costs no hashing).
    pub fn body_and_fingerprint(
        &self,
        t: &Arc<IssuedToken>,
        now: SystemTime,
    ) -> Result<(Bytes, Arc<str>), serde_json::Error> {
        let expires_in = expires_in(t.expires_at, now);
        if let Ok(m) = self.entries.read()
            && let Some(e) = m.get(&t.profile)
            && e.expires_in == expires_in
            && (Arc::ptr_eq(&e.token, t)
                || e.token.access_token.expose() == t.access_token.expose())
        {
            return Ok((e.body.clone(), e.fingerprint.clone()));
        }
        let body = Bytes::from(serde_json::to_vec(&TokenAnswer {
            access_token: Cow::Borrowed(t.access_token.expose()),
            token_type: Cow::Borrowed(&t.token_type),
            expires_at: t.expires_at.map(rfc3339),
            expires_in,
            scope: t.scope.as_deref().map(Cow::Borrowed),
            profile: Cow::Borrowed(&t.profile),
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

    /// `same_until` marks exactly the last instant `expires_in` says what it said.
    #[test]
    fn the_second_holds_until_same_until_and_not_a_nanosecond_after() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let exp = base + Duration::from_millis(100_500);
        for now in [
            base,
            base + Duration::from_millis(499),
            base + Duration::from_millis(500),
            base + Duration::from_millis(501),
            exp - Duration::from_millis(1_500),
        ] {
            let said = expires_in(Some(exp), now);
            let until = same_until(Some(exp), now).unwrap();
            assert!(until >= now);
            assert_eq!(expires_in(Some(exp), until), said, "{now:?}");
            assert_ne!(
                expires_in(Some(exp), until + Duration::from_nanos(1)),
                said,
                "{now:?}"
            );
        }
        // Under a second left or expired (0 for ever after), and no expiry: no end.
        assert_eq!(
            same_until(Some(exp), exp - Duration::from_millis(999)),
            None
        );
        assert_eq!(same_until(Some(exp), exp), None);
        assert_eq!(same_until(Some(exp), exp + Duration::from_secs(3)), None);
        assert_eq!(same_until(None, base), None);
    }

    #[test]
    fn reuses_bytes_only_while_token_and_second_are_unchanged() {
        let bodies = TokenBodies::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let exp = now + Duration::from_millis(100_500);
        let a = bodies
            .body_and_fingerprint(&token("t1", exp), now)
            .unwrap()
            .0;
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["access_token"], "t1");
        assert_eq!(v["expires_in"], 100);
        assert_eq!(v["expires_at"], "2023-11-14T22:15:00.5Z");
        // Same token, same second: the very same bytes.
        let b = bodies
            .body_and_fingerprint(&token("t1", exp), now + Duration::from_millis(400))
            .unwrap()
            .0;
        assert_eq!(a.as_ptr(), b.as_ptr());
        // The next second re-encodes.
        let c = bodies
            .body_and_fingerprint(&token("t1", exp), now + Duration::from_secs(1))
            .unwrap()
            .0;
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["expires_in"], 99);
        // A new token re-encodes at once.
        let d = bodies
            .body_and_fingerprint(&token("t2", exp), now + Duration::from_secs(1))
            .unwrap()
            .0;
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(v["access_token"], "t2");
    }
}
