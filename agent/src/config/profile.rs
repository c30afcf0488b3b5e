//! `[profiles.NAME]`: one per token a tool needs (issuer, client, grant kind, audience, scopes).

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// How a profile obtains its tokens.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GrantKind {
    /// RFC 8628 device authorization once, then refresh tokens.
    Device,
    /// RFC 8693 token exchange of another profile's (or an env var's) token.
    Exchange,
    /// OAuth authorization code with PKCE (S256) once, in the user's browser, then refresh
    /// tokens: Backstage's own authorization server (`<backend>/api/auth`), so the tokens
    /// are the user's, not a service principal's.
    AuthorizationCode,
    /// OAuth2 client credentials; the secret comes from a file or env var.
    ClientCredentials,
    /// A token the environment already holds (e.g. the Codespace's `GITHUB_TOKEN`).
    Env,
}

/// Replaced in an `authorization-code` profile's `client_id` by the workspace id (a random
/// id kept in the state dir): one Client ID Metadata Document URL template then gives every
/// workspace its own client, so signing in from one does not end another's session.
pub const WORKSPACE_PLACEHOLDER: &str = "{workspace}";

/// Where a client secret is read from; never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose content (trimmed) is the secret.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// One profile as written in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// How tokens are obtained.
    pub grant: GrantKind,
    /// OIDC issuer URL (discovery at `/.well-known/openid-configuration`).
    pub issuer: Option<super::HttpUrl>,
    /// OAuth client id. With `authorization-code` it may hold [`WORKSPACE_PLACEHOLDER`],
    /// filled with this workspace's id, so each workspace of one user is its own client of
    /// Backstage (which keeps one offline session per user and client).
    pub client_id: Option<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Refused: a secret must not be written into a config file. Present only to say so.
    pub client_secret: Option<toml::Value>,
    /// Scopes to ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 8707 resource / audience of the access token.
    pub audience: Option<String>,
    /// `exchange`: the profile whose token is the subject token.
    pub subject_profile: Option<String>,
    /// `exchange`: env var holding the subject token; `env`: env var holding the token.
    pub token_env: Option<String>,
    /// Seconds of validity a handed-out token must still have (default 60, capped for short tokens).
    pub skew_seconds: Option<u64>,
    /// `authorization-code`: the loopback port of the redirect listener
    /// (`http://127.0.0.1:PORT/callback`); a static client's redirect URI must match it
    /// exactly. Absent: any free port (clients that allow any loopback port).
    pub redirect_port: Option<u16>,
    /// `[profiles.NAME.policy]`: allowed callers, maximum login age and token lifetime.
    #[serde(default)]
    pub policy: super::PolicyConfig,
}

impl GrantKind {
    /// Grants that begin with an interactive login and keep a refresh token in the store.
    pub fn stores_login(self) -> bool {
        matches!(self, Self::Device | Self::AuthorizationCode)
    }

    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Exchange => "exchange",
            Self::ClientCredentials => "client-credentials",
            Self::Env => "env",
            Self::AuthorizationCode => "authorization-code",
        }
    }
}

impl ProfileConfig {
    /// An `env` profile serving the token held in `var`.
    pub fn from_env_var(var: &str) -> Self {
        Self {
            grant: GrantKind::Env,
            issuer: None,
            client_id: None,
            client_secret_file: None,
            client_secret_env: None,
            client_secret: None,
            scopes: Vec::new(),
            audience: None,
            subject_profile: None,
            token_env: Some(var.to_string()),
            skew_seconds: None,
            redirect_port: None,
            policy: super::PolicyConfig::default(),
        }
    }

    /// Where the client secret comes from, if any.
    pub fn secret_source(&self) -> Option<SecretSource> {
        if let Some(f) = &self.client_secret_file {
            return Some(SecretSource::File(f.clone()));
        }
        self.client_secret_env.clone().map(SecretSource::Env)
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: PathBuf::from("(config)"),
            line: 0,
            column: 0,
            key: format!("profiles.{name}.{key}"),
            message: message.to_string(),
        };
        if self.client_secret.is_some() {
            return Err(invalid(
                "client_secret",
                "a client secret must not be written in a config file; use client_secret_file or client_secret_env",
            ));
        }
        match self.grant {
            GrantKind::Device | GrantKind::ClientCredentials | GrantKind::AuthorizationCode => {
                if self.issuer.is_none() {
                    return Err(invalid("issuer", "required for this grant"));
                }
                if self.client_id.is_none() {
                    return Err(invalid("client_id", "required for this grant"));
                }
            }
            GrantKind::Exchange => {
                if self.issuer.is_none() {
                    return Err(invalid("issuer", "required for grant = \"exchange\""));
                }
                if self.subject_profile.is_none() == self.token_env.is_none() {
                    return Err(invalid(
                        "subject_profile",
                        "grant = \"exchange\" needs exactly one of subject_profile or token_env",
                    ));
                }
            }
            GrantKind::Env => {
                if self.token_env.is_none() {
                    return Err(invalid("token_env", "required for grant = \"env\""));
                }
            }
        }
        if let Some(id) = &self.client_id {
            let templated = id.contains(WORKSPACE_PLACEHOLDER);
            if templated && self.grant != GrantKind::AuthorizationCode {
                return Err(invalid(
                    "client_id",
                    "only grant = \"authorization-code\" fills {workspace} (a client per workspace)",
                ));
            }
            if id.replace(WORKSPACE_PLACEHOLDER, "").contains(['{', '}']) {
                return Err(invalid(
                    "client_id",
                    "the only placeholder is {workspace} (this workspace's id)",
                ));
            }
        }
        if self.redirect_port.is_some() && self.grant != GrantKind::AuthorizationCode {
            return Err(invalid(
                "redirect_port",
                "only grant = \"authorization-code\" has a redirect listener",
            ));
        }
        self.policy.validate(name)?;
        if self.grant == GrantKind::ClientCredentials && self.secret_source().is_none() {
            return Err(invalid(
                "client_secret_file",
                "grant = \"client-credentials\" needs client_secret_file or client_secret_env",
            ));
        }
        Ok(())
    }
}
