//! One process as /proc describes it: pid, parent, uid, executable, command line, start time.
//!
//! PID reuse guard: the start time (field 22 of `/proc/PID/stat`, clock ticks since boot) is
//! read before and after everything else; if it changed, the pid now names another process
//! and the reading is thrown away. A reading is also refused when the process started after
//! the connection it is supposed to have made (see [`read_started_before`]): a caller that
//! exited and whose pid went to a newer process is never mistaken for that process.

use std::io::Read;
use std::path::Path;

/// Longest command line kept (bytes, cut at a character boundary).
pub const CMDLINE_MAX: usize = 256;

/// A process read consistently from /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id (in the agent's pid namespace).
    pub pid: u32,
    /// Parent process id (0 for the namespace's init).
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// `/proc/PID/exe`, resolved (` (deleted)` kept when the file was replaced).
    pub exe: String,
    /// Arguments joined by spaces, at most [`CMDLINE_MAX`] bytes.
    pub cmdline: String,
    /// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start_ticks: u64,
}

impl ProcInfo {
    /// The second word of the command line (the subcommand, for our own binary).
    pub fn arg1(&self) -> Option<&str> {
        self.cmdline.split(' ').nth(1)
    }

    /// The file name of the executable.
    pub fn exe_name(&self) -> &str {
        let e = self.exe.trim_end_matches(" (deleted)");
        e.rsplit('/').next().unwrap_or(e)
    }
}

/// Why a process could not be read (the text goes into the audit record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcError {
    /// No such process (it exited).
    #[error("process {0} is gone")]
    Gone(u32),
    /// /proc refused (another uid's process, hidepid, ...).
    #[error("cannot read /proc/{pid}: {why}")]
    Unreadable {
        /// The pid.
        pid: u32,
        /// The error.
        why: String,
    },
    /// The pid changed owner while we read it, or names a process newer than the connection.
    #[error("pid {0} was reused by another process")]
    Reused(u32),
    /// /proc said something we cannot parse.
    #[error("/proc/{pid}/stat: {why}")]
    Malformed {
        /// The pid.
        pid: u32,
        /// What.
        why: String,
    },
}

fn io_err(pid: u32, e: &std::io::Error) -> ProcError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ProcError::Gone(pid),
        _ if e.raw_os_error() == Some(3) => ProcError::Gone(pid), // ESRCH
        _ => ProcError::Unreadable {
            pid,
            why: e.to_string(),
        },
    }
}

/// `(ppid, start_ticks)` from `/proc/PID/stat`.
pub fn stat(root: &Path, pid: u32) -> Result<(u32, u64), ProcError> {
    let text = std::fs::read_to_string(root.join(pid.to_string()).join("stat"))
        .map_err(|e| io_err(pid, &e))?;
    parse_stat(&text).ok_or_else(|| ProcError::Malformed {
        pid,
        why: "unexpected format".into(),
    })
}

/// Parses `pid (comm) state ppid ... starttime ...`; `comm` may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state); ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn read_cmdline(path: &Path) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(CMDLINE_MAX);
    std::fs::File::open(path)?
        .take(CMDLINE_MAX as u64 + 1)
        .read_to_end(&mut buf)?;
    while buf.last() == Some(&0) {
        buf.pop();
    }
    for b in &mut buf {
        if *b == 0 || b.is_ascii_control() {
            *b = b' ';
        }
    }
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if s.len() > CMDLINE_MAX {
        let mut cut = CMDLINE_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    Ok(s)
}

/// What to read besides the start time, parent and executable (each costs a file read;
/// the caller-attestation path is on the request path of every new connection).
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// The command line.
    pub cmdline: bool,
    /// The real uid from `/proc/PID/status` (else the given uid is used).
    pub uid: Option<u32>,
}

/// Everything: command line and uid.
pub const ALL: Want = Want {
    cmdline: true,
    uid: None,
};

/// Reads `pid` under `root` (normally `/proc`) with the start-time guard.
pub fn read(root: &Path, pid: u32) -> Result<ProcInfo, ProcError> {
    read_with(root, pid, ALL)
}

