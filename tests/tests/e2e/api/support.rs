//! Shared by the API and CLI end-to-end tests: the real `stagepass agent` binary and the
//! real test IdP (`tests/peers/idp.mjs`) as child processes in private temp dirs, raw HTTP
//! over loopback TCP and the Unix socket, and the OpenAPI checker.
//!
//! The home, the process wrapper and polling are the harness's (`stagepass_e2e::home`,
//! `process`, `support`); this module adds the running agent with its API secret, raw HTTP
//! and the OpenAPI checker. Waits are hang guards only (never a pass/fail threshold).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use stagepass_e2e::config::{Api, Catalog, Config, Profile};
pub use stagepass_e2e::support::repo_root;
pub use stagepass_e2e::{Home, ManagedProcess};

/// Hang guard for anything we wait on.
pub const GUARD: Duration = Duration::from_secs(60);

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

/// A private home with `config` as its user config.
pub fn home(config: &Config) -> Home {
    Home::with_config(config).unwrap()
}

/// Polls `f` every 100 ms until it gives a value (hang guard: [`GUARD`]).
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    stagepass_e2e::support::wait_until(what, GUARD, Duration::from_millis(100), f).unwrap()
}

/// A running agent.
pub struct Agent {
    pub home: Home,
    pub proc: ManagedProcess,
    pub port: u16,
    pub secret: String,
}

impl Agent {
    /// Starts `stagepass agent` and waits until `/healthz` answers on the socket.
    pub fn start(config: &Config) -> Agent {
        Self::start_env(config, &[])
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_env(config: &Config, env: &[(&str, &str)]) -> Agent {
        Self::start_in(home(config), env)
    }

    /// Stops the agent (SIGTERM) and gives its home back, for a restart with the same state.
    pub fn stop(self) -> Home {
        let Agent { home, mut proc, .. } = self;
        proc.terminate();
        home
    }

    /// Starts `stagepass agent` in an existing home (a restart keeps the store), and waits
    /// past the harness's readiness (endpoint file and secret written) until `/healthz`
    /// answers on the endpoint the agent announced.
    pub fn start_in(home: Home, env: &[(&str, &str)]) -> Agent {
        let mut proc = home.start_agent(env).unwrap();
        let run = home.runtime_dir();
        let mut found = None;
        proc.wait_until("/healthz answering", GUARD, || {
            let endpoint = std::fs::read(run.join("endpoint.json")).ok();
            let secret = std::fs::read_to_string(run.join("api-secret")).ok();
            let (Some(ep), Some(secret)) = (endpoint, secret) else {
                return false;
            };
            let Ok(ep) = serde_json::from_slice::<serde_json::Value>(&ep) else {
                return false;
            };
            let port = ep["port"].as_u64().unwrap() as u16;
            let health = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
            let r = if ep["socket"].is_null() {
                tcp_request(port, health)
            } else {
                unix_request(&run.join("agent.sock"), health)
            };
            if r.as_ref().is_ok_and(|r| r.status == 200) {
                found = Some((port, secret));
            }
            found.is_some()
        })
        .unwrap();
        let (port, secret) = found.unwrap();
        Agent {
            home,
            proc,
            port,
            secret,
        }
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid().unwrap()
    }

    pub fn socket(&self) -> PathBuf {
        self.home.runtime_dir().join("agent.sock")
    }

    pub fn log(&self) -> String {
        self.proc.log()
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
