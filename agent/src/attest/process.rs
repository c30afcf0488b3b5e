//! One process as /proc describes it: pid, parent, uid, executable, command line, start time.
//!
//! PID reuse guard: every file is read through one open `/proc/PID` directory. The kernel
//! ties that directory to the process it named when it was opened: once that process is
//! gone, reads through it fail, even if the pid number has gone to a new process meanwhile.
//! So one reading is one process. Which process: a reading is refused when the process
//! started after the connection it is supposed to have made (see [`read_started_before`]),
//! so a caller that exited and whose pid went to a newer process before we opened the
//! directory is never mistaken for that process.
//!
//! This runs for every new connection that asks for a credential (`stagepass token` is one
//! connection per call), for the caller and a few ancestors: each file is one `openat` and
//! one `read` into a stack buffer relative to that directory, not a path walk from `/`.

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
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

fn io_err(pid: u32, e: rustix::io::Errno) -> ProcError {
    match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::SRCH => ProcError::Gone(pid),
        _ => ProcError::Unreadable {
            pid,
            why: std::io::Error::from(e).to_string(),
        },
    }
}

/// `/proc/PID`, open: the files read through it are this process's or none (see the
/// module docs).
struct ProcDir {
    pid: u32,
    fd: OwnedFd,
}

impl ProcDir {
    fn open(root: &Path, pid: u32) -> Result<Self, ProcError> {
        let fd = rustix::fs::open(
            root.join(pid.to_string()),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(pid, e))?;
        Ok(Self { pid, fd })
    }

    /// Reads `name` into `buf`: the file's first `buf.len()` bytes, which procfs hands over
    /// in one read. Callers size `buf` so what they need fits (the rest is cut).
    fn read<'b>(&self, name: &str, buf: &'b mut [u8]) -> Result<&'b [u8], ProcError> {
        let file = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| io_err(self.pid, e))?;
        loop {
            match rustix::io::read(&file, &mut *buf) {
                Ok(n) => return Ok(&buf[..n]),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io_err(self.pid, e)),
            }
        }
    }

    /// `(ppid, start_ticks)` from `stat`.
    fn stat(&self) -> Result<(u32, u64), ProcError> {
        // Fields up to the start time take well under 512 bytes (comm is at most 64).
        let mut buf = [0u8; 1024];
        let text = self.read("stat", &mut buf)?;
        std::str::from_utf8(text)
            .ok()
            .and_then(parse_stat)
            .ok_or_else(|| ProcError::Malformed {
                pid: self.pid,
                why: "unexpected format".into(),
            })
    }

    fn exe(&self) -> Result<String, ProcError> {
        let link = rustix::fs::readlinkat(&self.fd, "exe", Vec::with_capacity(256))
            .map_err(|e| io_err(self.pid, e))?;
        Ok(link.to_string_lossy().into_owned())
    }

    fn cmdline(&self) -> Result<String, ProcError> {
        let mut buf = [0u8; CMDLINE_MAX + 1];
        let raw = self.read("cmdline", &mut buf)?;
        Ok(cmdline_text(raw))
    }

    fn real_uid(&self) -> Result<u32, ProcError> {
        // `Uid:` is in the first lines of status; 4 KiB holds it with room to spare.
        let mut buf = [0u8; 4096];
        let text = self.read("status", &mut buf)?;
        real_uid(&String::from_utf8_lossy(text)).ok_or_else(|| ProcError::Malformed {
            pid: self.pid,
            why: "no Uid line in status".into(),
        })
    }
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

/// The command line as text: NULs and control characters as spaces, at most
/// [`CMDLINE_MAX`] bytes (cut at a character boundary, marked with `…`).
fn cmdline_text(raw: &[u8]) -> String {
    let mut buf = raw.to_vec();
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
    s
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
    let dir = ProcDir::open(root, pid)?;
    let (ppid, start_ticks) = dir.stat()?;
    let exe = dir.exe()?;
    let cmdline = if want.cmdline {
        dir.cmdline()?
    } else {
        String::new()
    };
    let uid = match want.uid {
        Some(u) => u,
        None => dir.real_uid()?,
    };
    Ok(ProcInfo {
        pid,
        ppid,
        uid,
        exe,
        cmdline,
        start_ticks,
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
        let d = tmp.path().join("9");
        std::fs::create_dir(&d).unwrap();
        let dir = ProcDir::open(tmp.path(), 9).unwrap();
        std::fs::write(d.join("cmdline"), b"git\0credential\0fill\0").unwrap();
        assert_eq!(dir.cmdline().unwrap(), "git credential fill");
        std::fs::write(d.join("cmdline"), vec![b'a'; 1000]).unwrap();
        let s = dir.cmdline().unwrap();
        assert!(s.len() <= CMDLINE_MAX + 3 && s.ends_with('…'));
        assert_eq!(cmdline_text("é\0\x07x".as_bytes()), "é  x");
    }

    /// The directory pins the process: once it has exited, reads through it fail even
    /// though the path `/proc/PID` may name another process by then.
    #[test]
    fn reads_through_an_open_dir_fail_once_the_process_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let dir = ProcDir::open(Path::new("/proc"), pid).unwrap();
        assert!(dir.stat().is_ok());
        assert!(dir.exe().unwrap().ends_with("sleep"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(dir.stat(), Err(ProcError::Gone(pid)));
        assert_eq!(dir.exe(), Err(ProcError::Gone(pid)));
    }
}
