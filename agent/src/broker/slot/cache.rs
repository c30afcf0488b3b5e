//! The cached token of a profile: the entry with the instants that govern it, the
//! lock-free published view of its validity, and the secrets a profile held lately.

use super::Slot;
use crate::broker::IssuedToken;
use crate::broker::idp::Grant;
use crate::broker::timing;
use crate::secret::Secret;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A token in the cache, with the instants that govern it.
#[derive(Debug, Clone)]
pub(in crate::broker) struct Cached {
    pub(in crate::broker) issued: Arc<IssuedToken>,
    pub(in crate::broker) fingerprint: String,
    /// When it expires (monotonic), if known.
    pub(in crate::broker) expires: Option<Instant>,
    /// When the refresher should renew it.
    pub(in crate::broker) refresh_at: Option<Instant>,
    /// The margin below which it is no longer handed out.
    pub(in crate::broker) skew: Duration,
    /// Who signed in, when the answer carried an ID token.
    pub(in crate::broker) identity: Option<crate::broker::idp::Identity>,
    /// Its whole lifetime (after `policy.max_token_lifetime`), if known: kept at rest with it.
    pub(in crate::broker) lifetime: Option<Duration>,
}

impl Cached {
    /// Usable for a caller needing `min_valid` more time (at least the skew margin).
    pub(super) fn usable(&self, now: Instant, min_valid: Option<Duration>) -> bool {
        match self.expires {
            None => true,
            Some(exp) => {
                let need = self.skew.max(min_valid.unwrap_or_default());
                exp.saturating_duration_since(now) > need
            }
        }
    }
}

/// How many of the secrets a profile held (access and refresh tokens, the current ones
/// included) it remembers for the audit redactor: a command line may still carry a token
/// from an earlier rotation (a script that saved it, a shell history replayed). 16 covers
/// the last 8 rotations of both; with hour-long tokens that is most of a working day.
pub(in crate::broker) const RECENT_SECRETS: usize = 16;

/// The last [`RECENT_SECRETS`] secrets a profile held, oldest first: values the audit log
/// must never record (see `attest::redact`). Only the redactor reads them; they are
/// [`Secret`]s, so they print as `[redacted]` and are zeroed when they drop out or the
/// profile goes away.
#[derive(Default)]
pub(in crate::broker) struct Recent(std::collections::VecDeque<Secret>);

impl Recent {
    /// Remembers `s` (once), forgetting the oldest past [`RECENT_SECRETS`].
    pub(in crate::broker) fn remember(&mut self, s: &Secret) {
        if self.0.iter().any(|k| k == s) {
            return;
        }
        if self.0.len() == RECENT_SECRETS {
            self.0.pop_front();
        }
        self.0.push_back(s.clone());
    }

    /// The secrets remembered, oldest first.
    pub(in crate::broker) fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.0.iter()
    }
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recent({} secrets)", self.0.len())
    }
}

