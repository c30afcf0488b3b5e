//! A small in-process stand-in for Backstage's catalog API, for unit tests of the push
//! worker's decisions (refresh vs register, dry run, retries, token refusal). The end-to-end
//! tests in `tests/` run against the real Backstage.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: Option<String>,
    pub body: serde_json::Value,
}

#[derive(Default)]
pub struct State {
    /// Entities by key, with their owner ref (as Backstage would hold them).
    pub entities: HashMap<String, Option<String>>,
    /// What a dry run of each URL yields (entity refs).
    pub locations: HashMap<String, Vec<String>>,
    /// Registered location URLs (id = index + 1).
    pub registered: Vec<String>,
    /// The location URL each entity came from.
    pub origin: HashMap<String, String>,
    /// Answer every request with this status instead.
    pub fail_with: Option<u16>,
    /// Only this bearer token is accepted (401 otherwise), when set.
    pub accept_token: Option<String>,
    /// An owner-only refresh policy for a user with these ownership refs, when set:
    /// refreshing an entity another group owns, or a Location entity (no owner), is 403
    /// `NotAllowedError`, as Backstage's `isEntityOwner` condition answers.
    pub owner_policy: Option<Vec<String>>,
    pub seen: Vec<Seen>,
}

pub struct Fake {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Self { url, state, task }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Requests to `path` (exact, query included).
    pub fn calls(&self, method: &str, path: &str) -> Vec<Seen> {
        self.with(|s| {
            s.seen
                .iter()
                .filter(|r| r.method == method && r.path == path)
                .cloned()
                .collect()
        })
    }
}

