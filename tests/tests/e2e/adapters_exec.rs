//! `stagepass exec` and the docker helper's success path: fresh tokens in a child's
//! environment (`STAGEPASS_TOKEN_<PROFILE>`) plus the AWS variables.

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{Agent, Home, free_port, run_with_stdin, stagepass_bin};

const TOKEN: &str = "token-of-the-ci-profile";

fn config(port: u16) -> String {
    format!(
        r#"
[api]
port = {port}

[profiles.ci-bot]
grant = "env"
token_env = "STAGEPASS_TEST_CI_TOKEN"

[aws.dev]
profile = "ci-bot"
role_arn = "arn:aws:iam::123456789012:role/dev"

[docker.registries]
"registry.example:5000" = {{ profile = "ci-bot", username = "robot" }}
"#
    )
}

#[test]
fn exec_without_profiles_sets_the_aws_variables() {
    let port = free_port();
    let home = Home::new(&config(port));
    let out = home.run(
        &[
            "exec",
            "--",
            "sh",
            "-c",
            "printf '%s\\n%s\\n' \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\"",
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "http://127.0.0.1:{port}/v1/aws/credentials/dev\n{}\n",
            home.api_secret().display()
        )
    );
}

#[test]
fn exec_with_agent_down_does_not_run_the_command() {
    let home = Home::new(&config(free_port()));
    let marker = home.path().join("ran");
    let out = home.run(
        &[
            "exec",
            "--profile",
            "ci-bot",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stagepass doctor"));
    assert!(
        !marker.exists(),
        "the command ran although no token was available"
    );
}

#[test]
fn exec_of_a_missing_command_is_127() {
    let home = Home::new(&config(free_port()));
    let out = home.run(&["exec", "--", "/nonexistent/tool"], b"");
    assert_eq!(out.status.code(), Some(127), "{out:?}");
}

#[test]
fn exec_puts_the_token_in_the_documented_variable_and_docker_gets_it() {
    let home = Home::new(&config(free_port()));
    let _agent = Agent::start_with_env(&home, &[("STAGEPASS_TEST_CI_TOKEN", TOKEN)]);
    let out = home.run(
        &[
            "exec",
            "--profile",
            "ci-bot",
            "--",
            "sh",
            "-c",
            "printf %s \"$STAGEPASS_TOKEN_CI_BOT\"",
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), TOKEN);

    let link = home.path().join("docker-credential-stagepass");
    std::os::unix::fs::symlink(stagepass_bin(), &link).unwrap();
    let mut c = home.command(&link);
    c.arg("get");
    let out = run_with_stdin(c, b"https://registry.example:5000/v2/\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{{\"ServerURL\":\"https://registry.example:5000/v2/\",\"Username\":\"robot\",\"Secret\":\"{TOKEN}\"}}\n"
        )
    );
}

/// With the agent running: an unknown profile and a profile whose login is gone fail at
/// once in each tool's convention, naming the fix.
#[test]
fn unknown_profile_and_login_required_name_the_fix_in_each_tool() {
    let port = free_port();
    let home = Home::new(&format!(
        r#"
[api]
port = {port}

[profiles.corp]
grant = "device"
issuer = "http://127.0.0.1:9"
client_id = "stagepass-cli"

[[git.hosts]]
host = "127.0.0.1:9"
profile = "corp"

[docker.registries]
"registry.example" = "corp"
"#
    ));
    let _agent = Agent::start(&home);

    // kubectl plugin: non-zero exit and a message.
    let out = home.run(&["kube-credential", "corp"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stagepass login corp"), "{err}");
    let out = home.run(&["kube-credential", "ghost"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not configured"));

    // git: no credential, one line.
    let out = home.run(
        &["git-credential", "get"],
        b"protocol=http\nhost=127.0.0.1:9\n\n",
    );
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("stagepass login corp"), "{err}");

    // docker: the protocol's plain message on stdout, exit 1.
    let link = home.path().join("docker-credential-stagepass");
    std::os::unix::fs::symlink(stagepass_bin(), &link).unwrap();
    let mut c = home.command(&link);
    c.arg("get");
    let out = run_with_stdin(c, b"registry.example\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let msg = String::from_utf8(out.stdout).unwrap();
    assert!(msg.contains("stagepass login corp"), "{msg}");

    // exec: the command does not run.
    let out = home.run(&["exec", "--profile", "corp", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stagepass login corp"));
}
