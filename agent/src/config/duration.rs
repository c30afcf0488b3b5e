//! Durations written as whole numbers in the unit their key names (`debounce_ms = 150`,
//! `idle_timeout_secs = 60`), read into a [`Duration`] so no consumer converts them again,
//! and a zero refused where it would break the thing it times.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// `N` milliseconds; 0 allowed.
pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// `N` milliseconds, at least 1.
pub(super) fn positive_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "must be at least 1 (milliseconds)",
        )),
        n => Ok(Duration::from_millis(n)),
    }
}

/// `N` seconds, at least 1.
pub(super) fn positive_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1 (seconds)")),
        n => Ok(Duration::from_secs(n)),
    }
}
