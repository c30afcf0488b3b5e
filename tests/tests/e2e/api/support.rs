//! Shared by the API and CLI end-to-end tests: the real `stagepass agent` binary and the
//! real test IdP (`tests/peers/idp.mjs`) as child processes in private temp dirs, raw HTTP
//! over loopback TCP and the Unix socket, and the OpenAPI checker.
//!
//! Every child is stopped by PID on drop; its log stays in the temp dir and is printed in
//! assertion messages. Waits are hang guards only (generous, never a pass/fail threshold).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Hang guard for anything we wait on.
pub const GUARD: Duration = Duration::from_secs(60);

pub use stagepass_e2e::support::repo_root;

/// The built `stagepass` binary (the shared harness finds it).
pub fn bin() -> PathBuf {
    stagepass_e2e::support::stagepass_bin().unwrap()
}

/// Runs a future to completion on a fresh current-thread runtime (the tests are sync).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The shared harness's test IdP on a free loopback port, stopped on drop.
pub fn start_idp() -> stagepass_e2e::Idp {
    block_on(stagepass_e2e::Idp::start(
        stagepass_e2e::IdpOptions::default(),
    ))
    .unwrap()
}

/// Sends `sig` to one of our children by pid.
#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (hang guard) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        signal(self.child.id(), libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A private home for one agent: config, state and runtime dirs.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Home {
    pub fn new(config_toml: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_toml).unwrap();
        Home { dir, config }
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("xdg-run/stagepass")
    }

    /// A `stagepass` command with this home's environment and nothing else of ours.
    pub fn cmd(&self) -> Command {
        self.cmd_of(&bin())
    }

    /// [`Home::cmd`] running `program` (another copy of a binary) instead of `stagepass`.
    pub fn cmd_of(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_RUNTIME_DIR", self.dir.path().join("xdg-run"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("STAGEPASS_CONFIG", &self.config)
            .env("RUST_LOG", "stagepass=debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs a CLI command to completion (hang guard) and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        wait_output(child)
    }
}

/// Waits for a child's output with the hang guard.
pub fn wait_output(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(GUARD) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("command hung (pid {pid})");
        }
    }
}

/// A running agent.
pub struct Agent {
    pub home: Home,
    pub proc: Proc,
    pub port: u16,
    pub secret: String,
}

impl Agent {
    /// Starts `stagepass agent` and waits until `/healthz` answers on the socket.
    pub fn start(config_toml: &str) -> Agent {
        Self::start_env(config_toml, &[])
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_env(config_toml: &str, env: &[(&str, &str)]) -> Agent {
        Self::start_in(Home::new(config_toml), env)
    }

    /// Stops the agent (SIGTERM) and gives its home back, for a restart with the same state.
    #[allow(dead_code)] // not every test binary restarts an agent
    pub fn stop(self) -> Home {
        let Agent { home, mut proc, .. } = self;
        proc.terminate();
        home
    }

    /// Starts `stagepass agent` in an existing home (a restart keeps the store).
    pub fn start_in(home: Home, env: &[(&str, &str)]) -> Agent {
        let log = home.dir.path().join("agent.log");
        let child = home
            .cmd()
            .envs(env.iter().copied())
            .arg("agent")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(home.dir.path().join("agent.err")).unwrap())
            .spawn()
            .unwrap();
        let mut proc = Proc {
            child,
            log: home.dir.path().join("agent.err"),
        };
        let run = home.runtime_dir();
        let end = Instant::now() + GUARD;
        loop {
            if let Ok(Some(st)) = proc.child.try_wait() {
                panic!("agent exited early ({st}); log:\n{}", proc.log_text());
            }
            let endpoint = std::fs::read(run.join("endpoint.json")).ok();
            let secret = std::fs::read_to_string(run.join("api-secret")).ok();
            if let (Some(ep), Some(secret)) = (endpoint, secret) {
                let ep: serde_json::Value = serde_json::from_slice(&ep).unwrap();
                let port = ep["port"].as_u64().unwrap() as u16;
                let health = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
                let r = if ep["socket"].is_null() {
                    tcp_request(port, health)
                } else {
                    unix_request(&run.join("agent.sock"), health)
                };
                if r.as_ref().is_ok_and(|r| r.status == 200) {
                    return Agent {
                        home,
                        proc,
                        port,
                        secret,
                    };
                }
            }
            assert!(
                Instant::now() < end,
                "agent not ready; log:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.home.runtime_dir().join("agent.sock")
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    /// A request head with our Host and secret, plus `extra` header lines.
    pub fn head(&self, method: &str, path: &str, extra: &[&str]) -> String {
        let mut h = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n",
            self.port, self.secret
        );
        for e in extra {
            h.push_str(e);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h
    }

    /// Sends a raw request over TCP and reads the answer.
    pub fn tcp(&self, raw: &str) -> Resp {
        tcp_request(self.port, raw)
            .unwrap_or_else(|e| panic!("request failed: {e}; log:\n{}", self.log()))
    }

    /// GET with the secret over TCP.
    pub fn get(&self, path: &str) -> Resp {
        self.tcp(&self.head("GET", path, &[]))
    }

    /// POST of a JSON body with the secret over TCP.
    #[allow(dead_code)] // not every test binary posts
    pub fn post_json(&self, path: &str, body: &str) -> Resp {
        let head = self.head(
            "POST",
            path,
            &[
                "Content-Type: application/json",
                "Connection: close",
                &format!("Content-Length: {}", body.len()),
            ],
        );
        self.tcp(&format!("{head}{body}"))
    }
}

/// Polls `f` every 100 ms until it gives a value (hang guard: [`GUARD`]).
#[allow(dead_code)] // not every test binary polls
pub fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + GUARD;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "condition not met within {GUARD:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A parsed HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    #[allow(dead_code)] // not every test binary reads text
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn with_close(raw: &str) -> String {
    // Ask the server to close after answering so reading to EOF ends.
    match raw.strip_suffix("\r\n\r\n") {
        Some(head) if !head.to_ascii_lowercase().contains("connection:") => {
            format!("{head}\r\nConnection: close\r\n\r\n")
        }
        _ => raw.to_string(),
    }
}

pub fn tcp_request(port: u16, raw: &str) -> std::io::Result<Resp> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(GUARD))?;
    s.write_all(with_close(raw).as_bytes())?;
    read_resp(&mut s)
}

pub fn unix_request(path: &Path, raw: &str) -> std::io::Result<Resp> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(GUARD))?;
    s.write_all(with_close(raw).as_bytes())?;
    read_resp(&mut s)
}

