//! Smoke tests proving the test bed is real: a real OIDC device flow whose JWT verifies
//! against the IdP's JWKS, a real Backstage catalog that accepts exactly the right tokens,
//! and a real git push that Backstage reads as a `url` location.

use stagepass_e2e::idp::{AUD_BACKSTAGE, GRANT_DEVICE_CODE};
use stagepass_e2e::{Idp, IdpOptions, jwt};

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
