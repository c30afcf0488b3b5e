//! The configuration layers and where each key came from.
//!
//! A layer is a TOML table plus its origin: a file (with its text, so a key can be found back
//! at its line) or the `STAGEPASS_*` environment. Errors found after
//! merging (validation) are pointed back at the last layer that set the offending key.

use super::ConfigError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "STAGEPASS_";

/// Where a layer came from.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    File {
        path: PathBuf,
        text: String,
    },
    /// Dotted key -> the variable that set it (`env STAGEPASS_X__Y`).
    Keys(BTreeMap<String, String>),
}

/// A parsed layer.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) origin: Origin,
    pub(super) table: toml::Table,
}

impl Layer {
    /// Where `key` (dotted) was set in this layer, if it was: (path, line, column); line
    /// and column are 0 outside files.
    pub(super) fn locate(&self, key: &[&str]) -> Option<(PathBuf, usize, usize)> {
        match &self.origin {
            Origin::File { path, text } => {
                let offset = locate_in_text(text, key)?;
                let (line, column) = super::line_col(text, offset);
                Some((path.clone(), line, column))
            }
            Origin::Keys(map) => {
                let dotted = key.join(".");
                // The variable that set this key, a table above it or one inside it.
                map.iter()
                    .find(|(k, _)| {
                        **k == dotted
                            || k.starts_with(&format!("{dotted}."))
                            || dotted.starts_with(&format!("{k}."))
                            || dotted.starts_with(&format!("{k}["))
                    })
                    .map(|(_, who)| (PathBuf::from(who), 0, 0))
            }
        }
    }
}

/// Byte offset of the key at `path` in a TOML text (the deepest segment found must be the
/// last one). The segments are joined back and matched against the document's own keys,
/// so a key with dots (`docker.registries."ghcr.io"`) and an array element
/// (`git.hosts[0].profile`) are found too.
fn locate_in_text(text: &str, path: &[&str]) -> Option<usize> {
    use toml::de::DeValue;
    let parsed = toml::de::DeTable::parse(text).ok()?;
    let dotted = path.join(".");
    let mut rest = dotted.as_str();
    let mut table = parsed.get_ref();
    loop {
        // The longest key of this table that the rest of the path starts with.
        let (k, v) = table
            .iter()
            .filter(|(k, _)| {
                rest.strip_prefix(k.get_ref().as_ref())
                    .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
            })
            .max_by_key(|(k, _)| k.get_ref().len())?;
        let mut at = k.span().start;
        let mut value = v;
        rest = &rest[k.get_ref().len()..];
        while let Some(r) = rest.strip_prefix('[') {
            let (index, after) = r.split_once(']')?;
            let DeValue::Array(items) = value.get_ref() else {
                return None;
            };
            value = items.get(index.parse::<usize>().ok()?)?;
            if !matches!(value.get_ref(), DeValue::Table(_)) {
                at = value.span().start;
            }
            rest = after;
        }
        if rest.is_empty() {
            return Some(at);
        }
        rest = rest.strip_prefix('.')?;
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
}

/// The dotted key whose name or value holds byte `offset` of `text`, as deep as it goes
/// (`profiles.ci.issuer`, `catalog.globs[1]`, `git.hosts[0].profile`): a deserialization
/// error carries only a span, and the user should read which key it is about.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let parsed = toml::de::DeTable::parse(text).ok()?;
    let mut key = String::new();
    key_in_table(parsed.get_ref(), offset, &mut key).then_some(key)
}

fn key_in_table(table: &toml::de::DeTable<'_>, offset: usize, key: &mut String) -> bool {
    for (k, v) in table {
        let len = key.len();
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(k.get_ref());
        if k.span().contains(&offset) || key_in_value(v, offset, key) {
            return true;
        }
        key.truncate(len);
    }
    false
}

fn key_in_value(v: &toml::Spanned<toml::de::DeValue<'_>>, offset: usize, key: &mut String) -> bool {
    match v.get_ref() {
        // An inline table holds the offset when none of its keys does (a value that fits no
        // shape is reported at its `{`).
        toml::de::DeValue::Table(t) => key_in_table(t, offset, key) || v.span().contains(&offset),
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = key.len();
                key.push_str(&format!("[{i}]"));
                if key_in_value(item, offset, key) {
                    return true;
                }
                key.truncate(len);
            }
            v.span().contains(&offset)
        }
        _ => v.span().contains(&offset),
    }
}

/// Builds the environment layer from `STAGEPASS_SECTION__KEY[__KEY...]` variables.
///
/// Double underscores separate levels, names are lowercased:
/// `STAGEPASS_AGENT__LOG_LEVEL=debug` sets `agent.log_level`,
/// `STAGEPASS_PROFILES__GITHUB__TOKEN_ENV=GH_TOKEN` sets `profiles.github.token_env`.
/// Variables without `__` (`STAGEPASS_CONFIG`, test settings) are not configuration.
pub(super) fn env_layer(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<Layer>, ConfigError> {
    let mut entries = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let key: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if key.iter().any(String::is_empty) {
            return Err(ConfigError::Layer {
                origin: format!("env {name}"),
                key: key.join("."),
                message: "empty key segment (two `__` in a row or at an end)".into(),
            });
        }
        entries.push((key, value, format!("env {name}")));
    }
    keyed_layer(entries)
}

