//! The few calls of Backstage's catalog REST API the sync needs, with answers parsed into
//! typed values and failures sorted by what the caller must do about them: retry later
//! (unreachable, 5xx), stop and ask for a new token (401/403), or show the error on the entity
//! (other 4xx).

use super::refs::EntityRef;
use crate::secret::Secret;
use serde::Deserialize;
use std::time::Duration;

/// Why a Backstage call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackstageError {
    /// No answer (connection refused, timeout, DNS).
    #[error("Backstage unreachable: {0}")]
    Unreachable(String),
    /// 5xx: Backstage is there but failing.
    #[error("Backstage answered {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// 401/403: the token is missing, refused or has the wrong audience.
    #[error("Backstage refused the token ({status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// 403 `NotAllowedError`: the token is fine, but Backstage's permission policy refuses
    /// its user this action (a user token: e.g. refreshing an entity another team owns).
    #[error("Backstage's permission policy refused {permission} on {target} (403 NotAllowedError{})", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Denied {
        /// The Backstage permission the call needs (`catalog.entity.refresh`, ...).
        permission: &'static str,
        /// The entity or location it was asked for.
        target: String,
        /// Backstage's message (usually empty).
        message: String,
    },
    /// Another 4xx: the request itself is wrong (bad file, rules, unknown entity).
    #[error("Backstage rejected the request ({status}): {message}")]
    Client {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The dry run of a registration does not produce the entity (`catalog.rules`).
    #[error("{0}")]
    DryRun(String),
    /// A 2xx whose body is not what the API documents.
    #[error("unexpected answer from Backstage: {0}")]
    BadAnswer(String),
}

impl BackstageError {
    /// Names the permission and target of a [`BackstageError::Denied`] (the answer itself
    /// does not say which permission was refused; the endpoint does).
    fn needing(self, permission: &'static str, target: impl std::fmt::Display) -> Self {
        match self {
            Self::Denied { message, .. } => Self::Denied {
                permission,
                target: target.to_string(),
                message,
            },
            other => other,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Server { .. })
    }
}

/// The annotation naming the location an entity was read from (`url:https://...`).
pub const MANAGED_BY_LOCATION: &str = "backstage.io/managed-by-location";
/// The annotation Backstage's stitcher puts on an entity no location emits any more.
pub const ORPHAN: &str = "backstage.io/orphan";

/// What Backstage holds for an entity (the fields the diff and the push need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntity {
    /// Its reference.
    pub entity_ref: EntityRef,
    /// `spec.owner` resolved the way Backstage resolved it (`ownedBy` relation), if any.
    pub owner: Option<EntityRef>,
    /// The location it was read from ([`MANAGED_BY_LOCATION`]), e.g. `url:https://...`.
    pub location: Option<String>,
    /// Marked [`ORPHAN`] by Backstage.
    pub orphan: bool,
}

/// A registered location, as `GET /locations` and `GET /locations/by-entity` list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredLocation {
    /// Backstage's id (for `DELETE /locations/{id}`).
    pub id: String,
    /// `url`, `file`, ...
    pub kind: String,
    /// What it points at.
    pub target: String,
    /// The Location entity Backstage made for it (`location:default/generated-...`).
    pub entity_ref: Option<EntityRef>,
}

/// Outcome of registering a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Created (or would be, in a dry run), with the entities it yields.
    Created(Vec<EntityRef>),
    /// Already registered (409, or `exists` in a dry run).
    AlreadyExists,
}

/// Client of one Backstage's catalog API.
#[derive(Clone)]
pub struct Backstage {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorInner>,
    errors: Option<Vec<ErrorInner>>,
}

#[derive(Deserialize)]
struct ErrorInner {
    name: Option<String>,
    message: Option<String>,
}

