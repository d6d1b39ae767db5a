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
//!
//! In a cluster, an agent connected to another node has a *mirror* connection here
//! ([`Relay::connect_mirror`]): a request sent on it crosses the bus, already sealed, to the
//! agent's node, which hands it to the agent ([`Relay::accept_forwarded`]) and sends back what
//! the agent says about it. The ledger and the waiting stay on the node the request entered, so
//! taking a request over works the same whichever node the lost agent was on. What other nodes
//! must hear of is told through [`RelayEvent`]s.

pub mod connection;
pub mod ledger;
pub mod shared;
pub mod sync;

pub use connection::{AgentConnection, LiveAgent, RemoteConnection};
use connection::{Waiters, lock};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};
use writeback_proto::api::{InFlightStage, OperationInFlight};
use writeback_proto::frame::{AgentStatus, CloudMessage};
use writeback_proto::ids::{AgentId, DirectoryName, NodeId, RequestId};
use writeback_proto::intent::OperationIntent;
use writeback_proto::operation::{
    EarlierDelivery, PasswordStamp, Request, Response, UserRef, Verdict,
};
use writeback_proto::result::ResultCode;
use writeback_proto::sealing::SealingPublicKey;
use writeback_proto::session::AuthenticatedAgent;

use ledger::Delivery;
use writeback_proto::time::UnixMillis;

#[derive(Debug, Default)]
pub struct Relay {
    connections: Mutex<HashMap<AgentId, AgentConnection>>,
    /// Woken whenever an agent connects, so a dispatch waiting for its agent can resume.
    connected: Notify,
    next_connection_id: AtomicU64,
    ledger: ledger::Ledger,
    pub sync: sync::SyncOwners,
    /// Where the relay tells the other nodes of a cluster what they must know; unset on a node
    /// alone.
    events: OnceLock<mpsc::UnboundedSender<RelayEvent>>,
    /// Requests another node sent to an agent connected here, with the node and the local
    /// connection they went on: what the agent says of them goes back to that node.
    forwarded: Mutex<HashMap<RequestId, (NodeId, u64, std::time::Instant)>>,
    /// The ledger a cluster's nodes share; unset on a node alone. Held weakly: the cluster that
    /// implements it holds this relay.
    shared: OnceLock<std::sync::Weak<dyn shared::SharedLedger>>,
}

/// The connection id of a request taken over from another node: no connection of this node.
pub const NO_CONNECTION: u64 = u64::MAX;

/// How often a retry of a request another node is waiting for looks for its verdict.
const SHARED_POLL: Duration = Duration::from_millis(50);

/// An agent connection, as other nodes learn of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAnnouncement {
    pub agent_id: AgentId,
    /// The connection's id on its node.
    pub connection_id: u64,
    pub directory: DirectoryName,
    pub version: String,
    pub sealing_key: SealingPublicKey,
    pub status: Option<AgentStatus>,
}

