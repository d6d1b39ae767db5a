//! Who a person at the portal is, and what they may use: the self-service settings, the one
//! account a typed name names, scope, whether the directory can be served now, and the methods
//! they registered (sealed at rest).

use writeback_proto::api::{
    DirectoryHealth, DirectoryUserDetail, HealthState, SelfServiceScope, SelfServiceSettings,
    VerificationMethod,
};
use writeback_proto::frame::LockoutPolicy;
use writeback_proto::ids::DirectoryName;
use writeback_proto::result::PolicyRequirements;
use writeback_proto::time::UnixMillis;
use writeback_store::{MethodOwner, RegisteredMethod, SecretOwner, StoreError};

use crate::service::audit::{Actor, AuditAction};
use crate::service::error::CloudError;
use crate::service::health;
use crate::service::self_service::settings::stored_settings;
use crate::service::self_service::state::PortalAccount;
use crate::service::state::AppState;

/// The self-service settings, the one read every portal page starts with.
pub async fn settings(state: &AppState) -> Result<SelfServiceSettings, StoreError> {
    stored_settings(&state.store).await
}

/// The methods the portal can offer under `settings`: the administrator's choice, less those
/// this deployment cannot serve (mail without an SMTP server, texts without an SMS provider).
pub fn offered_methods(
    state: &AppState,
    settings: &SelfServiceSettings,
) -> Vec<VerificationMethod> {
    settings
        .methods
        .iter()
        .copied()
        .filter(|method| match method {
            VerificationMethod::Email => state.mailer.is_some(),
            VerificationMethod::Sms => state.sms.is_some(),
            VerificationMethod::AuthenticatorApp => true,
            VerificationMethod::SecurityQuestions => {
                settings.security_questions.len() >= usize::from(settings.questions_asked)
            }
        })
        .collect()
}

/// The one synced user `name` (sAMAccountName, UPN or mail) names across every directory; `None`
/// when none does, or more than one. Groups are not read here: the same queries run whether or
/// not the name exists.
pub async fn find_account(
    state: &AppState,
    name: &str,
) -> Result<Option<PortalAccount>, StoreError> {
    let mut found = Vec::new();
    for directory in state.store.directories().await? {
        if let Some(user) = state.store.synced_user(&directory.name, name).await? {
            found.push((directory.name, user));
        }
    }
    if found.len() != 1 {
        return Ok(None);
    }
    let Some((directory, user)) = found.pop() else {
        return Ok(None);
    };
    Ok(Some(PortalAccount::of_user(&directory, &user.user)))
}

/// The account as the directory copy has it now.
pub async fn account_detail(
    state: &AppState,
    account: &PortalAccount,
) -> Result<Option<DirectoryUserDetail>, StoreError> {
    state
        .store
        .user_detail(&account.directory, &account.anchor.to_string())
        .await
}

pub fn in_scope(settings: &SelfServiceSettings, detail: &DirectoryUserDetail) -> bool {
    match &settings.scope {
        SelfServiceScope::Nobody => false,
        SelfServiceScope::Everyone => true,
        SelfServiceScope::Group { group } => detail
            .direct_groups
            .iter()
            .chain(&detail.nested_groups)
            .any(|member_of| member_of.name.eq_ignore_ascii_case(group)),
    }
}

pub fn owner(account: &PortalAccount) -> (String, String) {
    (account.directory.to_string(), account.anchor.to_string())
}

pub fn method_owner<'a>(owned: &'a (String, String)) -> MethodOwner<'a> {
    MethodOwner {
        directory: &owned.0,
        user_anchor: &owned.1,
    }
}

/// Whether the on-premises side can serve `directory` now, for answering at once instead of
/// waiting for a request to time out.
pub async fn directory_usable(
    state: &AppState,
    directory: &DirectoryName,
) -> Result<bool, StoreError> {
    let health: DirectoryHealth = health::of_directory(state, directory, UnixMillis::now()).await?;
    Ok(matches!(
        health.state,
        HealthState::Healthy | HealthState::Degraded | HealthState::AgentOutdated
    ))
}

