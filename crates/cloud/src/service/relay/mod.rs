//! The relay: agents dial in over WebSocket ([`connection`]) and the API dispatches operations to
//! them, waiting synchronously for the directory's answer.
//!
//! At most once: an operation keeps its request id for its whole life, and the [`ledger`]
//! remembers every id sent: on which connection, what its agent said it was about to overwrite,
//! and the verdict. A repeat of an id whose connection is still up goes to the same agent, whose
//! outcome journal joins or answers it. When the connection that carried a request is lost before
//! the answer, the request waits [`TAKEOVER_SETTLE`] (so that a write the lost agent had already
//! sent has landed) and then goes to any agent of the directory, the lost one included if it came
//! back, marked as an earlier delivery with the password stamp the lost agent read before it
//! wrote: that agent reads the directory and writes only if the password has not moved since.
//! A retry of an answered id gets the same answer without reaching any agent.
//!
//! Several agents of one directory are all used: a new request goes to an agent that can use the
//! directory, with the fewest requests in flight.

pub mod connection;
pub mod ledger;
pub mod sync;

pub use connection::{AgentConnection, LiveAgent};
use connection::{Waiters, lock};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use writeback_proto::api::{InFlightStage, OperationInFlight};
use writeback_proto::frame::CloudMessage;
use writeback_proto::ids::{AgentId, DirectoryName, RequestId};
use writeback_proto::intent::OperationIntent;
use writeback_proto::operation::{
    EarlierDelivery, PasswordStamp, Request, Response, UserRef, Verdict,
};
use writeback_proto::result::ResultCode;
use writeback_proto::session::AuthenticatedAgent;
use writeback_proto::time::UnixMillis;

#[derive(Debug, Default)]
pub struct Relay {
    connections: Mutex<HashMap<AgentId, AgentConnection>>,
    /// Woken whenever an agent connects, so a dispatch waiting for its agent can resume.
    connected: Notify,
    next_connection_id: AtomicU64,
    ledger: ledger::Ledger,
    pub sync: sync::SyncOwners,
}

/// How long a request whose connection was lost waits before another connection takes it over:
/// long enough for a directory write that the lost agent had already sent to land, so that the
/// next agent sees it when it reads the password's stamp.
pub const TAKEOVER_SETTLE: Duration = Duration::from_secs(1);

impl Relay {
    /// Registers an authenticated connection; it replaces an older connection of the same agent.
    pub fn connect(
        &self,
        agent: &AuthenticatedAgent,
        directory: DirectoryName,
        outbound: mpsc::Sender<CloudMessage>,
    ) -> AgentConnection {
        let connection = AgentConnection {
            connection_id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            agent_id: agent.agent_id,
            directory,
            version: agent.version.clone(),
            sealing_key: agent.sealing_key.clone(),
            outbound,
            waiters: Waiters::default(),
            status: Arc::default(),
            revoked: Arc::default(),
        };
        let agent_id = agent.agent_id;
        lock(&self.connections).insert(agent_id, connection.clone());
        self.connected.notify_waiters();
        connection
    }

    /// Removes a connection (if it is still the current one for its agent). Requests waiting on it
    /// learn that the connection was lost.
    pub fn disconnect(&self, connection: &AgentConnection) {
        let mut connections = lock(&self.connections);
        if connections
            .get(&connection.agent_id)
            .is_some_and(|current| current.connection_id == connection.connection_id)
        {
            connections.remove(&connection.agent_id);
        }
        drop(connections);
        self.ledger
            .connection_lost(connection.connection_id, UnixMillis::now());
        lock(&connection.waiters).clear();
    }

    /// The user as an earlier attempt of `request_id` named them, if there was one: a retry must
    /// name them the same way (by the name typed, or by anchor) to be the same request.
    pub fn earlier_user(&self, request_id: &RequestId) -> Option<UserRef> {
        self.ledger.get(request_id).map(|delivery| delivery.user)
    }

    /// Every operation the relay is waiting on now, oldest first: what it is, for whom, which
    /// agent has it, and how far it got.
    pub fn operations_in_flight(&self, now: UnixMillis) -> Vec<OperationInFlight> {
        self.ledger
            .in_flight(now)
            .into_iter()
            .map(|(request_id, delivery)| OperationInFlight {
                request_id,
                operation: delivery.kind.as_str().to_owned(),
                user: delivery.user.to_string(),
                agent_id: delivery.agent_id,
                sent_at: delivery.sent_at,
                stage: if delivery.lost_at.is_some() {
                    InFlightStage::AgentLost
                } else if delivery.about_to_write.is_some() {
                    InFlightStage::Writing
                } else {
                    InFlightStage::WithAgent
                },
            })
            .collect()
    }

