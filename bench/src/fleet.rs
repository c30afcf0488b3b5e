//! (6) Fleet: 10,000 agents booting within 5 minutes, refreshing with our jitter or without.
//!
//! Simulated on a virtual clock with the agent's real scheduler functions
//! (`broker::timing::{skew_for, refresh_after, unit}`): each agent refreshes at boot (stored
//! grant), then whenever the scheduler says. The IdP is assumed to answer at once; what is
//! counted is the number of token requests arriving in each second.

use crate::report::Report;
use stagepass::broker::timing;
use std::time::Duration;

const AGENTS: usize = 10_000;
const BOOT_WINDOW: f64 = 300.0;
const LIFETIME: Duration = Duration::from_secs(3600);
const HORIZON: usize = 8 * 3600;

/// Runs both schedules and adds their peak and mean IdP request rates to the report.
pub fn run(r: &mut Report) {
    for jitter in [true, false] {
        let mut per_second = vec![0u32; HORIZON];
        let skew = timing::skew_for(timing::DEFAULT_SKEW, Some(LIFETIME));
        for _ in 0..AGENTS {
            let mut t = timing::unit() * BOOT_WINDOW;
            while (t as usize) < HORIZON {
                per_second[t as usize] += 1;
                // Without jitter every agent waits exactly 75 % of the lifetime.
                let u = if jitter { timing::unit() } else { 0.5 };
                t += timing::refresh_after(LIFETIME, skew, u).as_secs_f64();
            }
        }
        let total: u64 = per_second.iter().map(|&n| u64::from(n)).sum();
        let peak_boot = per_second[..600].iter().copied().max().unwrap_or(0);
        let last_hour = &per_second[HORIZON - 3600..];
        let peak_steady = last_hour.iter().copied().max().unwrap_or(0);
        let mean = total as f64 / HORIZON as f64;
        r.fleet(jitter, peak_boot, peak_steady, mean);
    }
}
