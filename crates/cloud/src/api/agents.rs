//! Agents through the API: list them with their live state and the operations they have now,
//! register a new one (a one-time token), revoke one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use writeback_proto::api::{
    AgentSummary, CloudNode, ErrorResponse, OperationInFlight, RegistrationTokenResponse,
};
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::time::UnixMillis;

use super::extract::{ApiError, DirectoryPath};
use crate::service::administrator_sign_in::SignedIn;
use crate::service::agents;
use crate::service::state::AppState;

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])), responses((status = 200, description = "Every registered agent, revoked ones included.", body = Vec<AgentSummary>), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn list_agents(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<Vec<AgentSummary>>, ApiError> {
    agents::summaries(&state)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "agents", security(("bearer" = [])), responses((status = 200, description = "This cloud node and every other node of its cluster heard from in the last two seconds, with the agents connected to each.", body = Vec<CloudNode>), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn nodes(State(state): State<AppState>, _signed_in: SignedIn) -> Json<Vec<CloudNode>> {
    Json(agents::nodes(&state))
}

#[utoipa::path(get, path = "/api/v1/operations", tag = "writeback", security(("bearer" = [])), responses((status = 200, description = "Every operation the cloud is waiting on now, oldest first, with the agent that has it and how far it got.", body = Vec<OperationInFlight>), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn operations_in_flight(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Json<Vec<OperationInFlight>> {
    Json(state.relay.operations_in_flight(UnixMillis::now()))
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/registration-tokens", tag = "agents", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain).")), responses((status = 201, description = "The token, shown once.", body = RegistrationTokenResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
/// A one-time token for `writeback-agent register`, valid for the configured lifetime. The
/// directory is created if it is new.
pub async fn create_registration_token(
    State(state): State<AppState>,
    signed_in: SignedIn,
    DirectoryPath(directory): DirectoryPath,
) -> Result<(StatusCode, Json<RegistrationTokenResponse>), ApiError> {
    let (token, expires_at) =
        agents::issue_registration_token_for(&state, &signed_in.actor(), &directory)
            .await
            .map_err(ApiError::internal)?;
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
    agents::revoke(&state, &signed_in.actor(), &agent_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
