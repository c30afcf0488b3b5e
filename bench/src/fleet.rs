//! (6) Fleet: 10,000 agents booting within 5 minutes with 1 h tokens, over 8 hours.
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

/// Runs the three schedules and adds the per-hour table to the report.
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
}
