//! Who signed in: the claims of an ID token or a userinfo answer.

/// Who signed in, from the non-secret claims of the last ID token (`whoami`, status). The
/// claims are read, not verified: the token came straight from the IdP's token endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// `sub`.
    pub sub: Option<String>,
    /// `groups`, when the IdP sends them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `name`.
    pub name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `preferred_username`.
    pub preferred_username: Option<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// Backstage ownership refs (`ent` of `/v1/userinfo`: the user entity and its groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ent: Vec<String>,
}

impl Identity {
    /// The identity in an ID token's claims; `None` if it is not a JWT.
    pub fn from_id_token(id_token: &str) -> Option<Identity> {
        crate::broker::jwt::claims(id_token).map(|c| Self::from_claims(&c))
    }

    /// The identity in a claims object (an ID token's, or a userinfo answer's).
    pub fn from_claims(c: &serde_json::Value) -> Identity {
        let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let groups = strings(c.get("groups"));
        Identity {
            sub: s("sub"),
            groups,
            name: s("name"),
            email: s("email"),
            preferred_username: s("preferred_username"),
            iss: s("iss"),
            ent: strings(c.get("ent")),
        }
    }
}

/// A claim that is a string or an array of strings, as a list.
pub(super) fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(g)) => vec![g.clone()],
        _ => Vec::new(),
    }
}
