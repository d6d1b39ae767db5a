//! The self-service policy through the API: who may reset their own password, how they prove who
//! they are, what passwords are refused, and whom to notify.

use axum::Json;
use axum::extract::State;
use writeback_proto::api::{ErrorResponse, MethodsCleared, SelfServiceSettings};
use writeback_proto::ids::DirectoryName;

use super::directory::synced_user;
use super::extract::{ApiError, JsonBody};
use crate::service::administrator_sign_in::SignedIn;
use crate::service::directory::UserTarget;
use crate::service::self_service::notices::clear_methods;
use crate::service::self_service::settings::{apply, stored_settings};
use crate::service::state::AppState;

#[utoipa::path(get, path = "/api/v1/settings/self-service", tag = "settings", security(("bearer" = [])), responses((status = 200, description = "The self-service policy.", body = SelfServiceSettings), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn self_service_settings(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<SelfServiceSettings>, ApiError> {
    stored_settings(&state.store)
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
    Ok(Json(apply(&state, &signed_in.actor(), settings).await?))
}

#[utoipa::path(delete, path = "/api/v1/directories/{directory}/users/{user}/self-service-methods", tag = "settings", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID.")), responses((status = 200, description = "Every self-service method of the user is removed; they register anew after signing in, and the addresses that were registered are told.", body = MethodsCleared), (status = 404, description = "No such directory or user.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn clear_self_service_methods(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserTarget,
) -> Result<Json<MethodsCleared>, ApiError> {
    let detail = synced_user(&state, &target).await?;
    let removed = clear_methods(&state, &detail, &target.directory, &signed_in.actor())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(MethodsCleared { removed }))
}
