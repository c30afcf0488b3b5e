//! Client of the agent's local API, for the CLI commands, the adapters and MCP.
//!
//! It talks over the Unix socket (falling back to the TCP port in `endpoint.json` when the
//! socket is turned off), presents the per-boot secret, and never hangs: connecting has a
//! short timeout ([`CONNECT_TIMEOUT`]) and one deadline ([`REQUEST_TIMEOUT`]) bounds the
//! whole request, connect, write and answer together. An agent that is not running is
//! [`ClientError::NotRunning`], which the CLI maps to `cli::EXIT_AGENT_DOWN`.

pub mod quick;

use crate::paths::Paths;
use crate::protocol::{self, EndpointFile, ErrorBody, secret_file};
use crate::secret::Secret;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long connecting to the agent may take before we say it is not running.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Hang guard for one whole request, from connecting to the last byte of the answer (a
/// token request may wait for a refresh at the IdP). The README states this bound.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answers on the socket (not running, or another user's).
    #[error(
        "the stagepass agent is not running ({0}); start it with `stagepass agent` or run `stagepass doctor`"
    )]
    NotRunning(String),
    /// The agent answered with an API error.
    #[error("{message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Human message.
        message: String,
    },
    /// Transport or protocol failure.
    #[error("talking to the agent failed: {0}")]
    Protocol(String),
    /// The running agent is another version than this command (the binary was upgraded,
    /// the agent not restarted).
    #[error(
        "the running stagepass agent is version {agent}, this command is {}: restart the agent (restart the dev container, or stop it and run `stagepass agent`)",
        crate::protocol::version::VERSION
    )]
    VersionMismatch {
        /// The agent's version as it said it.
        agent: String,
    },
}

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(u16),
}

/// A connection factory to the running agent.
pub struct Client {
    endpoint: Endpoint,
    secret: Secret,
}

