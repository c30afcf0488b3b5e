//! The refusal body of `GET /v1/aws/credentials/{name}`.

use serde::{Deserialize, Serialize};

/// An AWS container-credentials error: AWS SDKs read `code` and `message`, not the
/// agent's own [`super::ErrorBody`], so refusals on this route keep their shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AwsErrorBody {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
}
