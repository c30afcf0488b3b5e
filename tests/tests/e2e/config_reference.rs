//! docs/configuration.md against the config types, so the reference cannot drift.
//!
//! The keys the code accepts are not listed here: a probing serde `Deserializer` walks
//! `stagepass::config::Config` and records every struct field it is asked for (the field
//! lists serde derives from the types, `deny_unknown_fields` and all). Maps show up as
//! `<name>`, elements of arrays as `[]`. The test then requires the reference to list exactly
//! those keys, each with its `STAGEPASS_*` variable, and every backticked default to be the
//! code's default; and every Feature option to be described.

// Test code: a failed unwrap is a failed test, with its message.
use serde::Deserialize;
use serde::de::value::{Error as DeError, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use stagepass::config::{Config, ExeGlobs, HttpUrl};
use stagepass_e2e::support::repo_root;
use std::cell::RefCell;
use std::collections::BTreeSet;

/// Placeholder of a map key (profile name, AWS role, registry).
const NAME: &str = "<name>";

/// A `Deserializer` that answers every request with a plausible value and records the path
/// of every struct field and map entry it is asked to fill.
struct Probe<'a> {
    path: String,
    keys: &'a RefCell<BTreeSet<String>>,
}

impl<'a> Probe<'a> {
    fn child(&self, segment: &str) -> Probe<'a> {
        let path = if self.path.is_empty() {
            segment.to_string()
        } else if segment == "[]" {
            format!("{}[]", self.path)
        } else {
            format!("{}.{segment}", self.path)
        };
        Probe {
            path,
            keys: self.keys,
        }
    }
}

/// Yields `entries` (key, probe) once each.
struct Entries<'a> {
    entries: std::vec::IntoIter<(String, Probe<'a>)>,
    value: Option<Probe<'a>>,
}

impl<'de, 'a> MapAccess<'de> for Entries<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, probe)) => {
                self.value = Some(probe);
                let key: StrDeserializer<'_, DeError> = key.as_str().into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let probe = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value before key"))?;
        seed.deserialize(probe)
    }
}

/// One element.
struct One<'a>(Option<Probe<'a>>);

impl<'de, 'a> SeqAccess<'de> for One<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}

impl<'de, 'a> de::Deserializer<'de> for Probe<'a> {
    type Error = DeError;

