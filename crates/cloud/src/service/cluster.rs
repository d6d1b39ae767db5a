//! Several cloud nodes on one PostgreSQL database, with the database's `LISTEN`/`NOTIFY` as the
//! bus between them (ARCHITECTURE.md says why that bus).
//!
//! Each node tells the others, on the broadcast channel, which agents are connected to it, and
//! that it is alive, every [`ALIVE_INTERVAL`]. Every node keeps a mirror of each agent connected
//! elsewhere in its relay, so a request entering any node can go to any agent: the relay seals
//! it to the agent's key, and it crosses the bus to the agent's node, which hands it over and
//! sends back on the first node's own channel what the agent says. A node not heard from for
//! [`NODE_SILENCE`] is gone: its agents' mirrors are disconnected, and requests in flight to them
//! are taken over as for any lost connection.
//!
//! Every request id a node sends is recorded in the store too (the relay's
//! [`SharedLedger`]), so that a retry entering another node is the same request there.
//!
//! Every message is sealed under the secrets key the nodes share, bound to its channel and
//! stamped with the time it was sent: PostgreSQL lets any role that may connect to the database
//! send on any channel, and a message it forged (an agent's announcement with a key of its own,
//! to have passwords sealed to it) or replayed later is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use writeback_proto::frame::{AgentStatus, CloudMessage};
use writeback_proto::ids::{AgentId, NodeId, RequestId};
use writeback_proto::operation::Verdict;
use writeback_proto::operation::{PasswordStamp, Request, Response};
use writeback_proto::time::UnixMillis;
use writeback_store::{LedgerRecord, SecretOwner, Store};

use crate::service::error::CloudError;
use crate::service::relay::ledger::{Delivery, LEDGER_RETENTION};
use crate::service::relay::shared::{Pending, SharedDelivery, SharedLedger};
use crate::service::relay::{AgentAnnouncement, NO_CONNECTION, Relay, RelayEvent};
use crate::service::secrets::SecretKeys;

/// How often a node says it is alive.
pub const ALIVE_INTERVAL: Duration = Duration::from_millis(500);

/// A node silent this long is gone, with its agents.
pub const NODE_SILENCE: Duration = Duration::from_secs(2);

/// Every node listens here.
const BROADCAST: &str = "writeback_nodes";

/// A message sent longer ago than this is stale, and dropped: a replay, or a node whose clock is
/// far off.
const MESSAGE_LIFETIME: Duration = Duration::from_secs(10);

/// What crosses the bus, before it is sealed.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    sent_at: UnixMillis,
    message: BusMessage,
}

fn channel_of(node: NodeId) -> String {
    format!("writeback_node_{node}")
}

/// One message between nodes, as JSON on the bus. `node` is always the sender.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BusMessage {
    Alive {
        node: NodeId,
        name: String,
    },
    /// A node that just started asks the others for their agents.
    Hello {
        node: NodeId,
    },
    AgentConnected {
        node: NodeId,
        name: String,
        agent: AgentAnnouncement,
    },
    AgentDisconnected {
        node: NodeId,
        connection_id: u64,
    },
    AgentStatus {
        node: NodeId,
        connection_id: u64,
        status: AgentStatus,
    },
    AgentRevoked {
        node: NodeId,
        agent_id: AgentId,
    },
    /// For the agent on the receiver's connection `connection_id`.
    Deliver {
        node: NodeId,
        connection_id: u64,
        request: Request,
    },
    AboutToWrite {
        node: NodeId,
        connection_id: u64,
        request_id: RequestId,
        before: PasswordStamp,
    },
    Answered {
        node: NodeId,
        connection_id: u64,
        response: Response,
    },
}

impl BusMessage {
    fn sender(&self) -> NodeId {
        match self {
            Self::Alive { node, .. }
            | Self::Hello { node }
            | Self::AgentConnected { node, .. }
            | Self::AgentDisconnected { node, .. }
            | Self::AgentStatus { node, .. }
            | Self::AgentRevoked { node, .. }
            | Self::Deliver { node, .. }
            | Self::AboutToWrite { node, .. }
            | Self::Answered { node, .. } => *node,
        }
    }
}

/// Another node, as last heard.
#[derive(Debug, Clone)]
struct Peer {
    name: String,
    heard_at: Instant,
}

