//! A blocking, runtime-free `GET` over the Unix socket: the `stagepass token` fast path.
//!
//! `$(stagepass token NAME)` runs in scripts and prompts, often many times a minute, so the
//! process must be done in well under a millisecond: no tokio runtime, no config file, no
//! HTTP library. This module opens the socket (a blocking connect with a send timeout, so a
//! stopped agent with a full backlog cannot hold it), writes one HTTP/1.1 request with
//! `Connection: close`, reads the one answer our own server sends (status line, headers, a
//! `Content-Length` body) and stops as soon as it has all of it, without waiting for the
//! server to close. Every step runs under one deadline ([`REQUEST_TIMEOUT`]), so the command
//! never waits longer, whatever the other end does. Anything it does not expect is a protocol error; when the socket is
//! absent the caller falls back to [`super`], which also knows the TCP endpoint.

use super::{CONNECT_TIMEOUT, ClientError, REQUEST_TIMEOUT, no_answer};
use crate::paths::Paths;
use crate::secret::Secret;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Largest answer accepted (a token answer is a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// `GET path` on the agent's socket: `Ok(None)` when there is no socket (use the full
/// client), else the status and body of the answer. Connecting takes at most
/// [`CONNECT_TIMEOUT`] and the whole request at most [`REQUEST_TIMEOUT`].
pub fn get(paths: &Paths, path: &str) -> Result<Option<(u16, Vec<u8>)>, ClientError> {
    get_within(paths, path, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
}

/// [`get`] with its bounds as arguments (the tests use short ones): `connect` for the agent
/// to take the connection, `total` for every step together.
fn get_within(
    paths: &Paths,
    path: &str,
    connect_timeout: Duration,
    total: Duration,
) -> Result<Option<(u16, Vec<u8>)>, ClientError> {
    let secret = read_secret(paths)?;
    // One deadline for every step: connect, write, read head, read body.
    let deadline = Instant::now() + total;
    let Some(mut stream) = open(&paths.socket(), connect_timeout.min(total))? else {
        return Ok(None);
    };
    send(&mut stream, path, &secret, total)?;
    let (answer, h) = read_answer(&mut stream, deadline, total)?;
    body_of(&answer, &h).map(Some)
}

/// The API secret; its absence means no agent runs.
fn read_secret(paths: &Paths) -> Result<Secret, ClientError> {
    let secret_path = paths.api_secret();
    match crate::protocol::secret_file::read(&secret_path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(ClientError::NotRunning(format!(
            "no secret file at {}",
            secret_path.display()
        ))),
        Err(e) => Err(ClientError::Protocol(format!(
            "cannot use {}: {e}",
            secret_path.display()
        ))),
    }
}

/// The connection to the agent's socket; `None` when there is no socket (use the full
/// client). `timeout`: how long the agent may take to accept.
fn open(socket: &Path, timeout: Duration) -> Result<Option<UnixStream>, ClientError> {
    match connect(socket, timeout) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(ClientError::NotRunning(format!(
                "{} did not accept the connection within {}s (the agent is stopped or \
                 overloaded)",
                socket.display(),
                timeout.as_secs_f32()
            )))
        }
        Err(e) => Err(ClientError::NotRunning(format!(
            "cannot connect to {}: {e}",
            socket.display()
        ))),
    }
}

/// Writes the request, the secret in a buffer zeroed when dropped.
fn send(
    stream: &mut UnixStream,
    path: &str,
    secret: &Secret,
    total: Duration,
) -> Result<(), ClientError> {
    let mut req = Zeroizing::new(Vec::with_capacity(160 + path.len()));
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ");
    req.extend_from_slice(secret.expose().as_bytes());
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    // The connect's send timeout (at most 2 s) still bounds this write of a few hundred
    // bytes, well inside the deadline: no extra system call on the fast path.
    stream.write_all(&req).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => no_answer(total),
        _ => ClientError::Protocol(e.to_string()),
    })
}

