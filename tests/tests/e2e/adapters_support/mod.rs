//! Shared plumbing of the adapter end-to-end tests: moto's STS, a recording proxy in front
//! of it and a tiny loopback server for the tests' own peers. The home, the agent, the
//! process wrapper and the hang-guarded runs are the harness's (`stagepass_e2e`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use stagepass_e2e::config::{Api, AwsRole, Config, GitHost, Profile, Registry};
pub use stagepass_e2e::support::{free_port, stagepass_bin};
pub use stagepass_e2e::{Home, ManagedProcess};

/// Hang guard for a peer or the agent to come up.
pub const START_GUARD: Duration = Duration::from_secs(60);

/// A private home with `config` as its user config.
pub fn home(config: &Config) -> Home {
    Home::with_config(config).unwrap()
}

/// Runs a prepared command with `stdin` under the harness's hang guard.
pub fn run_with_stdin(c: Command, stdin: &[u8]) -> Output {
    stagepass_e2e::home::run_guarded(c, Some(stdin)).unwrap()
}

/// `stagepass agent` running in `home` (extra environment, e.g. the variable an `env`
/// profile serves), ready once its endpoint file exists; stopped by PID on drop.
pub fn start_agent(home: &Home, env: &[(&str, &str)]) -> ManagedProcess {
    home.start_agent(env).unwrap()
}

/// moto's server mode on a free port, stopped by PID on drop.
pub struct Moto {
    pub proc: ManagedProcess,
    pub url: String,
}

impl Moto {
    pub fn start() -> Self {
        let port = free_port().unwrap();
        let mut c = Command::new("moto_server");
        c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = ManagedProcess::spawn("moto_server", c).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("127.0.0.1:{port}");
        proc.wait_until("listening", START_GUARD, || {
            std::net::TcpStream::connect(&probe).is_ok()
        })
        .unwrap();
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
