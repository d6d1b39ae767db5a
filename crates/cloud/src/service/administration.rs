//! Administrators managing administrators: list, disable, enable, delete, and end every session
//! of one. Shared by the API and the console, which map [`AdministrationError`] to their own
//! words. The last enabled administrator can be neither disabled nor deleted; every change is
//! audited with who made it and from where.

use secrecy::SecretString;
use thiserror::Error;
use writeback_proto::api::{AdministratorChange, AdministratorSummary};
use writeback_proto::time::UnixMillis;
use writeback_store::{Store, StoreError};

use crate::service::audit::{Actor, AuditAction};
use crate::service::auth;
use crate::service::error::CloudError;
use crate::service::state::AppState;

#[derive(Debug, Error)]
pub enum AdministrationError {
    #[error("no administrator has that email")]
    UnknownAdministrator,
    #[error("the last enabled administrator cannot be disabled or deleted")]
    LastAdministrator,
    #[error(transparent)]
    Internal(#[from] CloudError),
}

impl From<StoreError> for AdministrationError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => Self::UnknownAdministrator,
            StoreError::Refused(_) => Self::LastAdministrator,
            other => Self::Internal(other.into()),
        }
    }
}

pub async fn list(state: &AppState) -> Result<Vec<AdministratorSummary>, CloudError> {
    Ok(state
        .store
        .administrators(UnixMillis::now())
        .await?
        .into_iter()
        .map(|administrator| AdministratorSummary {
            email: administrator.email,
            enabled: administrator.enabled,
            second_factor: administrator.second_factor,
            created_at: administrator.created_at,
            sessions: administrator.sessions,
            last_active_at: administrator.last_active_at,
        })
        .collect())
}

async fn audit(
    state: &AppState,
    by: &Actor,
    action: AuditAction,
    email: &str,
    detail: Option<String>,
    at: UnixMillis,
) -> Result<(), AdministrationError> {
    action
        .by(by, at)
        .target(email)
        .maybe_detail(detail)
        .record(&state.store)
        .await?;
    Ok(())
}

/// Enables or disables `email`. Disabling ends their sessions.
pub async fn set_enabled(
    state: &AppState,
    by: &Actor,
    email: &str,
    enabled: bool,
) -> Result<AdministratorChange, AdministrationError> {
    let now = UnixMillis::now();
    let sessions = if enabled {
        0
    } else {
        open_sessions(state, email, now).await?
    };
    let changed = state
        .store
        .set_administrator_enabled(email, enabled, now)
        .await?;
    let action = if enabled {
        AuditAction::EnableAdministrator
    } else {
        AuditAction::DisableAdministrator
    };
    if changed {
        audit(state, by, action, email, None, now).await?;
        tracing::info!(by = %by.name, %email, action = action.as_str(), "administrator changed");
    }
    Ok(AdministratorChange {
        email: email.into(),
        changed,
        sessions_ended: if changed { sessions } else { 0 },
    })
}

pub async fn delete(
    state: &AppState,
    by: &Actor,
    email: &str,
) -> Result<AdministratorChange, AdministrationError> {
    let now = UnixMillis::now();
    let sessions = open_sessions(state, email, now).await?;
    state.store.delete_administrator(email).await?;
    audit(
        state,
        by,
        AuditAction::DeleteAdministrator,
        email,
        None,
        now,
    )
    .await?;
    tracing::info!(by = %by.name, %email, "administrator deleted");
    Ok(AdministratorChange {
        email: email.into(),
        changed: true,
        sessions_ended: sessions,
    })
}

/// Ends every session of `email` (theirs to sign in again, with both factors).
pub async fn end_sessions(
    state: &AppState,
    by: &Actor,
    email: &str,
) -> Result<AdministratorChange, AdministrationError> {
    let now = UnixMillis::now();
    let ended = state.store.end_administrator_sessions(email).await?;
    audit(
        state,
        by,
        AuditAction::EndAdministratorSessions,
        email,
        Some(format!("{ended} sessions ended")),
        now,
    )
    .await?;
    Ok(AdministratorChange {
        email: email.into(),
        changed: ended > 0,
        sessions_ended: ended,
    })
}

async fn open_sessions(
    state: &AppState,
    email: &str,
    now: UnixMillis,
) -> Result<u64, AdministrationError> {
    Ok(state
        .store
        .administrators(now)
        .await?
        .into_iter()
        .find(|administrator| administrator.email.eq_ignore_ascii_case(email.trim()))
        .map_or(0, |administrator| administrator.sessions))
}

pub async fn create_administrator(
    store: &Store,
    email: &str,
    password: &SecretString,
) -> Result<(), CloudError> {
    let email = email.trim();
    if !email.contains('@') || email.len() > 254 {
        return Err(CloudError::InvalidInput(format!(
            "{email:?} is not an email address"
        )));
    }
    if secrecy::ExposeSecret::expose_secret(password)
        .chars()
        .count()
        < 12
    {
        return Err(CloudError::InvalidInput(
            "an administrator password must be at least 12 characters long".into(),
        ));
    }
    let password = password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|error| CloudError::Internal(error.to_string()))??;
    let now = UnixMillis::now();
    store.create_administrator(email, &hash, now).await?;
    AuditAction::CreateAdministrator
        .by(&Actor::local_command("writeback-cloud admin create"), now)
        .target(email)
        .record(store)
        .await?;
    Ok(())
}

/// Removes an administrator's second factor, as the set-up command on the cloud's host (the one
/// way back in after losing an authenticator).
pub async fn reset_second_factor(store: &Store, email: &str) -> Result<(), CloudError> {
    if !store.remove_totp(email.trim()).await? {
        return Err(CloudError::InvalidInput(format!(
            "no administrator has the email {email}"
        )));
    }
    AuditAction::ResetSecondFactor
        .by(
            &Actor::local_command("writeback-cloud admin reset-second-factor"),
            UnixMillis::now(),
        )
        .target(email.trim())
        .record(store)
        .await?;
    Ok(())
}