/// This node's place in the cluster.
#[derive(Debug)]
pub struct Cluster {
    node: NodeId,
    name: String,
    store: Store,
    relay: Arc<Relay>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// When this node began listening: before [`NODE_SILENCE`] has passed, a node not heard
    /// from yet may well be alive.
    listening_since: Instant,
    /// What the shared ledger is to record, in order.
    ledger_writes: mpsc::UnboundedSender<LedgerWrite>,
    /// Seals and opens what crosses the bus.
    secrets: Arc<SecretKeys>,
}

/// One change to a request's record in the shared ledger.
#[derive(Debug)]
enum LedgerWrite {
    Sent(LedgerRecord),
    AboutToWrite { request_id: String, before: String },
    Answered { request_id: String, verdict: String },
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// Joins the cluster on `store`'s bus as the node `name`: listens, asks the other nodes for
    /// their agents, and runs until the returned tasks are aborted.
    pub async fn join(
        store: Store,
        relay: Arc<Relay>,
        name: String,
        secrets: Arc<SecretKeys>,
    ) -> Result<(Arc<Cluster>, Vec<JoinHandle<()>>), CloudError> {
        let node = NodeId::generate().map_err(|error| CloudError::Internal(error.to_string()))?;
        let own_channel = channel_of(node);
        let listener = store.listen(&[BROADCAST, &own_channel]).await?;
        let (events, relay_events) = mpsc::unbounded_channel();
        if !relay.tell_other_nodes(events) {
            return Err(CloudError::Internal(
                "the relay already belongs to a cluster".into(),
            ));
        }
        let (ledger_writes, ledger_queue) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            node,
            name,
            store,
            relay: relay.clone(),
            peers: Mutex::default(),
            listening_since: Instant::now(),
            ledger_writes,
            secrets,
        });
        let shared: Arc<dyn SharedLedger> = cluster.clone();
        relay.share_ledger(&shared);
        tracing::info!(node = %cluster.name, node_id = %node, "joined the cluster");
        cluster.broadcast(BusMessage::Hello { node }).await;
        let tasks = vec![
            tokio::spawn(cluster.clone().record_ledger(ledger_queue)),
            tokio::spawn(cluster.clone().listen(listener)),
            tokio::spawn(cluster.clone().tell_others(relay_events)),
            tokio::spawn(cluster.clone().keep_alive()),
        ];
        Ok((cluster, tasks))
    }

    /// The names of the other nodes heard from within [`NODE_SILENCE`].
    pub fn peer_names(&self) -> Vec<String> {
        locked(&self.peers)
            .values()
            .map(|peer| peer.name.clone())
            .collect()
    }

    async fn send(&self, channel: &str, message: BusMessage) {
        let envelope = Envelope {
            sent_at: UnixMillis::now(),
            message,
        };
        let Some(payload) = seal(&self.secrets, channel, &envelope) else {
            return;
        };
        if let Err(error) = self.store.publish(channel, &payload).await {
            tracing::warn!(%error, "cannot reach the other nodes");
        }
    }

    async fn broadcast(&self, message: BusMessage) {
        self.send(BROADCAST, message).await;
    }

    async fn listen(self: Arc<Self>, mut listener: writeback_store::bus::BusListener) {
        loop {
            let (channel, payload) = match listener.next().await {
                Ok(received) => received,
                Err(error) => {
                    tracing::warn!(%error, "the bus between nodes failed; listening again");
                    tokio::time::sleep(ALIVE_INTERVAL).await;
                    continue;
                }
            };
            match open(&self.secrets, &channel, &payload, UnixMillis::now()) {
                Ok(message) if message.sender() != self.node => self.clone().on_message(message),
                Ok(_) => {}
                Err(reason) => {
                    tracing::warn!(%channel, %reason, "a message on the bus was dropped")
                }
            }
        }
    }

    fn on_message(self: Arc<Self>, message: BusMessage) {
        let sender = message.sender();
        match message {
            BusMessage::Alive { name, .. } => self.heard(sender, name),
            BusMessage::Hello { .. } => {
                tokio::spawn(async move {
                    for agent in self.relay.local_agents() {
                        let message = BusMessage::AgentConnected {
                            node: self.node,
                            name: self.name.clone(),
                            agent,
                        };
                        self.send(&channel_of(sender), message).await;
                    }
                });
            }
            BusMessage::AgentConnected { name, agent, .. } => {
                self.heard(sender, name.clone());
                let connection_id = agent.connection_id;
                let (_, queue) = self.relay.connect_mirror(sender, name, agent);
                tokio::spawn(self.carry(sender, connection_id, queue));
            }
            BusMessage::AgentDisconnected { connection_id, .. } => {
                if let Some(mirror) = self.relay.mirror(sender, connection_id) {
                    self.relay.disconnect(&mirror);
                }
            }
            BusMessage::AgentStatus {
                connection_id,
                status,
                ..
            } => {
                if let Some(mirror) = self.relay.mirror(sender, connection_id) {
                    self.relay.report_status(&mirror, status);
                }
            }
            BusMessage::AgentRevoked { agent_id, .. } => self.relay.revoke_here(&agent_id),
            BusMessage::Deliver {
                connection_id,
                request,
                ..
            } => {
                tokio::spawn(async move {
                    if !self
                        .relay
                        .accept_forwarded(sender, connection_id, request)
                        .await
                    {
                        let gone = BusMessage::AgentDisconnected {
                            node: self.node,
                            connection_id,
                        };
                        self.send(&channel_of(sender), gone).await;
                    }
                });
            }
            BusMessage::AboutToWrite {
                connection_id,
                request_id,
                before,
                ..
            } => {
                if let Some(mirror) = self.relay.mirror(sender, connection_id) {
                    self.relay.about_to_write(&mirror, request_id, before);
                }
            }
            BusMessage::Answered {
                connection_id,
                response,
                ..
            } => {
                if let Some(mirror) = self.relay.mirror(sender, connection_id) {
                    self.relay.deliver(&mirror, response);
                }
            }
        }
    }

    fn heard(&self, node: NodeId, name: String) {
        locked(&self.peers).insert(
            node,
            Peer {
                name,
                heard_at: Instant::now(),
            },
        );
    }

    /// Carries the requests sent on the mirror of `node`'s connection `connection_id` to that
    /// node, until the mirror is dropped.
    async fn carry(
        self: Arc<Self>,
        node: NodeId,
        connection_id: u64,
        mut queue: mpsc::Receiver<CloudMessage>,
    ) {
        while let Some(message) = queue.recv().await {
            match message {
                CloudMessage::Request(request) => {
                    let deliver = BusMessage::Deliver {
                        node: self.node,
                        connection_id,
                        request: *request,
                    };
                    self.send(&channel_of(node), deliver).await;
                }
                // Sync and its commands stay between an agent and the node it is connected to.
                other => tracing::debug!(?other, "not carried to another node"),
            }
        }
    }

    /// Tells the other nodes what the relay says they must hear.
    async fn tell_others(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<RelayEvent>) {
        while let Some(event) = events.recv().await {
            let node = self.node;
            let (channel, message) = match event {
                RelayEvent::AgentConnected(agent) => (
                    BROADCAST.to_owned(),
                    BusMessage::AgentConnected {
                        node,
                        name: self.name.clone(),
                        agent,
                    },
                ),
                RelayEvent::AgentDisconnected { connection_id } => (
                    BROADCAST.to_owned(),
                    BusMessage::AgentDisconnected {
                        node,
                        connection_id,
                    },
                ),
                RelayEvent::AgentStatus {
                    connection_id,
                    status,
                    ..
                } => (
                    BROADCAST.to_owned(),
                    BusMessage::AgentStatus {
                        node,
                        connection_id,
                        status,
                    },
                ),
                RelayEvent::AgentRevoked { agent_id } => (
                    BROADCAST.to_owned(),
                    BusMessage::AgentRevoked { node, agent_id },
                ),
                RelayEvent::AboutToWrite {
                    node: to,
                    connection_id,
                    request_id,
                    before,
                } => (
                    channel_of(to),
                    BusMessage::AboutToWrite {
                        node,
                        connection_id,
                        request_id,
                        before,
                    },
                ),
                RelayEvent::Answered {
                    node: to,
                    connection_id,
                    response,
                } => (
                    channel_of(to),
                    BusMessage::Answered {
                        node,
                        connection_id,
                        response,
                    },
                ),
            };
            self.send(&channel, message).await;
        }
    }

    /// Writes the shared ledger's changes to the store, in the order the relay made them.
    async fn record_ledger(self: Arc<Self>, mut writes: mpsc::UnboundedReceiver<LedgerWrite>) {
        while let Some(write) = writes.recv().await {
            let recorded = match &write {
                LedgerWrite::Sent(record) => {
                    let forget_before = UnixMillis(
                        record
                            .sent_at
                            .0
                            .saturating_sub(LEDGER_RETENTION.as_millis() as u64),
                    );
                    self.store.record_request(record, forget_before).await
                }
                LedgerWrite::AboutToWrite { request_id, before } => {
                    self.store.record_about_to_write(request_id, before).await
                }
                LedgerWrite::Answered {
                    request_id,
                    verdict,
                } => self.store.record_verdict(request_id, verdict).await,
            };
            if let Err(error) = recorded {
                tracing::error!(%error, "cannot record a request in the shared ledger");
            }
        }
    }

    /// Says this node is alive, and forgets the nodes that have gone silent, with their agents.
    async fn keep_alive(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(ALIVE_INTERVAL);
        loop {
            ticker.tick().await;
            let alive = BusMessage::Alive {
                node: self.node,
                name: self.name.clone(),
            };
            self.broadcast(alive).await;
            let silent: Vec<(NodeId, String)> = {
                let mut peers = locked(&self.peers);
                let silent = peers
                    .iter()
                    .filter(|(_, peer)| peer.heard_at.elapsed() >= NODE_SILENCE)
                    .map(|(node, peer)| (*node, peer.name.clone()))
                    .collect::<Vec<_>>();
                for (node, _) in &silent {
                    peers.remove(node);
                }
                silent
            };
            for (node, name) in silent {
                let mirrors = self.relay.mirrors_of(node);
                tracing::warn!(node = %name, agents = mirrors.len(), "a cloud node went silent; its agents are gone with it");
                for mirror in mirrors {
                    self.relay.disconnect(&mirror);
                }
            }
        }
    }
}

