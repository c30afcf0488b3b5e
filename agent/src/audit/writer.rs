//! The audit writer: a thread fed through a bounded channel, so the request path never waits
//! on the disk.
//!
//! [`Audit::record`] is a `try_send`: when the queue is full the record is dropped and
//! counted (`stagepass_audit_dropped_total`), and the writer writes one line saying how many
//! were lost before its next record, so a gap in the trail is visible in the trail itself.
//! The file is `audit/audit.jsonl` in the state dir (dir 0700, file 0600), rotated by size
//! to `audit.jsonl.1` .. `.N`. With syslog on, each line also goes to the syslog socket as
//! an RFC 5424 message (facility `auth`; refusals at `warning`, the rest at `info`).
//! The writer works in batches (drain, write, flush, pause 10 ms) so a busy API does not
//! pay a thread wake-up per record.

use super::record::{Outcome, Record, dropped_line};
use crate::config::AuditConfig;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// The audit log's file name inside its directory.
pub const FILE: &str = "audit.jsonl";

/// The audit directory under a state dir.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("audit")
}

/// Counters shared by the handle and the writer, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records queued.
    pub queued: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records (and drop notes) written to the file.
    pub written: AtomicU64,
    /// Write or rotation failures.
    pub failed: AtomicU64,
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: mpsc::Sender<Record>,
    counters: Arc<Counters>,
}

