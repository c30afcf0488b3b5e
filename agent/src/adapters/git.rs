//! The git credential helper protocol (`git help credential`), parsed and answered exactly.
//!
//! git runs `stagepass git-credential get|store|erase` with `key=value` lines on stdin,
//! ended by a blank line or end of input. We parse them into a [`GitRequest`] (strict about
//! syntax, tolerant of keys a newer git may add, as the protocol asks), map the remote to a
//! profile with a [`GitRouter`], and answer with [`GitAnswer::to_bytes`]:
//!
//! - plain: `username`, `password` and `password_expiry_utc` (git forgets the password then);
//! - when git announced `capability[]=authtype`: `capability[]=authtype`, `authtype=Bearer`,
//!   `credential=TOKEN`, `ephemeral=1`, so git sends `Authorization: Bearer TOKEN` and never
//!   asks other helpers to store it.
//!
//! An unknown host gets no answer at all, so git falls through to its next helper.

use crate::config::GitConfig;
use crate::secret::Secret;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest request we accept from git; real ones are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Username sent with a token when the config names none (GitHub and most hosts accept it).
pub const DEFAULT_USERNAME: &str = "x-access-token";

/// The profile served for github.com when the config maps no entry for it.
pub const DEFAULT_GITHUB_PROFILE: &str = "github";

/// Why git's input could not be understood. Line numbers are 1-based.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GitParseError {
    /// More than [`MAX_REQUEST_BYTES`].
    #[error("git credential request is larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("git credential request line {line}: not valid UTF-8")]
    NotUtf8 {
        /// The line.
        line: usize,
    },
    /// A line without `=`.
    #[error("git credential request line {line}: expected key=value")]
    MissingEquals {
        /// The line.
        line: usize,
    },
    /// `=value` with nothing before it.
    #[error("git credential request line {line}: empty key")]
    EmptyKey {
        /// The line.
        line: usize,
    },
    /// A NUL byte, which the protocol forbids anywhere.
    #[error("git credential request line {line}: NUL byte")]
    Nul {
        /// The line.
        line: usize,
    },
    /// A `url=` value that is not a URL.
    #[error("git credential request line {line}: bad url: {reason}")]
    BadUrl {
        /// The line.
        line: usize,
        /// What the URL parser said.
        reason: String,
    },
    /// A `password_expiry_utc=` that is not a Unix time.
    #[error("git credential request line {line}: password_expiry_utc is not a number")]
    BadExpiry {
        /// The line.
        line: usize,
    },
}

/// The operation git asks of a helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitOperation {
    /// Give a credential.
    Get,
    /// git used a credential successfully (we keep nothing: the agent owns tokens).
    Store,
    /// The server refused the credential (401): refresh before the next `get`.
    Erase,
}

impl GitOperation {
    /// Parses the argument git passes; `None` for anything else (git says unknown
    /// operations must be ignored).
    pub fn parse(arg: &str) -> Option<Self> {
        match arg {
            "get" => Some(Self::Get),
            "store" => Some(Self::Store),
            "erase" => Some(Self::Erase),
            _ => None,
        }
    }
}

/// What git sent, as typed values. Unknown keys are ignored, as the protocol requires.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// `https`, `http`, ...
    pub protocol: Option<String>,
    /// Host, with `:port` when not the default.
    pub host: Option<String>,
    /// Repository path, only sent when `credential.useHttpPath` is set.
    pub path: Option<String>,
    /// Username from the URL or a previous helper.
    pub username: Option<String>,
    /// The password git used (present on `store` and `erase`).
    pub password: Option<Secret>,
    /// The pre-encoded credential git used with `authtype` (on `store` and `erase`).
    pub credential: Option<Secret>,
    /// `authtype` git used.
    pub authtype: Option<String>,
    /// Expiry of the password, Unix seconds.
    pub password_expiry_utc: Option<u64>,
    /// `capability[]` values git announced (e.g. `authtype`, `state`).
    pub capabilities: BTreeSet<String>,
    /// `WWW-Authenticate` values the server sent, in order.
    pub wwwauth: Vec<String>,
}

