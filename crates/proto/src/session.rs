//! Both ends of an agent connection as state machines. They are fed received bytes and the current
//! time, and answer with actions for the IO layer to carry out; they never touch a socket, a clock
//! or a database, so every handshake, timeout and refusal is tested here without a network.
//!
//! ```text
//! agent                               cloud
//!   ──── WebSocket open ───────────────▶
//!   ◀─── challenge {nonce} ─────────────
//!   ──── hello {agent_id, sealing key, signature(nonce…)} ─▶   (or register {token, keys, signature})
//!   ◀─── welcome {heartbeat interval} ──                        (or registered / rejected, then close)
//!   ──── heartbeat ────────────────────▶ ◀─── heartbeat_ack ───
//!   ◀─── request {id, deadline, operation} ─
//!   ──── response {id, result} ─────────▶
//!   ◀─── sync_start / sync_ack ──────── ──── sync_batch ────▶   (see [`crate::sync`])
//! ```

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::frame::{
    self, AgentMessage, AgentStatus, CloudMessage, Hello, Registration, RejectReason,
};
use crate::identity::{
    IdentityKeyPair, IdentityPublicKey, hello_transcript, registration_transcript,
};
use crate::ids::{AgentId, DirectoryName, RequestId};
use crate::operation::{PasswordStamp, Request, Response};
use crate::sealing::SealingPublicKey;
use crate::sync::{SyncBatch, SyncStart};
use crate::time::UnixMillis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub heartbeat_interval: Duration,
    /// How long a connection may take from open to authenticated.
    pub handshake_timeout: Duration,
    /// How many heartbeat intervals of silence end a connection.
    pub missed_heartbeats_allowed: u32,
}

/// How often each side calls `on_tick`: the granularity of heartbeats and of silence checks.
pub const TICK: Duration = Duration::from_millis(100);

impl Default for SessionSettings {
    /// A heartbeat every 500 ms and three missed end the connection, so a silent peer is judged
    /// gone within 1.5 s plus one [`TICK`]: under the 2 s after which requests should go to
    /// another agent.
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
            missed_heartbeats_allowed: 3,
        }
    }
}

impl SessionSettings {
    fn silence_limit(&self, heartbeat_interval: Duration) -> Duration {
        heartbeat_interval.saturating_mul(self.missed_heartbeats_allowed.max(1))
    }
}

/// An agent that proved its identity on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedAgent {
    pub agent_id: AgentId,
    pub version: String,
    pub sealing_key: SealingPublicKey,
}

/// What the cloud's IO layer must do next.
#[derive(Debug)]
pub enum CloudAction {
    Send(CloudMessage),
    /// Look up the agent's registered identity key and call [`CloudSession::on_identity`].
    LookUpIdentity(AgentId),
    /// Redeem the registration token and call [`CloudSession::on_registration`]. The signature
    /// has already been checked.
    Redeem(Registration),
    /// The agent is authenticated and may be sent requests.
    Authenticated(AuthenticatedAgent),
    HeartbeatReceived {
        sent_at: UnixMillis,
    },
    Deliver(Response),
    /// Remember that the agent is about to write this request's password, and the stamp before.
    AboutToWrite {
        request_id: RequestId,
        before: PasswordStamp,
    },
    /// Apply the batch and its cursor in one transaction, then send `sync_ack`.
    ApplySync(SyncBatch),
    /// Remember whether the agent can use its directory.
    StatusReported(AgentStatus),
    /// Close the connection; `reason` is for the log.
    Close {
        reason: String,
    },
}

/// What the cloud has on record for an agent that says hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredIdentity {
    pub key: IdentityPublicKey,
    pub revoked: bool,
}

impl RegisteredIdentity {
    pub fn active(key: IdentityPublicKey) -> Self {
        Self {
            key,
            revoked: false,
        }
    }
}

#[derive(Debug)]
enum CloudState {
    AwaitingIntroduction,
    AwaitingIdentity(Hello),
    AwaitingRedemption,
    Ready(AuthenticatedAgent),
    Closed,
}

/// The cloud's end of one agent connection.
#[derive(Debug)]
pub struct CloudSession {
    settings: SessionSettings,
    nonce: [u8; 32],
    opened_at: UnixMillis,
    last_heard: UnixMillis,
    state: CloudState,
}

impl CloudSession {
    /// Starts a session; the returned challenge is the first frame to send.
    pub fn new(
        nonce: [u8; 32],
        now: UnixMillis,
        settings: SessionSettings,
    ) -> (Self, CloudMessage) {
        let session = Self {
            settings,
            nonce,
            opened_at: now,
            last_heard: now,
            state: CloudState::AwaitingIntroduction,
        };
        (session, CloudMessage::Challenge { nonce })
    }

    pub fn agent(&self) -> Option<&AuthenticatedAgent> {
        match &self.state {
            CloudState::Ready(agent) => Some(agent),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, CloudState::Closed)
    }

