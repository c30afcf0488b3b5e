//! One audit record: a credential handed out or refused, and its JSON line.
//!
//! The request path builds a [`Record`] from values it already holds (the connection's
//! attestation is shared through an `Arc`, the fingerprint is 12 hex characters); turning
//! it into text happens on the writer thread. The record never holds a token: only its
//! fingerprint, the first 6 bytes of its SHA-256, enough to match `stagepass status` and
//! server logs, useless to replay.

use crate::attest::Attestation;
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

/// What happened to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A credential was handed out.
    Allow,
    /// The policy refused the caller.
    Deny,
    /// The caller was allowed but no credential could be given (login required, IdP down).
    Error,
}

/// One credential request, as the audit log keeps it.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was answered.
    pub time: SystemTime,
    /// Profile (or AWS role's profile) asked for.
    pub profile: Arc<str>,
    /// The profile's audience, when configured.
    pub audience: Option<Arc<str>>,
    /// Route template (`/v1/token/{profile}`, `/v1/aws/credentials/{name}`).
    pub route: &'static str,
    /// The AWS role, for AWS credentials.
    pub role: Option<String>,
    /// Who asked (`None` with attestation off).
    pub caller: Option<Arc<Attestation>>,
    /// What happened.
    pub outcome: Outcome,
    /// The rule that allowed or refused (`default` without rules).
    pub rule: Option<Arc<str>>,
    /// Error code for refusals and errors (`forbidden_caller`, `login_required`, ...).
    pub code: Option<String>,
    /// Why, for refusals and errors.
    pub reason: Option<String>,
    /// Short SHA-256 prefix of the credential handed out.
    pub token_fingerprint: Option<Arc<str>>,
    /// How many identical requests this record stands for (1, or more when a connection
    /// repeated the same request; see `api::conn_peer::ConnPeer::audit`).
    pub count: u64,
    /// The time of the last of them, when `count` > 1.
    pub last_time: Option<SystemTime>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    /// Identical records of one connection within one writer batch: how many, and the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_time: Option<String>,
    profile: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<&'a str>,
    route: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<&'a str>,
    decision: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_fingerprint: Option<&'a str>,
    caller: CallerField<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum CallerField<'a> {
    Attested(&'a Attestation),
    Off { unidentified: &'static str },
}

/// RFC 3339 UTC with microseconds.
pub fn timestamp(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Record {
    /// Would this record say the same as `other`, apart from the time? (Same connection's
    /// caller, profile, route, outcome, rule, code and token.) Shared names are compared by
    /// pointer first, so this is cheap on the writer's side.
    pub fn same_as(&self, other: &Record) -> bool {
        fn same_arc<T: ?Sized + PartialEq>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
        }
        let same_caller = match (&self.caller, &other.caller) {
            (None, None) => true,
            // Per connection: a different connection is a different record even when the
            // process is the same.
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_caller
            && self.outcome == other.outcome
            && self.route == other.route
            && (Arc::ptr_eq(&self.profile, &other.profile) || self.profile == other.profile)
            && same_arc(&self.token_fingerprint, &other.token_fingerprint)
            && same_arc(&self.rule, &other.rule)
            && self.code == other.code
            && self.reason == other.reason
            && self.role == other.role
    }

    /// The JSON line (with the trailing newline).
    pub fn to_line(&self) -> Vec<u8> {
        self.to_counted_line(1, self.time)
    }

    /// The JSON line of `count` identical records, the last at `last`.
    pub fn to_counted_line(&self, count: u64, last: SystemTime) -> Vec<u8> {
        let line = Line {
            time: timestamp(self.time),
            count: (count > 1).then_some(count),
            last_time: (count > 1).then(|| timestamp(last)),
            profile: &self.profile,
            audience: self.audience.as_deref(),
            route: self.route,
            role: self.role.as_deref(),
            adapter: self.caller.as_deref().and_then(Attestation::adapter),
            decision: self.outcome,
            rule: self.rule.as_deref(),
            code: self.code.as_deref(),
            reason: self.reason.as_deref(),
            token_fingerprint: self.token_fingerprint.as_deref(),
            caller: match &self.caller {
                Some(a) => CallerField::Attested(a),
                None => CallerField::Off {
                    unidentified: "attestation is off",
                },
            },
        };
        let mut v = serde_json::to_vec(&line).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The line that says records were lost because the writer fell behind.
pub fn dropped_line(count: u64, now: SystemTime) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "time": timestamp(now),
        "event": "dropped",
        "dropped": count,
        "reason": "the audit queue was full; these records were not written",
    }))
    .unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_the_documented_fields() {
        let r = Record {
            count: 1,
            last_time: None,
            time: SystemTime::UNIX_EPOCH,
            profile: "gh".into(),
            audience: Some("urn:gh".into()),
            route: "/v1/token/{profile}",
            role: None,
            caller: Some(Arc::new(Attestation {
                transport: "unix",
                pid: Some(7),
                uid: Some(1000),
                exe: Some("/usr/bin/git".into()),
                via: Some("stagepass git-credential (pid 9)".into()),
                ..Attestation::default()
            })),
            outcome: Outcome::Allow,
            rule: Some("git".into()),
            code: None,
            reason: None,
            token_fingerprint: Some("0123456789ab".into()),
        };
        let line = r.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["adapter"], "git-credential");
        assert_eq!(v["caller"]["exe"], "/usr/bin/git");
        assert_eq!(v["caller"]["pid"], 7);
        assert_eq!(v["token_fingerprint"], "0123456789ab");
        assert!(v.get("code").is_none());
        let same = Record {
            count: 1,
            last_time: None,
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5),
            ..r.clone()
        };
        assert!(r.same_as(&same));
        let counted: serde_json::Value =
            serde_json::from_slice(&r.to_counted_line(3, same.time)).unwrap();
        assert_eq!(counted["count"], 3);
        assert_eq!(counted["last_time"], "1970-01-01T00:00:05Z");
        assert!(v.get("count").is_none());
        let other_conn = Record {
            count: 1,
            last_time: None,
            caller: Some(Arc::new((*r.caller.clone().unwrap()).clone())),
            ..r.clone()
        };
        assert!(
            !r.same_as(&other_conn),
            "another connection is another record"
        );
        let off = Record { caller: None, ..r };
        let v: serde_json::Value = serde_json::from_slice(&off.to_line()).unwrap();
        assert_eq!(v["caller"]["unidentified"], "attestation is off");
    }
}
