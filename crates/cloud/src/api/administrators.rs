//! `/api/v1/administrators`: the API's words for [`crate::service::administration`].

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use writeback_proto::api::{AdministratorChange, AdministratorList, ErrorResponse};

use super::extract::ApiError;
use crate::service::administration::{self, AdministrationError};
use crate::service::administrator_sign_in::SignedIn;
use crate::service::state::AppState;

fn api_error(error: AdministrationError) -> ApiError {
    match error {
        AdministrationError::UnknownAdministrator => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_administrator",
            "No administrator has that email.",
        ),
        AdministrationError::LastAdministrator => ApiError::new(
            StatusCode::CONFLICT,
            "last_administrator",
            "This is the last enabled administrator: enable or create another one first.",
        ),
        AdministrationError::Internal(error) => ApiError::internal(error),
    }
}

#[utoipa::path(get, path = "/api/v1/administrators", tag = "administrators", security(("bearer" = [])), responses((status = 200, description = "Every administrator.", body = AdministratorList), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub(super) async fn list_administrators(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<AdministratorList>, ApiError> {
    let administrators = administration::list(&state)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(AdministratorList { administrators }))
}

#[utoipa::path(post, path = "/api/v1/administrators/{email}/disable", tag = "administrators", security(("bearer" = [])), params(("email" = String, Path, description = "The administrator's email.")), responses((status = 200, description = "Disabled, and their sessions ended.", body = AdministratorChange), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse), (status = 404, description = "No such administrator.", body = ErrorResponse), (status = 409, description = "The last enabled administrator.", body = ErrorResponse)))]
pub(super) async fn disable_administrator(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(email): Path<String>,
) -> Result<Json<AdministratorChange>, ApiError> {
    administration::set_enabled(&state, &signed_in.actor(), &email, false)
        .await
        .map(Json)
        .map_err(api_error)
}

#[utoipa::path(post, path = "/api/v1/administrators/{email}/enable", tag = "administrators", security(("bearer" = [])), params(("email" = String, Path, description = "The administrator's email.")), responses((status = 200, description = "Enabled.", body = AdministratorChange), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse), (status = 404, description = "No such administrator.", body = ErrorResponse)))]
pub(super) async fn enable_administrator(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(email): Path<String>,
) -> Result<Json<AdministratorChange>, ApiError> {
    administration::set_enabled(&state, &signed_in.actor(), &email, true)
        .await
        .map(Json)
        .map_err(api_error)
}

#[utoipa::path(delete, path = "/api/v1/administrators/{email}", tag = "administrators", security(("bearer" = [])), params(("email" = String, Path, description = "The administrator's email.")), responses((status = 200, description = "Deleted, with their sessions.", body = AdministratorChange), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse), (status = 404, description = "No such administrator.", body = ErrorResponse), (status = 409, description = "The last enabled administrator.", body = ErrorResponse)))]
pub(super) async fn delete_administrator(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(email): Path<String>,
) -> Result<Json<AdministratorChange>, ApiError> {
    administration::delete(&state, &signed_in.actor(), &email)
        .await
        .map(Json)
        .map_err(api_error)
}

#[utoipa::path(delete, path = "/api/v1/administrators/{email}/sessions", tag = "administrators", security(("bearer" = [])), params(("email" = String, Path, description = "The administrator's email.")), responses((status = 200, description = "Every session of theirs ended.", body = AdministratorChange), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse), (status = 404, description = "No such administrator.", body = ErrorResponse)))]
pub(super) async fn end_administrator_sessions(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(email): Path<String>,
) -> Result<Json<AdministratorChange>, ApiError> {
    administration::end_sessions(&state, &signed_in.actor(), &email)
        .await
        .map(Json)
        .map_err(api_error)
}
