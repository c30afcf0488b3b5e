//! The MCP tools: their JSON schemas and what each answers.
//!
//! Every answer is built from the catalog files ([`super::repo`]) and from the running
//! agent's ownership diff and status ([`super::agent`]); no tool ever asks the agent for a
//! token, so no token can reach an answer.

use super::agent::AgentLink;
use super::repo::{InputError, Located, Snapshot, owner_text, summary};
use crate::catalog::refs::parse_ref;
use crate::protocol::DiffReport;
use crate::protocol::catalog::Change;
use serde::Deserialize;
use serde_json::{Value, json};

/// Why a tool call failed: bad input (the client's fault) or a failure to answer.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Arguments missing, of the wrong shape, or naming something outside the repository.
    #[error("{0}")]
    Invalid(String),
    /// No tool of that name.
    #[error("unknown tool {0:?}; call tools/list for the tools served")]
    UnknownTool(String),
    /// The repository could not be scanned.
    #[error("{0}")]
    Internal(String),
}

impl From<InputError> for ToolError {
    fn from(e: InputError) -> Self {
        ToolError::Invalid(e.to_string())
    }
}

/// Name, description and input schema of one tool.
pub struct ToolSpec {
    /// Tool name.
    pub name: &'static str,
    /// What it answers, for the assistant.
    pub description: &'static str,
    /// JSON schema of its arguments.
    pub schema: Value,
}

