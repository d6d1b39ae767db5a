//! The fixed set of operations the cloud may ask an agent for. There is deliberately no way to
//! express arbitrary LDAP: an agent is a guarded executor, not a directory proxy.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtoError;
use crate::ids::RequestId;
use crate::result::ResultCode;
use crate::sync::ObjectAnchor;
use crate::time::UnixMillis;

/// Longest user name accepted: longer than any sAMAccountName (20) or practical UPN.
pub const MAX_USER_NAME_CHARS: usize = 256;

/// How the cloud names the user. A synced user is addressed by anchor, which the agent resolves
/// to the user's current DN, so a rename or move since the last sync cannot misdirect a write. A
/// user the cloud has not synced yet is addressed by logon name (sAMAccountName or
/// userPrincipalName).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserRef {
    Anchor(ObjectAnchor),
    LogonName(String),
}

impl UserRef {
    pub fn logon_name(name: &str) -> Result<Self, ProtoError> {
        let length = name.chars().count();
        if length == 0 || length > MAX_USER_NAME_CHARS {
            return Err(ProtoError::InvalidValue {
                what: "user name",
                problem: format!("must be 1 to {MAX_USER_NAME_CHARS} characters"),
            });
        }
        if name.chars().any(char::is_control) {
            return Err(ProtoError::InvalidValue {
                what: "user name",
                problem: "must not contain control characters".into(),
            });
        }
        Ok(Self::LogonName(name.to_owned()))
    }

    /// The text bound into a sealed password's associated data.
    pub fn anchor(&self) -> String {
        match self {
            Self::Anchor(anchor) => format!("object_guid:{anchor}"),
            Self::LogonName(name) => format!("logon_name:{name}"),
        }
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anchor(anchor) => write!(formatter, "{anchor}"),
            Self::LogonName(name) => formatter.write_str(name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    ResetPassword,
    ChangePassword,
    Unlock,
    VerifyPassword,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResetPassword => "reset_password",
            Self::ChangePassword => "change_password",
            Self::Unlock => "unlock",
            Self::VerifyPassword => "verify_password",
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Set a new password without knowing the old one; optionally require a change at next
    /// sign-in and clear a lockout, all in one directory modify.
    ResetPassword {
        user: UserRef,
        new_password: SealedSecret,
        must_change: bool,
        unlock: bool,
    },
    /// Replace `current_password` by `new_password`; the directory verifies the current one and
    /// enforces history and minimum age.
    ChangePassword {
        user: UserRef,
        current_password: SealedSecret,
        new_password: SealedSecret,
    },
    /// Clear a lockout and touch nothing else.
    Unlock { user: UserRef },
    /// Pass-through sign-in: the agent binds to the directory as the user, so the DC itself
    /// checks the password and says whether it has expired or must be changed. Nothing is written.
    VerifyPassword {
        user: UserRef,
        password: SealedSecret,
    },
}

impl Operation {
    pub fn kind(&self) -> OperationKind {
        match self {
            Self::ResetPassword { .. } => OperationKind::ResetPassword,
            Self::ChangePassword { .. } => OperationKind::ChangePassword,
            Self::Unlock { .. } => OperationKind::Unlock,
            Self::VerifyPassword { .. } => OperationKind::VerifyPassword,
        }
    }

    pub fn user(&self) -> &UserRef {
        match self {
            Self::ResetPassword { user, .. }
            | Self::ChangePassword { user, .. }
            | Self::Unlock { user }
            | Self::VerifyPassword { user, .. } => user,
        }
    }

    /// What identifies this operation apart from its sealed secrets, so that a repeated request
    /// id can be checked to carry the same operation. Secrets are excluded on purpose: a resend
    /// is sealed afresh and its ciphertext differs.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.kind(), self.user(), self.reset_options())
    }

    /// The fingerprint this operation has when it names its user by `anchor`: a retry the cloud
    /// sends by anchor, because the user was synced after a first attempt that named them by
    /// logon name, is the same request when the name led to that anchor.
    pub fn fingerprint_by_anchor(&self, anchor: ObjectAnchor) -> String {
        fingerprint(self.kind(), &UserRef::Anchor(anchor), self.reset_options())
    }

    fn reset_options(&self) -> Option<(bool, bool)> {
        match self {
            Self::ResetPassword {
                must_change,
                unlock,
                ..
            } => Some((*must_change, *unlock)),
            _ => None,
        }
    }
}

/// An operation's fingerprint from its parts, the same for an [`Operation`] and for the intent it
/// was sealed from.
pub(crate) fn fingerprint(
    kind: OperationKind,
    user: &UserRef,
    reset_options: Option<(bool, bool)>,
) -> String {
    match reset_options {
        Some((must_change, unlock)) => format!(
            "{kind}|{}|must_change={must_change}|unlock={unlock}",
            user.anchor()
        ),
        None => format!("{kind}|{}", user.anchor()),
    }
}

/// A password as it travels from cloud to agent: readable only with the agent's private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    pub key_id: String,
    #[serde(with = "crate::encoding::array")]
    pub encapsulated_key: [u8; 32],
    #[serde(with = "crate::encoding::bytes")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "SealedSecret(key {}, {} bytes)",
            self.key_id,
            self.ciphertext.len()
        )
    }
}