impl GitRequest {
    /// Parses git's `key=value` lines, up to a blank line or end of input.
    ///
    /// Scalar keys repeated keep the last value (git's own rule); `url=` sets protocol,
    /// host, path and username from its parts as git does.
    pub fn parse(input: &[u8]) -> Result<Self, GitParseError> {
        if input.len() > MAX_REQUEST_BYTES {
            return Err(GitParseError::TooLarge);
        }
        let mut req = GitRequest::default();
        for (idx, raw) in input.split(|b| *b == b'\n').enumerate() {
            let line = idx + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.is_empty() {
                break;
            }
            if raw.contains(&0) {
                return Err(GitParseError::Nul { line });
            }
            let text = std::str::from_utf8(raw).map_err(|_| GitParseError::NotUtf8 { line })?;
            let (key, value) = text
                .split_once('=')
                .ok_or(GitParseError::MissingEquals { line })?;
            if key.is_empty() {
                return Err(GitParseError::EmptyKey { line });
            }
            req.set(line, key, value)?;
        }
        Ok(req)
    }

    fn set(&mut self, line: usize, key: &str, value: &str) -> Result<(), GitParseError> {
        let opt = |v: &str| Some(v.to_string());
        match key {
            "protocol" => self.protocol = opt(value),
            "host" => self.host = opt(value),
            "path" => self.path = opt(value),
            "username" => self.username = opt(value),
            "password" => self.password = Some(Secret::new(value)),
            "credential" => self.credential = Some(Secret::new(value)),
            "authtype" => self.authtype = opt(value),
            "password_expiry_utc" => {
                self.password_expiry_utc = Some(
                    value
                        .parse()
                        .map_err(|_| GitParseError::BadExpiry { line })?,
                );
            }
            "capability[]" => {
                if value.is_empty() {
                    self.capabilities.clear();
                } else {
                    self.capabilities.insert(value.to_string());
                }
            }
            "wwwauth[]" => {
                if value.is_empty() {
                    self.wwwauth.clear();
                } else {
                    self.wwwauth.push(value.to_string());
                }
            }
            "url" => self.set_url(line, value)?,
            _ => {}
        }
        Ok(())
    }

    fn set_url(&mut self, line: usize, value: &str) -> Result<(), GitParseError> {
        let url = url::Url::parse(value).map_err(|e| GitParseError::BadUrl {
            line,
            reason: e.to_string(),
        })?;
        self.protocol = Some(url.scheme().to_string());
        self.host = url.host_str().map(|h| match url.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        });
        let path = url.path().trim_start_matches('/');
        self.path = (!path.is_empty()).then(|| path.to_string());
        if !url.username().is_empty() {
            self.username = Some(url.username().to_string());
        }
        Ok(())
    }

    /// Whether git can take a bearer credential instead of a username and password.
    pub fn wants_authtype(&self) -> bool {
        self.capabilities.contains("authtype")
    }

    /// The secret git used (credential or password), to tell the agent which token failed.
    pub fn used_secret(&self) -> Option<&Secret> {
        self.credential.as_ref().or(self.password.as_ref())
    }
}

/// Where a request is routed: which profile's token, with which username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRoute {
    /// Profile serving the token.
    pub profile: String,
    /// Username to send with the token.
    pub username: String,
}

/// Why a request gets no credential although the host may be ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GitRouteError {
    /// Plain http to a host that is not loopback: a token would cross the network in clear.
    #[error(
        "refusing to send a token over plain http to {host}; use https (only loopback hosts may use http)"
    )]
    CleartextRemote {
        /// The host.
        host: String,
    },
}

/// Maps git remotes to profiles, from `[git]` in the config.
#[derive(Debug, Clone)]
pub struct GitRouter {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    host: String,
    prefix: Option<String>,
    route: GitRoute,
}

