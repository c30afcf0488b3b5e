//! Configuration: layered TOML parsed into typed values, with errors that name file, line and key.
//!
//! Layers, later overriding earlier: `/etc/stagepass/config.toml` (written by the feature),
//! `~/.config/stagepass/config.toml`, `STAGEPASS_*` environment variables, command-line flags.
//! Each file is checked on its own first (unknown keys, bad values) so an error points at the
//! file and line that caused it; then the layers are merged table by table.
//!
//! With no configuration at all the agent still runs (see [`Config::default_profiles_from_env`]).

mod adapters;
mod api;
mod catalog;
mod profile;

pub use adapters::{AwsRoleConfig, DockerConfig, DockerRegistry, GitConfig, GitHostConfig};
pub use api::ApiConfig;
pub use catalog::CatalogConfig;
pub use profile::{GrantKind, ProfileConfig, SecretSource};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
        /// The file (or `env STAGEPASS_*` / `flags` for the other layers).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value that parses but is not acceptable (e.g. a secret written into the file).
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        /// The file the offending key came from.
        path: PathBuf,
        /// 1-based line of the key, 0 when unknown.
        line: usize,
        /// Dotted key, e.g. `profiles.backstage.client_secret`.
        key: String,
        /// What is wrong and how to fix it.
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
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Text,
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
}

impl Config {
    /// Loads and merges the given files (missing files are skipped), then validates.
    pub fn load_files(files: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut merged = toml::Table::new();
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
            let table = parse_layer(path, &text)?;
            merge(&mut merged, table);
        }
        let config: Config =
            Config::deserialize(toml::Value::Table(merged)).map_err(|e| ConfigError::Parse {
                path: PathBuf::from("(merged config)"),
                line: 0,
                column: 0,
                message: e.message().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, p) in &self.profiles {
            p.validate(name)?;
        }
        self.api.validate()?;
        for (name, role) in &self.aws {
            role.validate(name)
                .map_err(|(key, message)| ConfigError::Invalid {
                    path: PathBuf::from("(config)"),
                    line: 0,
                    key,
                    message,
                })?;
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

/// Parses one layer and checks it alone against the schema, so errors carry its line.
fn parse_layer(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let located = |span: Option<std::ops::Range<usize>>, message: String| {
        let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let table: toml::Table =
        toml::from_str(text).map_err(|e| located(e.span(), e.message().to_string()))?;
    // Deserialize the layer alone: unknown keys and bad types point at this file's line.
    let _: Config = toml::from_str(text).map_err(|e| located(e.span(), e.message().to_string()))?;
    Ok(table)
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
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
