//! Signed-in self-service: sign-in with the directory password (checked by the agent, never
//! here), change password, and the registration of verification methods.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_proto::ids::RequestId;
use writeback_proto::operation::OperationKind;
use writeback_proto::result::ResultCode;
use writeback_proto::sealing::SecretField;
use writeback_proto::time::UnixMillis;
use writeback_store::RegisteredMethod;

use super::guard::{
    Refused, block, busy, internal, limits, reserve, self_service_off, service_unavailable,
    too_many_attempts,
};
use super::pages::{
    AccountPage, AuthenticatorPage, MessagePage, MethodChoice, NewPasswordPage, Notice,
    QuestionsPage, RegisteredRow, SignInPage, checklist, render,
};
use super::reset::{
    ProofAnswers, ProofOutcome, ProofSubject, ProofTarget, START_COOKIE, StoredQuestion,
    fresh_request_id, issue_challenge, judge_proof, method_label, normalize_identifier, proof_form,
    proof_page, refuse_before_sending, run, start_cookie, unless_usable, user_words,
    with_start_cookie,
};
use crate::service::audit::AuditAction;
use crate::service::auth::{new_token, token_hash};
use crate::service::limits::Guarded;
use crate::service::messages;
use crate::service::notify::is_mail_address;
use crate::service::self_service::accounts::{
    account_detail, any_directory_usable, audit, find_account, in_scope, method_owner,
    offered_methods, owner, reported_lockout, reported_policy, save_method, settings,
    stored_methods, usable_methods,
};
use crate::service::self_service::checks::{self, RESULT_INVALID, RESULT_SENT};
use crate::service::self_service::notices::{notify_method_change, notify_user, send_code};
use crate::service::self_service::state::{PendingRegistration, PortalAccount, PortalSession};
use crate::service::sms::normalize_phone_number;
use crate::service::state::AppState;
use crate::service::totp;
use crate::service::writeback::{Writeback, check_password};
use crate::web::browser_form::{BrowserForm, cookie, csrf_token, form_fields, set_cookie};
use crate::web::client::Origin;

pub const SESSION_COOKIE: &str = "__Host-writeback-portal";

/// A wrong password takes at least this long to answer, whether or not the account exists, so
/// the time taken does not tell (a real bind takes about a tenth of a second).
const SIGN_IN_FLOOR: std::time::Duration = std::time::Duration::from_millis(400);

fn signed_out() -> Response {
    Redirect::to("/portal/sign-in").into_response()
}

/// A signed-in user, from the session cookie.
#[derive(Debug)]
pub struct SessionContext {
    pub key: Vec<u8>,
    pub session: PortalSession,
    pub csrf: String,
}

impl SessionContext {
    fn from_cookie(state: &AppState, value: &str) -> Result<Self, Response> {
        let key = token_hash(value);
        let session = state
            .portal
            .session(&key, UnixMillis::now())
            .ok_or_else(signed_out)?;
        Ok(Self {
            key,
            session,
            csrf: csrf_token(value),
        })
    }
}

impl FromRequestParts<AppState> for SessionContext {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(signed_out)?;
        Self::from_cookie(state, &value)
    }
}

