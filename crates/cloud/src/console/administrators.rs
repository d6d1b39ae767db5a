//! The console's administrators page: the console's words for [`crate::service::administration`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{AdministratorRow, AdministratorsPage, ErrorPage, Notice, format_time, render};
use super::session::{ConsoleForm, ConsoleSession, SESSION_COOKIE};
use crate::service::administration::{self, AdministrationError};
use crate::service::state::AppState;
use crate::web::browser_form::form_fields;
use crate::web::failure::HttpFailure as ApiError;

async fn administrators_page(
    state: &AppState,
    session: &ConsoleSession,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    let administrators = match administration::list(state).await {
        Ok(administrators) => administrators,
        Err(error) => return ErrorPage::from(ApiError::internal(error)).into_response(),
    };
    let you = &session.signed_in.administrator.email;
    let page = AdministratorsPage {
        layout: session.layout("administrators"),
        csrf: session.csrf.clone(),
        administrators: administrators
            .into_iter()
            .map(|administrator| AdministratorRow {
                is_you: administrator.email.eq_ignore_ascii_case(you),
                email: administrator.email,
                enabled: administrator.enabled,
                second_factor: administrator.second_factor,
                sessions: administrator.sessions,
                last_active: format_time(administrator.last_active_at),
            })
            .collect(),
        notice,
    };
    render(status, &page)
}

pub async fn administrators(State(state): State<AppState>, session: ConsoleSession) -> Response {
    administrators_page(&state, &session, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeForm {
    csrf: String,
    email: String,
    action: String,
    confirm: Option<String>,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => ChangeForm);

pub async fn change(
    State(state): State<AppState>,
    session: ConsoleSession,
    form: ConsoleForm<ChangeForm>,
) -> Response {
    let fields = form.fields;
    if fields.confirm.is_none() {
        let notice = Notice::bad("Nothing was changed: tick the box to confirm first.");
        return administrators_page(
            &state,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(notice),
        )
        .await;
    }
    let by = session.signed_in.actor();
    let email = fields.email.as_str();
    let (result, done) = match fields.action.as_str() {
        "disable" => (
            administration::set_enabled(&state, &by, email, false).await,
            "is disabled and signed out everywhere",
        ),
        "enable" => (
            administration::set_enabled(&state, &by, email, true).await,
            "is enabled",
        ),
        "delete" => (
            administration::delete(&state, &by, email).await,
            "is deleted",
        ),
        "end_sessions" => (
            administration::end_sessions(&state, &by, email).await,
            "is signed out everywhere",
        ),
        _ => {
            let notice = Notice::bad("There is no such change.");
            return administrators_page(&state, &session, StatusCode::BAD_REQUEST, Some(notice))
                .await;
        }
    };
    let signed_out_yourself = email.eq_ignore_ascii_case(&by.name)
        && matches!(
            fields.action.as_str(),
            "disable" | "delete" | "end_sessions"
        );
    match result {
        Ok(_) if signed_out_yourself => Redirect::to("/console/sign-in").into_response(),
        Ok(_) => {
            let notice = Notice::good(format!("{email} {done}."));
            administrators_page(&state, &session, StatusCode::OK, Some(notice)).await
        }
        Err(AdministrationError::Internal(error)) => {
            ErrorPage::from(ApiError::internal(error)).into_response()
        }
        Err(error) => {
            let status = match error {
                AdministrationError::UnknownAdministrator => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            let notice = Notice::bad(match error {
                AdministrationError::UnknownAdministrator => {
                    "No administrator has that email.".to_owned()
                }
                _ => "That is the last enabled administrator: enable or create another one first. Nothing was changed.".to_owned(),
            });
            administrators_page(&state, &session, status, Some(notice)).await
        }
    }
}
