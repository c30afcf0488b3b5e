//! The one error type of the harness, so a failing test says which peer failed and how.

use std::path::PathBuf;

/// Why a harness operation failed. Each variant names the peer or the file involved.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or process operation failed (spawn, temp dir, log file).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Node dependencies of the peers are not installed.
    #[error(
        "{0} is missing: run `sh tests/install/node.sh` (tests/run does it) to install the peers' Node dependencies"
    )]
    NodeModulesMissing(PathBuf),
    /// A peer exited before printing its READY line.
    #[error("peer {name} exited before it was ready ({status}); its log:\n{log}")]
    PeerExited {
        /// Peer name.
        name: String,
        /// Exit status as text.
        status: String,
        /// The peer's log so far.
        log: String,
    },
    /// A peer printed no READY line in time.
    #[error("peer {name} was not ready after {secs} s; its log:\n{log}")]
    PeerTimeout {
        /// Peer name.
        name: String,
        /// The hang-guard timeout in seconds.
        secs: u64,
        /// The peer's log so far.
        log: String,
    },
    /// A READY line that is not the documented JSON.
    #[error("peer {name} printed a malformed READY line {line:?}: {reason}")]
    BadReadyLine {
        /// Peer name.
        name: String,
        /// The line as printed.
        line: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An HTTP request to a peer failed at the transport level.
    #[error("{what}: {source}")]
    Http {
        /// Which request.
        what: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A peer answered with an unexpected status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// Which request.
        what: String,
        /// The status code.
        status: u16,
        /// The response body (never holds a secret: control routes return none).
        body: String,
    },
    /// A peer answered with JSON of an unexpected shape.
    #[error("{what}: unexpected JSON: {source}")]
    Json {
        /// Which request or file.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A condition polled for did not become true before the hang guard.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The hang-guard timeout in seconds.
        secs: u64,
    },
    /// A JWT failed verification.
    #[error("JWT verification failed: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// A command (git, stagepass) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// Anything else the harness checks (bad bed file, missing binary, ...).
    #[error("{0}")]
    Other(String),
}

impl HarnessError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result of every harness operation.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
