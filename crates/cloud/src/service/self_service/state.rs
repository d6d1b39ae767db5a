//! What the portal remembers between pages: a reset or unlock in progress (a *flow*, before the
//! person has proven who they are) and a signed-in user's session. Both live in memory only,
//! keyed by the SHA-256 of a cookie, each in a bounded table of its own, and end after the
//! configured session time (15 minutes by default). A restart ends them, which costs a user one
//! fresh start and nothing else.
//!
//! A proof is checked against a challenge taken out of its flow under the lock, so two requests
//! carrying the same proof cannot both count it.
//!
//! Everything here is pure state with time passed in; the handlers do the IO.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use writeback_proto::api::VerificationMethod;
use writeback_proto::ids::DirectoryName;
use writeback_proto::sync::ObjectAnchor;
use writeback_proto::time::UnixMillis;
use zeroize::Zeroizing;

/// A one-time code is valid this long after it is sent.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// A synced user the portal acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalAccount {
    pub directory: DirectoryName,
    pub anchor: ObjectAnchor,
    pub sam_account_name: String,
    pub display_name: Option<String>,
}

impl PortalAccount {
    /// The synced user `user` of `directory`.
    pub fn of_user(directory: &DirectoryName, user: &writeback_proto::sync::SyncedUser) -> Self {
        Self {
            directory: directory.clone(),
            anchor: user.anchor,
            sam_account_name: user.sam_account_name.clone(),
            display_name: user.display_name.clone(),
        }
    }

    /// How the audit log and the rate limits name this user.
    pub fn audit_name(&self) -> String {
        format!("{}\\{}", self.directory, self.sam_account_name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Reset,
    Unlock,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Unlock => "unlock",
        }
    }
}

/// A code sent by mail, remembered only as a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCode {
    pub digest: Vec<u8>,
    pub sent_at: UnixMillis,
}

impl SentCode {
    pub fn is_current(&self, now: UnixMillis) -> bool {
        now.duration_since(self.sent_at) < CODE_LIFETIME
    }
}

/// The method a person chose and is now proving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub method: VerificationMethod,
    pub code: Option<SentCode>,
    /// The security questions asked, in order.
    pub questions: Vec<String>,
}

/// A reset or unlock before and during verification. `account` is `None` when the name matched
/// no user the portal may serve; the flow then looks and behaves the same and never succeeds.
#[derive(Debug, Clone)]
pub struct Flow {
    pub purpose: Purpose,
    /// The name as typed, trimmed and lower-cased.
    pub identifier: String,
    pub account: Option<PortalAccount>,
    /// The distinct methods proven so far: the number of them opens the next step.
    pub verified: BTreeSet<VerificationMethod>,
    pub challenge: Option<Challenge>,
    pub started_at: UnixMillis,
}

impl Flow {
    /// The name the audit log and rate limits use: the account's when known, so that every
    /// spelling of one user shares one limit.
    pub fn audit_name(&self) -> String {
        self.account
            .as_ref()
            .map_or_else(|| self.identifier.clone(), PortalAccount::audit_name)
    }
}

/// A method being registered by a signed-in user, until its code proves it.
#[derive(Debug, Clone)]
pub struct PendingRegistration {
    pub method: VerificationMethod,
    /// The address the code went to.
    pub value: Option<String>,
    /// The authenticator key shown, until a code from it is typed.
    pub secret: Option<Zeroizing<Vec<u8>>>,
    pub code: Option<SentCode>,
}

/// A user signed in with their directory password. `must_change` sessions may only change the
/// password: the directory said it has expired or must be changed.
#[derive(Debug, Clone)]
pub struct PortalSession {
    pub account: PortalAccount,
    pub must_change: bool,
    pub pending: Option<PendingRegistration>,
    /// A proof of an existing method being asked before the methods may change.
    pub step_up: Option<Challenge>,
    /// When the person last proved an existing method (or registered one with a code) in this
    /// session: for [`STEP_UP_LIFETIME`] after it they may add, replace and remove methods.
    pub proven_at: Option<UnixMillis>,
    pub started_at: UnixMillis,
}

/// How long a proof of an existing method lets a signed-in person change their methods.
pub const STEP_UP_LIFETIME: Duration = Duration::from_secs(10 * 60);

impl PortalSession {
    /// Whether the methods may change now: there are none yet (the first is registered with the
    /// directory password alone), or an existing one was proven recently.
    pub fn may_change_methods(&self, has_methods: bool, now: UnixMillis) -> bool {
        !has_methods
            || self
                .proven_at
                .is_some_and(|at| now.duration_since(at) < STEP_UP_LIFETIME)
    }
}