    pub fn on_frame(&mut self, bytes: &[u8], now: UnixMillis) -> Vec<CloudAction> {
        if self.is_closed() {
            return Vec::new();
        }
        self.last_heard = now;
        let message = match frame::decode::<AgentMessage>(bytes) {
            Ok(message) => message,
            Err(error) => return self.protocol_error(error.to_string()),
        };
        match (&self.state, message) {
            (CloudState::AwaitingIntroduction, AgentMessage::Hello(hello)) => {
                let agent_id = hello.agent_id;
                self.state = CloudState::AwaitingIdentity(hello);
                vec![CloudAction::LookUpIdentity(agent_id)]
            }
            (CloudState::AwaitingIntroduction, AgentMessage::Register(registration)) => {
                let transcript = registration_transcript(
                    &self.nonce,
                    &registration.identity_key,
                    &registration.sealing_key,
                );
                if registration
                    .identity_key
                    .verify(&transcript, &registration.signature)
                    .is_err()
                {
                    return self.reject(RejectReason::BadSignature);
                }
                self.state = CloudState::AwaitingRedemption;
                vec![CloudAction::Redeem(registration)]
            }
            (CloudState::Ready(_), AgentMessage::Heartbeat { sent_at }) => vec![
                CloudAction::HeartbeatReceived { sent_at },
                CloudAction::Send(CloudMessage::HeartbeatAck { sent_at }),
            ],
            (CloudState::Ready(_), AgentMessage::Response(response)) => {
                vec![CloudAction::Deliver(response)]
            }
            (CloudState::Ready(_), AgentMessage::AboutToWrite { request_id, before }) => {
                vec![CloudAction::AboutToWrite { request_id, before }]
            }
            (CloudState::Ready(_), AgentMessage::SyncBatch(batch)) => {
                vec![CloudAction::ApplySync(batch)]
            }
            (CloudState::Ready(_), AgentMessage::Status(status)) => {
                vec![CloudAction::StatusReported(status)]
            }
            (state, message) => {
                let expected = match state {
                    CloudState::AwaitingIntroduction => "hello or register",
                    CloudState::AwaitingIdentity(_) | CloudState::AwaitingRedemption => {
                        "nothing until the handshake completes"
                    }
                    CloudState::Ready(_) => "heartbeat, response, sync_batch or status",
                    CloudState::Closed => "nothing",
                };
                self.protocol_error(format!(
                    "unexpected {} frame; expected {expected}",
                    message.name()
                ))
            }
        }
    }

    /// Continues a hello once the agent's registered identity key has been looked up.
    pub fn on_identity(&mut self, identity: Option<RegisteredIdentity>) -> Vec<CloudAction> {
        let CloudState::AwaitingIdentity(hello) = &self.state else {
            return Vec::new();
        };
        let Some(identity) = identity else {
            return self.reject(RejectReason::UnknownAgent);
        };
        let transcript = hello_transcript(&self.nonce, &hello.agent_id, &hello.sealing_key);
        if identity.key.verify(&transcript, &hello.signature).is_err() {
            return self.reject(RejectReason::BadSignature);
        }
        // Said only to the holder of the key, so nobody else learns which agents were revoked.
        if identity.revoked {
            return self.reject(RejectReason::Revoked);
        }
        let agent = AuthenticatedAgent {
            agent_id: hello.agent_id,
            version: hello.version.clone(),
            sealing_key: hello.sealing_key.clone(),
        };
        self.state = CloudState::Ready(agent.clone());
        vec![
            CloudAction::Authenticated(agent),
            CloudAction::Send(CloudMessage::Welcome {
                heartbeat_interval_ms: u64::try_from(self.settings.heartbeat_interval.as_millis())
                    .unwrap_or(u64::MAX),
            }),
        ]
    }

    /// The identity lookup itself failed (the store is unavailable): refuse without suggesting
    /// the agent is unknown, so it retries instead of asking for a new registration.
    pub fn on_lookup_failed(&mut self) -> Vec<CloudAction> {
        if !matches!(self.state, CloudState::AwaitingIdentity(_)) {
            return Vec::new();
        }
        self.reject(RejectReason::Internal)
    }

    /// Finishes a registration once the token has been redeemed (or refused). A registration
    /// connection always closes afterwards; the agent reconnects with a hello.
    pub fn on_registration(
        &mut self,
        outcome: Result<(AgentId, DirectoryName), RejectReason>,
    ) -> Vec<CloudAction> {
        if !matches!(self.state, CloudState::AwaitingRedemption) {
            return Vec::new();
        }
        match outcome {
            Ok((agent_id, directory)) => {
                self.state = CloudState::Closed;
                vec![
                    CloudAction::Send(CloudMessage::Registered {
                        agent_id,
                        directory,
                    }),
                    CloudAction::Close {
                        reason: "registration complete".into(),
                    },
                ]
            }
            Err(reason) => self.reject(reason),
        }
    }