fn json(status: u16, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

async fn handle(
    st: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut s = st.lock().unwrap();
    s.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        auth: auth.clone(),
        body: body.clone(),
    });
    if let Some(code) = s.fail_with {
        return Ok(json(
            code,
            serde_json::json!({"error": {"name": "Error", "message": "injected"}}),
        ));
    }
    if let Some(t) = &s.accept_token
        && auth.as_deref() != Some(&format!("Bearer {t}"))
    {
        return Ok(json(
            401,
            serde_json::json!({"error": {"name": "AuthenticationError", "message": "Illegal token"}}),
        ));
    }
    let entity = |key: &str, owner: &Option<String>, origin: Option<&String>| {
        let (kind, rest) = key.split_once(':').unwrap();
        let (ns, name) = rest.split_once('/').unwrap();
        let mut e = serde_json::json!({"kind": kind, "metadata": {"name": name, "namespace": ns}});
        if let Some(o) = owner {
            e["spec"] = serde_json::json!({"owner": o});
            e["relations"] = serde_json::json!([{"type": "ownedBy", "targetRef": o}]);
        }
        if let Some(u) = origin {
            e["metadata"]["annotations"] =
                serde_json::json!({"backstage.io/managed-by-location": format!("url:{u}")});
        }
        e
    };
    // The Location entity of registered location `id` (1-based), as Backstage names it.
    let location_ref = |id: usize| format!("location:default/generated-{id}");
    let registered_id =
        |s: &State, url: &str| s.registered.iter().position(|r| r == url).map(|i| i + 1);
    let resp = match (method.as_str(), path.as_str()) {
        ("POST", "/api/catalog/entities/by-refs") => {
            let items: Vec<serde_json::Value> = body["entityRefs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let k = r.as_str().unwrap().to_ascii_lowercase();
                    s.entities
                        .get(&k)
                        .map_or(serde_json::Value::Null, |o| entity(&k, o, s.origin.get(&k)))
                })
                .collect();
            json(200, serde_json::json!({"items": items}))
        }
        ("POST", "/api/catalog/refresh")
            if s.owner_policy.as_ref().is_some_and(|claims| {
                let k = body["entityRef"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let owner = s.entities.get(&k).cloned().flatten();
                !owner.is_some_and(|o| claims.contains(&o))
            }) =>
        {
            json(
                403,
                serde_json::json!({"error": {"name": "NotAllowedError", "message": ""}}),
            )
        }
        ("POST", "/api/catalog/refresh") => {
            let k = body["entityRef"].as_str().unwrap().to_ascii_lowercase();
            let is_location = (1..=s.registered.len())
                .any(|id| location_ref(id) == k && !s.registered[id - 1].is_empty());
            if is_location || s.entities.contains_key(&k) {
                json(200, serde_json::json!({}))
            } else {
                json(
                    404,
                    serde_json::json!({"error": {"name": "NotFoundError", "message": "no entity"}}),
                )
            }
        }
        ("POST", "/api/catalog/validate-entity") => {
            if body["entity"]["spec"]["owner"] == "wordy-owner" {
                // A hostile or buggy Backstage: 300 errors of 10 KB each.
                let errors: Vec<_> = (0..300)
                    .map(|i| serde_json::json!({"name": "InputError", "message": format!("error {i}: {}", "x".repeat(10_000))}))
                    .collect();
                json(400, serde_json::json!({ "errors": errors }))
            } else if body["entity"]["spec"]["owner"] == "forbidden-owner" {
                json(
                    400,
                    serde_json::json!({"errors": [{"name": "InputError", "message": "owner not allowed here"}]}),
                )
            } else {
                json(200, serde_json::json!({}))
            }
        }
        ("GET", p) if p.starts_with("/api/catalog/locations/by-entity/") => {
            let key = p["/api/catalog/locations/by-entity/".len()..].replacen('/', ":", 1);
            match s.origin.get(&key).and_then(|u| {
                s.registered
                    .iter()
                    .position(|r| r == u)
                    .map(|i| (i + 1, u.clone()))
            }) {
                Some((id, target)) => json(
                    200,
                    serde_json::json!({"id": id.to_string(), "type": "url", "target": target}),
                ),
                None => json(
                    404,
                    serde_json::json!({"error": {"name": "NotFoundError", "message": "no location"}}),
                ),
            }
        }
        ("GET", p)
            if p.starts_with("/api/catalog/entities/by-name/") && p.ends_with("/ancestry") =>
        {
            let key = p["/api/catalog/entities/by-name/".len()..p.len() - "/ancestry".len()]
                .replacen('/', ":", 1)
                .to_ascii_lowercase();
            if s.entities.contains_key(&key) {
                let parents: Vec<String> = s
                    .origin
                    .get(&key)
                    .and_then(|u| registered_id(&s, u))
                    .map(location_ref)
                    .into_iter()
                    .collect();
                json(
                    200,
                    serde_json::json!({"rootEntityRef": key, "items": [
                        {"entity": entity(&key, &None, None), "parentEntityRefs": parents}]}),
                )
            } else {
                json(
                    404,
                    serde_json::json!({"error": {"name": "NotFoundError", "message": "no entity"}}),
                )
            }
        }
        ("GET", "/api/catalog/locations") => {
            let items: Vec<serde_json::Value> = s
                .registered
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.is_empty())
                .map(|(i, t)| {
                    serde_json::json!({"data": {"id": (i + 1).to_string(), "type": "url", "target": t, "entityRef": location_ref(i + 1)}})
                })
                .collect();
            json(200, serde_json::json!(items))
        }
        ("DELETE", p) if p.starts_with("/api/catalog/locations/") => {
            let id: usize = p["/api/catalog/locations/".len()..].parse().unwrap_or(0);
            match s.registered.get_mut(id.wrapping_sub(1)) {
                Some(t) if !t.is_empty() => {
                    t.clear();
                    json(204, serde_json::json!({}))
                }
                _ => json(
                    404,
                    serde_json::json!({"error": {"name": "NotFoundError", "message": "no location"}}),
                ),
            }
        }
        ("POST", p) if p.starts_with("/api/catalog/locations") => {
            let target = body["target"].as_str().unwrap().to_string();
            let dry = p.contains("dryRun=true");
            if s.registered.contains(&target) {
                json(
                    409,
                    serde_json::json!({"error": {"name": "ConflictError", "message": "exists"}}),
                )
            } else {
                let refs = s.locations.get(&target).cloned();
                match refs {
                    None => json(
                        400,
                        serde_json::json!({"error": {"name": "InputError", "message": "not found"}}),
                    ),
                    Some(refs) => {
                        let entities: Vec<serde_json::Value> =
                            refs.iter().map(|r| entity(r, &None, None)).collect();
                        if !dry {
                            s.registered.push(target.clone());
                            for r in &refs {
                                s.entities.insert(r.clone(), None);
                                s.origin.insert(r.clone(), target.clone());
                            }
                        }
                        json(
                            201,
                            serde_json::json!({"location": {"id": "1", "type": "url", "target": target}, "entities": entities}),
                        )
                    }
                }
            }
        }
        _ => json(
            404,
            serde_json::json!({"error": {"name": "NotFoundError", "message": "no route"}}),
        ),
    };
    Ok(resp)
}
