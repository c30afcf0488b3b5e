//! Verifying the IdP's JWT access tokens against its JWKS, the way a resource server
//! (Backstage, the git host) does, so tests prove a token is real rather than well-formed.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

use crate::error::{HarnessError, Result};

/// Makes sure a crypto backend is installed: jsonwebtoken picks one by crate feature, but
/// if another crate in the build enabled a second backend it needs an explicit choice.
fn ensure_crypto_provider() {
    use jsonwebtoken::crypto::CryptoProvider;
    if CryptoProvider::try_get_default().is_none() {
        // Losing a race to another thread that installed one is fine.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    }
}

/// Verifies `token`'s ES256 signature with the key of its `kid` in `jwks`, and its `iss`,
/// `aud` and `exp` (no leeway); returns the claims.
pub fn verify(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: &str,
) -> Result<serde_json::Value> {
    ensure_crypto_provider();
    let header = decode_header(token)?;
    let kid = header
        .kid
        .ok_or_else(|| HarnessError::Other("JWT header has no kid".into()))?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| HarnessError::Other(format!("kid {kid} is not in the JWKS")))?;
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = 0;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    Ok(decode::<serde_json::Value>(token, &key, &validation)?.claims)
}

/// The claims of a JWT without verifying anything: for looking at what the agent got,
/// never for deciding trust.
pub fn claims_unverified(token: &str) -> Result<serde_json::Value> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| HarnessError::Other("not a JWT (no payload part)".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| HarnessError::Other(format!("JWT payload is not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|source| HarnessError::Json {
        what: "JWT payload".into(),
        source,
    })
}
