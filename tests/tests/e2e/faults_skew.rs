//! Clock skew of +-5 minutes between this machine and the IdP, with a real skewed clock:
//! the test IdP runs with the `lib/clock.cjs` preload (no libfaketime here), so its
//! `iat`/`exp` claims and its HTTP `Date` header are 5 minutes ahead or behind, while the
//! agent, Backstage and this test use the real clock.
//!
//! Checked for +300 s and -300 s, against the real `stagepass agent` binary and a private
//! real Backstage trusting the skewed IdP:
//! - the agent takes lifetimes from `expires_in` on its own clock, not from `exp`: its
//!   `expires_at` is the real expiry, whatever the IdP's clock says;
//! - with short tokens it still refreshes ahead of expiry and never serves an expired token;
//! - Backstage (real clock) accepts 1-hour tokens either way; with the IdP 5 minutes
//!   *behind*, a token whose lifetime is under 5 minutes arrives already expired by its
//!   `exp` claim and Backstage refuses it: no client can fix that, and `doctor` says why;
//! - `stagepass doctor` reports the skew from the IdP's `Date` header.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stagepass_e2e::jwt::claims_unverified;
use stagepass_e2e::{Backstage, BackstageOptions, Idp, IdpOptions};
use support::{Agent, Config, Profile, block_on};

/// The skew the issue asks for.
const SKEW: i64 = 300;
/// A short token lifetime: the agent renews it about every 15 s.
const SHORT_TTL: u64 = 20;
/// How long the short-token phase watches the agent (a bit over two lifetimes).
const WATCH: Duration = Duration::from_secs(45);