/// The tools served, in the order `tools/list` shows them.
pub fn specs() -> Vec<ToolSpec> {
    let none = json!({"type": "object", "properties": {}, "additionalProperties": false});
    vec![
        ToolSpec {
            name: "who_owns",
            description: "Who owns a path of the repository or a catalog entity: the owner the \
                catalog files say and the owner Backstage holds, and the difference if any. A \
                path resolves to the nearest catalog entity owning its directory. Give exactly \
                one of `path` (relative to the repository root) or `entity` \
                ([kind:][namespace/]name, kind defaults to component).",
            schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "A file or directory in the repository"},
                    "entity": {"type": "string", "description": "An entity reference, e.g. component:default/payments"}
                },
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "list_entities",
            description: "The repository's catalog entities with kind, owner, lifecycle, \
                system, type and the file:line defining them.",
            schema: none.clone(),
        },
        ToolSpec {
            name: "validate_catalog",
            description: "Validates every catalog file like `stagepass catalog check`: findings \
                as file:line:col with the rule broken.",
            schema: none.clone(),
        },
        ToolSpec {
            name: "ownership_diff",
            description: "Owner changes in the catalog files not yet in Backstage (and entities \
                Backstage does not hold yet), plus pushes waiting in the agent's outbox.",
            schema: none.clone(),
        },
        ToolSpec {
            name: "whoami",
            description: "Who is signed in: per profile the sign-in state, and the subject and \
                groups of the ID token claims when the agent holds them; for a profile signed in \
                to Backstage as the user, the Backstage user entity and its ownership refs (the \
                user and their groups). Never a token.",
            schema: none.clone(),
        },
        ToolSpec {
            name: "my_entities",
            description: "Which of the repository's catalog entities the signed-in Backstage \
                user owns, directly or through a group (their ownership refs from Backstage). \
                With `entities`, judges those: `judged` says per entity whether the user owns \
                it (null when no catalog file of the repository defines it), and `entities` \
                lists the owned ones. Empty, with the reason, when no profile is signed in to \
                Backstage as a user.",
            schema: json!({
                "type": "object",
                "properties": {
                    "entities": {
                        "type": "array",
                        "items": {"type": "string"},
                        "maxItems": MAX_JUDGED,
                        "description": "Entity references to judge ([kind:][namespace/]name, kind defaults to component); all of the repository's when absent"
                    }
                },
                "additionalProperties": false
            }),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhoOwnsArgs {
    path: Option<String>,
    entity: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Most entities one `my_entities` call judges (a repository's catalog is far smaller; the
/// bound keeps one call's work and answer small).
const MAX_JUDGED: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MyEntitiesArgs {
    entities: Option<Vec<String>>,
}

fn args<T: serde::de::DeserializeOwned>(
    tool: &str,
    raw: Option<serde_json::Map<String, Value>>,
) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(raw.unwrap_or_default()))
        .map_err(|e| ToolError::Invalid(format!("{tool}: invalid arguments: {e}")))
}

/// Runs one tool against a fresh scan of the repository.
pub async fn call(
    name: &str,
    raw: Option<serde_json::Map<String, Value>>,
    snap: &Snapshot,
    agent: &AgentLink,
) -> Result<Value, ToolError> {
    match name {
        "who_owns" => {
            let a: WhoOwnsArgs = args(name, raw)?;
            who_owns(a, snap, agent).await
        }
        "list_entities" => {
            let _: NoArgs = args(name, raw)?;
            let entities: Vec<Value> = snap.entities().map(|l| summary(&l)).collect();
            Ok(json!({"count": entities.len(), "entities": entities}))
        }
        "validate_catalog" => {
            let _: NoArgs = args(name, raw)?;
            Ok(validate(snap))
        }
        "ownership_diff" => {
            let _: NoArgs = args(name, raw)?;
            Ok(ownership_diff(agent).await)
        }
        "whoami" => {
            let _: NoArgs = args(name, raw)?;
            Ok(whoami(agent).await)
        }
        "my_entities" => {
            let a: MyEntitiesArgs = args(name, raw)?;
            my_entities(a.entities.as_deref(), snap, agent).await
        }
        other => Err(ToolError::UnknownTool(other.to_string())),
    }
}

fn validate(snap: &Snapshot) -> Value {
    let findings: Vec<Value> = snap
        .findings
        .iter()
        .map(|f| {
            json!({
                "location": format!("{}:{}:{}", f.file.display(), f.line, f.col),
                "file": f.file.display().to_string(),
                "line": f.line,
                "col": f.col,
                "message": f.message,
                "rule": f.rule,
                "text": f.to_string(),
            })
        })
        .collect();
    let entities = snap.entities().count();
    json!({
        "valid": findings.is_empty(),
        "files": snap.files.len(),
        "entities": entities,
        "findings": findings,
    })
}

/// What Backstage holds for an entity, read from the agent's live diff: an entity the diff
/// does not mention is held with the files' owner.
#[derive(Debug, PartialEq)]
enum Held {
    /// Backstage holds it with this owner.
    Owner(Option<String>),
    /// Backstage does not hold it (yet).
    Missing,
    /// The diff could not be had.
    Unknown(String),
}

fn held(diff: &Result<DiffReport, String>, key: &str, files_owner: Option<&str>) -> Held {
    let report = match diff {
        Ok(r) => r,
        Err(e) => return Held::Unknown(e.clone()),
    };
    if let Some(e) = &report.error {
        return Held::Unknown(e.clone());
    }
    let same = |entity: &str| {
        parse_ref(entity, Some("component"), "default").is_ok_and(|r| r.key() == key)
    };
    let about = |c: &&Change| match c {
        Change::Added { entity, .. }
        | Change::Removed { entity, .. }
        | Change::OwnerChanged { entity, .. } => same(entity),
    };
    match report.changes.iter().find(about) {
        Some(Change::Added { .. }) => Held::Missing,
        Some(Change::OwnerChanged { from, .. }) => Held::Owner(from.clone()),
        _ => Held::Owner(files_owner.map(str::to_string)),
    }
}

async fn who_owns(a: WhoOwnsArgs, snap: &Snapshot, agent: &AgentLink) -> Result<Value, ToolError> {
    let (located, resolved_from): (Located<'_>, Value) = match (a.path, a.entity) {
        (Some(p), None) => {
            let rel = snap.resolve(&p)?;
            let shown = if rel.as_os_str().is_empty() {
                ".".to_string()
            } else {
                rel.display().to_string()
            };
            match snap.owner_of_path(&rel) {
                Some(l) => (l, json!({"path": shown})),
                None => {
                    return Ok(json!({
                        "path": shown,
                        "entity": null,
                        "owner": null,
                        "message": format!(
                            "no catalog entity owns {shown}: no catalog file with an owned entity \
                             in its directory or any parent up to the repository root"
                        ),
                    }));
                }
            }
        }
        (None, Some(e)) => (snap.find(&e)?, json!({"entity": e})),
        _ => {
            return Err(ToolError::Invalid(
                "who_owns: give exactly one of `path` or `entity`".into(),
            ));
        }
    };
    let files_owner = owner_text(located.entity.owner.as_ref());
    let key = located.entity.entity_ref.key();
    let diff = agent.diff().await;
    let mut out = summary(&located);
    out["query"] = resolved_from;
    out["owner_in_files"] = json!(files_owner);
    match held(&diff, &key, files_owner.as_deref()) {
        Held::Owner(o) => {
            let differs = o != files_owner;
            out["owner_in_backstage"] = json!(o);
            out["in_backstage"] = json!(true);
            out["differs"] = json!(differs);
            if differs {
                out["difference"] = json!(format!(
                    "Backstage still has {}; the files say {} (pending until the change is \
                     pushed and the entity refreshed)",
                    o.as_deref().unwrap_or("no owner"),
                    files_owner.as_deref().unwrap_or("no owner")
                ));
            }
        }
        Held::Missing => {
            out["owner_in_backstage"] = Value::Null;
            out["in_backstage"] = json!(false);
            out["differs"] = json!(true);
            out["difference"] =
                json!("Backstage does not hold this entity yet (not registered or not synced)");
        }
        Held::Unknown(why) => {
            out["owner_in_backstage"] = Value::Null;
            out["in_backstage"] = Value::Null;
            out["differs"] = Value::Null;
            out["backstage_error"] = json!(why);
        }
    }
    Ok(out)
}

async fn ownership_diff(agent: &AgentLink) -> Value {
    let (changes, error) = match agent.diff().await {
        Ok(d) => (d.changes, d.error),
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut out = json!({"changes": changes, "error": error});
    if let (Ok(status), Some(o)) = (agent.catalog().await, out.as_object_mut()) {
        let backstage = status.backstage.as_ref();
        o.insert("pending_pushes".into(), json!(status.outbox));
        o.insert(
            "backstage".into(),
            json!({
                "url": backstage.map(|b| &b.url),
                "reachable": backstage.and_then(|b| b.reachable),
            }),
        );
    }
    out
}

async fn whoami(agent: &AgentLink) -> Value {
    match agent.status().await {
        Ok(status) => {
            let profiles: Vec<Value> = status
                .profiles
                .iter()
                .map(|p| {
                    let id = p.identity.as_ref();
                    json!({
                        "profile": p.profile,
                        "grant": p.grant,
                        "state": p.state,
                        "reason": p.reason,
                        "subject": id.and_then(|i| i.sub.as_deref()),
                        "groups": id.map(|i| &i.groups),
                        "ownership_refs": id.map_or(&[][..], |i| &i.ent),
                    })
                })
                .collect();
            json!({"profiles": profiles})
        }
        Err(e) => json!({"profiles": [], "error": e}),
    }
}

/// One entity a caller asked about: `Some` when a catalog file of the repository defines it.
type Asked<'a> = (String, Option<Located<'a>>);

/// Parses the entities a caller asked about; a malformed reference is the caller's error,
/// one the repository does not define is answered as unknown.
fn asked<'a>(snap: &'a Snapshot, refs: &[String]) -> Result<Vec<Asked<'a>>, ToolError> {
    if refs.len() > MAX_JUDGED {
        return Err(ToolError::Invalid(format!(
            "my_entities: at most {MAX_JUDGED} entities per call"
        )));
    }
    refs.iter()
        .map(|text| match snap.find(text) {
            Ok(l) => Ok((l.entity.entity_ref.to_string(), Some(l))),
            Err(InputError::UnknownEntity(r)) => Ok((r, None)),
            Err(e) => Err(ToolError::Invalid(format!("my_entities: {e}"))),
        })
        .collect()
}