impl GitRouter {
    /// Builds the map; `github.com -> github` is added when a `github` profile exists and no
    /// entry names github.com.
    pub fn new(config: &GitConfig, profiles: &BTreeSet<String>) -> Self {
        let mut entries: Vec<Entry> = config
            .hosts
            .iter()
            .map(|h| Entry {
                host: h.host.to_ascii_lowercase(),
                prefix: h
                    .path_prefix
                    .as_deref()
                    .map(|p| p.trim_matches('/').to_string())
                    .filter(|p| !p.is_empty()),
                route: GitRoute {
                    profile: h.profile.clone(),
                    username: h
                        .username
                        .clone()
                        .unwrap_or_else(|| DEFAULT_USERNAME.to_string()),
                },
            })
            .collect();
        let has_github = entries.iter().any(|e| e.host == "github.com");
        if !has_github && profiles.contains(DEFAULT_GITHUB_PROFILE) {
            entries.push(Entry {
                host: "github.com".into(),
                prefix: None,
                route: GitRoute {
                    profile: DEFAULT_GITHUB_PROFILE.into(),
                    username: DEFAULT_USERNAME.into(),
                },
            });
        }
        Self { entries }
    }

    /// The route for a request: `Ok(None)` when no entry matches (git falls through).
    /// The longest matching path prefix wins; an entry without prefix matches every path.
    pub fn route(&self, req: &GitRequest) -> Result<Option<GitRoute>, GitRouteError> {
        let Some(host) = req.host.as_deref().map(str::to_ascii_lowercase) else {
            return Ok(None);
        };
        let path = req.path.as_deref().unwrap_or("").trim_matches('/');
        let best = self
            .entries
            .iter()
            .filter(|e| e.host == host)
            .filter(|e| match &e.prefix {
                None => true,
                Some(p) => path == p || path.starts_with(&format!("{p}/")),
            })
            .max_by_key(|e| e.prefix.as_ref().map_or(0, |p| p.len() + 1));
        let Some(entry) = best else {
            return Ok(None);
        };
        match req.protocol.as_deref() {
            Some("https") => {}
            Some("http") if crate::cleartext::is_loopback_host(&host) => {}
            _ => return Err(GitRouteError::CleartextRemote { host }),
        }
        Ok(Some(entry.route.clone()))
    }
}

/// What we tell git on `get`.
#[derive(Debug)]
pub enum GitAnswer {
    /// `username` + `password` (+ `password_expiry_utc`).
    Basic {
        /// Username.
        username: String,
        /// The token.
        password: Secret,
        /// When the token expires.
        expires_at: Option<SystemTime>,
    },
    /// `authtype=Bearer` + `credential`, only when git announced `capability[]=authtype`.
    Bearer {
        /// The token.
        token: Secret,
    },
}

impl GitAnswer {
    /// The answer git can use for this request: bearer when it announced the capability.
    pub fn for_request(
        req: &GitRequest,
        route: &GitRoute,
        token: Secret,
        expires_at: Option<SystemTime>,
    ) -> Self {
        if req.wants_authtype() {
            Self::Bearer { token }
        } else {
            Self::Basic {
                username: route.username.clone(),
                password: token,
                expires_at,
            }
        }
    }