/// Reads the answer until it is complete (by its head) or the agent closes, all of it
/// within `deadline`.
fn read_answer(
    stream: &mut UnixStream,
    deadline: Instant,
    total: Duration,
) -> Result<(Zeroizing<Vec<u8>>, Head), ClientError> {
    let io = |e: std::io::Error| ClientError::Protocol(e.to_string());
    let mut answer = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    // The head, read once as soon as all of it is in.
    let mut seen: Option<Head> = None;
    loop {
        // What is left of the deadline, which bounds the whole answer, not each read (a
        // trickle could otherwise wait the whole timeout per read).
        stream
            .set_read_timeout(Some(left(deadline, total)?))
            .map_err(io)?;
        match stream.read(chunk.as_mut()) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > MAX_ANSWER {
                    return Err(ClientError::Protocol(
                        "the agent's answer is too large".into(),
                    ));
                }
                if seen.is_none() {
                    seen = head(&answer)?;
                }
                // The whole answer is here: waiting for the agent's close would only add
                // its next wake-up to every call.
                if seen.as_ref().is_some_and(|h| h.complete(answer.len())) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(no_answer(total));
            }
            Err(e) => return Err(io(e)),
        }
    }
    let h = seen.ok_or_else(|| bad_answer("has no complete head"))?;
    Ok((answer, h))
}

/// Connects to the socket at `path`, waiting at most `timeout` for the agent to take the
/// connection.
///
/// A blocking Unix-socket connect waits without end while the listener's backlog is full
/// (an agent that is stopped, or stuck, with clients queued); `SO_SNDTIMEO`, set before
/// connecting, bounds that wait and makes it fail with `WouldBlock`. A non-blocking connect
/// would fail at once instead of waiting a little for a busy agent.
fn connect(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_write_timeout(Some(timeout))?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

/// What is left until `deadline`, for the next socket timeout; the "no answer" error once
/// nothing is (a zero timeout would mean "wait forever" to the kernel, and std refuses it).
fn left(deadline: Instant, total: Duration) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(no_answer(total))
    } else {
        Ok(left)
    }
}

fn bad_answer(what: &str) -> ClientError {
    ClientError::Protocol(format!("the agent's answer {what}"))
}

/// What the head of an answer says.
struct Head {
    status: u16,
    /// Where the body starts.
    body_at: usize,
    /// `Content-Length`, when given.
    length: Option<usize>,
    /// What to call the agent's version when it is not ours (see
    /// [`crate::protocol::version::mismatch`]); `None` on the usual path, which allocates
    /// nothing for it.
    version_mismatch: Option<String>,
}

impl Head {
    /// Has an answer of `len` bytes all of its body? (Without a length, only EOF says so.)
    fn complete(&self, len: usize) -> bool {
        self.length
            .is_some_and(|n| len >= self.body_at.saturating_add(n))
    }
}

