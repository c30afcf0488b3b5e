//! The results: a markdown table (stdout and `results.md`), the same as JSON
//! (`results.json`) and the latency chart (`latency.svg`).

use crate::proc::WrkResult;
use anyhow::Result;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Latency percentiles of one series, for tables and the chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// What was measured.
    pub name: String,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Samples.
    pub n: usize,
}

/// Issue 20's target: a pushed change shows in Backstage within this.
const PUSH_TARGET: Duration = Duration::from_secs(5);

/// One row of the live catalog table: what was timed, its JSON key and the samples.
pub struct Live {
    what: String,
    key: &'static str,
    samples: Vec<Duration>,
    /// A commit + push row (held to [`PUSH_TARGET`]); a save row is not.
    push: bool,
}

impl Live {
    /// A save -> diff row ([`PUSH_TARGET`] does not apply).
    pub fn save(what: &str, key: &'static str, samples: Vec<Duration>) -> Self {
        Self {
            what: what.into(),
            key,
            samples,
            push: false,
        }
    }

    /// A commit + push -> visible row: `what` is what Backstage shows (the row reads
    /// "commit + `git push` -> WHAT").
    pub fn push(what: &str, key: &'static str, samples: Vec<Duration>) -> Self {
        Self {
            what: what.into(),
            key,
            samples,
            push: true,
        }
    }
}