impl Client {
    /// Prepares a client for the agent of these paths (reads the per-boot secret).
    pub fn new(paths: &Paths) -> Result<Self, ClientError> {
        let secret_path = paths.api_secret();
        let secret = secret_file::read(&secret_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ClientError::NotRunning(format!("no secret file at {}", secret_path.display()))
            } else {
                ClientError::Protocol(format!("cannot use {}: {e}", secret_path.display()))
            }
        })?;
        let socket = paths.socket();
        let endpoint = if socket.exists() {
            Endpoint::Unix(socket)
        } else if let Some(port) = EndpointFile::read(paths).and_then(|e| e.port) {
            Endpoint::Tcp(port)
        } else {
            return Err(ClientError::NotRunning(format!(
                "no socket at {}",
                socket.display()
            )));
        };
        Ok(Self { endpoint, secret })
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<protocol::Status, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /v1/token/{profile}`, the token valid at least `min_valid` seconds more when
    /// given (the name percent-encoded as one path segment).
    pub async fn token(
        &self,
        profile: &str,
        min_valid: Option<u64>,
    ) -> Result<protocol::TokenAnswer<'static>, ClientError> {
        self.get(&token_path(profile, min_valid)).await
    }

    /// `POST /v1/token/{profile}/invalidate`: a server refused the token with this
    /// fingerprint.
    pub async fn invalidate(
        &self,
        profile: &str,
        fingerprint: &str,
    ) -> Result<protocol::Invalidated, ClientError> {
        let body = protocol::InvalidateRequest {
            fingerprint: fingerprint.to_string(),
        };
        let path = format!("/v1/token/{}/invalidate", encode_segment(profile));
        self.post(&path, &body).await
    }

    /// `POST /v1/login/{profile}`: starts a login (or says it is complete already).
    pub async fn login_start(&self, profile: &str) -> Result<protocol::LoginState, ClientError> {
        self.post(&login_path(profile), &protocol::Empty {}).await
    }

    /// `GET /v1/login/{profile}`: where the login started last stands.
    pub async fn login_state(&self, profile: &str) -> Result<protocol::LoginState, ClientError> {
        self.get(&login_path(profile)).await
    }

    /// `POST /v1/login/{profile}/callback`: the address a browser was sent back to.
    pub async fn login_callback(
        &self,
        profile: &str,
        url: &str,
    ) -> Result<protocol::LoginState, ClientError> {
        let body = protocol::CallbackRequest {
            url: url.to_string(),
        };
        self.post(&format!("{}/callback", login_path(profile)), &body)
            .await
    }

    /// `DELETE /v1/login/{profile}`: forgets the stored login.
    pub async fn logout(&self, profile: &str) -> Result<protocol::LoggedOut, ClientError> {
        self.delete(&login_path(profile)).await
    }

    /// `GET /v1/catalog`.
    pub async fn catalog(&self) -> Result<protocol::CatalogStatus, ClientError> {
        self.get("/v1/catalog").await
    }

    /// `GET /v1/catalog/diff`.
    pub async fn catalog_diff(&self) -> Result<protocol::DiffReport, ClientError> {
        self.get("/v1/catalog/diff").await
    }

    /// `POST /v1/catalog/sync`.
    pub async fn catalog_sync(&self) -> Result<protocol::SyncReport, ClientError> {
        self.post("/v1/catalog/sync", &protocol::Empty {}).await
    }

    /// `GET path`, the JSON body of a 2xx answer read as `T` (the typed calls above use it).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, None::<&protocol::Empty>).await
    }

    /// `POST path` with a JSON body, the JSON body of a 2xx answer read as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`, the JSON body of a 2xx answer read as `T`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::DELETE, path, None::<&protocol::Empty>)
            .await
    }

    /// `GET path`, returning the raw body of a 2xx answer (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (status, body) = self.send(Method::GET, path, None).await?;
        check_status(status, &body)?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Protocol("the agent's answer is not UTF-8".into()))
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body =
            match body {
                Some(v) => Some(serde_json::to_vec(v).map_err(|e| {
                    ClientError::Protocol(format!("cannot encode the request: {e}"))
                })?),
                None => None,
            };
        let (status, bytes) = self.send(method, path, body).await?;
        check_status(status, &bytes)?;
        read_answer(&bytes)
    }

    /// Sends one request and returns the status and the whole body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp(port) => format!("127.0.0.1:{port}"),
        };
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", self.secret.expose())).map_err(|_| {
                ClientError::Protocol("the secret file holds invalid characters".into())
            })?;
        auth.set_sensitive(true);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .header(AUTHORIZATION, auth);
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(format!("bad request {path}: {e}")))?;
        let answer = async {
            match &self.endpoint {
                Endpoint::Unix(p) => {
                    let what = p.display().to_string();
                    let io = connect(|| tokio::net::UnixStream::connect(p), &what).await?;
                    exchange(io, req).await
                }
                Endpoint::Tcp(port) => {
                    let what = format!("127.0.0.1:{port}");
                    let io = connect(
                        || tokio::net::TcpStream::connect(("127.0.0.1", *port)),
                        &what,
                    )
                    .await?;
                    exchange(io, req).await
                }
            }
        };
        // One deadline over every step (connect included), so no command waits longer.
        tokio::time::timeout(REQUEST_TIMEOUT, answer)
            .await
            .map_err(|_| no_answer(REQUEST_TIMEOUT))?
    }
}