pub async fn show_sign_in(headers: HeaderMap) -> Response {
    let (value, new_cookie) = match start_cookie(&headers) {
        Ok(pair) => pair,
        Err(response) => return response,
    };
    let page = SignInPage {
        csrf: csrf_token(&value),
        account: String::new(),
        notice: None,
    };
    with_start_cookie(render(StatusCode::OK, &page), new_cookie)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInForm {
    csrf: String,
    account: String,
    password: SecretString,
}

form_fields!(crate::portal::pages::refused, START_COOKIE => SignInForm);

/// What every failed sign-in says, whatever the reason: a wrong password, an unknown name, an
/// account out of scope, locked or disabled. Only a right password that lets the person in ever
/// tells them it was right.
const NOT_SIGNED_IN: &str = "The user name or password is not correct.";

/// Sign-in with the directory password. Nothing reaches the directory unless self-service is on,
/// the name is a synced account in scope, and the account's attempts are within their limits
/// (below the directory's own lockout threshold): only then does the agent bind as the user.
/// Every refusal is the same page, sent no sooner than [`SIGN_IN_FLOOR`] after the request.
pub async fn sign_in(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<SignInForm>,
) -> Response {
    let started = tokio::time::Instant::now();
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    if settings.scope == SelfServiceScope::Nobody {
        return self_service_off(&settings.helpdesk);
    }
    let refused = |status: StatusCode| {
        render(
            status,
            &SignInPage {
                csrf: csrf_token(&form.cookie),
                account: form.fields.account.chars().take(256).collect(),
                notice: Some(Notice::bad(NOT_SIGNED_IN)),
            },
        )
    };
    let identifier = match normalize_identifier(&form.fields.account) {
        Ok(identifier) => identifier,
        Err(problem) => {
            return render(
                StatusCode::BAD_REQUEST,
                &SignInPage {
                    csrf: csrf_token(&form.cookie),
                    account: form.fields.account.chars().take(256).collect(),
                    notice: Some(Notice::bad(problem)),
                },
            );
        }
    };
    let outcome = attempt_sign_in(
        &state,
        &settings,
        &identifier,
        form.fields.password,
        &origin,
    )
    .await;
    let response = match outcome {
        SignInOutcome::Opened(response) => return response,
        SignInOutcome::Refused => refused(StatusCode::UNAUTHORIZED),
        SignInOutcome::Shown(response) => response,
    };
    tokio::time::sleep_until(started + SIGN_IN_FLOOR).await;
    response
}

/// What a sign-in attempt came to.
enum SignInOutcome {
    /// The password was right: a session, or the change page.
    Opened(Response),
    /// The one refusal page, whatever the reason.
    Refused,
    /// A page that says the same to every name: unavailable, blocked, wait.
    Shown(Response),
}

async fn attempt_sign_in(
    state: &AppState,
    settings: &SelfServiceSettings,
    identifier: &str,
    password: SecretString,
    origin: &Option<String>,
) -> SignInOutcome {
    let shown = SignInOutcome::Shown;
    // Unusable for everyone is said to everyone, before the name is looked up.
    match any_directory_usable(state).await {
        Ok(true) => {}
        Ok(false) => return shown(service_unavailable(&settings.helpdesk)),
        Err(error) => return shown(internal(error)),
    }
    let account = match find_account(state, identifier).await {
        Ok(found) => found,
        Err(error) => return shown(internal(error)),
    };
    let name = account
        .as_ref()
        .map_or_else(|| identifier.to_owned(), PortalAccount::audit_name);
    let now = UnixMillis::now();
    match limits(state).is_blocked(&name, now).await {
        Ok(true) => return shown(too_many_attempts(&settings.helpdesk)),
        Ok(false) => {}
        Err(error) => return shown(internal(error)),
    }
    let Some(account) = account else {
        return SignInOutcome::Refused;
    };
    // Scope and state from the synced copy: out of scope or disabled never reaches a bind.
    match account_detail(state, &account).await {
        Ok(Some(detail)) if in_scope(settings, &detail) && detail.user.enabled => {}
        Ok(_) => return SignInOutcome::Refused,
        Err(error) => return shown(internal(error)),
    }
    let directory = account.directory.to_string();
    let reservation = match reserve(
        state,
        Guarded::SignIn,
        &name,
        Some(&directory),
        origin,
        reported_lockout(state, &account.directory),
        &settings.helpdesk,
    )
    .await
    {
        Ok(reservation) => reservation,
        Err(refused) => return shown(refused.into_response()),
    };
    let Ok(request_id) = RequestId::generate() else {
        return shown(internal("no randomness for a request id"));
    };
    let verify = Writeback::VerifyPassword { password };
    let result = match run(state, &account, origin, request_id, verify).await {
        Ok(result) => result,
        Err(response) => return shown(response),
    };
    let must_change = match result {
        ResultCode::Success => false,
        ResultCode::PasswordExpired | ResultCode::MustChangePassword => true,
        ResultCode::AgentUnavailable
        | ResultCode::DirectoryUnavailable { .. }
        | ResultCode::Timeout => {
            if let Err(error) = limits(state).release(reservation).await {
                return shown(internal(error));
            }
            return shown(service_unavailable(&settings.helpdesk));
        }
        _ => {
            // Wrong, locked, disabled, protected and out-of-OU accounts all read the same; the
            // attempt stays counted.
            if let Err(error) = audit(
                state,
                &name,
                Some(&directory),
                AuditAction::SelfServiceVerify,
                RESULT_INVALID,
                Some("password".into()),
                origin,
            )
            .await
            {
                return shown(internal(error));
            }
            return match limits(state).used_up(Guarded::Proof, &name, now).await {
                Ok(true) => {
                    shown(block(state, &name, Some(&directory), origin, &settings.helpdesk).await)
                }
                Ok(false) => SignInOutcome::Refused,
                Err(error) => shown(internal(error)),
            };
        }
    };
    if let Err(error) = limits(state).release(reservation).await {
        return shown(internal(error));
    }
    let token = match new_token("wbu_") {
        Ok(token) => token,
        Err(error) => return shown(internal(error)),
    };
    state.portal.start_session(
        token_hash(token.expose_secret()),
        PortalSession {
            account,
            must_change,
            pending: None,
            step_up: None,
            proven_at: None,
            started_at: now,
        },
    );
    let target = if must_change {
        "/portal/change"
    } else {
        "/portal/account"
    };
    let mut response = Redirect::to(target).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            token.expose_secret(),
            state.portal.lifetime().as_secs(),
        ),
    );
    SignInOutcome::Opened(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainForm {
    csrf: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => PlainForm);

pub async fn sign_out(State(state): State<AppState>, form: BrowserForm<PlainForm>) -> Response {
    state.portal.end_session(&token_hash(&form.cookie));
    let mut response = MessagePage::new("You are signed out", "You can close this page.")
        .with_link("/portal", "Start again")
        .render(StatusCode::OK);
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    response
}

/// A session that may do more than change the password.
fn full_session(context: &SessionContext) -> Result<(), Response> {
    if context.session.must_change {
        return Err(Redirect::to("/portal/change").into_response());
    }
    Ok(())
}

fn method_detail(method: &RegisteredMethod) -> String {
    match method.value.as_deref() {
        Some(value) => value.to_owned(),
        None if method.method == VerificationMethod::SecurityQuestions.as_str() => {
            "Answers registered".into()
        }
        None => "Registered".into(),
    }
}

async fn account_page(
    state: &AppState,
    context: &SessionContext,
    notice: Option<Notice>,
) -> Result<AccountPage, Response> {
    let settings = settings(state).await.map_err(internal)?;
    let account = &context.session.account;
    let owned = owner(account);
    let registered = stored_methods(state, account).await.map_err(internal)?;
    let confirmed_at = state
        .store
        .self_service_confirmed_at(method_owner(&owned))
        .await
        .map_err(internal)?;
    let now = UnixMillis::now();
    let reconfirm = settings.reconfirm_days > 0
        && !registered.is_empty()
        && confirmed_at.is_none_or(|at| {
            now.duration_since(at).as_secs() >= u64::from(settings.reconfirm_days) * 86_400
        });
    let offered = offered_methods(state, &settings);
    let rows = registered
        .iter()
        .filter_map(|method| {
            VerificationMethod::from_name(&method.method).map(|kind| RegisteredRow {
                method: kind.as_str(),
                label: label(kind),
                detail: method_detail(method),
            })
        })
        .collect();
    let pending = |method: VerificationMethod| {
        context.session.pending.as_ref().and_then(|pending| {
            (pending.method == method)
                .then(|| pending.value.clone())
                .flatten()
        })
    };
    let may_change = context
        .session
        .may_change_methods(!registered.is_empty(), now);
    let proof_choices = if may_change {
        Vec::new()
    } else {
        usable_methods(&offered, &registered)
            .into_iter()
            .map(|method| MethodChoice {
                value: method.as_str(),
                label: method_label(method),
            })
            .collect()
    };
    Ok(AccountPage {
        csrf: context.csrf.clone(),
        name: account
            .display_name
            .clone()
            .unwrap_or_else(|| account.sam_account_name.clone()),
        registered: rows,
        required: usize::from(settings.methods_required),
        may_change,
        proof_choices,
        offer_email: offered.contains(&VerificationMethod::Email),
        offer_authenticator: offered.contains(&VerificationMethod::AuthenticatorApp),
        offer_questions: offered.contains(&VerificationMethod::SecurityQuestions),
        offer_phone: offered.contains(&VerificationMethod::Sms),
        pending_email: pending(VerificationMethod::Email),
        pending_phone: pending(VerificationMethod::Sms),
        reconfirm,
        notice,
    })
}

fn label(method: VerificationMethod) -> &'static str {
    match method {
        VerificationMethod::Email => "Email",
        VerificationMethod::AuthenticatorApp => "Authenticator app",
        VerificationMethod::SecurityQuestions => "Security questions",
        VerificationMethod::Sms => "Mobile phone",
    }
}

