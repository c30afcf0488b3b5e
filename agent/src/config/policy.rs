//! `[attestation]`, `[audit]` and `[profiles.NAME.policy]`: who may get a profile's tokens,
//! for how long a login and a token may live, and where the audit trail of hand-outs goes.
//!
//! The defaults change nothing: every caller of the agent's uid gets every profile, logins
//! live until the IdP ends them, and tokens are advertised with the IdP's lifetime. The
//! audit log is on by default because it costs nothing the caller waits for.

use super::ConfigError;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// A duration written as a whole number and a unit: `90s`, `30m`, `12h`, `7d`.
///
/// Exists so policy lengths read like what compliance documents say ("12 h") instead of a
/// count of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `N[s|m|h|d]`; a bare number is seconds.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("{s:?} is not a duration like \"90s\", \"30m\", \"12h\", \"7d\"")
        })?;
        let mult = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => {
                return Err(format!("unknown unit {other:?} in {s:?}; use s, m, h or d"));
            }
        };
        let secs = n
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too long"))?;
        if secs == 0 {
            return Err(format!("{s:?} must be longer than zero"));
        }
        Ok(Self(Duration::from_secs(secs)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"90s\", \"30m\", \"12h\", \"7d\" or seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                if n == 0 {
                    return Err(E::custom("must be longer than zero"));
                }
                Ok(HumanDuration(Duration::from_secs(n)))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                let n = u64::try_from(n).map_err(|_| E::custom("must be longer than zero"))?;
                self.visit_u64(n)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(s).map_err(E::custom)
            }
        }
        // Self-describing formats (TOML) call whichever visit method fits the value; the
        // hint matters only to formats that are not.
        d.deserialize_u64(V)
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.as_secs();
        if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

/// `[profiles.NAME.policy]`: which callers get the profile's tokens, and for how long.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Callers allowed; absent = every caller of our uid (the default). A caller must match
    /// at least one rule; `allow = []` refuses everyone.
    pub allow: Option<Vec<AllowRule>>,
    /// A login older than this must be renewed by a new `stagepass login` (device profiles).
    pub max_grant_age: Option<HumanDuration>,
    /// Tokens are advertised (and renewed) as if they lived at most this long.
    pub max_token_lifetime: Option<HumanDuration>,
}

/// One allow rule: every matcher given must match (AND); rules are alternatives (OR).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AllowRule {
    /// Name used in audit records and refusals; default `allow[N]`.
    pub name: Option<String>,
    /// Globs of the caller's executable path (`/usr/bin/git`, `/usr/lib/git-core/*`).
    pub exe: super::ExeGlobs,
    /// The caller's uid must be one of these.
    pub uid: Vec<u32>,
    /// Globs of which at least one ancestor's executable path must match.
    pub parent: super::ExeGlobs,
}

impl PolicyConfig {
    pub(super) fn validate(&self, profile: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: PathBuf::from("(config)"),
            line: 0,
            column: 0,
            key,
            message,
        };
        for (i, r) in self.allow.iter().flatten().enumerate() {
            if r.exe.is_empty() && r.uid.is_empty() && r.parent.is_empty() {
                return Err(invalid(
                    format!("profiles.{profile}.policy.allow[{i}]"),
                    "this rule matches nothing: give at least one of exe, uid, parent".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `[attestation]`: identify the process behind every credential request.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    /// Identify callers through SO_PEERCRED and /proc (needed by `allow` rules).
    pub enabled: bool,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[audit]`: one JSON line per credential handed out or refused.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Write the audit log at all.
    pub enabled: bool,
    /// Rotate `audit.jsonl` when it would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` .. `.N`).
    pub keep: u32,
    /// Records waiting for the writer; beyond this they are dropped (and counted).
    pub queue: usize,
    /// Also send every record to syslog (RFC 5424 over a datagram socket).
    pub syslog: bool,
    /// The syslog socket (`/dev/log`; journald listens there too).
    pub syslog_socket: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
            queue: 4096,
            syslog: false,
            syslog_socket: PathBuf::from("/dev/log"),
        }
    }
}

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: PathBuf::from("(config)"),
            line: 0,
            column: 0,
            key: key.into(),
            message: message.into(),
        };
        if self.max_bytes < 4096 {
            return Err(invalid("audit.max_bytes", "must be at least 4096"));
        }
        if self.queue == 0 {
            return Err(invalid("audit.queue", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(HumanDuration::parse("90").unwrap().0.as_secs(), 90);
        assert_eq!(HumanDuration::parse("30m").unwrap().0.as_secs(), 1800);
        assert_eq!(HumanDuration::parse("12h").unwrap().0.as_secs(), 43_200);
        assert_eq!(HumanDuration::parse("7d").unwrap().0.as_secs(), 604_800);
        assert!(HumanDuration::parse("0s").is_err());
        assert!(HumanDuration::parse("12y").is_err());
        assert!(HumanDuration::parse("h").is_err());
        assert_eq!(HumanDuration::parse("12h").unwrap().to_string(), "12h");
        assert_eq!(HumanDuration::parse("61").unwrap().to_string(), "61s");
    }

    #[test]
    fn empty_rules_are_refused() {
        let p = PolicyConfig {
            allow: Some(vec![AllowRule::default()]),
            ..Default::default()
        };
        assert!(
            p.validate("gh")
                .unwrap_err()
                .to_string()
                .contains("matches nothing")
        );
    }

    #[test]
    fn switches_come_from_the_environment_and_rules_need_attestation() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        let c = crate::config::Config::load(
            &[],
            env(&[
                ("STAGEPASS_AUDIT__ENABLED", "false"),
                ("STAGEPASS_ATTESTATION__ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert!(!c.audit.enabled && !c.attestation.enabled);
        let err = crate::config::Config::load(
            &[],
            env(&[
                ("STAGEPASS_ATTESTATION__ENABLED", "false"),
                ("STAGEPASS_PROFILES__GH__GRANT", "env"),
                ("STAGEPASS_PROFILES__GH__TOKEN_ENV", "T"),
                (
                    "STAGEPASS_PROFILES__GH__POLICY__ALLOW",
                    "[{exe=[\"/usr/bin/git\"]}]",
                ),
                ("STAGEPASS_PROFILES__GH__POLICY__MAX_GRANT_AGE", "12h"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("attestation.enabled"), "{err}");
        let c = crate::config::Config::load(
            &[],
            env(&[
                ("STAGEPASS_PROFILES__GH__GRANT", "env"),
                ("STAGEPASS_PROFILES__GH__TOKEN_ENV", "T"),
                ("STAGEPASS_PROFILES__GH__POLICY__MAX_GRANT_AGE", "12h"),
                ("STAGEPASS_PROFILES__GH__POLICY__MAX_TOKEN_LIFETIME", "600"),
            ]),
        )
        .unwrap();
        let p = &c.profiles["gh"].policy;
        assert_eq!(p.max_grant_age.unwrap().0.as_secs(), 43_200);
        assert_eq!(p.max_token_lifetime.unwrap().0.as_secs(), 600);
    }
}
