//! The synced copy of a directory through the API: users, groups, sync status, full resync; and
//! the resolution of a user named in a URL to the anchor writeback addresses.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use writeback_proto::api::{
    DirectoryGroup, DirectoryHealth, DirectoryUser, DirectoryUserDetail, ErrorResponse,
    FullSyncResponse, SyncStatus,
};
use writeback_proto::ids::DirectoryName;
use writeback_proto::time::UnixMillis;
use writeback_store::UserQuery;

use super::extract::{ApiError, DirectoryPath};
use crate::service::administrator_sign_in::SignedIn;
use crate::service::directory::{self, UserTarget, limit, search_text};
use crate::service::health;
use crate::service::state::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserSearch {
    /// Part of a logon name, UPN, mail or display name.
    #[param(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    q: Option<String>,
    /// A group name or anchor: only its members, direct or nested.
    #[param(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    group: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupSearch {
    /// Part of the group's name.
    #[param(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    q: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

pub fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| {
        ApiError::invalid(format!(
            "The query string is not valid: {}.",
            rejection.body_text()
        ))
    })
}

#[utoipa::path(get, path = "/api/v1/directories/{directory}/users", tag = "directory", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), UserSearch), responses((status = 200, description = "Matching synced users.", body = Vec<DirectoryUser>), (status = 404, description = "No such directory.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn list_users(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
    search: Result<Query<UserSearch>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DirectoryUser>>, ApiError> {
    let search = query(search)?;
    let user_query = UserQuery {
        text: search_text(search.q, "q")?,
        group: search_text(search.group, "group")?,
        limit: limit(search.limit, DEFAULT_LIMIT, MAX_LIMIT)?,
    };
    state
        .store
        .search_users(&directory, &user_query)
        .await
        .map(Json)
        .map_err(|error| ApiError::from_directory_store(&directory, error))
}

#[utoipa::path(get, path = "/api/v1/directories/{directory}/users/{user}", tag = "directory", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID.")), responses((status = 200, description = "The synced user and their groups.", body = DirectoryUserDetail), (status = 404, description = "No such directory or user.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn show_user(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    target: UserTarget,
) -> Result<Json<DirectoryUserDetail>, ApiError> {
    synced_user(&state, &target).await.map(Json)
}

/// The one synced user `target` names, or the API's 404 for an unknown directory or user.
pub async fn synced_user(
    state: &AppState,
    target: &UserTarget,
) -> Result<DirectoryUserDetail, ApiError> {
    let detail = directory::synced_user(state, target)
        .await
        .map_err(|error| ApiError::from_directory_store(&target.directory, error))?;
    detail.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            format!(
                "No single synced user of {} is named {}.",
                target.directory, target.name
            ),
        )
    })
}

#[utoipa::path(get, path = "/api/v1/directories/{directory}/groups", tag = "directory", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), GroupSearch), responses((status = 200, description = "Matching synced groups.", body = Vec<DirectoryGroup>), (status = 404, description = "No such directory.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn list_groups(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
    search: Result<Query<GroupSearch>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DirectoryGroup>>, ApiError> {
    let search = query(search)?;
    let text = search_text(search.q, "q")?;
    state
        .store
        .search_groups(
            &directory,
            text.as_deref(),
            limit(search.limit, DEFAULT_LIMIT, MAX_LIMIT)?,
        )
        .await
        .map(Json)
        .map_err(|error| ApiError::from_directory_store(&directory, error))
}

#[utoipa::path(get, path = "/api/v1/directories/{directory}/sync", tag = "directory", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain).")), responses((status = 200, description = "Where sync stands.", body = SyncStatus), (status = 404, description = "No such directory.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn sync_status(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
) -> Result<Json<SyncStatus>, ApiError> {
    state
        .store
        .sync_status(&directory, UnixMillis::now())
        .await
        .map(Json)
        .map_err(|error| ApiError::from_directory_store(&directory, error))
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/sync/full", tag = "directory", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain).")), responses((status = 202, description = "Started, or queued for the next agent to connect.", body = FullSyncResponse), (status = 404, description = "No such directory.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn request_full_sync(
    State(state): State<AppState>,
    signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
) -> Result<(StatusCode, Json<FullSyncResponse>), ApiError> {
    let started = directory::request_full_sync(&state, &signed_in.actor(), &directory)
        .await
        .map_err(|error| ApiError::from_directory_store(&directory, error))?;
    Ok((StatusCode::ACCEPTED, Json(FullSyncResponse { started })))
}

#[utoipa::path(get, path = "/api/v1/directories", tag = "health", security(("bearer" = [])), responses((status = 200, description = "Every directory with its health.", body = Vec<DirectoryHealth>), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
/// Every directory with its health.
pub async fn list_directories(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<Vec<DirectoryHealth>>, ApiError> {
    health::of_every_directory(&state, UnixMillis::now())
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/api/v1/directories/{directory}/health", tag = "health", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain).")), responses((status = 200, description = "The directory's health.", body = DirectoryHealth), (status = 404, description = "No such directory.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn directory_health(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
) -> Result<Json<DirectoryHealth>, ApiError> {
    let known = state
        .store
        .directory(&directory)
        .await
        .map_err(ApiError::internal)?
        .is_some();
    if !known {
        return Err(ApiError::unknown_directory(&directory));
    }
    health::of_directory(&state, &directory, UnixMillis::now())
        .await
        .map(Json)
        .map_err(ApiError::internal)
}