fn read_resp(s: &mut impl Read) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_resp(&buf).ok_or_else(|| {
        std::io::Error::other(format!(
            "bad HTTP answer: {:?}",
            String::from_utf8_lossy(&buf)
        ))
    })
}

pub fn parse_resp(buf: &[u8]) -> Option<Resp> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    })
}

/// Checks answers against `agent/openapi.yaml`: the status is documented for the route and
/// method, and a JSON body matches the documented schema (types, required fields, enums).
pub struct OpenApi {
    doc: yaml_rust2::Yaml,
}

impl OpenApi {
    pub fn load() -> OpenApi {
        let text = std::fs::read_to_string(repo_root().join("agent/openapi.yaml")).unwrap();
        let mut docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
        OpenApi {
            doc: docs.remove(0),
        }
    }

    /// Every `(path template, method)` the document describes.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_hash().unwrap() {
            for (method, _) in item.as_hash().unwrap() {
                let m = method.as_str().unwrap();
                if m != "parameters" {
                    out.push((path.as_str().unwrap().to_string(), m.to_string()));
                }
            }
        }
        out
    }

    /// Panics with a precise message when `resp` does not match the document.
    pub fn check(&self, template: &str, method: &str, resp: &Resp) {
        let op = &self.doc["paths"][template][method];
        assert!(!op.is_badvalue(), "{method} {template} is not documented");
        let r = &op["responses"][resp.status.to_string().as_str()];
        assert!(
            !r.is_badvalue(),
            "{method} {template} answered {} which is not documented",
            resp.status
        );
        let r = self.resolve(r);
        let content = &r["content"];
        if let Some(schema) = content["application/json"]["schema"]
            .as_hash()
            .map(|_| &content["application/json"]["schema"])
        {
            let ct = resp.header("content-type").unwrap_or("");
            assert!(
                ct.starts_with("application/json"),
                "{method} {template}: content-type {ct}"
            );
            let body = resp.json();
            self.check_value(
                schema,
                &body,
                &format!("{method} {template} {}", resp.status),
            );
        } else if !content["text/plain"].is_badvalue() {
            let ct = resp.header("content-type").unwrap_or("");
            assert!(
                ct.starts_with("text/plain"),
                "{method} {template}: content-type {ct}"
            );
        }
    }

    /// Panics when `value` does not match `#/components/schemas/{name}`.
    pub fn check_schema(&self, name: &str, value: &serde_json::Value) {
        let schema = &self.doc["components"]["schemas"][name];
        assert!(!schema.is_badvalue(), "no schema {name}");
        self.check_value(schema, value, name);
    }

    fn resolve<'a>(&'a self, node: &'a yaml_rust2::Yaml) -> &'a yaml_rust2::Yaml {
        match node["$ref"].as_str() {
            Some(r) => {
                let mut cur = &self.doc;
                for part in r.trim_start_matches("#/").split('/') {
                    cur = &cur[part];
                }
                assert!(!cur.is_badvalue(), "dangling $ref {r}");
                self.resolve(cur)
            }
            None => node,
        }
    }

    fn check_value(&self, schema: &yaml_rust2::Yaml, v: &serde_json::Value, at: &str) {
        let schema = self.resolve(schema);
        let types: Vec<&str> = match &schema["type"] {
            yaml_rust2::Yaml::String(s) => vec![s.as_str()],
            yaml_rust2::Yaml::Array(a) => a.iter().filter_map(|t| t.as_str()).collect(),
            _ => vec![],
        };
        if !types.is_empty() {
            let ok = types.iter().any(|t| match *t {
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                "null" => v.is_null(),
                _ => false,
            });
            assert!(ok, "{at}: {v} is not of type {types:?}");
        }
        if let (Some(allowed), Some(s)) = (schema["enum"].as_vec(), v.as_str()) {
            assert!(
                allowed.iter().any(|a| a.as_str() == Some(s)),
                "{at}: {s:?} is not one of {allowed:?}"
            );
        }
        if let Some(obj) = v.as_object() {
            for req in schema["required"].as_vec().into_iter().flatten() {
                let k = req.as_str().unwrap();
                assert!(
                    obj.contains_key(k),
                    "{at}: required field {k:?} missing in {v}"
                );
            }
            if let Some(props) = schema["properties"].as_hash() {
                for (k, sub) in props {
                    let k = k.as_str().unwrap();
                    if let Some(val) = obj.get(k) {
                        self.check_value(sub, val, &format!("{at}.{k}"));
                    }
                }
            }
        }
        if let (Some(items), Some(arr)) = (
            schema["items"].as_hash().map(|_| &schema["items"]),
            v.as_array(),
        ) {
            for (i, item) in arr.iter().enumerate() {
                self.check_value(items, item, &format!("{at}[{i}]"));
            }
        }
    }
}
