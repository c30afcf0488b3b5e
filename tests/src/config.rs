//! The agent's `config.toml`, typed: tests build it from these structs and
//! [`Config::to_toml`] writes it, instead of pasting TOML strings between files.
//!
//! Why not the agent's own `stagepass::config` types: they only deserialize, and they carry
//! every default, while a test wants to write just the keys it means (an absent key must
//! stay absent, so the agent's defaults are what is tested). Every field here is therefore
//! optional; `toml` writes no key for a `None`, so an unset field is absent from the file. Names and shapes follow
//! `docs/configuration.md`; a test that writes broken or hostile TOML on purpose keeps a
//! literal string ([`crate::Home::write_config_text`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{HarnessError, Result};

/// The whole file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// `[agent]`.
    pub agent: Option<Agent>,
    /// `[api]`.
    pub api: Option<Api>,
    /// `[store]`.
    pub store: Option<Store>,
    /// `[catalog]`.
    pub catalog: Option<Catalog>,
    /// `[attestation]`.
    pub attestation: Option<Attestation>,
    /// `[audit]`.
    pub audit: Option<Audit>,
    /// `[profiles.NAME]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, Profile>,
    /// `[[git.hosts]]`.
    pub git: Option<Git>,
    /// `[aws.NAME]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aws: BTreeMap<String, AwsRole>,
    /// `[docker.registries]`.
    pub docker: Option<Docker>,
}

impl Config {
    /// An empty file: every setting at the agent's default.
    pub fn new() -> Config {
        Config::default()
    }

    /// The setup most agent tests start from: the API on an ephemeral TCP port (so two
    /// agents of one run never collide) and the file store (no keyring on a test host).
    pub fn agent_on_ephemeral_port() -> Config {
        Config::new().api(Api::port(0)).store("file")
    }

    /// Sets `[api]`.
    pub fn api(mut self, api: Api) -> Config {
        self.api = Some(api);
        self
    }

    /// Sets `[store] backend`.
    pub fn store(mut self, backend: &str) -> Config {
        self.store = Some(Store {
            backend: Some(backend.to_string()),
            dir: None,
        });
        self
    }

    /// Sets `[agent]`.
    pub fn agent(mut self, agent: Agent) -> Config {
        self.agent = Some(agent);
        self
    }

    /// Sets `[catalog]`.
    pub fn catalog(mut self, catalog: Catalog) -> Config {
        self.catalog = Some(catalog);
        self
    }

    /// `[catalog] enabled = false`: for tests of tokens only, so the agent does not watch
    /// the working directory.
    pub fn catalog_off(self) -> Config {
        self.catalog(Catalog {
            enabled: Some(false),
            ..Catalog::default()
        })
    }

    /// Sets `[attestation]`.
    pub fn attestation(mut self, attestation: Attestation) -> Config {
        self.attestation = Some(attestation);
        self
    }

    /// Sets `[audit]`.
    pub fn audit(mut self, audit: Audit) -> Config {
        self.audit = Some(audit);
        self
    }

    /// Adds (or replaces) `[profiles.NAME]`.
    pub fn profile(mut self, name: &str, profile: Profile) -> Config {
        self.profiles.insert(name.to_string(), profile);
        self
    }

    /// Adds a `[[git.hosts]]` entry serving `host` from `profile`.
    pub fn git_host(mut self, host: GitHost) -> Config {
        self.git.get_or_insert_with(Git::default).hosts.push(host);
        self
    }

    /// Adds (or replaces) `[aws.NAME]`.
    pub fn aws(mut self, name: &str, role: AwsRole) -> Config {
        self.aws.insert(name.to_string(), role);
        self
    }

    /// Adds (or replaces) `[docker.registries."REGISTRY"]`.
    pub fn docker_registry(mut self, registry: &str, entry: Registry) -> Config {
        self.docker
            .get_or_insert_with(Docker::default)
            .registries
            .insert(registry.to_string(), entry);
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self)
            .map_err(|e| HarnessError::Other(format!("serializing the test config: {e}")))
    }

    /// Writes the file at `path` (the directory must exist).
    pub fn write_to(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_toml()?)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }
}