fn json<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value)
        .inspect_err(|error| tracing::error!(%error, "cannot encode a ledger record"))
        .ok()
}

/// A request as another node recorded it; `None` when the record does not read.
fn shared_delivery(record: LedgerRecord) -> Option<SharedDelivery> {
    fn read<T: DeserializeOwned>(what: &str, json: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(json).map_err(|error| format!("{what}: {error}"))
    }
    fn read_text<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, String> {
        serde_json::from_str(text).map_err(|error| format!("{what}: {error}"))
    }
    fn read_optional<T: DeserializeOwned>(
        what: &str,
        text: Option<&str>,
    ) -> Result<Option<T>, String> {
        text.map(|text| read_text(what, text)).transpose()
    }
    let delivery = || -> Result<SharedDelivery, String> {
        Ok(SharedDelivery {
            owner: read("node id", record.node_id.clone().into())?,
            delivery: Delivery {
                fingerprint: record.fingerprint.clone(),
                user: read_text("user", &record.user_ref)?,
                kind: read("kind", record.kind.clone().into())?,
                deadline: record.deadline,
                agent_id: read("agent id", record.agent_id.clone().into())?,
                connection_id: NO_CONNECTION,
                about_to_write: read_optional("password stamp", record.about_to_write.as_deref())?,
                lost_at: None,
                verdict: read_optional("verdict", record.verdict.as_deref())?,
                sent_at: record.sent_at,
            },
        })
    };
    delivery()
        .inspect_err(|error| tracing::error!(%error, request_id = %record.request_id, "a shared ledger record does not read"))
        .ok()
}