    /// Untyped values (an untagged enum, a raw `toml::Value`): a string is accepted by all
    /// we have. Keys inside them are invisible to the probe; see `UNTAGGED_KEYS`.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str("x")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_bool(false)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i64(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i64(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i64(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i64(1)
    }

    /// Strings, paths and IP addresses (parsed from a string in human-readable formats).
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str("127.0.0.1")
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str("127.0.0.1")
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    /// Types that check their string are given one they accept: a URL, an absolute path
    /// (the loopback address fits neither).
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == HttpUrl::SERDE_NAME {
            return visitor.visit_str("https://127.0.0.1");
        }
        if name == ExeGlobs::PATTERN_SERDE_NAME {
            return visitor.visit_str("/usr/bin/git");
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let element = self.child("[]");
        visitor.visit_seq(One(Some(element)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let value = self.child(NAME);
        self.keys.borrow_mut().insert(value.path.clone());
        visitor.visit_map(Entries {
            entries: vec![(NAME.to_string(), value)].into_iter(),
            value: None,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let entries: Vec<(String, Probe<'a>)> = fields
            .iter()
            .map(|f| {
                let child = self.child(f);
                self.keys.borrow_mut().insert(child.path.clone());
                (f.to_string(), child)
            })
            .collect();
        visitor.visit_map(Entries {
            entries: entries.into_iter(),
            value: None,
        })
    }

    /// Unit variants: the first one.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let first: StrDeserializer<'_, DeError> = variants[0].into_deserializer();
        visitor.visit_enum(first)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 f64 char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

/// Keys inside untagged enums, which the probe cannot see (it answers them with a string).
/// `untagged_keys_are_accepted` proves the code accepts each.
const UNTAGGED_KEYS: &[&str] = &[
    "docker.registries.<name>.profile",
    "docker.registries.<name>.username",
];

/// Every key the config types accept, from serde's own field lists.
fn code_keys() -> BTreeSet<String> {
    let keys = RefCell::new(BTreeSet::new());
    let probe = Probe {
        path: String::new(),
        keys: &keys,
    };
    Config::deserialize(probe).expect("the probe satisfies every config type");
    let all = keys.into_inner();
    // Tables (sections, maps of profiles/roles/registries) are not keys; an array of tables
    // (`git.hosts`, elements `git.hosts[]...`) is one, since it can be set as a whole.
    let mut keys: BTreeSet<String> = all
        .iter()
        .filter(|k| !all.iter().any(|o| o.starts_with(&format!("{k}."))))
        .cloned()
        .collect();
    keys.extend(UNTAGGED_KEYS.iter().map(|k| k.to_string()));
    keys
}

/// One row of a reference table: key, default, env, feature option.
#[derive(Debug)]
struct Row {
    key: String,
    default: String,
    env: String,
}

fn reference() -> String {
    std::fs::read_to_string(repo_root().join("docs/configuration.md")).unwrap()
}

/// The rows of every table whose first column is a backticked key with a dot.
fn rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().strip_prefix('|')?.split(" | ").collect();
            let key = cells.first()?.trim().strip_prefix('`')?.strip_suffix('`')?;
            if !key.contains('.') {
                return None;
            }
            Some(Row {
                key: key.to_string(),
                default: cells.get(1)?.trim().to_string(),
                env: cells.get(2)?.trim().to_string(),
            })
        })
        .collect()
}

/// `STAGEPASS_` + the key's segments uppercased, joined by `__`; `-` for array elements and
/// untagged keys, which the environment can only set as a whole.
fn env_var(key: &str) -> String {
    if key.contains("[]") || UNTAGGED_KEYS.contains(&key) {
        return "-".into();
    }
    let segs: Vec<String> = key
        .split('.')
        .map(|s| {
            if s == NAME {
                "<NAME>".into()
            } else {
                s.to_ascii_uppercase()
            }
        })
        .collect();
    format!("`STAGEPASS_{}`", segs.join("__"))
}

#[test]
fn the_probe_sees_nested_fields() {
    let keys = code_keys();
    for k in [
        "agent.log_level",
        "profiles.<name>.grant",
        "git.hosts[].host",
        "aws.<name>.role_arn",
        "docker.registries.<name>",
    ] {
        assert!(keys.contains(k), "{k} missing from {keys:?}");
    }
}

#[test]
fn every_key_is_in_the_reference_and_every_listed_key_exists() {
    let code = code_keys();
    let rows = rows(&reference());
    let documented: BTreeSet<String> = rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(rows.len(), documented.len(), "a key is listed twice");
    let missing: Vec<&String> = code.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of date.\n  keys the code accepts but the reference lacks: {missing:?}\n  keys the reference lists but the code does not accept: {unknown:?}"
    );
}

#[test]
fn env_column_names_each_keys_variable() {
    for row in rows(&reference()) {
        assert_eq!(
            row.env,
            env_var(&row.key),
            "environment variable of {}",
            row.key
        );
    }
}

#[test]
fn backticked_defaults_are_the_codes_defaults() {
    let mut checked = 0;
    for row in rows(&reference()) {
        let fixed = !row.key.contains(NAME) && !row.key.contains("[]");
        let Some(value) = row
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
        else {
            continue;
        };
        if !fixed {
            continue;
        }
        // Setting a key to its documented default must change nothing.
        let var = env_var(&row.key).trim_matches('`').to_string();
        let loaded = Config::load(&[], [(var, value.to_string())])
            .unwrap_or_else(|e| panic!("default of {} ({value}) is refused: {e}", row.key));
        assert_eq!(
            loaded,
            Config::default(),
            "{} is documented as defaulting to {value}",
            row.key
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} defaults were checked");
}

#[test]
fn untagged_keys_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("c.toml");
    stagepass_e2e::Config::new()
        .profile("reg", stagepass_e2e::config::Profile::env("T"))
        .docker_registry(
            "r.example",
            stagepass_e2e::config::Registry::Full {
                profile: "reg".into(),
                username: Some("robot".into()),
            },
        )
        .write_to(&p)
        .unwrap();
    let c = Config::load_files(&[p]).unwrap();
    assert_eq!(c.docker.registries["r.example"].username(), Some("robot"));
}

#[test]
fn every_feature_option_is_described() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("feature/src/stagepass/devcontainer-feature.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let text = reference();
    let section = text
        .split_once("## Feature options")
        .map(|(_, s)| s)
        .expect("a Feature options section");
    let options = json["options"].as_object().unwrap();
    assert!(!options.is_empty());
    for (name, spec) in options {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("feature option {name} is not in the Feature options table"));
        // The default shown is the feature's default.
        let default = match &spec["default"] {
            serde_json::Value::String(s) if s.is_empty() => "empty".to_string(),
            serde_json::Value::String(s) => format!("`{s}`"),
            other => format!("`{other}`"),
        };
        assert!(
            row.contains(&format!("| {default} |")),
            "default of {name}: {row}"
        );
    }
}