/// One request/response on a fresh connection.
async fn exchange<S>(io: TokioIo<S>, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let status = resp.status().as_u16();
        let said = resp
            .headers()
            .get(crate::protocol::version::HEADER)
            .map(|v| v.as_bytes());
        if let Some(agent) = crate::protocol::version::mismatch(said) {
            return Err(ClientError::VersionMismatch { agent });
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
    .await;
    driver.abort();
    result
}

/// The error of a request that got no complete answer within `total` (the CLI's is
/// [`REQUEST_TIMEOUT`]).
pub(super) fn no_answer(total: Duration) -> ClientError {
    ClientError::Protocol(format!(
        "the agent sent no complete answer within {}s (it is stuck or overloaded; \
         `stagepass doctor` checks it)",
        total.as_secs_f32()
    ))
}

/// Connects with `attempt`, for at most [`CONNECT_TIMEOUT`].
///
/// A non-blocking connect to a Unix socket whose backlog is full (an agent stopped or stuck
/// with clients queued) fails at once with `WouldBlock` instead of waiting: that is retried
/// every 20 ms until the timeout, as a blocking connect would wait.
async fn connect<S, F, Fut>(mut attempt: F, what: &str) -> Result<TokioIo<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let tries = async {
        loop {
            match attempt().await {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, tries).await {
        Ok(Ok(s)) => Ok(TokioIo::new(s)),
        Ok(Err(e)) => Err(ClientError::NotRunning(format!(
            "cannot connect to {what}: {e}"
        ))),
        Err(_) => Err(ClientError::NotRunning(format!(
            "{what} did not accept the connection within {}s (the agent is stopped or \
             overloaded)",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Reads a 2xx answer's body as `T`.
///
/// The error names where the answer broke and, for a missing field, which one, but never
/// quotes the answer: serde's own messages echo a wrongly typed value (`invalid type: string
/// "..."`), and a token answer's values are secrets.
pub fn read_answer<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        let what = match text.split_once(" at line ") {
            Some((m, _)) if m.starts_with("missing field `") => m.to_string(),
            _ => format!("{:?} error", e.classify()).to_lowercase(),
        };
        ClientError::Protocol(format!(
            "the agent's answer does not have the expected shape: {what} at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

/// The API path of a profile's token (the name percent-encoded as one path segment), with
/// `?min_valid=` when given.
pub fn token_path(profile: &str, min_valid: Option<u64>) -> String {
    let p = encode_segment(profile);
    match min_valid {
        Some(s) => format!("/v1/token/{p}?min_valid={s}"),
        None => format!("/v1/token/{p}"),
    }
}

fn login_path(profile: &str) -> String {
    format!("/v1/login/{}", encode_segment(profile))
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A profile or role name as one URL path segment (names are already restricted, so this
/// is a second line of defence, not the rule).
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Maps a non-2xx answer to [`ClientError::Api`] (code and message from the JSON error body).
pub fn check_status(status: u16, body: &[u8]) -> Result<(), ClientError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => Err(ClientError::Api {
            status,
            code: e.error,
            message: e.message,
        }),
        Err(_) => Err(ClientError::Api {
            status,
            code: "http_error".into(),
            message: format!("the agent answered HTTP {status}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_malformed_answer_is_described_without_quoting_it() {
        let wrong_type =
            br#"{"access_token":"tok-0123456789","token_type":"Bearer","expires_at":null,"expires_in":"eyJsecret-value","scope":null,"profile":"dev"}"#;
        let err = read_answer::<protocol::TokenAnswer<'static>>(wrong_type)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("eyJsecret-value"), "{err}");
        assert!(err.contains("data error at line 1 column"), "{err}");
        let missing = read_answer::<protocol::TokenAnswer<'static>>(br#"{"token_type":"Bearer"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing.contains("missing field `access_token`"),
            "{missing}"
        );
    }

    /// An "agent" on the socket that answers one request with `version_header` (a whole
    /// header line, or nothing) and a `{}` body.
    async fn answer_once(paths: &Paths, version_header: &'static str) {
        let listener = tokio::net::UnixListener::bind(paths.socket()).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{version_header}content-length: 2\r\n\r\n{{}}"
            );
            let _ = s.write_all(answer.as_bytes()).await;
        });
    }

    /// Issue 21: the full client (every command but `token`) refuses an agent of another
    /// version, or one that does not say, as the `token` fast path does.
    #[tokio::test]
    async fn the_full_client_refuses_an_agent_of_another_version() {
        for (header, refused) in [("stagepass-version: 9.9.9\r\n", "9.9.9"), ("", "unknown")] {
            let (_tmp, paths) = quick::tests::runtime();
            answer_once(&paths, header).await;
            let e = Client::new(&paths)
                .unwrap()
                .get::<serde_json::Value>("/v1/status")
                .await
                .unwrap_err();
            assert!(
                matches!(&e, ClientError::VersionMismatch { agent } if agent.starts_with(refused)),
                "{e}"
            );
        }
        let (_tmp, paths) = quick::tests::runtime();
        let ours: &'static str = Box::leak(
            format!(
                "stagepass-version: {}\r\n",
                crate::protocol::version::VERSION
            )
            .into_boxed_str(),
        );
        answer_once(&paths, ours).await;
        let v = Client::new(&paths)
            .unwrap()
            .get::<serde_json::Value>("/v1/status")
            .await
            .unwrap();
        assert_eq!(v, serde_json::json!({}));
    }
}
