//! Frames between agent and cloud: one JSON document per WebSocket message,
//! `{"v": 1, "msg": {"type": ..., ...}}`. Every frame is checked for size first, then version,
//! then shape; nothing in a refused frame is echoed into the error, because a frame can carry a
//! registration token or a sealed password.

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ProtoError;
use crate::identity::{IdentityPublicKey, Signature};
use crate::ids::{AgentId, DirectoryName, RequestId};
use crate::operation::{PasswordStamp, Request, Response};
use crate::result::PolicyRequirements;
use crate::sealing::SealingPublicKey;
use crate::sync::{SyncBatch, SyncStart};
use crate::time::UnixMillis;

pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame either side accepts. An operation frame is well under 2 KiB; sync batches are
/// cut to fit well inside this, and the limit still keeps memory exhaustion out of reach.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Frames the agent sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMessage {
    /// First frame of a registration connection.
    Register(Registration),
    /// First frame of a working connection.
    Hello(Hello),
    Heartbeat {
        sent_at: UnixMillis,
    },
    Response(Response),
    /// Sent, and written to the connection, just before the agent writes a password: whoever
    /// takes the request over if this agent is lost compares the directory against `before`.
    AboutToWrite {
        request_id: RequestId,
        before: PasswordStamp,
    },
    SyncBatch(SyncBatch),
    /// Whether the agent can use its directory; sent once connected and whenever it changes.
    Status(AgentStatus),
}

impl AgentMessage {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register(_) => "register",
            Self::Hello(_) => "hello",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Response(_) => "response",
            Self::AboutToWrite { .. } => "about_to_write",
            Self::SyncBatch(_) => "sync_batch",
            Self::Status(_) => "status",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatus {
    pub directory_reachable: bool,
    /// Why the directory cannot be used, for administrators; never holds a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The domain's password policy, so the portal can show the requirements before the user
    /// types. A fine-grained policy that applies to one user still comes back with a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_policy: Option<PolicyRequirements>,
    /// The strictest account lockout the agent can read, so that the portal's sign-in attempts
    /// stay below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout: Option<LockoutPolicy>,
}

/// When the directory locks an account out: after `threshold` wrong passwords (0: never), each
/// within `observation_window_seconds` of the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub observation_window_seconds: u64,
}

impl LockoutPolicy {
    /// The stricter of two policies: the lower threshold that locks at all, and the longer
    /// window.
    pub fn strictest(self, other: Self) -> Self {
        let threshold = match (self.threshold, other.threshold) {
            (0, other) => other,
            (this, 0) => this,
            (this, other) => this.min(other),
        };
        Self {
            threshold,
            observation_window_seconds: self
                .observation_window_seconds
                .max(other.observation_window_seconds),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub token: SecretString,
    pub name: String,
    pub version: String,
    pub identity_key: IdentityPublicKey,
    pub sealing_key: SealingPublicKey,
    /// Over [`crate::identity::registration_transcript`]: proves possession of the identity key.
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub agent_id: AgentId,
    pub version: String,
    pub sealing_key: SealingPublicKey,
    /// Over [`crate::identity::hello_transcript`].
    pub signature: Signature,
}

/// Frames the cloud sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CloudMessage {
    Challenge {
        #[serde(with = "crate::encoding::array")]
        nonce: [u8; 32],
    },
    Registered {
        agent_id: AgentId,
        directory: DirectoryName,
    },
    Welcome {
        heartbeat_interval_ms: u64,
    },
    HeartbeatAck {
        sent_at: UnixMillis,
    },
    // Boxed: a connection's queue of frames allocates room for 32 at its creation, and an idle
    // agent's frames are all small.
    Request(Box<Request>),
    SyncStart(Box<SyncStart>),
    SyncAck {
        sequence: u64,
    },
    /// The handshake was refused; the connection closes after this frame.
    Rejected {
        reason: RejectReason,
        message: String,
    },
    /// The peer sent something this side cannot accept; the connection closes after this frame.
    ProtocolError {
        message: String,
    },
}

impl CloudMessage {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Challenge { .. } => "challenge",
            Self::Registered { .. } => "registered",
            Self::Welcome { .. } => "welcome",
            Self::HeartbeatAck { .. } => "heartbeat_ack",
            Self::Request(_) => "request",
            Self::SyncStart(_) => "sync_start",
            Self::SyncAck { .. } => "sync_ack",
            Self::Rejected { .. } => "rejected",
            Self::ProtocolError { .. } => "protocol_error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The registration token is unknown, already used or expired. One reason for all three so
    /// that a caller cannot probe which tokens exist.
    InvalidToken,
    UnknownAgent,
    BadSignature,
    /// An administrator revoked this agent; it must be registered again with a new token.
    Revoked,
    Internal,
}

impl RejectReason {
    pub fn describe(self) -> &'static str {
        match self {
            Self::InvalidToken => "the registration token is invalid, already used or expired",
            Self::UnknownAgent => {
                "this agent is not registered with the cloud (it may have been removed)"
            }
            Self::BadSignature => "the agent's signature did not verify",
            Self::Revoked => "an administrator revoked this agent",
            Self::Internal => "the cloud could not complete the handshake",
        }
    }
}

