//! AWS container credentials: STS AssumeRoleWithWebIdentity with a profile's OIDC token.
//!
//! INTERFACE STUB: the API routes `GET /v1/aws/credentials/{name}` to [`AwsService::handle`].

use crate::broker::Broker;
use crate::config::AwsRoleConfig;
use std::collections::BTreeMap;

/// Cached STS credentials per configured role.
#[derive(Clone)]
pub struct AwsService {
    _roles: BTreeMap<String, AwsRoleConfig>,
    _broker: Broker,
}

impl AwsService {
    /// One service for all `[aws.NAME]` roles.
    pub fn new(roles: BTreeMap<String, AwsRoleConfig>, broker: Broker) -> Self {
        Self {
            _roles: roles,
            _broker: broker,
        }
    }

    /// The whole HTTP answer for role `name`: status and JSON body (the container-credentials
    /// shape on success; `{"code","message"}` on failure, as AWS SDKs expect).
    pub async fn handle(&self, name: &str) -> (http::StatusCode, serde_json::Value) {
        (
            http::StatusCode::NOT_FOUND,
            serde_json::json!({"code": "unknown_profile", "message": format!("no AWS role {name:?} configured")}),
        )
    }
}
