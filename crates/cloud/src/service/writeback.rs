//! One entry for every password operation: reset, change, unlock and verify, asked for by an
//! administrator (API, console, CLI) or by a person at the portal. A typed request goes in; the
//! directory's own verdict comes out, audited and counted once.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;
use writeback_policy::{MAX_PASSWORD_UTF16_UNITS, utf16_length};
use writeback_proto::api::{OperationTrace, TraceHop};
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::intent::OperationIntent;
use writeback_proto::operation::{AgentTrace, OperationKind, UserRef, Verdict};
use writeback_proto::result::{OutcomeWarning, ResultCode};
use writeback_proto::sealing::SecretField;
use writeback_proto::time::UnixMillis;
use writeback_store::StoreError;

use crate::service::audit::{Actor, AuditAction};
use crate::service::directory::{UserTarget, resolve_target};
use crate::service::self_service::notices;
use crate::service::state::AppState;

/// What to do to the user, with its secrets; the user comes from the [`UserTarget`].
#[derive(Debug)]
pub enum Writeback {
    ResetPassword {
        new_password: SecretString,
        must_change: bool,
        unlock: bool,
    },
    ChangePassword {
        current_password: SecretString,
        new_password: SecretString,
    },
    Unlock,
    VerifyPassword {
        password: SecretString,
    },
}

/// Why nothing was sent to the directory.
#[derive(Debug, Error)]
pub enum WritebackError {
    #[error("`{}` must not be empty", .0.as_str())]
    EmptyPassword(SecretField),
    #[error("`{}` is longer than {MAX_PASSWORD_UTF16_UNITS} characters", .0.as_str())]
    PasswordTooLong(SecretField),
    #[error("no directory is named {0}")]
    UnknownDirectory(DirectoryName),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The directory's verdict on one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritebackOutcome {
    pub request_id: RequestId,
    pub kind: OperationKind,
    pub result: ResultCode,
    /// What part of a success had no effect in the directory.
    pub warnings: Vec<OutcomeWarning>,
}

impl Writeback {
    /// Passwords longer than AD accepts, or empty, are refused before anything is sealed or
    /// sent.
    pub fn check_passwords(&self) -> Result<(), WritebackError> {
        let passwords: &[(SecretField, &SecretString)] = match self {
            Self::ResetPassword { new_password, .. } => &[(SecretField::NewPassword, new_password)],
            Self::ChangePassword {
                current_password,
                new_password,
            } => &[
                (SecretField::CurrentPassword, current_password),
                (SecretField::NewPassword, new_password),
            ],
            Self::Unlock => &[],
            Self::VerifyPassword { password } => &[(SecretField::CurrentPassword, password)],
        };
        for (field, password) in passwords {
            check_password(*field, password)?;
        }
        Ok(())
    }

    /// The password this operation would set, which is screened against the lists of common
    /// and breached passwords.
    fn new_password(&self) -> Option<&SecretString> {
        match self {
            Self::ResetPassword { new_password, .. }
            | Self::ChangePassword { new_password, .. } => Some(new_password),
            Self::Unlock | Self::VerifyPassword { .. } => None,
        }
    }

    fn for_user(self, user: UserRef) -> OperationIntent {
        match self {
            Self::ResetPassword {
                new_password,
                must_change,
                unlock,
            } => OperationIntent::ResetPassword {
                user,
                new_password,
                must_change,
                unlock,
            },
            Self::ChangePassword {
                current_password,
                new_password,
            } => OperationIntent::ChangePassword {
                user,
                current_password,
                new_password,
            },
            Self::Unlock => OperationIntent::Unlock { user },
            Self::VerifyPassword { password } => OperationIntent::VerifyPassword { user, password },
        }
    }
}

/// One password as AD would take it: not empty, and no longer than AD accepts.
pub fn check_password(field: SecretField, password: &SecretString) -> Result<(), WritebackError> {
    let length = utf16_length(password.expose_secret());
    if length == 0 {
        return Err(WritebackError::EmptyPassword(field));
    }
    if length > MAX_PASSWORD_UTF16_UNITS {
        return Err(WritebackError::PasswordTooLong(field));
    }
    Ok(())
}