/// Reads the head of `answer`; `Ok(None)` until all of it has arrived.
fn head(answer: &[u8]) -> Result<Option<Head>, ClientError> {
    let Some(head_end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head =
        std::str::from_utf8(&answer[..head_end]).map_err(|_| bad_answer("head is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad_answer("has no HTTP/1.1 status line"))?;
    let mut length = None;
    let mut version: Option<&str> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad_answer("has a malformed header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad_answer("has a bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case(crate::protocol::version::HEADER) {
            version = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad_answer(
                "uses a transfer encoding this client does not read",
            ));
        }
    }
    Ok(Some(Head {
        status,
        body_at: head_end + 4,
        length,
        version_mismatch: crate::protocol::version::mismatch(version.map(str::as_bytes)),
    }))
}

/// The status and body of a complete answer whose head is `h`.
fn body_of(answer: &[u8], h: &Head) -> Result<(u16, Vec<u8>), ClientError> {
    if let Some(agent) = &h.version_mismatch {
        return Err(ClientError::VersionMismatch {
            agent: agent.clone(),
        });
    }
    let body = &answer[h.body_at..];
    let body = match h.length {
        Some(n) => body.get(..n).ok_or_else(|| bad_answer("ended early"))?,
        None => body,
    };
    Ok((h.status, body.to_vec()))
}

/// Splits one complete HTTP/1.1 answer into status and body.
#[cfg(test)]
fn parse(answer: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let h = head(answer)?.ok_or_else(|| bad_answer("has no complete head"))?;
    body_of(answer, &h)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `head` with this build's version header after the status line, as the agent answers.
    fn answer(status_line: &str, rest: &str) -> Vec<u8> {
        format!(
            "{status_line}\r\nstagepass-version: {}\r\n{rest}",
            crate::protocol::version::VERSION
        )
        .into_bytes()
    }

    #[test]
    fn parses_a_content_length_answer() {
        let (s, b) = parse(&answer(
            "HTTP/1.1 200 OK",
            "content-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        ))
        .unwrap();
        assert_eq!((s, b.as_slice()), (200, b"{}".as_slice()));
        let (s, b) = parse(&answer(
            "HTTP/1.1 401 Unauthorized",
            "content-length: 3\r\n\r\nabcdef",
        ))
        .unwrap();
        assert_eq!((s, b.as_slice()), (401, b"abc".as_slice()));
    }

    /// Issue 21: an agent of another version (or one that does not say) is refused with the
    /// fix, not half read.
    #[test]
    fn an_agent_of_another_version_is_refused() {
        let other = b"HTTP/1.1 200 OK\r\nstagepass-version: 9.9.9\r\ncontent-length: 2\r\n\r\n{}";
        let e = parse(other).unwrap_err();
        assert!(
            matches!(&e, ClientError::VersionMismatch { agent } if agent == "9.9.9"),
            "{e}"
        );
        assert!(e.to_string().contains("restart the agent"), "{e}");
        let silent = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert!(matches!(
            parse(silent).unwrap_err(),
            ClientError::VersionMismatch { .. }
        ));
    }

    #[test]
    fn an_answer_is_complete_once_its_content_length_is_in() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        for cut in 0..full.len() {
            let done = head(&full[..cut]).unwrap().is_some_and(|h| h.complete(cut));
            assert!(!done, "complete at {cut} bytes");
        }
        assert!(head(full).unwrap().unwrap().complete(full.len()));
        // Without a length only EOF ends the answer.
        let open = b"HTTP/1.1 200 OK\r\n\r\n{}";
        assert!(!head(open).unwrap().unwrap().complete(open.len()));
    }

    /// A runtime dir with a valid secret file; the socket path is the caller's to create.
    pub(in crate::client) fn runtime() -> (tempfile::TempDir, Paths) {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_files: vec![],
            state_dir: tmp.path().join("state"),
            runtime_dir: tmp.path().to_path_buf(),
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(paths.api_secret())
            .unwrap();
        f.write_all(&[b'a'; super::super::secret_file::SECRET_HEX_LEN])
            .unwrap();
        (tmp, paths)
    }

    const SHORT: Duration = Duration::from_millis(100);
    const TOTAL: Duration = Duration::from_millis(300);

    /// [`get_within`] with the short bounds, on a thread: a request that hangs fails the
    /// test after a hang guard (not a performance threshold) instead of hanging it.
    fn get_guarded(paths: &Paths) -> ClientError {
        let paths = paths.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(get_within(&paths, "/v1/token/x", SHORT, TOTAL));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => r.unwrap_err(),
            Err(_) => panic!("the request hung past its deadline"),
        }
    }

    /// Issue 19: an agent that takes the connection and never answers (stopped, stuck) ends
    /// the request with a clear error at the deadline; before, only the reads were bounded.
    #[test]
    fn an_agent_that_accepts_and_never_answers_is_a_clear_error() {
        let (_tmp, paths) = runtime();
        let listener = std::os::unix::net::UnixListener::bind(paths.socket()).unwrap();
        let holder = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let err = get_guarded(&paths);
        assert!(
            matches!(&err, ClientError::Protocol(m) if m.contains("no complete answer")),
            "{err}"
        );
        drop(holder.join());
    }

    /// Issue 19: a socket whose backlog is full (nobody accepts) used to hold a blocking
    /// connect forever; now it is `NotRunning` after the connect timeout.
    #[test]
    fn a_socket_that_never_accepts_is_not_running_after_the_connect_timeout() {
        use socket2::{Domain, SockAddr, Socket, Type};
        let (_tmp, paths) = runtime();
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener
            .bind(&SockAddr::unix(paths.socket()).unwrap())
            .unwrap();
        // Backlog 0: one queued connection fills it.
        listener.listen(0).unwrap();
        let _queued = UnixStream::connect(paths.socket()).unwrap();
        let err = get_guarded(&paths);
        assert!(
            matches!(&err, ClientError::NotRunning(m) if m.contains("did not accept")),
            "{err}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let short = answer("HTTP/1.1 200 OK", "content-length: 9\r\n\r\n{}");
        for bad in [
            short.as_slice(),
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ClientError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
