//! Console pages for the directories: health overview, users and groups from the synced copy,
//! and resets and unlocks through the same code as the API.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use writeback_proto::api::{DirectoryHealth, HealthState};
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::sync::SyncedUser;
use writeback_proto::time::UnixMillis;
use writeback_store::UserQuery;

use super::pages::{
    ErrorPage, ExpiringRow, GroupRow, GroupsPage, HealthRow, OperationOutcome, OverviewPage,
    UserPage, UserRow, UsersPage, format_time, path_segment, render,
};
use super::session::{ConsoleForm, ConsoleSession, SESSION_COOKIE};
use crate::service::directory::{UserTarget, search_text};
use crate::service::messages;
use crate::service::state::AppState;
use crate::service::writeback::{self, Requester, Writeback, WritebackError, WritebackOutcome};
use crate::service::{expiry, health};
use crate::web::browser_form::form_fields;
use crate::web::failure::{HttpFailure as ApiError, operation_status};

const PAGE_SIZE: u32 = 100;

fn error_page(error: ApiError) -> Response {
    ErrorPage::from(error).into_response()
}

pub(super) fn health_label(state: HealthState) -> (&'static str, &'static str) {
    match state {
        HealthState::Healthy => ("Healthy", "good"),
        HealthState::AgentOutdated => ("Agent outdated", "warn"),
        HealthState::NoAgentConnected => ("No agent connected", "bad"),
        HealthState::DirectoryUnreachable => ("Directory unreachable", "bad"),
        HealthState::NotConfigured => ("Not configured", "warn"),
        HealthState::Degraded => ("Degraded", "warn"),
    }
}

fn health_row(health: DirectoryHealth) -> HealthRow {
    let (label, tone) = health_label(health.state);
    HealthRow {
        directory: health.directory.to_string(),
        state: health.state.as_str(),
        label,
        tone,
        summary: health.summary,
        agents_connected: health.agents_connected,
        agents_registered: health.agents_registered,
        agents_healthy: health.agents_healthy,
        agents_minimum: health.agents_minimum,
        recent_failures: health.recent_failures,
    }
}

/// Passwords listed on the overview as expiring soon, at most.
const EXPIRING_SHOWN: u32 = 100;

pub async fn overview(State(state): State<AppState>, session: ConsoleSession) -> Response {
    let now = UnixMillis::now();
    let directories = match health::of_every_directory(&state, now).await {
        Ok(directories) => directories,
        Err(error) => return error_page(ApiError::internal(error)),
    };
    let expiring = match expiry::expiring_soon(&state, now, EXPIRING_SHOWN).await {
        Ok(expiring) => expiring,
        Err(error) => return error_page(ApiError::internal(error)),
    };
    render(
        StatusCode::OK,
        &OverviewPage {
            layout: session.layout("overview"),
            directories: directories.into_iter().map(health_row).collect(),
            expiring: expiring
                .into_iter()
                .map(|soon| expiring_row(soon, now))
                .collect(),
        },
    )
}