/// `[agent]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Agent {
    /// `log_level` (`info`, `debug`, ...).
    pub log_level: Option<String>,
    /// `log_format` (`text` or `json`).
    pub log_format: Option<String>,
    /// `state_dir`.
    pub state_dir: Option<PathBuf>,
}

/// `[api]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Api {
    /// `tcp`: whether the loopback TCP listener runs.
    pub tcp: Option<bool>,
    /// `listen` address.
    pub listen: Option<String>,
    /// `port` (0: ephemeral).
    pub port: Option<u16>,
    /// `unix_socket`.
    pub unix_socket: Option<bool>,
    /// `header_read_timeout_secs`.
    pub header_read_timeout_secs: Option<u64>,
    /// `idle_timeout_secs`.
    pub idle_timeout_secs: Option<u64>,
    /// `max_connections`.
    pub max_connections: Option<usize>,
    /// `max_header_bytes`.
    pub max_header_bytes: Option<usize>,
    /// `max_headers`.
    pub max_headers: Option<usize>,
    /// `max_body_bytes`.
    pub max_body_bytes: Option<usize>,
}

impl Api {
    /// `[api] port = PORT` and nothing else.
    pub fn port(port: u16) -> Api {
        Api {
            port: Some(port),
            ..Api::default()
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Store {
    /// `backend` (`auto`, `file`, `keyring`).
    pub backend: Option<String>,
    /// `dir`.
    pub dir: Option<PathBuf>,
}

/// `[profiles.NAME]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Profile {
    /// `grant` (`device`, `authorization-code`, `client-credentials`, `exchange`, `env`).
    pub grant: Option<String>,
    /// `issuer`.
    pub issuer: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `client_secret_file`.
    pub client_secret_file: Option<PathBuf>,
    /// `client_secret_env`.
    pub client_secret_env: Option<String>,
    /// `scopes`.
    pub scopes: Option<Vec<String>>,
    /// `audience`.
    pub audience: Option<String>,
    /// `subject_profile` (exchange).
    pub subject_profile: Option<String>,
    /// `token_env` (env, exchange).
    pub token_env: Option<String>,
    /// `skew_seconds`.
    pub skew_seconds: Option<u64>,
    /// `redirect_port` (authorization-code).
    pub redirect_port: Option<u16>,
    /// `[profiles.NAME.policy]`.
    pub policy: Option<Policy>,
}

impl Profile {
    /// A profile of `grant` at `issuer` for `client_id`.
    fn oauth(grant: &str, issuer: &str, client_id: &str) -> Profile {
        Profile {
            grant: Some(grant.to_string()),
            issuer: Some(issuer.to_string()),
            client_id: Some(client_id.to_string()),
            ..Profile::default()
        }
    }

    /// `grant = "device"`.
    pub fn device(issuer: &str, client_id: &str) -> Profile {
        Profile::oauth("device", issuer, client_id)
    }

    /// `grant = "authorization-code"`.
    pub fn authorization_code(issuer: &str, client_id: &str) -> Profile {
        Profile::oauth("authorization-code", issuer, client_id)
    }

    /// `grant = "client-credentials"` with the secret in `secret_file`.
    pub fn client_credentials(issuer: &str, client_id: &str, secret_file: &Path) -> Profile {
        Profile {
            client_secret_file: Some(secret_file.to_path_buf()),
            ..Profile::oauth("client-credentials", issuer, client_id)
        }
    }

    /// A device login of the test IdP's public client ([`crate::Idp::PUBLIC_CLIENT`]) for
    /// Backstage's audience, with offline access and `catalog:read`: the profile of a user.
    pub fn device_for_backstage(issuer: &str) -> Profile {
        Profile::device(issuer, crate::Idp::PUBLIC_CLIENT)
            .scopes(&["openid", "offline_access", "catalog:read"])
            .audience(crate::idp::AUD_BACKSTAGE)
    }

    /// The test IdP's confidential client ([`crate::Idp::CONFIDENTIAL_CLIENT`], secret in
    /// `secret_file`) asking for Backstage's audience with `catalog:read`: the profile most
    /// tests that need any fresh token use.
    pub fn ci_for_backstage(issuer: &str, secret_file: &Path) -> Profile {
        Profile::client_credentials(issuer, crate::Idp::CONFIDENTIAL_CLIENT, secret_file)
            .audience(crate::idp::AUD_BACKSTAGE)
            .scopes(&["catalog:read"])
    }

    /// `grant = "exchange"` of another profile's token.
    pub fn exchange(issuer: &str, client_id: &str, subject_profile: &str) -> Profile {
        Profile {
            subject_profile: Some(subject_profile.to_string()),
            ..Profile::oauth("exchange", issuer, client_id)
        }
    }

    /// `grant = "exchange"` of the token in the agent's environment variable `var`.
    pub fn exchange_of_env(issuer: &str, client_id: &str, var: &str) -> Profile {
        Profile {
            token_env: Some(var.to_string()),
            ..Profile::oauth("exchange", issuer, client_id)
        }
    }

    /// `grant = "env"`: the token is the value of `var` in the agent's environment.
    pub fn env(var: &str) -> Profile {
        Profile {
            grant: Some("env".to_string()),
            token_env: Some(var.to_string()),
            ..Profile::default()
        }
    }

    /// Sets `scopes`.
    pub fn scopes(mut self, scopes: &[&str]) -> Profile {
        self.scopes = Some(scopes.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets `audience`.
    pub fn audience(mut self, audience: &str) -> Profile {
        self.audience = Some(audience.to_string());
        self
    }

    /// Sets `token_env`.
    pub fn token_env(mut self, var: &str) -> Profile {
        self.token_env = Some(var.to_string());
        self
    }

    /// Sets `redirect_port`.
    pub fn redirect_port(mut self, port: u16) -> Profile {
        self.redirect_port = Some(port);
        self
    }

    /// Sets `skew_seconds`.
    pub fn skew_seconds(mut self, secs: u64) -> Profile {
        self.skew_seconds = Some(secs);
        self
    }

    /// Sets `[profiles.NAME.policy]`.
    pub fn policy(mut self, policy: Policy) -> Profile {
        self.policy = Some(policy);
        self
    }
}

/// `[profiles.NAME.policy]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Policy {
    /// `allow`: the callers that may have the profile's tokens.
    pub allow: Option<Vec<AllowRule>>,
    /// `max_grant_age` (`"30d"`, `"1h"`, ...).
    pub max_grant_age: Option<String>,
    /// `max_token_lifetime`.
    pub max_token_lifetime: Option<String>,
}

/// One `allow` rule.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AllowRule {
    /// `name`.
    pub name: Option<String>,
    /// `exe`: allowed executable paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exe: Vec<String>,
    /// `uid`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uid: Vec<u32>,
    /// `parent`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parent: Vec<String>,
}

impl AllowRule {
    /// A rule named `name` allowing the executables `exe`.
    pub fn exe(name: &str, exe: &[&str]) -> AllowRule {
        AllowRule {
            name: Some(name.to_string()),
            exe: exe.iter().map(|s| s.to_string()).collect(),
            ..AllowRule::default()
        }
    }
}

/// `[catalog]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `root`: the working tree watched.
    pub root: Option<PathBuf>,
    /// `globs`.
    pub globs: Option<Vec<String>>,
    /// `debounce_ms`.
    pub debounce_ms: Option<u64>,
    /// `backstage_url`.
    pub backstage_url: Option<String>,
    /// `profile` whose tokens call Backstage.
    pub profile: Option<String>,
    /// `url_template` (`{branch}`, `{path}` placeholders).
    pub url_template: Option<String>,
    /// `branch`.
    pub branch: Option<String>,
    /// `unregister_deleted`.
    pub unregister_deleted: Option<bool>,
    /// `retry_max_ms`.
    pub retry_max_ms: Option<u64>,
}

impl Catalog {
    /// The catalog watching `root` and pushing to Backstage at `backstage_url` with the
    /// tokens of `profile`.
    pub fn pushing(root: &Path, backstage_url: &str, profile: &str) -> Catalog {
        Catalog {
            root: Some(root.to_path_buf()),
            backstage_url: Some(backstage_url.to_string()),
            profile: Some(profile.to_string()),
            ..Catalog::default()
        }
    }
}

/// `[attestation]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attestation {
    /// `enabled`.
    pub enabled: Option<bool>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `max_bytes` before rotation.
    pub max_bytes: Option<u64>,
    /// `keep`: rotated files kept.
    pub keep: Option<u32>,
    /// `queue` length.
    pub queue: Option<usize>,
    /// `syslog`.
    pub syslog: Option<bool>,
    /// `syslog_socket`.
    pub syslog_socket: Option<PathBuf>,
}

