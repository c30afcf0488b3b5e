//! kubectl's exec credential plugin end to end: the ExecCredential shape, and the real
//! kubectl (/usr/bin/kubectl) calling a loopback API server that checks the bearer token.

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{
    Api, Config, Home, ManagedProcess, Profile, START_GUARD, free_port, home, run_with_stdin,
    stagepass_bin, start_agent,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "kube-token-from-the-env-profile";

fn config(port: u16) -> Config {
    Config::new()
        .api(Api::port(port))
        .profile("kube", Profile::env("STAGEPASS_TEST_KUBE_TOKEN"))
}

/// A kubeconfig whose only user runs `stagepass kube-credential kube`.
fn kubeconfig(home: &Home, api: &KubeApi) -> PathBuf {
    let path = home.path().join("kubeconfig");
    let text = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {ca}
contexts:
- name: local
  context:
    cluster: local
    user: stagepass
current-context: local
users:
- name: stagepass
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {bin}
      args: ["kube-credential", "kube"]
      interactiveMode: Never
"#,
        bin = stagepass_bin().unwrap().display(),
        server = api.url,
        ca = api.ca.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A loopback HTTPS "API server" (python3's http.server with a fresh self-signed cert; kubectl
/// runs exec plugins only for TLS servers) answering 200 only to `Authorization: Bearer TOKEN`.
/// It logs `AUTH ok` or `AUTH bad` per request (never the token).
struct KubeApi {
    proc: ManagedProcess,
    url: String,
    ca: PathBuf,
}

const KUBE_API_PY: &str = r#"
import http.server, os, ssl, sys
expected = "Bearer " + os.environ["EXPECTED_TOKEN"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == expected
        print("AUTH ok" if ok else "AUTH bad", flush=True)
        body = b'{"probe":"ok"}' if ok else b'{"kind":"Status","code":401}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("READY port=%d" % srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl KubeApi {
    fn start(dir: &Path) -> Self {
        let (cert, key) = (dir.join("kube-cert.pem"), dir.join("kube-key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success(), "openssl: {made:?}");
        let script = dir.join("kube_api.py");
        std::fs::write(&script, KUBE_API_PY).unwrap();
        let mut c = Command::new("python3");
        c.arg("-u")
            .arg(&script)
            .arg(&cert)
            .arg(&key)
            .env("EXPECTED_TOKEN", TOKEN);
        let mut proc = ManagedProcess::spawn("kube api (python https)", c).unwrap();
        let log = proc.log_path().to_path_buf();
        proc.wait_until("ready", START_GUARD, || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("READY port="))
        })
        .unwrap();
        let text = proc.log();
        let port = text
            .split("READY port=")
            .nth(1)
            .and_then(|r| r.lines().next())
            .unwrap()
            .trim()
            .to_string();
        Self {
            proc,
            url: format!("https://127.0.0.1:{port}"),
            ca: cert,
        }
    }

    /// (`AUTH ok` count, `AUTH bad` count) so far.
    fn auth_counts(&self) -> (usize, usize) {
        let t = self.proc.log();
        (t.matches("AUTH ok").count(), t.matches("AUTH bad").count())
    }
}

fn kubectl(home: &Home, kubeconfig: &Path) -> std::process::Output {
    let mut c = home.command_of(Path::new("kubectl"));
    c.args(["--kubeconfig"])
        .arg(kubeconfig)
        .args(["get", "--raw", "/stagepass-probe"]);
    run_with_stdin(c, b"")
}

#[test]
fn agent_down_fails_at_once_with_a_message_naming_the_fix() {
    let home = home(&config(free_port().unwrap()));
    let out = home
        .run_with_stdin(&["kube-credential", "kube"], b"")
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("stagepass doctor"), "{err}");

    // The real kubectl shows our message and fails; the server sees no request.
    let api = KubeApi::start(home.root());
    let kc = kubeconfig(&home, &api);
    let out = kubectl(&home, &kc);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stagepass doctor"), "{err}");
    assert!(err.contains("exit code 69"), "{err}");
    assert_eq!(api.auth_counts(), (0, 0));
}

#[test]
fn wrong_exec_api_version_is_refused() {
    let home = home(&config(free_port().unwrap()));
    let mut c = home.command_of(&stagepass_bin().unwrap());
    c.args(["kube-credential", "kube"]).env(
        "KUBERNETES_EXEC_INFO",
        r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential"}"#,
    );
    let out = run_with_stdin(c, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("v1beta1"));
}

#[test]
fn exec_credential_v1_shape_and_real_kubectl_sends_the_bearer_token() {
    let home = home(&config(free_port().unwrap()));
    let _agent = start_agent(&home, &[("STAGEPASS_TEST_KUBE_TOKEN", TOKEN)]);
    let out = home
        .run_with_stdin(&["kube-credential", "kube"], b"")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v["kind"], "ExecCredential");
    assert_eq!(v["status"]["token"], TOKEN);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["apiVersion", "kind", "status"]);
    if let Some(exp) = v["status"].get("expirationTimestamp") {
        let exp = exp.as_str().unwrap();
        assert!(exp.len() == 20 && exp.ends_with('Z'), "{exp}");
    }

    let api = KubeApi::start(home.root());
    let kc = kubeconfig(&home, &api);
    let out = kubectl(&home, &kc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"probe":"ok"}"#
    );
    let (ok, bad) = api.auth_counts();
    assert!(
        ok >= 1 && bad == 0,
        "requests with our token: {ok}, without: {bad}"
    );
}
