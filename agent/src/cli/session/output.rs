//! Printing for the session commands: bare lines, pretty JSON, the status table.
//!
//! Writes ignore a closed stdout (`stagepass token | head -c0`) instead of panicking.

use crate::protocol::Status;
use crate::protocol::status::{ProfileState, ProfileStatus};
use serde::Serialize;
use std::io::Write;
use std::time::SystemTime;

/// Prints one line on stdout.
pub fn print_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Prints a typed answer as pretty JSON on stdout (`--json`: the agent's document as this
/// CLI reads it).
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => print_line(&text),
        Err(e) => eprintln!("stagepass: cannot encode the answer as JSON: {e}"),
    }
}

/// `12m 5s`, `3h 2m`, `expired`.
pub fn human_duration(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Renders the `/v1/status` document as a table: profiles, Backstage users, store,
/// catalog, agent.
pub fn status_table(status: &Status, now: SystemTime) -> String {
    let mut out = profile_table(&status.profiles, now);
    out.push_str(&backstage_users(&status.profiles));
    out.push_str(&format!(
        "\nstore:   {} ({})\n",
        status.store.backend, status.store.detail
    ));
    // Findings, owner diff and pending pushes, as `stagepass catalog` prints them.
    out.push_str(&crate::cli::catalog::status_text(&status.catalog));
    out.push_str(&format!(
        "agent:   {} pid {} up {}s, port {}\n",
        status.agent.version,
        status.agent.pid,
        status.agent.uptime_seconds,
        status
            .api
            .tcp_port
            .map_or_else(|| "off".into(), |p| p.to_string()),
    ));
    out
}

/// One row per profile: name, grant, state, time left, why.
fn profile_table(profiles: &[ProfileStatus], now: SystemTime) -> String {
    let mut rows = vec![[
        "PROFILE".to_string(),
        "GRANT".into(),
        "STATE".into(),
        "EXPIRES IN".into(),
        "DETAIL".into(),
    ]];
    for p in profiles {
        let expires = p
            .expires_at
            .as_deref()
            .and_then(|e| crate::timefmt::seconds_until(e, now))
            .map_or_else(|| "-".to_string(), human_duration);
        rows.push([
            p.profile.clone(),
            p.grant.clone(),
            state_word(p.state).to_string(),
            expires,
            p.reason.clone().unwrap_or_default(),
        ]);
    }
    let mut out = aligned(&rows);
    if rows.len() == 1 {
        out.push_str("(no profiles configured)\n");
    }
    out
}

/// The wire word of a profile state, as the table always showed it.
fn state_word(state: ProfileState) -> &'static str {
    match state {
        ProfileState::Valid => "valid",
        ProfileState::Refreshing => "refreshing",
        ProfileState::Stale => "stale",
        ProfileState::LoginRequired => "login_required",
        ProfileState::Error => "error",
    }
}

/// Columns padded to their widest cell, the last one left as is.
fn aligned(rows: &[[String; 5]]) -> String {
    let mut widths = [0usize; 5];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Profiles signed in to Backstage as the user: who, and what they own through.
fn backstage_users(profiles: &[ProfileStatus]) -> String {
    let mut out = String::new();
    for p in profiles {
        let Some(id) = p.identity.as_ref().filter(|id| !id.ent.is_empty()) else {
            continue;
        };
        out.push_str(&format!(
            "{}: signed in as {}; owns through {}\n",
            p.profile,
            id.sub.as_deref().unwrap_or("-"),
            id.ent.join(", ")
        ));
    }
    out
}

/// Prints the status table on stdout.
pub fn print_status(status: &Status, now: SystemTime) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(status_table(status, now).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A `/v1/status` document with these profiles and catalog part, the rest fixed.
    fn status(profiles: serde_json::Value, catalog: serde_json::Value) -> Status {
        serde_json::from_value(serde_json::json!({
            "agent": {"version": "0.1.0", "pid": 7, "uptime_seconds": 3, "started_at": "t"},
            "api": {"tcp_port": 7391, "unix_socket": "/run/x.sock"},
            "store": {"backend": "file", "detail": "no keyring"},
            "profiles": profiles,
            "catalog": catalog,
        }))
        .unwrap()
    }

    #[test]
    fn a_backstage_user_and_ownership_refs_are_shown() {
        let status = status(
            serde_json::json!([{"profile": "bs", "grant": "authorization-code", "state": "valid",
                "identity": {"sub": "user:default/alice", "groups": [],
                    "ent": ["user:default/alice", "group:default/team-a"]}}]),
            serde_json::json!({"state": "disabled"}),
        );
        let t = status_table(&status, SystemTime::now());
        assert!(
            t.contains("bs: signed in as user:default/alice; owns through user:default/alice, group:default/team-a"),
            "{t}"
        );
    }

    #[test]
    fn table_shows_profiles_expiry_store_and_catalog() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let status = status(
            serde_json::json!([{"profile": "backstage", "grant": "device", "state": "valid",
                          "reason": null, "expires_at": "2023-11-14T22:33:20Z", "token_fingerprint": null},
                         {"profile": "gh", "grant": "device", "state": "login_required",
                          "reason": "not logged in"}]),
            serde_json::to_value(crate::protocol::CatalogStatus {
                state: crate::protocol::status::EngineState::Watching,
                root: Some("/w".into()),
                files: 1,
                entities: 1,
                diff: vec![crate::protocol::catalog::Change::OwnerChanged {
                    entity: "component:default/payments".into(),
                    from: Some("group:team-a".into()),
                    to: Some("group:team-b".into()),
                }],
                ..Default::default()
            })
            .unwrap(),
        );
        let t = status_table(&status, now);
        assert!(
            t.contains("backstage  device  valid           20m 0s"),
            "{t}"
        );
        assert!(
            t.contains("gh         device  login_required  -           not logged in"),
            "{t}"
        );
        assert!(t.contains("store:   file (no keyring)"), "{t}");
        assert!(t.contains("catalog: watching"), "{t}");
        assert!(
            t.contains("diff: component:default/payments: group:team-a -> group:team-b"),
            "{t}"
        );
        assert!(t.contains("agent:   0.1.0 pid 7 up 3s, port 7391"), "{t}");
    }

    #[test]
    fn states_read_as_their_wire_word() {
        for state in [
            ProfileState::Valid,
            ProfileState::Refreshing,
            ProfileState::Stale,
            ProfileState::LoginRequired,
            ProfileState::Error,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                state_word(state),
                "{state:?}"
            );
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(-5), "expired");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(3700), "1h 1m");
    }
}