impl Backstage {
    /// A client for `base_url` (e.g. `http://127.0.0.1:7007`).
    pub fn new(base_url: &str) -> Result<Self, BackstageError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| BackstageError::Unreachable(e.to_string()))?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), BackstageError> {
        let url = format!("{}/api/catalog{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| BackstageError::Unreachable(without_url(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| BackstageError::Unreachable(without_url(&e)))?;
        Ok((status, bytes.to_vec()))
    }

    /// A 404 that is not Backstage's own `NotFoundError` comes from a router without the
    /// catalog mounted yet (Backstage answers before its plugins are up): retry later.
    fn is_not_ready_404(status: u16, body: &[u8]) -> bool {
        status == 404 && error_name(body).as_deref() != Some("NotFoundError")
    }

    /// Sorts a non-2xx answer into an error. A 404 from an endpoint that always exists
    /// means the catalog is not up yet, which is retryable like a 5xx.
    fn error(status: u16, body: &[u8]) -> BackstageError {
        if status == 404 {
            return BackstageError::Server {
                status,
                message: format!("catalog API not available yet: {}", error_message(body)),
            };
        }
        if status == 403 && error_name(body).as_deref() == Some("NotAllowedError") {
            return BackstageError::Denied {
                permission: "",
                target: String::new(),
                message: error_message(body)
                    .trim_start_matches("NotAllowedError")
                    .trim_start_matches(": ")
                    .to_string(),
            };
        }
        let message = error_message(body);
        match status {
            401 | 403 => BackstageError::Auth { status, message },
            400..=499 => BackstageError::Client { status, message },
            _ => BackstageError::Server { status, message },
        }
    }

    /// `POST /entities/by-refs`: what Backstage holds for each ref, in order.
    pub async fn by_refs(
        &self,
        refs: &[EntityRef],
        token: Option<&Secret>,
    ) -> Result<Vec<Option<RemoteEntity>>, BackstageError> {
        let mut out = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(200) {
            let body = serde_json::json!({
                "entityRefs": chunk.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "fields": ["kind", "metadata.name", "metadata.namespace", "metadata.annotations", "spec.owner", "relations"],
            });
            let (status, bytes) = self
                .send(
                    reqwest::Method::POST,
                    "/entities/by-refs",
                    token,
                    Some(body),
                )
                .await?;
            if !(200..300).contains(&status) {
                return Err(Self::error(status, &bytes));
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| BackstageError::BadAnswer(format!("by-refs: {e}")))?;
            let items = v
                .get("items")
                .and_then(|i| i.as_array())
                .ok_or_else(|| BackstageError::BadAnswer("by-refs: no items array".into()))?;
            if items.len() != chunk.len() {
                return Err(BackstageError::BadAnswer(format!(
                    "by-refs: asked {} refs, got {} items",
                    chunk.len(),
                    items.len()
                )));
            }
            for (r, item) in chunk.iter().zip(items) {
                out.push(parse_remote(r, item));
            }
        }
        Ok(out)
    }

    /// `POST /validate-entity`: Backstage's own verdict; the messages when invalid.
    pub async fn validate_entity(
        &self,
        location_url: &str,
        entity: &serde_json::Value,
        token: Option<&Secret>,
    ) -> Result<Vec<String>, BackstageError> {
        let body = serde_json::json!({"location": format!("url:{location_url}"), "entity": entity});
        let (status, bytes) = self
            .send(reqwest::Method::POST, "/validate-entity", token, Some(body))
            .await?;
        match status {
            200..=299 => Ok(Vec::new()),
            400 => {
                let parsed: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
                let mut msgs: Vec<String> = parsed
                    .and_then(|b| b.errors)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|e| e.message)
                    .collect();
                if msgs.is_empty() {
                    msgs.push(error_message(&bytes));
                }
                Ok(msgs)
            }
            _ => Err(Self::error(status, &bytes)),
        }
    }

    /// `POST /locations[?dryRun=true]` for a `url` location.
    pub async fn add_location(
        &self,
        target: &str,
        dry_run: bool,
        token: Option<&Secret>,
    ) -> Result<Registration, BackstageError> {
        let path = if dry_run {
            "/locations?dryRun=true"
        } else {
            "/locations"
        };
        let body = serde_json::json!({"type": "url", "target": target});
        let (status, bytes) = self
            .send(reqwest::Method::POST, path, token, Some(body))
            .await?;
        match status {
            200..=299 => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| BackstageError::BadAnswer(format!("locations: {e}")))?;
                if v.get("exists").and_then(|e| e.as_bool()) == Some(true) {
                    return Ok(Registration::AlreadyExists);
                }
                let refs = v
                    .get("entities")
                    .and_then(|e| e.as_array())
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|e| {
                                let kind = e.get("kind")?.as_str()?;
                                let md = e.get("metadata")?;
                                let name = md.get("name")?.as_str()?;
                                let ns = md
                                    .get("namespace")
                                    .and_then(|n| n.as_str())
                                    .unwrap_or("default");
                                Some(EntityRef::new(kind, ns, name))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Registration::Created(refs))
            }
            409 => Ok(Registration::AlreadyExists),
            _ => Err(Self::error(status, &bytes).needing("catalog.location.create", target)),
        }
    }

    /// `POST /refresh` of one entity. `Ok(false)` when Backstage does not know it (404).
    pub async fn refresh(
        &self,
        entity: &EntityRef,
        token: Option<&Secret>,
    ) -> Result<bool, BackstageError> {
        let body = serde_json::json!({"entityRef": entity.to_string()});
        let (status, bytes) = self
            .send(reqwest::Method::POST, "/refresh", token, Some(body))
            .await?;
        match status {
            200..=299 => Ok(true),
            404 if !Self::is_not_ready_404(status, &bytes) => Ok(false),
            _ => Err(Self::error(status, &bytes).needing("catalog.entity.refresh", entity)),
        }
    }

    /// `GET {path}`: the JSON answer; `None` on Backstage's own 404 (`NotFoundError`).
    async fn get_json(
        &self,
        path: &str,
        what: &str,
        token: Option<&Secret>,
    ) -> Result<Option<serde_json::Value>, BackstageError> {
        let (status, bytes) = self.send(reqwest::Method::GET, path, token, None).await?;
        match status {
            200..=299 => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| BackstageError::BadAnswer(format!("{what}: {e}"))),
            404 if !Self::is_not_ready_404(status, &bytes) => Ok(None),
            _ => Err(Self::error(status, &bytes)),
        }
    }

    /// The registered location an entity came from (its origin: the location someone
    /// registered, which may be a parent of the file's own Location entity).
    pub async fn location_of(
        &self,
        entity: &EntityRef,
        token: Option<&Secret>,
    ) -> Result<Option<RegisteredLocation>, BackstageError> {
        let path = format!(
            "/locations/by-entity/{}/{}/{}",
            entity.kind, entity.namespace, entity.name
        );
        Ok(self
            .get_json(&path, "location", token)
            .await?
            .and_then(|v| parse_location(&v)))
    }

    /// `GET /locations`: every registered location.
    pub async fn locations(
        &self,
        token: Option<&Secret>,
    ) -> Result<Vec<RegisteredLocation>, BackstageError> {
        let v = self.get_json("/locations", "locations", token).await?;
        let items = v
            .as_ref()
            .and_then(|v| v.as_array())
            .ok_or_else(|| BackstageError::BadAnswer("locations: not an array".into()))?;
        Ok(items
            .iter()
            .filter_map(|i| parse_location(i.get("data").unwrap_or(i)))
            .collect())
    }

    /// The entities an entity was emitted by (`GET /entities/by-name/.../ancestry`: the
    /// root item's `parentEntityRefs`). For an entity read from a file that is the file's
    /// Location entity; empty for an orphan (and for an entity a provider emits directly).
    /// `None` when Backstage does not know the entity.
    pub async fn parents(
        &self,
        entity: &EntityRef,
        token: Option<&Secret>,
    ) -> Result<Option<Vec<EntityRef>>, BackstageError> {
        let path = format!(
            "/entities/by-name/{}/{}/{}/ancestry",
            entity.kind, entity.namespace, entity.name
        );
        match self.get_json(&path, "ancestry", token).await? {
            Some(v) => parse_parents(entity, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The Location entities whose `spec.target` is `target` (`GET /entities?filter=`):
    /// Backstage's GitHub discovery emits one per file it found, and a Location file may
    /// name a file so; neither is a registered location. Compared without case by Backstage;
    /// the caller checks the spelling. Empty for a target a filter cannot carry (a comma
    /// separates filter terms).
    pub async fn location_entities_targeting(
        &self,
        target: &str,
        token: Option<&Secret>,
    ) -> Result<Vec<(EntityRef, String)>, BackstageError> {
        if target.contains(',') {
            return Ok(Vec::new());
        }
        let filter: String = url::form_urlencoded::byte_serialize(
            format!("kind=location,spec.target={target}").as_bytes(),
        )
        .collect();
        let path = format!(
            "/entities?filter={filter}&fields=kind,metadata.name,metadata.namespace,spec.target"
        );
        let Some(v) = self.get_json(&path, "entities", token).await? else {
            return Ok(Vec::new());
        };
        let items = v
            .as_array()
            .ok_or_else(|| BackstageError::BadAnswer("entities: not an array".into()))?;
        Ok(items
            .iter()
            .filter_map(|e| {
                let md = e.get("metadata")?;
                let r = EntityRef::new(
                    "location",
                    md.get("namespace")
                        .and_then(|n| n.as_str())
                        .unwrap_or("default"),
                    md.get("name")?.as_str()?,
                );
                Some((r, e.get("spec")?.get("target")?.as_str()?.to_string()))
            })
            .collect())
    }

    /// `DELETE /locations/{id}`; a 404 counts as done.
    pub async fn delete_location(
        &self,
        id: &str,
        token: Option<&Secret>,
    ) -> Result<(), BackstageError> {
        let (status, bytes) = self
            .send(
                reqwest::Method::DELETE,
                &format!("/locations/{id}"),
                token,
                None,
            )
            .await?;
        match status {
            200..=299 => Ok(()),
            404 if !Self::is_not_ready_404(status, &bytes) => Ok(()),
            _ => Err(Self::error(status, &bytes)
                .needing("catalog.location.delete", format_args!("location {id}"))),
        }
    }
}

/// A transport error without its URL (no query strings in logs), as text.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(s) => format!("{kind}: {s}"),
        None => kind.to_string(),
    }
}

