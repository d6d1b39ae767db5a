//! One authenticated agent connection, as the relay sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, mpsc, oneshot};
use writeback_proto::frame::{AgentStatus, CloudMessage};
use writeback_proto::ids::{AgentId, DirectoryName, NodeId, RequestId};
use writeback_proto::operation::Verdict;
use writeback_proto::sealing::SealingPublicKey;

pub(super) type Waiters = Arc<Mutex<HashMap<RequestId, Vec<oneshot::Sender<Verdict>>>>>;

/// One authenticated agent connection, as the relay sees it.
#[derive(Debug, Clone)]
pub struct AgentConnection {
    pub connection_id: u64,
    pub agent_id: AgentId,
    pub directory: DirectoryName,
    pub version: String,
    pub sealing_key: SealingPublicKey,
    pub(super) outbound: mpsc::Sender<CloudMessage>,
    pub(super) waiters: Waiters,
    /// What the agent last said about its directory; `None` until it says anything.
    pub(super) status: Arc<Mutex<Option<AgentStatus>>>,
    /// Notified when an administrator revokes the agent, so its connection closes at once.
    pub(super) revoked: Arc<Notify>,
    /// Set when the agent is connected to another node: this connection stands for it here, and
    /// what is sent on it crosses the bus.
    pub remote: Option<RemoteConnection>,
}

/// Where an agent connected to another node is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConnection {
    pub node_id: NodeId,
    pub node_name: String,
    /// The connection's id on that node.
    pub connection_id: u64,
}

/// What the relay knows of one connected agent right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAgent {
    pub agent_id: AgentId,
    pub directory: DirectoryName,
    pub version: String,
    pub status: Option<AgentStatus>,
    pub requests_in_flight: usize,
    /// The node it is connected to, when that is another one.
    pub remote_node: Option<String>,
}

impl AgentConnection {
    /// Queues a frame for this connection; `false` when the connection has ended.
    pub async fn send(&self, message: CloudMessage) -> bool {
        self.outbound.send(message).await.is_ok()
    }

    pub(super) fn set_status(&self, status: AgentStatus) {
        *lock(&self.status) = Some(status);
    }

    /// Resolves when the agent is revoked.
    pub async fn revoked(&self) {
        self.revoked.notified().await;
    }

    /// Resolves when the connection's writer is gone.
    pub async fn closed(&self) {
        self.outbound.closed().await;
    }

    pub(super) fn live(&self) -> LiveAgent {
        LiveAgent {
            agent_id: self.agent_id,
            directory: self.directory.clone(),
            version: self.version.clone(),
            status: lock(&self.status).clone(),
            requests_in_flight: lock(&self.waiters).len(),
            remote_node: self.remote.as_ref().map(|remote| remote.node_name.clone()),
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
