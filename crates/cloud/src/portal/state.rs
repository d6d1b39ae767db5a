//! What the portal remembers between pages: a reset or unlock in progress (a *flow*, before the
//! person has proven who they are) and a signed-in user's session. Both live in memory only,
//! keyed by the SHA-256 of a cookie, and end after the configured session time (15 minutes by
//! default). A restart ends them, which costs a user one fresh start and nothing else.
//!
//! Everything here is pure state with time passed in; the handlers do the IO.

use std::collections::HashMap;
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
    pub verified: Vec<VerificationMethod>,
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
    pub started_at: UnixMillis,
}

#[derive(Debug, Clone)]
enum Entry {
    Flow(Flow),
    Session(PortalSession),
}

impl Entry {
    fn started_at(&self) -> UnixMillis {
        match self {
            Self::Flow(flow) => flow.started_at,
            Self::Session(session) => session.started_at,
        }
    }
}

/// The flows and sessions in progress, by cookie digest.
#[derive(Debug)]
pub struct PortalState {
    lifetime: Duration,
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

/// More than this many at once, and the oldest are dropped: memory stays bounded whatever
/// anyone sends.
const MAX_ENTRIES: usize = 100_000;

impl PortalState {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            entries: Mutex::default(),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live(&self, entry: &Entry, now: UnixMillis) -> bool {
        now.duration_since(entry.started_at()) < self.lifetime
    }

    fn insert(&self, key: Vec<u8>, entry: Entry, now: UnixMillis) {
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES {
            let lifetime = self.lifetime;
            entries.retain(|_, entry| now.duration_since(entry.started_at()) < lifetime);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.started_at())
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, entry);
    }

    pub fn start_flow(&self, key: Vec<u8>, flow: Flow) {
        let now = flow.started_at;
        self.insert(key, Entry::Flow(flow), now);
    }

    pub fn start_session(&self, key: Vec<u8>, session: PortalSession) {
        let now = session.started_at;
        self.insert(key, Entry::Session(session), now);
    }

    /// The live flow under `key`; an expired one is removed.
    pub fn flow(&self, key: &[u8], now: UnixMillis) -> Option<Flow> {
        let mut entries = self.entries();
        match entries.get(key) {
            Some(entry @ Entry::Flow(flow)) if self.live(entry, now) => Some(flow.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn session(&self, key: &[u8], now: UnixMillis) -> Option<PortalSession> {
        let mut entries = self.entries();
        match entries.get(key) {
            Some(entry @ Entry::Session(session)) if self.live(entry, now) => Some(session.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Changes the flow under `key` in place; `false` when there is none.
    pub fn update_flow(&self, key: &[u8], change: impl FnOnce(&mut Flow)) -> bool {
        match self.entries().get_mut(key) {
            Some(Entry::Flow(flow)) => {
                change(flow);
                true
            }
            _ => false,
        }
    }

    pub fn update_session(&self, key: &[u8], change: impl FnOnce(&mut PortalSession)) -> bool {
        match self.entries().get_mut(key) {
            Some(Entry::Session(session)) => {
                change(session);
                true
            }
            _ => false,
        }
    }

    pub fn end(&self, key: &[u8]) {
        self.entries().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(at: u64) -> Flow {
        Flow {
            purpose: Purpose::Reset,
            identifier: "jdoe".into(),
            account: None,
            verified: Vec::new(),
            challenge: None,
            started_at: UnixMillis(at),
        }
    }

    #[test]
    fn a_flow_ends_after_the_session_time_and_is_not_a_session() {
        let state = PortalState::new(Duration::from_secs(15 * 60));
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
            !state.update_flow(b"key", |_| {}),
            "an expired flow is gone, not just hidden"
        );
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