/// Where the time went, hop by hop, adding up to the time from `perform` to the verdict: the
/// cloud's checks and lookup, the bus when the agent is connected to another node (there and
/// back, and that node's own handling), the relay (sealing, the WebSocket both ways, waiting for
/// an agent), and the agent's own parts when an agent did the work.
fn operation_trace(
    before_dispatch: Duration,
    dispatch: Duration,
    agent: Option<&AgentTrace>,
) -> OperationTrace {
    let micros = |duration: Duration| u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let hop = |name: &str, micros: u64| TraceHop {
        hop: name.to_owned(),
        micros,
    };
    let (cloud, dispatch) = (micros(before_dispatch), micros(dispatch));
    let mut hops = vec![hop("cloud", cloud)];
    match agent {
        Some(agent) => {
            let agent_total = agent.total_us.min(dispatch);
            let write = agent.write_us.min(agent_total);
            let lookup = agent.lookup_us.min(agent_total - write);
            match agent.relayed_us {
                Some(relayed) => {
                    let at_agent_node = relayed.clamp(agent_total, dispatch);
                    hops.extend([
                        hop("bus", dispatch - at_agent_node),
                        hop("relay", at_agent_node - agent_total),
                    ]);
                }
                None => hops.push(hop("relay", dispatch - agent_total)),
            }
            hops.extend([
                hop("agent_lookup", lookup),
                hop("agent_checks", agent_total - write - lookup),
                hop("agent_write", write),
            ]);
        }
        None => hops.push(hop("relay", dispatch)),
    }
    OperationTrace {
        hops,
        total_us: cloud.saturating_add(dispatch),
        domain_controller: agent.map(|agent| agent.domain_controller.clone()),
    }
}

/// Who asked, which decides what is told afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// An administrator: a successful reset is announced to every administrator and the user,
    /// as the self-service policy says.
    Administrator,
    /// The person themselves at the portal, who is told on the page.
    SelfService,
}

