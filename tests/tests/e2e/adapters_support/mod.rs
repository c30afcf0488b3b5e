//! Shared plumbing of the adapter end-to-end tests: an isolated home for the `stagepass`
//! binary, running it with stdin and a hang guard, the running agent, moto's STS, and a
//! recording proxy in front of it. Every process is stopped by PID on drop and its log is
//! printed when the test is failing.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Hang guard for one CLI invocation (never a performance threshold).
pub const RUN_GUARD: Duration = Duration::from_secs(60);
/// Hang guard for a peer or the agent to come up.
pub const START_GUARD: Duration = Duration::from_secs(60);

/// The built `stagepass` binary: `target/debug/stagepass` next to this test's `deps/` dir.
/// `tests/run` builds the workspace first; alone, run `cargo build -p stagepass`.
pub fn stagepass_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("stagepass");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p stagepass` first",
        bin.display()
    );
    bin
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An isolated HOME with the XDG dirs, a config file and the env a child needs.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    /// A new home whose user config is `config` (TOML).
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let h = Self { dir };
        for d in ["config/stagepass", "state", "runtime"] {
            std::fs::create_dir_all(h.path().join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            h.path().join("runtime"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        h.write_config(config);
        h
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.path().join("config/stagepass/config.toml"), config).unwrap();
    }

    /// The agent's runtime dir (socket, API secret, endpoint file).
    pub fn runtime_dir(&self) -> PathBuf {
        self.path().join("runtime/stagepass")
    }

    /// The per-boot API secret file.
    pub fn api_secret(&self) -> PathBuf {
        self.runtime_dir().join("api-secret")
    }

    /// A command for the stagepass binary (or a link to it) with only this home's env.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_STATE_HOME", self.path().join("state"))
            .env("XDG_RUNTIME_DIR", self.path().join("runtime"))
            .env("RUST_LOG", "stagepass=debug")
            .current_dir(self.path());
        c
    }

    /// Runs `stagepass ARGS` with `stdin`, under the hang guard.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = self.command(&stagepass_bin());
        c.args(args);
        run_with_stdin(c, stdin)
    }
}

/// Runs a prepared command with `stdin`, killing it if it outlives [`RUN_GUARD`].
pub fn run_with_stdin(mut c: Command, stdin: &[u8]) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > RUN_GUARD {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "command hung (killed after {RUN_GUARD:?}): {c:?}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = writer.join();
    child.wait_with_output().unwrap()
}

/// A spawned process stopped by PID on drop; its log is printed if the test fails.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `c` with stdout+stderr to `log`.
    pub fn spawn(name: &str, mut c: Command, log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).unwrap();
        c.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready()` holds, failing with the log if the process exits or the guard ends.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < START_GUARD,
                "{} not {what} after {START_GUARD:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so the process can clean up, then make sure.
        let pid = self.child.id() as libc::pid_t;
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's PID has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
    }
}

/// `stagepass agent` running in a [`Home`], ready once its endpoint file exists.
pub struct Agent {
    pub proc: Proc,
}

impl Agent {
    pub fn start(home: &Home) -> Self {
        Self::start_with_env(home, &[])
    }

    /// Starts the agent with extra environment (e.g. the variable an `env` profile serves).
    pub fn start_with_env(home: &Home, env: &[(&str, &str)]) -> Self {
        let mut c = home.command(&stagepass_bin());
        c.arg("agent");
        for (k, v) in env {
            c.env(k, v);
        }
        let mut proc = Proc::spawn("stagepass agent", c, home.path().join("agent.log"));
        let endpoint = home.runtime_dir().join("endpoint.json");
        let secret = home.api_secret();
        proc.wait_until("listening", || endpoint.exists() && secret.exists());
        Self { proc }
    }
}

/// moto's server mode on a free port, stopped by PID on drop.
pub struct Moto {
    pub proc: Proc,
    pub url: String,
}

impl Moto {
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let mut c = Command::new("moto_server");
        c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto_server", c, dir.join("moto.log"));
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("127.0.0.1:{port}");
        proc.wait_until("listening", || std::net::TcpStream::connect(&probe).is_ok());
        Self { proc, url }
    }
}

/// What a [`MiniServer`] answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with one content type.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }
}

/// One HTTP request as a small loopback server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 server on loopback (one request per connection, `Connection: close`)
/// for the tests' own peers: a recording STS proxy, a kube API stand-in that checks tokens.
pub struct MiniServer {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MiniServer {
    /// Serves `answer(request) -> (status, content type, body)`.
    pub fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        let answer = Arc::new(answer);
        let thread = std::thread::spawn(move || {
            while !st2.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s3, a3) = (s2.clone(), answer.clone());
                        std::thread::spawn(move || serve_one(stream, &s3, &*a3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            url,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for MiniServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    mut stream: std::net::TcpStream,
    seen: &Mutex<Vec<Seen>>,
    answer: &dyn Fn(&Seen) -> Reply,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let req = Seen {
        method,
        path,
        headers,
        body,
    };
    let reply = answer(&req);
    seen.lock().unwrap().push(req);
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
}

/// A proxy in front of moto's STS that records each request body (to check which token the
/// agent sent, and how many calls it made) and forwards it unchanged.
pub fn sts_recording_proxy(moto_url: &str) -> MiniServer {
    let target = format!("{moto_url}/");
    MiniServer::start(move |req| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            let mut r = client.post(&target).body(req.body.clone());
            if let Some(ct) = req.header("content-type") {
                r = r.header("content-type", ct);
            }
            match r.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    Reply::new(status, "text/xml", resp.bytes().await.unwrap().to_vec())
                }
                Err(e) => Reply::new(502, "text/plain", e.to_string().into_bytes()),
            }
        })
    })
}

/// Form fields of an `application/x-www-form-urlencoded` body.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url_decode_pairs(&String::from_utf8_lossy(body))
}

fn url_decode_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
