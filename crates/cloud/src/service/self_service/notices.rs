//! What the self-service side tells people: codes, and notices that a password or a person's
//! methods changed. Mail and texts go out in the background; nothing here fails the change it
//! reports, which is already done.

use writeback_proto::api::{DirectoryUserDetail, SelfServiceSettings, VerificationMethod};
use writeback_proto::ids::DirectoryName;
use writeback_proto::operation::UserRef;
use writeback_proto::time::UnixMillis;
use writeback_store::RegisteredMethod;

use crate::service::audit::{Actor, AuditAction};
use crate::service::directory::UserTarget;
use crate::service::error::CloudError;
use crate::service::notify::{Mail, TextMessage};
use crate::service::self_service::accounts::{account_detail, method_owner, owner, settings};
use crate::service::self_service::state::PortalAccount;
use crate::service::state::AppState;

/// Removes every self-service method of a synced user, as an administrator does for a person
/// who lost theirs: they register anew after signing in with their password. The addresses and
/// phones that were registered are told. Returns how many methods were removed.
pub async fn clear_methods(
    state: &AppState,
    detail: &DirectoryUserDetail,
    directory: &DirectoryName,
    administrator: &Actor,
) -> Result<u64, CloudError> {
    let account = PortalAccount::of_user(directory, &detail.user);
    let owned = owner(&account);
    let before = state
        .store
        .self_service_methods(method_owner(&owned))
        .await?;
    let removed = state
        .store
        .remove_all_self_service_methods(method_owner(&owned))
        .await?;
    AuditAction::ClearSelfServiceMethods
        .by(administrator, UnixMillis::now())
        .directory(directory)
        .target(account.audit_name())
        .detail(format!("{removed} methods removed"))
        .record(&state.store)
        .await?;
    if removed > 0 {
        notify_method_change(
            state,
            &account,
            &before,
            "every method was removed by an administrator",
            &administrator.origin,
        );
    }
    Ok(removed)
}

/// After an administrator reset `name`'s password: every administrator is told, and so is the
/// user, as the self-service policy says. Mail goes out in the background; nothing here fails
/// the reset, which is already done.
pub async fn notify_admin_reset(state: &AppState, administrator: &str, target: &UserTarget) {
    let (directory, name, user) = (&target.directory, &target.name, &target.user);
    let Some(mailer) = &state.mailer else { return };
    let Ok(settings) = settings(state).await else {
        return;
    };
    let key = match user {
        UserRef::Anchor(anchor) => anchor.to_string(),
        UserRef::LogonName(logon_name) => logon_name.clone(),
    };
    let detail = state
        .store
        .user_detail(directory, &key)
        .await
        .ok()
        .flatten();
    if settings.notify_admins_on_admin_reset {
        let administrators = state.store.administrator_emails().await.unwrap_or_default();
        for address in administrators {
            mailer.send_later(Mail {
                to: address,
                subject: format!("Password reset by an administrator: {directory}\\{name}"),
                body: format!(
                    "{administrator} reset the password of {name} in {directory}.\n\nEvery administrator gets this notice. If the reset was not expected, review the audit log.\n"
                ),
            });
        }
    }
    if let Some(detail) = detail {
        let account = PortalAccount::of_user(directory, &detail.user);
        notify_user(state, &settings, &account, "reset by an administrator").await;
    }
}

/// Tells every address and phone in `methods` that the methods changed, when and from where, so
/// that a stolen password cannot quietly become a lasting way in.
pub fn notify_method_change(
    state: &AppState,
    account: &PortalAccount,
    methods: &[RegisteredMethod],
    change: &str,
    origin: &Option<String>,
) {
    let at = humantime::format_rfc3339_seconds(UnixMillis::now().to_system_time())
        .to_string()
        .replace('T', " ")
        .replace('Z', "");
    let from = origin.as_deref().unwrap_or("an unknown address");
    let text = format!(
        "The self-service methods of your account {} changed: {change}, at {at} UTC, from {from}. If this was not you, contact your helpdesk at once.",
        account.sam_account_name
    );
    let mut told = std::collections::BTreeSet::new();
    for method in methods {
        let Some(kind) = VerificationMethod::from_name(&method.method) else {
            continue;
        };
        let Some(destination) = method.value.clone() else {
            continue;
        };
        if matches!(kind, VerificationMethod::Email | VerificationMethod::Sms)
            && told.insert((kind, destination.clone()))
        {
            send_code(
                state,
                kind,
                destination,
                "Your self-service methods changed",
                text.clone(),
            );
        }
    }
}

/// Hands a one-time code to the mail server (with `subject`) or the SMS provider, on a task of
/// its own. `false` when this deployment has no way to send it.
pub fn send_code(
    state: &AppState,
    method: VerificationMethod,
    destination: String,
    subject: &str,
    text: String,
) -> bool {
    match (method, &state.mailer, &state.sms) {
        (VerificationMethod::Email, Some(mailer), _) => {
            mailer.send_later(Mail {
                to: destination,
                subject: subject.into(),
                body: format!("{text}\n"),
            });
            true
        }
        (VerificationMethod::Sms, _, Some(sms)) => {
            sms.send_later(TextMessage {
                to: destination,
                body: text,
            });
            true
        }
        _ => false,
    }
}

/// Mails the user that their password changed, when the policy says so and an address is known:
/// their registered one, or else the directory's `mail`.
pub async fn notify_user(
    state: &AppState,
    settings: &SelfServiceSettings,
    account: &PortalAccount,
    how: &str,
) {
    let Some(mailer) = &state.mailer else { return };
    if !settings.notify_user_on_reset {
        return;
    }
    let owned = owner(account);
    let registered = state
        .store
        .self_service_methods(method_owner(&owned))
        .await
        .ok()
        .unwrap_or_default();
    let address = registered
        .into_iter()
        .find(|method| method.method == VerificationMethod::Email.as_str())
        .and_then(|method| method.value);
    let address = match address {
        Some(address) => Some(address),
        None => account_detail(state, account)
            .await
            .ok()
            .flatten()
            .and_then(|detail| detail.user.mail),
    };
    let Some(address) = address else { return };
    mailer.send_later(Mail {
        to: address,
        subject: "Your password was changed".into(),
        body: format!(
            "The password of your account {} was {how}.\n\nIf this was not you, contact your helpdesk at once.\n",
            account.sam_account_name
        ),
    });
}
