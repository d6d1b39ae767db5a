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
use writeback_proto::operation::UserRef;
use writeback_proto::sync::ObjectAnchor;
use writeback_proto::time::UnixMillis;
use writeback_store::{StoreError, UserQuery};

use super::extract::{ApiError, DirectoryPath, SignedIn, UserPath};
use crate::relay::sync;
use crate::{AppState, health};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Longer search text cannot match any attribute AD allows, and is refused rather than scanned for.
const MAX_SEARCH_CHARS: usize = 256;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserSearch {
    /// Part of a logon name, UPN, mail or display name.
    q: Option<String>,
    /// A group name or anchor: only its members, direct or nested.
    group: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupSearch {
    /// Part of the group's name.
    q: Option<String>,
    limit: Option<u32>,
}

pub(crate) fn store_error(directory: &DirectoryName, error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_directory",
            format!("No directory is named {directory}."),
        ),
        other => ApiError::internal(other),
    }
}

pub(crate) fn search_text(text: Option<String>, what: &str) -> Result<Option<String>, ApiError> {
    match text {
        Some(text) if text.chars().count() > MAX_SEARCH_CHARS => Err(ApiError::invalid(format!(
            "`{what}` is longer than {MAX_SEARCH_CHARS} characters."
        ))),
        Some(text) if text.chars().any(char::is_control) => Err(ApiError::invalid(format!(
            "`{what}` must not contain control characters."
        ))),
        Some(text) if text.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// `limit` from a query string: `default` when absent, refused outside 1..=`max`.
pub(super) fn limit(requested: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match requested.unwrap_or(default) {
        0 => Err(ApiError::invalid("`limit` must be at least 1.")),
        limit if limit > max => Err(ApiError::invalid(format!("`limit` must be at most {max}."))),
        limit => Ok(limit),
    }
}

pub(super) fn query<T>(
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
        .map_err(|error| store_error(&directory, error))
}

#[utoipa::path(get, path = "/api/v1/directories/{directory}/users/{user}", tag = "directory", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID.")), responses((status = 200, description = "The synced user and their groups.", body = DirectoryUserDetail), (status = 404, description = "No such directory or user.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn show_user(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    target: UserPath,
) -> Result<Json<DirectoryUserDetail>, ApiError> {
    synced_user(&state, &target).await.map(Json)
}

/// The one synced user `target` names, or the API's 404 for an unknown directory or user.
pub(crate) async fn synced_user(
    state: &AppState,
    target: &UserPath,
) -> Result<DirectoryUserDetail, ApiError> {
    let detail = state
        .store
        .user_detail(&target.directory, &target.name)
        .await
        .map_err(|error| store_error(&target.directory, error))?;
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
        .map_err(|error| store_error(&directory, error))
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
        .map_err(|error| store_error(&directory, error))
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/sync/full", tag = "directory", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain).")), responses((status = 202, description = "Started, or queued for the next agent to connect.", body = FullSyncResponse), (status = 404, description = "No such directory.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn request_full_sync(
    State(state): State<AppState>,
    signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
) -> Result<(StatusCode, Json<FullSyncResponse>), ApiError> {
    let started = sync::request_full_sync(&state, &directory)
        .await
        .map_err(|error| store_error(&directory, error))?;
    let audit = writeback_store::AuditEvent {
        at: UnixMillis::now(),
        actor: signed_in.administrator.email.clone(),
        action: "request_full_sync".into(),
        directory: Some(directory.to_string()),
        target: None,
        request_id: None,
        result_code: "success".into(),
        detail: Some(if started { "started" } else { "queued" }.into()),
        origin: signed_in.origin.clone(),
    };
    state
        .store
        .append_audit(&audit)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(%directory, started, actor = %signed_in.administrator.email, "full directory sync requested");
    Ok((StatusCode::ACCEPTED, Json(FullSyncResponse { started })))
}

/// Addresses a synced user by anchor, so the agent writes to whatever DN the user has now. A name
/// the synced copy does not know (not synced yet) is passed on as a logon name for the agent to
/// resolve, under the same guards.
pub async fn resolve_target(state: &AppState, mut target: UserPath) -> Result<UserPath, ApiError> {
    if let Ok(anchor) = target.name.parse::<ObjectAnchor>() {
        target.user = UserRef::Anchor(anchor);
        return Ok(target);
    }
    match state
        .store
        .resolve_user(&target.directory, &target.name)
        .await
    {
        Ok(Some(anchor)) => target.user = UserRef::Anchor(anchor),
        Ok(None) | Err(StoreError::NotFound(_)) => {}
        Err(error) => return Err(ApiError::internal(error)),
    }
    Ok(target)
}

/// How logs and the audit log name the target: as the caller did, with the anchor when known.
pub fn describe_target(name: &str, user: &UserRef) -> String {
    match user {
        UserRef::Anchor(anchor) if *name != anchor.to_string() => format!("{name} ({anchor})"),
        other => other.to_string(),
    }
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
        return Err(store_error(
            &directory,
            StoreError::NotFound(directory.to_string()),
        ));
    }
    health::of_directory(&state, &directory, UnixMillis::now())
        .await
        .map(Json)
        .map_err(ApiError::internal)
}
