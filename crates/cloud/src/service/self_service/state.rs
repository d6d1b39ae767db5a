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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use writeback_store::{PortalEntry, SecretOwner, Store};

use writeback_proto::api::VerificationMethod;
use writeback_proto::ids::DirectoryName;
use writeback_proto::sync::ObjectAnchor;
use writeback_proto::time::UnixMillis;
use zeroize::Zeroizing;

use crate::service::secrets::SecretKeys;

/// A one-time code is valid this long after it is sent.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// A synced user the portal acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub method: VerificationMethod,
    pub code: Option<SentCode>,
    /// The security questions asked, in order.
    pub questions: Vec<String>,
}

/// A reset or unlock before and during verification. `account` is `None` when the name matched
/// no user the portal may serve; the flow then looks and behaves the same and never succeeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRegistration {
    pub method: VerificationMethod,
    /// The address the code went to.
    pub value: Option<String>,
    /// The authenticator key shown, until a code from it is typed.
    #[serde(with = "zeroizing_bytes")]
    pub secret: Option<Zeroizing<Vec<u8>>>,
    pub code: Option<SentCode>,
}

/// A user signed in with their directory password. `must_change` sessions may only change the
/// password: the directory said it has expired or must be changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
/// of new flows evicts old flows, never a signed-in user. A node alone keeps them in memory; the
/// nodes of a cluster keep them in the store they share, sealed under the secrets key, so that
/// any node serves any page.
#[derive(Debug)]
pub struct PortalState {
    lifetime: Duration,
    kept: Kept,
}

#[derive(Debug)]
enum Kept {
    InMemory(Tables),
    Shared {
        store: Store,
        secrets: Arc<SecretKeys>,
        flows: usize,
        sessions: usize,
    },
}

#[derive(Debug)]
struct Tables {
    flows: Mutex<BoundedTable<Flow>>,
    sessions: Mutex<BoundedTable<PortalSession>>,
}

/// A kind of thing the portal remembers: where it is kept, in memory or in the store.
trait Remembered: Started + Clone + Serialize + DeserializeOwned {
    const KIND: &'static str;
    fn table(tables: &Tables) -> &Mutex<BoundedTable<Self>>;
    fn capacity(flows: usize, sessions: usize) -> usize;
}

impl Remembered for Flow {
    const KIND: &'static str = "flow";
    fn table(tables: &Tables) -> &Mutex<BoundedTable<Self>> {
        &tables.flows
    }
    fn capacity(flows: usize, _: usize) -> usize {
        flows
    }
}

