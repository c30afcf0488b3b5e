//! The docker credential helper protocol (`docker-credential-stagepass get|store|erase|list`).
//!
//! docker runs the helper with the operation as its argument:
//! - `get`: the server URL on stdin; answer `{"ServerURL","Username","Secret"}` on stdout;
//! - `list`: answer `{"<server URL>": "<username>", ...}`;
//! - `store` / `erase`: `docker login` / `docker logout`.
//!
//! On failure a helper prints a plain message on stdout and exits non-zero; the exact message
//! [`NOT_FOUND`] tells docker "no credentials here" rather than "the helper broke".
//!
//! Our choices: the agent owns the tokens, so `store` is refused with a message saying the
//! registry's credentials come from stagepass (use `credHelpers` per registry, not
//! `credsStore`), and `erase` is accepted and does nothing (nothing is stored to forget).

use crate::config::{DockerConfig, DockerRegistry};
use crate::secret::Secret;
use std::collections::BTreeMap;

/// The protocol's "no credentials for this server" message; docker matches it exactly.
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// Username sent with a token when the config names none.
pub const DEFAULT_USERNAME: &str = "stagepass";

/// Largest stdin we accept (a server URL, or a small JSON object on `store`).
pub const MAX_INPUT_BYTES: usize = 16 * 1024;

/// The helper operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerOperation {
    /// Credentials for one server.
    Get,
    /// Save credentials (`docker login`): refused.
    Store,
    /// Forget credentials (`docker logout`): accepted, nothing to do.
    Erase,
    /// Every server we serve.
    List,
}

impl DockerOperation {
    /// Parses the helper's argument.
    pub fn parse(arg: &str) -> Option<Self> {
        match arg {
            "get" => Some(Self::Get),
            "store" => Some(Self::Store),
            "erase" => Some(Self::Erase),
            "list" => Some(Self::List),
            _ => None,
        }
    }
}

/// Why a docker request fails; `Display` is the message the protocol prints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DockerError {
    /// No profile for this registry (docker then carries on without credentials).
    #[error("{NOT_FOUND}")]
    NotFound,
    /// stdin was not a server URL.
    #[error("bad server URL on stdin: {0}")]
    BadServerUrl(String),
    /// `docker login` into a registry stagepass serves, or any other.
    #[error(
        "stagepass does not store docker credentials: {0}; configure registries under [docker.registries] and use \"credHelpers\" in ~/.docker/config.json"
    )]
    StoreRefused(String),
    /// Unknown operation.
    #[error("unknown operation {0:?}; expected get, store, erase or list")]
    UnknownOperation(String),
    /// The agent could not give a token (message names the fix).
    #[error("{0}")]
    Agent(String),
    /// Plain http to a registry that is not this machine: the token would cross the network
    /// in clear text (as the git helper refuses).
    #[error(
        "refusing to send a token over plain http to {0}; use https (only loopback registries may use http)"
    )]
    Cleartext(String),
}

/// Registry host (with `:port`) from what docker passes: `https://ghcr.io`, `ghcr.io/v2/`,
/// `https://index.docker.io/v1/`, `localhost:5000`. Lower-cased.
pub fn registry_host(server_url: &str) -> Result<String, DockerError> {
    let s = server_url.trim();
    if s.is_empty() || s.contains(char::is_whitespace) || s.contains('\0') {
        return Err(DockerError::BadServerUrl(
            "empty or holds whitespace".into(),
        ));
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(DockerError::BadServerUrl(format!(
            "no registry host in {s:?}"
        )));
    }
    Ok(host.to_ascii_lowercase())
}

/// Maps registries to profiles, from `[docker.registries]`.
#[derive(Debug, Clone)]
pub struct DockerRouter {
    registries: BTreeMap<String, (String, DockerRegistry)>,
}

/// A registry we serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRoute {
    /// Profile whose token is the secret.
    pub profile: String,
    /// Username to send.
    pub username: String,
}

impl DockerRouter {
    /// Builds the map; keys are normalized like server URLs (`https://ghcr.io/` -> `ghcr.io`).
    pub fn new(config: &DockerConfig) -> Self {
        let registries = config
            .registries
            .iter()
            .filter_map(|(k, v)| registry_host(k).ok().map(|h| (h, (k.clone(), v.clone()))))
            .collect();
        Self { registries }
    }

    /// The route for a server URL, or [`DockerError::NotFound`].
    pub fn route(&self, server_url: &str) -> Result<DockerRoute, DockerError> {
        let host = registry_host(server_url)?;
        let (_, reg) = self.registries.get(&host).ok_or(DockerError::NotFound)?;
        let plain = server_url
            .trim()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if plain && !crate::cleartext::is_loopback_host(&host) {
            return Err(DockerError::Cleartext(host));
        }
        Ok(DockerRoute {
            profile: reg.profile().to_string(),
            username: reg.username().unwrap_or(DEFAULT_USERNAME).to_string(),
        })
    }

    /// The `list` answer: every configured registry (as written in the config) -> username.
    pub fn list_json(&self) -> String {
        let map: BTreeMap<&str, &str> = self
            .registries
            .values()
            .map(|(key, reg)| (key.as_str(), reg.username().unwrap_or(DEFAULT_USERNAME)))
            .collect();
        // A map of strings always serializes; fall back to an empty object regardless.
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
    }
}

