//! Smoke tests proving the test bed is real: a real OIDC device flow whose JWT verifies
//! against the IdP's JWKS, a real Backstage catalog that accepts exactly the right tokens,
//! and a real git push that Backstage reads as a `url` location.

use std::time::Duration;

use stagepass_e2e::idp::{AUD_BACKSTAGE, AUD_GIT, GRANT_DEVICE_CODE};
use stagepass_e2e::support::unique_name;
use stagepass_e2e::{Bed, Idp, IdpOptions, RepoAuth, Worktree, jwt};

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
