//! The catalog files of issue 19, each a regression test: bounded in memory, time and
//! output whatever the file holds.
//!
//! The time checks compare a file with 10x the content against the smaller one (linear work
//! grows ~10x, the quadratic work these replaced grew ~100x), so they hold in debug builds;
//! the bounds are generous on purpose, these are not benchmarks. They count this thread's
//! CPU time, not wall time: on a loaded machine (CI runs the suite on 2 cores) wall time
//! includes every moment the thread waited for a core, and a 4k-key check of a millisecond
//! that waited once read as 40x growth.

use super::finding::MAX_FINDINGS;
use super::validate::{FileReport, check_text};
use super::yaml::MAX_EXPANDED_BYTES;
use std::path::Path;
use std::time::Duration;

/// CPU time this thread has used: the work done, whatever else the machine runs.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A Component whose `metadata` ends with `extra` (indented by the caller).
fn component(extra: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: bomb\n{extra}spec:\n  type: service\n  lifecycle: production\n  owner: team-a\n"
    )
}

/// A string of `len` bytes aliased `uses` times as tags.
pub(crate) fn aliases(len: usize, uses: usize) -> String {
    component(&format!(
        "  description: &s {}\n  tags: [{}]\n",
        "a".repeat(len),
        vec!["*s"; uses].join(",")
    ))
}

/// The 115 KB file of the issue: a 100 KB string aliased 5,000 times (500 MB expanded).
pub(crate) fn alias_bomb() -> String {
    aliases(100_000, 5000)
}

/// `n` tags that are all invalid: one finding each before the cap.
pub(crate) fn bad_tags(n: usize) -> String {
    component(&format!("  tags: [{}]\n", vec!["Bad_Tag"; n].join(", ")))
}

/// A mapping with `n` distinct keys (and, with `dup`, the same key `n` times).
pub(crate) fn many_keys(n: usize, dup: bool) -> String {
    let mut s = String::from("  annotations:\n");
    for i in 0..n {
        let key = if dup { 0 } else { i };
        s.push_str(&format!("    k{key}: v\n"));
    }
    component(&s)
}

fn report_bytes(r: &FileReport) -> usize {
    r.findings.iter().map(|f| f.to_string().len()).sum()
}

/// The cheapest of three checks of `text` in CPU time (the least disturbed by cache misses).
fn time_check(text: &str) -> (Duration, FileReport) {
    let mut best = Duration::MAX;
    let mut report = FileReport::default();
    for _ in 0..3 {
        let t = thread_cpu();
        report = check_text(text, Path::new("catalog-info.yaml"));
        best = best.min(thread_cpu().saturating_sub(t));
    }
    (best, report)
}

/// How much longer 10x the content takes; linear is ~10.
fn growth(make: impl Fn(usize) -> String) -> f64 {
    let (small, _) = time_check(&make(4_000));
    let (large, _) = time_check(&make(40_000));
    large.as_secs_f64() / small.as_secs_f64().max(1e-6)
}

#[test]
fn an_alias_to_a_large_string_used_thousands_of_times_is_refused_with_a_short_report() {
    let text = alias_bomb();
    assert!(text.len() < 120_000, "{}", text.len());
    let t = thread_cpu();
    let r = check_text(&text, Path::new("catalog-info.yaml"));
    let took = thread_cpu().saturating_sub(t);
    assert!(
        r.findings.iter().any(|f| f.rule == "yaml-too-large"),
        "{:?}",
        r.findings.iter().map(|f| &f.rule).collect::<Vec<_>>()
    );
    assert!(r.entities.is_empty());
    // Before: 500 MB of findings and a 2 GB peak. The report stays under 64 KiB and the
    // work under the time it takes to copy the expansion budget a few hundred times.
    let bytes = report_bytes(&r);
    assert!(bytes < 64 * 1024, "report is {bytes} bytes");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn aliases_under_the_budget_are_expanded_and_quoted_as_excerpts() {
    // 40 copies of 50 KB: 2 MB expanded, under the budget: accepted by the parser, and
    // each of the 40 bad tags is quoted with an excerpt, not 50 KB.
    let big = "A".repeat(50_000);
    assert!(40 * big.len() < MAX_EXPANDED_BYTES);
    let text = component(&format!(
        "  description: &s {big}\n  tags: [{}]\n",
        vec!["*s"; 40].join(", ")
    ));
    let r = check_text(&text, Path::new("catalog-info.yaml"));
    let tags: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule == "tag-format")
        .collect();
    assert_eq!(tags.len(), 40, "{:?}", r.findings);
    assert!(
        tags[0].message.contains("(50000 bytes)"),
        "{} bytes",
        tags[0].message.len()
    );
    let bytes = report_bytes(&r);
    assert!(bytes < 40 * 300, "report is {bytes} bytes");
}

#[test]
fn forty_thousand_bad_tags_give_a_capped_report_in_linear_time() {
    let (_, r) = time_check(&bad_tags(40_000));
    assert_eq!(r.findings.len(), MAX_FINDINGS + 1, "{}", r.findings.len());
    let last = &r.findings[MAX_FINDINGS];
    assert_eq!(last.rule, "too-many-findings");
    assert!(
        last.message.starts_with("39900 more findings"),
        "{}",
        last.message
    );
    let g = growth(bad_tags);
    assert!(g < 40.0, "10x the tags took {g:.1}x the time");
}

#[test]
fn a_mapping_with_forty_thousand_keys_is_checked_in_linear_time() {
    let (_, r) = time_check(&many_keys(40_000, false));
    assert!(r.findings.is_empty(), "{:?}", &r.findings[..1]);
    let g = growth(|n| many_keys(n, false));
    assert!(g < 40.0, "10x the keys took {g:.1}x the time");
}

#[test]
fn forty_thousand_duplicate_keys_give_a_capped_report_in_linear_time() {
    let (_, r) = time_check(&many_keys(40_000, true));
    assert_eq!(r.findings.len(), MAX_FINDINGS + 1);
    assert_eq!(r.findings[0].rule, "yaml-duplicate-key");
    assert!(
        r.findings[0].message.contains("first at line 6"),
        "{}",
        r.findings[0]
    );
    assert!(r.entities.is_empty());
    let g = growth(|n| many_keys(n, true));
    assert!(g < 40.0, "10x the duplicate keys took {g:.1}x the time");
}