impl SharedLedger for Cluster {
    fn sent(&self, request_id: RequestId, delivery: &Delivery) {
        let (Some(user_ref), about_to_write) = (
            json(&delivery.user),
            delivery.about_to_write.as_ref().and_then(json),
        ) else {
            return;
        };
        let record = LedgerRecord {
            request_id: request_id.to_string(),
            node_id: self.node.to_string(),
            fingerprint: delivery.fingerprint.clone(),
            user_ref,
            kind: delivery.kind.as_str().to_owned(),
            agent_id: delivery.agent_id.to_string(),
            deadline: delivery.deadline,
            about_to_write,
            verdict: None,
            sent_at: delivery.sent_at,
        };
        let _ = self.ledger_writes.send(LedgerWrite::Sent(record));
    }

    fn about_to_write(&self, request_id: RequestId, before: PasswordStamp) {
        if let Some(before) = json(&before) {
            let _ = self.ledger_writes.send(LedgerWrite::AboutToWrite {
                request_id: request_id.to_string(),
                before,
            });
        }
    }

    fn answered(&self, request_id: RequestId, verdict: &Verdict) {
        if let Some(verdict) = json(verdict) {
            let _ = self.ledger_writes.send(LedgerWrite::Answered {
                request_id: request_id.to_string(),
                verdict,
            });
        }
    }

