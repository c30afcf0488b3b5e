//! Filesystem fixtures the unit tests of several modules share.

use std::path::Path;

/// Creates a FIFO at `path` (0600): the special file every "regular files only" guard must
/// refuse without blocking on it.
pub(crate) fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}