    /// The agent on `connection` is about to write `request_id`'s password over `before`.
    pub fn about_to_write(
        &self,
        connection: &AgentConnection,
        request_id: RequestId,
        before: PasswordStamp,
    ) {
        self.ledger
            .about_to_write(request_id, connection.connection_id, before);
    }

    pub fn deliver(&self, connection: &AgentConnection, response: Response) {
        let verdict = Verdict {
            result: response.result,
            warnings: response.warnings,
            trace: response.trace,
        };
        self.ledger.answered(response.request_id, &verdict);
        let waiters = lock(&connection.waiters).remove(&response.request_id);
        match waiters {
            Some(waiters) => {
                for waiter in waiters {
                    let _ = waiter.send(verdict.clone());
                }
            }
            None => {
                tracing::debug!(request_id = %response.request_id, "response for a request nobody waits for any more")
            }
        }
    }

    /// Whether any agent of `directory` is connected (which implies the directory exists).
    pub fn serves(&self, directory: &DirectoryName) -> bool {
        self.any_for(directory).is_some()
    }

    /// Whether agents of `directory` are connected and every one of them last reported that it
    /// cannot use the directory: a request now would only come back "directory unavailable".
    pub fn reported_unreachable(&self, directory: &DirectoryName) -> bool {
        let statuses: Vec<Option<bool>> = lock(&self.connections)
            .values()
            .filter(|connection| connection.directory == *directory)
            .map(|connection| {
                lock(&connection.status)
                    .as_ref()
                    .map(|status| status.directory_reachable)
            })
            .collect();
        !statuses.is_empty() && statuses.iter().all(|reachable| *reachable == Some(false))
    }

    pub fn is_connected(&self, agent_id: &AgentId) -> bool {
        lock(&self.connections).contains_key(agent_id)
    }

    /// Every connected agent, as of now.
    pub fn live_agents(&self) -> Vec<LiveAgent> {
        lock(&self.connections)
            .values()
            .map(AgentConnection::live)
            .collect()
    }

    /// Takes a revoked agent off the relay: no new request reaches it, and its connection is told
    /// to close. Requests already sent to it are taken over like those of a lost connection.
    pub fn revoke(&self, agent_id: &AgentId) {
        let removed = lock(&self.connections).remove(agent_id);
        if let Some(connection) = removed {
            connection.revoked.notify_one();
        }
    }

    /// The agent of `directory` a new request goes to: one that has not said it cannot use the
    /// directory, if there is one, and of those the one with the fewest requests in flight (the
    /// longest connected among equals).
    fn any_for(&self, directory: &DirectoryName) -> Option<AgentConnection> {
        lock(&self.connections)
            .values()
            .filter(|connection| connection.directory == *directory)
            .min_by_key(|connection| {
                let unreachable = lock(&connection.status)
                    .as_ref()
                    .is_some_and(|status| !status.directory_reachable);
                let in_flight = lock(&connection.waiters).len();
                (unreachable, in_flight, connection.connection_id)
            })
            .cloned()
    }

    fn current(&self, agent_id: &AgentId) -> Option<AgentConnection> {
        lock(&self.connections).get(agent_id).cloned()
    }

