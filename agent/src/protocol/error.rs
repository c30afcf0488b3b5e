//! The error body every API refusal carries, read by the CLI to name the fix.

/// The JSON body of every error.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub error: String,
    /// Human message.
    pub message: String,
}
