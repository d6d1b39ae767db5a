//! The agent's event catalogue: every event id the agent logs, with what it means. Ids follow the
//! ranges of the incumbent's reset service (REFERENCE.md), so administrators who already filter on
//! those ids find the same meaning here; ids the incumbent does not have are added in its gaps.
//! An id is never reused for a different meaning.

use crate::result::ResultCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Information,
    Warning,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDefinition {
    pub id: u32,
    pub severity: Severity,
    pub meaning: &'static str,
}

const fn event(id: u32, severity: Severity, meaning: &'static str) -> EventDefinition {
    EventDefinition {
        id,
        severity,
        meaning,
    }
}

use Severity::{Error, Information, Warning};

pub const CATALOGUE: &[EventDefinition] = &[
    event(
        31010,
        Information,
        "A password reset, change or unlock was applied in the directory.",
    ),
    event(
        31015,
        Information,
        "The agent started, or connected to the cloud.",
    ),
    event(31016, Information, "The agent stopped."),
    event(
        31018,
        Information,
        "The agent registered and created its keys, or rotated its sealing key.",
    ),
    event(
        31020,
        Information,
        "`writeback-agent grant` added the writeback rights.",
    ),
    event(31022, Information, "The directory can be used again."),
    event(
        32000,
        Error,
        "An operation ended with an internal error, timed out, or its outcome is unknown.",
    ),
    event(32001, Warning, "The agent cannot reach the cloud."),
    event(32002, Warning, "The connection to the cloud ended."),
    event(
        32004,
        Error,
        "A sealed password did not open (wrong key or tampered).",
    ),
    event(
        32009,
        Error,
        "The cloud refused this agent: unknown, revoked, or a bad signature.",
    ),
    event(
        32014,
        Information,
        "The agent is about to reconnect to the cloud.",
    ),
    event(
        33001,
        Error,
        "The directory cannot be used: the DC is unreachable or refused the service account.",
    ),
    event(33002, Warning, "No user has the requested name."),
    event(33003, Warning, "More than one user has the requested name."),
    event(
        33004,
        Warning,
        "Refused: a missing right, a protected account, or a user outside the allowed OUs.",
    ),
    event(33005, Warning, "Refused: the account is disabled."),
    event(33006, Warning, "Refused: the account is locked out."),
    event(33007, Warning, "Refused: the current password is wrong."),
    event(
        33008,
        Warning,
        "Refused: the new password breaks the password policy.",
    ),
    event(33009, Error, "The directory configuration cannot be used."),
    event(
        33010,
        Warning,
        "Sign-in refused: the password is right but has expired or must be changed first.",
    ),
    event(
        33011,
        Warning,
        "Refused: the request id was already used for a different operation; nothing was done.",
    ),
    event(36001, Information, "A full directory sync started."),
    event(36002, Information, "A full directory sync completed."),
    event(
        36003,
        Information,
        "Directory changes were sent to the cloud.",
    ),
    event(36004, Warning, "A directory object could not be synced."),
    event(
        36005,
        Warning,
        "Directory sync could not read the directory and will retry.",
    ),
    event(
        36006,
        Information,
        "Directory changes are read with DirSync.",
    ),
    event(
        36007,
        Information,
        "Directory changes are polled by update sequence number (no DirSync).",
    ),
    event(
        36008,
        Information,
        "The anchors in scope were listed, and what the cloud holds beyond them removed.",
    ),
    event(
        36009,
        Information,
        "The domain controller notifies the agent of directory changes as they happen.",
    ),
    event(
        36010,
        Warning,
        "Change notification is not available or stopped; directory changes are found by the poll alone until it is back.",
    ),
];

pub fn definition(id: u32) -> Option<&'static EventDefinition> {
    CATALOGUE.iter().find(|definition| definition.id == id)
}

/// One example of every result code. The match makes a new code a compile error here until it is
/// listed, so the test below covers it.
pub fn every_result_code() -> Vec<ResultCode> {
    let examples = vec![
        ResultCode::Success,
        ResultCode::PolicyViolation {
            reason: crate::PolicyReason::TooShort,
            requirements: None,
        },
        ResultCode::UserNotFound,
        ResultCode::AmbiguousUser,
        ResultCode::AccountDisabled,
        ResultCode::AccountLocked,
        ResultCode::WrongCurrentPassword,
        ResultCode::PasswordExpired,
        ResultCode::MustChangePassword,
        ResultCode::PermissionDenied,
        ResultCode::ProtectedAccount,
        ResultCode::OutOfScope,
        ResultCode::DirectoryUnavailable {
            detail: String::new(),
        },
        ResultCode::AgentUnavailable,
        ResultCode::Timeout,
        ResultCode::OutcomeUnknown {
            detail: String::new(),
        },
        ResultCode::RequestIdReused,
        ResultCode::Internal {
            detail: String::new(),
        },
    ];
    for example in &examples {
        match example {
            ResultCode::Success
            | ResultCode::PolicyViolation { .. }
            | ResultCode::UserNotFound
            | ResultCode::AmbiguousUser
            | ResultCode::AccountDisabled
            | ResultCode::AccountLocked
            | ResultCode::WrongCurrentPassword
            | ResultCode::PasswordExpired
            | ResultCode::MustChangePassword
            | ResultCode::PermissionDenied
            | ResultCode::ProtectedAccount
            | ResultCode::OutOfScope
            | ResultCode::DirectoryUnavailable { .. }
            | ResultCode::AgentUnavailable
            | ResultCode::Timeout
            | ResultCode::OutcomeUnknown { .. }
            | ResultCode::RequestIdReused
            | ResultCode::Internal { .. } => {}
        }
    }
    examples
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_result_code_has_an_event_id_in_the_catalogue() {
        let codes = every_result_code();
        let names: HashSet<&str> = codes.iter().map(ResultCode::code).collect();
        assert_eq!(names.len(), codes.len(), "one example per code");
        for code in &codes {
            let id = code.event_id();
            let definition = definition(id)
                .unwrap_or_else(|| panic!("{} maps to {id}, which is not catalogued", code.code()));
            assert_eq!(
                definition.severity == Severity::Information,
                code.is_success(),
                "only success is informational: {}",
                code.code()
            );
        }
    }

    #[test]
    fn ids_are_unique_sorted_and_in_the_incumbents_ranges() {
        let mut previous = 0;
        for definition in CATALOGUE {
            assert!(
                definition.id > previous,
                "{} is out of order",
                definition.id
            );
            previous = definition.id;
            assert!(
                matches!(definition.id, 31000..=31999 | 32000..=32999 | 33000..=33999 | 36000..=36999),
                "{}",
                definition.id
            );
            assert!(definition.meaning.ends_with('.'));
        }
    }
}
