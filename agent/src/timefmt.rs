//! Timestamps as the API, the audit log and the tools' protocols write them: RFC 3339 in
//! UTC. One place, on the `time` crate, so every answer and record agrees on the format.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC with the sub-second digits `time` keeps, the format of every timestamp
/// in the agent's API and audit records. Empty only for instants `time` cannot represent
/// (beyond year 9999), which no clock of ours produces.
pub fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, UTC), the shape AWS SDKs and kubectl expect in
/// `Expiration` / `expirationTimestamp`.
pub fn rfc3339_z(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Parses any RFC 3339 timestamp (offset or `Z`); `None` for anything else or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Whole seconds from `now` to an RFC 3339 instant, negative when past.
pub fn seconds_until(rfc3339: &str, now: SystemTime) -> Option<i64> {
    let at = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    Some((at - OffsetDateTime::from(now)).whole_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_and_z_drops_the_fraction() {
        let t = UNIX_EPOCH + Duration::from_millis(1_767_225_600_250);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00.25Z");
        assert_eq!(rfc3339_z(t), "2026-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(
            parse_rfc3339("2026-01-01T02:00:00+02:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        );
        assert_eq!(parse_rfc3339("2026-01-01 00:00:00"), None);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(seconds_until("2026-01-01T00:01:00Z", t), Some(59));
        assert_eq!(seconds_until("2025-12-31T23:59:00Z", t), Some(-60));
    }
}