/// Everything measured in one run.
pub struct Report {
    md: String,
    json: Value,
    chart: Vec<Series>,
    notes: Vec<String>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl Report {
    /// An empty report that names the machine.
    pub fn new(quick: bool) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# stagepass benchmarks\n\nMachine: {cpu}, {cores} cores, load average at start {}.{}\n",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            if quick {
                " Quick mode (fewer runs)."
            } else {
                ""
            }
        );
        Self {
            md,
            json: json!({"machine": {"cpu": cpu, "cores": cores, "loadavg": load.trim()}, "quick": quick}),
            chart: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A single fact (size, RSS).
    pub fn fact(&mut self, what: &str, value: String) {
        let _ = writeln!(self.md, "- {what}: {value}");
        self.json["facts"][what] = json!(value);
    }

    /// A whole section written by a bench module: markdown and its JSON under `key`.
    pub fn section(&mut self, md: &str, key: &str, value: Value) {
        self.md.push_str(md);
        self.json[key] = value;
    }

    /// Something the reader must know (a part not measured and why).
    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// (4) boot times.
    pub fn boot(&mut self, answering: &[Duration], fresh: &[Duration]) {
        let a = crate::series("start -> socket answering", answering.to_vec());
        let f = crate::series("start -> first fresh token", fresh.to_vec());
        let _ = writeln!(
            self.md,
            "\n## Boot ({} runs, release binary, stored grant, real IdP, catalog watching a 10k-file repository)\n\n\
             | what | median | max |\n|---|---:|---:|\n\
             | process start -> socket answers /healthz | {:.1} ms | {:.1} ms |\n\
             | process start -> first fresh token (boot refresh at the IdP) | {:.1} ms | {:.1} ms |\n",
            answering.len(),
            us(a.p50) / 1e3,
            us(answering.iter().copied().max().unwrap_or_default()) / 1e3,
            us(f.p50) / 1e3,
            us(fresh.iter().copied().max().unwrap_or_default()) / 1e3,
        );
        self.json["boot"] = json!({
            "runs": answering.len(),
            "socket_answering_ms": answering.iter().map(|d| us(*d) / 1e3).collect::<Vec<_>>(),
            "first_fresh_token_ms": fresh.iter().map(|d| us(*d) / 1e3).collect::<Vec<_>>(),
        });
    }

    /// (4b) restarts with the stored access token against without it (a boot refresh): process
    /// start -> first token, and IdP token requests per restart.
    pub fn restart(
        &mut self,
        stored: &(Vec<Duration>, Vec<u64>),
        without: &(Vec<Duration>, Vec<u64>),
    ) {
        let s = crate::series(
            "restart -> first token (stored access token)",
            stored.0.clone(),
        );
        let w = crate::series("restart -> first token (boot refresh)", without.0.clone());
        let calls = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        let max = |v: &[Duration]| us(v.iter().copied().max().unwrap_or_default()) / 1e3;
        let ratio = us(w.p50) / us(s.p50).max(1.0);
        let _ = writeln!(
            self.md,
            "\n## Restart ({} runs each, alternating, release binary, one home, catalog off, real IdP)\n\n\
             | start with | process start -> first token, median | max | IdP token requests per restart |\n|---|---:|---:|---:|\n\
             | the access token stored by the previous run | {:.1} ms | {:.1} ms | {:.2} |\n\
             | no stored access token (boot refresh, as before issue 23) | {:.1} ms | {:.1} ms | {:.2} |\n\n\
             Median ratio without / with: **{ratio:.2}x**.\n",
            stored.0.len(),
            us(s.p50) / 1e3,
            max(&stored.0),
            calls(&stored.1),
            us(w.p50) / 1e3,
            max(&without.0),
            calls(&without.1),
        );
        self.json["restart"] = json!({
            "stored": {"first_token_ms": stored.0.iter().map(|d| us(*d) / 1e3).collect::<Vec<_>>(), "idp_token_requests": stored.1},
            "without": {"first_token_ms": without.0.iter().map(|d| us(*d) / 1e3).collect::<Vec<_>>(), "idp_token_requests": without.1},
            "median_ratio_without_over_stored": ratio,
        });
    }

    /// (1) one connection count of the HTTP comparison.
    pub fn http(&mut self, conns: usize, ours: &[WrkResult], base: &[WrkResult]) {
        if conns == 1 {
            let _ = writeln!(
                self.md,
                "\n## HTTP cache hit: `GET /v1/token/dev`, guard on, vs bare hyper with the same bytes\n\n\
                 wrk, keep-alive, rounds alternate stagepass / baseline; medians of the rounds.\n\n\
                 | conns | stagepass req/s | p50 | p99 | p99.9 | bare hyper req/s | p50 | p99 | p99.9 | ratio |\n\
                 |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
        }
        let m = |v: &[WrkResult], f: fn(&WrkResult) -> f64| median(v.iter().map(f).collect());
        let (or, br) = (m(ours, |w| w.rps), m(base, |w| w.rps));
        let ratio = if br > 0.0 { or / br } else { 0.0 };
        let p = |v: &[WrkResult], f: fn(&WrkResult) -> Duration| {
            median(v.iter().map(|w| us(f(w))).collect())
        };
        let _ = writeln!(
            self.md,
            "| {conns} | {or:.0} | {:.0} us | {:.0} us | {:.0} us | {br:.0} | {:.0} us | {:.0} us | {:.0} us | **{ratio:.2}x** |",
            p(ours, |w| w.p50),
            p(ours, |w| w.p99),
            p(ours, |w| w.p999),
            p(base, |w| w.p50),
            p(base, |w| w.p99),
            p(base, |w| w.p999),
        );
        let rounds = |v: &[WrkResult]| {
            v.iter()
                .map(|w| json!({"rps": w.rps, "p50_us": us(w.p50), "p90_us": us(w.p90), "p99_us": us(w.p99), "p999_us": us(w.p999), "requests": w.requests}))
                .collect::<Vec<_>>()
        };
        self.json["http"][conns.to_string()] =
            json!({"stagepass": rounds(ours), "bare_hyper": rounds(base), "ratio": ratio});
        if conns == 16 {
            let s = |name: &str, v: &[WrkResult]| Series {
                name: name.into(),
                p50: Duration::from_secs_f64(p(v, |w| w.p50) / 1e6),
                p90: Duration::from_secs_f64(p(v, |w| w.p90) / 1e6),
                p99: Duration::from_secs_f64(p(v, |w| w.p99) / 1e6),
                n: v.iter().map(|w| w.requests as usize).sum(),
            };
            self.chart.push(s("stagepass HTTP (16 conns)", ours));
            self.chart.push(s("bare hyper (16 conns)", base));
        }
    }

    /// (2) the CLI comparison, with the cost of starting any process (`floor`) measured in
    /// the same loop.
    pub fn cli(
        &mut self,
        ours: &[Duration],
        core: &[Duration],
        theirs: &[Duration],
        floor: &[Duration],
    ) {
        let a = crate::series("stagepass token", ours.to_vec());
        let c = crate::series("stagepass-core token", core.to_vec());
        let f = crate::series("echo (spawn floor)", floor.to_vec());
        let _ = writeln!(
            self.md,
            "\n## Token CLI, cached token, process spawn to exit (stagepass, oidc-token and `echo` alternating)\n\n\
             | command | runs | median | p90 | p99 |\n|---|---:|---:|---:|---:|\n\
             | `stagepass token dev` | {} | {:.0} us | {:.0} us | {:.0} us |\n\
             | `stagepass-core token dev` (the full binary doing the same request; its own loop after the pair) | {} | {:.0} us | {:.0} us | {:.0} us |\n\
             | `echo` of a token-sized line (spawn floor: the cost of starting any process here) | {} | {:.0} us | {:.0} us | {:.0} us |",
            a.n,
            us(a.p50),
            us(a.p90),
            us(a.p99),
            c.n,
            us(c.p50),
            us(c.p90),
            us(c.p99),
            f.n,
            us(f.p50),
            us(f.p90),
            us(f.p99)
        );
        self.json["cli"]["stagepass_token_us"] =
            json!(ours.iter().map(|d| us(*d)).collect::<Vec<_>>());
        self.json["cli"]["stagepass_core_token_us"] =
            json!(core.iter().map(|d| us(*d)).collect::<Vec<_>>());
        self.json["cli"]["echo_floor_us"] = json!(floor.iter().map(|d| us(*d)).collect::<Vec<_>>());
        self.json["cli"]["median_over_floor_us"] = json!(us(a.p50) - us(f.p50));
        self.chart.push(a.clone());
        self.chart.push(c);
        if !theirs.is_empty() {
            let b = crate::series("oidc-token", theirs.to_vec());
            let ratio = us(b.p50) / us(a.p50).max(1.0);
            let _ = writeln!(
                self.md,
                "| `oidc-token bench` (Debian oidc-agent-cli) | {} | {:.0} us | {:.0} us | {:.0} us |\n\n\
                 Median ratio oidc-token / stagepass token: **{ratio:.2}x** (above 1 means stagepass is faster). \
                 Above the spawn floor: stagepass token **{:.0} us**, oidc-token {:.0} us \
                 (`echo` loads the C library at each start, which the statically linked front does not: \
                 the difference can come out at or below zero).",
                b.n,
                us(b.p50),
                us(b.p90),
                us(b.p99),
                us(a.p50) - us(f.p50),
                us(b.p50) - us(f.p50)
            );
            self.json["cli"]["oidc_token_us"] =
                json!(theirs.iter().map(|d| us(*d)).collect::<Vec<_>>());
            self.json["cli"]["median_ratio_oidc_over_stagepass"] = json!(ratio);
            self.chart.push(b);
        }
    }

    /// (3) one single-flight size.
    pub fn single_flight(&mut self, n: usize, ok: usize, calls: u64, took: Duration) {
        if self.json.get("single_flight").is_none() {
            let _ = writeln!(
                self.md,
                "\n## Single flight: N concurrent callers on an expired token, IdP answering in 50 ms (`slow` fault)\n\n\
                 | callers | served | IdP refresh calls | time until all served |\n|---:|---:|---:|---:|"
            );
            self.json["single_flight"] = json!([]);
        }
        let _ = writeln!(
            self.md,
            "| {n} | {ok} | {calls} | {:.1} ms |",
            us(took) / 1e3
        );
        if let Some(a) = self.json["single_flight"].as_array_mut() {
            a.push(json!({"callers": n, "served": ok, "idp_calls": calls, "ms": us(took) / 1e3}));
        }
    }

    /// (5) one catalog scan size.
    pub fn catalog_scan(
        &mut self,
        files: usize,
        median: Duration,
        seen: usize,
        watches: usize,
        catalog_files: usize,
        entities: usize,
    ) {
        if self.json.get("catalog_scan").is_none() {
            let _ = writeln!(
                self.md,
                "\n## Catalog: initial scan (walk, parse, validate), median of 3\n\n\
                 | repo files | scan | files seen | watches (dirs) | catalog files | entities |\n|---:|---:|---:|---:|---:|---:|"
            );
            self.json["catalog_scan"] = json!([]);
        }
        let _ = writeln!(
            self.md,
            "| {files} | {:.1} ms | {seen} | {watches} | {catalog_files} | {entities} |",
            us(median) / 1e3
        );
        if let Some(a) = self.json["catalog_scan"].as_array_mut() {
            a.push(json!({"files": files, "ms": us(median) / 1e3, "seen": seen, "watches": watches, "catalog_files": catalog_files, "entities": entities}));
        }
    }

    /// (5) the catalog against a live Backstage: save -> diff, and commit + push -> the
    /// change visible in Backstage for each kind of change; one row each, with issue 20's
    /// [`PUSH_TARGET`] checked against the worst run (push rows only).
    pub fn catalog_live(&mut self, rows: &[Live]) {
        let mut table = String::new();
        let mut js = serde_json::Map::new();
        for row in rows {
            let s = crate::series(&row.what, row.samples.clone());
            let max = row.samples.iter().copied().max().unwrap_or_default();
            let target = if !row.push {
                "-".to_string()
            } else if max <= PUSH_TARGET {
                "met".to_string()
            } else {
                format!(
                    "**missed**: {} of {} runs over",
                    row.samples.iter().filter(|d| **d > PUSH_TARGET).count(),
                    s.n
                )
            };
            let what = if row.push {
                format!("commit + `git push` -> {}", row.what)
            } else {
                row.what.clone()
            };
            let _ = writeln!(
                table,
                "| {what} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {target} |",
                s.n,
                us(s.p50) / 1e3,
                us(s.p90) / 1e3,
                us(max) / 1e3
            );
            js.insert(
                row.key.to_string(),
                json!({"n": s.n, "ms": row.samples.iter().map(|d| us(*d) / 1e3).collect::<Vec<_>>()}),
            );
        }
        let _ = writeln!(
            self.md,
            "\n## Catalog against a live Backstage (in-process catalog service, real IdP, git host, Backstage)\n\n\
             The save figures include the watcher's 150 ms debounce; Backstage's own processing \
             interval is 10 min, so only the agent's push (a refresh of the file's Location \
             entity, or a registration) explains the push figures. Each push row is timed from \
             the start of `git push` until Backstage's API shows the change; the moved file runs \
             with `catalog.unregister_deleted` on.\n\n\
             | what | runs | median | p90 | max | target <= {} s |\n|---|---:|---:|---:|---:|---|\n{}",
            PUSH_TARGET.as_secs_f64(),
            table.trim_end()
        );
        self.json["catalog_live"] = Value::Object(js);
    }

    /// (6) the fleet simulation: per schedule and hour, mean and peaks (peak / mean).
    pub fn fleet(
        &mut self,
        agents: usize,
        rows: &[(crate::fleet::Schedule, Vec<crate::fleet::Hour>)],
    ) {
        let hours = rows.first().map_or(0, |(_, h)| h.len());
        let _ = writeln!(
            self.md,
            "\n## Fleet: {agents} agents booting within 5 min, 1 h tokens, {hours} h\n\n\
             Simulated on a virtual clock with the agent's real scheduler code \
             (`broker::timing::first_refresh_after`, `refresh_after`, `skew_for`, `unit`); the IdP \
             answers at once. Each cell: peak one-minute rate / mean of that hour (req/s), then \
             the peak single second. One-minute windows show phases marching together; single \
             seconds at ~4 req/s are mostly Poisson noise (~3x even when perfectly spread).\n"
        );
        let mut head = String::from("| schedule |");
        let mut rule = String::from("|---|");
        for h in 1..=hours {
            head.push_str(&format!(" hour {h} |"));
            rule.push_str("---:|");
        }
        let _ = writeln!(self.md, "{head}\n{rule}");
        let mut json_rows = serde_json::Map::new();
        for (schedule, hs) in rows {
            let mut line = format!("| {} |", schedule.name());
            for h in hs {
                line.push_str(&format!(
                    " {:.1}/{:.1} = **{:.2}x**, {} |",
                    h.peak_minute,
                    h.mean,
                    h.peak_minute / h.mean.max(f64::MIN_POSITIVE),
                    h.peak_second
                ));
            }
            let _ = writeln!(self.md, "{line}");
            json_rows.insert(
                schedule.name().to_string(),
                json!(hs.iter().map(|h| json!({"mean_rps": h.mean, "peak_minute_rps": h.peak_minute, "peak_second": h.peak_second})).collect::<Vec<_>>()),
            );
        }
        self.json["fleet"] = json!({"agents": agents, "simulated": "virtual clock, real broker::timing code", "hours": json_rows});
    }

    /// (6b) the fleet restarting within a minute after an outage, with and without stored
    /// access tokens.
    pub fn fleet_restart(
        &mut self,
        agents: usize,
        window: f64,
        rows: &[(f64, crate::fleet::Restart, crate::fleet::Restart)],
    ) {
        let _ = writeln!(
            self.md,
            "\n## Fleet restart: {agents} agents start again within {window:.0} s after an outage, 1 h tokens\n\n\
             Same virtual clock and scheduler code, plus the broker's `timing::stored_plan` (what a \
             starting agent does with its stored access token). The fleet ran 4 h, every agent \
             stopped, stayed down for the outage, then started within the minute. Counted over the \
             2 h from the restart: IdP calls made by the starts per agent, peak one-minute rate, \
             peak second, mean (req/s).\n\n\
             | agents down for | stored access tokens: calls at start / agent | peak minute | peak second | without (boot refresh): calls at start / agent | peak minute | peak second | peak-minute ratio without / with |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        let mut json_rows = Vec::new();
        for (down, with, without) in rows {
            let ratio = without.peak_minute / with.peak_minute.max(f64::MIN_POSITIVE);
            let _ = writeln!(
                self.md,
                "| {:.0} min | {:.2} | {:.1} req/s | {} | {:.2} | {:.1} req/s | {} | **{ratio:.1}x** |",
                down / 60.0,
                with.calls_at_start_per_agent,
                with.peak_minute,
                with.peak_second,
                without.calls_at_start_per_agent,
                without.peak_minute,
                without.peak_second,
            );
            let j = |r: &crate::fleet::Restart| json!({"calls_at_start_per_agent": r.calls_at_start_per_agent, "peak_minute_rps": r.peak_minute, "peak_second": r.peak_second, "mean_rps": r.mean});
            json_rows.push(json!({"down_s": down, "stored": j(with), "without": j(without)}));
        }
        self.json["fleet_restart"] =
            json!({"agents": agents, "window_s": window, "rows": json_rows});
    }

    /// Prints the table and writes results.md, results.json and latency.svg under `dir`.
    pub fn write(mut self, dir: &Path) -> Result<()> {
        if !self.notes.is_empty() {
            self.md.push_str("\n## Not measured in this run\n\n");
            for n in &self.notes {
                let _ = writeln!(self.md, "- {n}");
            }
            self.json["notes"] = json!(self.notes);
        }
        self.md.push_str("\n![latency percentiles](latency.svg)\n");
        print!("{}", self.md);
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.md"), &self.md)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_vec_pretty(&self.json)?,
        )?;
        std::fs::write(dir.join("latency.svg"), crate::svg::chart(&self.chart))?;
        Ok(())
    }
}
