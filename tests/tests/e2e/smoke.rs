//! Smoke tests proving the test bed is real: a real OIDC device flow whose JWT verifies
//! against the IdP's JWKS, a real Backstage catalog that accepts exactly the right tokens,
//! and a real git push that Backstage reads as a `url` location.

use std::time::Duration;

use stagepass_e2e::idp::{
    AUD_AWS, AUD_BACKSTAGE, AUD_GIT, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE,
    GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN,
};
use stagepass_e2e::support::unique_name;
use stagepass_e2e::{
    Backstage, Bed, Fault, FaultScope, GitHost, Home, Idp, IdpOptions, RepoAuth, Worktree, jwt,
};

/// (a) Device flow with headless approval gives a JWT access token signed by the IdP's
/// key (checked against its JWKS) and a refresh token that rotates.
#[tokio::test]
async fn smoke_device_flow_yields_verifiable_jwt_and_rotating_refresh_token() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();

    let auth = idp
        .start_device_authorization(
            Idp::PUBLIC_CLIENT,
            "openid offline_access catalog:read",
            Some(AUD_BACKSTAGE),
        )
        .await
        .unwrap();
    assert!(auth.interval.is_none(), "oidc-provider sends no interval");

    // Before approval the client is told to keep polling.
    let form = [
        ("grant_type", GRANT_DEVICE_CODE),
        ("client_id", Idp::PUBLIC_CLIENT),
        ("device_code", auth.device_code.as_str()),
    ];
    let pending = idp.token_request(&form, None).await.unwrap().unwrap_err();
    assert_eq!(pending.error, "authorization_pending");

    idp.approve(&auth.user_code, "alice").await.unwrap();
    let tokens = idp.token_request(&form, None).await.unwrap().unwrap();
    let refresh = tokens.refresh_token.clone().expect("a refresh token");

    let jwks = idp.jwks().await.unwrap();
    let claims = jwt::verify(&tokens.access_token, &jwks, idp.issuer(), AUD_BACKSTAGE).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], AUD_BACKSTAGE);
    assert_eq!(claims["client_id"], Idp::PUBLIC_CLIENT);
    assert_eq!(claims["scope"], "catalog:read");

    // A token for another audience does not pass as a Backstage token.
    assert!(
        jwt::verify(
            &tokens.access_token,
            &jwks,
            idp.issuer(),
            "urn:stagepass:git"
        )
        .is_err()
    );
    // A tampered token fails the signature check.
    let mut tampered = tokens.access_token.clone();
    tampered.pop();
    tampered.push(if tokens.access_token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    assert!(jwt::verify(&tampered, &jwks, idp.issuer(), AUD_BACKSTAGE).is_err());

    // Refresh rotates; the old refresh token is then invalid (and kills the grant).
    let rotated = idp
        .refresh(Idp::PUBLIC_CLIENT, &refresh, Some(AUD_BACKSTAGE))
        .await
        .unwrap()
        .unwrap();
    let new_refresh = rotated
        .refresh_token
        .clone()
        .expect("a rotated refresh token");
    assert_ne!(new_refresh, refresh);
    let reused = idp
        .refresh(Idp::PUBLIC_CLIENT, &refresh, None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(reused.error, "invalid_grant");

    let stats = idp.stats().await.unwrap();
    assert_eq!(stats.grant(GRANT_DEVICE_CODE).ok, 1);
    assert_eq!(
        stats.grant(GRANT_DEVICE_CODE).errors["authorization_pending"],
        1
    );
    assert_eq!(stats.grant("refresh_token").requests, 2);
}

/// (b) A device-flow access token for the Backstage audience lists catalog entities, while
/// no token, a token for another audience, and an expired token all get 401.
#[tokio::test]
async fn smoke_backstage_accepts_only_valid_idp_tokens_for_its_audience() {
    let bed = Bed::get().await.unwrap();
    let subject = unique_name("user");

    let good = bed
        .idp
        .device_login(
            Idp::PUBLIC_CLIENT,
            "openid offline_access catalog:read",
            Some(AUD_BACKSTAGE),
            &subject,
        )
        .await
        .unwrap();
    let listed = bed
        .backstage
        .get("/entities/by-query?limit=5", Some(&good.access_token))
        .await
        .unwrap();
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert!(listed.body["items"].is_array(), "{:?}", listed.body);

    let missing = bed
        .backstage
        .get("/entities/by-query?limit=5", None)
        .await
        .unwrap();
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"]["message"], "Missing credentials");

    let git_token = bed
        .idp
        .device_login(
            Idp::PUBLIC_CLIENT,
            "openid git:read",
            Some(AUD_GIT),
            &subject,
        )
        .await
        .unwrap();
    let wrong_aud = bed
        .backstage
        .get("/entities/by-query?limit=5", Some(&git_token.access_token))
        .await
        .unwrap();
    assert_eq!(wrong_aud.status, 401, "{:?}", wrong_aud.body);
    assert_eq!(wrong_aud.body["error"]["message"], "Illegal token");

    // A 2 s token from the same IdP works, then is refused once expired.
    let short = bed.idp.mint(&subject, AUD_BACKSTAGE, 2).await.unwrap();
    let exp = jwt::claims_unverified(&short.access_token).unwrap()["exp"]
        .as_u64()
        .unwrap();
    let before = bed
        .backstage
        .get("/entities/by-query?limit=1", Some(&short.access_token))
        .await
        .unwrap();
    // Minting and this call happen within the same second or the next one; the token may
    // already be past its exp on a very slow machine, so only the post-expiry call is a hard check.
    if now_secs() < exp {
        assert_eq!(before.status, 200, "{:?}", before.body);
    }
    while now_secs() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expired = bed
        .backstage
        .get("/entities/by-query?limit=1", Some(&short.access_token))
        .await
        .unwrap();
    assert_eq!(expired.status, 401, "{:?}", expired.body);
    assert_eq!(expired.body["error"]["message"], "Illegal token");
}

/// (c) A catalog-info.yaml pushed with real git to the git host and registered as a `url`
/// location shows up in Backstage by name, owner included.
#[tokio::test]
async fn smoke_pushed_catalog_file_appears_in_backstage() {
    let bed = Bed::get().await.unwrap();
    let repo = unique_name("svc");
    let name = unique_name("component");
    let token = bed
        .idp
        .device_login(
            Idp::PUBLIC_CLIENT,
            "openid catalog:read catalog:write",
            Some(AUD_BACKSTAGE),
            &unique_name("user"),
        )
        .await
        .unwrap()
        .access_token;

    let remote = bed.git.create_repo(&repo, RepoAuth::None).await.unwrap();
    let work = Worktree::init().unwrap();
    work.write(
        "catalog-info.yaml",
        &format!(
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n\
             spec:\n  type: service\n  lifecycle: experimental\n  owner: team-smoke\n"
        ),
    )
    .unwrap();
    work.commit_all("add catalog file").unwrap();
    work.push(&remote, "main").unwrap();

    let target = bed.git.raw_url(&repo, "main", "catalog-info.yaml");
    let registered = bed
        .backstage
        .register_location(&target, &token)
        .await
        .unwrap();
    assert_eq!(registered.status, 201, "{:?}", registered.body);

    let entity = bed
        .backstage
        .wait_for_entity(
            "component",
            "default",
            &name,
            &token,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(entity["spec"]["owner"], "team-smoke");
    assert_eq!(
        entity["metadata"]["annotations"]["backstage.io/managed-by-location"],
        format!("url:{target}")
    );
}

fn now_secs() -> u64 {
    // The clock is after 1970 on any machine that runs these tests.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The IdP's fault modes and counters, which single-flight and back-off tests rely on.
#[tokio::test]
async fn smoke_idp_faults_are_injected_and_counted() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let secret = Idp::DEFAULT_CLIENT_SECRET;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = || {
        http.post(idp.token_endpoint())
            .basic_auth(Idp::CONFIDENTIAL_CLIENT, Some(secret))
            .form(&[("grant_type", GRANT_CLIENT_CREDENTIALS)])
            .send()
    };

    idp.set_fault(Fault::TooManyRequests {
        retry_after_secs: 7,
    })
    .await
    .unwrap();
    let resp = call().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");

    idp.set_fault(Fault::ServerError(502)).await.unwrap();
    assert_eq!(call().await.unwrap().status(), 502);

    idp.set_fault(Fault::Malformed).await.unwrap();
    let resp = call().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).is_err(),
        "{body}"
    );

    idp.set_fault(Fault::Down).await.unwrap();
    assert!(
        call().await.is_err(),
        "a dropped connection is a transport error"
    );

    // Token-endpoint faults leave discovery alone; `times` limits a fault to N requests.
    let discovery = http.get(idp.discovery_url()).send().await.unwrap();
    assert_eq!(discovery.status(), 200);
    idp.set_fault_with(Fault::ServerError(503), FaultScope::All, Some(1))
        .await
        .unwrap();
    assert_eq!(
        http.get(idp.discovery_url()).send().await.unwrap().status(),
        503
    );
    assert_eq!(call().await.unwrap().status(), 200);

    let stats = idp.stats().await.unwrap();
    let cc = stats.grant(GRANT_CLIENT_CREDENTIALS);
    assert_eq!(cc.requests, 5);
    assert_eq!(cc.faulted, 4);
    assert_eq!(cc.ok, 1);
    assert_eq!(stats.faulted, 5);

    idp.reset_stats().await.unwrap();
    assert_eq!(idp.stats().await.unwrap().token.requests, 0);
}

