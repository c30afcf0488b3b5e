//! When to refresh and how long to back off: small pure functions, tested with fixed inputs.
//!
//! - A token is handed out only while more than the skew margin is left; the margin is the
//!   profile's `skew_seconds` (default 60 s) but never more than a quarter of the token's
//!   lifetime, so a 2 s token is still usable for 1.5 s.
//! - The refresher wakes at about 3/4 of the lifetime (uniformly jittered between 70 % and
//!   80 %), and never later than the moment the token stops being handed out.
//! - The first refresh after an agent start or a login is spread much wider, uniformly between
//!   10 % and 80 % of the lifetime ([`first_refresh_after`]): agents that start together (a
//!   fleet after an incident, a team at 9:00) would otherwise keep refreshing together for
//!   hours, since 70-80 % jitter widens their phases by only minutes per hour. It costs at most
//!   one early refresh per start and never refreshes later than 80 %.
//! - After a failure it waits a capped exponential delay with full jitter
//!   (uniform in `[0, min(cap, base * 2^attempt)]`), and at least the IdP's `Retry-After`.
//!   A waiting caller may try sooner, at most once per [`DEMAND_RETRY`] per profile, so
//!   recovery after an outage does not wait for a backoff grown to minutes.

use std::time::Duration;

/// Default skew margin (seconds of validity a handed-out token must still have).
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);

/// Shortest time between two IdP attempts of one profile made for waiting callers while the
/// background backoff runs: a caller arriving after the IdP answers again gets a token within
/// about this long, whatever the backoff reached, and a crowd of callers during an outage
/// costs the IdP at most one request per this long per profile.
pub const DEMAND_RETRY: Duration = Duration::from_secs(3);

