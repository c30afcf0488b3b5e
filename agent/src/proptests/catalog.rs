//! The catalog YAML parser and validator under arbitrary bytes and mutated valid files.
//!
//! Properties: no panic (not even one caught by the validator's `catch_unwind`), and every
//! finding points at a line and column that exist in the file.

use super::config;
use crate::catalog::finding::MAX_FINDINGS;
use crate::catalog::validate::{FileReport, check_bytes, check_text};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::path::Path;

/// A valid multi-document file with the shapes validation looks at.
const VALID: &str = "apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: payments-api
  title: Payments API
  annotations:
    github.com/project-slug: org/payments
  links:
    - url: https://example.com/docs
      title: Docs
spec:
  type: service
  lifecycle: production
  owner: team-payments
  dependsOn: [resource:default/payments-db]
---
apiVersion: backstage.io/v1alpha1
kind: Resource
metadata:
  name: payments-db
spec:
  type: database
  owner: team-payments
";

/// The message the validator gives when it caught a parser panic.
const CAUGHT_PANIC: &str = "the YAML parser failed";

/// Checks that every finding is inside `text` and that no parser panic was caught.
fn assert_located(text: &str, report: &FileReport) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    for f in &report.findings {
        prop_assert!(
            !f.message.starts_with(CAUGHT_PANIC),
            "parser panicked on {text:?}"
        );
        prop_assert!(f.line >= 1 && f.col >= 1, "{f} is not 1-based");
        prop_assert!(f.line <= lines.len(), "{f}: line past the end of {text:?}");
        let line_len = lines.get(f.line - 1).map_or(0, |l| l.len());
        prop_assert!(
            f.col <= line_len + 1,
            "{f}: column past the end of line {} ({line_len} bytes) in {text:?}",
            f.line
        );
    }
    Ok(())
}

/// One edit of a valid file: insert, delete or replace a byte-ish piece at a position.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Replace(usize, usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let piece = prop_oneof![
        Just(":".to_string()),
        Just("- ".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("\t".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        Just("{".to_string()),
        Just("[".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("---\n".to_string()),
        Just("? ".to_string()),
        Just("|\n".to_string()),
        Just("${{ values.name }}".to_string()),
        Just("é".to_string()),
        Just("\u{feff}".to_string()),
        "[ -~]{1,8}",
    ];
    prop_oneof![
        (any::<usize>(), piece.clone()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1usize..20).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1usize..8, piece).prop_map(|(at, n, s)| Edit::Replace(at, n, s)),
    ]
}