pub async fn show_account(State(state): State<AppState>, context: SessionContext) -> Response {
    if let Err(response) = full_session(&context) {
        return response;
    }
    match account_page(&state, &context, None).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

async fn account_with(
    state: &AppState,
    context: &SessionContext,
    status: StatusCode,
    notice: Notice,
) -> Response {
    match account_page(state, context, Some(notice)).await {
        Ok(page) => render(status, &page),
        Err(response) => response,
    }
}

fn session_from_form(state: &AppState, cookie_value: &str) -> Result<SessionContext, Response> {
    let context = SessionContext::from_cookie(state, cookie_value)?;
    full_session(&context)?;
    Ok(context)
}

/// A session that may change its methods now: none are registered yet, or one was proven in
/// the last few minutes. Otherwise the account page, asking for that proof first.
async fn changing_session(
    state: &AppState,
    cookie_value: &str,
) -> Result<SessionContext, Response> {
    let context = session_from_form(state, cookie_value)?;
    let has_methods = !stored_methods(state, &context.session.account)
        .await
        .map_err(internal)?
        .is_empty();
    if context
        .session
        .may_change_methods(has_methods, UnixMillis::now())
    {
        return Ok(context);
    }
    Err(account_with(
        state,
        &context,
        StatusCode::FORBIDDEN,
        Notice::bad(CONFIRM_FIRST),
    )
    .await)
}

const CONFIRM_FIRST: &str =
    "To add, replace or remove a method, first confirm it is you with one you already have.";

pub async fn confirm_methods(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<PlainForm>,
) -> Response {
    let context = match session_from_form(&state, &form.cookie) {
        Ok(context) => context,
        Err(response) => return response,
    };
    let account = &context.session.account;
    let owned = owner(account);
    if let Err(error) = state
        .store
        .confirm_self_service_methods(method_owner(&owned), UnixMillis::now())
        .await
    {
        return internal(error);
    }
    if let Err(error) = audit_account(
        &state,
        account,
        AuditAction::SelfServiceConfirm,
        "success",
        None,
        &origin,
    )
    .await
    {
        return internal(error);
    }
    account_with(
        &state,
        &context,
        StatusCode::OK,
        Notice::good("Thank you. Your methods are confirmed."),
    )
    .await
}

async fn audit_account(
    state: &AppState,
    account: &PortalAccount,
    action: AuditAction,
    result: &str,
    detail: Option<String>,
    origin: &Option<String>,
) -> Result<(), writeback_store::StoreError> {
    audit(
        state,
        &account.audit_name(),
        Some(account.directory.as_str()),
        action,
        result,
        detail,
        origin,
    )
    .await
}

/// The proof of an existing method a signed-in person gives before changing their methods.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpMethodForm {
    csrf: String,
    method: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => StepUpMethodForm);

