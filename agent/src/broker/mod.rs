//! The token broker: profiles, OAuth flows, per-profile cache and single-flight refresher.
//!
//! Map: [`idp`] talks to the identity provider (discovery, device, refresh, exchange, client
//! credentials); [`timing`] decides when to refresh and how long to back off; `slot` holds one
//! profile's cache, failure state and single-flight refresh; `device` drives device logins;
//! `authcode` drives authorization code sign-ins (PKCE, loopback or pasted redirect);
//! [`jwt`] reads claims of tokens the environment hands us. [`Broker`] ties them together and is
//! what `api`, `adapters` and `cli` use.

pub mod idp;
pub mod jwt;
pub mod timing;

mod authcode;
mod device;
mod login;
mod slot;
mod source;
#[cfg(test)]
mod tests;
mod workspace;

use crate::config::GrantKind;
use crate::secret::Secret;
use crate::store::GrantStore;
use idp::{Flows, Idp};
use slot::{Slot, SubjectSource};

pub use source::{BoxFuture, TokenSource};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
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

/// One profile's cached token as the API's cache-hit path sees it: usable or not, and which
/// version, without a lock shared between threads. Obtained from [`Broker::hot`].
#[derive(Clone)]
pub struct HotSlot(Arc<slot::Slot>);

impl HotSlot {
    /// The version of the cached token if it can be handed to a caller needing `min_valid`
    /// at `now` (the request's own clock read), by the same rule as [`Broker::token`]'s
    /// cache; `None` means "ask the broker".
    pub fn usable_version(
        &self,
        min_valid: Option<Duration>,
        now: tokio::time::Instant,
    ) -> Option<u64> {
        self.0.published.usable_version(now, min_valid)
    }

    /// The cached token and its version, consistent with each other (takes the slot lock;
    /// for filling a cache after [`Broker::token`], not for the hot path itself).
    pub fn snapshot(&self) -> Option<(u64, Arc<IssuedToken>)> {
        self.0.snapshot()
    }
}

/// Refresh counters of one profile (see [`Broker::refresh_stats`]); operators watch them to
/// see an IdP failing or slowing down before users notice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Profile name.
    pub profile: String,
    /// Refreshes that produced a token.
    pub ok: u64,
    /// Refreshes that found the login gone (`invalid_grant`).
    pub login_required: u64,
    /// Refreshes that found the IdP unreachable or failing (retried with backoff).
    pub idp_unavailable: u64,
    /// Other failures (misconfiguration, refusals other than `invalid_grant`).
    pub error: u64,
    /// Total time of those refreshes: the IdP round trip plus persisting a rotated grant.
    pub duration: Duration,
}

/// What a caller asks of a token.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenRequest {
    /// The token must stay valid at least this long (otherwise a refresh happens first).
    pub min_valid: Option<Duration>,
}

/// The state of a profile, as shown by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// Who signed in (non-secret claims of the last ID token), for `whoami`; absent for
    /// flows without an ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<idp::Identity>,
}

/// Where a login stands; on the wire as the lowercase word (`"pending"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginPhase {
    /// Waiting for the user (device code entered, or the browser's redirect).
    Pending,
    /// Logged in.
    Complete,
    /// The user or the IdP said no.
    Denied,
    /// The code ran out before the user finished.
    Expired,
    /// Anything else went wrong (the message says what).
    Failed,
}

impl LoginPhase {
    /// The wire word, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Complete => "complete",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }
}

/// A device login in progress or finished.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoginState {
    /// Profile name.
    pub profile: String,
    /// Where it stands.
    pub state: LoginPhase,
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
    /// `authorization-code`: where the browser is sent back (the agent's loopback listener);
    /// a browser that cannot reach it shows an error page whose address is pasted instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
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