    /// Sends one operation to an agent of `directory` and waits for its result until `deadline`.
    /// Each attempt seals `intent` afresh to the key of the agent that receives it.
    pub async fn dispatch(
        &self,
        directory: &DirectoryName,
        request_id: RequestId,
        deadline: UnixMillis,
        intent: &OperationIntent,
    ) -> Verdict {
        let fingerprint = intent.fingerprint();
        loop {
            let now = UnixMillis::now();
            let remaining = deadline.duration_since(now);
            let known = self.ledger.get(&request_id);
            if let Some(known) = &known {
                if known.fingerprint != fingerprint {
                    return ResultCode::RequestIdReused.into();
                }
                if let Some(verdict) = &known.verdict {
                    return verdict.clone();
                }
            }
            if remaining.is_zero() {
                return if known.is_some() {
                    ResultCode::Timeout.into()
                } else {
                    ResultCode::AgentUnavailable.into()
                };
            }
            let reconnected = self.connected.notified();
            tokio::pin!(reconnected);
            reconnected.as_mut().enable();
            let (connection, earlier_delivery) = match &known {
                None => (self.any_for(directory), None),
                Some(known) => match self.current(&known.agent_id) {
                    // Still in flight there: the agent's journal joins the repeat to it.
                    Some(holder) if holder.connection_id == known.connection_id => {
                        (Some(holder), None)
                    }
                    holder => {
                        let lost_at = known.lost_at.unwrap_or_else(|| {
                            self.ledger.connection_lost(known.connection_id, now);
                            now
                        });
                        let settled = lost_at.saturating_add(TAKEOVER_SETTLE);
                        if now < settled {
                            let wait = settled.duration_since(now).min(remaining);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        let earlier = EarlierDelivery {
                            about_to_write: known.about_to_write,
                        };
                        (holder.or_else(|| self.any_for(directory)), Some(earlier))
                    }
                },
            };
            let Some(connection) = connection else {
                if known.is_none() {
                    return ResultCode::AgentUnavailable.into();
                }
                if tokio::time::timeout(remaining, reconnected).await.is_err() {
                    return ResultCode::Timeout.into();
                }
                continue;
            };
            let operation = match intent.seal(&connection.sealing_key, request_id) {
                Ok(operation) => operation,
                Err(error) => {
                    return ResultCode::Internal {
                        detail: format!("could not seal the request to the agent: {error}"),
                    }
                    .into();
                }
            };
            let (sender, receiver) = oneshot::channel();
            lock(&connection.waiters)
                .entry(request_id)
                .or_default()
                .push(sender);
            if earlier_delivery.is_some() {
                tracing::warn!(%request_id, agent_id = %connection.agent_id, "taking over a request whose agent connection was lost before it answered");
            }
            self.ledger.sent(
                request_id,
                &fingerprint,
                intent.user(),
                intent.kind(),
                deadline,
                connection.agent_id,
                connection.connection_id,
                UnixMillis::now(),
            );
            let request = CloudMessage::Request(Request {
                request_id,
                deadline,
                operation,
                earlier_delivery,
            });
            if connection.outbound.send(request).await.is_err() {
                // The connection's writer is gone, so nothing was sent on it.
                self.ledger.restore(request_id, known);
                self.disconnect(&connection);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            match tokio::time::timeout(remaining, receiver).await {
                Ok(Ok(verdict)) => return verdict,
                Ok(Err(_)) => {
                    tracing::warn!(%request_id, agent_id = %connection.agent_id, "agent connection lost while a request was in flight");
                }
                Err(_) => {
                    lock(&connection.waiters).remove(&request_id);
                    return ResultCode::Timeout.into();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use writeback_proto::frame::AgentStatus;
    use writeback_proto::operation::UserRef;
    use writeback_proto::sealing::{SealingKeyPair, SealingPublicKey};

    use super::*;

    fn unlock() -> OperationIntent {
        OperationIntent::Unlock {
            user: UserRef::logon_name("jdoe").unwrap(),
        }
    }

    fn deadline(seconds: u64) -> UnixMillis {
        UnixMillis::now().saturating_add(Duration::from_secs(seconds))
    }

    fn agent(agent_id: AgentId, key: &SealingPublicKey) -> AuthenticatedAgent {
        AuthenticatedAgent {
            agent_id,
            version: "0.1.0".into(),
            sealing_key: key.clone(),
        }
    }

    /// The agent's answer that the operation succeeded.
    fn success(request_id: RequestId) -> Response {
        Response {
            request_id,
            result: ResultCode::Success,
            warnings: Vec::new(),
            trace: None,
        }
    }

    fn corp() -> DirectoryName {
        "corp".parse().unwrap()
    }

    #[tokio::test]
    async fn with_no_agent_the_answer_is_immediate() {
        let relay = Relay::default();
        let started = std::time::Instant::now();
        let result = relay
            .dispatch(
                &corp(),
                RequestId::generate().unwrap(),
                deadline(30),
                &unlock(),
            )
            .await;
        assert_eq!(result.result, ResultCode::AgentUnavailable);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_request_lost_with_its_connection_goes_back_to_its_agent_if_it_returned_marked_as_delivered_before()
     {
        let relay = Arc::new(Relay::default());
        let agent_id = AgentId::generate().unwrap();
        let key = SealingKeyPair::generate().public_key().clone();
        let (first_sender, mut first_outbound) = mpsc::channel(4);
        let first = relay.connect(&agent(agent_id, &key), corp(), first_sender);
        let request_id = RequestId::generate().unwrap();

        let dispatching = {
            let relay = relay.clone();
            tokio::spawn(async move {
                relay
                    .dispatch(&corp(), request_id, deadline(30), &unlock())
                    .await
            })
        };
        let CloudMessage::Request(sent) = first_outbound.recv().await.unwrap() else {
            panic!("expected a request");
        };
        assert_eq!(sent.request_id, request_id);

        // Another agent of the same directory is connected, but the one that had the request is
        // back, and its journal may know the answer.
        let (other_sender, mut other_outbound) = mpsc::channel(4);
        relay.connect(
            &agent(AgentId::generate().unwrap(), &key),
            corp(),
            other_sender,
        );
        relay.disconnect(&first);
        let (second_sender, mut second_outbound) = mpsc::channel(4);
        let second = relay.connect(&agent(agent_id, &key), corp(), second_sender);
        let CloudMessage::Request(resent) = second_outbound.recv().await.unwrap() else {
            panic!("expected the request again");
        };
        assert_eq!(resent.request_id, request_id);
        assert_eq!(
            resent.earlier_delivery,
            Some(EarlierDelivery {
                about_to_write: None
            })
        );
        assert!(other_outbound.try_recv().is_err());

        relay.deliver(&second, success(request_id));
        assert_eq!(dispatching.await.unwrap().result, ResultCode::Success);
    }

    fn reset() -> OperationIntent {
        OperationIntent::ResetPassword {
            user: UserRef::logon_name("jdoe").unwrap(),
            new_password: secrecy::SecretString::from("New-Passw0rd!"),
            must_change: false,
            unlock: false,
        }
    }

    #[tokio::test]
    async fn a_request_whose_agent_is_lost_goes_to_another_after_the_settle_with_what_the_lost_one_was_about_to_overwrite()
     {
        let relay = Arc::new(Relay::default());
        let key = SealingKeyPair::generate().public_key().clone();
        let (first_sender, mut first_outbound) = mpsc::channel(4);
        let first = relay.connect(
            &agent(AgentId::generate().unwrap(), &key),
            corp(),
            first_sender,
        );
        let request_id = RequestId::generate().unwrap();
        let dispatching = {
            let relay = relay.clone();
            tokio::spawn(async move {
                relay
                    .dispatch(&corp(), request_id, deadline(30), &reset())
                    .await
            })
        };
        let Some(CloudMessage::Request(sent)) = first_outbound.recv().await else {
            panic!("expected a request");
        };
        assert_eq!(sent.earlier_delivery, None);
        let before = PasswordStamp {
            version: 7,
            changed_at: UnixMillis(1_000),
        };
        relay.about_to_write(&first, request_id, before);

        let (second_sender, mut second_outbound) = mpsc::channel(4);
        let second = relay.connect(
            &agent(AgentId::generate().unwrap(), &key),
            corp(),
            second_sender,
        );
        let lost = std::time::Instant::now();
        relay.disconnect(&first);
        let Some(CloudMessage::Request(taken_over)) = second_outbound.recv().await else {
            panic!("expected the request on the other agent");
        };
        assert!(lost.elapsed() >= TAKEOVER_SETTLE);
        assert_eq!(taken_over.request_id, request_id);
        assert_eq!(
            taken_over.earlier_delivery,
            Some(EarlierDelivery {
                about_to_write: Some(before)
            })
        );
        relay.deliver(&second, success(request_id));
        assert_eq!(dispatching.await.unwrap().result, ResultCode::Success);

        // A retry of the answered id gets the same answer without reaching any agent, and the
        // same id for another operation is refused.
        let retried = relay
            .dispatch(&corp(), request_id, deadline(5), &reset())
            .await;
        assert_eq!(retried.result, ResultCode::Success);
        assert!(second_outbound.try_recv().is_err());
        let reused = relay
            .dispatch(&corp(), request_id, deadline(5), &unlock())
            .await;
        assert_eq!(reused.result, ResultCode::RequestIdReused);
    }

    #[tokio::test]
    async fn parallel_retries_of_one_id_all_wait_for_the_one_delivery() {
        let relay = Arc::new(Relay::default());
        let key = SealingKeyPair::generate().public_key().clone();
        let (sender, mut outbound) = mpsc::channel(64);
        let connection = relay.connect(&agent(AgentId::generate().unwrap(), &key), corp(), sender);
        let request_id = RequestId::generate().unwrap();
        let retries: Vec<_> = (0..16)
            .map(|_| {
                let relay = relay.clone();
                tokio::spawn(async move {
                    relay
                        .dispatch(&corp(), request_id, deadline(30), &reset())
                        .await
                })
            })
            .collect();
        let mut deliveries = 0;
        while deliveries < 16 {
            let Some(CloudMessage::Request(sent)) = outbound.recv().await else {
                panic!("expected requests");
            };
            assert_eq!((sent.request_id, sent.earlier_delivery), (request_id, None));
            deliveries += 1;
        }
        relay.deliver(&connection, success(request_id));
        for retry in retries {
            assert_eq!(retry.await.unwrap().result, ResultCode::Success);
        }
    }

    #[tokio::test]
    async fn an_agent_that_never_answers_yields_timeout_at_the_deadline() {
        let relay = Relay::default();
        let (sender, _outbound) = mpsc::channel(4);
        relay.connect(
            &agent(
                AgentId::generate().unwrap(),
                SealingKeyPair::generate().public_key(),
            ),
            corp(),
            sender,
        );
        let soon = UnixMillis::now().saturating_add(Duration::from_millis(200));
        let result = relay
            .dispatch(&corp(), RequestId::generate().unwrap(), soon, &unlock())
            .await;
        assert_eq!(result.result, ResultCode::Timeout);
    }

    #[tokio::test]
    async fn agents_of_other_directories_are_not_used() {
        let relay = Relay::default();
        let (sender, _outbound) = mpsc::channel(4);
        relay.connect(
            &agent(
                AgentId::generate().unwrap(),
                SealingKeyPair::generate().public_key(),
            ),
            "other".parse().unwrap(),
            sender,
        );
        let result = relay
            .dispatch(
                &corp(),
                RequestId::generate().unwrap(),
                deadline(5),
                &unlock(),
            )
            .await;
        assert_eq!(result.result, ResultCode::AgentUnavailable);
    }

    #[tokio::test]
    async fn a_revoked_agent_gets_no_more_requests_and_its_connection_is_told_to_close() {
        let relay = Relay::default();
        let (sender, _outbound) = mpsc::channel(4);
        let agent_id = AgentId::generate().unwrap();
        let key = SealingKeyPair::generate().public_key().clone();
        let connection = relay.connect(&agent(agent_id, &key), corp(), sender);
        assert_eq!(relay.live_agents().len(), 1);

        relay.revoke(&agent_id);
        tokio::time::timeout(Duration::from_secs(1), connection.revoked())
            .await
            .expect("the connection hears of the revocation");
        assert!(relay.live_agents().is_empty());
        let result = relay
            .dispatch(
                &corp(),
                RequestId::generate().unwrap(),
                deadline(5),
                &unlock(),
            )
            .await;
        assert_eq!(result.result, ResultCode::AgentUnavailable);
    }

    #[tokio::test]
    async fn a_new_request_goes_to_a_healthy_agent_with_the_fewest_in_flight() {
        let relay = Arc::new(Relay::default());
        let key = SealingKeyPair::generate().public_key().clone();
        let (first_sender, mut first) = mpsc::channel(8);
        let first_connection = relay.connect(
            &agent(AgentId::generate().unwrap(), &key),
            corp(),
            first_sender,
        );
        let (second_sender, mut second) = mpsc::channel(8);
        relay.connect(
            &agent(AgentId::generate().unwrap(), &key),
            corp(),
            second_sender,
        );
        let send = || {
            let relay = relay.clone();
            tokio::spawn(async move {
                relay
                    .dispatch(
                        &corp(),
                        RequestId::generate().unwrap(),
                        deadline(30),
                        &unlock(),
                    )
                    .await
            })
        };
        // Neither answers: each request stays in flight on the agent it went to.
        let _held = [send()];
        assert!(matches!(first.recv().await, Some(CloudMessage::Request(_))));
        let _held_too = [send()];
        assert!(matches!(
            second.recv().await,
            Some(CloudMessage::Request(_))
        ));
        // One each in flight: the longest connected takes the next.
        let _third = [send()];
        assert!(matches!(first.recv().await, Some(CloudMessage::Request(_))));
        // An agent that cannot use the directory gets nothing while another can.
        first_connection.report_status(AgentStatus {
            directory_reachable: false,
            detail: None,
            password_policy: None,
            lockout: None,
        });
        let _fourth = [send(), send()];
        for _ in 0..2 {
            assert!(matches!(
                second.recv().await,
                Some(CloudMessage::Request(_))
            ));
        }
        assert!(first.try_recv().is_err());
    }
}
