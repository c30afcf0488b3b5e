//! Property tests (fuzz-style) of every parser that reads input from outside the agent.
//!
//! cargo-fuzz needs a nightly toolchain, which this project's CI cannot fetch, so the
//! parsers are fuzzed with proptest instead: arbitrary and mutated inputs, bounded case
//! counts so `tests/run` stays fast. `STAGEPASS_PROPTEST_CASES=100000` runs a long campaign.
//! Every input that ever crashed a parser is kept as a named regression test next to the
//! property that found it.

mod api;
mod catalog;
mod config;
mod helpers;

/// Cases per property: `STAGEPASS_PROPTEST_CASES` when set to a number, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("STAGEPASS_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A proptest config with [`cases`] and no persistence file written into the source tree.
fn config(default: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: cases(default),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