/// Backoff knobs; the defaults suit a real IdP, tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay bound of the first retry.
    pub base: Duration,
    /// Largest delay bound.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay after `attempt` consecutive failures (1-based).
    pub fn bound(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// Full jitter: `unit` in `[0, 1)` picks the delay in `[0, bound]`; never below
    /// `retry_after` (the IdP asked us to wait that long), and never zero so a failing IdP
    /// is not hammered in a tight loop.
    pub fn delay(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let jittered = self.bound(attempt).mul_f64(unit.clamp(0.0, 1.0));
        let floor = Duration::from_millis(50);
        jittered.max(retry_after.unwrap_or_default()).max(floor)
    }

    /// "Equal jitter": half of the bound fixed, half picked by `unit` in `[0, 1)`. For a
    /// queue that must make progress after each wait (the catalog outbox), where full
    /// jitter's near-zero delays would only re-hit a failing Backstage.
    pub fn equal_jitter(&self, attempt: u32, unit: f64) -> Duration {
        let half = self.bound(attempt) / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The skew margin for a token with `lifetime`: `configured`, capped at a quarter of it.
pub fn skew_for(configured: Duration, lifetime: Option<Duration>) -> Duration {
    match lifetime {
        Some(l) => configured.min(l / 4),
        None => configured,
    }
}

/// Offset from issuance at which to refresh: 70-80 % of `lifetime` (by `unit` in `[0, 1)`),
/// but no later than `lifetime - skew`.
pub fn refresh_after(lifetime: Duration, skew: Duration, unit: f64) -> Duration {
    let ratio = 0.70 + 0.10 * unit.clamp(0.0, 1.0);
    lifetime.mul_f64(ratio).min(lifetime.saturating_sub(skew))
}

/// Offset from issuance of the first refresh after a start or a login: 10-80 % of `lifetime`
/// (by `unit` in `[0, 1)`), but no later than `lifetime - skew`. See the module docs for why.
pub fn first_refresh_after(lifetime: Duration, skew: Duration, unit: f64) -> Duration {
    let ratio = 0.10 + 0.70 * unit.clamp(0.0, 1.0);
    lifetime.mul_f64(ratio).min(lifetime.saturating_sub(skew))
}

/// What a starting agent does with a stored access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredPlan {
    /// Serve it, and refresh after this long (at once when its planned refresh has passed).
    Serve {
        /// Time left until it stops being handed out is more than this.
        refresh_in: Duration,
    },
    /// Too close to its expiry to serve: refresh at start (the boot refresh).
    Refresh,
}

/// The plan for a stored token `age` after it was issued, with `lifetime`, margin `skew`, and
/// its refresh planned at `planned` after issue: served while more than the margin is left,
/// renewed at the planned time (so a restart changes neither the IdP's load nor its
/// schedule), never later than the margin. Pure, so the fleet simulation runs the same code.
pub fn stored_plan(
    lifetime: Duration,
    skew: Duration,
    age: Duration,
    planned: Duration,
) -> StoredPlan {
    let left = lifetime.saturating_sub(age);
    if left <= skew {
        return StoredPlan::Refresh;
    }
    StoredPlan::Serve {
        refresh_in: planned.saturating_sub(age).min(left - skew),
    }
}

/// A uniform number in `[0, 1)` for jitter.
pub fn unit() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_capped_for_short_tokens() {
        assert_eq!(
            skew_for(DEFAULT_SKEW, Some(Duration::from_secs(3600))),
            DEFAULT_SKEW
        );
        assert_eq!(
            skew_for(DEFAULT_SKEW, Some(Duration::from_secs(2))),
            Duration::from_millis(500)
        );
        assert_eq!(skew_for(DEFAULT_SKEW, None), DEFAULT_SKEW);
    }

    #[test]
    fn refresh_at_three_quarters_with_jitter() {
        let l = Duration::from_secs(3600);
        let s = skew_for(DEFAULT_SKEW, Some(l));
        assert_eq!(refresh_after(l, s, 0.0), Duration::from_secs(2520));
        assert_eq!(refresh_after(l, s, 0.5), Duration::from_secs(2700));
        assert!(refresh_after(l, s, 0.999) < Duration::from_secs(2881));
        // A 100 s token with a 60 s skew (capped to 25 s): refresh by 75 s at the latest.
        let l = Duration::from_secs(100);
        let s = skew_for(DEFAULT_SKEW, Some(l));
        assert_eq!(refresh_after(l, s, 0.99), Duration::from_secs(75));
    }

    #[test]
    fn the_first_refresh_spreads_over_ten_to_eighty_percent() {
        let l = Duration::from_secs(3600);
        let s = skew_for(DEFAULT_SKEW, Some(l));
        assert_eq!(first_refresh_after(l, s, 0.0), Duration::from_secs(360));
        assert_eq!(first_refresh_after(l, s, 0.5), Duration::from_secs(1620));
        // Never later than the steady schedule's latest point (80 %).
        assert!(first_refresh_after(l, s, 0.999_999) <= Duration::from_secs(2880));
        let l = Duration::from_secs(100);
        let s = skew_for(DEFAULT_SKEW, Some(l));
        assert_eq!(first_refresh_after(l, s, 0.99), Duration::from_secs(75));
    }

    #[test]
    fn a_stored_token_is_served_until_the_margin_and_renewed_when_planned() {
        let (l, s) = (Duration::from_secs(3600), Duration::from_secs(60));
        let planned = Duration::from_secs(2000);
        let min = Duration::from_secs(60);
        assert_eq!(
            stored_plan(l, s, 10 * min, planned),
            StoredPlan::Serve {
                refresh_in: Duration::from_secs(1400)
            }
        );
        // Past its planned refresh but usable: served, renewed at once.
        assert_eq!(
            stored_plan(l, s, 40 * min, planned),
            StoredPlan::Serve {
                refresh_in: Duration::ZERO
            }
        );
        // Inside the margin, or expired: refreshed at start.
        assert_eq!(stored_plan(l, s, 59 * min, planned), StoredPlan::Refresh);
        assert_eq!(stored_plan(l, s, 90 * min, planned), StoredPlan::Refresh);
        // A planned refresh past the margin is pulled in to it.
        assert_eq!(
            stored_plan(l, s, 50 * min, l),
            StoredPlan::Serve {
                refresh_in: 9 * min
            }
        );
    }

    #[test]
    fn backoff_is_capped_exponential_with_full_jitter() {
        let b = Backoff::default();
        assert_eq!(b.bound(1), Duration::from_secs(1));
        assert_eq!(b.bound(2), Duration::from_secs(2));
        assert_eq!(b.bound(5), Duration::from_secs(16));
        assert_eq!(b.bound(40), Duration::from_secs(300));
        assert_eq!(b.delay(5, 0.5, None), Duration::from_secs(8));
        assert_eq!(b.delay(5, 0.0, None), Duration::from_millis(50));
        assert_eq!(
            b.delay(1, 0.9, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        // Full jitter spreads over the whole range.
        let xs: Vec<Duration> = (0..1000).map(|_| b.delay(6, unit(), None)).collect();
        assert!(xs.iter().all(|d| *d <= Duration::from_secs(32)));
        assert!(xs.iter().any(|d| *d < Duration::from_secs(8)));
        assert!(xs.iter().any(|d| *d > Duration::from_secs(24)));
    }
}
