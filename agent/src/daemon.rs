//! `stagepass agent`: wires config, store, broker, API and catalog together and owns their lifetimes.
//!
//! Start order: single-instance locks (runtime dir, then state dir), broker, per-boot secret, listeners (endpoint file
//! written once bound), catalog and AWS services, then the boot refresh runs while the API
//! already serves. `READY=1` goes out when the listeners are bound and the boot refresh has
//! finished (or failed); [`trim::SETTLE`] later the start-up code pages are given back
//! ([`trim`]). SIGTERM or Ctrl-C stop accepting, drain open requests for a bounded
//! time, and remove the socket, secret and endpoint files.

mod lock;
mod notify;
pub mod trim;

pub use lock::{InstanceLock, LockError, acquire as acquire_lock};

use crate::api::{ApiState, server};
use crate::audit::WriterGuard;
use crate::aws::AwsService;
use crate::broker::Broker;
use crate::config::Config;
use crate::paths::Paths;
use crate::protocol::EndpointFile;
use crate::protocol::secret_file;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long open requests may take to finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(config: Config, paths: Paths) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stop signal received");
    };
    run_until(config, paths, stop).await
}

/// Runs the agent until `stop` resolves (tests pass their own future). The start order is
/// the module doc's; each step below is one of its stages.
pub async fn run_until(
    config: Config,
    paths: Paths,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let _locks = claim_dirs(&config, &paths)?;
    notify::status("starting");

    let broker = Broker::start(&config, &paths)
        .await
        .context("starting the token broker")?;
    // From here on, whatever happens, clients must not find a secret or endpoint of a dead agent.
    let _files = RuntimeFiles(vec![paths.api_secret(), paths.endpoint()]);
    let secret = secret_file::create(&paths.api_secret())
        .with_context(|| format!("writing the API secret {}", paths.api_secret().display()))?;
    let bound = server::bind(&config.api, &paths).await?;
    let endpoint = publish_endpoint(&paths, &bound)?;

    let catalog =
        crate::catalog::Service::start(&config.catalog, &paths, Some(broker.clone())).await;
    let (audit, audit_writer) = open_audit(&config, &paths)?;
    let state = api_state(&config, &broker, secret, &endpoint, catalog.clone(), audit);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(
        bound,
        Arc::new(state),
        async {
            let _ = stop_rx.await;
        },
        DRAIN,
    ));
    tracing::info!(
        port = ?endpoint.port,
        socket = ?endpoint.socket,
        "stagepass API listening"
    );
    let _watchdog = notify::spawn_watchdog();

    serve(&broker, &endpoint, stop).await;

    notify::stopping();
    let _ = stop_tx.send(());
    if let Err(e) = server.await {
        tracing::warn!(error = %e, "the API task ended abnormally");
    }
    finish_audit(audit_writer).await;
    // Dropping the handle stops the catalog tasks (watcher, outbox) before we exit.
    #[allow(clippy::drop_non_drop)]
    drop(catalog);
    tracing::info!("stagepass agent stopped");
    Ok(())
}

/// Checks the listen address, creates the runtime and state dirs and takes their
/// single-instance locks (held while the returned guards live).
fn claim_dirs(config: &Config, paths: &Paths) -> anyhow::Result<(InstanceLock, InstanceLock)> {
    config
        .api
        .check_listen()
        .map_err(|m| anyhow::anyhow!("api.listen: {m}"))?;
    tracing::info!(
        profiles = ?config.profiles.keys().collect::<Vec<_>>(),
        state_dir = %paths.state_dir.display(),
        runtime_dir = %paths.runtime_dir.display(),
        "stagepass agent starting"
    );
    crate::paths::ensure_private_dir(&paths.runtime_dir)
        .with_context(|| format!("runtime dir {}", paths.runtime_dir.display()))?;
    let lock = lock::acquire(&paths.lock())?;
    // The runtime dir's lock keeps one agent per runtime dir; two agents with different
    // runtime dirs on one state dir would refresh and rotate the same grants.
    crate::paths::ensure_private_dir(&paths.state_dir)
        .with_context(|| format!("state dir {}", paths.state_dir.display()))?;
    let state_lock = lock::acquire_state(&paths.state_dir, &paths.state_lock())?;
    Ok((lock, state_lock))
}

/// Writes `endpoint.json` once the listeners are bound: clients find the agent through it.
fn publish_endpoint(paths: &Paths, bound: &server::Bound) -> anyhow::Result<EndpointFile> {
    let endpoint = EndpointFile {
        port: bound.tcp_port(),
        pid: std::process::id(),
        socket: bound.socket().map(std::path::Path::to_path_buf),
    };
    let endpoint_json = serde_json::to_vec(&endpoint).context("encoding endpoint.json")?;
    secret_file::write_private(&paths.endpoint(), &endpoint_json)
        .with_context(|| format!("writing {}", paths.endpoint().display()))?;
    Ok(endpoint)
}

/// The audit log and its writer, when `[audit]` is enabled.
fn open_audit(
    config: &Config,
    paths: &Paths,
) -> anyhow::Result<(Option<crate::audit::Audit>, Option<WriterGuard>)> {
    if !config.audit.enabled {
        return Ok((None, None));
    }
    let (a, w) =
        crate::audit::Audit::start(&config.audit, &paths.state_dir).with_context(|| {
            format!(
                "opening the audit log in {}",
                crate::audit::writer::dir(&paths.state_dir).display()
            )
        })?;
    Ok((Some(a), Some(w)))
}

/// Everything the API serves: the broker, the catalog, AWS credentials and the guard rails.
fn api_state(
    config: &Config,
    broker: &Broker,
    secret: crate::secret::Secret,
    endpoint: &EndpointFile,
    catalog: crate::catalog::CatalogHandle,
    audit: Option<crate::audit::Audit>,
) -> ApiState {
    // Sessions no longer than the profile's policy.max_token_lifetime (issue 11).
    let aws = AwsService::new(crate::policy::limits::aws_roles(config), broker.clone());
    ApiState::new(
        broker.clone(),
        secret,
        config.api.clone(),
        endpoint.port,
        endpoint.socket.clone(),
    )
    .with_catalog(catalog)
    .with_aws(aws)
    .with_guard_rails(
        config.attestation.enabled,
        crate::policy::Policies::from_config(config),
        audit,
    )
}

/// Runs the boot refresh while the API already serves, then says ready and serves until
/// `stop` (which may also come during the boot refresh).
async fn serve(broker: &Broker, endpoint: &EndpointFile, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    notify::status("refreshing stored logins");
    let stopped_early = tokio::select! {
        () = broker.boot_refresh() => false,
        () = &mut stop => true,
    };
    if stopped_early {
        return;
    }
    let profiles = broker.status();
    let summary = format!(
        "serving {} profile(s) on port {}",
        profiles.len(),
        endpoint
            .port
            .map_or_else(|| "-".to_string(), |p| p.to_string())
    );
    notify::ready(&summary);
    tracing::info!(%summary, "stagepass agent ready");
    let _trim = trim::spawn_after_settle();
    stop.await;
}

/// Lets the audit writer drain. The API state (and with it the last audit handle) is
/// normally gone now; a connection still open after the drain keeps a handle, so this does
/// not wait for it forever.
async fn finish_audit(writer: Option<WriterGuard>) {
    if let Some(w) = writer {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::task::spawn_blocking(move || w.finish()),
        )
        .await;
    }
}

/// Per-boot files removed when the agent stops, on success and on error alike.
struct RuntimeFiles(Vec<std::path::PathBuf>);

impl Drop for RuntimeFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
