//! The self-service policy through the API: who may reset their own password, how they prove who
//! they are, what passwords are refused, and whom to notify. Stored as one setting; every change is
//! validated whole and audited with what changed.

use axum::Json;
use axum::extract::State;
use writeback_proto::api::{ErrorResponse, MethodsCleared, SelfServiceSettings};
use writeback_proto::ids::DirectoryName;
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditEvent, Store, StoreError};

use super::extract::{ApiError, JsonBody, SignedIn, UserPath};
use crate::AppState;

/// The name the self-service settings are stored under.
pub const SELF_SERVICE_SETTINGS: &str = "self_service";

/// The stored settings, or the defaults (self-service off) before anyone saved any.
pub async fn settings(store: &Store) -> Result<SelfServiceSettings, StoreError> {
    match store.setting(SELF_SERVICE_SETTINGS).await? {
        None => Ok(SelfServiceSettings::default()),
        Some(json) => serde_json::from_str(&json)
            .map_err(|error| StoreError::Corrupt(format!("self-service settings: {error}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/settings/self-service", tag = "settings", security(("bearer" = [])), responses((status = 200, description = "The self-service policy.", body = SelfServiceSettings), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn self_service_settings(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<SelfServiceSettings>, ApiError> {
    settings(&state.store)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

#[utoipa::path(put, path = "/api/v1/settings/self-service", tag = "settings", security(("bearer" = [])), request_body = SelfServiceSettings, responses((status = 200, description = "Stored.", body = SelfServiceSettings), (status = 400, description = "Not valid; the message lists every problem and nothing was stored.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn update_self_service_settings(
    State(state): State<AppState>,
    signed_in: SignedIn,
    JsonBody(settings): JsonBody<SelfServiceSettings>,
) -> Result<Json<SelfServiceSettings>, ApiError> {
    apply(&state, &signed_in, settings).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/directories/{directory}/users/{user}/self-service-methods", tag = "settings", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID.")), responses((status = 200, description = "Every self-service method of the user is removed; they register anew after signing in, and the addresses that were registered are told.", body = MethodsCleared), (status = 404, description = "No such directory or user.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn clear_self_service_methods(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserPath,
) -> Result<Json<MethodsCleared>, ApiError> {
    let detail = super::directory::synced_user(&state, &target).await?;
    let removed = crate::portal::clear_methods(
        &state,
        &detail,
        &target.directory,
        &signed_in.administrator.email,
        &signed_in.origin,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(MethodsCleared { removed }))
}

/// Stores `new` for `signed_in` if it is valid, and audits which fields changed.
pub async fn apply(
    state: &AppState,
    signed_in: &SignedIn,
    new: SelfServiceSettings,
) -> Result<SelfServiceSettings, ApiError> {
    let problems = new.problems();
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems.join(" ")));
    }
    let old = settings(&state.store).await.map_err(ApiError::internal)?;
    let now = UnixMillis::now();
    let value = serde_json::to_string(&new).map_err(ApiError::internal)?;
    state
        .store
        .put_setting(SELF_SERVICE_SETTINGS, &value, now)
        .await
        .map_err(ApiError::internal)?;
    state
        .store
        .append_audit(&AuditEvent {
            at: now,
            actor: signed_in.administrator.email.clone(),
            action: "update_settings".into(),
            directory: None,
            target: Some(SELF_SERVICE_SETTINGS.into()),
            request_id: None,
            result_code: "success".into(),
            detail: Some(changed_fields(&old, &new)),
            origin: signed_in.origin.clone(),
        })
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(actor = %signed_in.administrator.email, "self-service settings changed");
    Ok(new)
}

/// `self-service: scope, methods changed` (names only: the values may be long).
fn changed_fields(old: &SelfServiceSettings, new: &SelfServiceSettings) -> String {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return "self-service settings saved".into();
    };
    let mut changed: Vec<&str> = new
        .iter()
        .filter(|(name, value)| old.get(*name) != Some(value))
        .map(|(name, _)| name.as_str())
        .collect();
    changed.sort_unstable();
    if changed.is_empty() {
        "self-service settings saved unchanged".into()
    } else {
        format!("self-service: {} changed", changed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use writeback_proto::api::SelfServiceScope;

    use super::*;

    #[test]
    fn the_audit_detail_names_what_changed() {
        let old = SelfServiceSettings::default();
        let new = SelfServiceSettings {
            scope: SelfServiceScope::Everyone,
            minimum_strength: 3,
            ..SelfServiceSettings::default()
        };
        assert_eq!(
            changed_fields(&old, &new),
            "self-service: minimum_strength, scope changed"
        );
        assert_eq!(
            changed_fields(&old, &old),
            "self-service settings saved unchanged"
        );
    }
}
