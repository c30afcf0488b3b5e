//! The git credential and docker credential helper protocol parsers under arbitrary input.

use super::config;
use crate::adapters::docker::{parse_get_input, registry_host, store_server};
use crate::adapters::git::GitRequest;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// Keys git sends, plus a few it may add in newer versions and some garbage.
fn git_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("protocol".to_string()),
        Just("host".to_string()),
        Just("path".to_string()),
        Just("username".to_string()),
        Just("password".to_string()),
        Just("url".to_string()),
        Just("capability[]".to_string()),
        Just("wwwauth[]".to_string()),
        Just("authtype".to_string()),
        Just("credential".to_string()),
        Just("password_expiry_utc".to_string()),
        "[a-z\\[\\]_]{0,12}",
    ];
    let value = prop_oneof![
        "[ -~]{0,40}",
        Just("https://user@github.com/org/repo.git".to_string()),
        Just("https://[::1]:99999/x".to_string()),
        Just("%zz://\u{0}".to_string()),
        any::<String>(),
    ];
    (key, prop_oneof![Just("="), Just(""), Just("=="),], value)
        .prop_map(|(k, eq, v)| format!("{k}{eq}{v}"))
}

#[test]
fn git_request_parse_never_panics_on_bytes() {
    let mut runner = TestRunner::new(config(1000));
    let result = runner.run(&proptest::collection::vec(any::<u8>(), 0..600), |bytes| {
        let _ = GitRequest::parse(&bytes);
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn git_request_parse_structured_lines_never_panic_and_keep_last_host() {
    let mut runner = TestRunner::new(config(1000));
    let lines = proptest::collection::vec(git_line(), 0..12);
    let result = runner.run(&lines, |lines| {
        let text = lines.join("\n");
        if let Ok(req) = GitRequest::parse(text.as_bytes()) {
            // Whatever it accepted must be routable or refused without a panic.
            let _ = req.wants_authtype();
            let _ = req.used_secret();
        }
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn docker_inputs_never_panic_and_accepted_urls_have_a_host() {
    let mut runner = TestRunner::new(config(1000));
    let input = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "(https?://)?[a-zA-Z0-9.:\\[\\]@/_%-]{0,60}\n?".prop_map(String::into_bytes),
    ];
    let result = runner.run(&input, |bytes| {
        if let Ok(url) = parse_get_input(&bytes) {
            let host = registry_host(&url);
            prop_assert!(host.is_ok(), "accepted {url:?} but it has no host");
            prop_assert!(!host.unwrap_or_default().is_empty());
        }
        let _ = store_server(&bytes);
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
}
