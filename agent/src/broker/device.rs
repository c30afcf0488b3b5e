//! Device login (RFC 8628) as a state machine the agent drives in the background.
//!
//! `login_start` asks the IdP for a device code and spawns the poller; the CLI shows the
//! verification URI and user code and polls `login_state` until the state leaves `pending`.
//! On approval the refresh token is persisted with the access token (under the grant lock)
//! before the access token is installed in the cache.

use super::idp::{ClientAuth, DeviceAuthorization, Flows, IdpError};
use super::login::LoginRecord;
use super::slot::Slot;
use super::{BrokerError, LoginPhase, LoginState};
use crate::store::StoredGrant;
use crate::timefmt::rfc3339;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

pub(super) fn set_state(slot: &Slot, state: LoginPhase, message: Option<String>) {
    let mut l = slot.login.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rec) = l.as_mut() {
        rec.state.state = state;
        rec.state.message = message;
        rec.task = None;
    }
}

/// A failed IdP call while starting or completing a login, as the broker reports it.
pub(super) fn login_error(slot: &Slot, e: IdpError) -> BrokerError {
    match e {
        IdpError::Unavailable { detail, .. } => BrokerError::IdpUnavailable {
            profile: slot.name.clone(),
            detail,
        },
        IdpError::Unsupported(d) => BrokerError::Unsupported {
            profile: slot.name.clone(),
            detail: d,
        },
        other => BrokerError::Internal {
            profile: slot.name.clone(),
            detail: other.to_string(),
        },
    }
}

/// Starts a login, or returns the one still pending.
pub(super) async fn start(slot: &Arc<Slot>) -> Result<LoginState, BrokerError> {
    if let Some(pending) = still_pending(slot) {
        return Ok(pending);
    }
    let idp = slot.idp.clone().ok_or_else(|| BrokerError::Internal {
        profile: slot.name.clone(),
        detail: "no issuer configured".into(),
    })?;
    let client = slot.client()?;
    let target = super::idp::Target {
        scopes: slot.cfg.scopes.clone(),
        audience: slot.cfg.audience.clone(),
    };
    let auth: DeviceAuthorization = idp
        .device_authorize(&client, &target)
        .await
        .map_err(|e| login_error(slot, e))?;
    let state = LoginState {
        profile: slot.name.clone(),
        state: LoginPhase::Pending,
        verification_uri: Some(auth.verification_uri()),
        verification_uri_complete: auth.verification_uri_complete(),
        user_code: Some(auth.user_code()),
        expires_at: Some(rfc3339(SystemTime::now() + auth.expires_in())),
        message: None,
        redirect_uri: None,
    };
    tracing::info!(profile = %slot.name, verification_uri = %auth.verification_uri(), "device login started");
    // The record goes in first, so a poller that finishes at once finds it.
    *slot.login.lock().unwrap_or_else(|p| p.into_inner()) = Some(LoginRecord {
        state: state.clone(),
        expires: Instant::now() + auth.expires_in(),
        task: None,
        code: None,
    });
    let poller = tokio::spawn(poll(slot.clone(), idp, client, auth));
    if let Some(rec) = slot
        .login
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        && rec.state.state == LoginPhase::Pending
    {
        rec.task = Some(poller.abort_handle());
    }
    Ok(state)
}

/// The login still pending and not expired, if any: a second `login` shows it again
/// instead of starting another.
fn still_pending(slot: &Slot) -> Option<LoginState> {
    let l = slot.login.lock().unwrap_or_else(|p| p.into_inner());
    l.as_ref()
        .filter(|rec| rec.state.state == LoginPhase::Pending && rec.expires > Instant::now())
        .map(|rec| rec.state.clone())
}

/// The background poller of a device login: waits for the user at the IdP and ends the
/// login with what the IdP says.
async fn poll(slot: Arc<Slot>, idp: Arc<dyn Flows>, client: ClientAuth, auth: DeviceAuthorization) {
    let res = idp.device_poll(&client, &auth).await;
    match res {
        Ok(g) => {
            let msg = finish(&slot, idp.issuer(), &client.client_id, &g).await;
            tracing::info!(profile = %slot.name, "device login complete");
            set_state(&slot, LoginPhase::Complete, msg);
        }
        Err(IdpError::Rejected { code, description }) => {
            end_refused(&slot, &code, description.as_deref());
        }
        Err(e) => {
            tracing::warn!(profile = %slot.name, error = %e, "device login failed");
            set_state(&slot, LoginPhase::Failed, Some(e.to_string()));
        }
    }
}

/// Ends a login of any kind the IdP refused (its OAuth `error` and `error_description`, from
/// the token endpoint or a redirect): the phase the code names, the message shown in
/// `status`. Returns the message.
pub(super) fn end_refused(slot: &Slot, code: &str, description: Option<&str>) -> String {
    let state = match code {
        "access_denied" => LoginPhase::Denied,
        "expired_token" => LoginPhase::Expired,
        _ => LoginPhase::Failed,
    };
    let message = match description {
        Some(d) => format!("{code}: {d}"),
        None => code.to_string(),
    };
    tracing::warn!(profile = %slot.name, state = state.as_str(), message = %message, "login ended");
    set_state(slot, state, Some(message.clone()));
    message
}

/// Ends a successful login of any kind: stores the refresh token (under the grant lock)
/// before the access token is installed in the cache. Returns a message for the login
/// state when something short of success happened (no refresh token, store failure).
pub(super) async fn finish(
    slot: &Arc<Slot>,
    issuer: &str,
    client_id: &str,
    g: &super::idp::Grant,
) -> Option<String> {
    let Some(rt) = g.refresh_token.clone() else {
        // Usable now, but nothing to keep for a restart.
        tracing::warn!(profile = %slot.name, "no refresh token was issued (is offline_access among the scopes?)");
        slot.install_login(g);
        return Some(
            "logged in; no refresh token was issued, so the login ends when the token expires"
                .into(),
        );
    };
    // The access token goes into the same record, so an agent restarted within its life
    // serves it without spending the new refresh token.
    let entry = slot.login_entry(g);
    let grant = StoredGrant::new(issuer, client_id, rt.expose().to_string(), g.scope.clone())
        .with_access(slot.stored_access(&entry));
    let store = slot.store.clone();
    let name = slot.name.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let _lock = store.lock(&name)?;
        store.save(&name, &grant)
    })
    .await;
    let msg = match saved {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("logged in, but the login could not be stored: {e}")),
        Err(e) => Some(format!("logged in, but the store task failed: {e}")),
    };
    slot.install_entry(entry, g);
    msg
}

/// The state of the latest login.
pub(super) fn state(slot: &Slot) -> Result<LoginState, BrokerError> {
    let l = slot.login.lock().unwrap_or_else(|p| p.into_inner());
    match l.as_ref() {
        Some(rec) => {
            let mut s = rec.state.clone();
            if s.state == LoginPhase::Pending && rec.expires <= Instant::now() {
                s.state = LoginPhase::Expired;
            }
            Ok(s)
        }
        None => Err(BrokerError::Unsupported {
            profile: slot.name.clone(),
            detail: "no login has been started for this profile".into(),
        }),
    }
}
