//! A connection flood from another uid (issue 19): 500 TCP connections to the agent's port
//! from uid 65534, half idle and half sending a byte a second, must leave the owner's
//! `stagepass token` within a small multiple of its normal time, over the socket and over
//! TCP (the owner's TCP clients must not queue behind connections that never show the
//! secret).
//!
//! The flood is a `bash` running as uid 65534 (`/dev/tcp`, loopback only), bounded in count
//! (500) and time (it exits after 8 s, and is killed on the way out). Runs only as root
//! (the only way to become another uid here); otherwise it says so and passes.

use crate::support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Agent, Api, Config, Profile};

const NOBODY: u32 = 65534;
const CONNECTIONS: usize = 500;

/// `stagepass token ci` once; its wall time.
fn token_time(a: &Agent) -> Duration {
    let t = Instant::now();
    let out = a.home.run(&["token", "ci"]).unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tok-flood");
    took
}

/// `n` token calls: (median, slowest).
fn timings(a: &Agent, n: usize) -> (Duration, Duration) {
    let mut t: Vec<Duration> = (0..n).map(|_| token_time(a)).collect();
    t.sort();
    (t[n / 2], t[n - 1])
}

/// Runs flood `script` as uid 65534 until it prints `open N` (its connections are open):
/// the child, its stdout handed back for what it prints later, and N (at least 200).
fn spawn_flood(script: &str) -> (Child, usize) {
    let mut child = Command::new("bash")
        .args(["-c", script])
        .uid(NOBODY)
        .gid(NOBODY)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let opened: usize = line
        .trim()
        .strip_prefix("open ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(opened >= 200, "the flood opened only {line:?}");
    child.stdout = Some(out.into_inner());
    (child, opened)
}

/// Starts the flood against `port` as uid 65534 once all its connections are open (or it
/// could open no more): the child, and how many it opened.
///
/// It opens CONNECTIONS connections, says so, then trickles a byte a second on every other
/// one for 8 s and exits (the kernel closes them all). SIGPIPE is ignored so that a
/// connection the agent cuts does not end the whole flood.
fn flood(port: u16) -> (Child, usize) {
    let script = format!(
        r#"trap '' PIPE
fds=()
for i in $(seq {CONNECTIONS}); do exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || break; fds+=($fd); done
echo "open ${{#fds[@]}}"
for s in 1 2 3 4 5 6 7 8; do
  for ((j=0; j<${{#fds[@]}}; j+=2)); do printf G >&${{fds[$j]}} 2>/dev/null; done
  sleep 1
done"#
    );
    spawn_flood(&script)
}

/// Like [`flood`], but every connection the agent cuts is opened again at once: after the
/// connections are open it polls them for 8 s, and one that turned readable (the agent
/// closed it, or answered it and will) is closed and reconnected, so the agent always
/// faces CONNECTIONS connections that never show the secret. Ends by printing how many
/// reconnections it made.
fn reconnecting_flood(port: u16) -> (Child, usize) {
    let script = format!(
        r#"trap '' PIPE
fds=()
for i in $(seq {CONNECTIONS}); do exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || break; fds+=($fd); done
echo "open ${{#fds[@]}}"
n=0
end=$((SECONDS + 8))
while (( SECONDS < end )); do
  for ((j=0; j<${{#fds[@]}}; j++)); do
    fd=${{fds[$j]}}
    if read -t 0 -u "$fd" 2>/dev/null; then
      exec {{fd}}>&-
      if exec {{nfd}}<>/dev/tcp/127.0.0.1/{port}; then fds[$j]=$nfd; n=$((n + 1)); fi
    fi
  done
done
echo "reconnected $n""#
    );
    spawn_flood(&script)
}

/// The env profile `ci` with `api`.
fn config(api: Api) -> Config {
    Config::new()
        .api(api)
        .store("file")
        .profile("ci", Profile::env("STAGEPASS_TEST_FLOOD_TOKEN"))
}

/// Token timings alone and under the flood, asserted within a small multiple.
fn token_under_flood(config: &Config, over: &str) {
    let a = Agent::start_env(config, &[("STAGEPASS_TEST_FLOOD_TOKEN", "tok-flood")]);
    let (base_median, base_max) = timings(&a, 15);
    let (mut flood, opened) = flood(a.port);
    let (flood_median, flood_max) = timings(&a, 15);
    let _ = flood.kill();
    let _ = flood.wait();
    eprintln!(
        "stagepass token over {over}: median {base_median:?} / slowest {base_max:?} alone; \
         median {flood_median:?} / slowest {flood_max:?} under {opened} connections of uid {NOBODY}"
    );
    assert!(
        flood_median < base_median * 5 + Duration::from_millis(50),
        "median {flood_median:?} under the flood, {base_median:?} alone"
    );
    assert!(
        flood_max < base_max * 10 + Duration::from_millis(200),
        "slowest {flood_max:?} under the flood, {base_max:?} alone"
    );
    // The agent is fine afterwards.
    token_time(&a);
}

#[test]
fn a_flood_of_idle_and_slow_connections_from_another_uid_leaves_the_socket_fast() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run the flood as uid {NOBODY}");
        return;
    }
    // Before: 9-24 s (one shared cap of 128 connections, idle ones held for 60 s).
    token_under_flood(&config(Api::port(0)), "the socket");
}

/// The owner's own TCP clients (the socket turned off, so `stagepass token` talks TCP with
/// the secret) are served while another uid holds every TCP slot with connections that
/// never show the secret.
#[test]
fn a_flood_of_idle_and_slow_connections_from_another_uid_leaves_owner_tcp_clients_fast() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run the flood as uid {NOBODY}");
        return;
    }
    token_under_flood(
        &config(Api {
            port: Some(0),
            unix_socket: Some(false),
            ..Api::default()
        }),
        "TCP",
    );
}

/// The attacker of the test above, reconnecting every connection the agent cuts (waves of
/// 500 new connections every 2 s, as the idle ones are cut): the owner's TCP clients keep
/// their median (a new connection takes the slot of the oldest unguarded one, and the
/// owner's own connection is unguarded until its request arrives); the tail is bounded,
/// not flat (see the assertion).
#[test]
fn a_flood_that_reconnects_after_every_cut_leaves_owner_tcp_clients_fast() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run the flood as uid {NOBODY}");
        return;
    }
    let config = config(Api {
        port: Some(0),
        unix_socket: Some(false),
        ..Api::default()
    });
    let a = Agent::start_env(&config, &[("STAGEPASS_TEST_FLOOD_TOKEN", "tok-flood")]);
    let (base_median, base_max) = timings(&a, 15);
    let (mut flood, opened) = reconnecting_flood(a.port);
    // Tokens without pause for the whole flood (it ends by itself after 8 s; past the
    // guard it is killed), so every wave of cuts and reconnections is met.
    let mut times = Vec::new();
    let deadline = Instant::now() + support::GUARD;
    while flood.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        times.push(token_time(&a));
    }
    times.sort();
    let calls = times.len();
    assert!(calls >= 15, "only {calls} token calls under the flood");
    let (flood_median, flood_max) = (times[calls / 2], times[calls - 1]);
    let slow = times
        .iter()
        .filter(|t| **t > Duration::from_millis(500))
        .count();
    let mut rest = String::new();
    let _ = flood.kill();
    let _ = flood.wait();
    if let Some(mut out) = flood.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut rest);
    }
    let reconnected: Option<usize> = rest
        .lines()
        .find_map(|l| l.trim().strip_prefix("reconnected "))
        .and_then(|n| n.parse().ok());
    eprintln!(
        "stagepass token over TCP, reconnecting flood: median {base_median:?} / slowest \
         {base_max:?} alone; median {flood_median:?} / slowest {flood_max:?} under {opened} \
         connections of uid {NOBODY} ({calls} calls, {slow} over 500 ms; flood {})",
        rest.trim()
    );
    // Without reconnections this test only repeats the plain flood above.
    assert!(
        reconnected.is_some_and(|n| n > 0),
        "the flood never reconnected a cut connection: {:?}",
        rest.trim()
    );
    assert!(
        flood_median < base_median * 5 + Duration::from_millis(50),
        "median {flood_median:?} under the flood, {base_median:?} alone"
    );
    // Known tail (debug build, 6 runs of 500-900 calls): 0-3 calls a run took ~1.0 s, one
    // SYN retransmission, when a wave of 500 reconnections met the owner's connect. More
    // than two retransmissions (1 s + 2 s) would be a regression.
    assert!(
        flood_max < Duration::from_secs(3),
        "slowest {flood_max:?} under the flood ({slow} over 500 ms), {base_max:?} alone"
    );
    token_time(&a);
}
