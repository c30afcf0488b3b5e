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
/// `RUST_LOG` is unset. A second call is a no-op. Colours only on a terminal (and not with
/// `NO_COLOR`): a log file or the journal gets plain text that grep and log shippers read.
pub fn init(default_filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    install(filter(default_filter), format, std::io::stderr, ansi);
}

/// Installs the global subscriber with explicit filter directives (`RUST_LOG` syntax; `RUST_LOG`
/// itself is ignored) and writer: tests capture the output this way. Returns false when the
/// directives are invalid or a subscriber was already installed.
pub fn init_with_writer<W>(directives: &str, format: LogFormat, writer: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match EnvFilter::try_new(directives) {
        Ok(f) => install(f, format, writer, false),
        Err(_) => false,
    }
}

fn install<W>(filter: EnvFilter, format: LogFormat, writer: W, ansi: bool) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    }
}