fn epoch(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

fn config(issuer: &str, secret_file: &std::path::Path) -> Config {
    Config::agent_on_ephemeral_port().profile("bs", Profile::ci_for_backstage(issuer, secret_file))
}

/// A token from the agent: the JWT, its `exp` claim and the agent's `expires_at`, both as
/// epoch seconds.
struct Served {
    token: String,
    exp_claim: i64,
    expires_at: i64,
}

fn served(agent: &Agent) -> Served {
    let r = agent.get("/v1/token/bs");
    assert_eq!(
        r.status,
        200,
        "{}\nagent log:\n{}",
        String::from_utf8_lossy(&r.body),
        agent.log()
    );
    let body = r.json();
    let token = body["access_token"].as_str().unwrap().to_string();
    let expires_at = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let exp_claim = claims_unverified(&token).unwrap()["exp"].as_i64().unwrap();
    Served {
        token,
        exp_claim,
        expires_at,
    }
}

/// Backstage's answer to a catalog read with `token`.
fn backstage_status(bs: &Backstage, token: &str) -> u16 {
    block_on(bs.get("/entities?limit=1", Some(token)))
        .unwrap()
        .status
}

#[derive(Debug)]
struct SkewResult {
    offset: i64,
    long_token_backstage: u16,
    short_tokens_served: usize,
    short_distinct: usize,
    expired_served: usize,
    short_token_backstage: BTreeSet<u16>,
    doctor: String,
}

fn run_with_offset(idp: &Idp, bs: &Backstage, offset: i64) -> SkewResult {
    let idp_now = block_on(idp.set_clock_offset(offset)).unwrap();
    let skew_seen = idp_now - epoch(SystemTime::now());
    assert!(
        (skew_seen - offset).abs() <= 2,
        "the IdP's clock moved: {skew_seen} s"
    );
    let secret = tempfile::tempdir().unwrap();
    let secret_file = secret.path().join("ci-secret");
    std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();

    // 1-hour tokens: expires_at is the real expiry (from expires_in), exp is off by `offset`.
    block_on(idp.set_ttl(Some(3600), None, None)).unwrap();
    let agent = Agent::start(&config(idp.issuer(), &secret_file));
    let before = epoch(SystemTime::now());
    let t = served(&agent);
    let after = epoch(SystemTime::now());
    assert!(
        t.expires_at >= before + 3600 - 2 && t.expires_at <= after + 3600 + 2,
        "expires_at {} is not now + expires_in ({before}..{after} + 3600)",
        t.expires_at
    );
    assert!(
        (t.exp_claim - t.expires_at - offset).abs() <= 2,
        "the exp claim ({}) is the IdP's skewed clock, {offset} s off expires_at ({})",
        t.exp_claim,
        t.expires_at
    );
    let long_token_backstage = backstage_status(bs, &t.token);

    // `stagepass doctor` names the skew (read from the IdP's Date header).
    let out = agent.home.run(&["doctor"]).unwrap();
    let doctor = String::from_utf8_lossy(&out.stdout).to_string();
    let line = doctor
        .lines()
        .find(|l| l.contains("clock skew vs"))
        .unwrap_or_else(|| panic!("doctor has no skew line:\n{doctor}"))
        .to_string();
    let direction = if offset > 0 { "behind" } else { "ahead of" };
    assert!(
        line.starts_with("[FAIL]") && line.contains(&format!("s {direction} the IdP")),
        "doctor: {line}"
    );
    let secs: i64 = line
        .split("this machine is ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in: {line}"));
    assert!((secs - offset.abs()).abs() <= 2, "doctor: {line}");
    drop(agent);

    // Short tokens: the agent refreshes ahead of expiry on its own clock; every token it
    // serves is still valid (by expires_at, by the IdP's clock, and by the exp claim seen
    // from the IdP's own time), and we see what Backstage makes of them.
    block_on(idp.set_ttl(Some(SHORT_TTL), None, None)).unwrap();
    let agent = Agent::start(&config(idp.issuer(), &secret_file));
    let end = Instant::now() + WATCH;
    let mut tokens = BTreeSet::new();
    let mut served_count = 0;
    let mut expired = 0;
    let mut short_token_backstage = BTreeSet::new();
    while Instant::now() < end {
        let t = served(&agent);
        let now = epoch(SystemTime::now());
        served_count += 1;
        // Expired by the agent's own promise, or by the IdP's clock (exp - offset = real).
        if t.expires_at <= now || t.exp_claim - offset <= now {
            expired += 1;
        }
        if tokens.insert(t.token.clone()) {
            short_token_backstage.insert(backstage_status(bs, &t.token));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(agent);
    SkewResult {
        offset,
        long_token_backstage,
        short_tokens_served: served_count,
        short_distinct: tokens.len(),
        expired_served: expired,
        short_token_backstage,
        doctor: line,
    }
}

#[test]
fn idp_clock_five_minutes_off_either_way_keeps_tokens_valid_and_doctor_names_the_skew() {
    let idp = block_on(Idp::start(IdpOptions {
        clock_offset_secs: Some(0),
        ..IdpOptions::default()
    }))
    .unwrap();
    // Backstage needs no git host here; the reading allow-list names an unused port.
    let bs = block_on(Backstage::start(BackstageOptions::new(
        idp.issuer(),
        "127.0.0.1:9",
    )))
    .unwrap();
    let mut results = Vec::new();
    for offset in [SKEW, -SKEW] {
        results.push(run_with_offset(&idp, &bs, offset));
    }
    println!(
        "| IdP clock | 1 h token: Backstage | short tokens ({SHORT_TTL} s) served / distinct | expired served | short token: Backstage | doctor |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {:+} s | {} | {} / {} | {} | {:?} | {} |",
            r.offset,
            r.long_token_backstage,
            r.short_tokens_served,
            r.short_distinct,
            r.expired_served,
            r.short_token_backstage,
            r.doctor
        );
    }
    for r in &results {
        assert_eq!(r.expired_served, 0, "{r:?}");
        assert!(r.short_distinct >= 2, "the agent refreshed: {r:?}");
        assert_eq!(r.long_token_backstage, 200, "{r:?}");
    }
    // IdP ahead: iat in Backstage's future, exp later than real: accepted.
    assert_eq!(
        results[0].short_token_backstage,
        BTreeSet::from([200]),
        "{:?}",
        results[0]
    );
    // IdP behind by more than the lifetime: every short token is expired by its exp claim
    // when it is minted, and Backstage refuses it (401). Nothing on our side can fix that.
    assert_eq!(
        results[1].short_token_backstage,
        BTreeSet::from([401]),
        "{:?}",
        results[1]
    );
}