/// Owns the writer thread; [`WriterGuard::finish`] waits for it to drain after the last
/// [`Audit`] handle is gone.
#[derive(Debug)]
pub struct WriterGuard {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterGuard {
    /// Waits for the writer to write what is queued and stop (all handles must be dropped).
    pub fn finish(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Audit {
    /// Creates the audit dir and file (0700/0600) and starts the writer thread.
    pub fn start(cfg: &AuditConfig, state_dir: &Path) -> io::Result<(Audit, WriterGuard)> {
        let dir = dir(state_dir);
        crate::paths::ensure_private_dir(&dir)?;
        let file = LogFile::open(&dir, cfg.max_bytes, cfg.keep)?;
        let syslog = cfg.syslog.then(|| Syslog::new(cfg.syslog_socket.clone()));
        let (tx, rx) = mpsc::channel(cfg.queue);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("stagepass-audit".into())
            .spawn(move || run(rx, file, syslog, &c))?;
        Ok((
            Audit { tx, counters },
            WriterGuard {
                thread: Some(thread),
            },
        ))
    }

    /// Queues a record; drops (and counts) it when the writer is behind.
    pub fn record(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters, for `/metrics`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Appends the audit counters to the Prometheus text of `/metrics`.
pub fn render_metrics(c: &Counters, out: &mut String) {
    use std::fmt::Write as _;
    for (name, help, v) in [
        (
            "stagepass_audit_records_total",
            "Audit records queued for writing.",
            &c.queued,
        ),
        (
            "stagepass_audit_dropped_total",
            "Audit records dropped because the writer fell behind (the log notes each gap).",
            &c.dropped,
        ),
        (
            "stagepass_audit_write_errors_total",
            "Audit log write or rotation failures.",
            &c.failed,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

fn run(
    mut rx: mpsc::Receiver<Record>,
    mut file: LogFile,
    mut syslog: Option<Syslog>,
    c: &Counters,
) {
    let mut reported_drops = 0u64;
    // Identical records of one connection in one batch become one line with a count, so a
    // client hammering the API costs the writer a pointer comparison per request, not a
    // JSON encoding (and the log stays readable).
    let mut batch: Vec<(Record, u64, std::time::SystemTime)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(r) = next {
            let (count, last_time) = (r.count.max(1), r.last_time.unwrap_or(r.time));
            match batch.iter_mut().find(|(b, _, _)| b.same_as(&r)) {
                Some((_, n, last)) => {
                    *n = n.saturating_add(count);
                    *last = (*last).max(last_time);
                }
                None => {
                    if batch.len() >= MAX_BATCH_KEYS {
                        write_batch(&mut batch, &mut file, &mut syslog, c, &mut reported_drops);
                    }
                    batch.push((r, count, last_time));
                }
            }
            next = rx.try_recv().ok();
        }
        write_batch(&mut batch, &mut file, &mut syslog, c, &mut reported_drops);
        if let Err(e) = file.flush() {
            c.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "audit log flush failed");
        }
        // Under load, pausing before the next wait turns one wake-up per record into a few
        // per second (records queue meanwhile); idle, it delays a record by at most this.
        std::thread::sleep(BATCH_PAUSE);
    }
    let _ = file.flush();
}

/// Distinct records held before a batch is written early.
const MAX_BATCH_KEYS: usize = 256;

fn write_batch(
    batch: &mut Vec<(Record, u64, std::time::SystemTime)>,
    file: &mut LogFile,
    syslog: &mut Option<Syslog>,
    c: &Counters,
    reported_drops: &mut u64,
) {
    let dropped = c.dropped.load(Ordering::Relaxed);
    if dropped > *reported_drops {
        let line = dropped_line(dropped - *reported_drops, std::time::SystemTime::now());
        *reported_drops = dropped;
        write_one(file, &line, c);
    }
    for (r, n, last) in batch.drain(..) {
        let line = r.to_counted_line(n, last);
        write_one(file, &line, c);
        if let Some(s) = syslog {
            s.send(&line, r.outcome == Outcome::Deny);
        }
    }
}

/// How long the writer lets records queue after writing a batch.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

fn write_one(file: &mut LogFile, line: &[u8], c: &Counters) {
    match file.write_line(line) {
        Ok(()) => {
            c.written.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            c.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "audit log write failed");
        }
    }
}

/// The current file with its size, rotating before a line would make it too big.
struct LogFile {
    dir: PathBuf,
    out: io::BufWriter<File>,
    size: u64,
    max: u64,
    keep: u32,
}

fn open_append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // Never through a symlink planted at the log's name.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // An existing file made by someone else's umask or an older version: close it up.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

impl LogFile {
    fn open(dir: &Path, max: u64, keep: u32) -> io::Result<Self> {
        let f = open_append(&dir.join(FILE))?;
        let size = f.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            out: io::BufWriter::new(f),
            size,
            max,
            keep,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// `audit.jsonl.(N-1)` -> `.N`, ..., `audit.jsonl` -> `.1`, then a new empty file.
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let name = |i: u32| self.dir.join(format!("{FILE}.{i}"));
        if self.keep == 0 {
            std::fs::remove_file(self.dir.join(FILE))?;
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for i in (1..self.keep).rev() {
                match std::fs::rename(name(i), name(i + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            std::fs::rename(self.dir.join(FILE), name(1))?;
        }
        self.out = io::BufWriter::new(open_append(&self.dir.join(FILE))?);
        self.size = 0;
        Ok(())
    }
}

/// RFC 5424 messages to a local datagram socket (`/dev/log`).
struct Syslog {
    path: PathBuf,
    sock: Option<std::os::unix::net::UnixDatagram>,
    host: String,
    warned: bool,
}

impl Syslog {
    fn new(path: PathBuf) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
            .unwrap_or_else(|| "-".into());
        Self {
            path,
            sock: std::os::unix::net::UnixDatagram::unbound().ok(),
            host,
            warned: false,
        }
    }

    fn send(&mut self, line: &[u8], deny: bool) {
        // Facility auth (4); severity warning (4) for refusals, info (6) otherwise.
        let pri = 4 * 8 + if deny { 4 } else { 6 };
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let mut msg = format!(
            "<{pri}>1 {} {} stagepass {} audit - ",
            super::record::timestamp(std::time::SystemTime::now()),
            self.host,
            std::process::id()
        )
        .into_bytes();
        msg.extend_from_slice(body);
        let res = match &self.sock {
            Some(s) => s.send_to(&msg, &self.path).map(|_| ()),
            None => Err(io::Error::other("no datagram socket")),
        };
        if let Err(e) = res
            && !self.warned
        {
            self.warned = true;
            tracing::warn!(socket = %self.path.display(), error = %e, "audit syslog forwarding failed; the file log continues");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// Runs the writer over everything queued on `rx` into a fresh log under `state_dir`;
    /// the file's text and its lines as JSON.
    fn write_all(
        rx: mpsc::Receiver<Record>,
        counters: &Counters,
        state_dir: &std::path::Path,
        max_bytes: u64,
        keep: u32,
    ) -> (String, Vec<serde_json::Value>) {
        let d = dir(state_dir);
        crate::paths::ensure_private_dir(&d).unwrap();
        let file = LogFile::open(&d, max_bytes, keep).unwrap();
        run(rx, file, None, counters);
        let text = std::fs::read_to_string(d.join(FILE)).unwrap();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (text, lines)
    }

    fn record(n: usize) -> Record {
        Record {
            count: 1,
            last_time: None,
            time: SystemTime::now(),
            profile: format!("p{n}").into(),
            audience: None,
            route: "/v1/token/{profile}",
            role: None,
            caller: None,
            outcome: Outcome::Allow,
            rule: Some("default".into()),
            code: None,
            reason: None,
            token_fingerprint: Some("0123456789ab".into()),
        }
    }

    fn cfg(max_bytes: u64, keep: u32) -> AuditConfig {
        AuditConfig {
            max_bytes,
            keep,
            ..AuditConfig::default()
        }
    }

    #[test]
    fn writes_private_lines_and_rotates_by_size_keeping_n() {
        let tmp = tempfile::tempdir().unwrap();
        let (audit, guard) = Audit::start(&cfg(4096, 2), tmp.path()).unwrap();
        for i in 0..100 {
            audit.record(record(i));
        }
        drop(audit);
        guard.finish();
        let d = dir(tmp.path());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        for n in &names {
            let p = d.join(n);
            assert_eq!(mode(&p), 0o600, "{n}");
            assert!(std::fs::metadata(&p).unwrap().len() <= 4096, "{n}");
        }
        // The newest records are in audit.jsonl, the last one last.
        let text = std::fs::read_to_string(d.join(FILE)).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["profile"], "p99");
    }

    #[test]
    fn a_full_queue_drops_counts_and_says_so_in_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let c = AuditConfig {
            queue: 1,
            ..AuditConfig::default()
        };
        // Build the handle without a running writer so the queue stays full.
        let (tx, rx) = mpsc::channel(c.queue);
        let counters = Arc::new(Counters::default());
        let audit = Audit {
            tx,
            counters: counters.clone(),
        };
        audit.record(record(0));
        audit.record(record(1));
        audit.record(record(2));
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2);
        drop(audit);
        let (text, lines) = write_all(rx, &counters, tmp.path(), c.max_bytes, c.keep);
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["event"], "dropped");
        assert_eq!(lines[0]["dropped"], 2);
        assert_eq!(lines[1]["profile"], "p0");
        assert!(lines[1].get("count").is_none());
    }

    #[test]
    fn identical_records_of_a_connection_in_a_batch_are_one_counted_line() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(64);
        let counters = Arc::new(Counters::default());
        let audit = Audit {
            tx,
            counters: counters.clone(),
        };
        let conn_a = Arc::new(crate::attest::Attestation {
            transport: "tcp",
            pid: Some(1),
            ..Default::default()
        });
        let conn_b = Arc::new((*conn_a).clone());
        let mut r = record(0);
        r.caller = Some(conn_a);
        for _ in 0..5 {
            audit.record(r.clone());
        }
        audit.record(Record {
            count: 1,
            last_time: None,
            caller: Some(conn_b),
            ..r.clone()
        });
        audit.record(r.clone());
        drop(audit);
        let (text, lines) = write_all(rx, &counters, tmp.path(), 1 << 20, 1);
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["count"], 6);
        assert!(lines[0]["last_time"].is_string());
        assert!(lines[1].get("count").is_none(), "{text}");
    }

    /// Issue 19: a symlink planted at the log's name is not followed.
    #[test]
    fn a_symlink_at_the_log_path_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        let link = tmp.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_append(&link).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn syslog_gets_rfc5424_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let sock_path = tmp.path().join("log");
        let server = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        let c = AuditConfig {
            syslog: true,
            syslog_socket: sock_path,
            ..AuditConfig::default()
        };
        let (audit, guard) = Audit::start(&c, tmp.path()).unwrap();
        let mut deny = record(1);
        deny.outcome = Outcome::Deny;
        audit.record(deny);
        drop(audit);
        guard.finish();
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(msg.starts_with("<36>1 "), "{msg}");
        assert!(msg.contains(" stagepass "), "{msg}");
        let json = &msg[msg.find('{').unwrap()..];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["decision"], "deny");
    }
}
