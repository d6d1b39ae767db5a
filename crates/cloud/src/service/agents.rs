//! On-premises agents: registration tokens, the list an administrator sees, and revocation.

use std::time::Duration;

use secrecy::SecretString;
use thiserror::Error;
use writeback_proto::api::{AgentSummary, CloudNode};
use writeback_proto::frame::{Registration, RejectReason};
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::time::UnixMillis;
use writeback_store::{NewAgent, Store, StoreError};

use crate::service::audit::{Actor, AuditAction};
use crate::service::auth::{self, token_hash};
use crate::service::error::CloudError;
use crate::service::relay::LiveAgent;
use crate::service::state::AppState;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("the agent id must be 32 hexadecimal digits")]
    InvalidId,
    #[error("no agent has the id {0}")]
    Unknown(AgentId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every registered agent, with what its live connection (if any) says.
pub async fn summaries(state: &AppState) -> Result<Vec<AgentSummary>, StoreError> {
    let agents = state.store.agents().await?;
    let live = state.relay.live_agents();
    let node = state.config.node();
    Ok(agents
        .into_iter()
        .map(|agent| {
            let connection = live.iter().find(|live| live.agent_id == agent.agent_id);
            AgentSummary {
                connected: connection.is_some(),
                node: connection.map(|connection| {
                    connection
                        .remote_node
                        .clone()
                        .unwrap_or_else(|| node.clone())
                }),
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

/// This node and every other node of its cluster, by name, with the agents connected to each.
pub fn nodes(state: &AppState) -> Vec<CloudNode> {
    let agents = state.relay.live_agents();
    let this = state.config.node();
    let node_of = |agent: &LiveAgent| agent.remote_node.clone().unwrap_or_else(|| this.clone());
    let mut names = vec![this.clone()];
    if let Some(cluster) = &state.cluster {
        names.extend(cluster.peer_names());
    }
    names.extend(agents.iter().map(node_of));
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let on_node = agents.iter().filter(|agent| node_of(agent) == name);
            CloudNode {
                this_node: name == this,
                agents: on_node.clone().count() as u64,
                requests_in_flight: on_node.map(|agent| agent.requests_in_flight as u64).sum(),
                name,
            }
        })
        .collect()
}

/// Revokes the agent with the id `agent_id` (as text, from a URL or a form): it is disconnected
/// at once and refused at every later connection.
pub async fn revoke(state: &AppState, actor: &Actor, agent_id: &str) -> Result<(), AgentError> {
    let agent_id: AgentId = agent_id.parse().map_err(|_| AgentError::InvalidId)?;
    let now = UnixMillis::now();
    let record = state
        .store
        .agent(&agent_id)
        .await?
        .ok_or(AgentError::Unknown(agent_id))?;
    state.store.revoke_agent(&agent_id, now).await?;
    // After the store: a reconnection racing this call is refused by the record, not by luck.
    state.relay.revoke(&agent_id);
    AuditAction::RevokeAgent
        .by(actor, now)
        .directory(&record.directory)
        .target(agent_id.to_string())
        .detail(format!("agent {} on {}", record.name, record.directory))
        .record(&state.store)
        .await?;
    tracing::warn!(%agent_id, directory = %record.directory, actor = %actor.name, "agent revoked");
    Ok(())
}

/// A one-time token for `writeback-agent register`, valid for the configured lifetime. The
/// directory is created if it is new.
pub async fn issue_registration_token_for(
    state: &AppState,
    actor: &Actor,
    directory: &DirectoryName,
) -> Result<(SecretString, UnixMillis), CloudError> {
    let lifetime = Duration::from_secs(state.config.registration_token_minutes.max(1) * 60);
    let issued = issue_registration_token(&state.store, directory, lifetime, actor).await?;
    tracing::info!(%directory, actor = %actor.name, "agent registration token issued");
    Ok(issued)
}

/// Issues a registration token for `directory` (created if new), valid for `lifetime`, and
/// audits who asked for it and from where.
pub async fn issue_registration_token(
    store: &Store,
    directory: &DirectoryName,
    lifetime: Duration,
    actor: &Actor,
) -> Result<(SecretString, UnixMillis), CloudError> {
    let now = UnixMillis::now();
    let record = store.ensure_directory(directory, now).await?;
    let token = auth::new_token(auth::REGISTRATION_TOKEN_PREFIX)?;
    let expires_at = now.saturating_add(lifetime);
    store
        .create_registration_token(
            &auth::token_hash(secrecy::ExposeSecret::expose_secret(&token)),
            record.id,
            now,
            expires_at,
        )
        .await?;
    AuditAction::CreateRegistrationToken
        .by(actor, now)
        .directory(directory)
        .detail(format!("expires in {} minutes", lifetime.as_secs() / 60))
        .record(store)
        .await?;
    Ok((token, expires_at))
}

/// Issues a registration token as the set-up command on the cloud's host.
pub async fn create_registration_token(
    store: &Store,
    directory: &DirectoryName,
    lifetime: Duration,
) -> Result<(SecretString, UnixMillis), CloudError> {
    let actor = Actor::local_command("writeback-cloud token create");
    issue_registration_token(store, directory, lifetime, &actor).await
}

/// Redeems an agent's registration token: the agent is stored for the token's directory, or
/// refused; audited either way.
pub async fn redeem(
    state: &AppState,
    registration: &Registration,
    origin: Option<String>,
) -> Result<(AgentId, DirectoryName), RejectReason> {
    use secrecy::ExposeSecret;
    let agent_id = AgentId::generate().map_err(|_| RejectReason::Internal)?;
    let agent = NewAgent {
        agent_id,
        name: registration.name.clone(),
        version: registration.version.clone(),
        identity_key: registration.identity_key,
    };
    let now = UnixMillis::now();
    let hash = token_hash(registration.token.expose_secret());
    let outcome = state
        .store
        .redeem_registration_token(&hash, &agent, now)
        .await;
    let (result_code, result) = match outcome {
        Ok(Some(directory)) => {
            tracing::info!(%agent_id, %directory, name = %registration.name, "agent registered");
            ("success", Ok((agent_id, directory)))
        }
        Ok(None) => {
            tracing::warn!(name = %registration.name, "agent registration refused: token invalid, used or expired");
            ("invalid_token", Err(RejectReason::InvalidToken))
        }
        Err(error) => {
            tracing::error!(%error, "agent registration failed");
            ("internal", Err(RejectReason::Internal))
        }
    };
    let entry = AuditAction::RegisterAgent
        .by(
            &Actor::new(format!("agent:{}", registration.name), origin),
            now,
        )
        .target(agent_id.to_string())
        .result(result_code);
    let entry = match &result {
        Ok((_, directory)) => entry.directory(directory),
        Err(_) => entry,
    };
    if let Err(error) = entry.record(&state.store).await {
        tracing::error!(%error, "cannot write the audit log");
    }
    result
}
