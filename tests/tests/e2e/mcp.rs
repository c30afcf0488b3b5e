//! End to end: the official MCP client (PyPI `mcp`, installed by `tests/install/mcp.sh`)
//! starts `stagepass mcp`, which talks to a running `stagepass agent` whose repository's
//! catalog is registered in a real Backstage (test bed IdP, git host, Backstage).
//!
//! The repository holds `svc/catalog-info.yaml` (component NAME, pushed and registered), a
//! file under `svc/src`, a `tools/` directory no entity owns and `web/catalog-info.yaml`
//! with a finding. The owner of NAME is then changed and pushed, but Backstage is not
//! refreshed: the answers must show files and Backstage disagreeing. After `catalog sync`
//! they agree. Every answer and error is searched for the secrets the test saw.

use crate::support;

use crate::catalog_support::world::{owner, wait_owner};
use serde_json::{Value, json};
use stagepass_e2e::home::wait_output;
use stagepass_e2e::support::{poll_until, unique_name};
use stagepass_e2e::{Backstage, BackstageOptions, Bed, Idp, RepoAuth, Worktree};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::{Agent, Catalog, Config, Profile};

/// Hang guard of every wait (not a performance bound).
const HANG_GUARD: Duration = Duration::from_secs(90);

fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n  system: shop\n"
    )
}

/// The Python of the MCP client venv.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("STAGEPASS_MCP_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("STAGEPASS_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/stagepass-test")
        });
    let p = cache.join("mcp-client/current/bin/python");
    assert!(
        p.exists(),
        "{} missing: run tests/install/mcp.sh (tests/run does)",
        p.display()
    );
    p
}

/// A private Backstage with a long processing interval, so only the agent's pushes explain
/// a change of owner there.
async fn private_backstage(bed: &Bed) -> Backstage {
    Backstage::start(BackstageOptions {
        processing_interval_secs: 600,
        ..BackstageOptions::new(bed.idp.issuer(), bed.git.host_port())
    })
    .await
    .unwrap()
}

/// Runs the MCP client against `stagepass mcp` with the agent's environment; returns the
/// driver's JSON document and its raw stdout+stderr (searched for secrets).
fn drive(agent: &Agent, steps: &Value) -> (Value, String) {
    let steps_file = agent
        .home
        .root()
        .join(format!("steps-{}.json", unique_name("s")));
    std::fs::write(&steps_file, steps.to_string()).unwrap();
    let driver = stagepass_e2e::support::repo_root().join("tests/tests/e2e/mcp/driver.py");
    // The agent's environment (its home, config and runtime dir), at the default log level.
    let child = agent
        .home
        .command_of(&python())
        .arg(&driver)
        .arg(&steps_file)
        .arg(agent.home.bin())
        .arg("mcp")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "MCP driver failed: {stderr}\n{stdout}\nagent log:\n{}",
        agent.log()
    );
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("driver output is not JSON ({e}): {stdout}\n{stderr}"));
    (doc, format!("{stdout}\n{stderr}"))
}

/// The structured answer of a successful tool call step.
fn answer(step: &Value) -> &Value {
    assert!(
        step["ok"]["isError"] == json!(false),
        "tool call failed: {step}"
    );
    &step["ok"]["structuredContent"]
}

fn mcp_error(step: &Value, code: i64, contains: &str) {
    assert_eq!(step["error"]["code"], json!(code), "{step}");
    let msg = step["error"]["message"].as_str().unwrap();
    assert!(msg.contains(contains), "{msg:?} lacks {contains:?}");
}

