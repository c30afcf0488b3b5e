//! Configuration: layered TOML parsed into typed values, with errors that name file, line and key.
//!
//! Layers, later overriding earlier: `/etc/stagepass/config.toml` (written by the feature),
//! `~/.config/stagepass/config.toml`, the `--config` file, `STAGEPASS_*` environment variables.
//! Each file is checked on its own first (unknown keys, bad values) so an error points at the
//! file and line that caused it; then the layers are merged table by table.
//!
//! With no configuration at all the agent still runs (see [`Config::default_profiles_from_env`]).

mod adapters;
mod api;
mod catalog;
mod duration;
#[cfg(test)]
mod fixtures;
mod glob;
mod http_url;
mod layers;
mod name;
mod policy;
mod profile;

pub use adapters::{
    AWS_MIN_DURATION_SECONDS, AwsRoleConfig, DockerConfig, DockerRegistry, GitConfig, GitHostConfig,
};
pub use api::ApiConfig;
pub use catalog::CatalogConfig;
pub use glob::{CatalogGlobs, ExeGlobs, GlobList};
pub use http_url::HttpUrl;
pub use layers::ENV_PREFIX;
pub use name::valid_name;
pub use policy::{AllowRule, AttestationConfig, AuditConfig, HumanDuration, PolicyConfig};
pub use profile::{GrantKind, ProfileConfig, SecretSource, WORKSPACE_PLACEHOLDER};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why a configuration could not be used. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Syntax error, unknown key or a value of the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value that parses but is not acceptable (e.g. a secret written into the file).
    /// `path` is the file, or `env STAGEPASS_...` for the environment layer.
    #[error("{}{}: {key}: {message}", path.display(), match (*line, *column) { (0, _) => String::new(), (l, 0) => format!(":{l}"), (l, c) => format!(":{l}:{c}") })]
    Invalid {
        /// The file the offending key came from.
        path: PathBuf,
        /// 1-based line of the key, 0 when unknown.
        line: usize,
        /// 1-based column of the key's value, 0 when unknown.
        column: usize,
        /// Dotted key, e.g. `profiles.backstage.client_secret`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An environment variable that does not fit the schema.
    #[error("{origin}: {key}: {message}")]
    Layer {
        /// `env STAGEPASS_...`.
        origin: String,
        /// Dotted key it maps to.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Agent-wide settings (`[agent]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Default log filter when `RUST_LOG` is unset (`info`, `debug`, `stagepass=trace`, ...).
    pub log_level: String,
    /// `text` for people, `json` for log shippers.
    pub log_format: LogFormat,
    /// Where the persistent state lives instead of `$XDG_STATE_HOME/stagepass`: the Feature
    /// points it at its state volume so that a container rebuild keeps the login.
    pub state_dir: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            state_dir: None,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where refresh tokens are kept (`[store]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `auto` (persistent keyring if one answers, else file), `keyring` or `file`.
    pub backend: StoreBackendChoice,
    /// Directory of the file store; default `$XDG_STATE_HOME/stagepass/grants`.
    pub dir: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackendChoice::Auto,
            dir: None,
        }
    }
}

/// The store backend asked for in the config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackendChoice {
    /// Keyring when a persistent one answers, else the file store.
    #[default]
    Auto,
    /// Secret Service keyring only; fail if none answers.
    Keyring,
    /// File store only.
    File,
}

/// The whole configuration after all layers are merged.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[agent]`.
    pub agent: AgentConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[profiles.NAME]`, one per token a tool needs.
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// `[catalog]`.
    pub catalog: CatalogConfig,
    /// `[git]`.
    pub git: GitConfig,
    /// `[aws.NAME]`: STS roles served as AWS container credentials.
    pub aws: BTreeMap<String, AwsRoleConfig>,
    /// `[docker]`.
    pub docker: DockerConfig,
    /// `[attestation]`: identify the process behind each credential request.
    pub attestation: AttestationConfig,
    /// `[audit]`: the audit log of credentials handed out or refused.
    pub audit: AuditConfig,
}

impl Config {
    /// Loads and merges the given files (missing files are skipped), then validates.
    /// No environment layer; see [`Config::load`].
    pub fn load_files(files: &[PathBuf]) -> Result<Self, ConfigError> {
        Self::load(files, std::iter::empty())
    }

    /// Loads every layer: the files in order, then the `STAGEPASS_*` variables of the process
    /// environment.
    pub fn load_from_process(files: &[PathBuf]) -> Result<Self, ConfigError> {
        Self::load(files, std::env::vars())
    }

    /// Loads and merges files (missing ones skipped) and the `STAGEPASS_SECTION__KEY`
    /// variables among `env` (e.g. `STAGEPASS_AGENT__LOG_LEVEL=debug`), later layers
    /// overriding earlier ones; then validates. Every error names the file, line and column,
    /// or the variable, that caused it.
    pub fn load(
        files: &[PathBuf],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut all = Vec::new();
        for path in files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            all.push(layers::file_layer(path, &text)?);
        }
        all.extend(layers::env_layer(env)?);
        let mut merged = toml::Table::new();
        for l in &all {
            merge(&mut merged, l.table.clone());
        }
        let located = |e: ConfigError| relocate(e, &all);
        check_required(&merged).map_err(located)?;
        let config: Config = match Config::deserialize(toml::Value::Table(merged.clone())) {
            Ok(c) => c,
            Err(e) => return Err(located(merged_error(&merged, e.message()))),
        };
        config.validate().map_err(located)?;
        Ok(config)
    }

    /// Checks rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let names = self.profiles.keys().map(|n| ("profiles", n));
        for (table, name) in names.chain(self.aws.keys().map(|n| ("aws", n))) {
            if !valid_name(name) {
                return Err(ConfigError::Invalid {
                    path: PathBuf::from("(config)"),
                    line: 0,
                    column: 0,
                    key: format!("{table}.{name}"),
                    message: format!(
                        "{name:?} is not a usable name: 1-64 of A-Z a-z 0-9 - _ . not starting with a dot (it goes into URLs and command lines)"
                    ),
                });
            }
        }
        for (name, p) in &self.profiles {
            p.validate(name)?;
        }
        self.check_profile_refs()?;
        if let Some(dir) = &self.agent.state_dir
            && !dir.is_absolute()
        {
            return Err(ConfigError::Invalid {
                path: PathBuf::from("(config)"),
                line: 0,
                column: 0,
                key: "agent.state_dir".into(),
                message: format!("{} is not an absolute path", dir.display()),
            });
        }
        self.api.validate()?;
        self.audit.validate()?;
        if !self.attestation.enabled
            && let Some((name, _)) = self.profiles.iter().find(|(_, p)| p.policy.allow.is_some())
        {
            return Err(ConfigError::Invalid {
                path: PathBuf::from("(config)"),
                line: 0,
                column: 0,
                key: "attestation.enabled".into(),
                message: format!(
                    "profiles.{name}.policy.allow needs caller attestation; set attestation.enabled = true or remove the rules"
                ),
            });
        }
        // Registries written as URLs: the issuer, STS and Backstage URLs are checked by
        // their type, `HttpUrl`.
        for url in self.docker.registries.keys().filter(|k| k.contains("://")) {
            crate::cleartext::check(url)
                .map_err(|message| unlocated(format!("docker.registries.{url}"), message))?;
        }
        for (name, role) in &self.aws {
            role.validate(name)
                .map_err(|(key, message)| unlocated(key, message))?;
        }
        Ok(())
    }

    /// Every place that names a profile: (dotted key, the name).
    fn profile_refs(&self) -> Vec<(String, &str)> {
        let mut refs = Vec::new();
        if let Some(p) = &self.catalog.profile {
            refs.push(("catalog.profile".to_string(), p.as_str()));
        }
        for (name, p) in &self.profiles {
            if let Some(s) = &p.subject_profile {
                refs.push((format!("profiles.{name}.subject_profile"), s.as_str()));
            }
        }
        for (i, h) in self.git.hosts.iter().enumerate() {
            refs.push((format!("git.hosts[{i}].profile"), h.profile.as_str()));
        }
        for (name, role) in &self.aws {
            refs.push((format!("aws.{name}.profile"), role.profile.as_str()));
        }
        for (host, r) in &self.docker.registries {
            let key = match r {
                DockerRegistry::Profile(_) => format!("docker.registries.{host}"),
                DockerRegistry::Detailed { .. } => format!("docker.registries.{host}.profile"),
            };
            refs.push((key, r.profile()));
        }
        refs
    }

    /// A profile named anywhere must be configured (a tool would otherwise get "unknown
    /// profile" only when it asks), and `subject_profile` chains must end.
    ///
    /// With no profile configured at all, `github` may be named: it is the profile
    /// [`Config::default_profiles_from_env`] serves from `GITHUB_TOKEN`.
    pub(crate) fn check_profile_refs(&self) -> Result<(), ConfigError> {
        for (key, name) in self.profile_refs() {
            let implied = self.profiles.is_empty() && name == "github";
            if !implied && !self.profiles.contains_key(name) {
                let configured = if self.profiles.is_empty() {
                    "none is configured".to_string()
                } else {
                    let names: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                    format!("configured: {}", names.join(", "))
                };
                return Err(unlocated(
                    key,
                    format!("profile {name:?} is not configured ({configured})"),
                ));
            }
        }
        for start in self.profiles.keys() {
            let mut chain = vec![start.as_str()];
            let mut cur = start.as_str();
            while let Some(next) = self
                .profiles
                .get(cur)
                .and_then(|p| p.subject_profile.as_deref())
            {
                if chain.contains(&next) {
                    return Err(unlocated(
                        format!("profiles.{start}.subject_profile"),
                        format!(
                            "the subject_profile chain loops: {} -> {next}",
                            chain.join(" -> ")
                        ),
                    ));
                }
                chain.push(next);
                cur = next;
            }
        }
        Ok(())
    }

    /// With no profiles configured, serve the tokens the environment already holds:
    /// `GITHUB_TOKEN` or `GH_TOKEN` as profile `github`.
    pub fn default_profiles_from_env(&mut self) {
        if self.profiles.is_empty() {
            for var in ["GITHUB_TOKEN", "GH_TOKEN"] {
                if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
                    self.profiles
                        .insert("github".into(), ProfileConfig::from_env_var(var));
                    break;
                }
            }
        }
    }
}

/// Required keys serde would report without a location: `grant` of every profile.
fn check_required(merged: &toml::Table) -> Result<(), ConfigError> {
    if let Some(toml::Value::Table(profiles)) = merged.get("profiles") {
        for (name, p) in profiles {
            if p.as_table().is_some_and(|t| !t.contains_key("grant")) {
                return Err(ConfigError::Invalid {
                    path: PathBuf::from("(config)"),
                    line: 0,
                    column: 0,
                    key: format!("profiles.{name}.grant"),
                    message:
                        "missing; one of \"device\", \"exchange\", \"client-credentials\", \"env\""
                            .into(),
                });
            }
        }
    }
    Ok(())
}

/// An error the merged layers alone have (e.g. a table missing a required key that no layer
/// sets), as an [`ConfigError::Invalid`] keyed on the table it is about, so that [`relocate`]
/// can point it at the file and line that opened that table.
///
/// The merged table is written out as TOML and parsed again to learn where the error is;
/// the nearest `[table]` header at or above that point names the table.
fn merged_error(merged: &toml::Table, message: &str) -> ConfigError {
    let key = toml::to_string(merged)
        .ok()
        .and_then(|text| {
            let span = toml::from_str::<Config>(&text).err()?.span()?;
            // Up to the end of the line where the error starts: it may be the header itself.
            let end = text
                .get(span.start..)?
                .find('\n')
                .map_or(text.len(), |i| span.start + i);
            let before = text.get(..end)?;
            before.lines().rev().find_map(|l| {
                let l = l.trim();
                let inner = l.strip_prefix('[')?.strip_suffix(']')?;
                let inner = inner.trim_start_matches('[').trim_end_matches(']');
                Some(
                    inner
                        .split('.')
                        .map(|s| s.trim().trim_matches('"'))
                        .collect::<Vec<_>>()
                        .join("."),
                )
            })
        })
        .unwrap_or_default();
    ConfigError::Invalid {
        path: PathBuf::from("(merged config)"),
        line: 0,
        column: 0,
        key,
        message: message.to_string(),
    }
}

/// An [`ConfigError::Invalid`] about the merged config; [`relocate`] finds its file, line
/// and column.
fn unlocated(key: String, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: PathBuf::from("(config)"),
        line: 0,
        column: 0,
        key,
        message,
    }
}

/// Points an [`ConfigError::Invalid`] at the last layer that set its key (or, for a missing
/// key, the nearest enclosing table), with the line in that file.
fn relocate(err: ConfigError, all: &[layers::Layer]) -> ConfigError {
    let ConfigError::Invalid {
        key,
        message,
        path,
        line,
        column,
    } = err
    else {
        return err;
    };
    let segs: Vec<&str> = key.split('.').collect();
    for n in (1..=segs.len()).rev() {
        if let Some((p, l, c)) = all.iter().rev().find_map(|layer| layer.locate(&segs[..n])) {
            return ConfigError::Invalid {
                path: p,
                line: l,
                column: c,
                key,
                message,
            };
        }
    }
    ConfigError::Invalid {
        path,
        line,
        column,
        key,
        message,
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// Deep-merges `over` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn no_files_gives_defaults() {
        let c = Config::load_files(&[PathBuf::from("/nonexistent/stagepass.toml")]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "c.toml",
            "[agent]\nlog_level = \"debug\"\nbogus = 1\n",
        );
        let err = Config::load_files(&[p]).unwrap_err().to_string();
        assert!(err.contains("c.toml:3:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn unusable_profile_and_role_names_are_refused_where_written() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "c.toml",
            "[agent]\nlog_level = \"info\"\n\n[profiles.\"my profile\"]\ngrant = \"env\"\ntoken_env = \"T\"\n",
        );
        let err = Config::load_files(&[p]).unwrap_err().to_string();
        assert!(err.contains("c.toml:4:"), "{err}");
        assert!(err.contains("\"my profile\" is not a usable name"), "{err}");
        let p = write(
            tmp.path(),
            "d.toml",
            "[aws.\".hidden\"]\nprofile = \"x\"\nrole_arn = \"arn:aws:iam::1:role/r\"\n",
        );
        let err = Config::load_files(&[p]).unwrap_err().to_string();
        assert!(err.contains("d.toml:1:"), "{err}");
    }

    #[test]
    fn later_layers_override_earlier() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(
            tmp.path(),
            "a.toml",
            "[agent]\nlog_level = \"debug\"\nlog_format = \"json\"\n",
        );
        let b = write(tmp.path(), "b.toml", "[agent]\nlog_level = \"warn\"\n");
        let c = Config::load_files(&[a, b]).unwrap();
        assert_eq!(c.agent.log_level, "warn");
        assert_eq!(c.agent.log_format, LogFormat::Json);
    }

    #[test]
    fn secret_in_file_is_refused_at_its_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "c.toml",
            "[agent]\nlog_level = \"info\"\n\n[profiles.ci]\ngrant = \"client-credentials\"\nissuer = \"https://i\"\nclient_id = \"c\"\nclient_secret = \"s3cret\"\n",
        );
        let err = Config::load_files(&[p]).unwrap_err().to_string();
        assert!(
            err.contains("c.toml:8:1: profiles.ci.client_secret"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn workspace_placeholder_only_in_a_sign_in_client_id() {
        let tmp = tempfile::tempdir().unwrap();
        let load = |grant: &str, client: &str| {
            let p = write(
                tmp.path(),
                "w.toml",
                &format!(
                    "[profiles.bs]\ngrant = \"{grant}\"\nissuer = \"https://b/api/auth\"\nclient_id = \"{client}\"\n"
                ),
            );
            Config::load_files(&[p]).map_err(|e| e.to_string())
        };
        let url = "https://h/stagepass/{workspace}.json";
        let c = load("authorization-code", url).unwrap();
        assert_eq!(c.profiles["bs"].client_id.as_deref(), Some(url));
        let err = load("device", url).unwrap_err();
        assert!(
            err.contains("profiles.bs.client_id") && err.contains("authorization-code"),
            "{err}"
        );
        let err = load("authorization-code", "https://h/{workspace_id}.json").unwrap_err();
        assert!(err.contains("the only placeholder is {workspace}"), "{err}");
    }

    #[test]
    fn missing_key_points_at_the_profile_table() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "c.toml",
            "\n[profiles.dev]\ngrant = \"device\"\nclient_id = \"c\"\n",
        );
        let err = Config::load_files(&[p]).unwrap_err().to_string();
        assert!(
            err.contains("c.toml:2:11: profiles.dev.issuer: required"),
            "{err}"
        );
    }

    #[test]
    fn a_later_file_may_complete_a_profile() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(tmp.path(), "a.toml", "[profiles.gh]\ngrant = \"env\"\n");
        let b = write(
            tmp.path(),
            "b.toml",
            "[profiles.gh]\ntoken_env = \"GH_TOKEN\"\n",
        );
        let c = Config::load_files(&[a.clone(), b]).unwrap();
        assert_eq!(c.profiles["gh"].token_env.as_deref(), Some("GH_TOKEN"));
        // Alone, the first file lacks token_env: the error names it.
        let err = Config::load_files(&[a]).unwrap_err().to_string();
        assert!(err.contains("a.toml:1:11: profiles.gh.token_env"), "{err}");
        // A profile without grant anywhere.
        let d = write(
            tmp.path(),
            "d.toml",
            "[agent]\n[profiles.x]\ntoken_env = \"A\"\n",
        );
        let err = Config::load_files(&[d]).unwrap_err().to_string();
        assert!(
            err.contains("d.toml:2:11: profiles.x.grant: missing"),
            "{err}"
        );
    }

    #[test]
    fn env_layer_overrides_files() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(tmp.path(), "a.toml", "[agent]\nlog_level = \"warn\"\n");
        let env = vec![
            (
                "STAGEPASS_AGENT__LOG_LEVEL".to_string(),
                "debug".to_string(),
            ),
            (
                "STAGEPASS_AGENT__LOG_FORMAT".to_string(),
                "json".to_string(),
            ),
            ("STAGEPASS_CONFIG".to_string(), "/ignored".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            (
                "STAGEPASS_PROFILES__GH__GRANT".to_string(),
                "env".to_string(),
            ),
            (
                "STAGEPASS_PROFILES__GH__TOKEN_ENV".to_string(),
                "GH_TOKEN".to_string(),
            ),
        ];
        let c = Config::load(std::slice::from_ref(&a), env).unwrap();
        assert_eq!(c.agent.log_level, "debug");
        assert_eq!(c.agent.log_format, LogFormat::Json);
        assert_eq!(c.profiles["gh"].grant, GrantKind::Env);
    }

    #[test]
    fn env_errors_name_their_variable() {
        let err = Config::load(
            &[],
            vec![("STAGEPASS_AGENT__BOGUS".to_string(), "1".to_string())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("env STAGEPASS_AGENT__BOGUS: agent.bogus:"),
            "{err}"
        );
        let err = Config::load(
            &[],
            vec![("STAGEPASS_AGENT__LOG_FORMAT".to_string(), "xml".to_string())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("env STAGEPASS_AGENT__LOG_FORMAT"), "{err}");
        let env = vec![
            (
                "STAGEPASS_PROFILES__P__GRANT".to_string(),
                "client-credentials".to_string(),
            ),
            (
                "STAGEPASS_PROFILES__P__CLIENT_SECRET".to_string(),
                "s3cret".to_string(),
            ),
        ];
        let err = Config::load(&[], env).unwrap_err().to_string();
        assert!(
            err.contains("env STAGEPASS_PROFILES__P__CLIENT_SECRET: profiles.p.client_secret"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn unknown_subject_profile_is_named_at_its_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "c.toml",
            "[profiles.git]\ngrant = \"exchange\"\nissuer = \"https://i\"\nsubject_profile = \"nope\"\n",
        );
        let err = Config::load_files(&[p]).unwrap_err().to_string();
        assert!(
            err.contains("c.toml:4:1: profiles.git.subject_profile"),
            "{err}"
        );
    }

    /// Issue 19: an http issuer, STS endpoint, Backstage or registry on another host would
    /// carry a credential in clear text: refused at load with file:line:column; loopback
    /// hosts (the test beds) stay allowed.
    #[test]
    fn cleartext_credential_urls_are_refused_at_their_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[profiles.ci]\ngrant = \"device\"\nclient_id = \"c\"\n  issuer = \"http://idp.example/realms/x\"\n",
                "c.toml:4:12: profiles.ci.issuer",
            ),
            (
                "[profiles.w]\ngrant = \"env\"\ntoken_env = \"T\"\n[aws.dev]\nprofile = \"w\"\nrole_arn = \"arn:aws:iam::1:role/r\"\nsts_endpoint = \"http://sts.example\"\n",
                "c.toml:7:16: aws.dev.sts_endpoint",
            ),
            (
                "[catalog]\nbackstage_url = \"http://backstage.example\"\n",
                "c.toml:2:17: catalog.backstage_url",
            ),
            (
                "[docker.registries]\n\"http://ghcr.io\" = \"github\"\n",
                "docker.registries.http://ghcr.io",
            ),
        ];
        for (text, want) in cases {
            let p = write(tmp.path(), "c.toml", text);
            let err = Config::load_files(&[p]).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.contains("clear text"), "{err}");
        }
        for ok in [
            "[profiles.ci]\ngrant = \"device\"\nclient_id = \"c\"\nissuer = \"http://127.0.0.1:8080/realms/x\"\n",
            "[profiles.ci]\ngrant = \"device\"\nclient_id = \"c\"\nissuer = \"https://idp.example/realms/x\"\n",
            "[catalog]\nbackstage_url = \"http://localhost:7007\"\n",
        ] {
            let p = write(tmp.path(), "c.toml", ok);
            assert!(Config::load_files(&[p]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