/// The cached token's expiry and skew as a seqlock over atomics, for the API's cache-hit
/// path: checking that the token is still usable takes no lock shared with other threads.
///
/// Writers hold the slot's mutex (one writer at a time) and make the sequence odd while they
/// write; a reader that sees an odd or changed sequence falls back to the locked path. The
/// even sequence a reader saw names the token version: it changes with every new, dropped
/// or replaced token, so a copy kept for that version is never served after a change.
#[derive(Debug)]
pub(in crate::broker) struct Published {
    seq: AtomicU64,
    /// Milliseconds from `base` to the expiry; 0 = no token, `u64::MAX` = no known expiry.
    expires_ms: AtomicU64,
    skew_ms: AtomicU64,
    base: Instant,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            seq: AtomicU64::new(0),
            expires_ms: AtomicU64::new(0),
            skew_ms: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl Published {
    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Publishes the slot's current token; the caller holds the slot mutex.
    pub(super) fn set(&self, token: Option<&Cached>) {
        let (expires, skew) = match token {
            None => (0, 0),
            Some(c) => (
                // Rounded down: the published expiry is never later than the real one.
                c.expires.map_or(u64::MAX, |e| {
                    Self::ms(e.saturating_duration_since(self.base)).max(1)
                }),
                // Rounded up: the published margin is never smaller than the real one.
                Self::ms(c.skew).saturating_add(u64::from(c.skew.subsec_nanos() % 1_000_000 != 0)),
            ),
        };
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.expires_ms.store(expires, Ordering::Relaxed);
        self.skew_ms.store(skew, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// The current sequence; under the slot mutex it is even and names the cached token.
    pub(super) fn version(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// The token version if a token is cached and usable at `now` for a caller needing
    /// `min_valid` (the same rule as [`Cached::usable`]); `None` sends the caller to the
    /// locked path.
    pub(in crate::broker) fn usable_version(
        &self,
        now: Instant,
        min_valid: Option<Duration>,
    ) -> Option<u64> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            return None;
        }
        let expires = self.expires_ms.load(Ordering::Relaxed);
        let skew = self.skew_ms.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 || expires == 0 {
            return None;
        }
        if expires == u64::MAX {
            return Some(s1);
        }
        let need = skew.max(min_valid.map_or(0, Self::ms));
        // Rounded up: the reader's clock is never behind the real one.
        let now = Self::ms(now.saturating_duration_since(self.base)).saturating_add(1);
        (expires.saturating_sub(now) > need).then_some(s1)
    }
}

impl Slot {
    /// Turns an IdP answer into a cache entry (timing from now).
    pub(in crate::broker) fn cache_entry(&self, g: &Grant) -> Cached {
        let now = Instant::now();
        // policy.max_token_lifetime: cached, advertised and renewed as if it lived no longer.
        let lifetime = crate::policy::limits::capped_lifetime(
            g.expires_in,
            self.cfg.policy.max_token_lifetime.map(|d| d.0),
        );
        let skew = timing::skew_for(self.configured_skew(), lifetime);
        let (expires, refresh_at) = match lifetime {
            Some(l) => {
                let first = self
                    .spread_next
                    .swap(false, std::sync::atomic::Ordering::Relaxed);
                let after = if first {
                    timing::first_refresh_after(l, skew, timing::unit())
                } else {
                    timing::refresh_after(l, skew, timing::unit())
                };
                (Some(now + l), Some(now + after))
            }
            None => (None, None),
        };
        let issued = Arc::new(IssuedToken {
            access_token: g.access_token.clone(),
            token_type: g.token_type.clone(),
            expires_at: lifetime.map(|l| SystemTime::now() + l),
            scope: g.scope.clone(),
            profile: self.name.clone(),
        });
        Cached {
            fingerprint: g.access_token.fingerprint(),
            issued,
            expires,
            refresh_at,
            skew,
            identity: g.identity.clone(),
            lifetime,
        }
    }
}

#[cfg(test)]
mod published_tests {
    use super::*;

    fn cached(expires_in: Option<Duration>, skew: Duration) -> Cached {
        Cached {
            issued: Arc::new(IssuedToken {
                access_token: Secret::new("t"),
                token_type: "Bearer".into(),
                expires_at: None,
                scope: None,
                profile: "p".into(),
            }),
            fingerprint: "f".into(),
            expires: expires_in.map(|d| Instant::now() + d),
            refresh_at: None,
            skew,
            identity: None,
            lifetime: expires_in,
        }
    }

    /// The lock-free view agrees with `Cached::usable` and names each token change.
    #[tokio::test(start_paused = true)]
    async fn usable_version_follows_the_cached_token() {
        let p = Published::default();
        assert_eq!(p.usable_version(Instant::now(), None), None, "no token yet");

        let c = cached(Some(Duration::from_secs(100)), Duration::from_secs(10));
        p.set(Some(&c));
        let v1 = p.usable_version(Instant::now(), None).unwrap();
        assert_eq!(v1 % 2, 0);
        assert!(c.usable(Instant::now(), None));
        // min_valid beyond the remaining lifetime: not from the fast path, nor the cache.
        let long = Some(Duration::from_secs(105));
        assert_eq!(p.usable_version(Instant::now(), long), None);
        assert!(!c.usable(Instant::now(), long));
        let within = Some(Duration::from_secs(95));
        assert_eq!(p.usable_version(Instant::now(), within), Some(v1));
        assert!(c.usable(Instant::now(), within));

        // Inside the skew margin: no longer handed out, exactly like the locked path.
        tokio::time::advance(Duration::from_secs(91)).await;
        assert_eq!(p.usable_version(Instant::now(), None), None);
        assert!(!c.usable(Instant::now(), None));

        // A new token is a new version; dropping it makes nothing usable.
        let c2 = cached(Some(Duration::from_secs(100)), Duration::from_secs(10));
        p.set(Some(&c2));
        let v2 = p.usable_version(Instant::now(), None).unwrap();
        assert_ne!(v1, v2);
        p.set(None);
        assert_eq!(p.usable_version(Instant::now(), None), None);

        // A token without a known expiry is usable whatever min_valid asks.
        p.set(Some(&cached(None, Duration::from_secs(10))));
        assert!(
            p.usable_version(Instant::now(), Some(Duration::from_secs(86_400)))
                .is_some()
        );
    }
}
