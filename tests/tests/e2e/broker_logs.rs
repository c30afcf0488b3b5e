//! No secret in the logs: a whole session (device login, rotations, exchange, client
//! credentials with a secret file, logout with revocation) runs with every crate at `trace`
//! level into a buffer, which is then searched for every access token, refresh token and
//! client secret the session saw.
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use stagepass::config::LogFormat;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs() {
    broker_support::logs::session(LogFormat::Text).await;
}
