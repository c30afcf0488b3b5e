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
use super::yaml::{MAX_DEPTH, MAX_EXPANDED_BYTES, parse_stream};
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

/// A Component whose `spec.deep` nests `levels` block sequences around a scalar: `levels`
/// levels below `spec`, `levels + 2` from the root. Two bytes a level.
pub(crate) fn nested(levels: usize) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: bomb\nspec:\n  type: service\n  lifecycle: production\n  owner: team-a\n  deep:\n    {}x\n",
        "- ".repeat(levels)
    )
}

/// A Component whose `spec.deep` is `block` block sequences then `flow` flow sequences,
/// each anchored, around a string of `len` bytes: no alias at all, yet the copy kept for
/// each anchor holds every level below it (the 880 KB file of the audit took 428 MB).
pub(crate) fn nested_anchors(block: usize, flow: usize, len: usize) -> String {
    let mut s = component("").replace("  owner: team-a\n", "  owner: team-a\n  deep:\n");
    for i in 0..block {
        s.push_str(&format!("{}- &b{i}\n", "  ".repeat(i + 2)));
    }
    s.push_str(&"  ".repeat(block + 2));
    s.push_str("- ");
    for i in 0..flow {
        s.push_str(&format!("&f{i} ["));
    }
    s.push_str(&"a".repeat(len));
    s.push_str(&"]".repeat(flow));
    s.push('\n');
    s
}

/// This process's peak RSS in kB since the last [`reset_peak_rss`]. Panics when it cannot
/// be read: a bound on its growth would pass vacuously on a zero.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/self/status: {status}"))
}

/// Resets the peak RSS to the current RSS (Linux: `5` to `/proc/self/clear_refs`). Panics
/// when it cannot: the peak would be the whole process's so far, and a bound on its growth
/// since could pass vacuously.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5")
        .expect("reset the peak RSS (/proc/self/clear_refs)");
}

/// Runs `f` on a thread with a 2 MiB stack, the size of the agent's blocking threads and
/// tokio's workers: the stack the catalog check and whatever drops its result run on.
pub(crate) fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(f)
        .expect("spawn a test thread")
        .join()
        .expect("the check overflowed or panicked")
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

#[test]
fn ten_thousand_nested_sequences_are_refused_on_a_small_stack() {
    // The 20 KB file that aborted the agent at every start, and the 80 KB one (bare, no
    // entity around it) that aborted `catalog check` on an 8 MiB main stack.
    let deep = nested(10_000);
    assert!(deep.len() < 21_000, "{}", deep.len());
    let bare = format!("{}x\n", "- ".repeat(40_000));
    for text in [deep, bare] {
        let r = on_small_stack(move || check_text(&text, Path::new("catalog-info.yaml")));
        let too_deep: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.rule == "yaml-too-large" && f.message.contains("nested"))
            .collect();
        assert_eq!(too_deep.len(), 1, "{:?}", r.findings);
        // Pointed at the collection past the cap, on the one long line of the file.
        assert!(
            too_deep[0].line >= 1 && too_deep[0].col > 1,
            "{}",
            too_deep[0]
        );
        assert!(r.entities.is_empty());
    }
}

#[test]
fn a_tree_at_the_depth_cap_is_built_copied_and_dropped_on_a_small_stack() {
    // Root mapping and `spec` are two levels; `deep` takes the rest up to the cap.
    let text = nested(MAX_DEPTH - 2);
    let (r, stream) = on_small_stack(move || {
        let r = check_text(&text, Path::new("catalog-info.yaml"));
        let stream = parse_stream(&text);
        let copy = stream.clone();
        assert_eq!(copy, stream);
        let json = stream.documents[0].root.as_ref().map(|n| n.to_json());
        let printed = serde_json::to_string(&json).unwrap_or_default();
        assert!(printed.len() > 2 * MAX_DEPTH);
        drop((copy, json));
        (r, stream.errors)
    });
    assert!(stream.is_empty(), "{stream:?}");
    assert!(
        r.findings.iter().all(|f| f.rule != "yaml-too-large"),
        "{:?}",
        r.findings
    );
    assert_eq!(r.entities.len(), 1, "{:?}", r.findings);
    // One more level is refused.
    let r = check_text(&nested(MAX_DEPTH - 1), Path::new("catalog-info.yaml"));
    assert!(r.findings.iter().any(|f| f.rule == "yaml-too-large"));
}

#[test]
fn an_alias_cannot_nest_a_deep_node_deeper_than_the_cap() {
    // Two halves under the cap each, MAX_DEPTH + 50 levels once the alias is expanded.
    let half = MAX_DEPTH / 2 + 25;
    // Block sequences: the parser itself refuses flow collections past a few hundred levels.
    let dashes = "- ".repeat(half);
    let text = format!("a: &d\n  {dashes}x\nb:\n  {dashes}*d\n");
    let r = on_small_stack(move || check_text(&text, Path::new("catalog-info.yaml")));
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == "yaml-too-large" && f.message.contains("nested") && f.line == 4),
        "{:?}",
        r.findings
    );
}

#[test]
fn nested_anchors_are_counted_against_the_budget() {
    // 500 anchored levels around a 200 KB string: 100 MB of copies, no alias used.
    let text = nested_anchors(250, 250, 200_000);
    assert!(text.len() < 300_000, "{}", text.len());
    reset_peak_rss();
    let before = peak_rss_kb();
    let r = check_text(&text, Path::new("catalog-info.yaml"));
    let grew = peak_rss_kb().saturating_sub(before);
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == "yaml-too-large" && f.message.contains("anchors")),
        "{:?}",
        r.findings
    );
    assert!(r.entities.is_empty());
    // The copies stop at the budget (4 MiB of text; ~11 MB of peak growth measured in a
    // debug build); before, all 100 MB of them were made (115 MB measured). Nextest runs this test alone in its process; under `cargo test` another
    // test's allocations meanwhile count too, hence the room.
    assert!(grew < 48 * 1024, "peak RSS grew by {grew} kB");
    // One anchored level of the same string is fine.
    let r = check_text(
        &nested_anchors(1, 0, 100_000),
        Path::new("catalog-info.yaml"),
    );
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}
