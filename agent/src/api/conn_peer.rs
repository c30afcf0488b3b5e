//! The peer of one API connection: its attestation, computed once on first use, and its
//! held-back audit record. Here, in the server, because it joins the two layers below it
//! (`attest` says who the caller is, `audit` records what it got) without either knowing
//! the other.

use crate::attest::{Attestation, PeerKind, attest};
use crate::audit::{Audit, Outcome, Record};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// One connection's peer, attested on first use and kept for the connection's lifetime.
///
/// Cheap to create at accept (no /proc access); shared by the connection's requests
/// through an `Arc`.
#[derive(Debug)]
pub struct ConnPeer {
    kind: PeerKind,
    accepted: Instant,
    cell: OnceLock<Arc<Attestation>>,
    /// The connection's last audit record, still counting repeats (see [`ConnPeer::audit`]).
    tail: Mutex<Option<Tail>>,
}

/// A record held back while the same connection repeats it.
#[derive(Debug)]
struct Tail {
    record: Record,
    sink: Audit,
    /// When repeats stop counting into it (`record.time` + [`TAIL_WINDOW`]).
    until: SystemTime,
}

/// How long a connection's repeats of one request count into one record.
const TAIL_WINDOW: Duration = Duration::from_secs(1);

impl Drop for ConnPeer {
    fn drop(&mut self) {
        if let Some(t) = self.tail.get_mut().ok().and_then(Option::take) {
            t.sink.record(t.record);
        }
    }
}

impl ConnPeer {
    /// A peer accepted now.
    pub fn new(kind: PeerKind) -> Self {
        Self {
            kind,
            accepted: Instant::now(),
            cell: OnceLock::new(),
            tail: Mutex::new(None),
        }
    }

    /// Counts a credential handed out on this connection into its held-back record when it
    /// repeats it (same profile, route, rule and credential, within a second of the record's
    /// first request); `false` when it does not, and the caller then audits it with
    /// [`ConnPeer::audit`].
    ///
    /// A client on a keep-alive connection asking for the same token thousands of times a
    /// second then costs one uncontended lock per request instead of a record sent to the
    /// writer, and the log one line per connection and second saying how many.
    pub fn audit_repeat(
        &self,
        profile: &Arc<str>,
        route: &'static str,
        rule: &Arc<str>,
        fingerprint: &str,
        now: SystemTime,
    ) -> bool {
        let Ok(mut tail) = self.tail.lock() else {
            return false;
        };
        let Some(t) = tail.as_mut() else {
            return false;
        };
        let r = &mut t.record;
        let repeat = r.outcome == Outcome::Allow
            && r.role.is_none()
            && r.route == route
            && r.time <= now
            && now < t.until
            && (Arc::ptr_eq(&r.profile, profile) || r.profile == *profile)
            && r.rule
                .as_ref()
                .is_some_and(|x| Arc::ptr_eq(x, rule) || x == rule)
            && r.token_fingerprint.as_deref() == Some(fingerprint);
        if repeat {
            r.count = r.count.saturating_add(1);
            r.last_time = Some(now);
        }
        repeat
    }

    /// Audits a credential handed out on this connection: the record is held back to count
    /// repeats ([`ConnPeer::audit_repeat`]), and the one it replaces goes to the writer. The
    /// last one goes when the connection ends.
    pub fn audit(&self, sink: &Audit, record: Record) {
        let old = match self.tail.lock() {
            Ok(mut tail) => tail.replace(Tail {
                until: record.time.checked_add(TAIL_WINDOW).unwrap_or(record.time),
                record,
                sink: sink.clone(),
            }),
            Err(_) => {
                sink.record(record);
                return;
            }
        };
        if let Some(t) = old {
            t.sink.record(t.record);
        }
    }

    /// What the kernel said at accept.
    pub fn kind(&self) -> PeerKind {
        self.kind
    }

    /// The attestation, computed on the first call. Borrowed: a request that only checks a
    /// policy against it and counts a repeat into the held record takes no reference count.
    pub fn attestation(&self) -> &Arc<Attestation> {
        self.attestation_redacting(Vec::new)
    }

    /// [`ConnPeer::attestation`], its command line cleaned of the values `secrets` gives
    /// (asked only when the attestation is computed, once per connection).
    pub fn attestation_redacting(
        &self,
        secrets: impl FnOnce() -> Vec<crate::secret::Secret>,
    ) -> &Arc<Attestation> {
        self.cell.get_or_init(|| {
            let a = attest(Path::new("/proc"), self.kind, self.accepted.elapsed());
            let secrets = secrets();
            let values: Vec<&str> = secrets.iter().map(crate::secret::Secret::expose).collect();
            Arc::new(a.redacted(&values))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection repeating one request makes one line with its count; a different
    /// credential writes the held record; the last one is written when the connection ends.
    #[test]
    fn repeats_on_a_connection_count_into_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, writer) =
            Audit::start(&crate::config::AuditConfig::default(), dir.path()).unwrap();
        let peer = ConnPeer::new(PeerKind::Unix {
            pid: None,
            uid: None,
        });
        let profile: Arc<str> = "gh".into();
        let rule: Arc<str> = "default".into();
        let record = |fp: &str, now: SystemTime| Record {
            time: now,
            profile: profile.clone(),
            audience: None,
            route: "/v1/token/{profile}",
            role: None,
            caller: None,
            outcome: Outcome::Allow,
            rule: Some(rule.clone()),
            code: None,
            reason: None,
            token_fingerprint: Some(fp.into()),
            count: 1,
            last_time: None,
        };
        let t0 = SystemTime::now();
        let route = "/v1/token/{profile}";
        assert!(!peer.audit_repeat(&profile, route, &rule, "aaaaaaaaaaaa", t0));
        peer.audit(&audit, record("aaaaaaaaaaaa", t0));
        for i in 1..10 {
            let t = t0 + Duration::from_millis(i * 10);
            assert!(peer.audit_repeat(&profile, route, &rule, "aaaaaaaaaaaa", t));
        }
        // A new token is a new record (the held one goes to the writer with its count).
        let t1 = t0 + Duration::from_millis(200);
        assert!(!peer.audit_repeat(&profile, route, &rule, "bbbbbbbbbbbb", t1));
        peer.audit(&audit, record("bbbbbbbbbbbb", t1));
        // The same token a second later is not counted into the held record (the writer
        // may still merge identical records of one batch; a third token keeps them apart).
        let t2 = t1 + TAIL_WINDOW;
        assert!(!peer.audit_repeat(&profile, route, &rule, "bbbbbbbbbbbb", t2));
        peer.audit(&audit, record("cccccccccccc", t2));
        drop(peer);
        drop(audit);
        writer.finish();
        let text = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["token_fingerprint"], "aaaaaaaaaaaa");
        assert_eq!(lines[0]["count"], 10);
        assert!(lines[0]["last_time"].is_string());
        assert_eq!(lines[1]["token_fingerprint"], "bbbbbbbbbbbb");
        assert!(lines[1].get("count").is_none(), "{text}");
        assert_eq!(lines[2]["token_fingerprint"], "cccccccccccc");
        assert!(lines[2].get("count").is_none(), "{text}");
    }
}
