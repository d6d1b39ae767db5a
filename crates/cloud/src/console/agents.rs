//! Console pages for agents: their live state, registering a new one, revoking one.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use writeback_proto::api::AgentSummary;
use writeback_proto::ids::DirectoryName;

use super::directory::directory_names;
use super::pages::{
    AgentRow, AgentsPage, ErrorPage, Notice, RegistrationTokenPage, format_time, render,
};
use super::session::{ConsoleForm, ConsoleSession, SESSION_COOKIE};
use crate::service::agents;
use crate::service::state::AppState;
use crate::web::browser_form::form_fields;
use crate::web::failure::HttpFailure as ApiError;

fn agent_row(agent: AgentSummary) -> AgentRow {
    let (state, state_label, tone) =
        match (agent.revoked_at, agent.connected, agent.directory_reachable) {
            (Some(_), _, _) => ("revoked", "Revoked", "bad"),
            (None, true, Some(false)) => ("directory_unreachable", "Directory unreachable", "bad"),
            (None, true, _) => ("connected", "Connected", "good"),
            (None, false, _) => ("disconnected", "Not connected", "bad"),
        };
    AgentRow {
        agent_id: agent.agent_id.to_string(),
        directory: agent.directory.to_string(),
        name: agent.name,
        state,
        state_label,
        tone,
        version: agent.version,
        address: agent.address.unwrap_or_default(),
        node: agent.node.unwrap_or_default(),
        last_heartbeat: format_time(agent.last_heartbeat_at),
        requests_in_flight: agent.requests_in_flight,
        last_error: agent.last_error.unwrap_or_default(),
        revoked: agent.revoked_at.is_some(),
    }
}

async fn agents_page(
    state: &AppState,
    session: &ConsoleSession,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    let loaded = async {
        Ok::<_, ApiError>((
            agents::summaries(state).await.map_err(ApiError::internal)?,
            directory_names(state).await?,
        ))
    };
    let (agents, directories) = match loaded.await {
        Ok(loaded) => loaded,
        Err(error) => return ErrorPage::from(error).into_response(),
    };
    let page = AgentsPage {
        layout: session.layout("agents"),
        csrf: session.csrf.clone(),
        agents: agents.into_iter().map(agent_row).collect(),
        nodes: agents::nodes(state),
        default_directory: directories.first().cloned().unwrap_or_default(),
        directories,
        token_minutes: state.config.registration_token_minutes.max(1),
        notice,
    };
    render(status, &page)
}

pub async fn agents(State(state): State<AppState>, session: ConsoleSession) -> Response {
    agents_page(&state, &session, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterForm {
    csrf: String,
    directory: String,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => RegisterForm);

pub async fn register(
    State(state): State<AppState>,
    session: ConsoleSession,
    headers: HeaderMap,
    form: ConsoleForm<RegisterForm>,
) -> Response {
    let directory: DirectoryName = match form.fields.directory.trim().parse() {
        Ok(directory) => directory,
        Err(error) => {
            let notice = Notice::bad(format!("That directory name is not valid: {error}."));
            return agents_page(
                &state,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(notice),
            )
            .await;
        }
    };
    let issued =
        agents::issue_registration_token_for(&state, &session.signed_in.actor(), &directory).await;
    let (token, expires_at) = match issued {
        Ok(issued) => issued,
        Err(error) => return ErrorPage::from(ApiError::internal(error)).into_response(),
    };
    // The address the administrator reached the console at is the one agents should dial.
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("this-cloud.example.com");
    render(
        StatusCode::CREATED,
        &RegistrationTokenPage {
            layout: session.layout("agents"),
            directory: directory.to_string(),
            token: token.expose_secret().to_owned(),
            expires: format_time(Some(expires_at)),
            cloud_url: format!("https://{host}"),
            fingerprint: state.fingerprint.to_string(),
        },
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeForm {
    csrf: String,
    agent_id: String,
    confirm: Option<String>,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => RevokeForm);

pub async fn revoke(
    State(state): State<AppState>,
    session: ConsoleSession,
    form: ConsoleForm<RevokeForm>,
) -> Response {
    let fields = form.fields;
    if fields.confirm.is_none() {
        let notice = Notice::bad("Nothing was revoked: tick the box to confirm first.");
        return agents_page(
            &state,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(notice),
        )
        .await;
    }
    match agents::revoke(&state, &session.signed_in.actor(), &fields.agent_id).await {
        Ok(()) => {
            let notice = Notice::good(format!(
                "Agent {} is revoked: it was disconnected and will be refused if it connects again.",
                fields.agent_id
            ));
            agents_page(&state, &session, StatusCode::OK, Some(notice)).await
        }
        Err(error) => {
            let failure = ApiError::from(error);
            let notice = Notice::bad(failure.message);
            agents_page(&state, &session, failure.status, Some(notice)).await
        }
    }
}
