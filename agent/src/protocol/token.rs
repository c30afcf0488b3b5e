//! `GET /v1/token/{profile}` and `POST /v1/token/{profile}/invalidate`.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The `GET /v1/token/{profile}` answer.
///
/// The agent encodes it from borrowed parts of its cached token (no copy of the secret on
/// the hot path); a client reads it owned (`TokenAnswer<'static>`). No `Debug`: it holds
/// the access token.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenAnswer<'a> {
    /// The bearer token itself.
    pub access_token: Cow<'a, str>,
    /// `Bearer` as the IdP said it.
    pub token_type: Cow<'a, str>,
    /// Expiry, RFC 3339; `null` when the IdP did not say.
    pub expires_at: Option<String>,
    /// Whole seconds left, at the time of the answer; `null` with `expires_at`.
    pub expires_in: Option<u64>,
    /// The scopes granted, when the IdP says.
    pub scope: Option<Cow<'a, str>>,
    /// The profile it is for.
    pub profile: Cow<'a, str>,
}

/// The `POST /v1/token/{profile}/invalidate` body: a server refused the token with this
/// fingerprint (git `erase` after a 401), so the agent refreshes before its next answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// The refused token's 12 hex character fingerprint (`Secret::fingerprint`).
    pub fingerprint: String,
}

/// The `POST /v1/token/{profile}/invalidate` answer: what the agent took note of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invalidated {
    /// The profile.
    pub profile: String,
    /// The fingerprint it was told about.
    pub fingerprint: String,
}
