//! Signing in to Backstage as the user (`grant = "authorization-code"`) against the bed's
//! real `@backstage/plugin-auth-backend`: authorize -> approve (the browser's path, with
//! alice's Backstage token) -> redirect to the agent's listener -> code exchange -> refresh
//! -> agent restart -> refresh with no prompt; the pasted-URL path, state and replay checks,
//! `status` showing the user entity and its ownership, logout revoking at `/v1/revoke`, and
//! two workspaces of one user.

use super::support::{self, Agent, Config, Home, Profile};
use stagepass_e2e::{Backstage, Bed};
use std::io::{BufRead, Write};
use std::process::Stdio;

fn bed() -> Bed {
    support::block_on(Bed::get()).unwrap()
}

/// An agent config with profile `bs` signing in to the bed's Backstage with `client_id` on
/// one of that static client's free redirect ports (other test areas add their parts).
pub(crate) fn config(bed: &Bed, client_id: &str) -> Config {
    config_on(&bed.backstage, client_id)
}

/// [`config`] signing in to Backstage `bs` (a test's private one).
pub(crate) fn config_on(bs: &Backstage, client_id: &str) -> Config {
    let port = bs
        .oauth_client(client_id)
        .unwrap()
        .free_redirect_port()
        .expect("a free redirect port of the static client");
    Config::agent_on_ephemeral_port().profile(
        "bs",
        Profile::authorization_code(&bs.auth_issuer(), client_id)
            .redirect_port(port)
            .scopes(&["openid", "offline_access"]),
    )
}

