//! Printing for the session commands: bare lines, pretty JSON, the status table.
//!
//! Writes ignore a closed stdout (`stagepass token | head -c0`) instead of panicking.

use std::io::Write;
use std::time::SystemTime;

/// Prints one line on stdout.
pub fn print_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Prints a JSON value, pretty, on stdout.
pub fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    print_line(&text);
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

fn s<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("-")
}

/// Renders the `/v1/status` document as a table.
pub fn status_table(status: &serde_json::Value, now: SystemTime) -> String {
    let mut rows = vec![[
        "PROFILE".to_string(),
        "GRANT".into(),
        "STATE".into(),
        "EXPIRES IN".into(),
        "DETAIL".into(),
    ]];
    for p in status
        .get("profiles")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let expires = p
            .get("expires_at")
            .and_then(|e| e.as_str())
            .and_then(|e| crate::timefmt::seconds_until(e, now))
            .map_or_else(|| "-".to_string(), human_duration);
        rows.push([
            s(p, "profile").to_string(),
            s(p, "grant").to_string(),
            s(p, "state").to_string(),
            expires,
            p.get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("")
                .to_string(),
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
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
    if rows.len() == 1 {
        out.push_str("(no profiles configured)\n");
    }
    // Profiles signed in to Backstage as the user: who, and what they own through.
    for p in status
        .get("profiles")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let id = p.get("identity").cloned().unwrap_or_default();
        let ent: Vec<&str> = id
            .get("ent")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str())
            .collect();
        if !ent.is_empty() {
            out.push_str(&format!(
                "{}: signed in as {}; owns through {}\n",
                s(p, "profile"),
                s(&id, "sub"),
                ent.join(", ")
            ));
        }
    }
    let store = status.get("store").cloned().unwrap_or_default();
    out.push_str(&format!(
        "\nstore:   {} ({})\n",
        s(&store, "backend"),
        s(&store, "detail")
    ));
    let catalog = status.get("catalog").cloned().unwrap_or_default();
    // Findings, owner diff and pending pushes, as `stagepass catalog` prints them.
    out.push_str(&crate::cli::catalog::status_text(&catalog));
    let agent = status.get("agent").cloned().unwrap_or_default();
    let api = status.get("api").cloned().unwrap_or_default();
    out.push_str(&format!(
        "agent:   {} pid {} up {}s, port {}\n",
        s(&agent, "version"),
        agent
            .get("pid")
            .map_or_else(|| "-".into(), |v| v.to_string()),
        agent
            .get("uptime_seconds")
            .map_or_else(|| "-".into(), |v| v.to_string()),
        api.get("tcp_port")
            .filter(|v| !v.is_null())
            .map_or_else(|| "off".into(), |v| v.to_string()),
    ));
    out
}

/// Prints the status table on stdout.
pub fn print_status(status: &serde_json::Value, now: SystemTime) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(status_table(status, now).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_backstage_user_and_ownership_refs_are_shown() {
        let status = serde_json::json!({
            "profiles": [{"profile": "bs", "grant": "authorization-code", "state": "valid",
                "identity": {"sub": "user:default/alice", "groups": [],
                    "ent": ["user:default/alice", "group:default/team-a"]}}],
        });
        let t = status_table(&status, SystemTime::now());
        assert!(
            t.contains("bs: signed in as user:default/alice; owns through user:default/alice, group:default/team-a"),
            "{t}"
        );
    }

    #[test]
    fn table_shows_profiles_expiry_store_and_catalog() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let status = serde_json::json!({
            "agent": {"version": "0.1.0", "pid": 7, "uptime_seconds": 3, "started_at": null},
            "api": {"tcp_port": 7391, "unix_socket": "/run/x.sock"},
            "store": {"backend": "file", "detail": "no keyring"},
            "profiles": [{"profile": "backstage", "grant": "device", "state": "valid",
                          "reason": null, "expires_at": "2023-11-14T22:33:20Z", "token_fingerprint": null}],
            "catalog": {"state": "watching", "root": "/w", "files": 1, "entities": 1,
                        "diff": [{"change": "owner_changed", "entity": "component:default/payments",
                                  "from": "group:team-a", "to": "group:team-b"}]}
        });
        let t = status_table(&status, now);
        assert!(t.contains("backstage  device  valid  20m 0s"), "{t}");
        assert!(t.contains("store:   file (no keyring)"), "{t}");
        assert!(t.contains("catalog: watching"), "{t}");
        assert!(
            t.contains("diff: component:default/payments: group:team-a -> group:team-b"),
            "{t}"
        );
        assert!(t.contains("port 7391"), "{t}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(-5), "expired");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(3700), "1h 1m");
    }
}
