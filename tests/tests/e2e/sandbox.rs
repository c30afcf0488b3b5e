//! The sandbox (`./tests/sandbox`) end to end, non-interactively, running the walkthrough's
//! own commands.
//!
//! The commands are not copied here: they are read from the walkthrough (the fenced
//! `sh step=NAME` blocks of README.md between `<!-- sandbox:begin -->` and
//! `<!-- sandbox:end -->`) and run as written, each in a fresh `sh` after the `env` step, with each step's
//! effect asserted. A step the test does not know, or a known step missing from the
//! walkthrough, fails the test, so the walkthrough cannot drift from what is checked.

// Test code: a failed unwrap is a failed test, with its message.
use stagepass_e2e::support::{private_tempdir, repo_root, stagepass_bin};
use stagepass_e2e::{GitHost, Idp, ManagedProcess};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Hang guard of every wait (the sandbox starts Backstage; this is not a performance bound).
const HANG_GUARD: Duration = Duration::from_secs(180);

/// The steps the walkthrough must contain, in order; each has its assertion below.
const STEPS: &[&str] = &[
    "env", "status", "login", "approve", "token", "sync", "owner-a", "push", "owner-b", "fetch",
];

/// One fenced `sh step=NAME` block.
#[derive(Debug)]
struct Step {
    name: String,
    script: String,
}

/// The walkthrough's steps: the README between the sandbox markers.
fn walkthrough() -> (PathBuf, Vec<Step>) {
    let path = repo_root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let section = readme
        .split_once("<!-- sandbox:begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- sandbox:end -->"))
        .map(|(inside, _)| inside.to_string())
        .expect("README.md has a <!-- sandbox:begin --> ... <!-- sandbox:end --> section");
    (path, parse_steps(&section))
}

/// Fenced blocks whose info string is `sh step=NAME`; other blocks are prose.
fn parse_steps(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut current: Option<Step> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(step) = current.as_mut() {
            if trimmed.starts_with("```") {
                steps.push(current.take().unwrap());
            } else {
                step.script.push_str(line);
                step.script.push('\n');
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            let mut words = info.split_whitespace();
            if words.next() == Some("sh")
                && let Some(name) = words.find_map(|w| w.strip_prefix("step="))
            {
                current = Some(Step {
                    name: name.to_string(),
                    script: String::new(),
                });
            }
        }
    }
    assert!(current.is_none(), "unterminated step block");
    steps
}

#[test]
fn step_blocks_parse_with_their_names_and_lines() {
    let text =
        "prose\n```sh\n./not-a-step\n```\n```sh step=a\none\ntwo\n```\n```sh step=b\nthree\n```\n";
    let steps = parse_steps(text);
    let got: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.script.as_str()))
        .collect();
    assert_eq!(got, vec![("a", "one\ntwo\n"), ("b", "three\n")]);
}

/// Where the steps run: the sandbox's TMPDIR (so `${TMPDIR:-/tmp}/stagepass-sandbox-UID`
/// in the walkthrough names this test's sandbox) and a private HOME for git.
struct Shell {
    tmp: PathBuf,
    home: PathBuf,
    env_script: String,
}