    pub fn on_tick(&mut self, now: UnixMillis) -> Vec<CloudAction> {
        match &self.state {
            CloudState::Closed => Vec::new(),
            CloudState::Ready(_) => {
                let limit = self
                    .settings
                    .silence_limit(self.settings.heartbeat_interval);
                if now.duration_since(self.last_heard) > limit {
                    self.close(format!(
                        "no frame from the agent for {} ms",
                        limit.as_millis()
                    ))
                } else {
                    Vec::new()
                }
            }
            _ => {
                if now.duration_since(self.opened_at) > self.settings.handshake_timeout {
                    self.close(format!(
                        "handshake not completed within {} s",
                        self.settings.handshake_timeout.as_secs()
                    ))
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn reject(&mut self, reason: RejectReason) -> Vec<CloudAction> {
        self.state = CloudState::Closed;
        vec![
            CloudAction::Send(CloudMessage::Rejected {
                reason,
                message: reason.describe().into(),
            }),
            CloudAction::Close {
                reason: format!("handshake rejected: {}", reason.describe()),
            },
        ]
    }

    fn protocol_error(&mut self, message: String) -> Vec<CloudAction> {
        self.state = CloudState::Closed;
        vec![
            CloudAction::Send(CloudMessage::ProtocolError {
                message: message.clone(),
            }),
            CloudAction::Close {
                reason: format!("protocol error: {message}"),
            },
        ]
    }

    fn close(&mut self, reason: String) -> Vec<CloudAction> {
        self.state = CloudState::Closed;
        vec![CloudAction::Close { reason }]
    }
}

/// What the agent's IO layer must do next.
#[derive(Debug)]
pub enum AgentAction {
    Send(AgentMessage),
    /// Authenticated; requests may now arrive.
    Ready {
        heartbeat_interval: Duration,
    },
    Execute(Request),
    /// Sync from the given cursor (or start over); replaces any sync under way.
    StartSync(SyncStart),
    SyncAcknowledged {
        sequence: u64,
    },
    Registered {
        agent_id: AgentId,
        directory: DirectoryName,
    },
    /// The cloud refused the handshake. Not worth retrying for registration; for a working
    /// connection the agent backs off and retries, since an administrator may fix it.
    Rejected {
        reason: RejectReason,
        message: String,
    },
    Close {
        reason: String,
    },
}

/// Why the agent opens a connection.
#[derive(Debug)]
pub enum AgentPurpose {
    Register { token: SecretString, name: String },
    Work { agent_id: AgentId },
}

#[derive(Debug)]
enum AgentState {
    AwaitingChallenge,
    AwaitingAnswer,
    Ready {
        heartbeat_interval: Duration,
        last_heartbeat_sent: UnixMillis,
    },
    Closed,
}

/// The agent's end of one connection.
#[derive(Debug)]
pub struct AgentSession {
    purpose: AgentPurpose,
    identity: Arc<IdentityKeyPair>,
    sealing_key: SealingPublicKey,
    version: String,
    settings: SessionSettings,
    opened_at: UnixMillis,
    last_heard: UnixMillis,
    state: AgentState,
}

impl AgentSession {
    pub fn new(
        purpose: AgentPurpose,
        identity: Arc<IdentityKeyPair>,
        sealing_key: SealingPublicKey,
        version: String,
        settings: SessionSettings,
        now: UnixMillis,
    ) -> Self {
        Self {
            purpose,
            identity,
            sealing_key,
            version,
            settings,
            opened_at: now,
            last_heard: now,
            state: AgentState::AwaitingChallenge,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, AgentState::Ready { .. })
    }

    pub fn on_frame(&mut self, bytes: &[u8], now: UnixMillis) -> Vec<AgentAction> {
        if matches!(self.state, AgentState::Closed) {
            return Vec::new();
        }
        self.last_heard = now;
        let message = match frame::decode::<CloudMessage>(bytes) {
            Ok(message) => message,
            Err(error) => {
                return self.close(format!("the cloud sent an unreadable frame: {error}"));
            }
        };
        match (&self.state, message) {
            (AgentState::AwaitingChallenge, CloudMessage::Challenge { nonce }) => {
                self.state = AgentState::AwaitingAnswer;
                vec![AgentAction::Send(self.introduction(&nonce))]
            }
            (
                AgentState::AwaitingAnswer,
                CloudMessage::Welcome {
                    heartbeat_interval_ms,
                },
            ) if matches!(self.purpose, AgentPurpose::Work { .. }) => {
                let heartbeat_interval = Duration::from_millis(heartbeat_interval_ms.max(100));
                self.state = AgentState::Ready {
                    heartbeat_interval,
                    last_heartbeat_sent: now,
                };
                vec![
                    AgentAction::Ready { heartbeat_interval },
                    AgentAction::Send(AgentMessage::Heartbeat { sent_at: now }),
                ]
            }
            (
                AgentState::AwaitingAnswer,
                CloudMessage::Registered {
                    agent_id,
                    directory,
                },
            ) if matches!(self.purpose, AgentPurpose::Register { .. }) => {
                self.state = AgentState::Closed;
                vec![AgentAction::Registered {
                    agent_id,
                    directory,
                }]
            }
            (_, CloudMessage::Rejected { reason, message }) => {
                self.state = AgentState::Closed;
                vec![
                    AgentAction::Rejected {
                        reason,
                        message: message.clone(),
                    },
                    AgentAction::Close {
                        reason: format!("the cloud refused the connection: {message}"),
                    },
                ]
            }
            (_, CloudMessage::ProtocolError { message }) => {
                self.close(format!("the cloud reported a protocol error: {message}"))
            }
            (AgentState::Ready { .. }, CloudMessage::Request(request)) => {
                vec![AgentAction::Execute(*request)]
            }
            (AgentState::Ready { .. }, CloudMessage::HeartbeatAck { .. }) => Vec::new(),
            (AgentState::Ready { .. }, CloudMessage::SyncStart(start)) => {
                vec![AgentAction::StartSync(*start)]
            }
            (AgentState::Ready { .. }, CloudMessage::SyncAck { sequence }) => {
                vec![AgentAction::SyncAcknowledged { sequence }]
            }
            (_, message) => self.close(format!(
                "unexpected {} frame from the cloud",
                message.name()
            )),
        }
    }

    pub fn on_tick(&mut self, now: UnixMillis) -> Vec<AgentAction> {
        match self.state {
            AgentState::Closed => Vec::new(),
            AgentState::Ready {
                heartbeat_interval,
                last_heartbeat_sent,
            } => {
                let limit = self.settings.silence_limit(heartbeat_interval);
                if now.duration_since(self.last_heard) > limit {
                    return self.close(format!(
                        "no frame from the cloud for {} ms",
                        limit.as_millis()
                    ));
                }
                if now.duration_since(last_heartbeat_sent) >= heartbeat_interval {
                    self.state = AgentState::Ready {
                        heartbeat_interval,
                        last_heartbeat_sent: now,
                    };
                    return vec![AgentAction::Send(AgentMessage::Heartbeat { sent_at: now })];
                }
                Vec::new()
            }
            AgentState::AwaitingChallenge | AgentState::AwaitingAnswer => {
                if now.duration_since(self.opened_at) > self.settings.handshake_timeout {
                    self.close(format!(
                        "the cloud did not complete the handshake within {} s",
                        self.settings.handshake_timeout.as_secs()
                    ))
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn introduction(&self, nonce: &[u8; 32]) -> AgentMessage {
        match &self.purpose {
            AgentPurpose::Work { agent_id } => AgentMessage::Hello(Hello {
                agent_id: *agent_id,
                version: self.version.clone(),
                sealing_key: self.sealing_key.clone(),
                signature: self.identity.sign(&hello_transcript(
                    nonce,
                    agent_id,
                    &self.sealing_key,
                )),
            }),
            AgentPurpose::Register { token, name } => {
                let identity_key = self.identity.public_key();
                AgentMessage::Register(Registration {
                    token: token.clone(),
                    name: name.clone(),
                    version: self.version.clone(),
                    identity_key,
                    sealing_key: self.sealing_key.clone(),
                    signature: self.identity.sign(&registration_transcript(
                        nonce,
                        &identity_key,
                        &self.sealing_key,
                    )),
                })
            }
        }
    }

    fn close(&mut self, reason: String) -> Vec<AgentAction> {
        self.state = AgentState::Closed;
        vec![AgentAction::Close { reason }]
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::ids::RequestId;
    use crate::operation::{Operation, UserRef};
    use crate::result::ResultCode;
    use crate::sealing::SealingKeyPair;

    const START: UnixMillis = UnixMillis(1_000_000);

    fn settings() -> SessionSettings {
        SessionSettings {
            heartbeat_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            missed_heartbeats_allowed: 3,
        }
    }

    struct Pair {
        cloud: CloudSession,
        agent: AgentSession,
        identity: Arc<IdentityKeyPair>,
    }

    fn pair(purpose: AgentPurpose) -> (Pair, CloudMessage) {
        let identity = Arc::new(IdentityKeyPair::generate().unwrap());
        let sealing = SealingKeyPair::generate();
        let (cloud, challenge) = CloudSession::new([9u8; 32], START, settings());
        let agent = AgentSession::new(
            purpose,
            identity.clone(),
            sealing.public_key().clone(),
            "1.2.3".into(),
            settings(),
            START,
        );
        (
            Pair {
                cloud,
                agent,
                identity,
            },
            challenge,
        )
    }

    fn bytes(message: &impl serde::Serialize) -> Vec<u8> {
        frame::encode(message).unwrap().into_bytes()
    }

    fn sent_by_agent(actions: Vec<AgentAction>) -> AgentMessage {
        actions
            .into_iter()
            .find_map(|action| match action {
                AgentAction::Send(message) => Some(message),
                _ => None,
            })
            .expect("the agent sends a frame")
    }

    fn sent_by_cloud(actions: &[CloudAction]) -> Vec<CloudMessage> {
        actions
            .iter()
            .filter_map(|action| match action {
                CloudAction::Send(message) => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    fn closes(actions: &[CloudAction]) -> bool {
        actions
            .iter()
            .any(|action| matches!(action, CloudAction::Close { .. }))
    }

    /// Runs a working handshake to the point where the cloud has looked up the identity key.
    fn hello(pair: &mut Pair, challenge: &CloudMessage) -> Vec<CloudAction> {
        let hello = sent_by_agent(pair.agent.on_frame(&bytes(challenge), START));
        let actions = pair.cloud.on_frame(&bytes(&hello), START);
        assert!(
            matches!(actions.as_slice(), [CloudAction::LookUpIdentity(_)]),
            "{actions:?}"
        );
        actions
    }

    #[test]
    fn a_registered_agent_authenticates_and_receives_requests() {
        let agent_id = AgentId::generate().unwrap();
        let (mut pair, challenge) = pair(AgentPurpose::Work { agent_id });
        hello(&mut pair, &challenge);
        let actions = pair
            .cloud
            .on_identity(Some(RegisteredIdentity::active(pair.identity.public_key())));
        assert!(
            matches!(&actions[0], CloudAction::Authenticated(agent) if agent.agent_id == agent_id && agent.version == "1.2.3")
        );
        let welcome = sent_by_cloud(&actions);
        let actions = pair.agent.on_frame(&bytes(&welcome[0]), START);
        assert!(
            matches!(actions[0], AgentAction::Ready { heartbeat_interval } if heartbeat_interval == Duration::from_secs(10))
        );
        assert!(pair.agent.is_ready());

        let request = Request {
            request_id: RequestId::generate().unwrap(),
            deadline: START.saturating_add(Duration::from_secs(5)),
            earlier_delivery: None,
            operation: Operation::Unlock {
                user: UserRef::logon_name("jdoe").unwrap(),
            },
        };
        let actions = pair.agent.on_frame(
            &bytes(&CloudMessage::Request(Box::new(request.clone()))),
            START,
        );
        assert!(matches!(&actions[..], [AgentAction::Execute(received)] if *received == request));

        let response = AgentMessage::Response(Response {
            request_id: request.request_id,
            result: ResultCode::Success,
            warnings: vec![crate::result::OutcomeWarning::WasNotLocked],
            trace: None,
        });
        let actions = pair.cloud.on_frame(&bytes(&response), START);
        assert!(
            matches!(&actions[..], [CloudAction::Deliver(delivered)] if delivered.request_id == request.request_id && delivered.warnings.len() == 1)
        );
    }

    #[test]
    fn sync_batches_flow_only_on_an_authenticated_connection() {
        use crate::sync::{SyncCursor, SyncPhase};
        let agent_id = AgentId::generate().unwrap();
        let batch = AgentMessage::SyncBatch(SyncBatch {
            sequence: 1,
            changes: Vec::new(),
            cursor: SyncCursor {
                server: "dc1".into(),
                generation: 1,
                phase: SyncPhase::polled_from(7),
            },
            completes_full_sync: false,
            completes_reconciliation: false,
        });

        let (mut early, _) = pair(AgentPurpose::Work { agent_id });
        assert!(closes(&early.cloud.on_frame(&bytes(&batch), START)));

        let (mut pair, challenge) = pair(AgentPurpose::Work { agent_id });
        hello(&mut pair, &challenge);
        let welcome = sent_by_cloud(
            &pair
                .cloud
                .on_identity(Some(RegisteredIdentity::active(pair.identity.public_key()))),
        );
        pair.agent.on_frame(&bytes(&welcome[0]), START);
        let start = CloudMessage::SyncStart(Box::new(SyncStart {
            cursor: None,
            full: true,
        }));
        let actions = pair.agent.on_frame(&bytes(&start), START);
        assert!(matches!(
            &actions[..],
            [AgentAction::StartSync(SyncStart {
                cursor: None,
                full: true
            })]
        ));
        let actions = pair.cloud.on_frame(&bytes(&batch), START);
        assert!(matches!(&actions[..], [CloudAction::ApplySync(applied)] if applied.sequence == 1));
        let actions = pair
            .agent
            .on_frame(&bytes(&CloudMessage::SyncAck { sequence: 1 }), START);
        assert!(matches!(
            &actions[..],
            [AgentAction::SyncAcknowledged { sequence: 1 }]
        ));

        let status = AgentStatus {
            directory_reachable: false,
            detail: Some("the domain controller is unavailable".into()),
            password_policy: None,
            lockout: None,
        };
        let actions = pair
            .cloud
            .on_frame(&bytes(&AgentMessage::Status(status.clone())), START);
        assert!(
            matches!(&actions[..], [CloudAction::StatusReported(reported)] if *reported == status)
        );
    }

    #[test]
    fn an_unknown_agent_is_rejected() {
        let (mut pair, challenge) = pair(AgentPurpose::Work {
            agent_id: AgentId::generate().unwrap(),
        });
        hello(&mut pair, &challenge);
        let actions = pair.cloud.on_identity(None);
        assert!(matches!(
            sent_by_cloud(&actions)[..],
            [CloudMessage::Rejected {
                reason: RejectReason::UnknownAgent,
                ..
            }]
        ));
        assert!(closes(&actions));
        assert!(pair.cloud.is_closed());
    }

    #[test]
    fn a_revoked_agent_is_told_so_only_after_proving_its_key() {
        let (mut impostor, challenge) = pair(AgentPurpose::Work {
            agent_id: AgentId::generate().unwrap(),
        });
        hello(&mut impostor, &challenge);
        let someone_elses_revoked_key = RegisteredIdentity {
            key: IdentityKeyPair::generate().unwrap().public_key(),
            revoked: true,
        };
        assert!(matches!(
            sent_by_cloud(&impostor.cloud.on_identity(Some(someone_elses_revoked_key)))[..],
            [CloudMessage::Rejected {
                reason: RejectReason::BadSignature,
                ..
            }]
        ));
        let (mut pair, challenge) = pair(AgentPurpose::Work {
            agent_id: AgentId::generate().unwrap(),
        });
        hello(&mut pair, &challenge);
        let revoked = RegisteredIdentity {
            key: pair.identity.public_key(),
            revoked: true,
        };
        let actions = pair.cloud.on_identity(Some(revoked));
        assert!(matches!(
            sent_by_cloud(&actions)[..],
            [CloudMessage::Rejected {
                reason: RejectReason::Revoked,
                ..
            }]
        ));
        assert!(closes(&actions));
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, CloudAction::Authenticated(_)))
        );
    }

    #[test]
    fn a_failed_lookup_is_an_internal_refusal_not_an_unknown_agent() {
        let (mut pair, challenge) = pair(AgentPurpose::Work {
            agent_id: AgentId::generate().unwrap(),
        });
        hello(&mut pair, &challenge);
        let actions = pair.cloud.on_lookup_failed();
        assert!(matches!(
            sent_by_cloud(&actions)[..],
            [CloudMessage::Rejected {
                reason: RejectReason::Internal,
                ..
            }]
        ));
    }

    #[test]
    fn an_agent_holding_another_identity_key_is_rejected() {
        let (mut pair, challenge) = pair(AgentPurpose::Work {
            agent_id: AgentId::generate().unwrap(),
        });
        hello(&mut pair, &challenge);
        let someone_else = IdentityKeyPair::generate().unwrap();
        let actions = pair
            .cloud
            .on_identity(Some(RegisteredIdentity::active(someone_else.public_key())));
        assert!(matches!(
            sent_by_cloud(&actions)[..],
            [CloudMessage::Rejected {
                reason: RejectReason::BadSignature,
                ..
            }]
        ));
    }

    #[test]
    fn a_hello_replayed_onto_a_new_connection_fails_its_fresh_challenge() {
        let agent_id = AgentId::generate().unwrap();
        let (mut pair, challenge) = pair(AgentPurpose::Work { agent_id });
        let hello = sent_by_agent(pair.agent.on_frame(&bytes(&challenge), START));
        let (mut second_connection, _) = CloudSession::new([10u8; 32], START, settings());
        second_connection.on_frame(&bytes(&hello), START);
        let actions = second_connection
            .on_identity(Some(RegisteredIdentity::active(pair.identity.public_key())));
        assert!(matches!(
            sent_by_cloud(&actions)[..],
            [CloudMessage::Rejected {
                reason: RejectReason::BadSignature,
                ..
            }]
        ));
    }

    #[test]
    fn registration_carries_the_token_and_closes_after_the_answer() {
        let (mut pair, challenge) = pair(AgentPurpose::Register {
            token: SecretString::from("token-value"),
            name: "dc-host-1".into(),
        });
        let register = sent_by_agent(pair.agent.on_frame(&bytes(&challenge), START));
        let actions = pair.cloud.on_frame(&bytes(&register), START);
        let [CloudAction::Redeem(registration)] = &actions[..] else {
            panic!("{actions:?}");
        };
        assert_eq!(registration.token.expose_secret(), "token-value");
        assert_eq!(registration.name, "dc-host-1");
        let agent_id = AgentId::generate().unwrap();
        let directory: DirectoryName = "corp".parse().unwrap();
        let actions = pair
            .cloud
            .on_registration(Ok((agent_id, directory.clone())));
        assert!(closes(&actions));
        let answer = sent_by_cloud(&actions);
        let actions = pair.agent.on_frame(&bytes(&answer[0]), START);
        assert!(
            matches!(&actions[..], [AgentAction::Registered { agent_id: id, directory: d }] if *id == agent_id && *d == directory)
        );
    }

    #[test]
    fn a_refused_token_is_reported_to_the_agent() {
        let (mut pair, challenge) = pair(AgentPurpose::Register {
            token: SecretString::from("used-token"),
            name: "host".into(),
        });
        let register = sent_by_agent(pair.agent.on_frame(&bytes(&challenge), START));
        pair.cloud.on_frame(&bytes(&register), START);
        let actions = pair.cloud.on_registration(Err(RejectReason::InvalidToken));
        let answer = sent_by_cloud(&actions);
        let actions = pair.agent.on_frame(&bytes(&answer[0]), START);
        assert!(matches!(
            actions[0],
            AgentAction::Rejected {
                reason: RejectReason::InvalidToken,
                ..
            }
        ));
    }

    #[test]
    fn a_registration_signed_with_another_key_is_refused_before_the_token_is_touched() {
        let (mut pair, challenge) = pair(AgentPurpose::Register {
            token: SecretString::from("token"),
            name: "host".into(),
        });
        let AgentMessage::Register(mut registration) =
            sent_by_agent(pair.agent.on_frame(&bytes(&challenge), START))
        else {
            panic!("expected a registration");
        };
        registration.identity_key = IdentityKeyPair::generate().unwrap().public_key();
        let actions = pair
            .cloud
            .on_frame(&bytes(&AgentMessage::Register(registration)), START);
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, CloudAction::Redeem(_)))
        );
        assert!(closes(&actions));
    }

    #[test]
    fn malformed_and_unexpected_frames_end_the_connection_with_a_clear_error() {
        let cases: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            br#"{"v":7,"msg":{"type":"heartbeat","sent_at":1}}"#.to_vec(),
            bytes(&AgentMessage::Heartbeat { sent_at: START }),
        ];
        for case in cases {
            let (mut cloud, _) = CloudSession::new([1u8; 32], START, settings());
            let actions = cloud.on_frame(&case, START);
            let sent = sent_by_cloud(&actions);
            assert!(
                matches!(&sent[..], [CloudMessage::ProtocolError { message }] if !message.is_empty()),
                "{sent:?}"
            );
            assert!(closes(&actions));
            assert!(
                cloud.on_frame(&case, START).is_empty(),
                "a closed session ignores further frames"
            );
        }
    }

    #[test]
    fn the_unsupported_version_error_names_both_versions() {
        let (mut cloud, _) = CloudSession::new([1u8; 32], START, settings());
        let actions = cloud.on_frame(br#"{"v":7,"msg":{}}"#, START);
        let sent = sent_by_cloud(&actions);
        assert!(
            matches!(&sent[..], [CloudMessage::ProtocolError { message }] if message.contains("version 7") && message.contains("version 1"))
        );
    }

    #[test]
    fn a_silent_handshake_times_out_on_both_sides() {
        let (mut pair, _) = pair(AgentPurpose::Work {
            agent_id: AgentId::generate().unwrap(),
        });
        assert!(
            pair.cloud
                .on_tick(START.saturating_add(Duration::from_secs(5)))
                .is_empty()
        );
        assert!(closes(
            &pair
                .cloud
                .on_tick(START.saturating_add(Duration::from_secs(6)))
        ));
        let actions = pair
            .agent
            .on_tick(START.saturating_add(Duration::from_secs(6)));
        assert!(matches!(actions[..], [AgentAction::Close { .. }]));
    }

    #[test]
    fn with_the_default_settings_a_silent_agent_is_judged_gone_within_two_seconds() {
        let settings = SessionSettings::default();
        let agent_id = AgentId::generate().unwrap();
        let identity = Arc::new(IdentityKeyPair::generate().unwrap());
        let (mut cloud, challenge) = CloudSession::new([9u8; 32], START, settings);
        let mut agent = AgentSession::new(
            AgentPurpose::Work { agent_id },
            identity.clone(),
            SealingKeyPair::generate().public_key().clone(),
            "1.0.0".into(),
            settings,
            START,
        );
        let mut pair = Pair {
            cloud,
            agent,
            identity,
        };
        hello(&mut pair, &challenge);
        let welcome = sent_by_cloud(
            &pair
                .cloud
                .on_identity(Some(RegisteredIdentity::active(pair.identity.public_key()))),
        );
        (cloud, agent) = (pair.cloud, pair.agent);
        agent.on_frame(&bytes(&welcome[0]), START);
        // A live agent, ticking, heartbeats often enough never to be dropped.
        let mut now = START;
        for _ in 0..50 {
            now = now.saturating_add(TICK);
            for action in agent.on_tick(now) {
                if let AgentAction::Send(message) = action {
                    for answer in sent_by_cloud(&cloud.on_frame(&bytes(&message), now)) {
                        agent.on_frame(&bytes(&answer), now);
                    }
                }
            }
            assert!(
                !closes(&cloud.on_tick(now)),
                "dropped a live agent at {now:?}"
            );
        }
        // Then it falls silent: the cloud, ticking, drops it within 2 s.
        let silent_from = now;
        let mut dropped_after = None;
        for _ in 0..20 {
            now = now.saturating_add(TICK);
            if closes(&cloud.on_tick(now)) {
                dropped_after = Some(now.duration_since(silent_from));
                break;
            }
        }
        let dropped_after = dropped_after.expect("the silent agent was never dropped");
        assert!(dropped_after <= Duration::from_secs(2), "{dropped_after:?}");
    }

    #[test]
    fn heartbeats_flow_and_silence_ends_the_connection() {
        let agent_id = AgentId::generate().unwrap();
        let (mut pair, challenge) = pair(AgentPurpose::Work { agent_id });
        hello(&mut pair, &challenge);
        let welcome = sent_by_cloud(
            &pair
                .cloud
                .on_identity(Some(RegisteredIdentity::active(pair.identity.public_key()))),
        );
        pair.agent.on_frame(&bytes(&welcome[0]), START);

        let nine_seconds = START.saturating_add(Duration::from_secs(9));
        assert!(pair.agent.on_tick(nine_seconds).is_empty());
        let ten_seconds = START.saturating_add(Duration::from_secs(10));
        let heartbeat = sent_by_agent(pair.agent.on_tick(ten_seconds));
        let actions = pair.cloud.on_frame(&bytes(&heartbeat), ten_seconds);
        assert!(
            matches!(actions[0], CloudAction::HeartbeatReceived { sent_at } if sent_at == ten_seconds)
        );
        assert!(matches!(
            sent_by_cloud(&actions)[..],
            [CloudMessage::HeartbeatAck { .. }]
        ));

        // The cloud hears nothing more: after three intervals it drops the connection.
        assert!(
            pair.cloud
                .on_tick(START.saturating_add(Duration::from_secs(40)))
                .is_empty()
        );
        assert!(closes(
            &pair
                .cloud
                .on_tick(START.saturating_add(Duration::from_secs(41)))
        ));
        // The agent hears nothing after the ack it never got: it gives up too.
        let actions = pair
            .agent
            .on_tick(START.saturating_add(Duration::from_secs(41)));
        assert!(
            actions
                .iter()
                .any(|action| matches!(action, AgentAction::Close { .. }))
        );
    }

    #[test]
    fn requests_before_authentication_are_a_protocol_violation_for_the_agent() {
        let (mut pair, _) = pair(AgentPurpose::Work {
            agent_id: AgentId::generate().unwrap(),
        });
        let request = CloudMessage::Request(Box::new(Request {
            request_id: RequestId::generate().unwrap(),
            earlier_delivery: None,
            deadline: START,
            operation: Operation::Unlock {
                user: UserRef::logon_name("x").unwrap(),
            },
        }));
        let actions = pair.agent.on_frame(&bytes(&request), START);
        assert!(matches!(actions[..], [AgentAction::Close { .. }]));
    }

    /// Properties over untrusted input: whatever arrives, neither end panics, and what one end
    /// encodes the other decodes to the same frame. Case counts come from `PROPTEST_CASES`
    /// (`cargo xtask test` fixes it; `cargo xtask fuzz` raises it).
    mod properties {
        use proptest::collection::vec;

        use crate::frame::{LockoutPolicy, decode, encode};
        use proptest::prelude::*;

        use super::*;

        const KINDS: &[&str] = &[
            "register",
            "hello",
            "heartbeat",
            "response",
            "sync_batch",
            "status",
            "challenge",
            "registered",
            "welcome",
            "heartbeat_ack",
            "request",
            "sync_start",
            "sync_ack",
            "rejected",
            "protocol_error",
        ];

        /// Raw bytes, JSON-shaped noise around every message type, and valid frames mutated.
        fn frame() -> impl Strategy<Value = Vec<u8>> {
            let valid = vec![
                bytes(&AgentMessage::Heartbeat { sent_at: START }),
                bytes(&CloudMessage::Welcome {
                    heartbeat_interval_ms: 1000,
                }),
                bytes(&CloudMessage::SyncAck { sequence: 7 }),
            ];
            prop_oneof![
                vec(any::<u8>(), 0..512),
                (0u64..3, prop::sample::select(KINDS), "[ -~]{0,120}").prop_map(
                    |(version, kind, rest)| {
                        format!("{{\"v\":{version},\"msg\":{{\"type\":\"{kind}\"{rest}}}}}")
                            .into_bytes()
                    }
                ),
                (
                    prop::sample::select(valid),
                    vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
                )
                    .prop_map(|(mut frame, changes)| {
                        for (index, byte) in changes {
                            let position = index.index(frame.len());
                            frame[position] = byte;
                        }
                        frame
                    }),
            ]
        }

        proptest! {
            #[test]
            fn any_bytes_decode_to_a_message_or_an_error(bytes in frame()) {
                let _ = decode::<AgentMessage>(&bytes);
                let _ = decode::<CloudMessage>(&bytes);
            }

            #[test]
            fn frames_round_trip(
                at in any::<u64>(),
                sequence in any::<u64>(),
                reachable in any::<bool>(),
                detail in proptest::option::of("\\PC{0,80}"),
                threshold in any::<u32>(),
                window in any::<u64>(),
                message in "\\PC{0,80}",
            ) {
                let agent_frames = [
                    AgentMessage::Heartbeat { sent_at: UnixMillis(at) },
                    AgentMessage::Status(AgentStatus {
                        directory_reachable: reachable,
                        detail,
                        password_policy: None,
                        lockout: Some(LockoutPolicy {
                            threshold,
                            observation_window_seconds: window,
                        }),
                    }),
                ];
                for original in agent_frames {
                    let encoded = encode(&original).unwrap();
                    let decoded: AgentMessage = decode(encoded.as_bytes()).unwrap();
                    prop_assert_eq!(encode(&decoded).unwrap(), encoded);
                }
                let cloud_frames = [
                    CloudMessage::SyncAck { sequence },
                    CloudMessage::ProtocolError { message },
                ];
                for original in cloud_frames {
                    let encoded = encode(&original).unwrap();
                    let decoded: CloudMessage = decode(encoded.as_bytes()).unwrap();
                    prop_assert_eq!(encode(&decoded).unwrap(), encoded);
                }
            }

            /// Any sequence of frames and clock ticks, at either end of a working connection:
            /// no panic, and a closed cloud session stays closed.
            #[test]
            fn neither_session_panics_and_a_closed_one_stays_closed(
                steps in vec((frame(), 0u64..120_000, any::<bool>()), 0..24),
            ) {
                let agent_id = AgentId::generate().unwrap();
                let (mut pair, challenge) = pair(AgentPurpose::Work { agent_id });
                let hello = sent_by_agent(pair.agent.on_frame(&bytes(&challenge), START));
                let _ = pair.cloud.on_frame(&bytes(&hello), START);
                let _ = pair
                    .cloud
                    .on_identity(Some(RegisteredIdentity::active(pair.identity.public_key())));
                let mut now = START;
                let mut closed = false;
                for (frame, advance, tick) in steps {
                    now = now.saturating_add(Duration::from_millis(advance));
                    let _ = pair.cloud.on_frame(&frame, now);
                    let _ = pair.agent.on_frame(&frame, now);
                    if tick {
                        let _ = pair.cloud.on_tick(now);
                        let _ = pair.agent.on_tick(now);
                    }
                    prop_assert!(!closed || pair.cloud.is_closed());
                    closed = pair.cloud.is_closed();
                }
            }
        }
    }
}
