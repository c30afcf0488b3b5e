//! The PID-reuse guard with a really reused pid.
//!
//! In a fresh user + pid namespace (`unshare --user --map-root-user --pid --fork
//! --mount-proc`) the next pid can be chosen by writing `/proc/sys/kernel/ns_last_pid`.
//! The real `stagepass agent` runs in that namespace. A Python client connects to its Unix
//! socket (SO_PEERCRED records the connecting process's pid P), hands the connection to a
//! child and exits; the child makes `sleep` start with pid P, then sends a token request on
//! the inherited connection. The policy allows `sleep`: a caller mistaken for the process
//! now holding pid P would get the token. The agent must see that this process started after
//! the connection was made and refuse it as unidentified, saying the pid was reused.
//! Controls in the same namespace: a Python caller is identified (and refused by the
//! sleep-only profile, served by a profile that allows Python).

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{Api, Config, Profile, home, run_with_stdin, stagepass_bin};
use stagepass_e2e::config::{AllowRule, Policy};
use std::process::Command;

const CLIENT: &str = r#"
import json, os, socket, subprocess, sys, time

sock_path, secret_path, out_path = sys.argv[1:4]
secret = open(secret_path).read().strip()

def request(s, path):
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n" % (path, secret)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("connection closed in the head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for l in lines[1:]:
        k, v = l.split(":", 1)
        if k.lower() == "content-length":
            length = int(v)
    while len(body) < length:
        body += s.recv(4096)
    return status, json.loads(body[:length])

def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    return s

result = {}

# Control: this process is identified and the python profile serves it.
s = connect()
result["control"] = {"pid": os.getpid()}
result["control"]["sleep_status"], result["control"]["sleep_body"] = request(s, "/v1/token/sleepers")
result["control"]["py_status"], _ = request(s, "/v1/token/py")
s.close()

"#;

/// The reuse: A connects (and waits until the agent has accepted), forks B which keeps the
/// connection, and exits; once A is reaped, B makes `sleep` start with A's pid and asks.
const CLIENT_REUSE: &str = r#"
go_r, go_w = os.pipe()
res_r, res_w = os.pipe()
a = os.fork()
if a == 0:
    s = connect()
    request(s, "/healthz")
    my_pid = os.getpid()
    b = os.fork()
    if b == 0:
        os.close(go_w)
        os.close(res_r)
        os.read(go_r, 1)          # the parent reaped A: pid my_pid is free
        time.sleep(0.05)          # let the clock tick past the connection's acceptance
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(my_pid - 1))
        sleeper = subprocess.Popen(["sleep", "30"])
        status, body = request(s, "/v1/token/sleepers")
        sleeper.kill()
        sleeper.wait()
        os.write(res_w, json.dumps({"a_pid": my_pid, "sleeper_pid": sleeper.pid,
                                    "status": status, "body": body}).encode())
        os._exit(0)
    os._exit(0)
os.close(go_r)
os.close(res_w)
os.waitpid(a, 0)
os.write(go_w, b"x")
data = b""
while True:
    chunk = os.read(res_r, 65536)
    if not chunk:
        break
    data += chunk
result["reuse"] = json.loads(data)
open(out_path, "w").write(json.dumps(result))
"#;

fn python() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sleep_path() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v sleep"])
        .output()
        .unwrap();
    std::fs::canonicalize(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_caller_whose_pid_is_reused_is_not_mistaken_for_the_new_process() {
    let py = python();
    let sleep = sleep_path();
    // An env profile that only the executable `exe` (named `name`) may have.
    let only = |name: &str, exe: &str| {
        Profile::env("STAGEPASS_TEST_TOKEN").policy(Policy {
            allow: Some(vec![AllowRule::exe(name, &[exe])]),
            ..Policy::default()
        })
    };
    let home = home(
        &Config::new()
            .api(Api {
                tcp: Some(false),
                ..Api::default()
            })
            .profile("sleepers", only("sleep", &sleep))
            .profile("py", only("python", &py)),
    );
    let client = home.path().join("client.py");
    std::fs::write(&client, format!("{CLIENT}{CLIENT_REUSE}")).unwrap();
    let out_file = home.path().join("result.json");
    let runtime = home.runtime_dir();
    let script = format!(
        r#"set -eu
"{bin}" agent >"{home}/agent.log" 2>&1 &
agent=$!
i=0
while [ ! -S "{rt}/agent.sock" ] || [ ! -f "{rt}/api-secret" ]; do
  i=$((i+1)); [ "$i" -lt 400 ] || {{ echo "agent did not start"; cat "{home}/agent.log"; exit 1; }}
  sleep 0.05
done
"{py}" "{client}" "{rt}/agent.sock" "{rt}/api-secret" "{out}"
kill "$agent"
wait "$agent" || true
"#,
        bin = stagepass_bin().unwrap().display(),
        home = home.path().display(),
        rt = runtime.display(),
        client = client.display(),
        out = out_file.display(),
    );
    let mut c = home.command_of(std::path::Path::new("unshare"));
    c.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        &script,
    ])
    .env("STAGEPASS_TEST_TOKEN", "env-token-0123456789-abcdefghijkl");
    let out = run_with_stdin(c, b"");
    let agent_log = std::fs::read_to_string(home.path().join("agent.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "namespace run failed: {}\n{}\nagent log:\n{agent_log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();

    // Controls: a Python caller is identified; the sleep-only profile refuses it, the Python
    // profile serves it.
    let control = &result["control"];
    assert_eq!(control["sleep_status"], 403, "{result}");
    assert_eq!(control["sleep_body"]["error"], "forbidden_caller");
    assert_eq!(control["py_status"], 200, "{result}");

    // The pid really was reused, by sleep, which the policy allows ...
    let reuse = &result["reuse"];
    assert_eq!(
        reuse["sleeper_pid"], reuse["a_pid"],
        "pid not reused: {result}"
    );
    // ... and still the request is refused: the caller is unidentified, not "sleep".
    assert_eq!(reuse["status"], 403, "{result}");
    assert_eq!(reuse["body"]["error"], "forbidden_caller");
    let msg = reuse["body"]["message"].as_str().unwrap();
    assert!(msg.contains("reused"), "{msg}");

    let text = std::fs::read_to_string(home.state_dir().join("audit/audit.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let a_pid = reuse["a_pid"].as_u64().unwrap();
    let reused = recs
        .iter()
        .find(|r| r["caller"]["unidentified"].is_string())
        .unwrap_or_else(|| panic!("no unidentified record: {text}"));
    assert_eq!(
        reused["caller"]["unidentified"],
        format!("pid {a_pid} was reused by another process")
    );
    assert!(reused["caller"]["exe"].is_null(), "{reused}");
    assert_eq!(reused["decision"], "deny");
    assert_eq!(reused["profile"], "sleepers");
    // The control's records name Python with its pid.
    let control_pid = control["pid"].as_u64().unwrap();
    let identified: Vec<_> = recs
        .iter()
        .filter(|r| r["caller"]["pid"] == control_pid)
        .collect();
    assert_eq!(identified.len(), 2, "{text}");
    for r in identified {
        assert_eq!(r["caller"]["exe"], py.as_str());
    }
    assert!(
        !recs.iter().any(|r| r["caller"]["exe"] == sleep.as_str()),
        "{text}"
    );
    assert!(!text.contains("env-token-0123456789"), "{text}");
}
