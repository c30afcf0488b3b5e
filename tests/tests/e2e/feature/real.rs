//! The Feature in real dev containers: the official devcontainer CLI builds and starts them on
//! Debian's `docker.io` (the run's own `dockerd`, see `tests/peers/engine.sh`) from
//! `devcontainer/test/devcontainer.json` and the packaged Feature, in a workspace that is a
//! git checkout with a remote on the test git host, exactly as a user's machine does.
//!
//! The containers use the host's network, so the peers on this machine's loopback (IdP, git
//! host, Backstage) have the same URLs inside and out; nothing is pulled from a registry.
//! `./tests/run` leaves these tests out, loudly, where no engine can run (not root).

use stagepass_e2e::devcontainer::{self, DevContainer, Engine, REMOTE_UID};
use stagepass_e2e::git_host::RepoAuth;
use stagepass_e2e::idp::{AUD_BACKSTAGE, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN};
use stagepass_e2e::support::{free_port, run, unique_name};
use stagepass_e2e::{Backstage, BackstageOptions, GitHost, Idp, IdpOptions, jwt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A hang guard for each wait below, not a performance threshold.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn engine() -> Engine {
    Engine::from_env().unwrap_or_else(|why| panic!("{why}"))
}

/// The Feature packaged from this build's binaries into a temp dir the caller owns (nextest
/// runs each test in its own process, so there is nothing to share).
fn feature_pkg() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pkg = devcontainer::package_feature(dir.path()).unwrap();
    (dir, pkg)
}