impl Remembered for PortalSession {
    const KIND: &'static str = "session";
    fn table(tables: &Tables) -> &Mutex<BoundedTable<Self>> {
        &tables.sessions
    }
    fn capacity(_: usize, sessions: usize) -> usize {
        sessions
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sealed<T: Remembered>(secrets: &SecretKeys, key: &[u8], entry: &T) -> Option<Vec<u8>> {
    let owner = SecretOwner::PortalEntry { kind: T::KIND, key };
    let clear = Zeroizing::new(serde_json::to_vec(entry).ok()?);
    secrets
        .seal(owner, &clear)
        .inspect_err(|error| tracing::error!(%error, "cannot seal what the portal remembers"))
        .ok()
}

fn opened<T: Remembered>(secrets: &SecretKeys, key: &[u8], body: &[u8]) -> Option<T> {
    let owner = SecretOwner::PortalEntry { kind: T::KIND, key };
    let clear = secrets
        .open(owner, body)
        .inspect_err(|error| tracing::error!(%error, "what the portal remembers does not open"))
        .ok()?;
    serde_json::from_slice(&clear)
        .inspect_err(|error| tracing::error!(%error, "what the portal remembers does not read"))
        .ok()
}

impl PortalState {
    /// In memory: more than `flows` (or `sessions`) at once, and the oldest are dropped, so
    /// memory stays bounded whatever anyone sends. A restart ends them all.
    pub fn with_capacity(lifetime: Duration, flows: usize, sessions: usize) -> Self {
        Self {
            lifetime,
            kept: Kept::InMemory(Tables {
                flows: Mutex::new(BoundedTable::new(flows)),
                sessions: Mutex::new(BoundedTable::new(sessions)),
            }),
        }
    }

    /// In `store`, shared with the other nodes, with the same bounds; sealed under `secrets`.
    pub fn shared(
        lifetime: Duration,
        flows: usize,
        sessions: usize,
        store: Store,
        secrets: Arc<SecretKeys>,
    ) -> Self {
        Self {
            lifetime,
            kept: Kept::Shared {
                store,
                secrets,
                flows: flows.max(1),
                sessions: sessions.max(1),
            },
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The oldest start that is still live at `now`.
    fn live_since(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(
            now.0
                .saturating_sub(self.lifetime.as_millis() as u64)
                .saturating_add(1),
        )
    }

    async fn start<T: Remembered>(&self, key: Vec<u8>, entry: T) {
        let now = entry.started_at();
        match &self.kept {
            Kept::InMemory(tables) => {
                locked(T::table(tables)).insert(key, entry, self.lifetime, now);
            }
            Kept::Shared {
                store,
                secrets,
                flows,
                sessions,
            } => {
                let Some(body) = sealed(secrets, &key, &entry) else {
                    return;
                };
                let entry = PortalEntry {
                    started_at: now,
                    body,
                };
                let kept = store
                    .put_portal_entry(
                        T::KIND,
                        &key,
                        &entry,
                        self.live_since(now),
                        T::capacity(*flows, *sessions),
                    )
                    .await;
                if let Err(error) = kept {
                    tracing::error!(%error, kind = T::KIND, "cannot keep what the portal remembers");
                }
            }
        }
    }

    async fn get<T: Remembered>(&self, key: &[u8], now: UnixMillis) -> Option<T> {
        match &self.kept {
            Kept::InMemory(tables) => locked(T::table(tables))
                .live(key, self.lifetime, now)
                .map(|entry| entry.clone()),
            Kept::Shared { store, secrets, .. } => {
                let entry = store
                    .portal_entry(T::KIND, key, self.live_since(now))
                    .await
                    .inspect_err(
                        |error| tracing::error!(%error, "cannot read what the portal remembers"),
                    )
                    .ok()??;
                opened(secrets, key, &entry.body)
            }
        }
    }

    /// Passes the live entry under `key` through `change`, atomically: two requests changing one
    /// entry take turns, on one node or several. `None` when there is no live entry.
    async fn change<T: Remembered, R>(
        &self,
        key: &[u8],
        now: UnixMillis,
        change: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        match &self.kept {
            Kept::InMemory(tables) => locked(T::table(tables))
                .live(key, self.lifetime, now)
                .map(change),
            Kept::Shared { store, secrets, .. } => store
                .change_portal_entry(T::KIND, key, self.live_since(now), |entry| {
                    let Some(mut remembered) = opened::<T>(secrets, key, &entry.body) else {
                        return (None, None);
                    };
                    let answer = change(&mut remembered);
                    match sealed(secrets, key, &remembered) {
                        Some(body) => (Some(body), Some(answer)),
                        None => (None, None),
                    }
                })
                .await
                .inspect_err(
                    |error| tracing::error!(%error, "cannot change what the portal remembers"),
                )
                .ok()
                .flatten()
                .flatten(),
        }
    }

    async fn end<T: Remembered>(&self, key: &[u8]) {
        match &self.kept {
            Kept::InMemory(tables) => {
                locked(T::table(tables)).remove(key);
            }
            Kept::Shared { store, .. } => {
                if let Err(error) = store.remove_portal_entry(T::KIND, key).await {
                    tracing::error!(%error, "cannot end what the portal remembers");
                }
            }
        }
    }

    pub async fn start_flow(&self, key: Vec<u8>, flow: Flow) {
        self.start(key, flow).await;
    }

    pub async fn start_session(&self, key: Vec<u8>, session: PortalSession) {
        self.start(key, session).await;
    }

    /// The live flow under `key`.
    pub async fn flow(&self, key: &[u8], now: UnixMillis) -> Option<Flow> {
        self.get(key, now).await
    }

    pub async fn session(&self, key: &[u8], now: UnixMillis) -> Option<PortalSession> {
        self.get(key, now).await
    }

    /// Changes the live flow under `key` in place; `false` when there is none.
    pub async fn update_flow(
        &self,
        key: &[u8],
        now: UnixMillis,
        change: impl FnOnce(&mut Flow),
    ) -> bool {
        self.change(key, now, change).await.is_some()
    }

    pub async fn update_session(
        &self,
        key: &[u8],
        now: UnixMillis,
        change: impl FnOnce(&mut PortalSession),
    ) -> bool {
        self.change(key, now, change).await.is_some()
    }

    /// Takes the flow's challenge out, so that only one request can check a proof of it: the
    /// flow as it was, and the challenge. `None` when there is no live flow or no challenge.
    pub async fn take_challenge(&self, key: &[u8], now: UnixMillis) -> Option<(Flow, Challenge)> {
        self.change(key, now, |flow: &mut Flow| {
            let challenge = flow.challenge.take()?;
            Some((flow.clone(), challenge))
        })
        .await
        .flatten()
    }

    /// Puts a challenge back after a wrong answer, unless the flow has ended or a new challenge
    /// was started meanwhile.
    pub async fn return_challenge(&self, key: &[u8], now: UnixMillis, challenge: Challenge) {
        self.update_flow(key, now, |flow| {
            if flow.challenge.is_none() {
                flow.challenge = Some(challenge);
            }
        })
        .await;
    }

    /// Counts `method` as proven for the flow; the flow as it is now.
    pub async fn record_proof(
        &self,
        key: &[u8],
        now: UnixMillis,
        method: VerificationMethod,
    ) -> Option<Flow> {
        self.change(key, now, |flow: &mut Flow| {
            flow.verified.insert(method);
            flow.clone()
        })
        .await
    }

    /// Takes the session's step-up challenge out, so that only one request can check a proof of
    /// it.
    pub async fn take_step_up(&self, key: &[u8], now: UnixMillis) -> Option<Challenge> {
        self.change(key, now, |session: &mut PortalSession| {
            session.step_up.take()
        })
        .await
        .flatten()
    }

    /// Puts a step-up challenge back after a wrong answer, unless another was started.
    pub async fn return_step_up(&self, key: &[u8], now: UnixMillis, challenge: Challenge) {
        self.update_session(key, now, |session| {
            if session.step_up.is_none() {
                session.step_up = Some(challenge);
            }
        })
        .await;
    }

    /// Takes the session's pending registration out, so that only one request can confirm it.
    pub async fn take_pending(&self, key: &[u8], now: UnixMillis) -> Option<PendingRegistration> {
        self.change(key, now, |session: &mut PortalSession| {
            session.pending.take()
        })
        .await
        .flatten()
    }

    /// Puts a pending registration back after a wrong code, unless another was started.
    pub async fn return_pending(&self, key: &[u8], now: UnixMillis, pending: PendingRegistration) {
        self.update_session(key, now, |session| {
            if session.pending.is_none() {
                session.pending = Some(pending);
            }
        })
        .await;
    }

    pub async fn end_flow(&self, key: &[u8]) {
        self.end::<Flow>(key).await;
    }

    pub async fn end_session(&self, key: &[u8]) {
        self.end::<PortalSession>(key).await;
    }

    /// How many flows and sessions are live at `now`.
    pub async fn counts(&self, now: UnixMillis) -> (u64, u64) {
        match &self.kept {
            Kept::InMemory(tables) => (
                locked(&tables.flows).len() as u64,
                locked(&tables.sessions).len() as u64,
            ),
            Kept::Shared { store, .. } => {
                let since = self.live_since(now);
                let flows = store.count_portal_entries(Flow::KIND, since).await;
                let sessions = store.count_portal_entries(PortalSession::KIND, since).await;
                (flows.unwrap_or(0), sessions.unwrap_or(0))
            }
        }
    }
}

/// An authenticator key in what a cluster's portal remembers: bytes in, bytes out, wiped when
/// dropped.
mod zeroizing_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(
        value: &Option<Zeroizing<Vec<u8>>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_deref().map(Vec::as_slice).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, D::Error> {
        Ok(Option::<Vec<u8>>::deserialize(deserializer)?.map(Zeroizing::new))
    }
}

#[cfg(test)]
mod tests {
    use writeback_store::postgres_server::PostgresServer;

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
            pending: Some(PendingRegistration {
                method: VerificationMethod::AuthenticatorApp,
                value: None,
                secret: Some(Zeroizing::new(b"authenticator key".to_vec())),
                code: None,
            }),
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

    /// The same rules, kept the three ways: in memory, and shared in SQLite and in PostgreSQL.
    async fn kept_every_way(
        flows: usize,
        sessions: usize,
    ) -> Vec<(&'static str, Arc<PortalState>)> {
        let secrets = Arc::new(SecretKeys::generate().unwrap());
        let postgres = PostgresServer::shared()
            .unwrap()
            .fresh_store()
            .await
            .unwrap();
        let sqlite = Store::in_memory().await.unwrap();
        vec![
            (
                "in memory",
                PortalState::with_capacity(LIFETIME, flows, sessions),
            ),
            (
                "SQLite",
                PortalState::shared(LIFETIME, flows, sessions, sqlite, secrets.clone()),
            ),
            (
                "PostgreSQL",
                PortalState::shared(LIFETIME, flows, sessions, postgres, secrets),
            ),
        ]
        .into_iter()
        .map(|(name, state)| (name, Arc::new(state)))
        .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flow_ends_after_the_session_time_and_is_not_a_session() {
        for (kept, state) in kept_every_way(100, 100).await {
            state.start_flow(b"key".to_vec(), flow(1_000)).await;
            let late = UnixMillis(1_000 + 15 * 60_000);
            assert!(
                state
                    .flow(b"key", UnixMillis(1_000 + 14 * 60_000))
                    .await
                    .is_some(),
                "{kept}"
            );
            assert!(
                state.session(b"key", UnixMillis(2_000)).await.is_none(),
                "{kept}"
            );
            assert!(state.flow(b"key", late).await.is_none(), "{kept}");
            assert!(!state.update_flow(b"key", late, |_| {}).await, "{kept}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_challenge_is_taken_by_one_of_many_parallel_checks_and_proves_one_method_once() {
        for (kept, state) in kept_every_way(100, 100).await {
            let challenged = Flow {
                challenge: Some(email_challenge()),
                ..flow(1_000)
            };
            state.start_flow(b"key".to_vec(), challenged).await;
            let takers: Vec<_> = (0..20)
                .map(|_| {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let taken = state.take_challenge(b"key", UnixMillis(2_000)).await;
                        if let Some((_, challenge)) = &taken {
                            state
                                .record_proof(b"key", UnixMillis(2_000), challenge.method)
                                .await;
                        }
                        taken.is_some()
                    })
                })
                .collect();
            let mut won = 0;
            for taker in takers {
                won += usize::from(taker.await.unwrap());
            }
            assert_eq!(won, 1, "{kept}");
            let flow = state.flow(b"key", UnixMillis(2_000)).await.unwrap();
            assert_eq!(flow.verified.len(), 1, "{kept}");
            assert!(flow.challenge.is_none(), "{kept}");
            let again = state
                .record_proof(b"key", UnixMillis(2_000), VerificationMethod::Email)
                .await;
            assert_eq!(
                again.unwrap().verified.len(),
                1,
                "{kept}: a method counts once"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_answer_puts_the_challenge_back_unless_a_new_one_began() {
        for (kept, state) in kept_every_way(100, 100).await {
            let challenged = Flow {
                challenge: Some(email_challenge()),
                ..flow(1_000)
            };
            state.start_flow(b"key".to_vec(), challenged).await;
            let now = UnixMillis(2_000);
            let (_, challenge) = state.take_challenge(b"key", now).await.unwrap();
            assert!(state.take_challenge(b"key", now).await.is_none(), "{kept}");
            state.return_challenge(b"key", now, challenge.clone()).await;
            let (_, taken) = state.take_challenge(b"key", now).await.unwrap();
            let newer = Challenge {
                method: VerificationMethod::AuthenticatorApp,
                code: None,
                questions: Vec::new(),
            };
            let started = newer.clone();
            state
                .update_flow(b"key", now, |flow| flow.challenge = Some(started))
                .await;
            state.return_challenge(b"key", now, taken).await;
            let flow = state.flow(b"key", now).await.unwrap();
            assert_eq!(flow.challenge, Some(newer), "{kept}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_flows_evicts_the_oldest_flows_and_never_a_session() {
        for (kept, state) in kept_every_way(10, 10).await {
            state
                .start_session(b"signed-in".to_vec(), session(1_000))
                .await;
            for number in 0..100u64 {
                state
                    .start_flow(number.to_le_bytes().to_vec(), flow(1_000 + number))
                    .await;
            }
            let now = UnixMillis(20_000);
            assert_eq!(state.counts(now).await, (10, 1), "{kept}");
            assert!(state.session(b"signed-in", now).await.is_some(), "{kept}");
            assert!(
                state.flow(&0u64.to_le_bytes(), now).await.is_none(),
                "{kept}"
            );
            assert!(
                state.flow(&99u64.to_le_bytes(), now).await.is_some(),
                "{kept}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_flows_make_room_first() {
        for (kept, state) in kept_every_way(3, 3).await {
            let lifetime = LIFETIME.as_millis() as u64;
            state.start_flow(b"old".to_vec(), flow(0)).await;
            state.start_flow(b"a".to_vec(), flow(lifetime)).await;
            state.start_flow(b"b".to_vec(), flow(lifetime + 1)).await;
            assert_eq!(
                state.counts(UnixMillis(lifetime + 1)).await.0,
                2,
                "{kept}: the expired one made room"
            );
        }
    }

    #[tokio::test]
    async fn ended_flows_leave_no_unbounded_trail() {
        let state = PortalState::with_capacity(LIFETIME, 10, 10);
        for number in 0..10_000u64 {
            let key = number.to_le_bytes().to_vec();
            state.start_flow(key.clone(), flow(1_000 + number)).await;
            state.end_flow(&key).await;
        }
        let Kept::InMemory(tables) = &state.kept else {
            panic!("in memory");
        };
        let flows = locked(&tables.flows);
        assert_eq!(flows.len(), 0);
        assert!(flows.order.len() <= 2 * 10 + 1, "{}", flows.order.len());
    }

    /// Two nodes on one database: a session started on one is served by the other, and what
    /// the database holds is sealed: neither the name nor the authenticator key is in it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_sharing_a_database_serve_each_others_sessions_and_it_holds_them_sealed() {
        let store = PostgresServer::shared()
            .unwrap()
            .fresh_store()
            .await
            .unwrap();
        let secrets = Arc::new(SecretKeys::generate().unwrap());
        let node_a = PortalState::shared(LIFETIME, 10, 10, store.clone(), secrets.clone());
        let node_b = PortalState::shared(LIFETIME, 10, 10, store.clone(), secrets.clone());
        node_a
            .start_session(b"cookie".to_vec(), session(1_000))
            .await;
        let now = UnixMillis(2_000);
        let pending = node_b.take_pending(b"cookie", now).await.unwrap();
        assert_eq!(
            pending.secret.as_deref().map(Vec::as_slice),
            Some(b"authenticator key".as_slice())
        );
        assert!(
            node_a.take_pending(b"cookie", now).await.is_none(),
            "taken once, on any node"
        );

        let held = store
            .portal_entry("session", b"cookie", UnixMillis(0))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&held.body);
        assert!(
            !text.contains("jdoe") && !text.contains("authenticator"),
            "sealed"
        );
        // A body moved under another cookie does not open there.
        store
            .put_portal_entry("session", b"other", &held, UnixMillis(0), 10)
            .await
            .unwrap();
        assert!(node_b.session(b"other", now).await.is_none());
        node_b.end_session(b"cookie").await;
        assert!(node_a.session(b"cookie", now).await.is_none());
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