/// Applies `edits` to `text` at char boundaries (positions taken modulo the length).
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut out = text.to_string();
    let boundary = |s: &str, at: usize| {
        let mut i = if s.is_empty() { 0 } else { at % (s.len() + 1) };
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    for e in edits {
        match e {
            Edit::Insert(at, piece) => {
                let i = boundary(&out, *at);
                out.insert_str(i, piece);
            }
            Edit::Delete(at, n) | Edit::Replace(at, n, _) if !out.is_empty() => {
                let i = boundary(&out, *at);
                let j = boundary(&out, i.saturating_add(*n).min(out.len()));
                let with = match e {
                    Edit::Replace(_, _, s) => s.as_str(),
                    _ => "",
                };
                out.replace_range(i..j.max(i), with);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_valid_file_is_valid() {
    let report = check_text(VALID, Path::new("catalog-info.yaml"));
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.entities.len(), 2);
}

#[test]
fn arbitrary_bytes_never_panic_and_findings_are_located() {
    let mut runner = TestRunner::new(config(512));
    let result = runner.run(&proptest::collection::vec(any::<u8>(), 0..400), |bytes| {
        let report = check_bytes(&bytes, Path::new("f.yaml"));
        match std::str::from_utf8(&bytes) {
            Ok(text) => assert_located(text, &report),
            Err(_) => {
                prop_assert!(!report.findings.is_empty(), "non-UTF-8 accepted");
                Ok(())
            }
        }
    });
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn yamlish_text_never_panics_and_findings_are_located() {
    let mut runner = TestRunner::new(config(512));
    let text = "([a-z:\\- \\[\\]{}&*!|>'\"#?,\n\t]|---\n|  ){0,80}";
    let result = runner.run(&text, |text| {
        let report = check_text(&text, Path::new("f.yaml"));
        assert_located(&text, &report)
    });
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn mutated_valid_files_never_panic_and_findings_are_located() {
    let mut runner = TestRunner::new(config(1000));
    let edits = proptest::collection::vec(edit(), 1..6);
    let result = runner.run(&edits, |edits| {
        let text = apply(VALID, &edits);
        let report = check_text(&text, Path::new("catalog-info.yaml"));
        assert_located(&text, &report)
    });
    assert!(result.is_ok(), "{result:?}");
}

/// Alias amplification, many findings, many keys and nested anchors (issue 19): whatever
/// the sizes, the report is at most [`MAX_FINDINGS`] short findings and one count, all
/// located.
#[test]
fn hostile_shapes_give_short_located_reports() {
    use crate::catalog::hostile_tests::{aliases, bad_tags, many_keys, nested_anchors};
    let mut runner = TestRunner::new(config(24));
    let shape = prop_oneof![
        (1usize..120_000, 1usize..6_000).prop_map(|(len, uses)| aliases(len, uses)),
        (1usize..20_000).prop_map(bad_tags),
        (1usize..20_000, any::<bool>()).prop_map(|(n, dup)| many_keys(n, dup)),
        (0usize..300, 0usize..200, 1usize..200_000)
            .prop_map(|(block, flow, len)| nested_anchors(block, flow, len)),
    ];
    let result = runner.run(&shape, |text| {
        let report = check_text(&text, Path::new("f.yaml"));
        prop_assert!(report.findings.len() <= MAX_FINDINGS + 1);
        for f in &report.findings {
            prop_assert!(
                f.message.len() < 400,
                "{} bytes: {}",
                f.message.len(),
                f.rule
            );
        }
        assert_located(&text, &report)
    });
    assert!(
        result.is_ok(),
        "{:?}",
        result.map_err(|e| e.to_string().len())
    );
}

/// Nesting of any depth (issue 19: 10,000 nested `- ` overflowed the stack and aborted the
/// agent): block sequences then flow sequences around a scalar, checked on a 2 MiB stack
/// like the agent's threads. Past [`MAX_DEPTH`] levels the file is refused with a located
/// finding; under it, no depth finding.
#[test]
fn any_nesting_depth_is_checked_on_a_small_stack() {
    use crate::catalog::hostile_tests::on_small_stack;
    use crate::catalog::yaml::MAX_DEPTH;
    let mut runner = TestRunner::new(config(48));
    let shape = (0usize..40_000, 0usize..300, any::<bool>());
    let result = runner.run(&shape, |(block, flow, entity)| {
        let body = format!(
            "{}{}x{}",
            "- ".repeat(block),
            "[".repeat(flow),
            "]".repeat(flow)
        );
        // As an entity's `spec.deep` (two levels above it) or bare.
        let (text, depth) = if entity {
            (
                format!("kind: Component\nspec:\n  deep:\n    {body}\n"),
                block + flow + 2,
            )
        } else {
            (format!("{body}\n"), block + flow)
        };
        let report = on_small_stack({
            let text = text.clone();
            move || check_text(&text, Path::new("f.yaml"))
        });
        let refused = report.findings.iter().any(|f| f.rule == "yaml-too-large");
        // The parser refuses more than 255 open flow collections by itself.
        if flow <= 255 {
            prop_assert_eq!(refused, depth > MAX_DEPTH, "{} levels", depth);
        }
        assert_located(&text, &report)
    });
    assert!(result.is_ok(), "{result:?}");
}

/// Found by the properties above: a syntax error at the end of input was reported on the
/// line after the last one (`f.yaml:4:1` for a 3-line file).
#[test]
fn regression_end_of_input_errors_point_inside_the_file() {
    for text in [":!>a---\n---\n[", "a: [b,\n", "key: \"open", "?  "] {
        let report = check_text(text, Path::new("f.yaml"));
        assert!(!report.findings.is_empty(), "{text:?}");
        assert!(
            assert_located(text, &report).is_ok(),
            "{:?}",
            report.findings
        );
    }
}
