//! `stagepass exec` and the docker helper's success path: fresh tokens in a child's
//! environment (`STAGEPASS_TOKEN_<PROFILE>`) plus the AWS variables.

// Test code: a failed unwrap is a failed test, with its message.
use crate::adapters_support;

use adapters_support::{
    Api, AwsRole, Config, GitHost, Profile, Registry, free_port, home, run_with_stdin,
    stagepass_bin, start_agent,
};

const TOKEN: &str = "token-of-the-ci-profile";

fn config(port: u16) -> Config {
    Config::new()
        .api(Api::port(port))
        .profile("ci-bot", Profile::env("STAGEPASS_TEST_CI_TOKEN"))
        .aws(
            "dev",
            AwsRole::new("ci-bot", "arn:aws:iam::123456789012:role/dev"),
        )
        .docker_registry(
            "registry.example:5000",
            Registry::Full {
                profile: "ci-bot".into(),
                username: Some("robot".into()),
            },
        )
}

#[test]
fn exec_without_profiles_sets_the_aws_variables() {
    let port = free_port().unwrap();
    let home = home(&config(port));
    let out = home.run_with_stdin(
        &[
            "exec",
            "--",
            "sh",
            "-c",
            "printf '%s\\n%s\\n' \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\"",
        ],
        b"",
    ).unwrap();
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
    let home = home(&config(free_port().unwrap()));
    let marker = home.path().join("ran");
    let out = home
        .run_with_stdin(
            &[
                "exec",
                "--profile",
                "ci-bot",
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stagepass doctor"));
    assert!(
        !marker.exists(),
        "the command ran although no token was available"
    );
}

#[test]
fn exec_of_a_missing_command_is_127() {
    let home = home(&config(free_port().unwrap()));
    let out = home
        .run_with_stdin(&["exec", "--", "/nonexistent/tool"], b"")
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
}

#[test]
fn exec_puts_the_token_in_the_documented_variable_and_docker_gets_it() {
    let home = home(&config(free_port().unwrap()));
    let _agent = start_agent(&home, &[("STAGEPASS_TEST_CI_TOKEN", TOKEN)]);
    let out = home
        .run_with_stdin(
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
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), TOKEN);

    let link = home.path().join("docker-credential-stagepass");
    std::os::unix::fs::symlink(stagepass_bin().unwrap(), &link).unwrap();
    let mut c = home.command_of(&link);
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
    let port = free_port().unwrap();
    let home = home(
        &Config::new()
            .api(Api::port(port))
            .profile(
                "corp",
                Profile::device("http://127.0.0.1:9", "stagepass-cli"),
            )
            .git_host(GitHost::new("127.0.0.1:9", "corp"))
            .docker_registry("registry.example", Registry::Profile("corp".into())),
    );
    let _agent = start_agent(&home, &[]);

    // kubectl plugin: non-zero exit and a message.
    let out = home
        .run_with_stdin(&["kube-credential", "corp"], b"")
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stagepass login corp"), "{err}");
    let out = home
        .run_with_stdin(&["kube-credential", "ghost"], b"")
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not configured"));

    // git: no credential, one line.
    let out = home
        .run_with_stdin(
            &["git-credential", "get"],
            b"protocol=http\nhost=127.0.0.1:9\n\n",
        )
        .unwrap();
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("stagepass login corp"), "{err}");

    // docker: the protocol's plain message on stdout, exit 1.
    let link = home.path().join("docker-credential-stagepass");
    std::os::unix::fs::symlink(stagepass_bin().unwrap(), &link).unwrap();
    let mut c = home.command_of(&link);
    c.arg("get");
    let out = run_with_stdin(c, b"registry.example\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let msg = String::from_utf8(out.stdout).unwrap();
    assert!(msg.contains("stagepass login corp"), "{msg}");

    // exec: the command does not run.
    let out = home
        .run_with_stdin(&["exec", "--profile", "corp", "--", "true"], b"")
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stagepass login corp"));
}
