//! The token broker: profiles, OAuth flows, per-profile cache and single-flight refresher.
//!
//! INTERFACE STUB: the public surface below is what `api`, `adapters`, `catalog` and `cli`
//! code against. The implementation fills it in without changing these signatures.

use crate::secret::Secret;
use std::time::{Duration, SystemTime};

/// A token handed to a caller.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The access token.
    pub access_token: Secret,
    /// Usually `Bearer`.
    pub token_type: String,
    /// When it stops being valid.
    pub expires_at: Option<SystemTime>,
    /// Granted scopes, space separated.
    pub scope: Option<String>,
    /// The profile it belongs to.
    pub profile: String,
}

/// What a caller asks of a token.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenRequest {
    /// The token must stay valid at least this long (otherwise a refresh happens first).
    pub min_valid: Option<Duration>,
}

/// The state of a profile, as shown by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileState {
    /// A valid token is cached.
    Valid,
    /// A refresh is in flight.
    Refreshing,
    /// A valid token is cached but refreshing it fails.
    Stale,
    /// The user must log in (again).
    LoginRequired,
    /// Misconfigured or failing with no valid token.
    Error,
}

/// One profile in status output (no secrets).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileStatus {
    /// Profile name.
    pub profile: String,
    /// Grant kind as configured.
    pub grant: String,
    /// Current state.
    pub state: ProfileState,
    /// Why, when not valid.
    pub reason: Option<String>,
    /// Expiry of the cached token, RFC 3339.
    pub expires_at: Option<String>,
    /// Fingerprint of the cached token.
    pub token_fingerprint: Option<String>,
}

/// A device login in progress or finished.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoginState {
    /// Profile name.
    pub profile: String,
    /// `pending`, `complete`, `denied`, `expired`, `failed`.
    pub state: String,
    /// Where the user goes.
    pub verification_uri: Option<String>,
    /// The URI with the code filled in, when the IdP gives one.
    pub verification_uri_complete: Option<String>,
    /// The code the user types.
    pub user_code: Option<String>,
    /// When the device code expires, RFC 3339.
    pub expires_at: Option<String>,
    /// Detail for failures.
    pub message: Option<String>,
}

/// Why the broker could not give a token. `code()` is the stable API error code.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No such profile.
    #[error("unknown profile {0:?}")]
    UnknownProfile(String),
    /// No usable grant: the user must log in.
    #[error("profile {profile}: login required: {reason}")]
    LoginRequired {
        /// The profile.
        profile: String,
        /// Why (e.g. the IdP's `invalid_grant` description).
        reason: String,
    },
    /// The IdP cannot be reached or answers badly, and no valid token is cached.
    #[error("profile {profile}: identity provider unavailable: {detail}")]
    IdpUnavailable {
        /// The profile.
        profile: String,
        /// What went wrong (no secret).
        detail: String,
    },
    /// The operation does not apply to this profile's grant kind.
    #[error("profile {profile}: {detail}")]
    Unsupported {
        /// The profile.
        profile: String,
        /// What is not supported.
        detail: String,
    },
    /// Anything else (store failure, misconfiguration).
    #[error("profile {profile}: {detail}")]
    Internal {
        /// The profile.
        profile: String,
        /// What failed.
        detail: String,
    },
}

impl BrokerError {
    /// Stable error code for the API and CLI.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProfile(_) => "unknown_profile",
            Self::LoginRequired { .. } => "login_required",
            Self::IdpUnavailable { .. } => "idp_unavailable",
            Self::Unsupported { .. } => "unsupported",
            Self::Internal { .. } => "internal",
        }
    }
}

/// Cheap to clone handle to the broker.
#[derive(Clone)]
pub struct Broker {
    _private: (),
}

impl Broker {
    /// Builds the broker from the profiles in `config`, opening the store under `paths`.
    /// Does no network I/O; call [`Broker::boot_refresh`] next.
    pub async fn start(
        _config: &crate::config::Config,
        _paths: &crate::paths::Paths,
    ) -> Result<Broker, BrokerError> {
        Ok(Broker { _private: () })
    }

    /// Refreshes every profile that has a stored grant, at once, so tools work at the
    /// first keystroke after a container start. Returns when each has succeeded or failed.
    pub async fn boot_refresh(&self) {}

    /// Which store backend is in use and why (for status and doctor).
    pub fn store_backend(&self) -> (String, String) {
        ("file".into(), "stub".into())
    }

    /// A valid token for `profile`, refreshing first if needed (single flight).
    pub async fn token(
        &self,
        profile: &str,
        _req: TokenRequest,
    ) -> Result<IssuedToken, BrokerError> {
        Err(BrokerError::UnknownProfile(profile.to_string()))
    }

    /// Status of every profile.
    pub fn status(&self) -> Vec<ProfileStatus> {
        Vec::new()
    }

    /// Starts (or returns the running) device login of a profile.
    pub async fn login_start(&self, profile: &str) -> Result<LoginState, BrokerError> {
        Err(BrokerError::UnknownProfile(profile.to_string()))
    }

    /// The state of the latest device login of a profile.
    pub fn login_state(&self, profile: &str) -> Result<LoginState, BrokerError> {
        Err(BrokerError::UnknownProfile(profile.to_string()))
    }

    /// Revokes at the IdP where supported and forgets the grant.
    pub async fn logout(&self, profile: &str) -> Result<(), BrokerError> {
        Err(BrokerError::UnknownProfile(profile.to_string()))
    }

    /// Marks the token with this fingerprint as refused by a server, so the next
    /// request refreshes first (git `erase` after a 401).
    pub async fn invalidate(&self, profile: &str, _fingerprint: &str) -> Result<(), BrokerError> {
        Err(BrokerError::UnknownProfile(profile.to_string()))
    }

    /// Profile names.
    pub fn profiles(&self) -> Vec<String> {
        Vec::new()
    }
}
