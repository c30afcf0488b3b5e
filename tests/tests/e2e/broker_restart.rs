//! Restarts that cost the IdP nothing, and recovery within seconds of the IdP's return
//! (issue 23), with the real `stagepass agent` binary, the real `stagepass token` CLI and the
//! real test IdP, which rotates refresh tokens strictly (a refresh token used twice revokes the
//! grant) and counts every token-endpoint request.
//!
//! - A start within the stored access token's usable life serves it: 0 token requests.
//! - SIGKILLs at random moments within the first second after start never lose the login:
//!   no start spends the refresh token, so no rotation can be on the wire at a kill (before,
//!   every start refreshed, and 1 kill in 30 lost the login).
//! - After a long outage, a caller has a fresh token within seconds of the IdP's return,
//!   although the background backoff has grown far past that.

use rustix::process::Signal;
use stagepass::config::Config;
use stagepass::store::{GrantStore, StoredGrant};
use stagepass_e2e::config::{Agent as AgentSection, Config as TestConfig, Profile};
use stagepass_e2e::idp::{AUD_BACKSTAGE, GRANT_REFRESH_TOKEN};
use stagepass_e2e::{Fault, Home, Idp, IdpOptions, ManagedProcess};
use std::time::{Duration, Instant, SystemTime};

/// Hang guard for every wait below (never a pass/fail threshold).
const GUARD: Duration = Duration::from_secs(60);

/// A token as failure messages may show it.
fn fp(token: &str) -> String {
    stagepass::secret::Secret::new(token).fingerprint()
}

/// A private home with a device profile `dev` logged in at a private IdP.
struct LoggedIn {
    idp: Idp,
    sb: Home,
}

impl LoggedIn {
    /// `agent` is the config's `[agent]` section, if any.
    async fn new(access_ttl: u64, agent: Option<AgentSection>) -> LoggedIn {
        let idp = Idp::start(IdpOptions {
            access_ttl,
            ..IdpOptions::default()
        })
        .await
        .unwrap();
        let sb = Home::new().unwrap();
        let mut config = TestConfig::agent_on_ephemeral_port()
            .catalog_off()
            .profile("dev", Profile::device_for_backstage(idp.issuer()));
        config.agent = agent;
        let path = sb.write_config(&config).unwrap();
        let t = idp
            .device_login(
                Idp::PUBLIC_CLIENT,
                "openid offline_access catalog:read",
                Some(AUD_BACKSTAGE),
                "alice",
            )
            .await
            .unwrap();
        let config = Config::load_files(&[path]).unwrap();
        let store = GrantStore::open(&config.store, &sb.state_dir())
            .await
            .unwrap();
        store
            .save(
                "dev",
                &StoredGrant::new(
                    idp.issuer(),
                    Idp::PUBLIC_CLIENT,
                    t.refresh_token.unwrap(),
                    None,
                ),
            )
            .unwrap();
        LoggedIn { idp, sb }
    }

    fn agent(&self) -> ManagedProcess {
        self.sb.spawn_agent(Vec::<&str>::new()).unwrap()
    }

    /// `stagepass token dev ARGS`: the token, or the error output.
    fn token(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .sb
            .command(["token", "dev"])
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Asks until the agent answers with a token (it may still be starting).
    async fn first_token(&self, agent: &ManagedProcess) -> String {
        let mut last = String::new();
        let token =
            stagepass_e2e::support::poll_until("a token", GUARD, Duration::from_millis(20), || {
                let t = self.token(&[]).map_err(|e| last = e).ok();
                async move { Ok(t) }
            })
            .await;
        token.unwrap_or_else(|e| panic!("hang guard: {e}: {last}\n{}", agent.log()))
    }

    fn grant_file(&self) -> std::path::PathBuf {
        self.sb.grant_file("dev")
    }
}

/// Start, token, stop; start, token: the second start makes 0 token-endpoint requests and
/// serves the same token, stored beside the refresh token in the same 0600 file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_within_the_tokens_life_calls_the_idp_zero_times() {
    let h = LoggedIn::new(300, None).await;
    let mut agent = h.agent();
    let first = h.first_token(&agent).await;
    let s = h.idp.stats().await.unwrap();
    assert_eq!(
        s.grant(GRANT_REFRESH_TOKEN).ok,
        1,
        "the first start refreshes the seeded login: {s:?}"
    );
    agent.stop();
    let stored = std::fs::read_to_string(h.grant_file()).unwrap();
    assert!(stored.contains(&first), "the access token is stored");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(h.grant_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);

