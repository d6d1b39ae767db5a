//! Administrators managing administrators: list, disable, enable, delete, and end every session
//! of one. Shared by the API and the console, which map [`AdministrationError`] to their own
//! words. The last enabled administrator can be neither disabled nor deleted; every change is
//! audited with who made it and from where.

use thiserror::Error;
use writeback_proto::api::{AdministratorChange, AdministratorSummary};
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditEvent, StoreError};

use crate::{AppState, CloudError};

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

/// Who asks for a change, as the audit log records them.
#[derive(Debug, Clone, Copy)]
pub struct ChangedBy<'a> {
    pub email: &'a str,
    pub origin: &'a Option<String>,
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
    by: ChangedBy<'_>,
    action: &str,
    email: &str,
    detail: Option<String>,
    at: UnixMillis,
) -> Result<(), AdministrationError> {
    state
        .store
        .append_audit(&AuditEvent {
            at,
            actor: by.email.into(),
            action: action.into(),
            directory: None,
            target: Some(email.into()),
            request_id: None,
            result_code: "success".into(),
            detail,
            origin: by.origin.clone(),
        })
        .await?;
    Ok(())
}

/// Enables or disables `email`. Disabling ends their sessions.
pub async fn set_enabled(
    state: &AppState,
    by: ChangedBy<'_>,
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
        "enable_administrator"
    } else {
        "disable_administrator"
    };
    if changed {
        audit(state, by, action, email, None, now).await?;
        tracing::info!(by = by.email, %email, action, "administrator changed");
    }
    Ok(AdministratorChange {
        email: email.into(),
        changed,
        sessions_ended: if changed { sessions } else { 0 },
    })
}

pub async fn delete(
    state: &AppState,
    by: ChangedBy<'_>,
    email: &str,
) -> Result<AdministratorChange, AdministrationError> {
    let now = UnixMillis::now();
    let sessions = open_sessions(state, email, now).await?;
    state.store.delete_administrator(email).await?;
    audit(state, by, "delete_administrator", email, None, now).await?;
    tracing::info!(by = by.email, %email, "administrator deleted");
    Ok(AdministratorChange {
        email: email.into(),
        changed: true,
        sessions_ended: sessions,
    })
}

/// Ends every session of `email` (theirs to sign in again, with both factors).
pub async fn end_sessions(
    state: &AppState,
    by: ChangedBy<'_>,
    email: &str,
) -> Result<AdministratorChange, AdministrationError> {
    let now = UnixMillis::now();
    let ended = state.store.end_administrator_sessions(email).await?;
    audit(
        state,
        by,
        "end_administrator_sessions",
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
