//! Reading (not verifying) the claims of a JWT: the broker only needs `exp` of tokens it did
//! not obtain itself (env profiles), to know when they stop being worth handing out.

use base64::Engine;

/// The `exp` claim (Unix seconds) of a JWT, if `token` is one and has it.
pub fn exp(token: &str) -> Option<u64> {
    let claims = claims(token)?;
    claims.get("exp")?.as_u64()
}

/// The claims of a JWT as JSON, unverified; `None` if `token` is not a JWT.
pub fn claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_of_a_jwt_and_ignores_opaque_tokens() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!(
            "{}.{}.sig",
            enc("{}"),
            enc(r#"{"exp":1700000000,"sub":"x"}"#)
        );
        assert_eq!(exp(&t), Some(1_700_000_000));
        assert_eq!(exp("ghp_opaque"), None);
        assert_eq!(exp("a.b.c"), None);
        assert_eq!(exp("a.b.c.d"), None);
    }
}
