//! The one stable result-code set. The agent produces it, the relay carries it, the admin API and
//! portal map it to plain language, and the audit log stores it. Codes are never renamed; new ones
//! are only added. Modelled on the event catalogue of the product we stand in for (REFERENCE.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use writeback_policy::{PasswordPolicy, PolicyReason};

/// The requirements a refused password failed against, so a message can say "at least 12
/// characters" instead of "does not meet policy".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequirements {
    pub min_length: u32,
    pub complexity: bool,
    pub history_length: u32,
    pub min_age_seconds: u64,
}

impl From<&PasswordPolicy> for PolicyRequirements {
    fn from(policy: &PasswordPolicy) -> Self {
        Self {
            min_length: policy.min_length,
            complexity: policy.complexity,
            history_length: policy.history_length,
            min_age_seconds: policy.min_age.as_secs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "code", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResultCode {
    Success,
    PolicyViolation {
        reason: PolicyReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requirements: Option<PolicyRequirements>,
    },
    UserNotFound,
    AmbiguousUser,
    AccountDisabled,
    AccountLocked,
    WrongCurrentPassword,
    /// The password was right but has expired (bind `data 532`).
    PasswordExpired,
    /// The password was right but must be changed before it can be used (bind `data 773`).
    MustChangePassword,
    PermissionDenied,
    ProtectedAccount,
    OutOfScope,
    /// The agent could not reach or use the domain controller. `detail` is for administrators and
    /// never holds a secret.
    DirectoryUnavailable {
        detail: String,
    },
    AgentUnavailable,
    Timeout,
    /// The agent that had the request was lost before it answered, and the directory does not
    /// show that this request's password is the one in place. `detail` says what it does show.
    OutcomeUnknown {
        detail: String,
    },
    /// The request id (an API client's Idempotency-Key) was already used for a different
    /// operation; nothing was done.
    RequestIdReused,
    Internal {
        detail: String,
    },
}

impl ResultCode {
    /// The stable code name, as it appears on the wire and in the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::PolicyViolation { .. } => "policy_violation",
            Self::UserNotFound => "user_not_found",
            Self::AmbiguousUser => "ambiguous_user",
            Self::AccountDisabled => "account_disabled",
            Self::AccountLocked => "account_locked",
            Self::WrongCurrentPassword => "wrong_current_password",
            Self::PasswordExpired => "password_expired",
            Self::MustChangePassword => "must_change_password",
            Self::PermissionDenied => "permission_denied",
            Self::ProtectedAccount => "protected_account",
            Self::OutOfScope => "out_of_scope",
            Self::DirectoryUnavailable { .. } => "directory_unavailable",
            Self::AgentUnavailable => "agent_unavailable",
            Self::Timeout => "timeout",
            Self::OutcomeUnknown { .. } => "outcome_unknown",
            Self::RequestIdReused => "request_id_reused",
            Self::Internal { .. } => "internal",
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success)
    }

    /// The event id of the incumbent's catalogue closest to this outcome, for event logs that
    /// administrators already filter on.
    pub fn event_id(&self) -> u32 {
        match self {
            Self::Success => 31010,
            Self::PolicyViolation { .. } => 33008,
            Self::UserNotFound => 33002,
            Self::AmbiguousUser => 33003,
            Self::AccountDisabled => 33005,
            Self::AccountLocked => 33006,
            Self::WrongCurrentPassword => 33007,
            Self::PasswordExpired | Self::MustChangePassword => 33010,
            Self::PermissionDenied | Self::ProtectedAccount | Self::OutOfScope => 33004,
            Self::DirectoryUnavailable { .. } => 33001,
            Self::AgentUnavailable => 32001,
            Self::Timeout | Self::OutcomeUnknown { .. } => 32000,
            Self::RequestIdReused => 33011,
            Self::Internal { .. } => 32000,
        }
    }
}

/// A part of a successful operation that had no effect in the directory, or that the user will
/// not notice, told beside the success so that nobody believes more was done than was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeWarning {
    /// "Must change at next sign-in" was asked, but the account's password never expires
    /// (`DONT_EXPIRE_PASSWORD`), so the DC never asks the user to change it.
    MustChangeIgnored,
    /// An unlock, of an account that was not locked out.
    WasNotLocked,
}

impl OutcomeWarning {
    /// The stable name, as on the wire and in the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Self::MustChangeIgnored => "must_change_ignored",
            Self::WasNotLocked => "was_not_locked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_stable() {
        let violation = ResultCode::PolicyViolation {
            reason: PolicyReason::TooShort,
            requirements: None,
        };
        assert_eq!(
            serde_json::to_string(&violation).unwrap(),
            r#"{"code":"policy_violation","reason":"too_short"}"#
        );
        assert_eq!(
            serde_json::to_string(&ResultCode::AgentUnavailable).unwrap(),
            r#"{"code":"agent_unavailable"}"#
        );
        let parsed: ResultCode = serde_json::from_str(r#"{"code":"out_of_scope"}"#).unwrap();
        assert_eq!(parsed, ResultCode::OutOfScope);
    }

    #[test]
    fn code_names_match_the_wire_tags() {
        let all = crate::events::every_result_code();
        for code in all {
            let value = serde_json::to_value(&code).unwrap();
            assert_eq!(value["code"], code.code());
        }
    }
}
