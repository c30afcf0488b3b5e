//! The two time limits of a profile policy.
//!
//! - `max_grant_age`: a login (device grant) older than this is treated as gone: the
//!   profile says `login_required` with that reason until the user logs in again. The login
//!   time is kept with the stored grant; grants stored before it was recorded count from
//!   their last write (an underestimate of their age, never an overestimate).
//! - `max_token_lifetime`: a bearer JWT's `exp` is signed by the IdP and cannot be shortened
//!   by us. What we control is what we advertise and when we renew: the token is cached as
//!   if it lived at most this long, so `expires_in`/`expires_at`, git's
//!   `password_expiry_utc`, kubectl's `expirationTimestamp` and the AWS `Expiration` all say
//!   at most this, and the agent renews it before then. AWS sessions are really shortened:
//!   the STS `DurationSeconds` asked for is capped ([`aws_roles`]), down to STS's usable
//!   minimum of 20 minutes (SDKs refetch credentials with under 15 minutes left on every call).

use std::time::{Duration, SystemTime};

/// The `login_required` reason when a login is older than `max`, else `None`.
pub fn grant_too_old(
    profile: &str,
    logged_in_at: SystemTime,
    max: crate::config::HumanDuration,
    now: SystemTime,
) -> Option<String> {
    let age = now.duration_since(logged_in_at).ok()?;
    (age >= max.0).then(|| {
        format!(
            "the login is older than the maximum grant age of {max} (profiles.{profile}.policy.max_grant_age); run `stagepass login {profile}`"
        )
    })
}

/// A token lifetime capped at `max`; a token without a known lifetime gets `max`.
pub fn capped_lifetime(lifetime: Option<Duration>, max: Option<Duration>) -> Option<Duration> {
    match (lifetime, max) {
        (Some(l), Some(m)) => Some(l.min(m)),
        (None, Some(m)) => Some(m),
        (l, None) => l,
    }
}

/// An expiry capped at `from + max`.
pub fn capped_expiry(
    expiry: Option<SystemTime>,
    from: SystemTime,
    max: Option<Duration>,
) -> Option<SystemTime> {
    match (expiry, max) {
        (Some(e), Some(m)) => Some(e.min(from + m)),
        (None, Some(m)) => Some(from + m),
        (e, None) => e,
    }
}

/// The `[aws.NAME]` roles with each session duration capped by its profile's
/// `max_token_lifetime` (never below [`crate::config::AWS_MIN_DURATION_SECONDS`]).
pub fn aws_roles(
    config: &crate::config::Config,
) -> std::collections::BTreeMap<String, crate::config::AwsRoleConfig> {
    let mut roles = config.aws.clone();
    for role in roles.values_mut() {
        let Some(max) = config
            .profiles
            .get(&role.profile)
            .and_then(|p| p.policy.max_token_lifetime)
        else {
            continue;
        };
        let cap = u32::try_from(max.0.as_secs())
            .unwrap_or(u32::MAX)
            .max(crate::config::AWS_MIN_DURATION_SECONDS);
        role.duration_seconds = Some(role.duration().min(cap));
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    #[test]
    fn grant_age_is_compared_with_the_limit() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let max = HumanDuration::parse("12h").unwrap();
        assert_eq!(
            grant_too_old("gh", t0, max, t0 + Duration::from_secs(3600)),
            None
        );
        let why = grant_too_old("gh", t0, max, t0 + Duration::from_secs(13 * 3600)).unwrap();
        assert!(
            why.contains("12h") && why.contains("stagepass login gh"),
            "{why}"
        );
        // A login "in the future" (clock moved back) is not too old.
        assert_eq!(
            grant_too_old("gh", t0, max, t0 - Duration::from_secs(5)),
            None
        );
    }

    #[test]
    fn lifetimes_and_expiries_are_capped() {
        let h = Duration::from_secs(3600);
        assert_eq!(capped_lifetime(Some(2 * h), Some(h)), Some(h));
        assert_eq!(capped_lifetime(Some(h / 2), Some(h)), Some(h / 2));
        assert_eq!(capped_lifetime(None, Some(h)), Some(h));
        assert_eq!(capped_lifetime(Some(h), None), Some(h));
        let now = SystemTime::UNIX_EPOCH + h;
        assert_eq!(
            capped_expiry(Some(now + 2 * h), now, Some(h)),
            Some(now + h)
        );
        assert_eq!(capped_expiry(None, now, None), None);
    }

    #[test]
    fn aws_sessions_are_capped_but_stay_usable() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("c.toml");
        std::fs::write(
            &p,
            "[profiles.a]\ngrant = \"env\"\ntoken_env = \"T\"\n[profiles.a.policy]\nmax_token_lifetime = \"30m\"\n\
             [profiles.b]\ngrant = \"env\"\ntoken_env = \"T\"\n[profiles.b.policy]\nmax_token_lifetime = \"5m\"\n\
             [profiles.c]\ngrant = \"env\"\ntoken_env = \"T\"\n\
             [aws.ra]\nprofile = \"a\"\nrole_arn = \"arn:aws:iam::1:role/r\"\n\
             [aws.rb]\nprofile = \"b\"\nrole_arn = \"arn:aws:iam::1:role/r\"\n\
             [aws.rc]\nprofile = \"c\"\nrole_arn = \"arn:aws:iam::1:role/r\"\n",
        )
        .unwrap();
        let c = crate::config::Config::load_files(&[p]).unwrap();
        let r = aws_roles(&c);
        assert_eq!(r["ra"].duration(), 1800);
        assert_eq!(r["rb"].duration(), crate::config::AWS_MIN_DURATION_SECONDS);
        assert_eq!(r["rc"].duration(), c.aws["rc"].duration());
    }
}