/// The signed-in Backstage user (the first profile whose identity has ownership refs) and
/// the repository's entities they own; with `judge`, only those entities, each judged.
async fn my_entities(
    judge: Option<&[String]>,
    snap: &Snapshot,
    agent: &AgentLink,
) -> Result<Value, ToolError> {
    let asked = judge.map(|refs| asked(snap, refs)).transpose()?;
    let status = match agent.status().await {
        Ok(s) => s,
        Err(e) => return Ok(json!({"user": null, "entities": [], "error": e})),
    };
    let signed_in = status.profiles.iter().find_map(|p| {
        p.identity
            .as_ref()
            .filter(|i| !i.ent.is_empty())
            .map(|i| (p, i))
    });
    let Some((p, id)) = signed_in else {
        return Ok(json!({
            "user": null,
            "entities": [],
            "error": "no profile is signed in to Backstage as a user (configure a Backstage \
                      sign-in profile, then run `stagepass login PROFILE`)",
        }));
    };
    let owned = snap.owned_by(&id.ent);
    let is_owned = |l: &Located<'_>| {
        owned
            .iter()
            .any(|o| o.entity.entity_ref.key() == l.entity.entity_ref.key())
    };
    let mut out = json!({
        "user": id.sub,
        "profile": p.profile,
        "ownership_refs": id.ent,
    });
    let entities: Vec<Value> = match &asked {
        None => owned.iter().map(summary).collect(),
        Some(asked) => {
            let judged: Vec<Value> = asked
                .iter()
                .map(|(entity, l)| match l {
                    Some(l) => json!({
                        "entity": entity,
                        "owned": is_owned(l),
                        "owner": owner_text(l.entity.owner.as_ref()),
                    }),
                    None => json!({
                        "entity": entity,
                        "owned": null,
                        "reason": "no catalog file of this repository defines it",
                    }),
                })
                .collect();
            out["judged"] = json!(judged);
            asked
                .iter()
                .filter_map(|(_, l)| l.as_ref().filter(|l| is_owned(l)).map(summary))
                .collect()
        }
    };
    out["count"] = json!(entities.len());
    out["entities"] = json!(entities);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backstage_owner_comes_from_the_diff() {
        let key = "component:default/pay";
        let diff = Ok(DiffReport {
            changes: vec![
                Change::OwnerChanged {
                    entity: "component:default/pay".into(),
                    from: Some("group:team-a".into()),
                    to: Some("group:team-b".into()),
                },
                Change::Added {
                    entity: "component:default/new".into(),
                    owner: Some("group:x".into()),
                },
            ],
            error: None,
            failed: Vec::new(),
        });
        assert_eq!(
            held(&diff, key, Some("group:team-b")),
            Held::Owner(Some("group:team-a".into()))
        );
        assert_eq!(
            held(&diff, "component:default/new", Some("group:x")),
            Held::Missing
        );
        assert_eq!(
            held(&diff, "component:default/same", Some("group:y")),
            Held::Owner(Some("group:y".into()))
        );
        let down = DiffReport {
            error: Some("Backstage unreachable".into()),
            ..DiffReport::default()
        };
        assert!(matches!(
            held(&Ok(down), key, None),
            Held::Unknown(e) if e.contains("unreachable")
        ));
    }

    #[test]
    fn every_tool_has_an_object_schema() {
        for s in specs() {
            assert_eq!(s.schema["type"], "object", "{}", s.name);
        }
    }
}
