//! The no-secret-in-logs session shared by `broker_logs` (text) and `broker_logs_json`.

use super::{World, dev_only, eventually, opts};
use stagepass::broker::TokenRequest;
use stagepass::config::LogFormat;
use stagepass_e2e::Idp;
use stagepass_e2e::config::Profile;
use stagepass_e2e::idp::AUD_GIT;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the whole session with logs captured at trace level in `format`, then greps them.
pub async fn session(format: LogFormat) {
    let buf = Buf::default();
    let writer = buf.clone();
    assert!(stagepass::logging::init_with_writer(
        "trace",
        format,
        move || writer.clone(),
    ));

    let secret_dir = stagepass_e2e::support::private_tempdir().unwrap();
    let secret_file = secret_dir.path().join("secret");
    std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();
    let w = World::new(300, |issuer| {
        dev_only(issuer)
            .profile(
                "git",
                Profile::exchange(issuer, Idp::PUBLIC_CLIENT, "dev").audience(AUD_GIT),
            )
            .profile(
                "ci",
                Profile::client_credentials(issuer, Idp::CONFIDENTIAL_CLIENT, &secret_file)
                    .audience(AUD_GIT),
            )
    })
    .await;
    let broker = w.broker(opts(true)).await;
    let mut secrets: Vec<String> = vec![Idp::DEFAULT_CLIENT_SECRET.to_string()];

    let login = broker.login_start("dev").await.unwrap();
    w.idp
        .approve(login.user_code.as_deref().unwrap(), "alice")
        .await
        .unwrap();
    eventually("login", || async {
        (broker.login_state("dev").unwrap().state == stagepass::broker::LoginPhase::Complete)
            .then_some(())
    })
    .await;
    let rt_of = || {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.grant_file("dev")).unwrap()).unwrap();
        v["refresh_token"].as_str().unwrap().to_string()
    };
    secrets.push(rt_of());
    let force = TokenRequest {
        min_valid: Some(Duration::from_secs(3600)),
    };
    for _ in 0..3 {
        secrets.push(
            broker
                .token("dev", force)
                .await
                .unwrap()
                .access_token
                .expose()
                .to_string(),
        );
        secrets.push(rt_of());
    }
    for p in ["git", "ci"] {
        secrets.push(
            broker
                .token(p, TokenRequest::default())
                .await
                .unwrap()
                .access_token
                .expose()
                .to_string(),
        );
    }
    // A refused grant's error path and a logout (revocation) are logged too.
    broker.logout("dev").await.unwrap();
    let _ = broker.token("dev", TokenRequest::default()).await;

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("token refreshed"), "the session was logged");
    assert!(
        text.contains("no usable Secret Service"),
        "store choice and reason are logged"
    );
    assert!(text.contains("TRACE"), "trace level was on");
    if format == LogFormat::Json {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not a JSON log line: {line}"
            );
        }
    }
    assert_eq!(secrets.len(), 10);
    for s in &secrets {
        assert!(s.len() >= 16, "a real secret");
        assert!(
            !text.contains(s.as_str()),
            "a secret (fingerprint {}) appears in the log",
            stagepass::secret::Secret::new(s.clone()).fingerprint()
        );
    }
}