proof_form!(StepUpProofForm, SESSION_COOKIE);

/// Where the step-up proof is posted.
const STEP_UP_PROOF: ProofTarget = ProofTarget {
    action: "/portal/account/confirm-identity/proof",
    resend: "/portal/account/confirm-identity",
    back: "/portal/account",
};

fn proof_subject(context: &SessionContext) -> ProofSubject {
    let account = &context.session.account;
    ProofSubject {
        name: account.audit_name(),
        directory: Some(account.directory.to_string()),
        account: Some(account.clone()),
        identifier: account.sam_account_name.to_lowercase(),
        salt: context.key.clone(),
    }
}

/// Starts the proof of a registered method: a code sent, questions asked, or an authenticator.
pub async fn start_step_up(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<StepUpMethodForm>,
) -> Response {
    let context = match session_from_form(&state, &form.cookie) {
        Ok(context) => context,
        Err(response) => return response,
    };
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    let registered = match stored_methods(&state, &context.session.account).await {
        Ok(registered) => registered,
        Err(error) => return internal(error),
    };
    let Some(method) = usable_methods(&offered_methods(&state, &settings), &registered)
        .into_iter()
        .find(|method| method.as_str() == form.fields.method)
    else {
        return Redirect::to("/portal/account").into_response();
    };
    let now = UnixMillis::now();
    let subject = proof_subject(&context);
    let challenge = match issue_challenge(&state, &settings, &subject, method, &origin, now).await {
        Ok(challenge) => challenge,
        Err(response) => return response,
    };
    state.portal.update_session(&context.key, now, |session| {
        session.step_up = Some(challenge);
    });
    Redirect::to("/portal/account/confirm-identity").into_response()
}

pub async fn show_step_up(context: SessionContext) -> Response {
    if let Err(response) = full_session(&context) {
        return response;
    }
    match &context.session.step_up {
        Some(challenge) => render(
            StatusCode::OK,
            &proof_page(challenge, context.csrf, None, STEP_UP_PROOF),
        ),
        None => Redirect::to("/portal/account").into_response(),
    }
}