fn post(agent: &Agent, path: &str) -> support::Resp {
    agent.tcp(&agent.head("POST", path, &["Content-Length: 0"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_reads_ownership_from_files_and_backstage_and_never_a_secret() {
    let bed = Bed::get().await.unwrap();
    let bs = private_backstage(&bed).await;
    let name = unique_name("payments");

    // The repository, pushed with `main` tracking `origin/main`.
    let repo_name = unique_name("mcp");
    let url = bed
        .git
        .create_repo(&repo_name, RepoAuth::None)
        .await
        .unwrap();
    let wt = Worktree::init().unwrap();
    wt.write("svc/catalog-info.yaml", &component(&name, "team-a"))
        .unwrap();
    wt.write("svc/src/main.rs", "fn main() {}\n").unwrap();
    wt.write("tools/build.sh", "#!/bin/sh\n").unwrap();
    wt.write(
        "web/catalog-info.yaml",
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: web\nspec:\n  type: website\n  lifecycle: production\n",
    )
    .unwrap();
    wt.commit_all("initial").unwrap();
    wt.git(&["remote", "add", "origin", &url]).unwrap();
    wt.git(&["push", "--quiet", "-u", "origin", "main"])
        .unwrap();
    let raw_base = format!("{}/raw/{repo_name}", bed.git.url());

    let secrets_dir = tempfile::tempdir().unwrap();
    let secret_file = secrets_dir.path().join("ci-secret");
    std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();
    // A profile whose secret file is missing: its failure reason names the file, which the
    // MCP server must not relay.
    let missing_file = secrets_dir.path().join("missing-secret");
    let issuer = bed.idp.issuer();
    let ci = |secret: &Path| Profile::ci_for_backstage(issuer, secret);
    let config = Config::agent_on_ephemeral_port()
        .profile("ci", ci(&secret_file))
        .profile("broken", ci(&missing_file))
        .profile("dev", Profile::device_for_backstage(issuer))
        .catalog(Catalog {
            url_template: Some(format!("{raw_base}/{{branch}}/{{path}}")),
            retry_max_ms: Some(1000),
            ..Catalog::pushing(&wt.path(), bs.url(), "ci")
        });
    let agent = tokio::task::block_in_place(|| Agent::start(&config));
    poll_until(
        "the catalog watching",
        HANG_GUARD,
        Duration::from_millis(50),
        || {
            let s = agent.get("/v1/catalog").json();
            async move { Ok((s["state"] == "watching").then_some(())) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", agent.get("/v1/catalog").json()));

    // Register through the agent (`catalog sync`), as a developer would.
    let r = post(&agent, "/v1/catalog/sync");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    wait_owner(&bs, &name, "team-a").await;

    let broken = agent.get("/v1/token/broken");
    assert_ne!(broken.status, 200);
    assert!(
        agent.get("/v1/status").json()["profiles"]
            .to_string()
            .contains(&missing_file.display().to_string()),
        "the agent's own status names the file; MCP must redact it"
    );

    // A device login, so whoami has an ID token's claims to show.
    let subject = unique_name("alice");
    let r = post(&agent, "/v1/login/dev");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let user_code = r.json()["user_code"].as_str().unwrap().to_string();
    bed.idp.approve(&user_code, &subject).await.unwrap();
    poll_until(
        "the device login",
        HANG_GUARD,
        Duration::from_millis(100),
        || {
            let st = agent.get("/v1/login/dev").json();
            async move { Ok((st["state"] == "complete").then_some(())) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", agent.get("/v1/login/dev").json()));

    // The owner changes and is pushed, but not to the tracked remote ref (a push by URL), so
    // the agent does not refresh Backstage: the change is pushed, not yet refreshed.
    wt.write("svc/catalog-info.yaml", &component(&name, "team-b"))
        .unwrap();
    wt.commit_all("hand payments to team-b").unwrap();
    wt.push(&url, "main").unwrap();
    assert_eq!(owner(&bs, &name).await.as_deref(), Some("team-a"));

    let entity = format!("component:default/{name}");
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call", "name": "who_owns", "arguments": {"path": "svc/src/main.rs"}},
        {"op": "call", "name": "who_owns", "arguments": {"entity": name}},
        {"op": "call", "name": "who_owns", "arguments": {"path": "tools/build.sh"}},
        {"op": "call", "name": "list_entities", "arguments": {}},
        {"op": "call", "name": "validate_catalog", "arguments": {}},
        {"op": "call", "name": "ownership_diff", "arguments": {}},
        {"op": "call", "name": "whoami", "arguments": {}},
        {"op": "list_resources"},
        {"op": "read", "uri": "catalog:///svc/catalog-info.yaml"},
        // Bad input: each an MCP error, and the next step is still answered.
        {"op": "call", "name": "who_owns", "arguments": {"path": "../../etc/passwd"}},
        {"op": "call", "name": "who_owns", "arguments": {"path": 42}},
        {"op": "raw", "method": "tools/call", "params": {"arguments": {}}},
        {"op": "call", "name": "who_owns", "arguments": {"entity": "component:default/no-such-thing"}},
        {"op": "call", "name": "no_such_tool", "arguments": {}},
        {"op": "read", "uri": "catalog:///../outside.yaml"},
        {"op": "call", "name": "list_entities", "arguments": {}},
    ]);
    let (doc, raw) = drive(&agent, &steps);
    let s = doc["steps"].as_array().unwrap();
    assert_eq!(s.len(), steps.as_array().unwrap().len(), "{doc}");
    assert_eq!(doc["server"]["name"], "stagepass");

    let tools: Vec<&str> = s[0]["ok"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "who_owns",
            "list_entities",
            "validate_catalog",
            "ownership_diff",
            "whoami",
            "my_entities"
        ]
    );

    // A file resolves to the nearest entity; files and Backstage disagree.
    let by_path = answer(&s[1]);
    assert_eq!(by_path["entity"], json!(entity), "{by_path}");
    assert_eq!(by_path["file"], "svc/catalog-info.yaml");
    assert_eq!(by_path["owner_in_files"], "group:team-b");
    assert_eq!(by_path["owner_in_backstage"], "group:team-a");
    assert_eq!(by_path["differs"], true);
    let by_ref = answer(&s[2]);
    assert_eq!(by_ref["entity"], json!(entity));
    assert_eq!(by_ref["owner_in_backstage"], "group:team-a");
    // No entity owns tools/: said so, not an error.
    let none = answer(&s[3]);
    assert!(none["entity"].is_null(), "{none}");
    assert!(
        none["message"]
            .as_str()
            .unwrap()
            .contains("no catalog entity owns tools/build.sh"),
        "{none}"
    );

    let list = answer(&s[4]);
    assert_eq!(list["count"], 1, "only the valid entity: {list}");
    let e = &list["entities"][0];
    assert_eq!(e["entity"], json!(entity));
    assert_eq!(e["kind"], "Component");
    assert_eq!(e["owner"], "group:team-b");
    assert_eq!(e["lifecycle"], "production");
    assert_eq!(e["system"], "shop");

    // Same findings as `stagepass catalog check` run at the repository root.
    let v = answer(&s[5]);
    assert_eq!(v["valid"], false);
    // In a home of its own: with no config, as a developer runs it in a fresh clone.
    let check = stagepass_e2e::Home::new()
        .unwrap()
        .command(["catalog", "check"])
        .current_dir(wt.path())
        .output()
        .unwrap();
    let cli_lines: Vec<String> = String::from_utf8_lossy(&check.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let mcp_lines: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap().to_string())
        .collect();
    assert!(!mcp_lines.is_empty());
    assert_eq!(mcp_lines, cli_lines);
    assert!(
        mcp_lines[0].starts_with("web/catalog-info.yaml:"),
        "{mcp_lines:?}"
    );

    let diff = answer(&s[6]);
    let changes = diff["changes"].as_array().unwrap();
    assert!(
        changes.contains(&json!({
            "change": "owner_changed",
            "entity": entity,
            "from": "group:team-a",
            "to": "group:team-b"
        })),
        "{diff}"
    );

    let me = answer(&s[7]);
    let profiles = me["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 3, "{me}");
    assert_eq!(profiles[0]["profile"], "broken");
    assert!(
        profiles[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot read client secret file [redacted]"),
        "{me}"
    );
    assert_eq!(profiles[1]["profile"], "ci");
    assert!(
        profiles[1]["subject"].is_null(),
        "no ID token in client credentials: {me}"
    );
    assert_eq!(profiles[2]["profile"], "dev");
    assert_eq!(profiles[2]["state"], "valid", "{me}");
    assert_eq!(profiles[2]["subject"], json!(subject), "{me}");

    let resources = s[8]["ok"]["resources"].as_array().unwrap();
    let uris: Vec<&str> = resources
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            "catalog:///svc/catalog-info.yaml",
            "catalog:///web/catalog-info.yaml"
        ]
    );
    let text = s[9]["ok"]["contents"][0]["text"].as_str().unwrap();
    let file: Value = serde_json::from_str(text).unwrap();
    assert_eq!(file["entities"][0]["entity"], json!(entity));
    assert_eq!(file["entities"][0]["definition"]["spec"]["owner"], "team-b");

    mcp_error(&s[10], -32602, "outside the repository");
    mcp_error(&s[11], -32602, "invalid arguments");
    assert!(s[12]["error"]["code"].is_i64(), "{}", s[12]);
    mcp_error(
        &s[13],
        -32602,
        "unknown entity component:default/no-such-thing",
    );
    mcp_error(&s[14], -32602, "unknown tool");
    mcp_error(&s[15], -32602, "outside the repository");
    assert_eq!(answer(&s[16])["count"], 1, "still serving after errors");

    // Once the tracked ref sees the push (a fetch) and `catalog sync` runs, Backstage holds
    // the new owner and the difference is gone.
    wt.git(&["fetch", "--quiet", "origin"]).unwrap();
    let r = post(&agent, "/v1/catalog/sync");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    wait_owner(&bs, &name, "team-b").await;
    let (doc2, raw2) = drive(
        &agent,
        &json!([{"op": "call", "name": "who_owns", "arguments": {"path": "svc"}}]),
    );
    let after = answer(&doc2["steps"][0]);
    assert_eq!(after["owner_in_backstage"], "group:team-b", "{after}");
    assert_eq!(after["differs"], false);

    // Nothing secret crossed MCP: not the token the agent holds for Backstage, not the API
    // secret or its file, not the client secret or its file, no Authorization header.
    let token = agent.get("/v1/token/ci").json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let dev_token = agent.get("/v1/token/dev").json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let runtime = agent.home.runtime_dir();
    let forbidden = [
        token.as_str(),
        dev_token.as_str(),
        agent.secret.trim(),
        Idp::DEFAULT_CLIENT_SECRET,
        &secret_file.display().to_string(),
        &missing_file.display().to_string(),
        &runtime.join("api-secret").display().to_string(),
        "api-secret",
        bs.static_token(),
        "Bearer",
        "authorization",
        "Authorization",
    ];
    for out in [&raw, &raw2] {
        for f in forbidden {
            assert!(!f.is_empty());
            assert!(!out.contains(f), "MCP output contains {f:?}");
        }
    }
}

/// Issue 22: `stagepass mcp` with a profile signed in to Backstage as alice (its own
/// authorization server, `grant = "authorization-code"`, headless approval): `whoami` shows
/// her user entity and ownership refs, `my_entities` lists what she owns in the repository
/// and judges a list of entities given to it ("which of these do I own"), and no answer
/// carries her Backstage access or refresh token.
#[test]
fn whoami_and_my_entities_answer_for_the_backstage_user_and_never_her_tokens() {
    use crate::catalog_support::world::Repo;
    use crate::cli::signin::{config, sign_in_headless, stored_refresh_token};

    let bed = support::block_on(Bed::get()).unwrap();
    let (a, b, mine) = (
        unique_name("team-a-svc"),
        unique_name("team-b-svc"),
        unique_name("alice-tool"),
    );
    let repo = support::block_on(Repo::new(
        &bed,
        &[
            ("a/catalog-info.yaml", component(&a, "team-a")),
            ("b/catalog-info.yaml", component(&b, "team-b")),
            ("m/catalog-info.yaml", component(&mine, "user:alice")),
        ],
    ));
    // Its own static client: Backstage keeps one session per user and client, and the
    // sign-in tests run as alice at the same time.
    let config = config(&bed, "stagepass-mcp").catalog(Catalog {
        url_template: Some(format!("{}/{{branch}}/{{path}}", repo.raw_base)),
        ..Catalog::pushing(&repo.wt.path(), bed.backstage.url(), "bs")
    });
    let agent = Agent::start(&config);
    sign_in_headless(&bed, &agent, "alice");
    let token_of = |agent: &Agent| {
        let r = agent.get("/v1/token/bs");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_string()
    };
    let access_before = token_of(&agent);
    let refresh_before = stored_refresh_token(&agent.home);

    let r = |name: &str| format!("component:default/{name}");
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call", "name": "whoami", "arguments": {}},
        {"op": "call", "name": "my_entities", "arguments": {}},
        {"op": "call", "name": "my_entities", "arguments": {
            "entities": [a, r(&b), "component:default/not-in-this-repo", r(&mine)]
        }},
        {"op": "call", "name": "my_entities", "arguments": {"entities": ["a:/b"]}},
        {"op": "call", "name": "my_entities", "arguments": {"entities": "not a list"}},
    ]);
    let (doc, raw) = drive(&agent, &steps);
    let s = doc["steps"].as_array().unwrap();

    // The schema documents the optional list.
    let tools = s[0]["ok"]["tools"].as_array().unwrap();
    let my = tools.iter().find(|t| t["name"] == "my_entities").unwrap();
    assert_eq!(
        my["inputSchema"]["properties"]["entities"]["type"], "array",
        "{my}"
    );

    let me = answer(&s[1]);
    let bs = me["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "bs")
        .unwrap_or_else(|| panic!("no bs profile: {me}"));
    assert_eq!(bs["grant"], "authorization-code", "{me}");
    assert_eq!(bs["state"], "valid", "{me}");
    assert_eq!(bs["subject"], "user:default/alice", "{me}");
    let refs: Vec<&str> = bs["ownership_refs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(refs.contains(&"group:default/team-a"), "{me}");
    assert!(!refs.contains(&"group:default/team-b"), "{me}");

    let owned = answer(&s[2]);
    assert_eq!(owned["user"], "user:default/alice", "{owned}");
    assert_eq!(owned["profile"], "bs", "{owned}");
    let listed: std::collections::BTreeSet<&str> = owned["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["entity"].as_str())
        .collect();
    assert_eq!(
        listed,
        [r(&a).as_str(), r(&mine).as_str()].into_iter().collect(),
        "team-a's and her own, not team-b's: {owned}"
    );
    assert_eq!(owned["count"], 2, "{owned}");

    let judged = answer(&s[3]);
    let verdicts: Vec<(&str, &Value)> = judged["judged"]
        .as_array()
        .unwrap_or_else(|| panic!("no judged list: {judged}"))
        .iter()
        .map(|j| (j["entity"].as_str().unwrap(), &j["owned"]))
        .collect();
    assert_eq!(
        verdicts,
        [
            (r(&a).as_str(), &json!(true)),
            (r(&b).as_str(), &json!(false)),
            ("component:default/not-in-this-repo", &Value::Null),
            (r(&mine).as_str(), &json!(true)),
        ],
        "{judged}"
    );
    assert_eq!(judged["count"], 2, "{judged}");
    mcp_error(&s[4], -32602, "a:/b");
    mcp_error(&s[5], -32602, "invalid arguments");

    // Never a token: not her Backstage access token, not her refresh token (before or
    // after the run), not the API secret, no Authorization header.
    assert!(raw.contains("authorization-code"), "whoami names the grant");
    let access_after = token_of(&agent);
    let refresh_after = stored_refresh_token(&agent.home);
    let forbidden = [
        access_before.as_str(),
        access_after.as_str(),
        refresh_before.as_str(),
        refresh_after.as_str(),
        agent.secret.trim(),
        "Bearer",
        // A header, not the grant's name (`authorization-code`, which whoami shows).
        "authorization:",
        "Authorization:",
        "\"authorization\"",
    ];
    for (i, f) in forbidden.iter().enumerate() {
        assert!(!f.is_empty());
        // Named by its place in the list: the message must not print a token either.
        assert!(!raw.contains(f), "MCP output contains forbidden text #{i}");
    }
    // The refresh token's parts too (Backstage's are `<session id>.<secret>`).
    for part in refresh_before.split('.').filter(|p| p.len() >= 16) {
        assert!(
            !raw.contains(part),
            "MCP output contains part of the refresh token"
        );
    }
}
