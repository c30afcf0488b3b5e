//! The caller gate of the credential routes: policy check before, audit record after.
//!
//! [`admit`] runs before a credential route does any work: it attests the connection's
//! peer (once per connection, see [`super::conn_peer::ConnPeer`]) when a policy or the audit
//! log needs it, applies the profile's `allow` rules and, on refusal, audits it and answers
//! 403 `forbidden_caller` naming the rule. [`Admitted::done`] audits the outcome. With no
//! rules and the audit log off, nothing is attested and nothing recorded: zero cost. With
//! them on, a record on the hot path is a few reference-count increments and a `try_send`:
//! names are shared `Arc<str>`s built at start, the fingerprint is kept with the encoded
//! token body, and the JSON is written by the audit thread.

use super::error::ApiError;
use super::{ApiState, ConnInfo};
use crate::attest::Attestation;
use crate::audit::{Outcome, Record};
use crate::policy::{Decision, ProfilePolicy};
use http::StatusCode;
use std::sync::Arc;
use std::time::SystemTime;

/// A request the policy let through, with what its audit record needs.
pub struct Admitted<'a> {
    state: &'a ApiState,
    policy: Option<&'a ProfilePolicy>,
    route: &'static str,
    role: Option<&'a str>,
    /// Borrowed from the connection: a repeated request clones nothing.
    caller: Option<&'a Arc<Attestation>>,
    rule: &'a Arc<str>,
    /// The connection, whose repeated requests count into one record.
    peer: Option<&'a super::conn_peer::ConnPeer>,
}

/// Applies `profile`'s policy to the connection's caller; a refusal is counted, audited
/// and answered 403 `forbidden_caller` naming the rule.
pub fn admit<'a>(
    state: &'a ApiState,
    conn: &'a ConnInfo,
    profile: &'a str,
    route: &'static str,
    role: Option<&'a str>,
) -> Result<Admitted<'a>, ApiError> {
    decide(state, conn, profile, route, role).map_err(|d| d.refuse())
}

/// A refusal not yet counted or audited (see [`decide`]).
pub struct Denied<'a> {
    state: &'a ApiState,
    profile: &'a str,
    policy: Option<&'a ProfilePolicy>,
    route: &'static str,
    role: Option<&'a str>,
    caller: Option<&'a Arc<Attestation>>,
    rule: String,
    message: String,
}

impl Denied<'_> {
    /// Counts and audits the refusal; the 403 to answer.
    pub fn refuse(self) -> ApiError {
        self.state
            .metrics
            .record_token(self.profile, "forbidden_caller");
        if let (Some(a), Some(p)) = (&self.state.audit, self.policy) {
            a.record(Record {
                time: SystemTime::now(),
                profile: p.name.clone(),
                audience: p.audience.clone(),
                route: self.route,
                role: self.role.map(str::to_string),
                caller: self.caller.cloned(),
                outcome: Outcome::Deny,
                rule: Some(self.rule.into()),
                code: Some("forbidden_caller".into()),
                reason: Some(self.message.clone()),
                token_fingerprint: None,
                count: 1,
                last_time: None,
            });
        }
        forbidden(self.message)
    }
}

/// [`admit`] without its side effects: a refusal comes back uncounted and unaudited, for
/// the cache-hit fast path, which hands every request it does not answer itself to the full
/// handler (which then admits it again, and counts and audits the refusal once).
pub fn decide<'a>(
    state: &'a ApiState,
    conn: &'a ConnInfo,
    profile: &'a str,
    route: &'static str,
    role: Option<&'a str>,
) -> Result<Admitted<'a>, Denied<'a>> {
    let policy = state.policies.get(profile);
    let restricts = policy.is_some_and(ProfilePolicy::restricts);
    let caller = if restricts || state.audit.is_some() {
        conn.peer
            .as_deref()
            .map(|p| p.attestation_redacting(|| state.known_secrets()))
    } else {
        None
    };
    let decision = match policy {
        Some(p) => p.check(caller.map(|c| &**c)),
        None => state.policies.check(profile, caller.map(|c| &**c)),
    };
    match decision {
        Decision::Allow(rule) => Ok(Admitted {
            state,
            policy,
            route,
            role,
            peer: caller.and(conn.peer.as_deref()),
            caller,
            rule,
        }),
        Decision::Deny { rule, message } => Err(Denied {
            state,
            profile,
            policy,
            route,
            role,
            caller,
            rule,
            message,
        }),
    }
}

/// 403 `forbidden_caller`.
pub fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden_caller", message)
}

impl Admitted<'_> {
    /// Audits the outcome: `Ok(fingerprint)` for a credential handed out, `Err((code,
    /// reason))` when none could be given. Unconfigured profiles are not audited (there is
    /// no credential to account for).
    pub fn done(self, result: Result<Arc<str>, (String, String)>) {
        self.done_at(result, SystemTime::now());
    }

    /// [`Admitted::done`] at `now`, for a caller that has just read the clock (the cache hit:
    /// a clock read is a visible share of it).
    pub fn done_at(self, result: Result<Arc<str>, (String, String)>, now: SystemTime) {
        let (Some(a), Some(p)) = (&self.state.audit, self.policy) else {
            return;
        };
        if let (Ok(fp), None, Some(peer)) = (&result, self.role, &self.peer)
            && peer.audit_repeat(&p.name, self.route, self.rule, fp, now)
        {
            return;
        }
        let (outcome, fp, code, reason) = match result {
            Ok(fp) => (Outcome::Allow, Some(fp), None, None),
            Err((code, reason)) => (Outcome::Error, None, Some(code), Some(reason)),
        };
        let record = Record {
            time: now,
            profile: p.name.clone(),
            audience: p.audience.clone(),
            route: self.route,
            role: self.role.map(str::to_string),
            caller: self.caller.cloned(),
            outcome,
            rule: Some(self.rule.clone()),
            code,
            reason,
            token_fingerprint: fp,
            count: 1,
            last_time: None,
        };
        // Credentials handed out on a connection wait there to count repeats; errors and
        // AWS credentials go straight to the writer.
        match (self.peer, outcome, self.role) {
            (Some(peer), Outcome::Allow, None) => peer.audit(a, record),
            _ => a.record(record),
        }
    }

    /// Whether the profile's login can age out (`policy.max_grant_age`), so every request
    /// must go through the broker's check.
    pub fn checks_grant_age(&self) -> bool {
        self.policy.is_some_and(|p| p.max_grant_age)
    }

    /// Whether an audit record will be written (so callers skip computing a fingerprint).
    pub fn audited(&self) -> bool {
        self.state.audit.is_some() && self.policy.is_some()
    }
}