    fn lookup(&self, request_id: RequestId) -> Pending<'_, Option<SharedDelivery>> {
        Box::pin(async move {
            let record = self
                .store
                .request_record(&request_id.to_string())
                .await
                .inspect_err(|error| tracing::error!(%error, "cannot read the shared ledger"))
                .ok()??;
            if record.node_id == self.node.to_string() {
                return None;
            }
            shared_delivery(record)
        })
    }

    fn claim(&self, request_id: RequestId, owner: NodeId) -> Pending<'_, bool> {
        Box::pin(async move {
            self.store
                .claim_request(
                    &request_id.to_string(),
                    &owner.to_string(),
                    &self.node.to_string(),
                )
                .await
                .inspect_err(|error| tracing::error!(%error, "cannot take a request over"))
                .unwrap_or(false)
        })
    }

    fn is_alive(&self, node: NodeId) -> bool {
        node == self.node
            || self.listening_since.elapsed() < NODE_SILENCE
            || locked(&self.peers)
                .get(&node)
                .is_some_and(|peer| peer.heard_at.elapsed() < NODE_SILENCE)
    }
}

/// `envelope` sealed for `channel`, as bus text.
fn seal(secrets: &SecretKeys, channel: &str, envelope: &Envelope) -> Option<String> {
    use base64::Engine;
    let clear = zeroize::Zeroizing::new(json(envelope)?.into_bytes());
    let sealed = secrets
        .seal(SecretOwner::BusMessage { channel }, &clear)
        .inspect_err(|error| tracing::error!(%error, "cannot seal a message for the other nodes"))
        .ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(sealed))
}

/// The message in `payload`, received on `channel` at `now`, if another node sealed it for that
/// channel lately; otherwise why it is dropped.
fn open(
    secrets: &SecretKeys,
    channel: &str,
    payload: &str,
    now: UnixMillis,
) -> Result<BusMessage, String> {
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|_| "not sealed by a node".to_owned())?;
    let clear = secrets
        .open(SecretOwner::BusMessage { channel }, &sealed)
        .map_err(|_| "not sealed by a node of this cluster for this channel".to_owned())?;
    let envelope: Envelope =
        serde_json::from_slice(&clear).map_err(|error| format!("unreadable: {error}"))?;
    let age = now
        .duration_since(envelope.sent_at)
        .max(envelope.sent_at.duration_since(now));
    if age > MESSAGE_LIFETIME {
        return Err(format!("sent {} ms away from now", age.as_millis()));
    }
    Ok(envelope.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive() -> Envelope {
        Envelope {
            sent_at: UnixMillis(1_000_000),
            message: BusMessage::Alive {
                node: NodeId::generate().unwrap(),
                name: "node-a".into(),
            },
        }
    }

    #[test]
    fn only_a_recent_message_sealed_by_the_cluster_for_its_channel_opens() {
        let secrets = SecretKeys::generate().unwrap();
        let now = UnixMillis(1_000_500);
        let sealed = seal(&secrets, BROADCAST, &alive()).unwrap();
        assert!(matches!(
            open(&secrets, BROADCAST, &sealed, now),
            Ok(BusMessage::Alive { name, .. }) if name == "node-a"
        ));
        // Moved to another channel, sealed by another cluster, forged in the clear, or replayed
        // later: dropped.
        assert!(open(&secrets, "writeback_node_x", &sealed, now).is_err());
        let other = SecretKeys::generate().unwrap();
        assert!(open(&other, BROADCAST, &sealed, now).is_err());
        let forged = serde_json::to_string(&alive().message).unwrap();
        assert!(open(&secrets, BROADCAST, &forged, now).is_err());
        let later = UnixMillis(1_000_000 + MESSAGE_LIFETIME.as_millis() as u64 + 1);
        assert!(open(&secrets, BROADCAST, &sealed, later).is_err());
    }
}
