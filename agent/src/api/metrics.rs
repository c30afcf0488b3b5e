//! Prometheus text metrics of the API, counted in-process without a metrics library.
//!
//! Labels are bounded: routes are counted by their template (`/v1/token/{profile}`), never
//! by raw path, and profiles come from the config. Token requests are counted here, by the
//! API, per profile and outcome (`ok` or the error code), because that is what the API sees;
//! remaining token lifetimes come from the broker's status.

use crate::broker::ProfileStatus;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Counters shared by every connection.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    token_requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    durations: Mutex<BTreeMap<&'static str, (u64, f64)>>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16, took: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, status)).or_default() += 1;
        }
        if let Ok(mut m) = self.durations.lock() {
            let e = m.entry(route).or_default();
            e.0 += 1;
            e.1 += took.as_secs_f64();
        }
    }

    /// Counts one token request of a profile by outcome (`ok` or an error code).
    pub fn record_token(&self, profile: &str, outcome: &'static str) {
        if let Ok(mut m) = self.token_requests.lock() {
            *m.entry((profile.to_string(), outcome)).or_default() += 1;
        }
    }

    /// Renders everything in the Prometheus text exposition format (0.0.4).
    pub fn render(&self, profiles: &[ProfileStatus], uptime: Duration, now: SystemTime) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP stagepass_up The agent answers.\n# TYPE stagepass_up gauge\nstagepass_up 1\n",
        );
        let _ = writeln!(
            out,
            "# HELP stagepass_uptime_seconds Seconds since the agent started.\n\
             # TYPE stagepass_uptime_seconds gauge\nstagepass_uptime_seconds {}",
            uptime.as_secs()
        );
        out.push_str(
            "# HELP stagepass_api_requests_total API requests answered, by route template and HTTP status.\n\
             # TYPE stagepass_api_requests_total counter\n",
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "stagepass_api_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str(
            "# HELP stagepass_api_request_duration_seconds Time spent answering API requests, by route.\n\
             # TYPE stagepass_api_request_duration_seconds summary\n",
        );
        if let Ok(m) = self.durations.lock() {
            for (route, (count, sum)) in m.iter() {
                let r = escape(route);
                let _ = writeln!(
                    out,
                    "stagepass_api_request_duration_seconds_sum{{route=\"{r}\"}} {sum}\n\
                     stagepass_api_request_duration_seconds_count{{route=\"{r}\"}} {count}"
                );
            }
        }
        out.push_str(
            "# HELP stagepass_token_requests_total Token requests through the API, by profile and outcome.\n\
             # TYPE stagepass_token_requests_total counter\n",
        );
        if let Ok(m) = self.token_requests.lock() {
            for ((profile, outcome), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "stagepass_token_requests_total{{profile=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(profile)
                );
            }
        }
        out.push_str(
            "# HELP stagepass_token_expires_in_seconds Remaining lifetime of each profile's cached token.\n\
             # TYPE stagepass_token_expires_in_seconds gauge\n",
        );
        for p in profiles {
            if let Some(left) = p.expires_at.as_deref().and_then(|e| seconds_left(e, now)) {
                let _ = writeln!(
                    out,
                    "stagepass_token_expires_in_seconds{{profile=\"{}\"}} {left}",
                    escape(&p.profile)
                );
            }
        }
        out.push_str(
            "# HELP stagepass_profile_state Current state of each profile (1 for the state it is in).\n\
             # TYPE stagepass_profile_state gauge\n",
        );
        for p in profiles {
            let state = serde_json::to_value(p.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "stagepass_profile_state{{profile=\"{}\",state=\"{}\"}} 1",
                escape(&p.profile),
                escape(&state)
            );
        }
        out
    }
}

/// Seconds from `now` to an RFC 3339 instant (negative when past).
pub fn seconds_left(rfc3339: &str, now: SystemTime) -> Option<i64> {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let now = time::OffsetDateTime::from(now);
    Some((at - now).whole_seconds())
}

/// Escapes a label value as the exposition format requires.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ProfileState;

    #[test]
    fn renders_counters_and_lifetimes() {
        let m = Metrics::default();
        m.record_request("/v1/token/{profile}", 200, Duration::from_millis(2));
        m.record_request("/v1/token/{profile}", 200, Duration::from_millis(2));
        m.record_request("/v1/status", 401, Duration::from_millis(1));
        m.record_token("back\"stage", "ok");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = ProfileStatus {
            profile: "backstage".into(),
            grant: "device".into(),
            state: ProfileState::Valid,
            reason: None,
            expires_at: Some("2023-11-14T22:33:20Z".into()),
            token_fingerprint: None,
        };
        let text = m.render(&[p], Duration::from_secs(5), now);
        assert!(
            text.contains(
                "stagepass_api_requests_total{route=\"/v1/token/{profile}\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("stagepass_api_requests_total{route=\"/v1/status\",status=\"401\"} 1")
        );
        assert!(text.contains(
            "stagepass_token_requests_total{profile=\"back\\\"stage\",outcome=\"ok\"} 1"
        ));
        assert!(
            text.contains("stagepass_token_expires_in_seconds{profile=\"backstage\"} 1200"),
            "{text}"
        );
        assert!(text.contains("stagepass_profile_state{profile=\"backstage\",state=\"valid\"} 1"));
    }
}