    h.idp.reset_stats().await.unwrap();
    let mut agent = h.agent();
    let second = h.first_token(&agent).await;
    // The boot is over (the decision not to refresh is made) before the IdP is asked.
    agent
        .wait_for_line("agent ready", GUARD, |l| {
            l.contains("stagepass agent ready")
        })
        .await
        .unwrap();
    assert_eq!(fp(&second), fp(&first), "the stored token is served");
    let s = h.idp.stats().await.unwrap();
    assert_eq!(
        s.token.requests, 0,
        "no token-endpoint request at the second start: {s:?}"
    );
    assert_eq!(s.device_authorization.requests, 0, "{s:?}");
    agent.stop();
}

/// 30 SIGKILLs of the agent at random moments within the first second after its start, half
/// of the runs with a `stagepass token` asked at once: the IdP sees no token request at all
/// while the stored access token is valid, every token served is the stored one, and the login
/// is alive afterwards (a forced refresh succeeds on the strictly rotating IdP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_within_a_second_of_start_loses_no_login_while_the_stored_token_is_valid() {
    const KILLS: usize = 30;
    let h = std::sync::Arc::new(LoggedIn::new(300, None).await);
    let mut agent = h.agent();
    let stored = h.first_token(&agent).await;
    agent.stop();
    h.idp.reset_stats().await.unwrap();

    let mut served = 0usize;
    let mut killed_at = Vec::new();
    for i in 0..KILLS {
        let agent = h.agent();
        let asker = (i % 2 == 0).then(|| {
            let h = h.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(2);
                while Instant::now() < end {
                    if let Ok(t) = h.token(&[]) {
                        return Some(t);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                None
            })
        });
        let at = Duration::from_millis(rand::random_range(0..1000));
        tokio::time::sleep(at).await;
        agent.signal(Signal::KILL).unwrap();
        drop(agent);
        killed_at.push(at.as_millis());
        if let Some(t) = asker.and_then(|a| a.join().unwrap()) {
            assert_eq!(
                fp(&t),
                fp(&stored),
                "kill {i}: only the stored token is served"
            );
            served += 1;
        }
    }
    killed_at.sort_unstable();
    let s = h.idp.stats().await.unwrap();
    println!(
        "{KILLS} kills at {killed_at:?} ms after start; {served} runs served the stored token; \
         IdP token requests: {}",
        s.token.requests
    );
    assert_eq!(
        s.token.requests, 0,
        "no start spent the refresh token: {s:?}"
    );
    assert!(served > 0, "some runs lived long enough to serve a token");

    // The login is alive: a new agent serves the stored token, and a refresh forced past its
    // lifetime is answered (a spent refresh token would be invalid_grant).
    let mut agent = h.agent();
    assert_eq!(fp(&h.first_token(&agent).await), fp(&stored));
    let fresh = h.token(&["--min-valid", "3600"]);
    let fresh = fresh.unwrap_or_else(|e| panic!("forced refresh: {e}\n{}", agent.log()));
    assert_ne!(fp(&fresh), fp(&stored));
    let r = h.idp.stats().await.unwrap().grant(GRANT_REFRESH_TOKEN);
    assert_eq!((r.requests, r.ok), (1, 1), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    agent.stop();
}

