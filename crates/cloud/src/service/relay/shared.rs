//! The ledger the nodes of a cluster share, so that a retry with the same Idempotency-Key that
//! enters another node than its first attempt is the same request there: it gets the verdict
//! (waiting for it while the first node lives), or, when that node is gone, takes the request
//! over with what the lost agent was about to overwrite. The cluster implements it on the store.

use std::future::Future;
use std::pin::Pin;

use writeback_proto::ids::{NodeId, RequestId};
use writeback_proto::operation::{PasswordStamp, Verdict};

use super::ledger::Delivery;

/// A future the port answers.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A request id as another node recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDelivery {
    /// The node it entered, which waits for it.
    pub owner: NodeId,
    /// Its history, on no connection of this node.
    pub delivery: Delivery,
}

/// Where a cluster's nodes record every request id they send, and read each other's.
pub trait SharedLedger: Send + Sync + std::fmt::Debug {
    /// Each of these is recorded in the order this node made it, without waiting.
    fn sent(&self, request_id: RequestId, delivery: &Delivery);
    fn about_to_write(&self, request_id: RequestId, before: PasswordStamp);
    fn answered(&self, request_id: RequestId, verdict: &Verdict);
    /// The request as another node recorded it; `None` when none did.
    fn lookup(&self, request_id: RequestId) -> Pending<'_, Option<SharedDelivery>>;
    /// Takes the request over from `owner`: `true` for the one node that does.
    fn claim(&self, request_id: RequestId, owner: NodeId) -> Pending<'_, bool>;
    /// Whether `node` may still be waiting for its requests: heard from lately, or not yet
    /// listened for long enough to say.
    fn is_alive(&self, node: NodeId) -> bool;
}