fn keyed_layer(entries: Vec<(Vec<String>, String, String)>) -> Result<Option<Layer>, ConfigError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut table = toml::Table::new();
    let mut who = BTreeMap::new();
    for (key, raw, origin) in entries {
        let value = parse_scalar(&raw);
        // Check this key alone against the schema, so the error names the variable.
        let mut alone = toml::Table::new();
        insert_at(&mut alone, &key, value.clone());
        check_alone(toml::Value::Table(alone)).map_err(|message| ConfigError::Layer {
            origin: origin.clone(),
            key: key.join("."),
            message,
        })?;
        insert_at(&mut table, &key, value);
        who.insert(key.join("."), origin);
    }
    Ok(Some(Layer {
        origin: Origin::Keys(who),
        table,
    }))
}

/// A value set in the environment: TOML when it parses as a TOML value,
/// else the plain string (so `debug` needs no quotes).
fn parse_scalar(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn insert_at(table: &mut toml::Table, key: &[String], value: toml::Value) {
    let Some((last, parents)) = key.split_last() else {
        return;
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(t) => cur = t,
            _ => return,
        }
    }
    cur.insert(last.clone(), value);
}

/// Deserializes a partial config; missing required fields are fine (another layer may set
/// them), unknown keys and wrong types are not.
pub(super) fn check_alone(value: toml::Value) -> Result<(), String> {
    use serde::Deserialize;
    match super::Config::deserialize(value) {
        Ok(_) => Ok(()),
        Err(e) if is_missing_field(e.message()) => Ok(()),
        Err(e) => Err(e.message().to_string()),
    }
}

/// True for serde's "missing field" error.
pub(super) fn is_missing_field(message: &str) -> bool {
    message.starts_with("missing field")
}

/// The file layer: parse, then check alone so unknown keys and bad types carry the line.
pub(super) fn file_layer(path: &Path, text: &str) -> Result<Layer, ConfigError> {
    let located = |span: Option<std::ops::Range<usize>>, message: String| {
        let (line, column) = span
            .map(|s| super::line_col(text, s.start))
            .unwrap_or((0, 0));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let table: toml::Table =
        toml::from_str(text).map_err(|e| located(e.span(), e.message().to_string()))?;
    match toml::from_str::<super::Config>(text) {
        Ok(_) => {}
        Err(e) if is_missing_field(e.message()) => {
            // Another layer may supply it; the merged config is checked again.
        }
        Err(e) => {
            // A value of the wrong type or refused by its type: name the key it is about.
            let span = e.span().unwrap_or_default();
            let (line, column) = super::line_col(text, span.start);
            return Err(match key_at(text, span.start) {
                Some(key) if e.span().is_some() => ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    column,
                    key,
                    message: e.message().to_string(),
                },
                _ => located(e.span(), e.message().to_string()),
            });
        }
    }
    Ok(Layer {
        origin: Origin::File {
            path: path.to_path_buf(),
            text: text.to_string(),
        },
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_parse_as_toml_else_string() {
        assert_eq!(parse_scalar("true"), toml::Value::Boolean(true));
        assert_eq!(parse_scalar("7391"), toml::Value::Integer(7391));
        assert_eq!(parse_scalar("debug"), toml::Value::String("debug".into()));
        assert_eq!(
            parse_scalar(r#"["a","b"]"#),
            toml::Value::Array(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn locates_keys_in_text() {
        let text =
            "[agent]\nlog_level = \"x\"\n\n[profiles.gh]\ngrant = \"env\"\ntoken_env = \"A\"\n";
        let off = locate_in_text(text, &["profiles", "gh", "token_env"]).unwrap();
        assert_eq!(super::super::line_col(text, off).0, 6);
        assert!(locate_in_text(text, &["profiles", "gh", "nope"]).is_none());
        let text = "[[git.hosts]]\nhost = \"a\"\nprofile = \"p\"\n[[git.hosts]]\nhost = \"b\"\nprofile = \"q\"\n[docker.registries]\n\"ghcr.io\" = \"p\"\n";
        let line = |key: &str| {
            let segs: Vec<&str> = key.split('.').collect();
            super::super::line_col(text, locate_in_text(text, &segs).unwrap()).0
        };
        assert_eq!(line("git.hosts[1].profile"), 6);
        assert_eq!(line("docker.registries.ghcr.io"), 8);
    }

    #[test]
    fn finds_the_key_at_an_offset() {
        let text = "# top\n[catalog]\nglobs = [\"a\", \"b\"]\n[[git.hosts]]\nhost = \"h\"\nprofile = \"p\"\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("\"b\"").as_deref(), Some("catalog.globs[1]"));
        assert_eq!(at("globs").as_deref(), Some("catalog.globs"));
        assert_eq!(at("\"p\"").as_deref(), Some("git.hosts[0].profile"));
        assert_eq!(at("[catalog]").as_deref(), Some("catalog"));
        assert_eq!(key_at(text, 0), None);
    }
}
