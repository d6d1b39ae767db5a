//! The audit log through the API: read with filters, exported as JSON or CSV, and its retention.
//! There is deliberately no way to change or delete an entry.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::Response;
use writeback_proto::api::{AuditPage, AuditSettings, ErrorResponse};

use super::directory::query;
use super::extract::{ApiError, JsonBody};
use crate::service::administrator_sign_in::SignedIn;
use writeback_proto::api::AuditQuery;

use crate::service::audit_log::{entries, filter};
use crate::service::audit_retention;
use crate::service::state::AppState;
use crate::web::audit_export::export;

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery), responses((status = 200, description = "Entries, newest first (JSON), or the same as a CSV file with `format=csv`.", content((AuditPage = "application/json"), (String = "text/csv"))), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn list_audit(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    request: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (filter, format) = filter(query(request)?)?;
    let entries = entries(&state, &filter).await.map_err(ApiError::internal)?;
    Ok(export(entries, format, filter.limit))
}

#[utoipa::path(get, path = "/api/v1/settings/audit", tag = "audit", security(("bearer" = [])), responses((status = 200, description = "The retention setting.", body = AuditSettings), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn audit_settings(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<AuditSettings>, ApiError> {
    audit_retention::settings(&state.store)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

#[utoipa::path(put, path = "/api/v1/settings/audit", tag = "audit", security(("bearer" = [])), request_body = AuditSettings, responses((status = 200, description = "Stored and applied.", body = AuditSettings), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn update_audit_settings(
    State(state): State<AppState>,
    signed_in: SignedIn,
    JsonBody(settings): JsonBody<AuditSettings>,
) -> Result<Json<AuditSettings>, ApiError> {
    Ok(Json(
        audit_retention::apply(&state, &signed_in.actor(), settings).await?,
    ))
}
