//! (6) Fleet: 10,000 agents booting within 5 minutes with 1 h tokens, over 8 hours; and the
//! same fleet restarting within 1 minute after an outage, with and without stored access tokens.
//!
//! Simulated on a virtual clock with the agent's real scheduler functions
//! (`broker::timing::{skew_for, first_refresh_after, refresh_after, unit}`): each agent gets a
//! token at boot (stored grant), schedules its first refresh as the broker does after a start
//! (10-80 % of the lifetime), then every later one at 70-80 %. Two comparisons, same clock:
//! the 70-80 % jitter alone from the first refresh on (the schedule before the spread first
//! refresh), and no jitter at all (exactly 75 %). The IdP answers at once; what is counted is
//! token requests per second.
//!
//! Per hour the table gives the peak against the mean of that hour: the peak of one-minute
//! windows (sustained load, what an IdP must scale for; phases marching together show here)
//! and of single seconds (which at ~4 req/s mean is dominated by Poisson noise, ~3x even for a
//! perfectly spread fleet).

use crate::report::Report;
use stagepass::broker::timing;
use std::time::Duration;

const AGENTS: usize = 10_000;
const BOOT_WINDOW: f64 = 300.0;
const LIFETIME: Duration = Duration::from_secs(3600);
const HOURS: usize = 8;
const HORIZON: usize = HOURS * 3600;

/// One schedule's requests per second over the horizon.
fn simulate(schedule: Schedule) -> Vec<u32> {
    let mut per_second = vec![0u32; HORIZON];
    let skew = timing::skew_for(timing::DEFAULT_SKEW, Some(LIFETIME));
    for _ in 0..AGENTS {
        let mut t = timing::unit() * BOOT_WINDOW;
        let mut first = true;
        while (t as usize) < HORIZON {
            per_second[t as usize] += 1;
            let after = match schedule {
                Schedule::Stagepass if first => {
                    timing::first_refresh_after(LIFETIME, skew, timing::unit())
                }
                Schedule::Stagepass | Schedule::SteadyJitterOnly => {
                    timing::refresh_after(LIFETIME, skew, timing::unit())
                }
                // Without jitter every agent waits exactly 75 % of the lifetime.
                Schedule::NoJitter => timing::refresh_after(LIFETIME, skew, 0.5),
            };
            first = false;
            t += after.as_secs_f64();
        }
    }
    per_second
}

/// The schedules compared.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// The broker's: first refresh 10-80 %, then 70-80 %.
    Stagepass,
    /// 70-80 % from the first refresh on (before the spread first refresh).
    SteadyJitterOnly,
    /// Exactly 75 %.
    NoJitter,
}

impl Schedule {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Stagepass => "stagepass (first refresh 10-80 %, then 70-80 %)",
            Schedule::SteadyJitterOnly => "70-80 % jitter only",
            Schedule::NoJitter => "no jitter (exactly 75 %)",
        }
    }
}

/// One hour of one schedule.
#[derive(Debug, Clone, Copy)]
pub struct Hour {
    /// Mean requests per second.
    pub mean: f64,
    /// Peak one-minute window, in requests per second.
    pub peak_minute: f64,
    /// Peak single second.
    pub peak_second: u32,
}

fn hours(per_second: &[u32]) -> Vec<Hour> {
    per_second
        .chunks(3600)
        .map(|h| {
            let total: u32 = h.iter().sum();
            let peak_minute = h
                .chunks(60)
                .map(|m| m.iter().sum::<u32>())
                .max()
                .unwrap_or(0);
            Hour {
                mean: f64::from(total) / 3600.0,
                peak_minute: f64::from(peak_minute) / 60.0,
                peak_second: h.iter().copied().max().unwrap_or(0),
            }
        })
        .collect()
}

/// Runs the three schedules and adds the per-hour table to the report, then the restart case.
pub fn run(r: &mut Report) {
    let rows: Vec<(Schedule, Vec<Hour>)> = [
        Schedule::Stagepass,
        Schedule::SteadyJitterOnly,
        Schedule::NoJitter,
    ]
    .into_iter()
    .map(|s| (s, hours(&simulate(s))))
    .collect();
    r.fleet(AGENTS, &rows);
    let restarts = RESTART_OUTAGES
        .iter()
        .map(|&down| {
            let with = restart(down, true);
            let without = restart(down, false);
            (down, with, without)
        })
        .collect::<Vec<_>>();
    r.fleet_restart(AGENTS, RESTART_WINDOW, &restarts);
}