/// The `error.name` of a Backstage error body (`NotFoundError`, `InputError`, ...).
fn error_name(body: &[u8]) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    parsed.error.and_then(|e| e.name)
}

/// Backstage's `{"error":{"name","message"}}` body as one line (bounded).
fn error_message(body: &[u8]) -> String {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let msg = parsed.and_then(|b| {
        b.error
            .or_else(|| {
                b.errors
                    .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)))
            })
            .map(|e| match (e.name, e.message) {
                (Some(n), Some(m)) => format!("{n}: {m}"),
                (None, Some(m)) => m,
                (Some(n), None) => n,
                (None, None) => String::new(),
            })
    });
    let s = msg
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    s.chars().take(500).collect()
}

fn parse_remote(r: &EntityRef, item: &serde_json::Value) -> Option<RemoteEntity> {
    if item.is_null() {
        return None;
    }
    let owned_by = item
        .get("relations")
        .and_then(|rels| rels.as_array())
        .and_then(|rels| {
            rels.iter().find_map(|rel| {
                if rel.get("type")?.as_str()? != "ownedBy" {
                    return None;
                }
                let target = rel.get("targetRef")?.as_str()?;
                super::refs::parse_ref(target, None, "default").ok()
            })
        });
    let owner = owned_by.or_else(|| {
        let o = item.get("spec")?.get("owner")?.as_str()?;
        super::refs::parse_ref(o, Some("group"), &r.namespace).ok()
    });
    let annotation = |k: &str| {
        item.get("metadata")?
            .get("annotations")?
            .get(k)?
            .as_str()
            .map(str::to_string)
    };
    Some(RemoteEntity {
        entity_ref: r.clone(),
        owner,
        location: annotation(MANAGED_BY_LOCATION),
        orphan: annotation(ORPHAN).as_deref() == Some("true"),
    })
}