/// What happened here that other nodes must hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    AgentConnected(AgentAnnouncement),
    AgentDisconnected {
        connection_id: u64,
    },
    AgentStatus {
        agent_id: AgentId,
        connection_id: u64,
        status: AgentStatus,
    },
    /// An administrator revoked the agent: whichever node holds its connection closes it.
    AgentRevoked {
        agent_id: AgentId,
    },
    /// The agent holding a request `node` forwarded is about to write its password over
    /// `before`.
    AboutToWrite {
        node: NodeId,
        connection_id: u64,
        request_id: RequestId,
        before: PasswordStamp,
    },
    /// The agent's answer to a request `node` forwarded.
    Answered {
        node: NodeId,
        connection_id: u64,
        response: Response,
    },
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
            remote: None,
        };
        let agent_id = agent.agent_id;
        lock(&self.connections).insert(agent_id, connection.clone());
        self.connected.notify_waiters();
        self.tell(RelayEvent::AgentConnected(announcement(&connection)));
        connection
    }

    /// From now on, every request id is recorded in `ledger` too, and looked up there when this
    /// node does not know it; once only.
    pub fn share_ledger(&self, ledger: &Arc<dyn shared::SharedLedger>) -> bool {
        self.shared.set(Arc::downgrade(ledger)).is_ok()
    }

    fn shared_ledger(&self) -> Option<Arc<dyn shared::SharedLedger>> {
        self.shared.get().and_then(std::sync::Weak::upgrade)
    }

    /// From now on, what other nodes must hear of goes to `events`; once only.
    pub fn tell_other_nodes(&self, events: mpsc::UnboundedSender<RelayEvent>) -> bool {
        self.events.set(events).is_ok()
    }

    fn tell(&self, event: RelayEvent) {
        if let Some(events) = self.events.get() {
            let _ = events.send(event);
        }
    }

    /// The agents connected to this node, as other nodes learn of them.
    pub fn local_agents(&self) -> Vec<AgentAnnouncement> {
        lock(&self.connections)
            .values()
            .filter(|connection| connection.remote.is_none())
            .map(announcement)
            .collect()
    }

    /// Stands for an agent connected to another node: requests sent on the returned connection
    /// come out of the returned queue, to be carried to that node. It replaces whatever
    /// connection the agent had here.
    pub fn connect_mirror(
        &self,
        node_id: NodeId,
        node_name: String,
        agent: AgentAnnouncement,
    ) -> (AgentConnection, mpsc::Receiver<CloudMessage>) {
        let (outbound, queue) = mpsc::channel(64);
        let connection = AgentConnection {
            connection_id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            agent_id: agent.agent_id,
            directory: agent.directory,
            version: agent.version,
            sealing_key: agent.sealing_key,
            outbound,
            waiters: Waiters::default(),
            status: Arc::new(Mutex::new(agent.status)),
            revoked: Arc::default(),
            remote: Some(RemoteConnection {
                node_id,
                node_name,
                connection_id: agent.connection_id,
            }),
        };
        lock(&self.connections).insert(agent.agent_id, connection.clone());
        self.connected.notify_waiters();
        (connection, queue)
    }

    /// The mirror of the agent connection `connection_id` of `node_id`, if it is current here.
    pub fn mirror(&self, node_id: NodeId, connection_id: u64) -> Option<AgentConnection> {
        lock(&self.connections)
            .values()
            .find(|connection| {
                connection.remote.as_ref().is_some_and(|remote| {
                    remote.node_id == node_id && remote.connection_id == connection_id
                })
            })
            .cloned()
    }

    /// Every mirror of an agent connected to `node_id`.
    pub fn mirrors_of(&self, node_id: NodeId) -> Vec<AgentConnection> {
        lock(&self.connections)
            .values()
            .filter(|connection| {
                connection
                    .remote
                    .as_ref()
                    .is_some_and(|remote| remote.node_id == node_id)
            })
            .cloned()
            .collect()
    }

    /// Hands a request another node sent to the local agent connection `connection_id`.
    /// `false` when that connection is gone; the sender hears of it as a disconnection.
    pub async fn accept_forwarded(
        &self,
        from: NodeId,
        connection_id: u64,
        request: Request,
    ) -> bool {
        let connection = lock(&self.connections)
            .values()
            .find(|connection| {
                connection.remote.is_none() && connection.connection_id == connection_id
            })
            .cloned();
        let Some(connection) = connection else {
            return false;
        };
        lock(&self.forwarded).insert(
            request.request_id,
            (from, connection_id, std::time::Instant::now()),
        );
        let request_id = request.request_id;
        if connection
            .send(CloudMessage::Request(Box::new(request)))
            .await
        {
            return true;
        }
        lock(&self.forwarded).remove(&request_id);
        false
    }

    /// The agent's status on `connection`; told to other nodes when the agent is connected here.
    pub fn report_status(&self, connection: &AgentConnection, status: AgentStatus) {
        connection.set_status(status.clone());
        if connection.remote.is_none() {
            self.tell(RelayEvent::AgentStatus {
                agent_id: connection.agent_id,
                connection_id: connection.connection_id,
                status,
            });
        }
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
        if connection.remote.is_none() {
            lock(&self.forwarded).retain(|_, (_, on, _)| *on != connection.connection_id);
            self.tell(RelayEvent::AgentDisconnected {
                connection_id: connection.connection_id,
            });
        }
        self.ledger
            .connection_lost(connection.connection_id, UnixMillis::now());
        lock(&connection.waiters).clear();
    }

    /// The user as an earlier attempt of `request_id` named them, here or on another node of the
    /// cluster, if there was one: a retry must name them the same way (by the name typed, or by
    /// anchor) to be the same request, even when the user was synced in between.
    pub async fn earlier_user(&self, request_id: &RequestId) -> Option<UserRef> {
        if let Some(delivery) = self.ledger.get(request_id) {
            return Some(delivery.user);
        }
        let shared = self.shared_ledger()?;
        let known = shared.lookup(*request_id).await?;
        Some(known.delivery.user)
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
        let forwarded = lock(&self.forwarded).get(&request_id).copied();
        if let Some((node, connection_id, _)) = forwarded {
            self.tell(RelayEvent::AboutToWrite {
                node,
                connection_id,
                request_id,
                before,
            });
            return;
        }
        let recorded = self
            .ledger
            .about_to_write(request_id, connection.connection_id, before);
        if recorded && let Some(shared) = self.shared_ledger() {
            shared.about_to_write(request_id, before);
        }
    }

    pub fn deliver(&self, connection: &AgentConnection, mut response: Response) {
        let forwarded = lock(&self.forwarded).remove(&response.request_id);
        if let Some((node, connection_id, handed_over)) = forwarded {
            if let Some(trace) = response.trace.as_mut() {
                trace.relayed_us =
                    Some(u64::try_from(handed_over.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            self.tell(RelayEvent::Answered {
                node,
                connection_id,
                response,
            });
            return;
        }
        let verdict = Verdict {
            result: response.result,
            warnings: response.warnings,
            trace: response.trace,
        };
        if self.ledger.answered(response.request_id, &verdict)
            && let Some(shared) = self.shared_ledger()
        {
            shared.answered(response.request_id, &verdict);
        }
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
        self.revoke_here(agent_id);
        self.tell(RelayEvent::AgentRevoked {
            agent_id: *agent_id,
        });
    }

    /// [`Self::revoke`] without telling the other nodes: for a revocation one of them told.
    pub fn revoke_here(&self, agent_id: &AgentId) {
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
                // Among equals, an agent connected here: the request need not cross the bus.
                let elsewhere = connection.remote.is_some();
                (unreachable, in_flight, elsewhere, connection.connection_id)
            })
            .cloned()
    }

    fn current(&self, agent_id: &AgentId) -> Option<AgentConnection> {
        lock(&self.connections).get(agent_id).cloned()
    }

    /// A request id another node of the cluster was sent first: its verdict, when it has one or
    /// when it comes while that node lives (or `timeout` at `deadline`); or, when that node is
    /// gone, `None` with the request taken over: its history adopted into this node's ledger as
    /// a request whose connection was lost, so that it is delivered again marked as such. `None`
    /// too when no other node knows the id.
    async fn earlier_elsewhere(
        &self,
        shared: &dyn shared::SharedLedger,
        request_id: RequestId,
        fingerprint: &str,
        deadline: UnixMillis,
    ) -> Option<Verdict> {
        loop {
            let known = shared.lookup(request_id).await?;
            if known.delivery.fingerprint != fingerprint {
                return Some(ResultCode::RequestIdReused.into());
            }
            if let Some(verdict) = known.delivery.verdict {
                return Some(verdict);
            }
            if !shared.is_alive(known.owner) {
                if shared.claim(request_id, known.owner).await {
                    tracing::warn!(%request_id, owner = %known.owner, "taking over a request whose cloud node is gone");
                    self.ledger.adopt(
                        request_id,
                        Delivery {
                            connection_id: NO_CONNECTION,
                            lost_at: Some(UnixMillis::now()),
                            ..known.delivery
                        },
                    );
                    return None;
                }
                continue;
            }
            if UnixMillis::now() >= deadline {
                return Some(ResultCode::Timeout.into());
            }
            tokio::time::sleep(SHARED_POLL).await;
        }
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
        if self.ledger.get(&request_id).is_none()
            && let Some(shared) = self.shared_ledger()
            && let Some(verdict) = self
                .earlier_elsewhere(shared.as_ref(), request_id, &fingerprint, deadline)
                .await
        {
            return verdict;
        }
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
            if let Some(shared) = self.shared_ledger()
                && let Some(delivery) = self.ledger.get(&request_id)
            {
                shared.sent(request_id, &delivery);
            }
            let request = CloudMessage::Request(Box::new(Request {
                request_id,
                deadline,
                operation,
                earlier_delivery,
            }));
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

fn announcement(connection: &AgentConnection) -> AgentAnnouncement {
    AgentAnnouncement {
        agent_id: connection.agent_id,
        connection_id: connection.connection_id,
        directory: connection.directory.clone(),
        version: connection.version.clone(),
        sealing_key: connection.sealing_key.clone(),
        status: lock(&connection.status).clone(),
    }
}

#[cfg(test)]
mod tests {
    use writeback_proto::frame::AgentStatus;
    use writeback_proto::operation::{Operation, UserRef};
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

        let dispatching = in_background(&relay, request_id, deadline(30), unlock());
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

    /// `relay` dispatching `intent` as `request_id` until `until`, in a task of its own.
    fn in_background(
        relay: &Arc<Relay>,
        request_id: RequestId,
        until: UnixMillis,
        intent: OperationIntent,
    ) -> tokio::task::JoinHandle<Verdict> {
        let relay = relay.clone();
        tokio::spawn(async move { relay.dispatch(&corp(), request_id, until, &intent).await })
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
        let dispatching = in_background(&relay, request_id, deadline(30), reset());
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
            .map(|_| in_background(&relay, request_id, deadline(30), reset()))
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
        relay.report_status(
            &first_connection,
            AgentStatus {
                directory_reachable: false,
                detail: None,
                password_policy: None,
                lockout: None,
            },
        );
        let _fourth = [send(), send()];
        for _ in 0..2 {
            assert!(matches!(
                second.recv().await,
                Some(CloudMessage::Request(_))
            ));
        }
        assert!(first.try_recv().is_err());
    }

    /// Node A's relay mirrors an agent connected to node B. The bus is stood in for by passing
    /// each node's events to the other by hand, as the cluster does.
    struct TwoNodes {
        a: Arc<Relay>,
        b: Arc<Relay>,
        a_events: mpsc::UnboundedReceiver<RelayEvent>,
        b_events: mpsc::UnboundedReceiver<RelayEvent>,
        node_a: NodeId,
        node_b: NodeId,
    }

    impl TwoNodes {
        fn new() -> Self {
            let (a, b) = (Arc::new(Relay::default()), Arc::new(Relay::default()));
            let (a_sender, a_events) = mpsc::unbounded_channel();
            let (b_sender, b_events) = mpsc::unbounded_channel();
            assert!(a.tell_other_nodes(a_sender));
            assert!(b.tell_other_nodes(b_sender));
            Self {
                a,
                b,
                a_events,
                b_events,
                node_a: NodeId::generate().unwrap(),
                node_b: NodeId::generate().unwrap(),
            }
        }

        /// What node B told the others about its agent, made into A's mirror of it.
        async fn mirror_b_agent(&mut self) -> (AgentConnection, mpsc::Receiver<CloudMessage>) {
            let Some(RelayEvent::AgentConnected(announcement)) = self.b_events.recv().await else {
                panic!("B announces its agent");
            };
            assert_eq!(self.b.local_agents(), vec![announcement.clone()]);
            self.a
                .connect_mirror(self.node_b, "node-b".into(), announcement)
        }
    }

    #[tokio::test]
    async fn a_request_entering_a_node_without_the_agent_goes_to_the_agents_node_sealed_and_the_answer_comes_back()
     {
        let mut nodes = TwoNodes::new();
        let key = SealingKeyPair::generate();
        let (agent_sender, mut agent_inbox) = mpsc::channel(4);
        let on_b = nodes.b.connect(
            &agent(AgentId::generate().unwrap(), key.public_key()),
            corp(),
            agent_sender,
        );
        let (mirror, mut carried) = nodes.mirror_b_agent().await;
        assert_eq!(
            nodes.a.live_agents()[0].remote_node.as_deref(),
            Some("node-b")
        );

        let request_id = RequestId::generate().unwrap();
        let dispatching = in_background(&nodes.a, request_id, deadline(30), reset());
        let Some(CloudMessage::Request(crossing)) = carried.recv().await else {
            panic!("the request is carried towards B");
        };
        // Sealed on A, to the agent's key: the password never crosses the bus in the clear.
        let Operation::ResetPassword { new_password, .. } = &crossing.operation else {
            panic!("a reset");
        };
        assert_eq!(new_password.key_id, key.public_key().key_id);
        assert!(
            nodes
                .b
                .accept_forwarded(nodes.node_a, on_b.connection_id, *crossing)
                .await
        );
        let Some(CloudMessage::Request(delivered)) = agent_inbox.recv().await else {
            panic!("the agent on B gets the request");
        };
        assert_eq!(delivered.request_id, request_id);

        let before = PasswordStamp {
            version: 3,
            changed_at: UnixMillis(5),
        };
        nodes.b.about_to_write(&on_b, request_id, before);
        let Some(RelayEvent::AboutToWrite {
            node,
            connection_id,
            request_id: about,
            before: stamp,
        }) = nodes.b_events.recv().await
        else {
            panic!("B tells A what the agent is about to overwrite");
        };
        assert_eq!((node, connection_id), (nodes.node_a, on_b.connection_id));
        nodes.a.about_to_write(&mirror, about, stamp);
        assert_eq!(
            nodes.a.ledger.get(&request_id).unwrap().about_to_write,
            Some(before)
        );

        nodes.b.deliver(&on_b, success(request_id));
        let Some(RelayEvent::Answered { response, .. }) = nodes.b_events.recv().await else {
            panic!("B sends the answer back to A");
        };
        // The request is A's: B keeps no ledger entry of it.
        assert!(nodes.b.ledger.get(&request_id).is_none());
        nodes.a.deliver(&mirror, response);
        assert_eq!(dispatching.await.unwrap().result, ResultCode::Success);
        assert!(nodes.a_events.try_recv().is_err(), "A told nobody anything");
    }

    #[tokio::test]
    async fn a_request_whose_agent_was_on_a_node_that_went_silent_is_taken_over_by_a_local_agent() {
        let mut nodes = TwoNodes::new();
        let key = SealingKeyPair::generate().public_key().clone();
        let (agent_sender, _agent_inbox) = mpsc::channel(4);
        nodes.b.connect(
            &agent(AgentId::generate().unwrap(), &key),
            corp(),
            agent_sender,
        );
        let (mirror, mut carried) = nodes.mirror_b_agent().await;
        let request_id = RequestId::generate().unwrap();
        let dispatching = in_background(&nodes.a, request_id, deadline(30), reset());
        assert!(matches!(
            carried.recv().await,
            Some(CloudMessage::Request(_))
        ));
        let (local_sender, mut local_inbox) = mpsc::channel(4);
        let local = nodes.a.connect(
            &agent(AgentId::generate().unwrap(), &key),
            corp(),
            local_sender,
        );
        // B is silent: the cluster disconnects its mirrors.
        for silent in nodes.a.mirrors_of(nodes.node_b) {
            nodes.a.disconnect(&silent);
        }
        assert!(
            nodes
                .a
                .mirror(nodes.node_b, mirror.remote.unwrap().connection_id)
                .is_none()
        );
        let Some(CloudMessage::Request(taken_over)) = local_inbox.recv().await else {
            panic!("the local agent takes the request over");
        };
        assert_eq!(taken_over.request_id, request_id);
        assert_eq!(
            taken_over.earlier_delivery,
            Some(EarlierDelivery {
                about_to_write: None
            })
        );
        nodes.a.deliver(&local, success(request_id));
        assert_eq!(dispatching.await.unwrap().result, ResultCode::Success);
    }

    /// The shared ledger as a map two relays write to, with nodes marked gone by hand.
    #[derive(Debug, Clone)]
    struct SharedMap {
        node: NodeId,
        records: Arc<Mutex<HashMap<RequestId, shared::SharedDelivery>>>,
        gone: Arc<Mutex<Vec<NodeId>>>,
    }

    impl shared::SharedLedger for SharedMap {
        fn sent(&self, request_id: RequestId, delivery: &Delivery) {
            let mut records = lock(&self.records);
            let kept = records
                .get(&request_id)
                .and_then(|known| known.delivery.about_to_write);
            let mut delivery = delivery.clone();
            delivery.about_to_write = delivery.about_to_write.or(kept);
            records.insert(
                request_id,
                shared::SharedDelivery {
                    owner: self.node,
                    delivery,
                },
            );
        }
        fn about_to_write(&self, request_id: RequestId, before: PasswordStamp) {
            if let Some(known) = lock(&self.records).get_mut(&request_id) {
                known.delivery.about_to_write = Some(before);
            }
        }
        fn answered(&self, request_id: RequestId, verdict: &Verdict) {
            if let Some(known) = lock(&self.records).get_mut(&request_id) {
                known.delivery.verdict = Some(verdict.clone());
            }
        }
        fn lookup(
            &self,
            request_id: RequestId,
        ) -> shared::Pending<'_, Option<shared::SharedDelivery>> {
            let known = lock(&self.records)
                .get(&request_id)
                .filter(|known| known.owner != self.node)
                .cloned();
            Box::pin(async move { known })
        }
        fn claim(&self, request_id: RequestId, owner: NodeId) -> shared::Pending<'_, bool> {
            let mut records = lock(&self.records);
            let claimed = match records.get_mut(&request_id) {
                Some(known) if known.owner == owner => {
                    known.owner = self.node;
                    true
                }
                _ => false,
            };
            Box::pin(async move { claimed })
        }
        fn is_alive(&self, node: NodeId) -> bool {
            !lock(&self.gone).contains(&node)
        }
    }

    /// What the relays hold only weakly, kept alive by the test.
    type Ledgers = [Arc<dyn shared::SharedLedger>; 2];

    /// Node A and node B sharing a ledger, and the ledgers.
    fn two_nodes_sharing_a_ledger() -> (Arc<Relay>, Arc<Relay>, SharedMap, Ledgers) {
        let records = Arc::default();
        let gone = Arc::default();
        let shared_by = |node| SharedMap {
            node,
            records: Arc::clone(&records),
            gone: Arc::clone(&gone),
        };
        let (a, b) = (Arc::new(Relay::default()), Arc::new(Relay::default()));
        let on_a = shared_by(NodeId::generate().unwrap());
        let (ledger_a, ledger_b): (Arc<dyn shared::SharedLedger>, Arc<dyn shared::SharedLedger>) = (
            Arc::new(on_a.clone()),
            Arc::new(shared_by(NodeId::generate().unwrap())),
        );
        assert!(a.share_ledger(&ledger_a));
        assert!(b.share_ledger(&ledger_b));
        (a, b, on_a, [ledger_a, ledger_b])
    }

    #[tokio::test]
    async fn a_retry_entering_another_node_waits_for_the_first_nodes_verdict_and_sends_nothing() {
        let (a, b, _, _ledgers) = two_nodes_sharing_a_ledger();
        let key = SealingKeyPair::generate().public_key().clone();
        let (sender_a, mut inbox_a) = mpsc::channel(4);
        let on_a = a.connect(&agent(AgentId::generate().unwrap(), &key), corp(), sender_a);
        let (sender_b, mut inbox_b) = mpsc::channel(4);
        b.connect(&agent(AgentId::generate().unwrap(), &key), corp(), sender_b);
        let request_id = RequestId::generate().unwrap();
        let first = in_background(&a, request_id, deadline(30), reset());
        assert!(matches!(
            inbox_a.recv().await,
            Some(CloudMessage::Request(_))
        ));
        let retry = in_background(&b, request_id, deadline(30), reset());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!retry.is_finished(), "the retry waits while node A does");
        a.deliver(&on_a, success(request_id));
        assert_eq!(first.await.unwrap().result, ResultCode::Success);
        assert_eq!(retry.await.unwrap().result, ResultCode::Success);
        assert!(inbox_b.try_recv().is_err(), "B's agent got nothing");

        // The same id for another operation is refused on B as on A.
        let reused = b
            .dispatch(&corp(), request_id, deadline(5), &unlock())
            .await;
        assert_eq!(reused.result, ResultCode::RequestIdReused);
    }

    /// The user was not synced when node A sent the request, so A named them by logon name; by
    /// the retry through node B they are synced. B names them as A did, or the retry would be
    /// refused as another request under the same id.
    #[tokio::test]
    async fn a_retry_entering_another_node_names_the_user_as_the_first_node_did() {
        let (a, b, _, _ledgers) = two_nodes_sharing_a_ledger();
        let key = SealingKeyPair::generate().public_key().clone();
        let (sender_a, mut inbox_a) = mpsc::channel(4);
        a.connect(&agent(AgentId::generate().unwrap(), &key), corp(), sender_a);
        let request_id = RequestId::generate().unwrap();
        assert_eq!(b.earlier_user(&request_id).await, None);
        let _first = in_background(&a, request_id, deadline(30), reset());
        assert!(matches!(
            inbox_a.recv().await,
            Some(CloudMessage::Request(_))
        ));
        assert_eq!(
            b.earlier_user(&request_id).await,
            Some(UserRef::logon_name("jdoe").unwrap())
        );
        assert_eq!(
            a.earlier_user(&request_id).await,
            Some(UserRef::logon_name("jdoe").unwrap())
        );
    }

    #[tokio::test]
    async fn a_retry_entering_another_node_after_the_first_node_died_is_taken_over_with_what_the_agent_was_about_to_overwrite()
     {
        let (a, b, on_a_ledger, _ledgers) = two_nodes_sharing_a_ledger();
        let key = SealingKeyPair::generate().public_key().clone();
        let (sender_a, mut inbox_a) = mpsc::channel(4);
        let on_a = a.connect(&agent(AgentId::generate().unwrap(), &key), corp(), sender_a);
        let (sender_b, mut inbox_b) = mpsc::channel(4);
        let on_b = b.connect(&agent(AgentId::generate().unwrap(), &key), corp(), sender_b);
        let request_id = RequestId::generate().unwrap();
        let soon = UnixMillis::now().saturating_add(Duration::from_millis(300));
        let first = in_background(&a, request_id, soon, reset());
        assert!(matches!(
            inbox_a.recv().await,
            Some(CloudMessage::Request(_))
        ));
        let before = PasswordStamp {
            version: 4,
            changed_at: UnixMillis(9),
        };
        a.about_to_write(&on_a, request_id, before);
        // The client's first attempt times out, then node A dies with the request in flight.
        assert_eq!(first.await.unwrap().result, ResultCode::Timeout);
        lock(&on_a_ledger.gone).push(on_a_ledger.node);

        let retry = in_background(&b, request_id, deadline(30), reset());
        let Some(CloudMessage::Request(taken_over)) = inbox_b.recv().await else {
            panic!("B's agent takes the request over");
        };
        assert_eq!(taken_over.request_id, request_id);
        assert_eq!(
            taken_over.earlier_delivery,
            Some(EarlierDelivery {
                about_to_write: Some(before)
            })
        );
        b.deliver(&on_b, success(request_id));
        assert_eq!(retry.await.unwrap().result, ResultCode::Success);
    }
}