#[derive(Serialize)]
struct OutgoingEnvelope<'a, T> {
    v: u16,
    msg: &'a T,
}

pub fn encode<T: Serialize>(message: &T) -> Result<String, ProtoError> {
    serde_json::to_string(&OutgoingEnvelope {
        v: PROTOCOL_VERSION,
        msg: message,
    })
    .map_err(|error| ProtoError::MalformedFrame(describe_json_error(&error)))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::FrameTooLarge {
            size: bytes.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    let mut document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|error| ProtoError::MalformedFrame(describe_json_error(&error)))?;
    let Some(envelope) = document.as_object_mut() else {
        return Err(ProtoError::MalformedFrame(
            "a frame must be a JSON object".into(),
        ));
    };
    let version = envelope
        .get("v")
        .ok_or_else(|| ProtoError::MalformedFrame("missing version field `v`".into()))?
        .as_u64()
        .ok_or_else(|| ProtoError::MalformedFrame("version field `v` must be a number".into()))?;
    if version != u64::from(PROTOCOL_VERSION) {
        return Err(ProtoError::UnsupportedVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    if envelope.len() != 2 {
        return Err(ProtoError::MalformedFrame(
            "a frame has exactly the fields `v` and `msg`".into(),
        ));
    }
    let message = envelope
        .remove("msg")
        .ok_or_else(|| ProtoError::MalformedFrame("missing message field `msg`".into()))?;
    serde_json::from_value(message)
        .map_err(|error| ProtoError::MalformedFrame(describe_json_error(&error)))
}

/// Describes a JSON error without quoting the input: serde's messages can include the offending
/// value, and the value may be a secret. Messages about field names are kept because they help and
/// name only our own schema.
pub fn describe_json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let message = error.to_string();
    let message = message.split(" at line").next().unwrap_or_default();
    match error.classify() {
        // "missing field `x`" names our own schema only.
        Category::Data if message.starts_with("missing field") => message.to_owned(),
        // "unknown field `x`, expected ..." quotes the peer's field name; keep only the schema part.
        Category::Data if message.starts_with("unknown field") => {
            match message.split_once(", expected") {
                Some((_, allowed)) => format!("unknown field; expected{allowed}"),
                None => "unknown field".into(),
            }
        }
        Category::Data => "a value has the wrong type or is not one of the allowed values".into(),
        Category::Syntax => format!(
            "invalid JSON at line {} column {}",
            error.line(),
            error.column()
        ),
        Category::Eof => "the JSON document ends too early".into(),
        Category::Io => "the JSON document could not be read".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RequestId;
    use crate::operation::{Operation, UserRef};

    #[test]
    fn frames_round_trip() {
        let request = CloudMessage::Request(Box::new(Request {
            request_id: RequestId::generate().unwrap(),
            deadline: UnixMillis(5),
            earlier_delivery: None,
            operation: Operation::Unlock {
                user: UserRef::logon_name("jdoe").unwrap(),
            },
        }));
        let text = encode(&request).unwrap();
        assert!(
            text.starts_with(r#"{"v":1,"msg":{"type":"request""#),
            "{text}"
        );
        assert_eq!(decode::<CloudMessage>(text.as_bytes()).unwrap(), request);
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let huge = vec![b' '; MAX_FRAME_BYTES + 1];
        assert!(matches!(
            decode::<AgentMessage>(&huge),
            Err(ProtoError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn unknown_versions_are_refused_with_a_clear_error() {
        let error = decode::<AgentMessage>(br#"{"v":2,"msg":{"type":"heartbeat","sent_at":1}}"#)
            .unwrap_err();
        assert_eq!(
            error,
            ProtoError::UnsupportedVersion {
                got: 2,
                supported: 1
            }
        );
        assert_eq!(
            error.to_string(),
            "unsupported protocol version 2; this side speaks version 1"
        );
    }

    #[test]
    fn malformed_frames_are_refused_without_echoing_their_content() {
        let cases: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"[1,2]",
            b"{\"msg\":{}}",
            b"{\"v\":\"one\",\"msg\":{}}",
            br#"{"v":1}"#,
            br#"{"v":1,"msg":{"type":"heartbeat","sent_at":1},"extra":"Secret-Value-1"}"#,
            br#"{"v":1,"msg":{"type":"teleport"}}"#,
            br#"{"v":1,"msg":{"type":"heartbeat","sent_at":"Secret-Value-1"}}"#,
            br#"{"v":1,"msg":{"type":"heartbeat","sent_at":1,"Secret-Value-1":2}}"#,
            br#"{"v":1,"msg":{"type":"heartbeat""#,
        ];
        for case in cases {
            let error = decode::<AgentMessage>(case).unwrap_err();
            assert!(matches!(error, ProtoError::MalformedFrame(_)), "{error:?}");
            assert!(!error.to_string().contains("Secret-Value-1"), "{error}");
        }
    }

    #[test]
    fn deeply_nested_frames_are_refused_without_overflowing_the_stack() {
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            decode::<AgentMessage>(nested.as_bytes()),
            Err(ProtoError::MalformedFrame(_))
        ));
    }
}