/// `{id, type, target, entityRef}` of a location; `None` when id or target is missing.
fn parse_location(v: &serde_json::Value) -> Option<RegisteredLocation> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Some(RegisteredLocation {
        id: s("id")?,
        kind: s("type").unwrap_or_else(|| "url".into()),
        target: s("target")?,
        entity_ref: s("entityRef").and_then(|r| super::refs::parse_ref(&r, None, "default").ok()),
    })
}

/// The parents of `entity` in an ancestry answer: the item whose entity is `entity`.
fn parse_parents(
    entity: &EntityRef,
    v: &serde_json::Value,
) -> Result<Vec<EntityRef>, BackstageError> {
    let bad = |why: &str| BackstageError::BadAnswer(format!("ancestry of {entity}: {why}"));
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| bad("no items array"))?;
    let item_ref = |item: &serde_json::Value| -> Option<EntityRef> {
        let e = item.get("entity")?;
        let md = e.get("metadata")?;
        Some(EntityRef::new(
            e.get("kind")?.as_str()?,
            md.get("namespace")
                .and_then(|n| n.as_str())
                .unwrap_or("default"),
            md.get("name")?.as_str()?,
        ))
    };
    let item = items
        .iter()
        .find(|i| item_ref(i).is_some_and(|r| r.key() == entity.key()))
        .ok_or_else(|| bad("the entity itself is not among the items"))?;
    let parents = item
        .get("parentEntityRefs")
        .and_then(|p| p.as_array())
        .ok_or_else(|| bad("no parentEntityRefs"))?;
    parents
        .iter()
        .map(|p| {
            p.as_str()
                .and_then(|p| super::refs::parse_ref(p, None, "default").ok())
                .ok_or_else(|| bad(&format!("parent {p} is not an entity reference")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_owner_from_relation_then_spec() {
        let r = EntityRef::new("component", "default", "p");
        let with_rel = serde_json::json!({"spec": {"owner": "team-a"}, "relations": [
            {"type": "ownedBy", "targetRef": "group:default/team-b"}]});
        assert_eq!(
            parse_remote(&r, &with_rel)
                .unwrap()
                .owner
                .unwrap()
                .to_string(),
            "group:default/team-b"
        );
        let spec_only = serde_json::json!({"spec": {"owner": "team-a"}});
        assert_eq!(
            parse_remote(&r, &spec_only)
                .unwrap()
                .owner
                .unwrap()
                .to_string(),
            "group:default/team-a"
        );
        assert!(parse_remote(&r, &serde_json::Value::Null).is_none());
    }

    #[test]
    fn errors_are_sorted_by_status() {
        let body = br#"{"error":{"name":"AuthenticationError","message":"Illegal token"}}"#;
        assert!(matches!(
            Backstage::error(401, body),
            BackstageError::Auth { status: 401, ref message } if message == "AuthenticationError: Illegal token"
        ));
        assert!(matches!(
            Backstage::error(400, b"x"),
            BackstageError::Client { .. }
        ));
        assert!(Backstage::error(503, b"").is_retryable());
        assert!(!Backstage::error(409, b"").is_retryable());
        // Backstage answers 404 on every route until the catalog plugin is up.
        assert!(Backstage::error(404, b"Not Found").is_retryable());
        assert!(Backstage::is_not_ready_404(404, b"Not Found"));
        let entity_missing = br#"{"error":{"name":"NotFoundError","message":"No entity"}}"#;
        assert!(!Backstage::is_not_ready_404(404, entity_missing));
    }
}
