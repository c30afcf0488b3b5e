//! `[git]`, `[aws.NAME]`, `[docker]`: which profile each tool gets.

use serde::Deserialize;
use std::collections::BTreeMap;

/// git credential helper mapping.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GitConfig {
    /// Hosts and the profile serving each; `github.com -> github` is implied when a
    /// `github` profile exists.
    pub hosts: Vec<GitHostConfig>,
}

/// One git host.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GitHostConfig {
    /// Host (with `:port` when not the default).
    pub host: String,
    /// Profile whose token is the password.
    pub profile: String,
    /// Username to send (default `x-access-token`).
    pub username: Option<String>,
    /// Optional path prefix this entry is limited to.
    pub path_prefix: Option<String>,
}

/// An AWS role assumed with a profile's OIDC token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AwsRoleConfig {
    /// The OIDC profile whose token is the web identity.
    pub profile: String,
    /// Role to assume.
    pub role_arn: String,
    /// Session name (default `stagepass`).
    pub session_name: Option<String>,
    /// Session duration in seconds (default 3600).
    pub duration_seconds: Option<u32>,
    /// STS endpoint (default `https://sts.amazonaws.com`).
    pub sts_endpoint: Option<super::HttpUrl>,
}

/// docker credential helper mapping.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Registry host -> profile (`"ghcr.io" = "github"`), or a table with a username
    /// (`"registry.example" = { profile = "reg", username = "robot" }`).
    pub registries: BTreeMap<String, DockerRegistry>,
}

/// One registry: a profile name, or a profile and the username the registry expects.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "a profile name, or a table { profile = \"NAME\", username = \"USER\" }"
)]
pub enum DockerRegistry {
    /// Only the profile; the username defaults to `stagepass`.
    Profile(String),
    /// Profile and username.
    Detailed {
        /// Profile whose token is the registry secret.
        profile: String,
        /// Username sent with it.
        username: Option<String>,
    },
}

impl DockerRegistry {
    /// The profile serving this registry.
    pub fn profile(&self) -> &str {
        match self {
            Self::Profile(p) | Self::Detailed { profile: p, .. } => p,
        }
    }

    /// The configured username, if any.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Profile(_) => None,
            Self::Detailed { username, .. } => username.as_deref(),
        }
    }
}

/// Shortest STS session we accept: SDKs refetch credentials with less than 15 minutes
/// left, so a session must outlive that margin by a useful amount.
pub const AWS_MIN_DURATION_SECONDS: u32 = 1200;
/// Longest session STS grants.
pub const AWS_MAX_DURATION_SECONDS: u32 = 43_200;
/// Session duration when the config names none.
pub const AWS_DEFAULT_DURATION_SECONDS: u32 = 3600;
/// Session name when the config names none.
pub const AWS_DEFAULT_SESSION_NAME: &str = "stagepass";
/// STS endpoint when the config names none.
pub const AWS_DEFAULT_STS_ENDPOINT: &str = "https://sts.amazonaws.com";

impl AwsRoleConfig {
    /// Session duration, defaulted.
    pub fn duration(&self) -> u32 {
        self.duration_seconds
            .unwrap_or(AWS_DEFAULT_DURATION_SECONDS)
    }

    /// Session name, defaulted.
    pub fn session(&self) -> &str {
        self.session_name
            .as_deref()
            .unwrap_or(AWS_DEFAULT_SESSION_NAME)
    }

    /// STS endpoint, defaulted.
    pub fn endpoint(&self) -> &str {
        self.sts_endpoint
            .as_ref()
            .map_or(AWS_DEFAULT_STS_ENDPOINT, super::HttpUrl::as_str)
    }

    /// Checks what types cannot: duration range, session-name charset, ARN prefix.
    /// Returns the dotted key and what is wrong.
    pub fn validate(&self, name: &str) -> Result<(), (String, String)> {
        let key = |k: &str| format!("aws.{name}.{k}");
        let d = self.duration();
        if !(AWS_MIN_DURATION_SECONDS..=AWS_MAX_DURATION_SECONDS).contains(&d) {
            return Err((
                key("duration_seconds"),
                format!(
                    "{d} is out of range {AWS_MIN_DURATION_SECONDS}..={AWS_MAX_DURATION_SECONDS} \
                     (SDKs refetch credentials with under 15 minutes left)"
                ),
            ));
        }
        let s = self.session();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
        if !(2..=64).contains(&s.len()) || !s.chars().all(ok_char) {
            return Err((
                key("session_name"),
                format!("{s:?} must be 2-64 characters of [A-Za-z0-9_+=,.@-]"),
            ));
        }
        if !self.role_arn.starts_with("arn:") {
            return Err((
                key("role_arn"),
                format!(
                    "{:?} is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                    self.role_arn
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> AwsRoleConfig {
        AwsRoleConfig {
            profile: "aws".into(),
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            session_name: None,
            duration_seconds: None,
            sts_endpoint: None,
        }
    }

    #[test]
    fn aws_defaults_and_validation() {
        let r = role();
        assert_eq!(r.duration(), 3600);
        assert_eq!(r.session(), "stagepass");
        assert_eq!(r.endpoint(), "https://sts.amazonaws.com");
        assert!(r.validate("dev").is_ok());
        let short = AwsRoleConfig {
            duration_seconds: Some(900),
            ..role()
        };
        assert_eq!(
            short.validate("dev").unwrap_err().0,
            "aws.dev.duration_seconds"
        );
        let bad_name = AwsRoleConfig {
            session_name: Some("has space".into()),
            ..role()
        };
        assert_eq!(
            bad_name.validate("dev").unwrap_err().0,
            "aws.dev.session_name"
        );
        let bad_arn = AwsRoleConfig {
            role_arn: "dev".into(),
            ..role()
        };
        assert_eq!(bad_arn.validate("dev").unwrap_err().0, "aws.dev.role_arn");
    }

    #[test]
    fn docker_registry_string_or_table() {
        let c: DockerConfig = toml::from_str(
            "[registries]\n\"ghcr.io\" = \"github\"\n\"r.example\" = { profile = \"reg\", username = \"robot\" }\n",
        )
        .unwrap();
        assert_eq!(c.registries["ghcr.io"].profile(), "github");
        assert_eq!(c.registries["ghcr.io"].username(), None);
        assert_eq!(c.registries["r.example"].profile(), "reg");
        assert_eq!(c.registries["r.example"].username(), Some("robot"));
    }
}