/// `[git]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Git {
    /// `[[git.hosts]]`.
    pub hosts: Vec<GitHost>,
}

/// One `[[git.hosts]]` entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GitHost {
    /// `host` (`name[:port]`).
    pub host: String,
    /// `profile` serving it.
    pub profile: String,
    /// `username`.
    pub username: Option<String>,
    /// `path_prefix`.
    pub path_prefix: Option<String>,
}

impl GitHost {
    /// `host` served by `profile`.
    pub fn new(host: &str, profile: &str) -> GitHost {
        GitHost {
            host: host.to_string(),
            profile: profile.to_string(),
            ..GitHost::default()
        }
    }
}

/// `[aws.NAME]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AwsRole {
    /// `profile` whose token is the web identity.
    pub profile: String,
    /// `role_arn`.
    pub role_arn: String,
    /// `session_name`.
    pub session_name: Option<String>,
    /// `duration_seconds`.
    pub duration_seconds: Option<u32>,
    /// `sts_endpoint`.
    pub sts_endpoint: Option<String>,
}

impl AwsRole {
    /// `role_arn` assumed with the tokens of `profile`.
    pub fn new(profile: &str, role_arn: &str) -> AwsRole {
        AwsRole {
            profile: profile.to_string(),
            role_arn: role_arn.to_string(),
            ..AwsRole::default()
        }
    }
}

