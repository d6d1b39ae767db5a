//! What the relay remembers of every request id it has sent, so that neither a resend nor an
//! API client's retry with the same Idempotency-Key ever reaches a second agent blind: which
//! connection carried the request last, the password stamp its agent read just before it wrote
//! (if it said so), when that connection was lost, and the verdict once one came.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use writeback_proto::ids::{AgentId, RequestId};
use writeback_proto::operation::{OperationKind, PasswordStamp, UserRef, Verdict};
use writeback_proto::result::ResultCode;
use writeback_proto::time::UnixMillis;

use super::connection::lock;

/// How long a request id is remembered: longer than any client retries, as the agents' journals.
pub const LEDGER_RETENTION: Duration = Duration::from_secs(3600);

/// At most this many request ids are remembered (a few hundred bytes each); past it the oldest
/// go first. A forgotten id that comes back reaches an agent like a new one, and the agent that
/// had it still answers it from its journal.
pub const LEDGER_CAPACITY: usize = 100_000;

/// One request id's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The operation apart from its secrets: the same id must always carry the same operation.
    pub fingerprint: String,
    /// The user as the first attempt named them; every attempt names them the same way.
    pub user: UserRef,
    pub kind: OperationKind,
    /// When the cloud stops waiting for the latest attempt.
    pub deadline: UnixMillis,
    pub agent_id: AgentId,
    pub connection_id: u64,
    /// What the agent on that connection said it was about to overwrite.
    pub about_to_write: Option<PasswordStamp>,
    /// When the connection that carried it was seen lost, before any answer came.
    pub lost_at: Option<UnixMillis>,
    /// The answer, once it is one that a retry must get again.
    pub verdict: Option<Verdict>,
    pub sent_at: UnixMillis,
}

#[derive(Debug)]
pub struct Ledger {
    deliveries: Mutex<Deliveries>,
    capacity: usize,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::with_capacity(LEDGER_CAPACITY)
    }
}

#[derive(Debug, Default)]
struct Deliveries {
    by_request: HashMap<RequestId, Delivery>,
    /// Request ids in the order they were first sent, for forgetting the oldest.
    order: VecDeque<(UnixMillis, RequestId)>,
}

