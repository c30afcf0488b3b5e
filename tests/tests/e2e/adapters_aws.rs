//! AWS container credentials end to end: the real AWS CLI (botocore) with only the two
//! container-credential variables from `stagepass env`, the running agent, and moto's STS
//! behind a recording proxy (moto accepts any web identity token, so we check what the
//! agent sent on our side).

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{
    Api, AwsRole, Config, Home, Moto, Profile, form_fields, free_port, home, run_with_stdin,
    start_agent, sts_recording_proxy,
};
use stagepass_e2e::idp::AUD_AWS;
use stagepass_e2e::{Idp, IdpOptions};
use std::collections::BTreeMap;
use std::process::Command;

/// The web identity token the `env` profile serves (moto does not verify it).
const WEB_IDENTITY: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzdGFnZXBhc3MtdGVzdCJ9.sig";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/dev";

/// Role `dev` assumed with the tokens of profile `aws` at `sts`.
fn dev_role(sts: &str) -> AwsRole {
    AwsRole {
        session_name: Some("stagepass-e2e".into()),
        duration_seconds: Some(3600),
        sts_endpoint: Some(format!("{sts}/")),
        ..AwsRole::new("aws", ROLE_ARN)
    }
}

fn config(port: u16, sts: &str) -> Config {
    Config::new()
        .api(Api::port(port))
        .profile("aws", Profile::env("STAGEPASS_TEST_WEB_IDENTITY"))
        .aws("dev", dev_role(sts))
}

/// `export K='V'` lines into a map (values never hold a quote here).
fn parse_exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

#[test]
fn env_prints_the_two_aws_variables_and_the_api_url() {
    let port = free_port().unwrap();
    let home = home(&config(port, "http://127.0.0.1:9"));
    let out = home
        .run_with_stdin(&["env", "--aws-role", "dev"], b"")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = home.api_secret();
    assert_eq!(
        text,
        format!(
            "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='{}'\n\
             export AWS_CONTAINER_CREDENTIALS_FULL_URI='http://127.0.0.1:{port}/v1/aws/credentials/dev'\n\
             export STAGEPASS_API_URL='http://127.0.0.1:{port}'\n",
            secret.display()
        )
    );
    let unknown = home
        .run_with_stdin(&["env", "--aws-role", "prod"], b"")
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no AWS role \"prod\""));
}

/// The web identity is a real IdP token: a client-credentials profile for audience
/// `sts.amazonaws.com`; the API port is 0, so `stagepass env` reads the bound port from the
/// running agent's endpoint file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awscli_gets_credentials_from_the_agent_and_50_calls_make_one_sts_call() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let home = Home::new().unwrap();
    let moto = Moto::start();
    let proxy = sts_recording_proxy(&moto.url);
    let secret_file = home.root().join("client-secret");
    std::fs::write(&secret_file, Idp::DEFAULT_CLIENT_SECRET).unwrap();
    home.write_config(
        &Config::new()
            .api(Api::port(0))
            .profile(
                "aws",
                Profile::client_credentials(idp.issuer(), Idp::CONFIDENTIAL_CLIENT, &secret_file)
                    .audience(AUD_AWS),
            )
            .aws("dev", dev_role(&proxy.url)),
    )
    .unwrap();
    let agent = start_agent(&home, &[]);
    let vars = parse_exports(
        &String::from_utf8(
            home.run_with_stdin(&["env", "--aws-role", "dev"], b"")
                .unwrap()
                .stdout,
        )
        .unwrap(),
    );
    let aws = |args: &[&str]| {
        let mut c = Command::new("aws");
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_CONFIG_FILE", home.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path().join("no-aws-credentials"),
            )
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &vars["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
            )
            .env(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                &vars["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"],
            )
            .args(args)
            .args(["--endpoint-url", &moto.url, "--output", "json"]);
        run_with_stdin(c, b"")
    };
    // The token `stagepass token aws` serves right after the first call, which made the STS
    // call: the agent's first background refresh comes 10-80 % into the token's life, which
    // the 50 calls can outlast on a loaded machine.
    let mut token = String::new();
    for i in 0..50 {
        let out = aws(&["sts", "get-caller-identity"]);
        assert!(
            out.status.success(),
            "call {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let arn = v["Arn"].as_str().unwrap();
        assert!(arn.ends_with("assumed-role/dev/stagepass-e2e"), "{arn}");
        if i == 0 {
            let out = home.run_with_stdin(&["token", "aws"], b"").unwrap();
            assert!(out.status.success(), "{out:?}");
            token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        }
    }
    let calls = proxy.requests();
    assert_eq!(
        calls.len(),
        1,
        "50 CLI invocations, one STS call: {calls:?}"
    );
    let form: BTreeMap<_, _> = form_fields(&calls[0].body).into_iter().collect();
    assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
    // The profile's token went to STS: the one `stagepass token aws` serves, for STS's audience.
    assert_eq!(form["WebIdentityToken"], token);
    // (Not checked as a JWT: the broker sends a non-URI audience such as sts.amazonaws.com as
    // `audience`, not `resource`, and the test IdP then issues an opaque token; moto does
    // not care, a real STS would. Reported to the lead.)
    assert!(!token.is_empty());
    assert_eq!(form["RoleArn"], ROLE_ARN);
    assert_eq!(form["RoleSessionName"], "stagepass-e2e");
    assert_eq!(form["DurationSeconds"], "3600");
    drop(agent);
}

#[test]
fn failures_are_json_with_code_and_message_naming_the_fix() {
    let port = free_port().unwrap();
    let home = home(&config(port, "http://127.0.0.1:9"));
    let _agent = start_agent(&home, &[("STAGEPASS_TEST_WEB_IDENTITY", WEB_IDENTITY)]);
    let secret = std::fs::read_to_string(home.api_secret()).unwrap();
    let get = |role: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Sent the way botocore sends it: the file's content, verbatim.
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/v1/aws/credentials/{role}"))
                .header("Authorization", &secret)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        })
    };
    let (status, body) = get("nope");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "unknown_profile");
    // STS down (nothing listens on port 9): a JSON error naming `stagepass doctor`.
    let (status, body) = get("dev");
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "sts_unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("stagepass doctor")
    );
}
