//! The self-service portal for end users, under `/portal`: forgot password, unlock, sign-in with
//! the directory password (checked by the agent), change password, and registration of the
//! methods that prove who they are. Pages are server-rendered and work without JavaScript; one
//! script (`portal.js`) only ticks the new-password checklist while the user types.
//!
//! Nothing a page says, nor how long it takes, tells whether an account exists: every name gets
//! the same pages, and the reasons a person cannot go on are shown only once they have proven who
//! they are (after a verification, or a sign-in with their password).

// Helpers return the page to show as their error, which is what the handler sends anyway.
#![allow(clippy::result_large_err)]

mod account;
mod checks;
mod pages;
mod reset;
mod state;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use writeback_proto::api::{
    DirectoryHealth, HealthState, SelfServiceScope, SelfServiceSettings, VerificationMethod,
};
use writeback_proto::frame::LockoutPolicy;
use writeback_proto::result::PolicyRequirements;
use writeback_proto::time::UnixMillis;
use writeback_store::{
    AuditEvent, MethodOwner, RegisteredMethod, Reservation, SecretOwner, StoreError,
};

use state::PortalAccount;
pub use state::PortalState;

use crate::api::ApiError;
use crate::browser_form::{set_security_headers, static_asset};
use crate::limits::{Exhausted, Guarded, Limits};
use crate::{AppState, CloudError};
use pages::MessagePage;

/// Scripts, styles and images only from here, forms only to here, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'none'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const STYLESHEET: &str = include_str!("../../static/portal.css");
const SCRIPT: &str = include_str!("../../static/portal.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal", get(reset::home))
        .route("/portal/static/portal.css", get(stylesheet))
        .route("/portal/static/portal.js", get(script))
        .route(
            "/portal/identify",
            get(reset::show_identify).post(reset::identify),
        )
        .route("/portal/verify", get(reset::show_methods))
        .route("/portal/verify/start", post(reset::start_method))
        .route(
            "/portal/verify/proof",
            get(reset::show_proof).post(reset::check_proof),
        )
        .route(
            "/portal/new-password",
            get(reset::show_new_password).post(reset::set_new_password),
        )
        .route("/portal/unlock", post(reset::unlock))
        .route(
            "/portal/sign-in",
            get(account::show_sign_in).post(account::sign_in),
        )
        .route("/portal/sign-out", post(account::sign_out))
        .route("/portal/account", get(account::show_account))
        .route("/portal/account/confirm", post(account::confirm_methods))
        .route(
            "/portal/account/confirm-identity",
            get(account::show_step_up).post(account::start_step_up),
        )
        .route(
            "/portal/account/confirm-identity/proof",
            post(account::check_step_up),
        )
        .route("/portal/account/remove", post(account::remove_method))
        .route("/portal/account/email", post(account::register_email))
        .route("/portal/account/phone", post(account::register_phone))
        .route("/portal/account/code", post(account::confirm_code))
        .route(
            "/portal/account/authenticator",
            get(account::show_authenticator).post(account::confirm_authenticator),
        )
        .route(
            "/portal/account/questions",
            get(account::show_questions).post(account::register_questions),
        )
        .route(
            "/portal/change",
            get(account::show_change).post(account::change_password),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// Every portal route no handler claims: a portal 404 with the same headers.
pub async fn not_found() -> Response {
    security_headers(
        MessagePage::new("Page not found", "There is no such page.")
            .with_link("/portal", "Start again")
            .render(StatusCode::NOT_FOUND),
    )
    .await
}

/// A refused form, in the portal's own page.
pub fn refused(status: StatusCode, title: &str, message: &str) -> Response {
    MessagePage::new(title, message)
        .with_link("/portal", "Start again")
        .render(status)
}

async fn security_headers(mut response: Response) -> Response {
    set_security_headers(&mut response, CONTENT_SECURITY_POLICY);
    response
}

async fn stylesheet() -> Response {
    static_asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    static_asset("text/javascript; charset=utf-8", SCRIPT)
}

/// An internal failure as a page; the detail goes to the log only.
fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "a portal page failed");
    MessagePage::new(
        "Something went wrong",
        "Something went wrong inside Writeback. Nothing was changed. Try again in a few minutes.",
    )
    .with_link("/portal", "Start again")
    .render(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<ApiError> for MessagePage {
    fn from(error: ApiError) -> Self {
        MessagePage::new("That did not work", &error.message)
    }
}

/// The self-service settings, the one read every portal page starts with.
async fn settings(state: &AppState) -> Result<SelfServiceSettings, StoreError> {
    crate::api::self_service::settings(&state.store).await
}

/// The methods the portal can offer under `settings`: the administrator's choice, less those
/// this deployment cannot serve (mail without an SMTP server, texts without an SMS provider).
fn offered_methods(state: &AppState, settings: &SelfServiceSettings) -> Vec<VerificationMethod> {
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
async fn find_account(state: &AppState, name: &str) -> Result<Option<PortalAccount>, StoreError> {
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
    Ok(Some(PortalAccount {
        directory,
        anchor: user.user.anchor,
        sam_account_name: user.user.sam_account_name,
        display_name: user.user.display_name,
    }))
}

/// The account as the directory copy has it now.
async fn account_detail(
    state: &AppState,
    account: &PortalAccount,
) -> Result<Option<writeback_proto::api::DirectoryUserDetail>, StoreError> {
    state
        .store
        .user_detail(&account.directory, &account.anchor.to_string())
        .await
}

fn in_scope(
    settings: &SelfServiceSettings,
    detail: &writeback_proto::api::DirectoryUserDetail,
) -> bool {
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

fn owner(account: &PortalAccount) -> (String, String) {
    (account.directory.to_string(), account.anchor.to_string())
}

fn method_owner<'a>(owned: &'a (String, String)) -> MethodOwner<'a> {
    MethodOwner {
        directory: &owned.0,
        user_anchor: &owned.1,
    }
}

/// Whether the on-premises side can serve `directory` now, for answering at once instead of
/// waiting for a request to time out.
async fn directory_usable(
    state: &AppState,
    directory: &writeback_proto::ids::DirectoryName,
) -> Result<bool, StoreError> {
    let health: DirectoryHealth =
        crate::health::of_directory(state, directory, UnixMillis::now()).await?;
    Ok(matches!(
        health.state,
        HealthState::Healthy | HealthState::Degraded | HealthState::AgentOutdated
    ))
}

/// The limits of this cloud's configuration.
fn limits(state: &AppState) -> Limits<'_> {
    Limits::new(&state.store, &state.config.limits)
}