impl Shell {
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("set -e\n{}\n{script}", self.env_script))
            .env("TMPDIR", &self.tmp)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("STAGEPASS_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_RUNTIME_DIR");
        c
    }

    fn run(&self, step: &Step) -> Output {
        let out = self
            .command(&step.script)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "step {}: {}\n--- stdout\n{}--- stderr\n{}",
            step.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `step` until `ok` accepts its stdout (hang guard), for effects that land a
    /// moment later (Backstage processes a new location or a refresh asynchronously).
    async fn run_until(&self, step: &Step, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let out = self.run(step);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && ok(&stdout) {
                return stdout;
            }
            assert!(
                started.elapsed() < HANG_GUARD,
                "step {} never showed the expected effect; last stdout: {stdout}",
                step.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pid_alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

fn field(json: &serde_json::Value, path: &[&str]) -> serde_json::Value {
    path.iter().fold(json.clone(), |v, k| v[*k].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_against_the_sandbox() {
    let (source, steps) = walkthrough();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        STEPS,
        "the steps of {} differ from the ones this test checks; update both together",
        source.display()
    );
    let step = |name: &str| steps.iter().find(|s| s.name == name).unwrap();

    let tmp = private_tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let uid = rustix::process::getuid().as_raw();
    let sandbox_dir = tmp.path().join(format!("stagepass-sandbox-{uid}"));

    // The sandbox itself, as the README starts it, plus --non-interactive.
    let mut cmd = Command::new(repo_root().join("tests/sandbox"));
    cmd.arg("--non-interactive")
        .env("TMPDIR", tmp.path())
        .env("STAGEPASS_BIN", stagepass_bin().unwrap());
    let started = Instant::now();
    let mut sandbox = ManagedProcess::spawn("sandbox", cmd).unwrap();
    let ready = sandbox
        .wait_for_line("ready", HANG_GUARD, |l| {
            l.starts_with("STAGEPASS_SANDBOX_READY ")
        })
        .await
        .unwrap();
    eprintln!(
        "measured: sandbox usable {:?} after start",
        started.elapsed()
    );
    let env_sh = PathBuf::from(ready.trim_start_matches("STAGEPASS_SANDBOX_READY ").trim());
    assert_eq!(env_sh, sandbox_dir.join("env.sh"));
    let bed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox_dir.join("bed.json")).unwrap()).unwrap();
    let idp = Idp::connect(
        field(&bed, &["idp", "url"]).as_str().unwrap(),
        field(&bed, &["idp", "control_url"]).as_str(),
    )
    .unwrap();
    let git = GitHost::connect(field(&bed, &["git", "url"]).as_str().unwrap()).unwrap();

    // env: the later steps run after it; on its own it points at this sandbox.
    let shell = Shell {
        tmp: tmp.path().to_path_buf(),
        home: home.clone(),
        env_script: step("env").script.clone(),
    };
    let probe = Step {
        name: "env (probe)".into(),
        script: "printf '%s\\n' \"$PWD\" \"$(command -v stagepass)\" \"$SANDBOX_BACKSTAGE\"\n"
            .into(),
    };
    let out = shell.run(&probe);
    assert!(out.status.success());
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(Path::new(&lines[0]), sandbox_dir.join("work"));
    assert_eq!(Path::new(&lines[1]), sandbox_dir.join("bin/stagepass"));
    assert_eq!(
        lines[2],
        field(&bed, &["backstage", "url"]).as_str().unwrap()
    );

    // status: two profiles, nobody logged in yet.
    let out = shell.run(step("status"));
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("backstage") && text.contains("login_required"),
        "{text}"
    );
    assert!(text.contains("git") && text.contains("exchange"), "{text}");

    // login waits; approve (as the walkthrough's third terminal) completes it.
    let mut login = ManagedProcess::spawn("login", shell.command(&step("login").script)).unwrap();
    let code_line = login
        .wait_for_line("device code shown", HANG_GUARD, |l| {
            l.contains("user_code=")
        })
        .await
        .unwrap();
    let code: String = code_line
        .rsplit("user_code=")
        .next()
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    assert_eq!(idp.pending_user_codes().await.unwrap(), vec![code.clone()]);
    let out = shell.run(step("approve"));
    assert!(out.status.success());
    assert!(stdout(&out).contains(&format!("approved {code} as alice")));
    login
        .wait_for_line("logged in", HANG_GUARD, |l| l == "backstage: logged in")
        .await
        .unwrap();
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(s) = login.try_exit_status() {
            break s;
        }
        assert!(Instant::now() < deadline, "login never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");

    // token: a JWT for Backstage, signed by the sandbox IdP, for alice.
    let out = shell.run(step("token"));
    assert!(out.status.success());
    let token = stdout(&out).trim().to_string();
    let claims = stagepass_e2e::jwt::verify(
        &token,
        &idp.jwks().await.unwrap(),
        idp.issuer(),
        "urn:stagepass:backstage",
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");

    // sync registers the one catalog file; Backstage then shows owner team-a.
    let out = shell.run(step("sync"));
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("1 push(es) queued"),
        "{}",
        stdout(&out)
    );
    shell
        .run_until(step("owner-a"), |s| s.trim() == r#""owner":"team-a""#)
        .await;

    // push: through the credential helper only (the repository needs a git-audience token).
    let before = git.stats().await.unwrap();
    let out = shell.run(step("push"));
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("main -> main"),
        "the push did not update main"
    );
    let after = git.stats().await.unwrap();
    assert_eq!(after.pushes, before.pushes + 1, "{before:?} -> {after:?}");
    let pushed_at = Instant::now();
    shell
        .run_until(step("owner-b"), |s| s.trim() == r#""owner":"team-b""#)
        .await;
    eprintln!(
        "measured: new owner visible in Backstage {:?} after the push",
        pushed_at.elapsed()
    );

    // fetch: reading through the helper sees the pushed commit.
    let out = shell.run(step("fetch"));
    assert!(out.status.success());
    assert!(stdout(&out).contains("owner: team-b"), "{}", stdout(&out));

    // Stop the sandbox like Ctrl-C would (its own PID only): everything it started goes.
    let agent_pid = std::fs::read_to_string(sandbox_dir.join("run/stagepass/endpoint.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["pid"].as_i64())
        .expect("the agent's endpoint file names its pid");
    let peer_pids: Vec<i32> = ["idp", "git", "backstage"]
        .iter()
        .filter_map(|p| field(&bed, &[p, "pid"]).as_i64())
        .chain([field(&bed, &["pid"]).as_i64().unwrap()])
        .chain([agent_pid])
        .map(|p| i32::try_from(p).unwrap())
        .collect();
    assert_eq!(peer_pids.len(), 5);
    let shell_pid =
        rustix::process::Pid::from_raw(i32::try_from(sandbox.pid().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(shell_pid, rustix::process::Signal::INT).unwrap();
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if sandbox.try_exit_status().is_some() && !peer_pids.iter().any(|p| pid_alive(*p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox left processes behind: {:?}",
            peer_pids
                .iter()
                .filter(|p| pid_alive(**p))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sandbox_dir.exists(), "the sandbox dir was not removed");
}

/// `application/x-www-form-urlencoded` of `pairs` (unreserved characters kept, the rest
/// percent-encoded).
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A browser, as far as the IdP's pages need one: cookies kept, redirects not followed.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
}

impl Browser {
    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let resp = req.header("cookie", cookie).send().await.unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_string(), v.to_string());
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (status, location, resp.text().await.unwrap())
    }

    async fn get(&mut self, path: &str) -> (u16, Option<String>, String) {
        let req = self.http.get(self.url(path));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs));
        self.send(req).await
    }
}

/// The sandbox's promise that a login can be approved in a browser: with `--browser-login 1`
/// (what tests/sandbox sets) the IdP's device page, login and consent pages complete a
/// device authorization, and the client gets its tokens.
#[tokio::test]
async fn the_sandbox_idp_device_page_works_in_a_browser() {
    use stagepass_e2e::peer::{Peer, PeerSpec};
    let idp = Peer::spawn(PeerSpec::new("idp", "idp.mjs").arg_pair("--browser-login", "1"))
        .await
        .unwrap();
    let base = idp.url().to_string();
    let mut b = Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: base.clone(),
        cookies: Default::default(),
    };
    // What the agent does: start a device authorization.
    let (status, _, body) = b
        .post(
            "/device/auth",
            &[
                ("client_id", "stagepass-cli"),
                ("scope", "openid offline_access catalog:read"),
                ("resource", "urn:stagepass:backstage"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let auth: serde_json::Value = serde_json::from_str(&body).unwrap();
    let user_code = auth["user_code"].as_str().unwrap();
    let device_code = auth["device_code"].as_str().unwrap();

    // What the person does: open the URL, confirm the code, sign in, consent.
    let (_, _, page) = b
        .get(auth["verification_uri_complete"].as_str().unwrap())
        .await;
    let xsrf = page
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the device page has an xsrf field")
        .to_string();
    let (status, login_at, _) = b
        .post(
            "/device",
            &[
                ("xsrf", &xsrf),
                ("user_code", user_code),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let login_at = login_at.unwrap();
    let (_, _, page) = b.get(&login_at).await;
    assert!(page.contains("name=\"login\""), "a login form: {page}");
    let (_, resume, _) = b
        .post(
            &login_at,
            &[("prompt", "login"), ("login", "alice"), ("password", "any")],
        )
        .await;
    let (_, consent_at, _) = b.get(&resume.unwrap()).await;
    let consent_at = consent_at.unwrap();
    let (_, _, page) = b.get(&consent_at).await;
    assert!(page.contains("value=\"consent\""), "a consent form: {page}");
    let (_, resume, _) = b.post(&consent_at, &[("prompt", "consent")]).await;
    let (status, _, page) = b.get(&resume.unwrap()).await;
    assert_eq!(status, 200);
    assert!(page.contains("Sign-in Success"), "{page}");

    // The client's next poll gets the tokens, for alice.
    let (status, _, body) = b
        .post(
            "/token",
            &[
                ("client_id", "stagepass-cli"),
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let tokens: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        tokens["refresh_token"].is_string(),
        "offline_access was granted: {body}"
    );
    let claims =
        stagepass_e2e::jwt::claims_unverified(tokens["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "urn:stagepass:backstage");
}