/// Device codes started by someone else (the agent) can be found and approved, or
/// approved automatically; a denied one gives access_denied.
#[tokio::test]
async fn smoke_idp_pending_auto_approve_and_deny() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let scope = "openid offline_access catalog:read";
    let first = idp
        .start_device_authorization(Idp::PUBLIC_CLIENT, scope, Some(AUD_BACKSTAGE))
        .await
        .unwrap();
    assert_eq!(
        idp.pending_user_codes().await.unwrap(),
        vec![first.user_code.clone()]
    );
    idp.deny(&first.user_code).await.unwrap();
    assert!(idp.pending_user_codes().await.unwrap().is_empty());
    let form = [
        ("grant_type", GRANT_DEVICE_CODE),
        ("client_id", Idp::PUBLIC_CLIENT),
        ("device_code", first.device_code.as_str()),
    ];
    let denied = idp.token_request(&form, None).await.unwrap().unwrap_err();
    assert_eq!(denied.error, "access_denied");

    idp.auto_approve(Some("dave")).await.unwrap();
    let second = idp
        .start_device_authorization(Idp::PUBLIC_CLIENT, scope, Some(AUD_BACKSTAGE))
        .await
        .unwrap();
    let form = [
        ("grant_type", GRANT_DEVICE_CODE),
        ("client_id", Idp::PUBLIC_CLIENT),
        ("device_code", second.device_code.as_str()),
    ];
    let tokens = idp.token_request(&form, None).await.unwrap().unwrap();
    let claims = jwt::claims_unverified(&tokens.access_token).unwrap();
    assert_eq!(claims["sub"], "dave");
}

