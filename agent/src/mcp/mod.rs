//! `stagepass mcp`: a Model Context Protocol server over stdio, so AI assistants running next
//! to the agent can read the repository's catalog and ownership without ever seeing a token.
//!
//! - [`repo`]: the catalog files as the files say them; path and reference validation.
//! - [`agent`]: what the running agent knows (Backstage's owners via the diff, sign-in state).
//! - [`tools`]: `who_owns`, `list_entities`, `validate_catalog`, `ownership_diff`, `whoami`.
//! - [`Server`]: the `rmcp` handler: tools, and one resource per catalog file.
//!
//! What never crosses MCP: access or refresh tokens (no tool asks the agent for one), the
//! per-boot API secret or its file path, `Authorization` headers. Bad input (a path outside
//! the repository, unknown arguments, an unknown entity or tool) is an MCP `invalid_params`
//! error and the server keeps serving.

pub mod agent;
pub mod repo;
pub mod tools;

use crate::catalog::discover::Matcher;
use crate::config::CatalogGlobs;
use agent::AgentLink;
use repo::Snapshot;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use std::path::PathBuf;
use std::sync::Arc;

/// URI scheme prefix of the per-file resources: `catalog:///svc/catalog-info.yaml`.
pub const RESOURCE_PREFIX: &str = "catalog:///";

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The stdio transport failed to start or broke.
    #[error("MCP transport: {0}")]
    Transport(String),
}

/// The MCP server of one repository.
#[derive(Clone)]
pub struct Server {
    root: PathBuf,
    /// The configured globs, compiled when the config was read: every tool call scans.
    matcher: Arc<Matcher>,
    agent: AgentLink,
    redact: Arc<Vec<String>>,
}

impl Server {
    /// A server over the repository at `root` (catalog globs as configured), asking the
    /// agent of `agent` for Backstage's side.
    pub fn new(root: PathBuf, globs: &CatalogGlobs, agent: AgentLink) -> Self {
        Self {
            root,
            matcher: Arc::new(Matcher::configured(globs)),
            agent,
            redact: Arc::new(Vec::new()),
        }
    }

    /// Texts that must never appear in an answer or error (secret file paths): a second line
    /// of defence behind answers built from non-secret data only, for text relayed from the
    /// agent (a profile's failure reason may name its client secret file).
    pub fn with_redactions(mut self, needles: Vec<String>) -> Self {
        self.redact = Arc::new(needles.into_iter().filter(|n| n.len() >= 4).collect());
        self
    }

    fn scrub(&self, text: String) -> String {
        self.redact
            .iter()
            .fold(text, |t, n| t.replace(n.as_str(), "[redacted]"))
    }

    fn scrub_value(&self, v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(self.scrub(s)),
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(|x| self.scrub_value(x)).collect())
            }
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.into_iter()
                    .map(|(k, x)| (k, self.scrub_value(x)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Serves MCP on stdin/stdout until the client closes them.
    pub async fn serve_stdio(self) -> Result<(), McpError> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        Ok(())
    }

    /// A fresh scan (tools always answer from the files as they are now).
    fn scan(&self) -> Snapshot {
        Snapshot::scan(&self.root, &self.matcher)
    }
}

fn to_error(e: tools::ToolError) -> ErrorData {
    match e {
        tools::ToolError::Invalid(m) => ErrorData::invalid_params(m, None),
        e @ tools::ToolError::UnknownTool(_) => ErrorData::invalid_params(e.to_string(), None),
        tools::ToolError::Internal(m) => ErrorData::internal_error(m, None),
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("stagepass", env!("CARGO_PKG_VERSION"))
                .with_title("stagepass catalog and ownership"),
        )
        .with_instructions(
            "Catalog and ownership of this repository: who_owns for a path or entity, \
             list_entities, validate_catalog, ownership_diff against Backstage, whoami. \
             Resources: each catalog file's entities as JSON.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = tools::specs()
            .into_iter()
            .map(|s| {
                let schema = match s.schema {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                Tool::new(s.name, s.description, Arc::new(schema))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let span = tracing::debug_span!("mcp_tool", tool = %request.name);
        let _g = span.enter();
        let snap = self.scan();
        drop(_g);
        let value = tools::call(&request.name, request.arguments, &snap, &self.agent)
            .await
            .map_err(|e| {
                let mut e = to_error(e);
                e.message = self.scrub(e.message.into_owned()).into();
                e
            })?;
        Ok(CallToolResult::structured(self.scrub_value(value)).into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let snap = self.scan();
        let items = snap
            .files
            .iter()
            .map(|(file, report)| {
                let shown = file.display().to_string();
                Resource::new(format!("{RESOURCE_PREFIX}{shown}"), shown.clone())
                    .with_description(format!(
                        "{} entit{} defined in {shown}",
                        report.entities.len(),
                        if report.entities.len() == 1 {
                            "y"
                        } else {
                            "ies"
                        }
                    ))
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(items))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let Some(rel) = request.uri.strip_prefix(RESOURCE_PREFIX) else {
            return Err(ErrorData::invalid_params(
                format!("resource URIs start with {RESOURCE_PREFIX}"),
                None,
            ));
        };
        let snap = self.scan();
        let rel = snap
            .resolve(rel)
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
        let Some(report) = snap.files.get(&rel) else {
            return Err(ErrorData::resource_not_found(
                format!("{} is not a catalog file of this repository", rel.display()),
                None,
            ));
        };
        let body = serde_json::json!({
            "file": rel.display().to_string(),
            "entities": report.entities.iter().map(|e| serde_json::json!({
                "entity": e.entity_ref.to_string(),
                "line": e.pos.line,
                "definition": e.json,
            })).collect::<Vec<_>>(),
            "findings": report.findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        let body = self.scrub_value(body);
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(body.to_string(), request.uri)
                .with_mime_type("application/json"),
        ])
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactions_reach_every_string_of_an_answer() {
        let s = Server::new(
            PathBuf::from("/r"),
            &CatalogGlobs::default(),
            AgentLink::new(crate::paths::Paths {
                config_files: Vec::new(),
                state_dir: PathBuf::from("/nonexistent/state"),
                runtime_dir: PathBuf::from("/nonexistent/run"),
            }),
        )
        .with_redactions(vec!["/home/u/ci-secret".into(), "x".into()]);
        let v = s.scrub_value(serde_json::json!({
            "profiles": [{"reason": "cannot read client secret file /home/u/ci-secret: gone"}],
            "n": 1,
            "x": "x stays: too short to be a path"
        }));
        assert_eq!(
            v["profiles"][0]["reason"],
            "cannot read client secret file [redacted]: gone"
        );
        assert_eq!(v["x"], "x stays: too short to be a path");
    }
}
