//! No secret in the logs, JSON format: the same session as `broker_logs`, with the agent's
//! JSON log lines captured at trace level (a separate binary because the subscriber is global).
// Test code: a failed unwrap is a failed test with its message.
use crate::broker_support;

use stagepass::config::LogFormat;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_json_trace_logs() {
    broker_support::logs::session(LogFormat::Json).await;
}