/// The repository's own test configuration, as a user's workspace holds it.
fn devcontainer_json() -> String {
    std::fs::read_to_string(
        stagepass_e2e::support::repo_root().join("devcontainer/test/devcontainer.json"),
    )
    .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` every 200 ms until it gives `Some`; panics with the container's diagnostics
/// after [`HANG_GUARD`].
fn wait<T>(dc: &DevContainer, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > HANG_GUARD {
            panic!("timed out waiting for {what}\n{}", dc.diagnostics());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args))
    .unwrap()
}

fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

/// Makes the workspace a checkout of a new repository on the git host holding `files`,
/// `main` pushed and tracking `origin/main`; `.devcontainer/` stays untracked (excluded).
fn checkout(dc: &DevContainer, remote: &str, files: &[(&str, String)]) {
    let ws = dc.workspace();
    git(&ws, &["init", "-q", "-b", "main"]);
    std::fs::write(ws.join(".git/info/exclude"), ".devcontainer/\n").unwrap();
    for (path, body) in files {
        std::fs::write(ws.join(path), body).unwrap();
    }
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "initial"]);
    git(&ws, &["remote", "add", "origin", remote]);
    git(&ws, &["push", "-q", "-u", "origin", "main"]);
    dc.chown_workspace().unwrap();
}

/// `stagepass login backstage` in the container (a terminal in VS Code); the IdP approves
/// the user code as alice on its own (`auto_approve`), as a browser would.
fn login(dc: &DevContainer) {
    let out = dc.exec(&["stagepass", "login", "backstage"]).unwrap();
    let t = text(&out);
    assert!(
        out.status.success(),
        "login failed: {t}\n{}",
        dc.diagnostics()
    );
    assert!(t.contains("enter the code"), "{t}");
    assert!(t.contains("backstage: logged in"), "{t}");
}

/// `stagepass token PROFILE` in the container, as a script there runs it.
fn token(dc: &DevContainer, profile: &str) -> Result<String, String> {
    let out = dc
        .docker_exec("vscode", &["stagepass", "token", profile])
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(text(&out))
    }
}

fn status(dc: &DevContainer) -> Option<String> {
    let out = dc.exec(&["stagepass", "status"]).ok()?;
    out.status.success().then(|| text(&out))
}

/// What each test starts: the engine, a runtime for the peers' clients, a git host and an IdP
/// of its own (its call counts are the test's alone) that approves device logins as alice.
struct World {
    engine: Engine,
    pkg: (tempfile::TempDir, PathBuf),
    rt: tokio::runtime::Runtime,
    git_host: GitHost,
    idp: Idp,
}

impl World {
    fn new() -> World {
        let engine = engine();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let git_host = rt.block_on(GitHost::start(None)).unwrap();
        let idp = rt.block_on(Idp::start(IdpOptions::default())).unwrap();
        rt.block_on(idp.auto_approve(Some("alice"))).unwrap();
        World {
            engine,
            pkg: feature_pkg(),
            rt,
            git_host,
            idp,
        }
    }

    /// A workspace for `devcontainer/test/devcontainer.json` with its variables set: the IdP,
    /// a free port, and Backstage and the catalog URL template where given.
    fn container(&self, backstage_url: &str, url_template: &str) -> DevContainer {
        let port = free_port().unwrap().to_string();
        DevContainer::new(
            &self.engine,
            &self.pkg.1,
            &devcontainer_json(),
            &[
                ("STAGEPASS_TEST_BASE_IMAGE", &self.engine.base_image),
                ("STAGEPASS_TEST_ISSUER", self.idp.issuer()),
                ("STAGEPASS_TEST_PORT", &port),
                ("STAGEPASS_TEST_BACKSTAGE_URL", backstage_url),
                ("STAGEPASS_TEST_URL_TEMPLATE", url_template),
            ],
        )
        .unwrap()
    }
}

#[test]
fn catalog_watches_the_workspace_and_a_push_from_the_container_reaches_backstage() {
    let w = World::new();
    let (rt, git_host, idp) = (&w.rt, &w.git_host, &w.idp);
    // A Backstage of its own that processes every 10 minutes: only the agent's push can make
    // the new owner show within the test.
    let bs = rt
        .block_on(Backstage::start(BackstageOptions {
            processing_interval_secs: 600,
            ..BackstageOptions::new(idp.issuer(), git_host.host_port())
        }))
        .unwrap();
    let repo = unique_name("real-dc");
    let name = repo.replace('_', "-");
    let remote = rt
        .block_on(git_host.create_repo(&repo, RepoAuth::None))
        .unwrap();
    let template = format!("{}/raw/{repo}/{{branch}}/{{path}}", git_host.url());
    let mut dc = w.container(bs.url(), &template);
    checkout(
        &dc,
        &remote,
        &[("catalog-info.yaml", component(&name, "team-a"))],
    );
    // Backstage already knows the repository (registered as a url location), owned by team-a.
    let target = git_host.raw_url(&repo, "main", "catalog-info.yaml");
    let reg = rt
        .block_on(bs.register_location(&target, bs.static_token()))
        .unwrap();
    assert_eq!(reg.status, 201, "{:?}", reg.body);
    rt.block_on(bs.wait_for_entity("component", "default", &name, bs.static_token(), HANG_GUARD))
        .unwrap();

    let (up, took) = dc.up(&[]).unwrap();
    println!("devcontainer up (build + start): {took:?}");
    let folder = up.remote_workspace_folder.clone().unwrap();
    // The agent runs as the remote user, never root.
    let agents = wait(&dc, "the agent", || {
        dc.agents().ok().filter(|a| !a.is_empty())
    });
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0].1, REMOTE_UID, "{agents:?}");

    // With no catalog configuration, the agent watches the workspace folder and found its
    // catalog file and entity.
    let s = wait(&dc, "the catalog watching the workspace", || {
        status(&dc).filter(|s| s.contains("catalog: watching"))
    });
    assert!(
        s.contains(&format!("catalog: watching, {folder} (from "))
            && s.contains("1 file(s), 1 entit(ies)"),
        "{s}"
    );

    login(&dc);

    // An owner edit saved in the workspace shows in `stagepass catalog diff`.
    let edit = dc
        .exec(&[
            "sed",
            "-i",
            "s/owner: team-a/owner: team-b/",
            "catalog-info.yaml",
        ])
        .unwrap();
    assert!(edit.status.success(), "{}", text(&edit));
    let diff = wait(&dc, "the owner change in `catalog diff`", || {
        let out = dc.exec(&["stagepass", "catalog", "diff"]).ok()?;
        let t = text(&out);
        (t.contains(&name) && t.contains("team-a") && t.contains("team-b")).then_some(t)
    });
    println!("catalog diff:\n{diff}");

    // `git push` from inside the container: Backstage shows the new owner.
    for cmd in [
        &[
            "git",
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
            "commit",
            "-qam",
            "team-b owns it",
        ][..],
        &["git", "push", "-q", "origin", "main"][..],
    ] {
        let out = dc.exec(cmd).unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}",
            text(&out),
            dc.diagnostics()
        );
    }
    let pushed = Instant::now();
    wait(&dc, "Backstage to show owner team-b", || {
        let e = rt
            .block_on(bs.entity("component", "default", &name, bs.static_token()))
            .ok()??;
        (e["spec"]["owner"] == "team-b").then_some(())
    });
    println!(
        "git push in the container -> new owner in Backstage: {:?}",
        pushed.elapsed()
    );
    // And nothing is left to push.
    // An empty diff, said as such: a failing command or an error text would not count.
    let clean = wait(&dc, "an empty diff", || {
        let out = dc.exec(&["stagepass", "catalog", "diff"]).ok()?;
        let t = text(&out);
        (out.status.success()
            && t.contains("no ownership changes against Backstage")
            && !t.contains("no diff:"))
        .then_some(t)
    });
    println!("catalog diff after the push:\n{clean}");
}

#[test]
fn login_survives_stop_start_and_rebuild_and_a_killed_agent_comes_back() {
    let w = World::new();
    let (rt, idp) = (&w.rt, &w.idp);
    let remote = rt
        .block_on(
            w.git_host
                .create_repo(&unique_name("real-dc-login"), RepoAuth::None),
        )
        .unwrap();
    let mut dc = w.container("", "");
    checkout(&dc, &remote, &[("README", "login test\n".into())]);
    dc.up(&[]).unwrap();
    wait(&dc, "`stagepass status`", || status(&dc));
    login(&dc);
    let jwks = rt.block_on(idp.jwks()).unwrap();
    let first = token(&dc, "backstage").unwrap_or_else(|e| panic!("{e}\n{}", dc.diagnostics()));
    assert_eq!(
        jwt::verify(&first, &jwks, idp.issuer(), AUD_BACKSTAGE).unwrap()["sub"],
        "alice"
    );

    // Stop and start (closing the window, stopping a Codespace): a token, no prompt; the IdP
    // saw no login and at most one refresh (none while the stored access token is before its
    // planned refresh, issue 23; one when that point passed during the stop).
    let no_login_one_refresh = |what: &str| {
        let stats = rt.block_on(idp.stats()).unwrap();
        assert_eq!(stats.device_authorization.requests, 0, "{what}: {stats:?}");
        assert_eq!(
            stats.grant(GRANT_DEVICE_CODE).requests,
            0,
            "{what}: {stats:?}"
        );
        let refresh = stats.grant(GRANT_REFRESH_TOKEN);
        assert!(refresh.requests <= 1, "{what}: {stats:?}");
        assert_eq!(refresh.requests, refresh.ok, "{what}: {stats:?}");
    };
    rt.block_on(idp.reset_stats()).unwrap();
    dc.stop().unwrap();
    let t0 = Instant::now();
    dc.start().unwrap();
    let second = wait(&dc, "a token after start", || token(&dc, "backstage").ok());
    println!("docker start -> first token: {:?}", t0.elapsed());
    assert_eq!(
        jwt::verify(&second, &jwks, idp.issuer(), AUD_BACKSTAGE).unwrap()["sub"],
        "alice"
    );
    no_login_one_refresh("after stop/start");
    // The hooks of the next `up` find the container running and change nothing.
    dc.up(&[]).unwrap();

    // Rebuild: a new container from a new image, the state volume kept.
    let old_id = dc.id().unwrap().to_string();
    let volumes = dc.volumes().to_vec();
    assert!(
        volumes.iter().any(|v| v.starts_with("stagepass-state-")),
        "{volumes:?}"
    );
    rt.block_on(idp.reset_stats()).unwrap();
    dc.up(&["--remove-existing-container"]).unwrap();
    assert_ne!(dc.id().unwrap(), old_id, "the rebuild made a new container");
    assert_eq!(dc.volumes(), &volumes[..], "the same state volume");
    let third = wait(&dc, "a token after the rebuild", || {
        token(&dc, "backstage").ok()
    });
    assert_eq!(
        jwt::verify(&third, &jwks, idp.issuer(), AUD_BACKSTAGE).unwrap()["sub"],
        "alice"
    );
    no_login_one_refresh("after the rebuild");
    let st = dc
        .docker_exec(
            "vscode",
            &[
                "stat",
                "-c",
                "%a %U",
                "/var/lib/stagepass",
                "/var/lib/stagepass/grants",
            ],
        )
        .unwrap();
    assert_eq!(text(&st).trim(), "700 vscode\n700 vscode", "{}", text(&st));

    // The agent killed: the supervisor brings it back.
    let agents = wait(&dc, "the agent", || {
        dc.agents().ok().filter(|a| a.len() == 1)
    });
    let (pid, _) = agents[0];
    let kill = dc
        .docker_exec("vscode", &["sh", "-c", &format!("kill -9 {pid}")])
        .unwrap();
    assert!(kill.status.success(), "{}", text(&kill));
    let back = wait(&dc, "a new agent", || {
        dc.agents().ok().filter(|a| a.len() == 1 && a[0].0 != pid)
    });
    assert_eq!(back[0].1, REMOTE_UID);
    wait(&dc, "a token from the new agent", || {
        token(&dc, "backstage").ok()
    });
}

/// The static client of the bed's Backstage this test signs in with: Backstage keeps one
/// session per user and client, and other tests sign alice in with their own clients at the
/// same time.
const CONTAINER_CLIENT: &str = "stagepass-container";

/// `devcontainer/test/devcontainer.json` with the Feature signing in to Backstage as the user
/// (`backstageClientId` + `backstageRedirectPort`: the `backstage-user` profile). Catalog sync
/// off: its token fetches would be refreshes this test does not count.
fn devcontainer_json_backstage_user(client_id: &str, redirect_port: u16) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&devcontainer_json()).unwrap();
    let opts = v["features"]["./stagepass"].as_object_mut().unwrap();
    opts.insert("backstageClientId".into(), client_id.into());
    opts.insert(
        "backstageRedirectPort".into(),
        redirect_port.to_string().into(),
    );
    opts.insert("catalogSync".into(), false.into());
    serde_json::to_string_pretty(&v).unwrap()
}

fn sub_of(token: &str) -> String {
    stagepass::broker::jwt::claims(token).unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The stored grant of `backstage-user` in the state volume (the file store: the container
/// has no keyring), checked 0600 and owned by the remote user.
fn stored_grant(dc: &DevContainer) -> serde_json::Value {
    let file = "/var/lib/stagepass/grants/backstage-user.json";
    let st = dc
        .docker_exec("vscode", &["stat", "-c", "%a %U", file])
        .unwrap();
    assert_eq!(text(&st).trim(), "600 vscode", "{}", dc.diagnostics());
    let out = dc.docker_exec("vscode", &["cat", file]).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stored_refresh_token(dc: &DevContainer) -> String {
    stored_grant(dc)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many `boot refresh done` lines of `backstage-user` the agent's log holds (the log is
/// in the state volume and survives restarts).
fn boot_refreshes(dc: &DevContainer) -> usize {
    let out = dc
        .docker_exec("vscode", &["cat", "/var/lib/stagepass/agent.log"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("boot refresh done") && l.contains("backstage-user"))
        .count()
}

/// `POST /v1/token/backstage-user/invalidate` at the container's agent (its API on the shared
/// loopback, with the per-boot secret of the remote user), as git's `erase` does after a
/// 401: the next fetch refreshes, and the stored access token is dropped.
fn invalidate(dc: &DevContainer, rt: &tokio::runtime::Runtime, api_port: u16, token: &str) {
    let secret = dc
        .docker_exec("vscode", &["cat", "/tmp/stagepass-1000/api-secret"])
        .unwrap();
    assert!(secret.status.success(), "{}", text(&secret));
    let secret = String::from_utf8_lossy(&secret.stdout).trim().to_string();
    let fingerprint = stagepass::secret::Secret::new(token.to_string()).fingerprint();
    let client = stagepass_e2e::http::client().unwrap();
    // The request is built inside the runtime: the harness client's timeout starts a timer
    // as soon as `send` is called.
    let resp = rt
        .block_on(async {
            client
                .post(format!(
                    "http://127.0.0.1:{api_port}/v1/token/backstage-user/invalidate"
                ))
                .bearer_auth(secret)
                .json(&serde_json::json!({ "fingerprint": fingerprint }))
                .send()
                .await
        })
        .unwrap();
    let status = resp.status();
    let body = rt.block_on(async { resp.text().await }).unwrap_or_default();
    assert_eq!(status, 200, "{body}\n{}", dc.diagnostics());
}

/// What Backstage itself says of `token` (`/v1/userinfo`): the user entity and ownership.
fn userinfo(
    bed: &stagepass_e2e::Bed,
    rt: &tokio::runtime::Runtime,
    token: &str,
) -> serde_json::Value {
    let client = stagepass_e2e::http::client().unwrap();
    let resp = rt
        .block_on(async {
            client
                .get(format!("{}/v1/userinfo", bed.backstage.auth_issuer()))
                .bearer_auth(token)
                .send()
                .await
        })
        .unwrap();
    assert_eq!(resp.status(), 200, "Backstage accepts the user token");
    rt.block_on(async { resp.json().await }).unwrap()
}

/// Issue 22 end to end in a real dev container: the Feature's `backstage-user` profile
/// (authorization code + PKCE against Backstage's own authorization server) signs in from
/// a terminal in the container -> alice approves in "the browser" -> the redirect reaches the
/// container's agent -> code exchange -> a refresh rotates the stored refresh token ->
/// `docker stop`/`start` -> the boot refresh signs the user back in with no prompt -> a
/// rebuild keeps the login in the state volume.
#[test]
fn backstage_user_sign_in_in_the_container_refreshes_after_restart_and_rebuild() {
    let engine = engine();
    let pkg = feature_pkg();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bed = rt.block_on(stagepass_e2e::Bed::get()).unwrap();
    let redirect_port = bed
        .backstage
        .oauth_client(CONTAINER_CLIENT)
        .unwrap()
        .free_redirect_port()
        .expect("a free redirect port of the container's static client");
    let api_port = free_port().unwrap();
    let mut dc = DevContainer::new(
        &engine,
        &pkg.1,
        &devcontainer_json_backstage_user(CONTAINER_CLIENT, redirect_port),
        &[
            ("STAGEPASS_TEST_BASE_IMAGE", &engine.base_image),
            ("STAGEPASS_TEST_ISSUER", bed.idp.issuer()),
            ("STAGEPASS_TEST_PORT", &api_port.to_string()),
            ("STAGEPASS_TEST_BACKSTAGE_URL", bed.backstage.url()),
            ("STAGEPASS_TEST_URL_TEMPLATE", ""),
        ],
    )
    .unwrap();
    dc.chown_workspace().unwrap();
    dc.up(&[]).unwrap();
    wait(&dc, "`stagepass status`", || status(&dc));

    // 1. `stagepass login backstage-user` in a terminal of the container prints the
    // authorization URL and waits for the redirect on the agent's listener.
    let mut login = engine
        .docker()
        .args(["exec", "-u", "vscode", dc.id().unwrap()])
        .args(["stagepass", "login", "backstage-user"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(login.stdout.take().unwrap());
    let mut printed = Vec::new();
    let url = loop {
        let mut line = String::new();
        if !matches!(std::io::BufRead::read_line(&mut stdout, &mut line), Ok(n) if n > 0) {
            panic!("login printed no URL: {printed:?}\n{}", dc.diagnostics());
        }
        let line = line.trim_end().to_string();
        printed.push(line.clone());
        if line.contains("/v1/authorize?") {
            break line.trim().to_string();
        }
    };
    assert!(
        url.starts_with(&format!("{}/v1/authorize?", bed.backstage.auth_issuer())),
        "{url}"
    );
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains(&format!("client_id={CONTAINER_CLIENT}")),
        "{url}"
    );

    // 2. On the host ("the browser"): alice signs in to Backstage and approves; the browser
    // follows the redirect to the loopback listener, which is the container's agent.
    let alice = rt
        .block_on(bed.backstage.sign_in(&bed.idp, "alice"))
        .unwrap();
    let redirect = rt.block_on(bed.backstage.approve(&url, &alice)).unwrap();
    assert!(
        redirect.starts_with(&format!("http://127.0.0.1:{redirect_port}/callback?")),
        "{redirect}"
    );
    let page = rt.block_on(reqwest::get(&redirect)).unwrap();
    assert_eq!(page.status(), 200, "{}", dc.diagnostics());
    let out = stagepass_e2e::home::wait_output_after_read(login, stdout).unwrap();
    let rest: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        out.status.success() && rest.iter().any(|l| l.contains("backstage-user: logged in")),
        "{printed:?} {rest:?} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dc.diagnostics()
    );

    // The code exchange gave alice's tokens: Backstage's userinfo names her and her team.
    let first =
        token(&dc, "backstage-user").unwrap_or_else(|e| panic!("{e}\n{}", dc.diagnostics()));
    assert_eq!(sub_of(&first), "user:default/alice");
    let info = userinfo(&bed, &rt, &first);
    assert_eq!(info["claims"]["sub"], "user:default/alice", "{info}");
    assert!(
        info["claims"]["ent"]
            .as_array()
            .is_some_and(|e| e.iter().any(|g| g == "group:default/team-a")),
        "{info}"
    );
    let grant = stored_grant(&dc);
    assert_eq!(grant["client_id"], CONTAINER_CLIENT, "{}", dc.diagnostics());
    let rt1 = stored_refresh_token(&dc);

    // 3. A refresh while running: the token invalidated at the agent's API, the next
    // `stagepass token` refreshes at Backstage and the stored refresh token rotates.
    invalidate(&dc, &rt, api_port, &first);
    let second =
        token(&dc, "backstage-user").unwrap_or_else(|e| panic!("{e}\n{}", dc.diagnostics()));
    assert_ne!(
        first, second,
        "the invalidated token was replaced by a refresh"
    );
    assert_eq!(sub_of(&second), "user:default/alice");
    let rt2 = stored_refresh_token(&dc);
    assert_ne!(rt1, rt2, "the refresh rotated the stored refresh token");

    // 4. Stop and start (closing the window, stopping a Codespace): the start refreshes the
    // stored login with no prompt (an authorization-code profile keeps no access token at
    // rest, so its boot refresh always runs and would tell of a session ended elsewhere).
    let boots = boot_refreshes(&dc);
    dc.stop().unwrap();
    dc.start().unwrap();
    let third = wait(&dc, "a token after start", || {
        token(&dc, "backstage-user").ok()
    });
    assert_eq!(sub_of(&third), "user:default/alice");
    assert_ne!(third, second, "a fresh token after the start");
    assert_eq!(
        userinfo(&bed, &rt, &third)["claims"]["sub"],
        "user:default/alice"
    );
    assert!(
        boot_refreshes(&dc) > boots,
        "the start refreshed the login with no prompt\n{}",
        dc.diagnostics()
    );
    let rt3 = stored_refresh_token(&dc);
    assert_ne!(
        rt2, rt3,
        "the boot refresh rotated the stored refresh token"
    );

    // 5. Rebuild: a new container from a new image, the login kept in the state volume.
    let old_id = dc.id().unwrap().to_string();
    dc.up(&["--remove-existing-container"]).unwrap();
    assert_ne!(dc.id().unwrap(), old_id, "the rebuild made a new container");
    let fourth = wait(&dc, "a token after the rebuild", || {
        token(&dc, "backstage-user").ok()
    });
    assert_eq!(
        userinfo(&bed, &rt, &fourth)["claims"]["sub"],
        "user:default/alice"
    );
    // The same client's grant, still 0600 and the remote user's on the kept volume.
    assert_eq!(stored_grant(&dc)["client_id"], CONTAINER_CLIENT);
}

#[test]
fn devcontainer_features_test_runs_the_scenarios_on_the_local_base_image() {
    let engine = engine();
    let (dir, pkg) = feature_pkg();
    let out = engine
        .cli()
        .args([
            "features",
            "test",
            "--skip-autogenerated",
            "--log-level",
            "info",
            "-p",
        ])
        .arg(&pkg)
        .env("STAGEPASS_TEST_BASE_IMAGE", &engine.base_image)
        // Its build contexts (~100 MB a scenario) go with the test's temp dir.
        .env("TMPDIR", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        out.status.success(),
        "devcontainer features test failed:\n{t}"
    );
    // Every scenario ran and passed (the CLI prints one line per scenario).
    let scenarios: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pkg.join("test/stagepass/scenarios.json")).unwrap(),
    )
    .unwrap();
    for name in scenarios.as_object().unwrap().keys() {
        assert!(
            t.contains(&format!("Passed:      '{name}'")),
            "{name} did not pass:\n{t}"
        );
    }
}

/// The Feature published by the release command and used by registry reference.
#[path = "real_release.rs"]
mod release;
