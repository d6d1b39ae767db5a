//! Agents through the API: list them with their live state, register a new one (a one-time
//! token), revoke one.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use writeback_proto::api::{AgentSummary, ErrorResponse, RegistrationTokenResponse};
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::time::UnixMillis;
use writeback_store::AuditEvent;

use super::extract::{ApiError, DirectoryPath, SignedIn};
use crate::AppState;

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])), responses((status = 200, description = "Every registered agent, revoked ones included.", body = Vec<AgentSummary>), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn list_agents(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<Vec<AgentSummary>>, ApiError> {
    summaries(&state).await.map(Json)
}

/// Every registered agent, with what its live connection (if any) says.
pub(crate) async fn summaries(state: &AppState) -> Result<Vec<AgentSummary>, ApiError> {
    let agents = state.store.agents().await.map_err(ApiError::internal)?;
    let live = state.relay.live_agents();
    Ok(agents
        .into_iter()
        .map(|agent| {
            let connection = live.iter().find(|live| live.agent_id == agent.agent_id);
            AgentSummary {
                connected: connection.is_some(),
                requests_in_flight: connection
                    .map_or(0, |connection| connection.requests_in_flight as u64),
                directory_reachable: connection
                    .and_then(|connection| connection.status.as_ref())
                    .map(|status| status.directory_reachable),
                agent_id: agent.agent_id,
                directory: agent.directory,
                name: agent.name,
                version: agent.version,
                registered_at: agent.registered_at,
                last_connected_at: agent.last_connected_at,
                last_heartbeat_at: agent.last_heartbeat_at,
                last_error: agent.last_error,
                address: agent.last_address,
                revoked_at: agent.revoked_at,
            }
        })
        .collect())
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/registration-tokens", tag = "agents", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain).")), responses((status = 201, description = "The token, shown once.", body = RegistrationTokenResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
/// A one-time token for `writeback-agent register`, valid for the configured lifetime. The
/// directory is created if it is new.
pub async fn create_registration_token(
    State(state): State<AppState>,
    signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
) -> Result<(StatusCode, Json<RegistrationTokenResponse>), ApiError> {
    let lifetime = Duration::from_secs(state.config.registration_token_minutes.max(1) * 60);
    let (token, expires_at) = crate::issue_registration_token(
        &state.store,
        &directory,
        lifetime,
        &signed_in.administrator.email,
        signed_in.origin.clone(),
    )
    .await
    .map_err(ApiError::internal)?;
    tracing::info!(%directory, actor = %signed_in.administrator.email, "agent registration token issued");
    Ok((
        StatusCode::CREATED,
        Json(RegistrationTokenResponse {
            directory,
            token,
            expires_at,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/agents/{agent}/revoke", tag = "agents", security(("bearer" = [])), params(("agent" = AgentId, Path, description = "The agent id.")), responses((status = 204, description = "Revoked and disconnected."), (status = 404, description = "No such agent.", body = ErrorResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
/// Revokes an agent: it is disconnected at once and refused at every later connection.
pub async fn revoke_agent(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(agent_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke(&state, &signed_in, &agent_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the agent with the id `agent_id` (as text, from a URL or a form) for `signed_in`.
pub(crate) async fn revoke(
    state: &AppState,
    signed_in: &SignedIn,
    agent_id: &str,
) -> Result<(), ApiError> {
    let agent_id: AgentId = agent_id
        .parse()
        .map_err(|_| ApiError::invalid("The agent id must be 32 hexadecimal digits."))?;
    let now = UnixMillis::now();
    let record = state
        .store
        .agent(&agent_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_agent",
                format!("No agent has the id {agent_id}."),
            )
        })?;
    state
        .store
        .revoke_agent(&agent_id, now)
        .await
        .map_err(ApiError::internal)?;
    // After the store: a reconnection racing this call is refused by the record, not by luck.
    state.relay.revoke(&agent_id);
    state
        .store
        .append_audit(&AuditEvent {
            at: now,
            actor: signed_in.administrator.email.clone(),
            action: "revoke_agent".into(),
            directory: Some(record.directory.to_string()),
            target: Some(agent_id.to_string()),
            request_id: None,
            result_code: "success".into(),
            detail: Some(format!("agent {} on {}", record.name, record.directory)),
            origin: signed_in.origin.clone(),
        })
        .await
        .map_err(ApiError::internal)?;
    tracing::warn!(%agent_id, directory = %record.directory, actor = %signed_in.administrator.email, "agent revoked");
    Ok(())
}