/// `[docker]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Docker {
    /// `[docker.registries]`.
    pub registries: BTreeMap<String, Registry>,
}

/// One `[docker.registries]` entry, in either of its two documented shapes.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Registry {
    /// `"REGISTRY" = "PROFILE"`.
    Profile(String),
    /// `"REGISTRY" = { profile = "...", username = "..." }`.
    Full {
        /// `profile`.
        profile: String,
        /// `username`.
        username: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_keys_are_left_out_and_nested_tables_come_out_valid() {
        let text = Config::agent_on_ephemeral_port()
            .profile(
                "dev",
                Profile::device("http://127.0.0.1:1/oidc", "cli").scopes(&["openid"]),
            )
            .profile(
                "p",
                Profile::env("T").policy(Policy {
                    allow: Some(vec![AllowRule::exe("sleep", &["/bin/sleep"])]),
                    ..Policy::default()
                }),
            )
            .git_host(GitHost::new("h:1", "dev"))
            .docker_registry("r.example", Registry::Profile("dev".into()))
            .to_toml()
            .unwrap();
        let v: toml::Table = text.parse().unwrap();
        assert_eq!(v["api"]["port"].as_integer(), Some(0));
        assert_eq!(v["store"]["backend"].as_str(), Some("file"));
        assert!(v.get("catalog").is_none(), "{text}");
        assert!(v["profiles"]["dev"].get("audience").is_none(), "{text}");
        assert_eq!(
            v["profiles"]["p"]["policy"]["allow"][0]["exe"][0].as_str(),
            Some("/bin/sleep")
        );
        assert_eq!(v["git"]["hosts"][0]["host"].as_str(), Some("h:1"));
        assert_eq!(v["docker"]["registries"]["r.example"].as_str(), Some("dev"));
    }
}