/// Seconds the IdP stays failing in [`a_caller_gets_a_token_within_seconds_of_the_idps_return`]:
/// `STAGEPASS_OUTAGE_SECS`, default 60.
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("STAGEPASS_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    )
}

/// The background refresher's next retry as the agent last logged it (every failure line,
/// the background's own and a waiting caller's, carries it as `retry_in_ms`).
fn next_background_retry(log: &str) -> Option<SystemTime> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["retry_in_ms"].is_u64())
        .filter_map(|v| {
            let ts = time::OffsetDateTime::parse(
                v["timestamp"].as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            let at = SystemTime::from(ts);
            Some(at + Duration::from_millis(v["fields"]["retry_in_ms"].as_u64()?))
        })
        .next_back()
}

/// The IdP answers 500 for a long time ([`outage`]; the issue asks for 5 minutes:
/// `STAGEPASS_OUTAGE_SECS=300`), with a caller asking every 200 ms throughout. The default
/// 60 s already drives the background backoff (1 s doubling, full jitter, 300 s cap) past
/// 5 s: the IdP is brought back only once the agent's log puts the background's next retry
/// more than 10 s away. The first good answer after the return is timed: it must come within
/// `DEMAND_RETRY` (3 s) plus the 5 s the issue allows as slack for a busy machine (a hang
/// bound, not a benchmark; the time is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gets_a_token_within_seconds_of_the_idps_return() {
    // 8 s tokens (2 s margin): the cached one is unusable soon after the outage starts.
    let h = LoggedIn::new(
        8,
        Some(AgentSection {
            log_format: Some("json".into()),
            ..AgentSection::default()
        }),
    )
    .await;
    let mut agent = h.agent();
    let before = h.first_token(&agent).await;
    agent
        .wait_for_line("agent ready", GUARD, |l| {
            l.contains("stagepass agent ready")
        })
        .await
        .unwrap();
    h.idp.set_fault(Fault::ServerError(500)).await.unwrap();
    let down = Instant::now();
    let mut failures = 0usize;
    let back_due = loop {
        match h.token(&[]) {
            Ok(t) => assert!(
                t == before || down.elapsed() < Duration::from_secs(8),
                "a token other than the cached one during the outage"
            ),
            Err(e) => {
                assert!(e.contains("idp_unavailable"), "{e}");
                failures += 1;
            }
        }
        if down.elapsed() >= outage()
            && let Some(due) = next_background_retry(&agent.log())
            && due > SystemTime::now() + Duration::from_secs(10)
        {
            break due;
        }
        assert!(
            down.elapsed() < outage() + Duration::from_secs(600),
            "hang guard: the background retry never went past 10 s\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lasted = down.elapsed();
    assert!(failures > 0, "callers saw the outage");
    let r = h.idp.stats().await.unwrap().grant(GRANT_REFRESH_TOKEN);
    // Callers retried at most once per 3 s; the background at its own pace on top.
    let bound = lasted.as_secs() / 3 + 2 + 12;
    assert!(
        r.requests <= bound,
        "{} refresh attempts in {lasted:?} (bound {bound}): {r:?}",
        r.requests
    );

    h.idp.set_fault(Fault::None).await.unwrap();
    let back = Instant::now();
    let background_in = back_due
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let fresh = loop {
        if let Ok(t) = h.token(&[]) {
            break t;
        }
        assert!(
            back.elapsed() < GUARD,
            "hang guard: no recovery\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = back.elapsed();
    println!(
        "outage {lasted:?} ({failures} failed caller requests, {} refresh attempts at the IdP); \
         IdP back -> first fresh token {took:?}, the background retry was {background_in:?} away",
        r.requests
    );
    assert_ne!(fp(&fresh), fp(&before));
    assert!(
        took < Duration::from_secs(3 + 5),
        "recovered {took:?} after the IdP's return (background retry {background_in:?} away)"
    );
    agent.stop();
}