/// [`read`], reading only what `want` asks for.
pub fn read_with(root: &Path, pid: u32, want: Want) -> Result<ProcInfo, ProcError> {
    let dir = root.join(pid.to_string());
    let (_, before) = stat(root, pid)?;
    let exe = std::fs::read_link(dir.join("exe")).map_err(|e| io_err(pid, &e))?;
    let cmdline = if want.cmdline {
        read_cmdline(&dir.join("cmdline")).map_err(|e| io_err(pid, &e))?
    } else {
        String::new()
    };
    let uid = match want.uid {
        Some(u) => u,
        None => {
            let status =
                std::fs::read_to_string(dir.join("status")).map_err(|e| io_err(pid, &e))?;
            real_uid(&status).ok_or_else(|| ProcError::Malformed {
                pid,
                why: "no Uid line in status".into(),
            })?
        }
    };
    let (ppid, after) = stat(root, pid)?;
    if before != after {
        return Err(ProcError::Reused(pid));
    }
    Ok(ProcInfo {
        pid,
        ppid,
        uid,
        exe: exe.to_string_lossy().into_owned(),
        cmdline,
        start_ticks: after,
    })
}

/// [`read`], refusing a process that started after `limit_ticks` (the connection's
/// acceptance): it cannot be the one that connected, so its pid was reused.
pub fn read_started_before(
    root: &Path,
    pid: u32,
    limit_ticks: u64,
    want: Want,
) -> Result<ProcInfo, ProcError> {
    let p = read_with(root, pid, want)?;
    if p.start_ticks > limit_ticks {
        return Err(ProcError::Reused(pid));
    }
    Ok(p)
}

/// Now, in clock ticks since boot (the unit of the start time in `/proc/PID/stat`).
pub fn now_ticks() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(hz) + nanos.saturating_mul(hz) / 1_000_000_000
}

/// Converts a monotonic age (time since the connection was accepted) to the tick at which
/// the connection was accepted. Rounds up: a process started in the same tick still counts
/// as started before.
pub fn ticks_ago(age: std::time::Duration) -> u64 {
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let age_ticks = u64::try_from(age.as_nanos().saturating_mul(u128::from(hz)) / 1_000_000_000)
        .unwrap_or(u64::MAX);
    now_ticks().saturating_sub(age_ticks).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(line), Some((7, 123_456)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_ourselves_consistently() {
        let me = std::process::id();
        let p = read(Path::new("/proc"), me).unwrap();
        assert_eq!(p.pid, me);
        assert_eq!(p.uid, rustix::process::getuid().as_raw());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(p.exe, exe.to_string_lossy());
        assert!(p.start_ticks <= now_ticks());
        // A limit before our start refuses us as "reused".
        assert_eq!(
            read_started_before(Path::new("/proc"), me, p.start_ticks - 1, ALL),
            Err(ProcError::Reused(me))
        );
        assert!(read_started_before(Path::new("/proc"), me, p.start_ticks, ALL).is_ok());
    }

    #[test]
    fn a_missing_pid_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(tmp.path(), 4242), Err(ProcError::Gone(4242)));
    }

    #[test]
    fn a_fake_proc_entry_reads_and_a_newer_start_is_reuse() {
        // A fake /proc whose stat answers differently on each read.
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("9");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("cmdline"), b"x\0").unwrap();
        std::fs::write(d.join("status"), "Uid:\t5\t5\t5\t5\n").unwrap();
        std::os::unix::fs::symlink("/bin/x", d.join("exe")).unwrap();
        let stat =
            |start: u64| format!("9 (x) S 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
        std::fs::write(d.join("stat"), stat(100)).unwrap();
        let p = read(tmp.path(), 9).unwrap();
        assert_eq!((p.uid, p.start_ticks, p.exe.as_str()), (5, 100, "/bin/x"));
        // The same pid with a start time after the connection's acceptance is refused.
        assert_eq!(
            read_started_before(tmp.path(), 9, 99, ALL),
            Err(ProcError::Reused(9))
        );
    }

    #[test]
    fn cmdline_is_cut_and_joined() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("cmdline");
        std::fs::write(&f, b"git\0credential\0fill\0").unwrap();
        assert_eq!(read_cmdline(&f).unwrap(), "git credential fill");
        std::fs::write(&f, vec![b'a'; 1000]).unwrap();
        let s = read_cmdline(&f).unwrap();
        assert!(s.len() <= CMDLINE_MAX + 3 && s.ends_with('…'));
    }
}
