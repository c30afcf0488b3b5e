//! `/v1/login/{profile}`: start (`POST`), poll (`GET`) and end (`DELETE`) a login, and
//! `POST /v1/login/{profile}/callback` for a pasted redirect address.
//!
//! A login's state is the broker's own [`LoginState`], re-exported: one definition for the
//! agent that writes it and `stagepass login` that polls it.

pub use crate::broker::{LoginPhase, LoginState};
use serde::{Deserialize, Serialize};

/// The `POST /v1/login/{profile}/callback` body: the address the browser was sent back to.
///
/// No `Debug`: the address carries a (single-use) authorization code.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    /// The whole redirected address.
    pub url: String,
}

/// The `DELETE /v1/login/{profile}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedOut {
    /// The profile.
    pub profile: String,
    /// Always `logged_out`.
    pub state: LogoutPhase,
}

/// The one state a logout answers with (a type, so the word is written in one place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogoutPhase {
    /// The stored login is gone.
    LoggedOut,
}

impl LoggedOut {
    /// The answer for `profile`.
    pub fn new(profile: &str) -> Self {
        Self {
            profile: profile.to_string(),
            state: LogoutPhase::LoggedOut,
        }
    }
}

/// The empty JSON object (`{}`) a client posts to start a login or a catalog sync.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Empty {}
