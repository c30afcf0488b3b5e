//! `stagepass agent`: wires config, store, broker, API and catalog together and owns their lifetimes.

use crate::config::Config;
use crate::paths::Paths;

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(config: Config, paths: Paths) -> anyhow::Result<()> {
    tracing::info!(
        profiles = ?config.profiles.keys().collect::<Vec<_>>(),
        state_dir = %paths.state_dir.display(),
        runtime_dir = %paths.runtime_dir.display(),
        "stagepass agent starting"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stagepass agent stopped");
    Ok(())
}
