//! The health of each directory: one state computed from its registered agents, what the connected
//! ones report, and the writebacks that recently failed for want of an agent or a directory.

use std::time::Duration;

use writeback_proto::api::{DirectoryHealth, HealthState};
use writeback_proto::ids::DirectoryName;
use writeback_proto::time::UnixMillis;
use writeback_store::{AgentRecord, StoreError};

use crate::service::relay::LiveAgent;
use crate::service::state::AppState;

/// Result codes that say the path to the directory failed, not the request.
pub const INFRASTRUCTURE_FAILURES: &[&str] = &[
    "agent_unavailable",
    "directory_unavailable",
    "timeout",
    "internal",
];

/// What the health of one directory is judged from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthFacts {
    /// Registered and not revoked.
    pub agents_registered: u64,
    pub connected: Vec<LiveAgent>,
    pub minimum_agent_version: String,
    /// Fewer connected agents that can use the directory than this is "degraded".
    pub minimum_healthy_agents: u64,
    pub recent_failures: u64,
    pub window: Duration,
}

/// `major.minor.patch` as numbers; anything unreadable counts as older than every release.
fn version_numbers(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

pub fn is_outdated(version: &str, minimum: &str) -> bool {
    match (version_numbers(version), version_numbers(minimum)) {
        (Some(version), Some(minimum)) => version < minimum,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

pub fn judge(directory: DirectoryName, facts: &HealthFacts) -> DirectoryHealth {
    let connected = facts.connected.len() as u64;
    let unreachable: Vec<&LiveAgent> = facts
        .connected
        .iter()
        .filter(|agent| {
            agent
                .status
                .as_ref()
                .is_some_and(|status| !status.directory_reachable)
        })
        .collect();
    let outdated: Vec<&LiveAgent> = facts
        .connected
        .iter()
        .filter(|agent| is_outdated(&agent.version, &facts.minimum_agent_version))
        .collect();
    let healthy = connected - unreachable.len() as u64;
    let minutes = facts.window.as_secs() / 60;
    let (state, summary) = if facts.agents_registered == 0 {
        (
            HealthState::NotConfigured,
            "No agent is registered for this directory. Register one with `writeback agents register`."
                .to_owned(),
        )
    } else if facts.connected.is_empty() {
        (
            HealthState::NoAgentConnected,
            format!(
                "None of the {} registered agents is connected, so writeback is unavailable. Check that writeback-agent runs and can reach the cloud.",
                facts.agents_registered
            ),
        )
    } else if unreachable.len() == facts.connected.len() {
        let detail = unreachable
            .iter()
            .find_map(|agent| {
                agent
                    .status
                    .as_ref()
                    .and_then(|status| status.detail.clone())
            })
            .unwrap_or_else(|| "no detail given".into());
        (
            HealthState::DirectoryUnreachable,
            format!(
                "The agent is connected but cannot use the directory ({detail}). Run `writeback-agent doctor` on the agent's host."
            ),
        )
    } else if let Some(agent) = outdated.first() {
        (
            HealthState::AgentOutdated,
            format!(
                "Agent {} runs version {}, older than {}. Upgrade writeback-agent.",
                agent.agent_id, agent.version, facts.minimum_agent_version
            ),
        )
    } else if healthy < facts.minimum_healthy_agents {
        (
            HealthState::Degraded,
            format!(
                "{healthy} agent(s) can use the directory, fewer than the {} it should have: one more failure and writeback stops. Start another writeback-agent.",
                facts.minimum_healthy_agents
            ),
        )
    } else if !unreachable.is_empty() {
        (
            HealthState::Degraded,
            format!(
                "{} of {} connected agents cannot use the directory; the others carry the load.",
                unreachable.len(),
                connected
            ),
        )
    } else if facts.recent_failures > 0 {
        (
            HealthState::Degraded,
            format!(
                "{} writebacks failed for want of an agent or the directory in the last {minutes} minutes. See the audit log.",
                facts.recent_failures
            ),
        )
    } else {
        (
            HealthState::Healthy,
            "Connected, and the directory answers.".to_owned(),
        )
    };
    DirectoryHealth {
        directory,
        state,
        summary,
        agents_registered: facts.agents_registered,
        agents_connected: connected,
        agents_healthy: healthy,
        agents_minimum: facts.minimum_healthy_agents,
        recent_failures: facts.recent_failures,
    }
}

/// The health of `directory`.
pub async fn of_directory(
    state: &AppState,
    directory: &DirectoryName,
    now: UnixMillis,
) -> Result<DirectoryHealth, StoreError> {
    let agents = state.store.agents().await?;
    let live = state.relay.live_agents();
    gather_and_judge(state, directory, &agents, &live, now).await
}

/// The health of every directory, by name, reading the agents once.
pub async fn of_every_directory(
    state: &AppState,
    now: UnixMillis,
) -> Result<Vec<DirectoryHealth>, StoreError> {
    let agents = state.store.agents().await?;
    let live = state.relay.live_agents();
    let mut healths = Vec::new();
    for directory in state.store.directories().await? {
        healths.push(gather_and_judge(state, &directory.name, &agents, &live, now).await?);
    }
    Ok(healths)
}

async fn gather_and_judge(
    state: &AppState,
    directory: &DirectoryName,
    agents: &[AgentRecord],
    live: &[LiveAgent],
    now: UnixMillis,
) -> Result<DirectoryHealth, StoreError> {
    let agents_registered = agents
        .iter()
        .filter(|agent| agent.directory == *directory && agent.revoked_at.is_none())
        .count() as u64;
    let connected = live
        .iter()
        .filter(|agent| agent.directory == *directory)
        .cloned()
        .collect();
    let window = state.config.health_window();
    let since = UnixMillis(now.0.saturating_sub(window.as_millis() as u64));
    let recent_failures = state
        .store
        .count_audit_results(directory.as_str(), since, INFRASTRUCTURE_FAILURES)
        .await?;
    let facts = HealthFacts {
        agents_registered,
        connected,
        minimum_agent_version: state.config.minimum_agent_version.clone(),
        minimum_healthy_agents: state.config.minimum_healthy_agents,
        recent_failures,
        window,
    };
    Ok(judge(directory.clone(), &facts))
}

#[cfg(test)]
mod tests {
    use writeback_proto::frame::AgentStatus;
    use writeback_proto::ids::AgentId;

    use super::*;

    fn live(version: &str, reachable: Option<bool>) -> LiveAgent {
        LiveAgent {
            agent_id: AgentId::generate().unwrap(),
            directory: "corp".parse().unwrap(),
            version: version.into(),
            status: reachable.map(|directory_reachable| AgentStatus {
                directory_reachable,
                detail: (!directory_reachable).then(|| "connection refused".into()),
                password_policy: None,
                lockout: None,
            }),
            requests_in_flight: 0,
            remote_node: None,
        }
    }

    fn facts(registered: u64, connected: Vec<LiveAgent>, failures: u64) -> HealthFacts {
        HealthFacts {
            agents_registered: registered,
            connected,
            minimum_agent_version: "0.2.0".into(),
            minimum_healthy_agents: 1,
            recent_failures: failures,
            window: Duration::from_secs(15 * 60),
        }
    }

    fn state_of(facts: &HealthFacts) -> HealthState {
        judge("corp".parse().unwrap(), facts).state
    }

    #[test]
    fn each_state_is_reached_and_the_worst_one_wins() {
        assert_eq!(state_of(&facts(0, vec![], 0)), HealthState::NotConfigured);
        assert_eq!(
            state_of(&facts(2, vec![], 3)),
            HealthState::NoAgentConnected
        );
        assert_eq!(
            state_of(&facts(1, vec![live("0.1.0", Some(false))], 3)),
            HealthState::DirectoryUnreachable
        );
        assert_eq!(
            state_of(&facts(1, vec![live("0.1.9", Some(true))], 3)),
            HealthState::AgentOutdated
        );
        assert_eq!(
            state_of(&facts(
                2,
                vec![live("0.2.0", Some(true)), live("0.2.0", Some(false))],
                0
            )),
            HealthState::Degraded
        );
        assert_eq!(
            state_of(&facts(1, vec![live("0.2.0", Some(true))], 1)),
            HealthState::Degraded
        );
        assert_eq!(
            state_of(&facts(1, vec![live("0.3.0", Some(true))], 0)),
            HealthState::Healthy
        );
        // An agent that has not reported yet is not taken for a broken one.
        assert_eq!(
            state_of(&facts(1, vec![live("0.2.0", None)], 0)),
            HealthState::Healthy
        );
    }

    #[test]
    fn fewer_agents_that_can_use_the_directory_than_the_minimum_is_degraded() {
        let two = |connected| HealthFacts {
            minimum_healthy_agents: 2,
            ..facts(2, connected, 0)
        };
        let one_of_two = judge(
            "corp".parse().unwrap(),
            &two(vec![live("0.2.0", Some(true))]),
        );
        assert_eq!(one_of_two.state, HealthState::Degraded);
        assert_eq!(
            (one_of_two.agents_healthy, one_of_two.agents_minimum),
            (1, 2)
        );
        assert!(
            one_of_two.summary.contains("fewer than the 2"),
            "{}",
            one_of_two.summary
        );
        // Connected but unable to use the directory does not count.
        assert_eq!(
            state_of(&two(vec![
                live("0.2.0", Some(true)),
                live("0.2.0", Some(false))
            ])),
            HealthState::Degraded
        );
        assert_eq!(
            state_of(&two(vec![live("0.2.0", Some(true)), live("0.2.0", None)])),
            HealthState::Healthy
        );
    }

    #[test]
    fn the_summary_says_what_to_do() {
        let unreachable = judge(
            "corp".parse().unwrap(),
            &facts(1, vec![live("0.2.0", Some(false))], 0),
        );
        assert!(unreachable.summary.contains("connection refused"));
        assert!(unreachable.summary.contains("writeback-agent doctor"));
        let not_configured = judge("corp".parse().unwrap(), &facts(0, vec![], 0));
        assert!(not_configured.summary.contains("writeback agents register"));
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(is_outdated("0.9.0", "0.10.0"));
        assert!(!is_outdated("0.10.0", "0.9.0"));
        assert!(!is_outdated("1.2.3", "1.2.3"));
        assert!(!is_outdated("1.2.3-rc1", "1.2.3"));
        assert!(is_outdated("garbage", "0.1.0"));
    }
}