/// Token exchange yields a JWT for the new audience naming the client in `act`, and
/// revoking a subject's grants makes its refresh token fail with invalid_grant.
#[tokio::test]
async fn smoke_idp_exchange_and_revocation() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let jwks = idp.jwks().await.unwrap();
    let login = idp
        .device_login(
            Idp::PUBLIC_CLIENT,
            "openid offline_access catalog:read",
            Some(AUD_BACKSTAGE),
            "carol",
        )
        .await
        .unwrap();

    let form = [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("client_id", Idp::PUBLIC_CLIENT),
        ("subject_token", login.access_token.as_str()),
        ("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN),
        ("resource", AUD_AWS),
        ("scope", "aws"),
    ];
    let exchanged = idp.token_request(&form, None).await.unwrap().unwrap();
    let claims = jwt::verify(&exchanged.access_token, &jwks, idp.issuer(), AUD_AWS).unwrap();
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["act"]["sub"], Idp::PUBLIC_CLIENT);
    assert_eq!(claims["scope"], "aws");

    let bad = [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("client_id", Idp::PUBLIC_CLIENT),
        ("subject_token", "not-a-token"),
        ("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN),
        ("resource", AUD_AWS),
    ];
    let refused = idp.token_request(&bad, None).await.unwrap().unwrap_err();
    assert_eq!(refused.error, "invalid_grant");

    let cc = idp
        .client_credentials(Idp::DEFAULT_CLIENT_SECRET, Some(AUD_GIT))
        .await
        .unwrap();
    let cc_claims = jwt::verify(&cc.access_token, &jwks, idp.issuer(), AUD_GIT).unwrap();
    assert_eq!(cc_claims["sub"], Idp::CONFIDENTIAL_CLIENT);

    // A non-URI audience (STS) asked as `audience` still yields a JWT with that `aud`.
    let form = [
        ("grant_type", GRANT_CLIENT_CREDENTIALS),
        ("audience", AUD_AWS),
        ("scope", "aws"),
    ];
    let sts = idp
        .token_request(
            &form,
            Some((Idp::CONFIDENTIAL_CLIENT, Idp::DEFAULT_CLIENT_SECRET)),
        )
        .await
        .unwrap()
        .unwrap();
    let sts_claims = jwt::verify(&sts.access_token, &jwks, idp.issuer(), AUD_AWS).unwrap();
    assert_eq!(sts_claims["scope"], "aws");

    assert_eq!(idp.revoke_subject("carol").await.unwrap(), 1);
    let refresh = login.refresh_token.unwrap();
    let after = idp
        .refresh(Idp::PUBLIC_CLIENT, &refresh, None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(after.error, "invalid_grant");
}

/// A token repository on the git host takes IdP tokens for the git audience (Bearer or
/// Basic password) and refuses none, wrong-audience and revoked ones.
#[tokio::test]
async fn smoke_git_host_token_auth() {
    let idp = Idp::start(IdpOptions::default()).await.unwrap();
    let git = GitHost::start(Some(idp.issuer())).await.unwrap();
    let repo = unique_name("private");
    let remote = git.create_repo(&repo, RepoAuth::Token).await.unwrap();
    let work = Worktree::init().unwrap();
    work.write("README", "hello\n").unwrap();
    work.commit_all("init").unwrap();

    assert!(work.push(&remote, "main").is_err(), "push without a token");

    let token = idp
        .client_credentials(Idp::DEFAULT_CLIENT_SECRET, Some(AUD_GIT))
        .await
        .unwrap()
        .access_token;
    let bearer = format!("http.extraHeader=Authorization: Bearer {token}");
    work.git(&["-c", &bearer, "push", "--quiet", &remote, "main"])
        .unwrap();
    let basic_url = remote.replacen("http://", &format!("http://x:{token}@"), 1);
    work.git(&["fetch", "--quiet", &basic_url, "main"]).unwrap();

    let wrong = idp
        .client_credentials(Idp::DEFAULT_CLIENT_SECRET, Some(AUD_BACKSTAGE))
        .await
        .unwrap()
        .access_token;
    let wrong_header = format!("http.extraHeader=Authorization: Bearer {wrong}");
    assert!(
        work.git(&["-c", &wrong_header, "fetch", "--quiet", &remote, "main"])
            .is_err()
    );

    git.revoke_all().await.unwrap();
    assert!(
        work.git(&["-c", &bearer, "fetch", "--quiet", &remote, "main"])
            .is_err()
    );

    let stats = git.stats().await.unwrap();
    assert!(stats.unauthorized >= 3, "{stats:?}");
    assert!(stats.pushes >= 1, "{stats:?}");
    // Raw files stay public for Backstage.
    let raw = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(git.raw_url(&repo, "main", "README"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.text().await.unwrap(), "hello\n");
}

/// `catalog.rules` forbid `Template`: a dry run of a location holding one is refused,
/// while the same with a Component is accepted.
#[tokio::test]
async fn smoke_backstage_rejects_the_forbidden_kind() {
    let bed = Bed::get().await.unwrap();
    let token = bed.backstage.static_token().to_string();
    let repo = unique_name("rules");
    let remote = bed.git.create_repo(&repo, RepoAuth::None).await.unwrap();
    let work = Worktree::init().unwrap();
    let template = unique_name("template");
    let component = unique_name("component");
    work.write(
        "template.yaml",
        &format!(
            "apiVersion: scaffolder.backstage.io/v1beta3\nkind: {}\nmetadata:\n  name: {template}\n\
             spec:\n  type: service\n  owner: team-a\n  steps: []\n",
            Backstage::FORBIDDEN_KIND
        ),
    )
    .unwrap();
    work.write(
        "catalog-info.yaml",
        &format!(
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {component}\n\
             spec:\n  type: service\n  lifecycle: experimental\n  owner: team-a\n"
        ),
    )
    .unwrap();
    work.commit_all("add files").unwrap();
    work.push(&remote, "main").unwrap();

    let dry_run = |file: &str| {
        let target = bed.git.raw_url(&repo, "main", file);
        let token = token.clone();
        let backstage = &bed.backstage;
        async move {
            backstage
                .post(
                    "/locations?dryRun=true",
                    &serde_json::json!({"type": "url", "target": target}),
                    Some(&token),
                )
                .await
                .unwrap()
        }
    };
    let ok = dry_run("catalog-info.yaml").await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    let refused = dry_run("template.yaml").await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is not of an allowed kind"),
        "{:?}",
        refused.body
    );
}

/// The built `stagepass` binary runs in a sandbox whose HOME and XDG directories are
/// private temp dirs (what every black-box test of the agent builds on).
#[tokio::test]
async fn smoke_stagepass_binary_runs_in_a_sandbox() {
    let sandbox = Home::new().unwrap();
    let out = sandbox.command(["--version"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "unexpected version output {version:?}"
    );
    assert!(sandbox.path().starts_with(std::env::temp_dir()));
    let config = sandbox.write_config(&stagepass_e2e::Config::new()).unwrap();
    assert!(config.starts_with(sandbox.xdg_config_home()));
}

/// Dropping a peer handle stops its whole process group, also when the test panics: the
/// harness leaves no process behind (checked by signalling the group afterwards).
#[tokio::test]
async fn smoke_harness_leaves_no_process_behind() {
    use rustix::process::{Pid, test_kill_process_group};
    fn group_alive(pid: u32) -> bool {
        let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
        test_kill_process_group(pid).is_ok()
    }

    // Normal drop, after git ran `git http-backend` children in the group.
    let git = GitHost::start(None).await.unwrap();
    let pid = git.peer().unwrap().pid().unwrap();
    let remote = git
        .create_repo(&unique_name("gone"), RepoAuth::None)
        .await
        .unwrap();
    let work = Worktree::init().unwrap();
    work.write("f", "x\n").unwrap();
    work.commit_all("x").unwrap();
    work.push(&remote, "main").unwrap();
    assert!(group_alive(pid));
    drop(git);
    assert!(!group_alive(pid), "git host group {pid} survived its drop");

    // Drop during a panic (a failing test): the task unwinds while owning the IdP.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let idp = Idp::start(IdpOptions::default()).await.unwrap();
        tx.send(idp.peer().unwrap().pid().unwrap()).unwrap();
        panic!("deliberate panic while owning an IdP");
    });
    let pid = rx.await.unwrap();
    assert!(task.await.unwrap_err().is_panic());
    assert!(!group_alive(pid), "IdP group {pid} survived a panic");
}