/// The `get` answer, `{"ServerURL","Username","Secret"}` (keys in this order).
pub fn get_json(server_url: &str, route: &DockerRoute, token: &Secret) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer<'a> {
        #[serde(rename = "ServerURL")]
        server_url: &'a str,
        username: &'a str,
        secret: &'a str,
    }
    let answer = Answer {
        server_url,
        username: &route.username,
        secret: token.expose(),
    };
    // Serializing three strings cannot fail; fall back to an empty object regardless.
    serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into())
}

/// Reads the `get` input: the server URL, one line, trailing newline optional.
pub fn parse_get_input(input: &[u8]) -> Result<String, DockerError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(DockerError::BadServerUrl("input too large".into()));
    }
    let text =
        std::str::from_utf8(input).map_err(|_| DockerError::BadServerUrl("not UTF-8".into()))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    registry_host(line)?;
    Ok(line.to_string())
}

/// Reads the `store` input only to name the server in the refusal.
pub fn store_server(input: &[u8]) -> String {
    /// The one field of docker's `store` input read here (the secret in it is not).
    #[derive(serde::Deserialize)]
    struct StoreInput {
        #[serde(rename = "ServerURL")]
        server_url: String,
    }
    serde_json::from_slice::<StoreInput>(input)
        .map(|i| i.server_url)
        .unwrap_or_else(|_| "(unknown server)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> DockerRouter {
        let mut registries = BTreeMap::new();
        registries.insert(
            "ghcr.io".to_string(),
            DockerRegistry::Profile("github".into()),
        );
        registries.insert(
            "https://registry.example:5000/".to_string(),
            DockerRegistry::Detailed {
                profile: "reg".into(),
                username: Some("robot".into()),
            },
        );
        DockerRouter::new(&DockerConfig { registries })
    }

    #[test]
    fn server_urls_normalize_to_host() {
        assert_eq!(registry_host("https://ghcr.io").unwrap(), "ghcr.io");
        assert_eq!(registry_host("ghcr.io/v2/").unwrap(), "ghcr.io");
        assert_eq!(
            registry_host("https://index.docker.io/v1/").unwrap(),
            "index.docker.io"
        );
        assert_eq!(registry_host("LOCALHOST:5000").unwrap(), "localhost:5000");
        assert!(registry_host("").is_err());
        assert!(registry_host("https://").is_err());
        assert!(registry_host("a b").is_err());
    }

    #[test]
    fn routes_and_not_found() {
        let r = router();
        assert_eq!(
            r.route("https://ghcr.io").unwrap(),
            DockerRoute {
                profile: "github".into(),
                username: DEFAULT_USERNAME.into()
            }
        );
        assert_eq!(r.route("registry.example:5000").unwrap().username, "robot");
        assert_eq!(r.route("docker.io"), Err(DockerError::NotFound));
        assert_eq!(DockerError::NotFound.to_string(), NOT_FOUND);
    }

    /// Issue 19: like the git helper, no token over plain http off this machine.
    #[test]
    fn plain_http_only_to_loopback_registries() {
        let mut registries = BTreeMap::new();
        registries.insert(
            "ghcr.io".to_string(),
            DockerRegistry::Profile("github".into()),
        );
        registries.insert(
            "localhost:5000".to_string(),
            DockerRegistry::Profile("local".into()),
        );
        let r = DockerRouter::new(&DockerConfig { registries });
        assert_eq!(
            r.route("http://ghcr.io"),
            Err(DockerError::Cleartext("ghcr.io".into()))
        );
        assert!(r.route("https://ghcr.io").is_ok());
        assert!(r.route("ghcr.io").is_ok());
        assert!(r.route("http://localhost:5000").is_ok());
    }

    #[test]
    fn get_answer_exact_bytes() {
        let route = DockerRoute {
            profile: "github".into(),
            username: "stagepass".into(),
        };
        assert_eq!(
            get_json("ghcr.io", &route, &Secret::new("t\"ok")),
            r#"{"ServerURL":"ghcr.io","Username":"stagepass","Secret":"t\"ok"}"#
        );
    }

    #[test]
    fn list_answer_exact_bytes() {
        assert_eq!(
            router().list_json(),
            r#"{"ghcr.io":"stagepass","https://registry.example:5000/":"robot"}"#
        );
    }

    #[test]
    fn get_input_is_one_line() {
        assert_eq!(parse_get_input(b"ghcr.io\n").unwrap(), "ghcr.io");
        assert_eq!(
            parse_get_input(b"https://ghcr.io\r\n").unwrap(),
            "https://ghcr.io"
        );
        assert!(parse_get_input(b"\n").is_err());
        assert!(parse_get_input(b"a\nb\n").is_err());
        assert!(parse_get_input(b"\xff").is_err());
    }

    #[test]
    fn store_names_the_server_and_operations_parse() {
        assert_eq!(
            store_server(br#"{"ServerURL":"ghcr.io","Username":"u","Secret":"s"}"#),
            "ghcr.io"
        );
        assert_eq!(store_server(b"junk"), "(unknown server)");
        assert_eq!(DockerOperation::parse("list"), Some(DockerOperation::List));
        assert_eq!(DockerOperation::parse("version"), None);
    }
}