/// Checks the step-up proof. The challenge is taken out of the session first, so one proof
/// counts once; a wrong one puts it back, within the same limits as a reset's proofs.
pub async fn check_step_up(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<StepUpProofForm>,
) -> Response {
    let context = match session_from_form(&state, &form.cookie) {
        Ok(context) => context,
        Err(response) => return response,
    };
    let now = UnixMillis::now();
    let Some(challenge) = state.portal.take_step_up(&context.key, now) else {
        return Redirect::to("/portal/account").into_response();
    };
    let subject = proof_subject(&context);
    let csrf = context.csrf.clone();
    let retry = |notice| {
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &proof_page(&challenge, csrf.clone(), Some(notice), STEP_UP_PROOF),
        )
    };
    match judge_proof(
        &state,
        &origin,
        &subject,
        &challenge,
        &form.fields,
        now,
        retry,
    )
    .await
    {
        ProofOutcome::Passed => {
            state.portal.update_session(&context.key, now, |session| {
                session.proven_at = Some(now);
            });
            account_with(
                &state,
                &context,
                StatusCode::OK,
                Notice::good("Thank you. For the next 10 minutes you can change your methods."),
            )
            .await
        }
        ProofOutcome::Failed(response) => {
            state.portal.return_step_up(&context.key, now, challenge);
            response
        }
        ProofOutcome::Ended(response) => {
            state.portal.end_session(&context.key);
            response
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveForm {
    csrf: String,
    method: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => RemoveForm);

pub async fn remove_method(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<RemoveForm>,
) -> Response {
    let context = match changing_session(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let Some(method) = VerificationMethod::from_name(&form.fields.method) else {
        return account_with(
            &state,
            &context,
            StatusCode::BAD_REQUEST,
            Notice::bad("There is no such method."),
        )
        .await;
    };
    let account = &context.session.account;
    let before = match stored_methods(&state, account).await {
        Ok(before) => before,
        Err(error) => return internal(error),
    };
    let owned = owner(account);
    let removed = match state
        .store
        .remove_self_service_method(method_owner(&owned), method.as_str())
        .await
    {
        Ok(removed) => removed,
        Err(error) => return internal(error),
    };
    if removed {
        if let Err(error) = audit_account(
            &state,
            account,
            AuditAction::SelfServiceRemove,
            "success",
            Some(method.as_str().into()),
            &origin,
        )
        .await
        {
            return internal(error);
        }
        notify_method_change(
            &state,
            account,
            &before,
            &format!("{} was removed", label(method)),
            &origin,
        );
    }
    account_with(
        &state,
        &context,
        StatusCode::OK,
        Notice::good(format!("{} is removed.", label(method))),
    )
    .await
}

/// Stores a method the person has just set up, audits it and tells every address and phone
/// registered before and after. A method confirmed by a code (a mailed or texted one, or one
/// from the new authenticator) is itself a fresh proof.
async fn register(
    state: &AppState,
    context: &SessionContext,
    method: VerificationMethod,
    value: Option<String>,
    secret: Option<Vec<u8>>,
    origin: &Option<String>,
) -> Response {
    let account = &context.session.account;
    let before = match stored_methods(state, account).await {
        Ok(before) => before,
        Err(error) => return internal(error),
    };
    let replaced = before
        .iter()
        .any(|existing| existing.method == method.as_str());
    let now = UnixMillis::now();
    let registered = RegisteredMethod {
        method: method.as_str().into(),
        value: value.clone(),
        secret,
        registered_at: now,
    };
    if let Err(error) = save_method(state, account, registered).await {
        return internal(error);
    }
    if let Err(error) = audit_account(
        state,
        account,
        AuditAction::SelfServiceRegister,
        "success",
        Some(method.as_str().into()),
        origin,
    )
    .await
    {
        return internal(error);
    }
    let described = match &value {
        Some(value) => format!("{} {value}", label(method)),
        None => label(method).to_owned(),
    };
    let change = if replaced {
        format!("{described} replaced the one registered before")
    } else {
        format!("{described} was added")
    };
    let mut told = before;
    told.push(RegisteredMethod {
        method: method.as_str().into(),
        value,
        secret: None,
        registered_at: now,
    });
    notify_method_change(state, account, &told, &change, origin);
    let proves = method != VerificationMethod::SecurityQuestions;
    state.portal.update_session(&context.key, now, |session| {
        session.pending = None;
        if proves {
            session.proven_at = Some(now);
        }
    });
    let mut response = Redirect::to("/portal/account").into_response();
    response.headers_mut().insert(
        header::HeaderName::from_static("x-writeback-registered"),
        header::HeaderValue::from_static("1"),
    );
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailForm {
    csrf: String,
    email: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => EmailForm);

pub async fn register_email(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<EmailForm>,
) -> Response {
    let context = match changing_session(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let address = form.fields.email.trim().to_owned();
    if !is_mail_address(&address) {
        return account_with(
            &state,
            &context,
            StatusCode::BAD_REQUEST,
            Notice::bad("That is not an email address."),
        )
        .await;
    }
    send_registration_code(
        &state,
        &context,
        VerificationMethod::Email,
        address,
        &origin,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneForm {
    csrf: String,
    phone: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => PhoneForm);

pub async fn register_phone(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<PhoneForm>,
) -> Response {
    let context = match changing_session(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let number = match normalize_phone_number(&form.fields.phone) {
        Ok(number) => number,
        Err(problem) => {
            return account_with(
                &state,
                &context,
                StatusCode::BAD_REQUEST,
                Notice::bad(problem),
            )
            .await;
        }
    };
    send_registration_code(&state, &context, VerificationMethod::Sms, number, &origin).await
}

/// Sends a code to the address or number being registered, within the code limits, and
/// remembers it until the code comes back.
async fn send_registration_code(
    state: &AppState,
    context: &SessionContext,
    method: VerificationMethod,
    destination: String,
    origin: &Option<String>,
) -> Response {
    let settings = match settings(state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    if !offered_methods(state, &settings).contains(&method) {
        return account_with(
            state,
            context,
            StatusCode::SERVICE_UNAVAILABLE,
            Notice::bad(format!("{} cannot be used here.", label(method))),
        )
        .await;
    }
    let account = &context.session.account;
    let name = account.audit_name();
    let now = UnixMillis::now();
    match reserve(
        state,
        Guarded::Code,
        &name,
        Some(account.directory.as_str()),
        origin,
        None,
        &settings.helpdesk,
    )
    .await
    {
        Ok(_held) => {}
        Err(Refused::Broken(response)) => return response,
        Err(Refused::Blocked(_) | Refused::Later(_)) => {
            return account_with(
                state,
                context,
                StatusCode::TOO_MANY_REQUESTS,
                Notice::bad(
                    "Too many codes were sent in the last 10 minutes. Wait a while and try again.",
                ),
            )
            .await;
        }
    }
    let (code, sent) = match checks::new_code(&context.key, now) {
        Ok(pair) => pair,
        Err(error) => return internal(error),
    };
    let text = format!(
        "Your code to confirm this {} for password self-service is {}. It is valid for 5 minutes.",
        match method {
            VerificationMethod::Sms => "phone",
            _ => "address",
        },
        code.expose_secret()
    );
    let subject = "Confirm your email address";
    if !send_code(state, method, destination.clone(), subject, text) {
        return internal(format!("no way to send a {} code", method.as_str()));
    }
    if let Err(error) = audit_account(
        state,
        account,
        AuditAction::SelfServiceSendCode,
        RESULT_SENT,
        Some(format!("{} registration", method.as_str())),
        origin,
    )
    .await
    {
        return internal(error);
    }
    state.portal.update_session(&context.key, now, |session| {
        session.pending = Some(PendingRegistration {
            method,
            value: Some(destination),
            secret: None,
            code: Some(sent),
        });
    });
    Redirect::to("/portal/account").into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeForm {
    csrf: String,
    code: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => CodeForm);

/// The code sent to an email address or phone being registered. The pending registration is
/// taken out of the session first, so one code registers once.
pub async fn confirm_code(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<CodeForm>,
) -> Response {
    let context = match changing_session(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let now = UnixMillis::now();
    let Some(pending) = state.portal.take_pending(&context.key, now) else {
        return Redirect::to("/portal/account").into_response();
    };
    let PendingRegistration {
        method,
        value: Some(destination),
        code: Some(sent),
        ..
    } = pending.clone()
    else {
        state.portal.return_pending(&context.key, now, pending);
        return Redirect::to("/portal/account").into_response();
    };
    let passed = checks::code_matches(&context.key, &sent, &form.fields.code, now);
    if let Some(response) =
        registration_attempt(&state, &context, &origin, passed, pending, now).await
    {
        return response;
    }
    register(&state, &context, method, Some(destination), None, &origin).await
}

/// Counts a registration code against the same limits as a reset's proofs (so registration
/// cannot be used to guess codes either). `None` when it passed; otherwise the page to show,
/// with the registration put back for another try unless the limit is reached.
async fn registration_attempt(
    state: &AppState,
    context: &SessionContext,
    origin: &Option<String>,
    passed: bool,
    pending: PendingRegistration,
    now: UnixMillis,
) -> Option<Response> {
    if passed {
        return None;
    }
    let account = &context.session.account;
    let name = account.audit_name();
    let too_many = || {
        account_with(
            state,
            context,
            StatusCode::TOO_MANY_REQUESTS,
            Notice::bad("Too many wrong codes. Wait an hour and try again."),
        )
    };
    let reserved = limits(state)
        .reserve(Guarded::Proof, &name, origin.as_deref(), None, now)
        .await;
    match reserved {
        Ok(Ok(_kept)) => {}
        Ok(Err(_)) => return Some(too_many().await),
        Err(error) => return Some(internal(error)),
    }
    if let Err(error) = audit_account(
        state,
        account,
        AuditAction::SelfServiceVerify,
        RESULT_INVALID,
        Some("registration code".into()),
        origin,
    )
    .await
    {
        return Some(internal(error));
    }
    match limits(state).used_up(Guarded::Proof, &name, now).await {
        Ok(true) => return Some(too_many().await),
        Ok(false) => {}
        Err(error) => return Some(internal(error)),
    }
    state.portal.return_pending(&context.key, now, pending);
    Some(
        account_with(
            state,
            context,
            StatusCode::UNPROCESSABLE_ENTITY,
            Notice::bad("That code is not right, or it has expired."),
        )
        .await,
    )
}

pub async fn show_authenticator(
    State(state): State<AppState>,
    context: SessionContext,
) -> Response {
    if let Err(response) = full_session(&context) {
        return response;
    }
    let has_methods = match stored_methods(&state, &context.session.account).await {
        Ok(methods) => !methods.is_empty(),
        Err(error) => return internal(error),
    };
    let now = UnixMillis::now();
    if !context.session.may_change_methods(has_methods, now) {
        return account_with(
            &state,
            &context,
            StatusCode::FORBIDDEN,
            Notice::bad(CONFIRM_FIRST),
        )
        .await;
    }
    let secret = match context.session.pending.as_ref().and_then(|pending| {
        (pending.method == VerificationMethod::AuthenticatorApp)
            .then(|| pending.secret.clone())
            .flatten()
    }) {
        Some(secret) => secret,
        None => match totp::new_secret() {
            Ok(secret) => {
                let kept = secret.clone();
                state.portal.update_session(&context.key, now, |session| {
                    session.pending = Some(PendingRegistration {
                        method: VerificationMethod::AuthenticatorApp,
                        value: None,
                        secret: Some(kept),
                        code: None,
                    });
                });
                secret
            }
            Err(error) => return internal(error),
        },
    };
    authenticator_page(&context, &secret, None, StatusCode::OK)
}

fn authenticator_page(
    context: &SessionContext,
    secret: &[u8],
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let account = &context.session.account;
    let uri = totp::provisioning_uri("Writeback self-service", &account.audit_name(), secret);
    let svg = match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build(),
        Err(error) => return internal(error),
    };
    let manual_key = totp::base32(secret)
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    render(
        status,
        &AuthenticatorPage {
            csrf: context.csrf.clone(),
            qr_svg_base64: STANDARD.encode(svg),
            manual_key,
            notice,
        },
    )
}

pub async fn confirm_authenticator(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<CodeForm>,
) -> Response {
    let context = match changing_session(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let now = UnixMillis::now();
    let Some(pending) = state.portal.take_pending(&context.key, now) else {
        return Redirect::to("/portal/account/authenticator").into_response();
    };
    let Some(secret) = pending
        .secret
        .clone()
        .filter(|_| pending.method == VerificationMethod::AuthenticatorApp)
    else {
        state.portal.return_pending(&context.key, now, pending);
        return Redirect::to("/portal/account/authenticator").into_response();
    };
    let matched = totp::matching_step(&secret, &form.fields.code, now, None);
    if matched.is_none()
        && let Some(response) =
            registration_attempt(&state, &context, &origin, false, pending, now).await
    {
        return match response.status() {
            StatusCode::TOO_MANY_REQUESTS => response,
            _ => authenticator_page(
                &context,
                &secret,
                Some(Notice::bad(
                    "That code is not right. Type the code your app shows now.",
                )),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        };
    }
    let response = register(
        &state,
        &context,
        VerificationMethod::AuthenticatorApp,
        None,
        Some(secret.to_vec()),
        &origin,
    )
    .await;
    // The code that confirmed the key is used: it cannot also prove a reset.
    if let Some(step) = matched {
        let owned = owner(&context.session.account);
        if let Err(error) = state
            .store
            .accept_self_service_totp_step(method_owner(&owned), step)
            .await
        {
            return internal(error);
        }
    }
    response
}

fn questions_page(
    settings: &SelfServiceSettings,
    csrf: String,
    notice: Option<Notice>,
) -> QuestionsPage {
    QuestionsPage {
        csrf,
        pool: settings.security_questions.clone(),
        slots: (0..usize::from(settings.questions_asked)).collect(),
        notice,
    }
}

pub async fn show_questions(State(state): State<AppState>, context: SessionContext) -> Response {
    if let Err(response) = full_session(&context) {
        return response;
    }
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    if !offered_methods(&state, &settings).contains(&VerificationMethod::SecurityQuestions) {
        return Redirect::to("/portal/account").into_response();
    }
    let has_methods = match stored_methods(&state, &context.session.account).await {
        Ok(methods) => !methods.is_empty(),
        Err(error) => return internal(error),
    };
    if !context
        .session
        .may_change_methods(has_methods, UnixMillis::now())
    {
        return account_with(
            &state,
            &context,
            StatusCode::FORBIDDEN,
            Notice::bad(CONFIRM_FIRST),
        )
        .await;
    }
    render(
        StatusCode::OK,
        &questions_page(&settings, context.csrf, None),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionsForm {
    csrf: String,
    question_0: Option<usize>,
    question_1: Option<usize>,
    question_2: Option<usize>,
    question_3: Option<usize>,
    question_4: Option<usize>,
    answer_0: Option<SecretString>,
    answer_1: Option<SecretString>,
    answer_2: Option<SecretString>,
    answer_3: Option<SecretString>,
    answer_4: Option<SecretString>,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => QuestionsForm);

pub async fn register_questions(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<QuestionsForm>,
) -> Response {
    let context = match changing_session(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    if !offered_methods(&state, &settings).contains(&VerificationMethod::SecurityQuestions) {
        return Redirect::to("/portal/account").into_response();
    }
    let fields = form.fields;
    let pairs = [
        (fields.question_0, fields.answer_0),
        (fields.question_1, fields.answer_1),
        (fields.question_2, fields.answer_2),
        (fields.question_3, fields.answer_3),
        (fields.question_4, fields.answer_4),
    ];
    let wanted = usize::from(settings.questions_asked);
    let mut chosen: Vec<(String, SecretString)> = Vec::new();
    let mut problem = None;
    for (question, answer) in pairs.into_iter().take(wanted) {
        match (
            question.and_then(|index| settings.security_questions.get(index)),
            answer,
        ) {
            (Some(question), Some(answer)) => {
                if chosen.iter().any(|(existing, _)| existing == question) {
                    problem = Some("Choose a different question for each answer.");
                } else if let Some(answer_problem) = checks::answer_problem(answer.expose_secret())
                {
                    problem = Some(answer_problem);
                }
                chosen.push((question.clone(), answer));
            }
            _ => problem = Some("Choose and answer every question."),
        }
    }
    if let Some(problem) = problem {
        return render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &questions_page(&settings, context.csrf, Some(Notice::bad(problem))),
        );
    }
    let hashed = state
        .hashing
        .run(move || {
            chosen
                .into_iter()
                .map(|(question, answer)| {
                    let normalized =
                        SecretString::from(checks::normalize_answer(answer.expose_secret()));
                    crate::service::auth::hash_password(&normalized).map(|answer_hash| {
                        StoredQuestion {
                            question,
                            answer_hash,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    let stored = match hashed {
        Ok(Ok(stored)) => stored,
        Ok(Err(error)) => return internal(error),
        Err(_) => return busy(),
    };
    let secret = match serde_json::to_vec(&stored) {
        Ok(secret) => secret,
        Err(error) => return internal(error),
    };
    register(
        &state,
        &context,
        VerificationMethod::SecurityQuestions,
        None,
        Some(secret),
        &origin,
    )
    .await
}

fn change_page(
    state: &AppState,
    settings: &SelfServiceSettings,
    context: &SessionContext,
    notice: Option<Notice>,
) -> NewPasswordPage {
    let account = &context.session.account;
    NewPasswordPage {
        csrf: context.csrf.clone(),
        action: "/portal/change",
        heading: "Change your password",
        ask_current: true,
        request_id: fresh_request_id(),
        checklist: checklist(
            reported_policy(state, &account.directory).as_ref(),
            &user_words(account),
            settings,
        ),
        notice,
        signed_in: !context.session.must_change,
    }
}

pub async fn show_change(State(state): State<AppState>, context: SessionContext) -> Response {
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    let notice = context.session.must_change.then(|| {
        Notice::bad(
            "Your password has expired or must be changed before you can use it. Choose a new one.",
        )
    });
    render(
        StatusCode::OK,
        &change_page(&state, &settings, &context, notice),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeForm {
    csrf: String,
    request_id: String,
    current_password: SecretString,
    new_password: SecretString,
    confirm_password: SecretString,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => ChangeForm);

pub async fn change_password(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<ChangeForm>,
) -> Response {
    let context = match SessionContext::from_cookie(&state, &form.cookie) {
        Ok(context) => context,
        Err(response) => return response,
    };
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    let account = context.session.account.clone();
    let retry = |notice: String| {
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &change_page(&state, &settings, &context, Some(Notice::bad(notice))),
        )
    };
    let fields = form.fields;
    if check_password(SecretField::CurrentPassword, &fields.current_password).is_err() {
        return retry("Type your current password as you use it to sign in.".into());
    }
    if let Some(problem) = refuse_before_sending(
        &state,
        &settings,
        &account,
        &fields.new_password,
        &fields.confirm_password,
        OperationKind::ChangePassword,
    ) {
        return retry(problem);
    }
    let Ok(request_id) = fields.request_id.parse::<RequestId>() else {
        return retry("The form is damaged. Try again.".into());
    };
    if let Some(response) = unless_usable(&state, &account, &settings.helpdesk).await {
        return response;
    }
    let change = Writeback::ChangePassword {
        current_password: fields.current_password,
        new_password: fields.new_password,
    };
    let result = match run(&state, &account, &origin, request_id, change).await {
        Ok(result) => result,
        Err(response) => return response,
    };
    match result {
        ResultCode::Success => {
            state
                .portal
                .update_session(&context.key, UnixMillis::now(), |session| {
                    session.must_change = false;
                });
            notify_user(
                &state,
                &settings,
                &account,
                "changed by you in self-service",
            )
            .await;
            MessagePage::new(
                "Your password was changed",
                "Your new password is set in your organisation's directory. Use it from now on.",
            )
            .with_link("/portal/account", "Back to your account")
            .render(StatusCode::OK)
        }
        ResultCode::AgentUnavailable | ResultCode::DirectoryUnavailable { .. } => {
            service_unavailable(&settings.helpdesk)
        }
        other => retry(messages::describe(OperationKind::ChangePassword, &other)),
    }
}