/// Why an attempt may not go ahead, as the page to show.
#[derive(Debug)]
enum Refused {
    /// The account used up its allowance and is now blocked.
    Blocked(Response),
    /// This address, or everyone together, used up theirs: wait a while.
    Later(Response),
    Broken(Response),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Blocked(response) | Self::Later(response) | Self::Broken(response) => response,
        }
    }
}

/// Holds one attempt of `guarded` for `name`, from the client's address, before the work it
/// guards. An account that has used up its allowance is blocked (and audited as such).
async fn reserve(
    state: &AppState,
    guarded: Guarded,
    name: &str,
    directory: Option<&str>,
    origin: &Option<String>,
    lockout: Option<LockoutPolicy>,
    helpdesk: &str,
) -> Result<Reservation, Refused> {
    let reserved = limits(state)
        .reserve(guarded, name, origin.as_deref(), lockout, UnixMillis::now())
        .await;
    match reserved {
        Ok(Ok(reservation)) => Ok(reservation),
        Ok(Err(Exhausted::Account)) => Err(Refused::Blocked(
            reset::block(state, name, directory, origin, helpdesk).await,
        )),
        Ok(Err(Exhausted::Address | Exhausted::Everyone)) => {
            Err(Refused::Later(reset::try_later(helpdesk)))
        }
        Err(error) => Err(Refused::Broken(internal(error))),
    }
}

