//! Log setup: `tracing-subscriber` with `RUST_LOG`, text or JSON, to stderr.
//!
//! Secrets never reach a log line because they travel in [`crate::secret::Secret`], whose
//! `Debug` is `[redacted]`; spans and events carry the profile, request ids and token
//! fingerprints only. The end-to-end test `broker_logs` runs a whole session at `trace` level
//! through [`init_with_writer`] and greps the output for every token it saw.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The filter: `RUST_LOG` when set and valid, else `default_filter`, else `info`.
pub fn filter(default_filter: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber writing to stderr. `default_filter` applies when
/// `RUST_LOG` is unset. A second call is a no-op.
pub fn init(default_filter: &str, format: LogFormat) {
    init_with_writer(filter(default_filter), format, std::io::stderr);
}

/// Installs the global subscriber with an explicit filter and writer (tests capture the
/// output this way). Returns false when a subscriber was already installed.
pub fn init_with_writer<W>(filter: EnvFilter, format: LogFormat, writer: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    }
}