impl Ledger {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            deliveries: Mutex::default(),
            capacity,
        }
    }

    pub fn get(&self, request_id: &RequestId) -> Option<Delivery> {
        lock(&self.deliveries).by_request.get(request_id).cloned()
    }

    /// Records that `request_id` was sent on `connection_id` of `agent_id`. A resend keeps what
    /// the earlier agent said it was about to overwrite until the new one says otherwise.
    #[allow(
        clippy::too_many_arguments,
        reason = "one attempt's whole description, named at the one call site"
    )]
    pub fn sent(
        &self,
        request_id: RequestId,
        fingerprint: &str,
        user: &UserRef,
        kind: OperationKind,
        deadline: UnixMillis,
        agent_id: AgentId,
        connection_id: u64,
        now: UnixMillis,
    ) {
        let mut deliveries = lock(&self.deliveries);
        let is_new = !deliveries.by_request.contains_key(&request_id);
        while let Some(&(sent_at, oldest)) = deliveries.order.front() {
            let full = is_new && deliveries.by_request.len() >= self.capacity;
            if !full && now.duration_since(sent_at) < LEDGER_RETENTION {
                break;
            }
            deliveries.order.pop_front();
            deliveries.by_request.remove(&oldest);
        }
        match deliveries.by_request.get_mut(&request_id) {
            Some(delivery) => {
                delivery.agent_id = agent_id;
                delivery.connection_id = connection_id;
                delivery.lost_at = None;
                delivery.deadline = deadline;
            }
            None => {
                deliveries.by_request.insert(
                    request_id,
                    Delivery {
                        fingerprint: fingerprint.to_owned(),
                        user: user.clone(),
                        kind,
                        deadline,
                        agent_id,
                        connection_id,
                        about_to_write: None,
                        lost_at: None,
                        verdict: None,
                        sent_at: now,
                    },
                );
                deliveries.order.push_back((now, request_id));
            }
        }
    }

    /// Takes over `request_id` as another node of the cluster recorded it, so that it is
    /// delivered again as a request whose connection was lost.
    pub fn adopt(&self, request_id: RequestId, delivery: Delivery) {
        let mut deliveries = lock(&self.deliveries);
        deliveries.order.push_back((delivery.sent_at, request_id));
        deliveries.by_request.insert(request_id, delivery);
    }

    /// Puts `request_id` back as it was before a send that did not happen.
    pub fn restore(&self, request_id: RequestId, previous: Option<Delivery>) {
        let mut deliveries = lock(&self.deliveries);
        match previous {
            Some(previous) => {
                deliveries.by_request.insert(request_id, previous);
            }
            None => {
                deliveries.by_request.remove(&request_id);
            }
        }
    }

    /// Every request still awaited at `now`: no verdict yet, and its deadline not passed.
    pub fn in_flight(&self, now: UnixMillis) -> Vec<(RequestId, Delivery)> {
        let mut awaited: Vec<(RequestId, Delivery)> = lock(&self.deliveries)
            .by_request
            .iter()
            .filter(|(_, delivery)| delivery.verdict.is_none() && now < delivery.deadline)
            .map(|(request_id, delivery)| (*request_id, delivery.clone()))
            .collect();
        awaited.sort_by_key(|(_, delivery)| delivery.sent_at);
        awaited
    }

    /// The agent on `connection_id` is about to write `request_id`'s password over `before`.
    /// Ignored from a connection that no longer holds the request; `true` when recorded.
    pub fn about_to_write(
        &self,
        request_id: RequestId,
        connection_id: u64,
        before: PasswordStamp,
    ) -> bool {
        match lock(&self.deliveries).by_request.get_mut(&request_id) {
            Some(delivery) if delivery.connection_id == connection_id => {
                delivery.about_to_write = Some(before);
                true
            }
            _ => false,
        }
    }

    /// Keeps `verdict` for retries, unless it is one that a retry deserves a fresh attempt at:
    /// nothing was written, and later the directory or an agent may be back. `true` when kept.
    pub fn answered(&self, request_id: RequestId, verdict: &Verdict) -> bool {
        let retry_may_differ = matches!(
            verdict.result,
            ResultCode::AgentUnavailable
                | ResultCode::DirectoryUnavailable { .. }
                | ResultCode::Timeout
                | ResultCode::Internal { .. }
        );
        if retry_may_differ {
            return false;
        }
        match lock(&self.deliveries).by_request.get_mut(&request_id) {
            Some(delivery) => {
                delivery.verdict = Some(verdict.clone());
                true
            }
            None => false,
        }
    }

    /// Marks every unanswered request of `connection_id` as lost at `now`.
    pub fn connection_lost(&self, connection_id: u64, now: UnixMillis) {
        for delivery in lock(&self.deliveries).by_request.values_mut() {
            if delivery.connection_id == connection_id
                && delivery.verdict.is_none()
                && delivery.lost_at.is_none()
            {
                delivery.lost_at = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jdoe() -> UserRef {
        UserRef::logon_name("jdoe").unwrap()
    }

    fn stamp(version: u32) -> PasswordStamp {
        PasswordStamp {
            version,
            changed_at: UnixMillis(0),
        }
    }

    #[test]
    fn a_resend_keeps_what_the_earlier_agent_was_about_to_overwrite() {
        let ledger = Ledger::default();
        let request_id = RequestId::generate().unwrap();
        let (first, second) = (AgentId::generate().unwrap(), AgentId::generate().unwrap());
        ledger.sent(
            request_id,
            "reset|x",
            &jdoe(),
            OperationKind::Unlock,
            UnixMillis(u64::MAX),
            first,
            1,
            UnixMillis(10),
        );
        ledger.about_to_write(request_id, 2, stamp(9));
        assert_eq!(
            ledger.get(&request_id).unwrap().about_to_write,
            None,
            "another connection is ignored"
        );
        ledger.about_to_write(request_id, 1, stamp(3));
        ledger.connection_lost(1, UnixMillis(20));
        assert_eq!(
            ledger.get(&request_id).unwrap().lost_at,
            Some(UnixMillis(20))
        );
        ledger.sent(
            request_id,
            "reset|x",
            &jdoe(),
            OperationKind::Unlock,
            UnixMillis(u64::MAX),
            second,
            5,
            UnixMillis(30),
        );
        let delivery = ledger.get(&request_id).unwrap();
        assert_eq!((delivery.agent_id, delivery.connection_id), (second, 5));
        assert_eq!(delivery.about_to_write, Some(stamp(3)));
        assert_eq!(delivery.lost_at, None);
    }

    #[test]
    fn final_verdicts_are_kept_and_passing_ones_are_not() {
        let ledger = Ledger::default();
        let request_id = RequestId::generate().unwrap();
        ledger.sent(
            request_id,
            "f",
            &jdoe(),
            OperationKind::Unlock,
            UnixMillis(u64::MAX),
            AgentId::generate().unwrap(),
            1,
            UnixMillis(0),
        );
        ledger.answered(request_id, &ResultCode::Timeout.into());
        assert_eq!(ledger.get(&request_id).unwrap().verdict, None);
        ledger.answered(request_id, &ResultCode::Success.into());
        assert_eq!(
            ledger.get(&request_id).unwrap().verdict,
            Some(ResultCode::Success.into())
        );
    }

    #[test]
    fn past_its_capacity_the_ledger_forgets_the_oldest_ids_first() {
        let ledger = Ledger::with_capacity(3);
        let agent = AgentId::generate().unwrap();
        let ids: Vec<RequestId> = (0..5).map(|_| RequestId::generate().unwrap()).collect();
        for (index, id) in ids.iter().enumerate() {
            let at = UnixMillis(index as u64);
            ledger.sent(
                *id,
                "f",
                &jdoe(),
                OperationKind::Unlock,
                UnixMillis(u64::MAX),
                agent,
                1,
                at,
            );
        }
        let kept: Vec<bool> = ids.iter().map(|id| ledger.get(id).is_some()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
        // A resend of a remembered id evicts nothing.
        ledger.sent(
            ids[4],
            "f",
            &jdoe(),
            OperationKind::Unlock,
            UnixMillis(u64::MAX),
            agent,
            2,
            UnixMillis(9),
        );
        assert!(ledger.get(&ids[2]).is_some());
    }

    #[test]
    fn request_ids_are_forgotten_after_the_retention() {
        let ledger = Ledger::default();
        let agent = AgentId::generate().unwrap();
        let old = RequestId::generate().unwrap();
        ledger.sent(
            old,
            "f",
            &jdoe(),
            OperationKind::Unlock,
            UnixMillis(u64::MAX),
            agent,
            1,
            UnixMillis(0),
        );
        let later = UnixMillis(0).saturating_add(LEDGER_RETENTION);
        ledger.sent(
            RequestId::generate().unwrap(),
            "f",
            &jdoe(),
            OperationKind::Unlock,
            UnixMillis(u64::MAX),
            agent,
            1,
            later,
        );
        assert_eq!(ledger.get(&old), None);
    }
}