/// The methods `account` registered, with what checks them unsealed; none for no account.
pub async fn registered_methods(
    state: &AppState,
    account: Option<&PortalAccount>,
) -> Result<Vec<RegisteredMethod>, CloudError> {
    let Some(account) = account else {
        return Ok(Vec::new());
    };
    let owned = owner(account);
    let mut methods = state
        .store
        .self_service_methods(method_owner(&owned))
        .await?;
    for method in &mut methods {
        if let Some(sealed) = method.secret.take() {
            let sealed_for = SecretOwner::Method {
                directory: &owned.0,
                user_anchor: &owned.1,
                method: &method.method,
            };
            method.secret = Some(state.secrets.open(sealed_for, &sealed)?.to_vec());
        }
    }
    Ok(methods)
}

/// The methods `account` registered as stored, what checks them still sealed: enough to know
/// which exist.
pub async fn stored_methods(
    state: &AppState,
    account: &PortalAccount,
) -> Result<Vec<RegisteredMethod>, StoreError> {
    let owned = owner(account);
    state.store.self_service_methods(method_owner(&owned)).await
}

/// Of the methods this deployment offers, those the person has registered: what can prove them.
pub fn usable_methods(
    offered: &[VerificationMethod],
    registered: &[RegisteredMethod],
) -> Vec<VerificationMethod> {
    offered
        .iter()
        .copied()
        .filter(|method| {
            registered
                .iter()
                .any(|registered| registered.method == method.as_str())
        })
        .collect()
}

/// Stores `method` for `account`, with what checks it sealed.
pub async fn save_method(
    state: &AppState,
    account: &PortalAccount,
    mut method: RegisteredMethod,
) -> Result<(), CloudError> {
    let owned = owner(account);
    if let Some(secret) = method.secret.take() {
        let secret = zeroize::Zeroizing::new(secret);
        let sealed_for = SecretOwner::Method {
            directory: &owned.0,
            user_anchor: &owned.1,
            method: &method.method,
        };
        method.secret = Some(state.secrets.seal(sealed_for, &secret)?);
    }
    state
        .store
        .register_self_service_method(method_owner(&owned), &method)
        .await?;
    Ok(())
}

/// The strictest lockout an agent of `directory` last reported.
pub fn reported_lockout(state: &AppState, directory: &DirectoryName) -> Option<LockoutPolicy> {
    state
        .relay
        .live_agents()
        .into_iter()
        .filter(|agent| agent.directory == *directory)
        .filter_map(|agent| agent.status.and_then(|status| status.lockout))
        .reduce(LockoutPolicy::strictest)
}

/// Whether any directory can be served now: what the portal tells everyone alike.
pub async fn any_directory_usable(state: &AppState) -> Result<bool, StoreError> {
    for health in health::of_every_directory(state, UnixMillis::now()).await? {
        if directory_usable(state, &health.directory).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The domain password policy an agent of `directory` last reported.
pub fn reported_policy(state: &AppState, directory: &DirectoryName) -> Option<PolicyRequirements> {
    state
        .relay
        .live_agents()
        .into_iter()
        .filter(|agent| agent.directory == *directory)
        .find_map(|agent| agent.status.and_then(|status| status.password_policy))
}

/// Appends one portal step to the audit log. The actor is the person at the portal, named by
/// the account they act as (or the name they typed).
pub async fn audit(
    state: &AppState,
    target: &str,
    directory: Option<&str>,
    action: AuditAction,
    result_code: &str,
    detail: Option<String>,
    origin: &Option<String>,
) -> Result<(), StoreError> {
    action
        .by(
            &Actor::self_service(target, origin.clone()),
            UnixMillis::now(),
        )
        .directory_named(directory)
        .target(target)
        .result(result_code)
        .maybe_detail(detail)
        .record(&state.store)
        .await
}