/// Knobs of the broker that are not part of the user's configuration (tests shrink them).
#[derive(Debug, Clone, Copy)]
pub struct BrokerOptions {
    /// Each IdP request gives up after this long (a slow IdP counts as unavailable).
    pub http_timeout: Duration,
    /// Retry delays after failures.
    pub backoff: timing::Backoff,
    /// Run a background refresher per profile (renew at ~3/4 of the lifetime).
    pub background_refresh: bool,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            http_timeout: Duration::from_secs(10),
            backoff: timing::Backoff::default(),
            background_refresh: true,
        }
    }
}

/// Builds the IdP flows of one issuer (the real [`Idp`], or a fake in unit tests).
pub(crate) type MakeFlows = dyn Fn(&str) -> Result<Arc<dyn Flows>, idp::IdpError> + Send + Sync;

struct Inner {
    slots: BTreeMap<String, Arc<Slot>>,
    store: Arc<GrantStore>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Background tasks must not outlive the broker that owns them.
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
    }
}

impl Inner {
    fn slot(&self, profile: &str) -> Result<&Arc<Slot>, BrokerError> {
        self.slots
            .get(profile)
            .ok_or_else(|| BrokerError::UnknownProfile(profile.to_string()))
    }
}

impl SubjectSource for Inner {
    fn subject<'a>(
        &'a self,
        profile: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Arc<IssuedToken>, BrokerError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let slot = self.slot(profile)?.clone();
            slot.token(self, TokenRequest::default()).await
        })
    }
}

