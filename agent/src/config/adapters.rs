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
    pub sts_endpoint: Option<String>,
}

/// docker credential helper mapping.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Registry host -> profile.
    pub registries: BTreeMap<String, String>,
}