/// When an entry began: tables evict in that order.
trait Started {
    fn started_at(&self) -> UnixMillis;
}

impl Started for Flow {
    fn started_at(&self) -> UnixMillis {
        self.started_at
    }
}

impl Started for PortalSession {
    fn started_at(&self) -> UnixMillis {
        self.started_at
    }
}

/// Entries that all live for the same time from their start, at most `capacity` at once. Keys
/// are kept in the order they were inserted, which is the order they started and so the order
/// they expire: making room takes from the front, without a scan. An entry ended early leaves
/// its key behind in `order` until it reaches the front, or until those left-behind keys
/// outnumber the live ones and are swept out in one pass (so that pass is paid for by as many
/// inserts as it sweeps).
#[derive(Debug)]
struct BoundedTable<T> {
    capacity: usize,
    entries: HashMap<Vec<u8>, T>,
    order: VecDeque<(Vec<u8>, UnixMillis)>,
}

impl<T: Started> BoundedTable<T> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn is_current(&self, key: &[u8], started_at: UnixMillis) -> bool {
        self.entries
            .get(key)
            .is_some_and(|entry| entry.started_at() == started_at)
    }

    fn insert(&mut self, key: Vec<u8>, entry: T, lifetime: Duration, now: UnixMillis) {
        while let Some((front, started_at)) = self.order.front() {
            let current = self.is_current(front, *started_at);
            let expired = now.duration_since(*started_at) >= lifetime;
            if current && !expired && self.entries.len() < self.capacity {
                break;
            }
            if let Some((front, _)) = self.order.pop_front()
                && current
            {
                self.entries.remove(&front);
            }
        }
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order.retain(|(key, started_at)| {
                entries
                    .get(key)
                    .is_some_and(|entry| entry.started_at() == *started_at)
            });
        }
        self.order.push_back((key.clone(), entry.started_at()));
        self.entries.insert(key, entry);
    }

    /// The live entry under `key`; an expired one is removed.
    fn live(&mut self, key: &[u8], lifetime: Duration, now: UnixMillis) -> Option<&mut T> {
        let expired = now.duration_since(self.entries.get(key)?.started_at()) >= lifetime;
        if expired {
            self.entries.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    fn remove(&mut self, key: &[u8]) -> Option<T> {
        self.entries.remove(key)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Resets in progress and signed-in users, by cookie digest, in two tables of their own: a flood
/// of new flows evicts old flows, never a signed-in user.
#[derive(Debug)]
pub struct PortalState {
    lifetime: Duration,
    flows: Mutex<BoundedTable<Flow>>,
    sessions: Mutex<BoundedTable<PortalSession>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PortalState {
    /// More than `flows` (or `sessions`) at once, and the oldest are dropped: memory stays
    /// bounded whatever anyone sends.
    pub fn with_capacity(lifetime: Duration, flows: usize, sessions: usize) -> Self {
        Self {
            lifetime,
            flows: Mutex::new(BoundedTable::new(flows)),
            sessions: Mutex::new(BoundedTable::new(sessions)),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn start_flow(&self, key: Vec<u8>, flow: Flow) {
        let now = flow.started_at;
        locked(&self.flows).insert(key, flow, self.lifetime, now);
    }

    pub fn start_session(&self, key: Vec<u8>, session: PortalSession) {
        let now = session.started_at;
        locked(&self.sessions).insert(key, session, self.lifetime, now);
    }

    /// The live flow under `key`; an expired one is removed.
    pub fn flow(&self, key: &[u8], now: UnixMillis) -> Option<Flow> {
        locked(&self.flows)
            .live(key, self.lifetime, now)
            .map(|flow| flow.clone())
    }

    pub fn session(&self, key: &[u8], now: UnixMillis) -> Option<PortalSession> {
        locked(&self.sessions)
            .live(key, self.lifetime, now)
            .map(|session| session.clone())
    }

    /// Changes the live flow under `key` in place; `false` when there is none.
    pub fn update_flow(&self, key: &[u8], now: UnixMillis, change: impl FnOnce(&mut Flow)) -> bool {
        match locked(&self.flows).live(key, self.lifetime, now) {
            Some(flow) => {
                change(flow);
                true
            }
            None => false,
        }
    }

    pub fn update_session(
        &self,
        key: &[u8],
        now: UnixMillis,
        change: impl FnOnce(&mut PortalSession),
    ) -> bool {
        match locked(&self.sessions).live(key, self.lifetime, now) {
            Some(session) => {
                change(session);
                true
            }
            None => false,
        }
    }

    /// Takes the flow's challenge out, so that only one request can check a proof of it: the
    /// flow as it was, and the challenge. `None` when there is no live flow or no challenge.
    pub fn take_challenge(&self, key: &[u8], now: UnixMillis) -> Option<(Flow, Challenge)> {
        let mut flows = locked(&self.flows);
        let flow = flows.live(key, self.lifetime, now)?;
        let challenge = flow.challenge.take()?;
        Some((flow.clone(), challenge))
    }

    /// Puts a challenge back after a wrong answer, unless the flow has ended or a new challenge
    /// was started meanwhile.
    pub fn return_challenge(&self, key: &[u8], now: UnixMillis, challenge: Challenge) {
        self.update_flow(key, now, |flow| {
            if flow.challenge.is_none() {
                flow.challenge = Some(challenge);
            }
        });
    }

    /// Counts `method` as proven for the flow; the flow as it is now.
    pub fn record_proof(
        &self,
        key: &[u8],
        now: UnixMillis,
        method: VerificationMethod,
    ) -> Option<Flow> {
        let mut flows = locked(&self.flows);
        let flow = flows.live(key, self.lifetime, now)?;
        flow.verified.insert(method);
        Some(flow.clone())
    }

    /// Takes the session's step-up challenge out, so that only one request can check a proof of
    /// it.
    pub fn take_step_up(&self, key: &[u8], now: UnixMillis) -> Option<Challenge> {
        locked(&self.sessions)
            .live(key, self.lifetime, now)?
            .step_up
            .take()
    }

    /// Puts a step-up challenge back after a wrong answer, unless another was started.
    pub fn return_step_up(&self, key: &[u8], now: UnixMillis, challenge: Challenge) {
        self.update_session(key, now, |session| {
            if session.step_up.is_none() {
                session.step_up = Some(challenge);
            }
        });
    }

    /// Takes the session's pending registration out, so that only one request can confirm it.
    pub fn take_pending(&self, key: &[u8], now: UnixMillis) -> Option<PendingRegistration> {
        locked(&self.sessions)
            .live(key, self.lifetime, now)?
            .pending
            .take()
    }

    /// Puts a pending registration back after a wrong code, unless another was started.
    pub fn return_pending(&self, key: &[u8], now: UnixMillis, pending: PendingRegistration) {
        self.update_session(key, now, |session| {
            if session.pending.is_none() {
                session.pending = Some(pending);
            }
        });
    }

    pub fn end_flow(&self, key: &[u8]) {
        locked(&self.flows).remove(key);
    }

    pub fn end_session(&self, key: &[u8]) {
        locked(&self.sessions).remove(key);
    }

    /// How many flows and sessions are held now.
    pub fn counts(&self) -> (usize, usize) {
        (locked(&self.flows).len(), locked(&self.sessions).len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const LIFETIME: Duration = Duration::from_secs(15 * 60);

    fn flow(at: u64) -> Flow {
        Flow {
            purpose: Purpose::Reset,
            identifier: "jdoe".into(),
            account: None,
            verified: BTreeSet::new(),
            challenge: None,
            started_at: UnixMillis(at),
        }
    }

    fn session(at: u64) -> PortalSession {
        PortalSession {
            account: PortalAccount {
                directory: "corp".parse().unwrap(),
                anchor: ObjectAnchor::from_bytes([7; 16]),
                sam_account_name: "jdoe".into(),
                display_name: None,
            },
            must_change: false,
            pending: None,
            step_up: None,
            proven_at: None,
            started_at: UnixMillis(at),
        }
    }

    fn email_challenge() -> Challenge {
        Challenge {
            method: VerificationMethod::Email,
            code: Some(SentCode {
                digest: vec![1],
                sent_at: UnixMillis(1_000),
            }),
            questions: Vec::new(),
        }
    }

    #[test]
    fn a_flow_ends_after_the_session_time_and_is_not_a_session() {
        let state = PortalState::with_capacity(LIFETIME, 100, 100);
        state.start_flow(b"key".to_vec(), flow(1_000));
        assert!(
            state
                .flow(b"key", UnixMillis(1_000 + 14 * 60_000))
                .is_some()
        );
        assert!(state.session(b"key", UnixMillis(2_000)).is_none());
        assert!(
            state
                .flow(b"key", UnixMillis(1_000 + 15 * 60_000))
                .is_none()
        );
        assert!(
            !state.update_flow(b"key", UnixMillis(2_000), |_| {}),
            "an expired flow is gone, not just hidden"
        );
    }

    #[test]
    fn a_challenge_is_taken_by_one_of_many_parallel_checks_and_proves_one_method_once() {
        let state = Arc::new(PortalState::with_capacity(LIFETIME, 100, 100));
        state.start_flow(
            b"key".to_vec(),
            Flow {
                challenge: Some(email_challenge()),
                ..flow(1_000)
            },
        );
        let takers: Vec<_> = (0..20)
            .map(|_| {
                let state = state.clone();
                std::thread::spawn(move || {
                    let taken = state.take_challenge(b"key", UnixMillis(2_000));
                    if let Some((_, challenge)) = &taken {
                        state.record_proof(b"key", UnixMillis(2_000), challenge.method);
                    }
                    taken.is_some()
                })
            })
            .collect();
        let won = takers
            .into_iter()
            .map(|taker| taker.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(won, 1);
        let flow = state.flow(b"key", UnixMillis(2_000)).unwrap();
        assert_eq!(flow.verified.len(), 1);
        assert!(flow.challenge.is_none());
        let again = state.record_proof(b"key", UnixMillis(2_000), VerificationMethod::Email);
        assert_eq!(again.unwrap().verified.len(), 1, "a method counts once");
    }

    #[test]
    fn a_wrong_answer_puts_the_challenge_back_unless_a_new_one_began() {
        let state = PortalState::with_capacity(LIFETIME, 100, 100);
        state.start_flow(
            b"key".to_vec(),
            Flow {
                challenge: Some(email_challenge()),
                ..flow(1_000)
            },
        );
        let (_, challenge) = state.take_challenge(b"key", UnixMillis(2_000)).unwrap();
        assert!(state.take_challenge(b"key", UnixMillis(2_000)).is_none());
        state.return_challenge(b"key", UnixMillis(2_000), challenge.clone());
        let (_, taken) = state.take_challenge(b"key", UnixMillis(2_000)).unwrap();
        let newer = Challenge {
            method: VerificationMethod::AuthenticatorApp,
            code: None,
            questions: Vec::new(),
        };
        state.update_flow(b"key", UnixMillis(2_000), |flow| {
            flow.challenge = Some(newer.clone())
        });
        state.return_challenge(b"key", UnixMillis(2_000), taken);
        let flow = state.flow(b"key", UnixMillis(2_000)).unwrap();
        assert_eq!(flow.challenge, Some(newer));
    }

    #[test]
    fn a_flood_of_flows_evicts_the_oldest_flows_and_never_a_session() {
        let state = PortalState::with_capacity(LIFETIME, 100, 100);
        state.start_session(b"signed-in".to_vec(), session(1_000));
        for number in 0..10_000u64 {
            state.start_flow(number.to_le_bytes().to_vec(), flow(1_000 + number));
        }
        assert_eq!(state.counts(), (100, 1));
        assert!(state.session(b"signed-in", UnixMillis(20_000)).is_some());
        assert!(
            state
                .flow(&0u64.to_le_bytes(), UnixMillis(20_000))
                .is_none()
        );
        assert!(
            state
                .flow(&9_999u64.to_le_bytes(), UnixMillis(20_000))
                .is_some()
        );
    }

    #[test]
    fn ended_flows_leave_no_unbounded_trail() {
        let state = PortalState::with_capacity(LIFETIME, 10, 10);
        for number in 0..10_000u64 {
            let key = number.to_le_bytes().to_vec();
            state.start_flow(key.clone(), flow(1_000 + number));
            state.end_flow(&key);
        }
        let flows = locked(&state.flows);
        assert_eq!(flows.len(), 0);
        assert!(flows.order.len() <= 2 * 10 + 1, "{}", flows.order.len());
    }

    #[test]
    fn expired_flows_make_room_first() {
        let state = PortalState::with_capacity(LIFETIME, 3, 3);
        state.start_flow(b"old".to_vec(), flow(0));
        state.start_flow(b"a".to_vec(), flow(LIFETIME.as_millis() as u64));
        state.start_flow(b"b".to_vec(), flow(LIFETIME.as_millis() as u64 + 1));
        assert_eq!(state.counts().0, 2, "the expired one made room");
    }

    #[test]
    fn methods_change_freely_only_before_the_first_and_then_after_a_recent_proof() {
        let mut signed_in = session(0);
        assert!(signed_in.may_change_methods(false, UnixMillis(1)));
        assert!(!signed_in.may_change_methods(true, UnixMillis(1)));
        signed_in.proven_at = Some(UnixMillis(1_000));
        assert!(signed_in.may_change_methods(true, UnixMillis(1_000 + 599_999)));
        assert!(!signed_in.may_change_methods(true, UnixMillis(1_000 + 600_000)));
    }

    #[test]
    fn a_code_is_current_for_five_minutes() {
        let code = SentCode {
            digest: vec![1],
            sent_at: UnixMillis(0),
        };
        assert!(code.is_current(UnixMillis(299_999)));
        assert!(!code.is_current(UnixMillis(300_000)));
    }
}