/// Cheap to clone handle to the broker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// Builds the broker from the profiles in `config`, opening the store under `paths`.
    /// Does no network I/O; call [`Broker::boot_refresh`] next.
    pub async fn start(
        config: &crate::config::Config,
        paths: &crate::paths::Paths,
    ) -> Result<Broker, BrokerError> {
        Self::start_with(config, paths, BrokerOptions::default()).await
    }

    /// [`Broker::start`] with explicit [`BrokerOptions`].
    pub async fn start_with(
        config: &crate::config::Config,
        paths: &crate::paths::Paths,
        opts: BrokerOptions,
    ) -> Result<Broker, BrokerError> {
        let timeout = opts.http_timeout;
        Self::start_with_flows(config, paths, opts, &move |issuer: &str| {
            Ok(Arc::new(Idp::new(issuer, timeout)?) as Arc<dyn Flows>)
        })
        .await
    }

    /// [`Broker::start_with`] with the IdP flows made by `make_flows(issuer)` (one per issuer).
    pub(crate) async fn start_with_flows(
        config: &crate::config::Config,
        paths: &crate::paths::Paths,
        opts: BrokerOptions,
        make_flows: &MakeFlows,
    ) -> Result<Broker, BrokerError> {
        // Exchange profiles name their subject profile, and a loop would recurse forever:
        // the config's own reference check, for configs that did not come through `load`.
        config
            .check_profile_refs()
            .map_err(|e| BrokerError::Internal {
                profile: "(config)".into(),
                detail: e.to_string(),
            })?;
        let store = GrantStore::open(&config.store, &paths.state_dir)
            .await
            .map_err(|e| BrokerError::Internal {
                profile: "(store)".into(),
                detail: e.to_string(),
            })?;
        let store = Arc::new(store);
        let slots = make_slots(config, &paths.state_dir, &store, opts, make_flows)?;
        adopt_stored_logins(&slots, &store).await;
        let inner = Arc::new(Inner {
            slots,
            store,
            tasks: Mutex::new(Vec::new()),
        });
        if opts.background_refresh {
            let mut handles = Vec::new();
            for slot in inner.slots.values() {
                if slot.cfg.grant == GrantKind::Env {
                    continue;
                }
                let weak = Arc::downgrade(&inner);
                let slot = slot.clone();
                handles.push(tokio::spawn(refresher(slot, weak)).abort_handle());
            }
            inner
                .tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(handles);
        }
        Ok(Broker { inner })
    }

    /// Refreshes every profile that has a stored grant, at once, so tools work at the
    /// first keystroke after a container start. Returns when each has succeeded or failed.
    /// A profile serving a stored access token still in its usable life is left alone: it is
    /// renewed on its schedule, and the start spends no refresh token.
    pub async fn boot_refresh(&self) {
        let mut set = tokio::task::JoinSet::new();
        for slot in self.inner.slots.values() {
            if !slot.cfg.grant.stores_login() {
                continue;
            }
            let inner = self.inner.clone();
            let slot = slot.clone();
            set.spawn(async move {
                let store = inner.store.clone();
                let name = slot.name.clone();
                let has = tokio::task::spawn_blocking(move || store.load(&name))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .flatten()
                    .is_some();
                if !has {
                    tracing::info!(profile = %slot.name, "no stored login; skipping boot refresh");
                    return;
                }
                if slot.cached(None).is_some() {
                    tracing::info!(profile = %slot.name, "a usable token is cached; no boot refresh");
                    return;
                }
                match slot.refresh_now(inner.as_ref()).await {
                    Ok(t) => tracing::info!(
                        profile = %slot.name,
                        fingerprint = %t.access_token.fingerprint(),
                        "boot refresh done"
                    ),
                    Err(e) => {
                        tracing::warn!(profile = %slot.name, error = %e, "boot refresh failed")
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// Which store backend is in use and why (for status and doctor).
    pub fn store_backend(&self) -> (String, String) {
        let i = self.inner.store.info();
        (i.name.to_string(), i.reason.clone())
    }

    /// A valid token for `profile`, refreshing first if needed (single flight).
    pub async fn token(
        &self,
        profile: &str,
        req: TokenRequest,
    ) -> Result<Arc<IssuedToken>, BrokerError> {
        use tracing::Instrument;
        let slot = self.inner.slot(profile)?;
        // An env profile is read from the environment and never refreshed: nothing to
        // protect from cancellation, so no task is spawned for it (it is a hot path).
        if slot.cfg.grant == GrantKind::Env {
            return slot.env_token();
        }
        slot.enforce_grant_age()?;
        if let Some(t) = slot.cached(req.min_valid) {
            return Ok(t);
        }
        let slot = slot.clone();
        // The slow path runs in its own task: a caller that gives up (a timed-out API
        // request) must not cancel a refresh between the IdP's rotation of the refresh token
        // and its write to the store.
        let inner = self.inner.clone();
        let span = tracing::debug_span!("token", profile = %profile);
        tokio::spawn(async move { slot.token(inner.as_ref(), req).await }.instrument(span))
            .await
            .map_err(|e| BrokerError::Internal {
                profile: profile.to_string(),
                detail: format!("token task failed: {e}"),
            })?
    }

    /// Every token the broker holds or held lately: values that must never be recorded
    /// (see `attest::redact`). For each profile the environment's token (`env` profiles),
    /// else the access and refresh tokens of its last rotations, the current ones included
    /// (a command line may carry a token a script saved before a refresh; see
    /// `RECENT_SECRETS` in `slot`).
    pub fn known_tokens(&self) -> Vec<Secret> {
        let mut v = Vec::new();
        for slot in self.inner.slots.values() {
            if slot.cfg.grant == GrantKind::Env {
                if let Some(t) = slot
                    .cfg
                    .token_env
                    .as_deref()
                    .and_then(|var| std::env::var(var).ok())
                {
                    v.push(Secret::new(t));
                }
            } else {
                v.extend(slot.recent_secrets());
            }
        }
        v
    }

    /// The hot-path view of a profile whose cached token may be served without calling
    /// [`Broker::token`]; `None` for unknown profiles and for `env` profiles (they re-read
    /// the environment on every request).
    pub fn hot(&self, profile: &str) -> Option<HotSlot> {
        let slot = self.inner.slots.get(profile)?;
        (slot.cfg.grant != GrantKind::Env).then(|| HotSlot(slot.clone()))
    }

    /// Refresh counters of every profile, for `/metrics`: how often refreshing succeeded or
    /// failed (by kind), and how long the refreshes took in total.
    pub fn refresh_stats(&self) -> Vec<RefreshStats> {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner
            .slots
            .values()
            .map(|s| RefreshStats {
                profile: s.name.clone(),
                ok: s.stats.ok.load(Relaxed),
                login_required: s.stats.login_required.load(Relaxed),
                idp_unavailable: s.stats.unavailable.load(Relaxed),
                error: s.stats.error.load(Relaxed),
                duration: Duration::from_nanos(s.stats.idp_nanos.load(Relaxed)),
            })
            .collect()
    }

    /// Status of every profile.
    pub fn status(&self) -> Vec<ProfileStatus> {
        self.inner.slots.values().map(|s| s.status()).collect()
    }

    /// Starts (or returns the running) login of a profile: a device login, or an
    /// authorization code sign-in whose redirect the agent listens for.
    pub async fn login_start(&self, profile: &str) -> Result<LoginState, BrokerError> {
        let slot = self.inner.slot(profile)?;
        match slot.cfg.grant {
            GrantKind::Device => device::start(slot).await,
            GrantKind::AuthorizationCode => authcode::start(slot).await,
            _ => Err(BrokerError::Unsupported {
                profile: profile.to_string(),
                detail: "only profiles with grant = \"device\" or \"authorization-code\" log in"
                    .into(),
            }),
        }
    }

    /// Completes an authorization code sign-in with the address the browser was sent back
    /// to (pasted by the user where the browser cannot reach the agent's listener). The
    /// state must match the pending sign-in, which it ends: a second use is refused.
    pub async fn login_callback(
        &self,
        profile: &str,
        redirected: &str,
    ) -> Result<LoginState, BrokerError> {
        let slot = self.inner.slot(profile)?;
        if slot.cfg.grant != GrantKind::AuthorizationCode {
            return Err(BrokerError::Unsupported {
                profile: profile.to_string(),
                detail: "only profiles with grant = \"authorization-code\" take a redirect".into(),
            });
        }
        authcode::complete(slot, redirected, true).await
    }

    /// The state of the latest device login of a profile.
    pub fn login_state(&self, profile: &str) -> Result<LoginState, BrokerError> {
        device::state(self.inner.slot(profile)?)
    }

    /// Revokes at the IdP where supported and forgets the grant.
    pub async fn logout(&self, profile: &str) -> Result<(), BrokerError> {
        let slot = self.inner.slot(profile)?.clone();
        if slot.cfg.grant == GrantKind::Env {
            return Err(BrokerError::Unsupported {
                profile: profile.to_string(),
                detail:
                    "an env profile serves the environment's token; there is no login to forget"
                        .into(),
            });
        }
        if !slot.cfg.grant.stores_login() {
            // Nothing is stored for these: forget the cached token, fetch anew on next use.
            slot.drop_token();
            return Ok(());
        }
        let mem_rt = slot.forget("logged out");
        let store = self.inner.store.clone();
        let name = slot.name.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let _lock = store.lock(&name)?;
            let g = store.load(&name)?;
            store.delete(&name)?;
            Ok::<_, crate::store::StoreError>(g)
        })
        .await
        .map_err(|e| BrokerError::Internal {
            profile: profile.to_string(),
            detail: format!("store task failed: {e}"),
        })?
        .map_err(|e| BrokerError::Internal {
            profile: profile.to_string(),
            detail: e.to_string(),
        })?;
        let rt = stored.map(|g| g.refresh_token).or(mem_rt);
        if let (Some(rt), Some(idp)) = (rt, slot.idp.as_ref())
            && let Ok(client) = slot.client()
            && let Err(e) = idp.revoke(&client, &rt).await
        {
            tracing::warn!(profile = %profile, error = %e, "revocation at the IdP failed; the login is forgotten locally");
        }
        Ok(())
    }

    /// Marks the token with this fingerprint as refused by a server, so the next
    /// request refreshes first (git `erase` after a 401).
    pub async fn invalidate(&self, profile: &str, fingerprint: &str) -> Result<(), BrokerError> {
        let slot = self.inner.slot(profile)?;
        if slot.invalidate(fingerprint) {
            tracing::info!(profile = %profile, fingerprint = %fingerprint, "token invalidated; next request refreshes");
            // A token a server refused must not come back from the store after a restart.
            if slot.cfg.grant == GrantKind::Device {
                slot.discard_stored_access(Some(fingerprint.to_string()))
                    .await;
            }
        }
        Ok(())
    }

    /// Profile names.
    pub fn profiles(&self) -> Vec<String> {
        self.inner.slots.keys().cloned().collect()
    }
}

/// The background refresher of one profile: sleeps until the token is due (about 3/4 of its
/// lifetime) or a retry is due, then refreshes through the same single flight as callers.
async fn refresher(slot: Arc<Slot>, inner: std::sync::Weak<Inner>) {
    loop {
        match slot.next_wake() {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = slot.wake.notified() => continue,
                }
            }
            None => {
                slot.wake.notified().await;
                continue;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        slot.refresh_if_due(inner.as_ref()).await;
    }
}

/// One slot per profile; profiles of one issuer share its flows (one discovery cache).
fn make_slots(
    config: &crate::config::Config,
    state_dir: &std::path::Path,
    store: &Arc<GrantStore>,
    opts: BrokerOptions,
    make_flows: &MakeFlows,
) -> Result<BTreeMap<String, Arc<Slot>>, BrokerError> {
    let mut idps: BTreeMap<String, Arc<dyn Flows>> = BTreeMap::new();
    let mut slots = BTreeMap::new();
    let mut workspace_id: Option<String> = None;
    for (name, cfg) in &config.profiles {
        let mut cfg = cfg.clone();
        // `{workspace}` in the client id: this workspace's own client (see `workspace`).
        let client_per_workspace = cfg
            .client_id
            .as_deref()
            .is_some_and(|c| c.contains(crate::config::WORKSPACE_PLACEHOLDER));
        if client_per_workspace && let Some(template) = cfg.client_id.take() {
            let id = match &workspace_id {
                Some(id) => id.clone(),
                None => {
                    let id = workspace::load_or_create(state_dir).map_err(|e| {
                        BrokerError::Internal {
                            profile: name.clone(),
                            detail: e.to_string(),
                        }
                    })?;
                    workspace_id = Some(id.clone());
                    id
                }
            };
            cfg.client_id = Some(workspace::fill(&template, &id));
        }
        let idp = match &cfg.issuer {
            Some(iss) => {
                let key = iss.as_str().trim_end_matches('/').to_string();
                match idps.get(&key) {
                    Some(i) => Some(i.clone()),
                    None => {
                        let i = make_flows(&key).map_err(|e| BrokerError::Internal {
                            profile: name.clone(),
                            detail: e.to_string(),
                        })?;
                        idps.insert(key, i.clone());
                        Some(i)
                    }
                }
            }
            None => None,
        };
        let env = slot::SlotEnv {
            backoff: opts.backoff,
            client_per_workspace,
        };
        slots.insert(
            name.clone(),
            Arc::new(Slot::new(name, cfg, idp, store.clone(), env)),
        );
    }
    Ok(slots)
}

/// Know at once which device profiles have a stored login (status before boot refresh),
/// and serve a stored access token still in its usable life without any IdP call.
async fn adopt_stored_logins(slots: &BTreeMap<String, Arc<Slot>>, store: &Arc<GrantStore>) {
    for slot in slots.values() {
        if slot.cfg.grant.stores_login() {
            let (store, name) = (store.clone(), slot.name.clone());
            if let Ok(Ok(Some(g))) = tokio::task::spawn_blocking(move || store.load(&name)).await {
                match slot.adopt_stored(g) {
                    slot::Adoption::Adopted => tracing::info!(
                        profile = %slot.name,
                        "serving the stored access token; no refresh at start"
                    ),
                    slot::Adoption::Discard(why) => {
                        tracing::info!(
                            profile = %slot.name,
                            reason = why,
                            "discarding the stored access token"
                        );
                        slot.discard_stored_access(None).await;
                    }
                    slot::Adoption::None | slot::Adoption::Expired => {}
                }
            }
        }
    }
}