/// Checks, resolves `target` (unless the caller already holds its anchor), dispatches to an
/// agent of its directory, waits for the directory's answer, counts, logs and audits it.
pub async fn perform(
    state: &AppState,
    actor: &Actor,
    requester: Requester,
    target: UserTarget,
    request_id: RequestId,
    writeback: Writeback,
) -> Result<WritebackOutcome, WritebackError> {
    // Durations for the trace and the log: where an operation's time goes.
    let entered = Instant::now();
    writeback.check_passwords()?;
    let directory = target.directory.clone();
    // An agent of the directory can only be connected if the directory exists.
    let known =
        state.relay.serves(&directory) || state.store.directory(&directory).await?.is_some();
    if !known {
        return Err(WritebackError::UnknownDirectory(directory));
    }
    let typed_name = matches!(target.user, UserRef::LogonName(_));
    let mut target = if typed_name {
        resolve_target(state, target).await?
    } else {
        target
    };
    // A retry names the user as its first attempt did, even if the user was synced in between.
    // Only a name resolved to an anchor here can differ from it: a caller holding the anchor
    // (self-service) sends it every time, so no ledger is read for it.
    if typed_name
        && matches!(target.user, UserRef::Anchor(_))
        && let Some(UserRef::LogonName(typed)) = state.relay.earlier_user(&request_id).await
        && typed == target.name
    {
        target.user = UserRef::LogonName(typed);
    }
    // On a list, the password is refused here as the directory refuses one against its policy:
    // audited and counted the same, but never sent.
    let listed = writeback
        .new_password()
        .and_then(|password| state.screen.screen(password.expose_secret()));
    let intent = writeback.for_user(target.user.clone());
    let kind = intent.kind();
    let is_reset = kind == OperationKind::ResetPassword;
    let described = target.describe();
    let started = UnixMillis::now();
    let deadline = started.saturating_add(state.config.request_timeout());
    tracing::info!(%request_id, operation = %kind, %directory, user = %described, actor = %actor.name, "operation started");
    let dispatched = Instant::now();
    let before_dispatch = dispatched.duration_since(entered);
    let Verdict {
        result,
        warnings,
        trace: agent_trace,
    } = match listed {
        Some(reason) => Verdict {
            result: ResultCode::PolicyViolation {
                reason,
                requirements: None,
            },
            warnings: Vec::new(),
            trace: None,
        },
        None => {
            state
                .relay
                .dispatch(&directory, request_id, deadline, &intent)
                .await
        }
    };
    drop(intent);
    let elapsed = dispatched.elapsed();
    state
        .metrics
        .operations
        .increment(&[directory.as_str(), kind.as_str(), result.code()]);
    state
        .metrics
        .operation_seconds
        .observe(&[kind.as_str()], elapsed.as_secs_f64());
    let finished = UnixMillis::now();
    let detail = match &result {
        ResultCode::DirectoryUnavailable { detail }
        | ResultCode::Internal { detail }
        | ResultCode::OutcomeUnknown { detail } => Some(detail.clone()),
        ResultCode::PolicyViolation { reason, .. } => Some(reason.as_str().into()),
        _ if !warnings.is_empty() => Some(format!(
            "warning: {}",
            warnings
                .iter()
                .map(|warning| warning.code())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => None,
    };
    let trace = operation_trace(before_dispatch, elapsed, agent_trace.as_deref());
    let audited = AuditAction::Operation(kind)
        .by(actor, finished)
        .directory(&directory)
        .target(described.clone())
        .request(request_id)
        .result(result.code())
        .maybe_detail(detail)
        .trace(&trace)
        .record(&state.store)
        .await;
    tracing::info!(
        %request_id,
        operation = %kind,
        %directory,
        user = %described,
        result = result.code(),
        warnings = ?warnings,
        elapsed_ms = finished.duration_since(started).as_millis() as u64,
        before_dispatch_us = before_dispatch.as_micros() as u64,
        dispatch_us = elapsed.as_micros() as u64,
        audit_us = dispatched.elapsed().saturating_sub(elapsed).as_micros() as u64,
        trace = %trace.describe(),
        "operation finished"
    );
    audited?;
    if is_reset && result.is_success() && requester == Requester::Administrator {
        // Notices are best effort and read the store: they follow the answer, not delay it.
        let (state, administrator) = (state.clone(), actor.name.clone());
        tokio::spawn(async move {
            notices::notify_admin_reset(&state, &administrator, &target).await;
        });
    }
    Ok(WritebackOutcome {
        request_id,
        kind,
        result,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(relayed_us: Option<u64>) -> AgentTrace {
        AgentTrace {
            domain_controller: "dc1.corp.example.test".into(),
            lookup_us: 3_000,
            write_us: 40_000,
            total_us: 45_000,
            relayed_us,
        }
    }

    fn names(trace: &OperationTrace) -> Vec<&str> {
        trace.hops.iter().map(|hop| hop.hop.as_str()).collect()
    }

    #[test]
    fn the_hops_add_up_to_the_total_with_the_bus_when_the_request_crossed_it() {
        let (cloud, dispatch) = (Duration::from_micros(1_200), Duration::from_micros(60_000));
        let local = operation_trace(cloud, dispatch, Some(&agent(None)));
        assert_eq!(
            names(&local),
            [
                "cloud",
                "relay",
                "agent_lookup",
                "agent_checks",
                "agent_write"
            ]
        );
        let crossed = operation_trace(cloud, dispatch, Some(&agent(Some(50_000))));
        assert_eq!(
            names(&crossed),
            [
                "cloud",
                "bus",
                "relay",
                "agent_lookup",
                "agent_checks",
                "agent_write"
            ]
        );
        assert_eq!(crossed.hops[1].micros, 10_000);
        assert_eq!(crossed.hops[2].micros, 5_000);
        for trace in [&local, &crossed] {
            let sum: u64 = trace.hops.iter().map(|hop| hop.micros).sum();
            assert_eq!(sum, trace.total_us);
            assert_eq!(trace.total_us, 61_200);
        }
        // Clocks of two machines are never compared: a node's figure beyond what the entering
        // node waited is cut to it.
        let skewed = operation_trace(cloud, dispatch, Some(&agent(Some(90_000))));
        let sum: u64 = skewed.hops.iter().map(|hop| hop.micros).sum();
        assert_eq!(sum, skewed.total_us);
    }
}