/// Where a user's password stands in the directory: how many times it has been written (the
/// version in the user's replication metadata for `unicodePwd`) and when it last was. Every reset
/// or change adds one to the version on the DC that takes it, so the stamp read before a write
/// tells whoever looks later whether that write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordStamp {
    pub version: u32,
    pub changed_at: UnixMillis,
}

/// What the cloud knows of an earlier delivery of the same request: it went to an agent whose
/// connection was lost before it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlierDelivery {
    /// The password's stamp that the earlier agent read just before it wrote, if it said it was
    /// about to write. `None`: it never got that far, so it wrote nothing.
    pub about_to_write: Option<PasswordStamp>,
}

/// One operation sent from the cloud to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub request_id: RequestId,
    /// After this instant the cloud has already answered "timeout"; the agent must not start.
    pub deadline: UnixMillis,
    pub operation: Operation,
    /// Set when this request was delivered before, on a connection that was lost before the
    /// answer came: the agent must find out from the directory whether it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier_delivery: Option<EarlierDelivery>,
}

/// What became of one operation: the directory's result, and what part of a success had no
/// effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub result: ResultCode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::result::OutcomeWarning>,
    /// Where the agent spent the time, when it did the work now (a repeat answered from the
    /// journal has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Box<AgentTrace>>,
}

impl From<ResultCode> for Verdict {
    fn from(result: ResultCode) -> Self {
        Self {
            result,
            warnings: Vec::new(),
            trace: None,
        }
    }
}

/// Where the agent spent an operation's time, and the DC it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTrace {
    /// The DC that answered, by host.
    pub domain_controller: String,
    /// Finding the user and the domain policy.
    pub lookup_us: u64,
    /// The one directory write.
    pub write_us: u64,
    /// All of it, the checks between included.
    pub total_us: u64,
    /// Set by the cloud node the agent is connected to, when the request entered another node
    /// and crossed the bus: from handing the request to the agent to its answer. The node the
    /// request entered counts the rest of its wait as the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayed_us: Option<u64>,
}

/// The agent's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub request_id: RequestId,
    pub result: ResultCode,
    /// What part of a success had no effect, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::result::OutcomeWarning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Box<AgentTrace>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_take_filter_metacharacters_literally_but_refuse_control_characters() {
        let user = UserRef::logon_name("*)(uid=*").unwrap();
        assert_eq!(user.anchor(), "logon_name:*)(uid=*");
        assert!(UserRef::logon_name("").is_err());
        assert!(UserRef::logon_name("a\0b").is_err());
        assert!(UserRef::logon_name(&"x".repeat(MAX_USER_NAME_CHARS + 1)).is_err());
    }
}