// ---- "10,000 agents restart within 1 minute after an outage" (issue 23) ----
//
// The fleet has run for `RESTART_AT` on the schedule above (so its phases are spread as in
// steady state); then every agent stops (the incident), stays down `down`, and starts again
// at a uniform moment within `RESTART_WINDOW`. Without a stored access token each start is a
// boot refresh (one IdP call per agent, all within the minute). With one, each agent decides
// with the broker's own `timing::stored_plan`: a token still before its planned refresh is
// served and renewed at that planned time (no call at start); one past it but usable is
// served and renewed at once; one within the margin of its expiry is refreshed at start.
// Afterwards every agent follows the broker's schedule (`first_refresh_after` after a boot
// refresh, `refresh_after` otherwise). Counted: token requests per second from the restart on.

/// How long the fleet ran before the incident.
const RESTART_AT: f64 = 4.0 * 3600.0;
/// Agents start again uniformly within this many seconds.
pub const RESTART_WINDOW: f64 = 60.0;
/// Outage lengths (agents down) simulated, in seconds.
const RESTART_OUTAGES: [f64; 3] = [300.0, 1800.0, 3600.0];
/// What is counted after the restart window opens.
const AFTER: usize = 2 * 3600;

/// The restart case of one outage length, with or without stored access tokens.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// IdP calls made at start (within the restart minute, by the starts themselves), per agent.
    pub calls_at_start_per_agent: f64,
    /// Peak one-minute rate (req/s) over the 2 h from the restart.
    pub peak_minute: f64,
    /// Peak single second over the same 2 h.
    pub peak_second: u32,
    /// Mean rate (req/s) over the same 2 h.
    pub mean: f64,
}

fn restart(down: f64, stored: bool) -> Restart {
    let skew = timing::skew_for(timing::DEFAULT_SKEW, Some(LIFETIME));
    let mut per_second = vec![0u32; AFTER];
    let mut at_start = 0u64;
    let open = RESTART_AT + down;
    for _ in 0..AGENTS {
        // The agent's life before the incident: its last token and its planned refresh.
        let mut issued = timing::unit() * BOOT_WINDOW;
        let mut next =
            issued + timing::first_refresh_after(LIFETIME, skew, timing::unit()).as_secs_f64();
        while next < RESTART_AT {
            issued = next;
            next = issued + timing::refresh_after(LIFETIME, skew, timing::unit()).as_secs_f64();
        }
        let start = open + timing::unit() * RESTART_WINDOW;
        // The first call after the start, and whether the token it brings is a boot's.
        let (mut t, mut first) = if stored {
            let age = Duration::from_secs_f64(start - issued);
            let planned = Duration::from_secs_f64(next - issued);
            match timing::stored_plan(LIFETIME, skew, age, planned) {
                timing::StoredPlan::Serve { refresh_in } => {
                    if refresh_in.is_zero() {
                        at_start += 1;
                    }
                    (start + refresh_in.as_secs_f64(), false)
                }
                timing::StoredPlan::Refresh => {
                    at_start += 1;
                    (start, true)
                }
            }
        } else {
            at_start += 1;
            (start, true)
        };
        while t - open < AFTER as f64 {
            per_second[(t - open) as usize] += 1;
            let after = if first {
                timing::first_refresh_after(LIFETIME, skew, timing::unit())
            } else {
                timing::refresh_after(LIFETIME, skew, timing::unit())
            };
            first = false;
            t += after.as_secs_f64();
        }
    }
    let total: u32 = per_second.iter().sum();
    let peak_minute = per_second
        .windows(60)
        .map(|w| w.iter().sum::<u32>())
        .max()
        .unwrap_or(0);
    Restart {
        calls_at_start_per_agent: at_start as f64 / AGENTS as f64,
        peak_minute: f64::from(peak_minute) / 60.0,
        peak_second: per_second.iter().copied().max().unwrap_or(0),
        mean: f64::from(total) / AFTER as f64,
    }
}
