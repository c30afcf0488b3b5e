//! The grant store on a machine without a Secret Service (this one, and most containers):
//! the file store is chosen and says why, files are 0600 in a 0700 dir, and a login survives
//! an agent killed with SIGKILL between refreshes (a real second process, killed for real).
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use broker_support::{World, child_broker, dev_only, opts};
use stagepass::broker::{Broker, TokenRequest};
use stagepass_e2e::idp::GRANT_REFRESH_TOKEN;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_is_chosen_with_reason_and_locked_down() {
    let w = World::new(300, dev_only).await;
    w.seed_login("dev", "alice").await;
    // SAFETY-free check of the precondition this test is about.
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none(),
        "this test expects no session bus"
    );
    let broker = w.broker(opts(true)).await;
    let (name, reason) = broker.store_backend();
    assert_eq!(name, "file");
    assert!(reason.contains("no usable Secret Service"), "{reason}");
    assert!(reason.contains("DBUS_SESSION_BUS_ADDRESS"), "{reason}");
    broker.boot_refresh().await;
    broker.token("dev", TokenRequest::default()).await.unwrap();

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = w.paths.state_dir.join("grants");
    assert_eq!(mode(&w.paths.state_dir), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&w.grant_file("dev")), 0o600);
    for e in std::fs::read_dir(w.paths.state_dir.join("locks")).unwrap() {
        assert_eq!(mode(&e.unwrap().path()), 0o600);
    }
    // Only the grant file: no temp file left behind by the atomic writes.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["dev.json".to_string()]);

    // A state dir opened up by someone else is refused, not silently used.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = match Broker::start(&w.config, &w.paths).await {
        Err(e) => e,
        Ok(_) => panic!("an open grant dir must be refused"),
    };
    assert!(err.to_string().contains("0700"), "{err}");
}

/// Entry point of the child agent of `login_survives_kill_9_between_refreshes`: refreshes
/// (rotating the refresh token each time) and reports each refresh, pausing between them.
#[test]
#[ignore = "child process of login_survives_kill_9_between_refreshes; started by it"]
fn kill9_child() {
    let (rt, broker) = child_broker();
    rt.block_on(async {
        let force = TokenRequest {
            min_valid: Some(Duration::from_secs(3600)),
        };
        for n in 1.. {
            broker.token("dev", force).await.unwrap();
            println!("refreshed {n}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_survives_kill_9_between_refreshes() {
    let w = World::new(300, dev_only).await;
    w.seed_login("dev", "alice").await;
    w.idp.reset_stats().await.unwrap();
    let mut child = w.spawn_child(&test_name!(kill9_child), std::process::Stdio::inherit());
    let stdout = child.stdout.take().unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut last = 0;
        while let Some(Ok(l)) = lines.next() {
            if let Some(n) = l.strip_prefix("refreshed ") {
                last = n.trim().parse().unwrap();
                if last == 5 {
                    break;
                }
            }
        }
        last
    });
    let seen = tokio::time::timeout(Duration::from_secs(60), seen)
        .await
        .expect("hang guard: child did not refresh 5 times")
        .unwrap();
    assert_eq!(seen, 5);
    // SIGKILL while the child sleeps between refreshes: no flush, no destructor runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let rotations = w.idp.stats().await.unwrap().grant(GRANT_REFRESH_TOKEN);
    assert!(rotations.ok >= 5, "{rotations:?}");

    // The next agent finds the latest rotated refresh token and needs no login (a refresh
    // forced past the stored access token's life proves it).
    let broker = w.broker(opts(true)).await;
    broker.boot_refresh().await;
    broker
        .token(
            "dev",
            TokenRequest {
                min_valid: Some(Duration::from_secs(3600)),
            },
        )
        .await
        .unwrap();
    let r = w.idp.stats().await.unwrap().grant(GRANT_REFRESH_TOKEN);
    assert!(
        r.errors.is_empty(),
        "the stored refresh token must be the newest one: {r:?}"
    );
    assert_eq!(r.ok, rotations.ok + 1);
}
