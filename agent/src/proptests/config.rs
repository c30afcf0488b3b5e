//! The config parser under arbitrary TOML-ish text: no panic, and every error from the
//! file names that file with a 1-based line.

use super::config;
use crate::config::{Config, ConfigError};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// Lines built from the real schema's sections and keys, with values of every type.
fn tomlish_line() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[agent]"),
        Just("[api]"),
        Just("[catalog]"),
        Just("[git]"),
        Just("[docker]"),
        Just("[docker.registries]"),
        Just("[profiles.work]"),
        Just("[profiles.\"é\"]"),
        Just("[aws.dev]"),
        Just("[[profiles]]"),
        Just("[nope]"),
    ]
    .prop_map(str::to_string);
    let key = prop_oneof![
        Just("log_level"),
        Just("log_format"),
        Just("issuer"),
        Just("client_id"),
        Just("client_secret"),
        Just("audience"),
        Just("scopes"),
        Just("grant"),
        Just("tcp_port"),
        Just("listen"),
        Just("unix_socket"),
        Just("hosts"),
        Just("profile"),
        Just("role_arn"),
        Just("backstage_url"),
        Just("\"quoted key\""),
        Just("a.b.c"),
    ];
    let value = prop_oneof![
        Just("\"debug\"".to_string()),
        Just("\"json\"".to_string()),
        Just("\"http://127.0.0.1:1/\"".to_string()),
        Just("7391".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("true".to_string()),
        Just("[\"a\", 1]".to_string()),
        Just("{ x = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"unterminated".to_string()),
        Just("'''\nmulti".to_string()),
        "\"[ -~&&[^\"\\\\]]{0,20}\"",
    ];
    prop_oneof![
        section,
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~é\t]{0,30}",
    ]
}

/// Asserts `err` (from loading only `file`) points at `file`, with a line inside the text.
fn assert_located(
    err: &ConfigError,
    file: &std::path::Path,
    text: &str,
) -> Result<(), TestCaseError> {
    let lines = text.split('\n').count();
    match err {
        ConfigError::Parse {
            path, line, column, ..
        } => {
            prop_assert_eq!(path.as_path(), file, "{} on {:?}", err, text);
            prop_assert!(*line >= 1 && *line <= lines, "{} on {:?}", err, text);
            prop_assert!(*column >= 1, "{} on {:?}", err, text);
        }
        ConfigError::Invalid { path, line, .. } => {
            prop_assert_eq!(path.as_path(), file, "{} on {:?}", err, text);
            prop_assert!(*line <= lines, "{} on {:?}", err, text);
        }
        ConfigError::Read { .. } | ConfigError::Layer { .. } => {
            prop_assert!(false, "unexpected {} on {:?}", err, text);
        }
    }
    prop_assert!(err.to_string().starts_with(&file.display().to_string()));
    Ok(())
}

fn check(dir: &std::path::Path, text: &str) -> Result<(), TestCaseError> {
    let file = dir.join("config.toml");
    std::fs::write(&file, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match Config::load(std::slice::from_ref(&file), std::iter::empty()) {
        Ok(_) => Ok(()),
        Err(e) => assert_located(&e, &file, text),
    }
}

#[test]
fn tomlish_config_never_panics_and_errors_carry_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(config(512));
    let text = proptest::collection::vec(tomlish_line(), 0..10).prop_map(|l| l.join("\n"));
    let result = runner.run(&text, |text| check(dir.path(), &text));
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn arbitrary_text_config_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(config(256));
    let result = runner.run(&any::<String>(), |text| check(dir.path(), &text));
    assert!(result.is_ok(), "{result:?}");
}

/// Found by the property above: a table missing a required key that no layer sets was
/// reported as `(merged config):0:0`, naming no file.
#[test]
fn regression_missing_required_key_names_the_file_and_table_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "[agent]\nlog_level = \"info\"\n[aws.dev]\n").unwrap();
    let err = Config::load(std::slice::from_ref(&file), std::iter::empty()).unwrap_err();
    match &err {
        ConfigError::Invalid {
            path, line, key, ..
        } => {
            assert_eq!((path.as_path(), *line), (file.as_path(), 3), "{err}");
            assert_eq!(key, "aws.dev");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("profile"), "{err}");
}