/// The stored grant record of profile `bs` (the test reads its own sandbox's file store),
/// asserted private (0600).
fn stored_grant(home: &Home) -> serde_json::Value {
    use std::os::unix::fs::PermissionsExt;
    let file = home.grant_file("bs");
    let mode = std::fs::metadata(&file)
        .expect("a stored grant for bs")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the grant file is private");
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

/// The stored refresh token of profile `bs`.
pub(crate) fn stored_refresh_token(home: &Home) -> String {
    stored_grant(home)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Replaces the stored refresh token of profile `bs` (the agent stopped), keeping the rest
/// of the record and its 0600 mode.
fn put_stored_refresh_token(home: &Home, refresh_token: &str) {
    let mut v = stored_grant(home);
    v["refresh_token"] = serde_json::json!(refresh_token);
    std::fs::write(home.grant_file("bs"), serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(stored_refresh_token(home), refresh_token);
}

fn profile_status(a: &Agent) -> serde_json::Value {
    let out = a.home.run(&["status", "--json"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "bs")
        .cloned()
        .unwrap()
}

/// Starts a sign-in through the API (no CLI), approves it as `user` and lets the "browser"
/// follow the redirect to the agent's listener. Returns the redirect address.
pub(crate) fn sign_in_headless(bed: &Bed, a: &Agent, user: &str) -> String {
    sign_in_headless_on(bed, &bed.backstage, a, user)
}

/// [`sign_in_headless`] at Backstage `bs` (a test's private one, trusting the bed's IdP).
pub(crate) fn sign_in_headless_on(bed: &Bed, bs: &Backstage, a: &Agent, user: &str) -> String {
    let started = a.post_json("/v1/login/bs", "{}");
    assert_eq!(started.status, 202, "{}", started.text());
    let url = started.json()["verification_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let token = support::block_on(bs.sign_in(&bed.idp, user)).unwrap();
    let redirect = support::block_on(bs.approve(&url, &token)).unwrap();
    let page = support::block_on(reqwest::get(&redirect)).unwrap();
    assert_eq!(page.status(), 200, "{}", a.log());
    redirect
}

/// `stagepass login bs` running, with its stdin, the lines it printed up to the
/// authorization URL, the rest of its output to come, and that URL.
struct Login {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    seen: Vec<String>,
    url: String,
}

fn start_login(a: &Agent) -> Login {
    let mut cmd = a.home.command_of(a.home.bin());
    cmd.args(["login", "bs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let url = loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "login printed no URL: {seen:?}");
        let line = line.trim_end().to_string();
        seen.push(line.clone());
        if line.contains("/v1/authorize?") {
            break line.trim().to_string();
        }
    };
    Login {
        child,
        stdin,
        stdout,
        seen,
        url,
    }
}

impl Login {
    /// Waits for the command to end, asserts it logged in, and returns what it printed.
    fn logged_in(self, a: &Agent) -> Vec<String> {
        let Login {
            child,
            stdin,
            stdout,
            mut seen,
            ..
        } = self;
        drop(stdin);
        let out = stagepass_e2e::home::wait_output_after_read(child, stdout).unwrap();
        let rest: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert!(
            out.status.success(),
            "{seen:?} {rest:?} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            a.log()
        );
        assert!(rest.iter().any(|l| l.contains("bs: logged in")), "{rest:?}");
        seen.extend(rest);
        seen
    }
}

/// Asserts Backstage refuses refreshing `refresh_token` of client `stagepass` (400,
/// `invalid_grant`); `why` says what that shows.
fn refused_at_backstage(bed: &Bed, refresh_token: &str, why: &str) {
    let (status, answer) =
        support::block_on(bed.backstage.refresh_answer("stagepass", refresh_token)).unwrap();
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant")),
        "{why}: {}",
        answer["error_description"]
    );
}

fn access_token_sub(a: &Agent) -> String {
    let tok = a.home.run(&["token", "bs"]).unwrap();
    assert!(
        tok.status.success(),
        "{}",
        String::from_utf8_lossy(&tok.stderr)
    );
    let t = String::from_utf8_lossy(&tok.stdout).trim().to_string();
    let claims = stagepass::broker::jwt::claims(&t).unwrap();
    claims["sub"].as_str().unwrap().to_string()
}

#[test]
fn sign_in_as_alice_then_restart_refreshes_with_no_prompt_and_logout_revokes() {
    let bed = bed();
    let a = Agent::start(&config(&bed, "stagepass"));
    assert_eq!(profile_status(&a)["state"], "login_required");

    // 1. The loopback path, driven by `stagepass login` as a person would.
    let login = start_login(&a);
    let url = login.url.clone();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let alice = support::block_on(bed.backstage.sign_in(&bed.idp, "alice")).unwrap();
    let redirect = support::block_on(bed.backstage.approve(&url, &alice)).unwrap();
    let page = support::block_on(reqwest::get(&redirect)).unwrap();
    assert_eq!(page.status(), 200);
    let printed = login.logged_in(&a);
    assert!(
        printed
            .iter()
            .any(|l| l.contains("cannot reach") && l.contains("paste the address")),
        "the pasted-URL path is announced in one line: {printed:?}"
    );

    // The same answer again (a replay) is refused: the listener is gone, and pasted, the
    // sign-in it belonged to has ended.
    assert!(
        support::block_on(reqwest::get(&redirect)).is_err(),
        "the redirect listener closed after its sign-in"
    );
    let r = a.post_json(
        "/v1/login/bs/callback",
        &serde_json::json!({ "url": redirect }).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("already ended"), "{}", r.text());

    // Tokens are alice's; status shows her entity and ownership, never a token.
    assert_eq!(access_token_sub(&a), "user:default/alice");
    let st = profile_status(&a);
    assert_eq!(st["state"], "valid", "{st}");
    assert_eq!(st["identity"]["sub"], "user:default/alice", "{st}");
    let ent: Vec<&str> = st["identity"]["ent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(ent.contains(&"group:default/team-a"), "{st}");
    let rt1 = stored_refresh_token(&a.home);

    // 2. A wrong state is refused and does not cancel the pending sign-in; the right
    // address, pasted (the browser Codespace path), completes it.
    let started = a.post_json("/v1/login/bs", "{}");
    let url2 = started.json()["verification_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let redirect2 = support::block_on(bed.backstage.approve(&url2, &alice)).unwrap();
    let forged = redirect2
        .split("&state=")
        .next()
        .map(|head| format!("{head}&state=forged"))
        .unwrap();
    let r = a.post_json(
        "/v1/login/bs/callback",
        &serde_json::json!({ "url": forged }).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("state does not match"), "{}", r.text());
    let r = a.post_json(
        "/v1/login/bs/callback",
        &serde_json::json!({ "url": redirect2 }).to_string(),
    );
    assert_eq!(r.status, 200, "{} {}", r.text(), a.log());
    assert_eq!(r.json()["state"], "complete");
    let rt2 = stored_refresh_token(&a.home);
    assert_ne!(rt1, rt2, "a new sign-in stores its own refresh token");

    // A refresh while running: the cached token invalidated through the API (as git's
    // `erase` does), the next fetch refreshes at Backstage, and the stored refresh token
    // rotates.
    let t1 = a.get("/v1/token/bs");
    assert_eq!(t1.status, 200, "{}", t1.text());
    let at1 = t1.json()["access_token"].as_str().unwrap().to_string();
    let fingerprint = stagepass::secret::Secret::new(at1.clone()).fingerprint();
    let r = a.post_json(
        "/v1/token/bs/invalidate",
        &serde_json::json!({ "fingerprint": fingerprint }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t2 = a.get("/v1/token/bs");
    assert_eq!(t2.status, 200, "{}", t2.text());
    let at2 = t2.json()["access_token"].as_str().unwrap().to_string();
    assert_ne!(at1, at2, "the invalidated token was replaced by a refresh");
    assert_eq!(access_token_sub(&a), "user:default/alice");
    let rt2b = stored_refresh_token(&a.home);
    assert_ne!(rt2, rt2b, "the refresh rotated the stored refresh token");

    // 3. Restart: the stored login is refreshed at boot, with no prompt.
    let home = a.stop();
    // Positive control of the logout check below, on this session while the agent is
    // stopped: the stored refresh token refreshes at Backstage (200, rotated), the one it
    // replaced is then refused, and the new one goes back into the store for the boot.
    let (status, answer) =
        support::block_on(bed.backstage.refresh_answer("stagepass", &rt2b)).unwrap();
    assert_eq!(
        status, 200,
        "a live refresh token refreshes: {}",
        answer["error"]
    );
    let rt_live = answer["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt_live, rt2b, "Backstage rotates refresh tokens");
    refused_at_backstage(&bed, &rt2b, "a rotated-away refresh token is refused");
    put_stored_refresh_token(&home, &rt_live);
    let a = Agent::start_in(home, &[]);
    let st = support::eventually("the sign-in status", || {
        let st = profile_status(&a);
        (st["state"] == "valid" && st["token_fingerprint"].is_string()).then_some(st)
    });
    assert_eq!(st["identity"]["sub"], "user:default/alice", "{st}");
    assert!(a.log().contains("boot refresh done"), "{}", a.log());
    let rt3 = stored_refresh_token(&a.home);
    assert_ne!(rt_live, rt3, "the boot refresh rotated the stored token");
    assert_eq!(access_token_sub(&a), "user:default/alice");

    // 4. Logout revokes at Backstage: the stored refresh token no longer works there.
    let out = a.home.run(&["logout", "bs"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused_at_backstage(&bed, &rt3, "the refresh token was revoked at /v1/revoke");
}

#[test]
fn a_pasted_address_completes_login_from_the_terminal() {
    let bed = bed();
    let a = Agent::start(&config(&bed, "stagepass"));
    let mut login = start_login(&a);
    let bob = support::block_on(bed.backstage.sign_in(&bed.idp, "bob")).unwrap();
    // The browser cannot reach the listener: the user copies the address it ended on.
    let redirect = support::block_on(bed.backstage.approve(&login.url, &bob)).unwrap();
    writeln!(login.stdin, "{redirect}").unwrap();
    login.logged_in(&a);
    assert_eq!(access_token_sub(&a), "user:default/bob");
}

#[test]
fn two_workspaces_with_their_own_clients_stay_signed_in() {
    let bed = bed();
    let one = Agent::start(&config(&bed, "stagepass"));
    let two = Agent::start(&config(&bed, "stagepass-ws2"));
    // carol: no other test signs in as her, so nothing else ends her sessions.
    sign_in_headless(&bed, &one, "carol");
    sign_in_headless(&bed, &two, "carol");
    // Both restart and refresh: the second sign-in did not end the first.
    for a in [one, two] {
        let a = Agent::start_in(a.stop(), &[]);
        let st = support::eventually("the sign-in status", || {
            let st = profile_status(&a);
            (st["state"] == "valid" && st["token_fingerprint"].is_string()).then_some(st)
        });
        assert_eq!(st["identity"]["sub"], "user:default/carol", "{st}");
    }
}

#[test]
fn a_second_sign_in_with_the_same_client_is_named_as_the_cause() {
    let bed = bed();
    let one = Agent::start(&config(&bed, "stagepass"));
    let other = Agent::start(&config(&bed, "stagepass"));
    sign_in_headless(&bed, &one, "dave");
    sign_in_headless(&bed, &other, "dave");
    // Backstage keeps one session per user and client: the first workspace's is gone.
    let one = Agent::start_in(one.stop(), &[]);
    let st = support::eventually("the sign-in status", || {
        let st = profile_status(&one);
        (st["state"] == "login_required").then_some(st)
    });
    let reason = st["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("another workspace"), "{st}");
}

/// One configuration for every workspace, as one devcontainer.json gives every Codespace of a
/// repository: the client id is the bed's metadata-document URL template with `{workspace}`,
/// and no redirect port (such clients get any loopback port).
fn config_per_workspace_client(bed: &Bed) -> Config {
    let template = bed.backstage.client_metadata_template().unwrap();
    Config::agent_on_ephemeral_port().profile(
        "bs",
        Profile::authorization_code(&bed.backstage.auth_issuer(), template)
            .scopes(&["openid", "offline_access"]),
    )
}

/// The client id the stored grant of profile `bs` was issued to.
fn stored_client_id(home: &Home) -> String {
    stored_grant(home)["client_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Restarts `a`, waits for its boot refresh, and checks it is still `user`'s login, with a
/// rotated refresh token (so Backstage accepted the old one) and the same client id.
fn restarted_and_refreshed(a: Agent, user: &str) -> Agent {
    let (rt, client) = (stored_refresh_token(&a.home), stored_client_id(&a.home));
    let a = Agent::start_in(a.stop(), &[]);
    // Settled: a refreshed token, or a refusal (then the assert below says why).
    let st = support::eventually("the sign-in status after a restart", || {
        let st = profile_status(&a);
        let refreshed = st["state"] == "valid" && st["token_fingerprint"].is_string();
        let refused = st["state"] == "login_required" || st["state"] == "error";
        (refreshed || refused).then_some(st)
    });
    assert_eq!(st["state"], "valid", "{st}\n{}", a.log());
    assert_eq!(
        st["identity"]["sub"],
        format!("user:default/{user}"),
        "{st}"
    );
    assert_ne!(
        stored_refresh_token(&a.home),
        rt,
        "the boot refresh rotated"
    );
    assert_eq!(
        stored_client_id(&a.home),
        client,
        "the workspace keeps its client"
    );
    a
}

#[test]
fn two_workspaces_of_one_configuration_each_get_a_client_and_stay_signed_in() {
    let bed = bed();
    let cfg = config_per_workspace_client(&bed);
    let one = Agent::start(&cfg);
    let two = Agent::start(&cfg);
    // erin: no other test signs in as her.
    sign_in_headless(&bed, &one, "erin");
    sign_in_headless(&bed, &two, "erin");

    // Each workspace is its own client: the template filled with its own id (0600 in its
    // state dir), a URL the admin's one allowed pattern covers.
    let (c1, c2) = (stored_client_id(&one.home), stored_client_id(&two.home));
    assert_ne!(c1, c2, "two workspaces, two clients");
    let template = bed.backstage.client_metadata_template().unwrap();
    let (head, tail) = template.split_once("{workspace}").unwrap();
    for (a, c) in [(&one, &c1), (&two, &c2)] {
        use std::os::unix::fs::PermissionsExt;
        let id_file = a.home.state_dir().join("workspace-id");
        let id = std::fs::read_to_string(&id_file).unwrap();
        assert_eq!(*c, format!("{head}{id}{tail}"));
        let mode = std::fs::metadata(&id_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the workspace id is private");
    }

    // The second sign-in did not end the first: both refresh after a restart.
    let one = restarted_and_refreshed(one, "erin");
    let two = restarted_and_refreshed(two, "erin");
    // Signing in again in one workspace does not end the other's session either.
    sign_in_headless(&bed, &one, "erin");
    let two = restarted_and_refreshed(two, "erin");
    let one = restarted_and_refreshed(one, "erin");
    drop(two);

    // When such a client's session does end (here: its refresh token spent elsewhere), status
    // does not blame another workspace, which cannot share this client.
    let rt = stored_refresh_token(&one.home);
    let spent = support::block_on(bed.backstage.refresh_status(&c1, &rt)).unwrap();
    assert_eq!(
        spent, 200,
        "Backstage refreshes a metadata-document client by its URL"
    );
    let one = Agent::start_in(one.stop(), &[]);
    let st = support::eventually("the refused sign-in", || {
        let st = profile_status(&one);
        (st["state"] == "login_required" && st["reason"].is_string()).then_some(st)
    });
    let reason = st["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("stagepass login bs"), "{st}");
    assert!(!reason.contains("another workspace"), "{st}");
}