/// The methods `account` registered, with what checks them unsealed; none for no account.
async fn registered_methods(
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
async fn stored_methods(
    state: &AppState,
    account: &PortalAccount,
) -> Result<Vec<RegisteredMethod>, StoreError> {
    let owned = owner(account);
    state.store.self_service_methods(method_owner(&owned)).await
}

/// Of the methods this deployment offers, those the person has registered: what can prove them.
fn usable_methods(
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
async fn save_method(
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
fn reported_lockout(
    state: &AppState,
    directory: &writeback_proto::ids::DirectoryName,
) -> Option<LockoutPolicy> {
    state
        .relay
        .live_agents()
        .into_iter()
        .filter(|agent| agent.directory == *directory)
        .filter_map(|agent| agent.status.and_then(|status| status.lockout))
        .reduce(LockoutPolicy::strictest)
}

/// Whether any directory can be served now: what the portal tells everyone alike.
async fn any_directory_usable(state: &AppState) -> Result<bool, StoreError> {
    for health in crate::health::of_every_directory(state, UnixMillis::now()).await? {
        if directory_usable(state, &health.directory).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The domain password policy an agent of `directory` last reported.
fn reported_policy(
    state: &AppState,
    directory: &writeback_proto::ids::DirectoryName,
) -> Option<PolicyRequirements> {
    state
        .relay
        .live_agents()
        .into_iter()
        .filter(|agent| agent.directory == *directory)
        .find_map(|agent| agent.status.and_then(|status| status.password_policy))
}

/// Appends one portal step to the audit log. The actor is the person at the portal, named by
/// the account they act as (or the name they typed).
async fn audit(
    state: &AppState,
    target: &str,
    directory: Option<&str>,
    action: &str,
    result_code: &str,
    detail: Option<String>,
    origin: &Option<String>,
) -> Result<(), StoreError> {
    state
        .store
        .append_audit(&AuditEvent {
            at: UnixMillis::now(),
            actor: format!("self-service: {target}"),
            action: action.into(),
            directory: directory.map(str::to_owned),
            target: Some(target.into()),
            request_id: None,
            result_code: result_code.into(),
            detail,
            origin: origin.clone(),
        })
        .await
}

/// Removes every self-service method of a synced user, as an administrator does for a person
/// who lost theirs: they register anew after signing in with their password. The addresses and
/// phones that were registered are told. Returns how many methods were removed.
pub(crate) async fn clear_methods(
    state: &AppState,
    detail: &writeback_proto::api::DirectoryUserDetail,
    directory: &writeback_proto::ids::DirectoryName,
    administrator: &str,
    origin: &Option<String>,
) -> Result<u64, CloudError> {
    let account = PortalAccount {
        directory: directory.clone(),
        anchor: detail.user.anchor,
        sam_account_name: detail.user.sam_account_name.clone(),
        display_name: detail.user.display_name.clone(),
    };
    let owned = owner(&account);
    let before = state
        .store
        .self_service_methods(method_owner(&owned))
        .await?;
    let removed = state
        .store
        .remove_all_self_service_methods(method_owner(&owned))
        .await?;
    state
        .store
        .append_audit(&AuditEvent {
            at: UnixMillis::now(),
            actor: administrator.into(),
            action: "clear_self_service_methods".into(),
            directory: Some(directory.to_string()),
            target: Some(account.audit_name()),
            request_id: None,
            result_code: "success".into(),
            detail: Some(format!("{removed} methods removed")),
            origin: origin.clone(),
        })
        .await?;
    if removed > 0 {
        account::notify_method_change(
            state,
            &account,
            &before,
            "every method was removed by an administrator",
            origin,
        );
    }
    Ok(removed)
}

/// After an administrator reset `name`'s password: every administrator is told, and so is the
/// user, as the self-service policy says. Mail goes out in the background; nothing here fails
/// the reset, which is already done.
pub(crate) async fn notify_admin_reset(
    state: &AppState,
    administrator: &str,
    directory: &writeback_proto::ids::DirectoryName,
    name: &str,
    user: &writeback_proto::operation::UserRef,
) {
    let Some(mailer) = &state.mailer else { return };
    let Ok(settings) = settings(state).await else {
        return;
    };
    let key = match user {
        writeback_proto::operation::UserRef::Anchor(anchor) => anchor.to_string(),
        writeback_proto::operation::UserRef::LogonName(logon_name) => logon_name.clone(),
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
            mailer.send_later(crate::notify::Mail {
                to: address,
                subject: format!("Password reset by an administrator: {directory}\\{name}"),
                body: format!(
                    "{administrator} reset the password of {name} in {directory}.\n\nEvery administrator gets this notice. If the reset was not expected, review the audit log.\n"
                ),
            });
        }
    }
    if let Some(detail) = detail {
        let account = PortalAccount {
            directory: directory.clone(),
            anchor: detail.user.anchor,
            sam_account_name: detail.user.sam_account_name.clone(),
            display_name: detail.user.display_name.clone(),
        };
        account::notify_user(state, &settings, &account, "reset by an administrator").await;
    }
}
