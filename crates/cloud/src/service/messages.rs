//! Plain-language messages for result codes: what the person who asked should read. The portal
//! and the admin API both use these; codes stay stable, wording may improve.

use std::time::Duration;

use writeback_proto::PolicyReason;
use writeback_proto::operation::OperationKind;
use writeback_proto::result::{OutcomeWarning, PolicyRequirements, ResultCode};

/// What part of a success had no effect, in the words of the person who asked for it.
pub fn describe_warning(warning: OutcomeWarning) -> String {
    match warning {
        OutcomeWarning::MustChangeIgnored => "The password was set, but the user will not be asked to change it: \
             the account's password never expires, and the directory ignores \"must change at next sign-in\" for such accounts. \
             Clear \"Password never expires\" on the account to make it apply."
            .into(),
        OutcomeWarning::WasNotLocked => "The account was not locked out, so there was nothing to unlock.".into(),
    }
}

pub fn describe(kind: OperationKind, result: &ResultCode) -> String {
    match result {
        ResultCode::Success => match kind {
            OperationKind::ResetPassword => "The password was reset in the on-premises directory.".into(),
            OperationKind::ChangePassword => "The password was changed in the on-premises directory.".into(),
            OperationKind::Unlock => "The account was unlocked in the on-premises directory.".into(),
            OperationKind::VerifyPassword => "The password is correct.".into(),
        },
        ResultCode::PolicyViolation { reason, requirements } => describe_policy(*reason, requirements.as_ref()),
        ResultCode::UserNotFound => "No user with that name exists in the on-premises directory.".into(),
        ResultCode::AmbiguousUser => {
            "More than one user matches that name. Use the full sign-in name (user@domain) instead.".into()
        }
        ResultCode::AccountDisabled => {
            "The account is disabled in the on-premises directory. An administrator must enable it first.".into()
        }
        ResultCode::AccountLocked => {
            "The account is locked out. Unlock it (or wait for the lockout to end) and try again.".into()
        }
        ResultCode::WrongCurrentPassword => match kind {
            OperationKind::VerifyPassword => "The user name or password is not correct.".into(),
            _ => "The current password is not correct.".into(),
        },
        ResultCode::PasswordExpired => "The password has expired. Choose a new one to go on.".into(),
        ResultCode::MustChangePassword => {
            "The password must be changed before it can be used. Choose a new one to go on.".into()
        }
        ResultCode::PermissionDenied => "Writeback's service account is not allowed to change this user. \
             An administrator must delegate the Reset Password right on the user's organizational unit."
            .into(),
        ResultCode::ProtectedAccount => "This is a protected administrative account (adminCount = 1). \
             Writeback does not change protected accounts; use the directory's own tools."
            .into(),
        ResultCode::OutOfScope => {
            "This user is outside the organizational units that Writeback is allowed to manage.".into()
        }
        ResultCode::DirectoryUnavailable { .. } => "The on-premises directory did not answer. \
             Try again in a few minutes; if it keeps happening, contact your administrator."
            .into(),
        ResultCode::AgentUnavailable => "The on-premises service is not connected right now, so nothing was changed. \
             Try again in a few minutes or contact your helpdesk."
            .into(),
        ResultCode::Timeout => "The on-premises service did not answer in time. The change may or may not \
             have been applied: try signing in with the new password before trying again."
            .into(),
        ResultCode::OutcomeUnknown { .. } => "The on-premises service was lost while it worked on this change, \
             and the directory does not show that the new password is in place. \
             Try signing in with the new password before trying again."
            .into(),
        ResultCode::RequestIdReused => "This Idempotency-Key was already used for a different request, so nothing was done. \
             Send this request with a new key."
            .into(),
        ResultCode::Internal { .. } => {
            "Something went wrong inside Writeback and the outcome is unknown. Contact your administrator.".into()
        }
    }
}

fn describe_policy(reason: PolicyReason, requirements: Option<&PolicyRequirements>) -> String {
    match (reason, requirements) {
        (PolicyReason::TooShort, Some(requirements)) => format!(
            "The new password is too short: it must be at least {} characters long.",
            requirements.min_length
        ),
        (PolicyReason::TooShort, None) => "The new password is too short for the password policy.".into(),
        (PolicyReason::NotComplex, _) => "The new password is not complex enough. Use characters from at least \
             three of these groups: upper-case letters, lower-case letters, digits, symbols. It must not contain \
             the user name or parts of the user's full name."
            .into(),
        (PolicyReason::InHistory, Some(requirements)) if requirements.history_length > 0 => format!(
            "The new password was used recently. Choose one that differs from the last {} passwords.",
            requirements.history_length
        ),
        (PolicyReason::InHistory, _) => "The new password was used recently. Choose a password you have not used before.".into(),
        (PolicyReason::TooYoung, Some(requirements)) if requirements.min_age_seconds > 0 => format!(
            "The password was changed too recently. It can be changed again {} after the last change.",
            humanize(Duration::from_secs(requirements.min_age_seconds))
        ),
        (PolicyReason::TooYoung, _) => "The password was changed too recently to be changed again yet.".into(),
        (PolicyReason::Banned, _) => "The new password contains a word or pattern that is not allowed.".into(),
        (PolicyReason::Common, _) => {
            "This password appears in lists of breached or common passwords, which attackers try first. Choose another.".into()
        }
        (PolicyReason::Breached, _) => {
            "This password appears in lists of breached or common passwords: it was exposed in a breach. Choose another.".into()
        }
        (PolicyReason::TooWeak, _) => "The new password is too easy to guess. Make it longer, or use several unrelated words.".into(),
    }
}

fn humanize(duration: Duration) -> String {
    let hours = duration.as_secs() / 3600;
    match (hours / 24, hours % 24) {
        (0, 0) => format!("{} minutes", duration.as_secs().div_ceil(60)),
        (0, hours) => format!("{hours} hours"),
        (1, 0) => "1 day".into(),
        (days, 0) => format!("{days} days"),
        (days, hours) => format!("{days} days and {hours} hours"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_messages_name_the_requirement() {
        let requirements = PolicyRequirements {
            min_length: 12,
            complexity: true,
            history_length: 24,
            min_age_seconds: 86_400,
        };
        let violation = |reason| ResultCode::PolicyViolation {
            reason,
            requirements: Some(requirements.clone()),
        };
        let kind = OperationKind::ResetPassword;
        assert!(
            describe(kind, &violation(PolicyReason::TooShort)).contains("at least 12 characters")
        );
        assert!(describe(kind, &violation(PolicyReason::InHistory)).contains("last 24 passwords"));
        assert!(describe(kind, &violation(PolicyReason::TooYoung)).contains("1 day"));
    }

    #[test]
    fn every_result_has_a_distinct_message() {
        let all = writeback_proto::events::every_result_code();
        let messages: std::collections::HashSet<_> = all
            .iter()
            .map(|code| describe(OperationKind::ResetPassword, code))
            .collect();
        assert_eq!(messages.len(), all.len());
    }
}