    /// The exact bytes for git's stdin. Values never hold a newline (a token with one
    /// would be a protocol injection, so it is refused by [`GitAnswer::validate`] first).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        match self {
            Self::Basic {
                username,
                password,
                expires_at,
            } => {
                out.push_str("username=");
                out.push_str(username);
                out.push_str("\npassword=");
                out.push_str(password.expose());
                out.push('\n');
                if let Some(t) = expires_at {
                    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    out.push_str(&format!("password_expiry_utc={secs}\n"));
                }
            }
            Self::Bearer { token } => {
                out.push_str("capability[]=authtype\nauthtype=Bearer\ncredential=");
                out.push_str(token.expose());
                out.push_str("\nephemeral=1\n");
            }
        }
        out.into_bytes()
    }

    /// Refuses values that would break the line protocol (newline, NUL).
    pub fn validate(&self) -> Result<(), &'static str> {
        let bad = |s: &str| s.contains(['\n', '\r', '\0']);
        match self {
            Self::Basic {
                username, password, ..
            } => {
                if bad(username) || bad(password.expose()) {
                    return Err("the token or username holds a newline or NUL");
                }
            }
            Self::Bearer { token } => {
                if bad(token.expose()) {
                    return Err("the token holds a newline or NUL");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GitHostConfig;
    use std::time::Duration;

    fn router(hosts: Vec<GitHostConfig>, profiles: &[&str]) -> GitRouter {
        GitRouter::new(
            &GitConfig { hosts },
            &profiles.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn host(host: &str, profile: &str, prefix: Option<&str>) -> GitHostConfig {
        GitHostConfig {
            host: host.into(),
            profile: profile.into(),
            username: None,
            path_prefix: prefix.map(Into::into),
        }
    }

    #[test]
    fn parses_what_git_2_47_sends() {
        let input = b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=github.com\nwwwauth[]=Bearer realm=\"x\"\n\n";
        let req = GitRequest::parse(input).unwrap();
        assert_eq!(req.protocol.as_deref(), Some("https"));
        assert_eq!(req.host.as_deref(), Some("github.com"));
        assert_eq!(req.path, None);
        assert!(req.wants_authtype());
        assert!(req.capabilities.contains("state"));
        assert_eq!(req.wwwauth, vec!["Bearer realm=\"x\"".to_string()]);
    }

    #[test]
    fn stops_at_blank_line_and_accepts_crlf_and_unknown_keys() {
        let req = GitRequest::parse(b"host=a\r\nfuture_key=1\n\nhost=b\n").unwrap();
        assert_eq!(req.host.as_deref(), Some("a"));
    }

    #[test]
    fn password_and_expiry_on_erase() {
        let req =
            GitRequest::parse(b"protocol=http\nhost=127.0.0.1:9\nusername=u\npassword=tok\npassword_expiry_utc=1700000000\n")
                .unwrap();
        assert_eq!(req.used_secret().map(Secret::expose), Some("tok"));
        assert_eq!(req.password_expiry_utc, Some(1_700_000_000));
        assert!(!format!("{req:?}").contains("tok"));
    }

    #[test]
    fn url_key_sets_the_parts() {
        let req = GitRequest::parse(b"url=https://me@example.com:8443/org/repo.git\n").unwrap();
        assert_eq!(req.protocol.as_deref(), Some("https"));
        assert_eq!(req.host.as_deref(), Some("example.com:8443"));
        assert_eq!(req.path.as_deref(), Some("org/repo.git"));
        assert_eq!(req.username.as_deref(), Some("me"));
    }

    #[test]
    fn syntax_errors_are_typed_with_line() {
        assert_eq!(
            GitRequest::parse(b"host=a\nnoequals\n"),
            Err(GitParseError::MissingEquals { line: 2 })
        );
        assert_eq!(
            GitRequest::parse(b"=x\n"),
            Err(GitParseError::EmptyKey { line: 1 })
        );
        assert_eq!(
            GitRequest::parse(b"host=a\0b\n"),
            Err(GitParseError::Nul { line: 1 })
        );
        assert_eq!(
            GitRequest::parse(b"host=\xff\n"),
            Err(GitParseError::NotUtf8 { line: 1 })
        );
        assert_eq!(
            GitRequest::parse(b"password_expiry_utc=soon\n"),
            Err(GitParseError::BadExpiry { line: 1 })
        );
        assert!(matches!(
            GitRequest::parse(b"url=::nope\n"),
            Err(GitParseError::BadUrl { line: 1, .. })
        ));
        assert_eq!(
            GitRequest::parse(&vec![b'a'; MAX_REQUEST_BYTES + 1]),
            Err(GitParseError::TooLarge)
        );
    }

    #[test]
    fn empty_capability_resets_the_list() {
        let req = GitRequest::parse(b"capability[]=authtype\ncapability[]=\n").unwrap();
        assert!(!req.wants_authtype());
    }

    #[test]
    fn operations() {
        assert_eq!(GitOperation::parse("get"), Some(GitOperation::Get));
        assert_eq!(GitOperation::parse("store"), Some(GitOperation::Store));
        assert_eq!(GitOperation::parse("erase"), Some(GitOperation::Erase));
        assert_eq!(GitOperation::parse("fill"), None);
    }

    #[test]
    fn github_default_only_when_profile_exists_and_not_mapped() {
        let req = GitRequest::parse(b"protocol=https\nhost=GitHub.com\n").unwrap();
        let r = router(vec![], &["github"]).route(&req).unwrap().unwrap();
        assert_eq!(r.profile, "github");
        assert_eq!(r.username, DEFAULT_USERNAME);
        assert_eq!(router(vec![], &["backstage"]).route(&req).unwrap(), None);
        let mapped = router(vec![host("github.com", "gh-app", None)], &["github"]);
        assert_eq!(mapped.route(&req).unwrap().unwrap().profile, "gh-app");
    }

    #[test]
    fn longest_path_prefix_wins_and_unknown_host_falls_through() {
        let r = router(
            vec![
                host("git.example", "all", None),
                host("git.example", "team", Some("/team/")),
                host("git.example", "team-x", Some("team/x")),
            ],
            &[],
        );
        let route = |path: &str| {
            let req = GitRequest {
                protocol: Some("https".into()),
                host: Some("git.example".into()),
                path: (!path.is_empty()).then(|| path.to_string()),
                ..Default::default()
            };
            r.route(&req).unwrap().map(|r| r.profile)
        };
        assert_eq!(route("team/x/repo.git").as_deref(), Some("team-x"));
        assert_eq!(route("team/xy.git").as_deref(), Some("team"));
        assert_eq!(route("other/repo.git").as_deref(), Some("all"));
        assert_eq!(route("").as_deref(), Some("all"));
        let other = GitRequest {
            protocol: Some("https".into()),
            host: Some("elsewhere".into()),
            ..Default::default()
        };
        assert_eq!(r.route(&other).unwrap(), None);
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let r = router(
            vec![
                host("127.0.0.1:8080", "local", None),
                host("git.example", "remote", None),
            ],
            &[],
        );
        let req = |proto: &str, h: &str| GitRequest {
            protocol: Some(proto.into()),
            host: Some(h.into()),
            ..Default::default()
        };
        assert!(r.route(&req("http", "127.0.0.1:8080")).unwrap().is_some());
        assert_eq!(
            r.route(&req("http", "git.example")),
            Err(GitRouteError::CleartextRemote {
                host: "git.example".into()
            })
        );
    }

    #[test]
    fn basic_answer_exact_bytes() {
        let a = GitAnswer::Basic {
            username: "x-access-token".into(),
            password: Secret::new("tok123"),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        };
        assert_eq!(
            a.to_bytes(),
            b"username=x-access-token\npassword=tok123\npassword_expiry_utc=1800000000\n"
        );
    }

    #[test]
    fn bearer_answer_exact_bytes_when_git_announced_authtype() {
        let req = GitRequest::parse(b"capability[]=authtype\nprotocol=https\nhost=h\n").unwrap();
        let route = GitRoute {
            profile: "p".into(),
            username: "u".into(),
        };
        let a = GitAnswer::for_request(&req, &route, Secret::new("tok"), None);
        assert_eq!(
            a.to_bytes(),
            b"capability[]=authtype\nauthtype=Bearer\ncredential=tok\nephemeral=1\n"
        );
        let plain = GitRequest::parse(b"protocol=https\nhost=h\n").unwrap();
        let b = GitAnswer::for_request(&plain, &route, Secret::new("tok"), None);
        assert_eq!(b.to_bytes(), b"username=u\npassword=tok\n");
    }

    #[test]
    fn newline_in_token_is_refused() {
        let a = GitAnswer::Bearer {
            token: Secret::new("a\nusername=evil"),
        };
        assert!(a.validate().is_err());
    }
}