fn expiring_row(soon: expiry::ExpiringSoon, now: UnixMillis) -> ExpiringRow {
    let password = &soon.password;
    let directory = password.directory.to_string();
    let left_hours = password.expires_at.0.saturating_sub(now.0) / 3_600_000;
    ExpiringRow {
        href: user_href(&directory, &password.user.user),
        logon_name: password.user.user.sam_account_name.clone(),
        directory,
        expires: format_time(Some(password.expires_at)),
        left: if left_hours < 48 {
            format!("{left_hours} hours")
        } else {
            format!("{} days", left_hours / 24)
        },
        reminded: if soon.reminded.is_empty() {
            "not yet".into()
        } else {
            soon.reminded
                .iter()
                .map(|days| format!("{days} days"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    }
}

pub(super) async fn directory_names(state: &AppState) -> Result<Vec<String>, ApiError> {
    Ok(state
        .store
        .directories()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|directory| directory.name.to_string())
        .collect())
}

/// Every directory, and the one a search is about: the one it names, or the first there is.
async fn directories_and_choice(
    state: &AppState,
    requested: Option<String>,
) -> Result<(Vec<String>, String), ApiError> {
    let known = directory_names(state).await?;
    let chosen = requested
        .filter(|name| !name.is_empty())
        .or_else(|| known.first().cloned())
        .unwrap_or_default();
    Ok((known, chosen))
}

fn user_badges(user: &SyncedUser) -> Vec<(&'static str, &'static str)> {
    let mut badges = vec![if user.enabled {
        ("good", "enabled")
    } else {
        ("bad", "disabled")
    }];
    if user.locked_out {
        badges.push(("bad", "locked out"));
    }
    if user.must_change_password {
        badges.push(("warn", "must change password"));
    }
    if user.password_never_expires {
        badges.push(("warn", "password never expires"));
    }
    if user.protected {
        badges.push(("warn", "protected (adminCount)"));
    }
    badges
}

fn user_href(directory: &str, user: &SyncedUser) -> String {
    format!(
        "/console/directories/{}/users/{}",
        path_segment(directory),
        path_segment(&user.sam_account_name)
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSearchFields {
    directory: Option<String>,
    q: Option<String>,
    group: Option<String>,
}

pub async fn users(
    State(state): State<AppState>,
    session: ConsoleSession,
    search: Result<Query<UserSearchFields>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(search)) = search else {
        return error_page(ApiError::invalid("The search is not valid."));
    };
    let (directories, directory) = match directories_and_choice(&state, search.directory).await {
        Ok(found) => found,
        Err(error) => return error_page(error),
    };
    let mut page = UsersPage {
        layout: session.layout("users"),
        directories,
        directory: directory.clone(),
        q: search.q.clone().unwrap_or_default(),
        group: search.group.clone().unwrap_or_default(),
        users: Vec::new(),
        limit: PAGE_SIZE as usize,
        error: None,
    };
    if directory.is_empty() {
        return render(StatusCode::OK, &page);
    }
    let found = async {
        let name: DirectoryName = directory
            .parse()
            .map_err(|error| ApiError::invalid(format!("{error}.")))?;
        let query = UserQuery {
            text: search_text(search.q, "search text")?,
            group: search_text(search.group, "group")?,
            limit: PAGE_SIZE,
        };
        state
            .store
            .search_users(&name, &query)
            .await
            .map_err(|error| ApiError::from_directory_store(&name, error))
    }
    .await;
    match found {
        Ok(users) => {
            page.users = users
                .into_iter()
                .map(|found| UserRow {
                    href: user_href(&directory, &found.user),
                    badges: user_badges(&found.user),
                    logon_name: found.user.sam_account_name,
                    display_name: found.user.display_name.unwrap_or_default(),
                    user_principal_name: found.user.user_principal_name.unwrap_or_default(),
                    synced: format_time(Some(found.last_synced_at)),
                })
                .collect();
            render(StatusCode::OK, &page)
        }
        Err(error) => {
            let status = error.status;
            page.error = Some(error.message);
            render(status, &page)
        }
    }
}

/// The user's page, with the outcome of what was just done to them, if anything.
async fn user_page(
    state: &AppState,
    session: &ConsoleSession,
    target: &UserTarget,
    status: StatusCode,
    outcome: Option<OperationOutcome>,
) -> Response {
    let detail = match state
        .store
        .user_detail(&target.directory, &target.name)
        .await
    {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            return error_page(ApiError::new(
                StatusCode::NOT_FOUND,
                "user_not_found",
                format!(
                    "No single synced user of {} is named {}.",
                    target.directory, target.name
                ),
            ));
        }
        Err(error) => return error_page(ApiError::from_directory_store(&target.directory, error)),
    };
    // Each form its own id: a form sent twice is applied once, and a stale form of one
    // operation can never be answered with the other's outcome.
    let (reset_request_id, unlock_request_id) = match (RequestId::generate(), RequestId::generate())
    {
        (Ok(reset), Ok(unlock)) => (reset.to_string(), unlock.to_string()),
        (Err(error), _) | (_, Err(error)) => return error_page(ApiError::internal(error)),
    };
    let user = detail.user;
    let directory = target.directory.to_string();
    let groups = detail
        .direct_groups
        .into_iter()
        .map(|group| (group.name, false))
        .chain(
            detail
                .nested_groups
                .into_iter()
                .map(|group| (group.name, true)),
        )
        .collect();
    let password_last_set = if user.must_change_password {
        "must be changed at next sign-in".into()
    } else {
        format_time(user.password_last_set)
    };
    let page = UserPage {
        layout: session.layout("users"),
        csrf: session.csrf.clone(),
        href: user_href(&directory, &user),
        directory,
        badges: user_badges(&user),
        locked_out: user.locked_out,
        display_name: user
            .display_name
            .clone()
            .unwrap_or_else(|| user.sam_account_name.clone()),
        logon_name: user.sam_account_name,
        user_principal_name: user.user_principal_name.unwrap_or_default(),
        mail: user.mail.unwrap_or_default(),
        distinguished_name: user.distinguished_name,
        anchor: user.anchor.to_string(),
        password_last_set,
        synced: format_time(Some(detail.last_synced_at)),
        groups,
        outcome,
        reset_request_id,
        unlock_request_id,
    };
    render(status, &page)
}

pub async fn user(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path((directory, name)): Path<(String, String)>,
) -> Response {
    match UserTarget::parse(&directory, name).map_err(ApiError::from) {
        Ok(target) => user_page(&state, &session, &target, StatusCode::OK, None).await,
        Err(error) => error_page(error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetForm {
    csrf: String,
    request_id: String,
    new_password: SecretString,
    confirm_password: SecretString,
    must_change: Option<String>,
    unlock: Option<String>,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => ResetForm);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockForm {
    csrf: String,
    request_id: String,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => UnlockForm);

fn request_id(text: &str) -> Result<RequestId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid("The form is damaged. Reload the page and try again."))
}

fn outcome_of(
    result: Result<WritebackOutcome, WritebackError>,
) -> Result<(StatusCode, OperationOutcome), ApiError> {
    let outcome = result?;
    Ok((
        operation_status(&outcome.result),
        OperationOutcome {
            tone: if outcome.result.is_success() {
                "good"
            } else {
                "bad"
            },
            result_code: outcome.result.code(),
            message: messages::describe(outcome.kind, &outcome.result),
            request_id: outcome.request_id.to_string(),
            warnings: outcome
                .warnings
                .iter()
                .map(|warning| (warning.code(), messages::describe_warning(*warning)))
                .collect(),
        },
    ))
}

pub async fn reset(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path((directory, name)): Path<(String, String)>,
    form: ConsoleForm<ResetForm>,
) -> Response {
    let fields = form.fields;
    let target = match UserTarget::parse(&directory, name).map_err(ApiError::from) {
        Ok(target) => target,
        Err(error) => return error_page(error),
    };
    if fields.new_password.expose_secret() != fields.confirm_password.expose_secret() {
        let outcome = OperationOutcome {
            tone: "bad",
            result_code: "passwords_differ",
            message:
                "The two passwords differ, so nothing was changed. Type the new password twice."
                    .into(),
            request_id: fields.request_id,
            warnings: Vec::new(),
        };
        return user_page(
            &state,
            &session,
            &target,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(outcome),
        )
        .await;
    }
    let request_id = match request_id(&fields.request_id) {
        Ok(id) => id,
        Err(error) => return error_page(error),
    };
    let page_target = target.clone();
    let reset = Writeback::ResetPassword {
        new_password: fields.new_password,
        must_change: fields.must_change.is_some(),
        unlock: fields.unlock.is_some(),
    };
    let actor = session.signed_in.actor();
    let result = writeback::perform(
        &state,
        &actor,
        Requester::Administrator,
        target,
        request_id,
        reset,
    )
    .await;
    finish(&state, &session, &page_target, outcome_of(result)).await
}

pub async fn unlock(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path((directory, name)): Path<(String, String)>,
    form: ConsoleForm<UnlockForm>,
) -> Response {
    let (target, request_id) = match (
        UserTarget::parse(&directory, name).map_err(ApiError::from),
        request_id(&form.fields.request_id),
    ) {
        (Ok(target), Ok(request_id)) => (target, request_id),
        (Err(error), _) | (_, Err(error)) => return error_page(error),
    };
    let page_target = target.clone();
    let actor = session.signed_in.actor();
    let result = writeback::perform(
        &state,
        &actor,
        Requester::Administrator,
        target,
        request_id,
        Writeback::Unlock,
    )
    .await;
    finish(&state, &session, &page_target, outcome_of(result)).await
}

/// Shows the user's page with the outcome; a failure before the directory was asked (an unknown
/// directory, a damaged form) gets the error page.
async fn finish(
    state: &AppState,
    session: &ConsoleSession,
    target: &UserTarget,
    outcome: Result<(StatusCode, OperationOutcome), ApiError>,
) -> Response {
    match outcome {
        Ok((status, outcome)) => user_page(state, session, target, status, Some(outcome)).await,
        Err(error) => error_page(error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSearchFields {
    directory: Option<String>,
    q: Option<String>,
}

pub async fn groups(
    State(state): State<AppState>,
    session: ConsoleSession,
    search: Result<Query<GroupSearchFields>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(search)) = search else {
        return error_page(ApiError::invalid("The search is not valid."));
    };
    let (directories, directory) = match directories_and_choice(&state, search.directory).await {
        Ok(found) => found,
        Err(error) => return error_page(error),
    };
    let mut page = GroupsPage {
        layout: session.layout("groups"),
        directories,
        directory: directory.clone(),
        q: search.q.clone().unwrap_or_default(),
        groups: Vec::new(),
        error: None,
    };
    if directory.is_empty() {
        return render(StatusCode::OK, &page);
    }
    let found = async {
        let name: DirectoryName = directory
            .parse()
            .map_err(|error| ApiError::invalid(format!("{error}.")))?;
        let text = search_text(search.q, "search text")?;
        state
            .store
            .search_groups(&name, text.as_deref(), PAGE_SIZE)
            .await
            .map_err(|error| ApiError::from_directory_store(&name, error))
    }
    .await;
    match found {
        Ok(groups) => {
            page.groups = groups
                .into_iter()
                .map(|found| GroupRow {
                    members_href: format!(
                        "/console/users?directory={}&group={}",
                        path_segment(&directory),
                        path_segment(&found.group.name)
                    ),
                    name: found.group.name,
                    direct_members: found.direct_members,
                    distinguished_name: found.group.distinguished_name,
                    synced: format_time(Some(found.last_synced_at)),
                })
                .collect();
            render(StatusCode::OK, &page)
        }
        Err(error) => {
            let status = error.status;
            page.error = Some(error.message);
            render(status, &page)
        }
    }
}
