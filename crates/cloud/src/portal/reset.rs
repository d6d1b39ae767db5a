//! Forgot password and unlock: identify, verify with as many methods as the policy requires,
//! then set a new password (or unlock), written back synchronously.

use std::collections::BTreeSet;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_proto::ids::RequestId;
use writeback_proto::operation::{OperationKind, UserRef};
use writeback_proto::result::ResultCode;
use writeback_proto::sealing::SecretField;
use writeback_proto::time::UnixMillis;
use zeroize::Zeroizing;

use super::guard::{
    Refused, account_disabled, block, busy, internal, limits, out_of_scope, reserve,
    self_service_off, service_unavailable, too_many_attempts,
};
use super::pages::{
    IdentifyPage, MessagePage, MethodChoice, MethodsPage, NewPasswordPage, Notice, ProofPage,
    UnlockPage, checklist, render,
};
use crate::service::audit::{Actor, AuditAction};
use crate::service::auth::{new_token, token_hash};
use crate::service::directory::UserTarget;
use crate::service::limits::Guarded;
use crate::service::messages;
use crate::service::self_service::accounts::{
    account_detail, any_directory_usable, audit, directory_usable, find_account, in_scope,
    method_owner, offered_methods, owner, registered_methods, reported_policy, settings,
    stored_methods, usable_methods,
};
use crate::service::self_service::checks::{self, RESULT_INVALID, RESULT_NO_ADDRESS, RESULT_SENT};
use crate::service::self_service::notices::{notify_user, send_code};
use crate::service::self_service::state::{Challenge, Flow, PortalAccount, Purpose, SentCode};
use crate::service::state::AppState;
use crate::service::totp;
use crate::service::writeback::{self, Requester, Writeback, WritebackError, check_password};
use crate::web::browser_form::{BrowserForm, cookie, csrf_token, form_fields, set_cookie};
use crate::web::client::Origin;

/// Anchors the CSRF token of the forms shown before a flow or session exists.
pub const START_COOKIE: &str = "__Host-writeback-portal-start";
pub const FLOW_COOKIE: &str = "__Host-writeback-portal-flow";
const START_COOKIE_SECONDS: u64 = 3600;

pub fn method_label(method: VerificationMethod) -> &'static str {
    match method {
        VerificationMethod::Email => "Email me a code",
        VerificationMethod::AuthenticatorApp => "Use a code from my authenticator app",
        VerificationMethod::SecurityQuestions => "Answer my security questions",
        VerificationMethod::Sms => "Text me a code",
    }
}

/// The cookie a pre-flow form goes with: the one the browser has, or a new one to set.
pub fn start_cookie(headers: &HeaderMap) -> Result<(String, Option<String>), Response> {
    match cookie(headers, START_COOKIE) {
        Some(value) if !value.is_empty() && value.len() <= 128 => Ok((value, None)),
        _ => {
            let token = new_token("wbp_").map_err(internal)?;
            let value = token.expose_secret().to_owned();
            Ok((value.clone(), Some(value)))
        }
    }
}

pub fn with_start_cookie(mut response: Response, new_cookie: Option<String>) -> Response {
    if let Some(value) = new_cookie {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(START_COOKIE, &value, START_COOKIE_SECONDS),
        );
    }
    response
}

fn session_ended() -> Response {
    MessagePage::new(
        "Your session has ended",
        "For your safety, a reset must be finished within 15 minutes. Nothing was changed. Start again.",
    )
    .with_link("/portal", "Start again")
    .render(StatusCode::GONE)
}

/// The reset or unlock in progress, from its cookie.
#[derive(Debug)]
pub struct FlowContext {
    pub key: Vec<u8>,
    pub flow: Flow,
    pub csrf: String,
}

impl FromRequestParts<AppState> for FlowContext {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = cookie(&parts.headers, FLOW_COOKIE).ok_or_else(session_ended)?;
        let key = token_hash(&value);
        let flow = state
            .portal
            .flow(&key, UnixMillis::now())
            .ok_or_else(session_ended)?;
        Ok(Self {
            key,
            flow,
            csrf: csrf_token(&value),
        })
    }
}

impl FlowContext {
    fn from_form(state: &AppState, cookie_value: &str) -> Result<Self, Response> {
        let key = token_hash(cookie_value);
        let flow = state
            .portal
            .flow(&key, UnixMillis::now())
            .ok_or_else(session_ended)?;
        Ok(Self {
            key,
            flow,
            csrf: csrf_token(cookie_value),
        })
    }
}

pub async fn home(State(state): State<AppState>) -> Response {
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    if settings.scope == SelfServiceScope::Nobody {
        return self_service_off(&settings.helpdesk);
    }
    let any_usable = match any_directory_usable(&state).await {
        Ok(usable) => usable,
        Err(error) => return internal(error),
    };
    let notice = (!any_usable).then(|| {
        Notice::bad("Your organisation's directory cannot be reached right now, so passwords cannot be reset or changed. Try again in a few minutes.")
    });
    render(
        StatusCode::OK,
        &super::pages::HomePage {
            unlock_offered: settings.unlock_without_reset,
            notice,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct PurposeQuery {
    purpose: Option<String>,
}

fn purpose_of(text: Option<&str>) -> Purpose {
    match text {
        Some("unlock") => Purpose::Unlock,
        _ => Purpose::Reset,
    }
}

fn identify_page(
    purpose: Purpose,
    csrf: String,
    account: String,
    notice: Option<Notice>,
) -> IdentifyPage {
    IdentifyPage {
        csrf,
        purpose: purpose.as_str(),
        heading: match purpose {
            Purpose::Reset => "Reset your password",
            Purpose::Unlock => "Unlock your account",
        },
        account,
        notice,
    }
}

pub async fn show_identify(headers: HeaderMap, Query(query): Query<PurposeQuery>) -> Response {
    let (value, new_cookie) = match start_cookie(&headers) {
        Ok(pair) => pair,
        Err(response) => return response,
    };
    let page = identify_page(
        purpose_of(query.purpose.as_deref()),
        csrf_token(&value),
        String::new(),
        None,
    );
    with_start_cookie(render(StatusCode::OK, &page), new_cookie)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyForm {
    csrf: String,
    purpose: String,
    account: String,
}

form_fields!(crate::portal::pages::refused, START_COOKIE => IdentifyForm);

/// The name as the portal compares it, or why it cannot be one.
pub fn normalize_identifier(text: &str) -> Result<String, &'static str> {
    let name = text.trim().to_lowercase();
    if name.is_empty() {
        return Err("Type your user name, sign-in name or email address.");
    }
    if UserRef::logon_name(&name).is_err() {
        return Err("That name is too long or has characters no account name has.");
    }
    Ok(name)
}

/// Starts a flow for whatever name was typed. Every name gets the same answer: the next page.
pub async fn identify(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<IdentifyForm>,
) -> Response {
    let purpose = purpose_of(Some(form.fields.purpose.as_str()));
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    if settings.scope == SelfServiceScope::Nobody {
        return self_service_off(&settings.helpdesk);
    }
    if purpose == Purpose::Unlock && !settings.unlock_without_reset {
        return MessagePage::new(
            "Unlocking is not offered",
            "Your organisation does not let you unlock your account without resetting the password.",
        )
        .with_link("/portal/identify?purpose=reset", "Reset my password")
        .render(StatusCode::FORBIDDEN);
    }
    let identifier = match normalize_identifier(&form.fields.account) {
        Ok(identifier) => identifier,
        Err(problem) => {
            let page = identify_page(
                purpose,
                csrf_token(&form.cookie),
                form.fields.account.chars().take(256).collect(),
                Some(Notice::bad(problem)),
            );
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    let account = match find_account(&state, &identifier).await {
        Ok(found) => found,
        Err(error) => return internal(error),
    };
    let now = UnixMillis::now();
    let flow = Flow {
        purpose,
        identifier,
        account,
        verified: BTreeSet::new(),
        challenge: None,
        started_at: now,
    };
    let name = flow.audit_name();
    match limits(&state).is_blocked(&name, now).await {
        Ok(true) => return too_many_attempts(&settings.helpdesk),
        Ok(false) => {}
        Err(error) => return internal(error),
    }
    let directory = flow
        .account
        .as_ref()
        .map(|account| account.directory.to_string());
    let known = if flow.account.is_some() {
        "account found"
    } else {
        "no such account"
    };
    if let Err(error) = audit(
        &state,
        &name,
        directory.as_deref(),
        AuditAction::SelfServiceIdentify,
        "started",
        Some(format!("{}; {known}", purpose.as_str())),
        &origin,
    )
    .await
    {
        return internal(error);
    }
    let token = match new_token("wbf_") {
        Ok(token) => token,
        Err(error) => return internal(error),
    };
    state
        .portal
        .start_flow(token_hash(token.expose_secret()), flow);
    let mut response = Redirect::to("/portal/verify").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            FLOW_COOKIE,
            token.expose_secret(),
            state.portal.lifetime().as_secs(),
        ),
    );
    response
}

pub async fn show_methods(State(state): State<AppState>, context: FlowContext) -> Response {
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    let required = usize::from(settings.methods_required);
    if context.flow.verified.len() >= required {
        return Redirect::to("/portal/new-password").into_response();
    }
    let choices: Vec<MethodChoice> = offered_methods(&state, &settings)
        .into_iter()
        .filter(|method| !context.flow.verified.contains(method))
        .map(|method| MethodChoice {
            value: method.as_str(),
            label: method_label(method),
        })
        .collect();
    if choices.is_empty() {
        return not_enough_methods(&settings.helpdesk);
    }
    render(
        StatusCode::OK,
        &MethodsPage {
            csrf: context.csrf,
            step: context.flow.verified.len() + 1,
            steps: required,
            choices,
            notice: None,
        },
    )
}

fn not_enough_methods(helpdesk: &str) -> Response {
    MessagePage::new(
        "Not enough methods registered",
        "To reset your password yourself, you need more verification methods registered than you have. Nothing was changed.",
    )
    .with_paragraph("Once you can sign in, register more methods on your account page. Until then, your helpdesk can reset your password.")
    .with_helpdesk(helpdesk)
    .render(StatusCode::FORBIDDEN)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodForm {
    csrf: String,
    method: String,
}

form_fields!(crate::portal::pages::refused, FLOW_COOKIE => MethodForm);

/// The stored security questions of a registration: questions with their answers' hashes.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct StoredQuestion {
    pub question: String,
    pub answer_hash: String,
}

pub async fn start_method(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<MethodForm>,
) -> Response {
    let context = match FlowContext::from_form(&state, &form.cookie) {
        Ok(context) => context,
        Err(response) => return response,
    };
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    let method = offered_methods(&state, &settings)
        .into_iter()
        .find(|method| method.as_str() == form.fields.method)
        .filter(|method| !context.flow.verified.contains(method));
    let Some(method) = method else {
        return Redirect::to("/portal/verify").into_response();
    };
    let now = UnixMillis::now();
    let subject = ProofSubject {
        name: context.flow.audit_name(),
        directory: context
            .flow
            .account
            .as_ref()
            .map(|account| account.directory.to_string()),
        account: context.flow.account.clone(),
        identifier: context.flow.identifier.clone(),
        salt: context.key.clone(),
    };
    let challenge = match issue_challenge(&state, &settings, &subject, method, &origin, now).await {
        Ok(challenge) => challenge,
        Err(response) => return response,
    };
    state.portal.update_flow(&context.key, now, |flow| {
        flow.challenge = Some(challenge);
    });
    Redirect::to("/portal/verify/proof").into_response()
}

/// Who a proof is for: the name the limits and the audit log use, the account (none for a name
/// that matched nobody), the name as typed, and the salt one-time codes are hashed with (the
/// digest of the flow's or session's cookie).
#[derive(Debug, Clone)]
pub struct ProofSubject {
    pub name: String,
    pub directory: Option<String>,
    pub account: Option<PortalAccount>,
    pub identifier: String,
    pub salt: Vec<u8>,
}

/// Starts proving `method`, unless the name is blocked: a code mailed or texted (within the code
/// limits), the security questions to ask, or nothing to prepare for an authenticator. Names
/// with no account, or no such method registered, get the same: a code that matches nothing,
/// the same questions each time.
pub async fn issue_challenge(
    state: &AppState,
    settings: &SelfServiceSettings,
    subject: &ProofSubject,
    method: VerificationMethod,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Challenge, Response> {
    if limits(state)
        .is_blocked(&subject.name, now)
        .await
        .map_err(internal)?
    {
        return Err(too_many_attempts(&settings.helpdesk));
    }
    let registered = registered_methods(state, subject.account.as_ref())
        .await
        .map_err(internal)?;
    let mut challenge = Challenge {
        method,
        code: None,
        questions: Vec::new(),
    };
    match method {
        VerificationMethod::Email | VerificationMethod::Sms => {
            // Held for good: every code sent counts, whether or not it is ever typed.
            let _held = reserve(
                state,
                Guarded::Code,
                &subject.name,
                subject.directory.as_deref(),
                origin,
                None,
                &settings.helpdesk,
            )
            .await
            .map_err(IntoResponse::into_response)?;
            let destination = registered
                .iter()
                .find(|registered| registered.method == method.as_str())
                .and_then(|registered| registered.value.clone());
            let (code, sent) = checks::new_code(&subject.salt, now).map_err(internal)?;
            let text = format!(
                "Your Writeback verification code is {}. It is valid for 5 minutes. Not you? Tell your helpdesk.",
                code.expose_secret()
            );
            let delivered = match destination {
                Some(destination) => {
                    send_code(state, method, destination, "Your verification code", text)
                }
                None => false,
            };
            let result = if delivered {
                challenge.code = Some(sent);
                RESULT_SENT
            } else {
                // Nowhere to send it: a code that matches nothing, so the next page is the same.
                challenge.code = Some(SentCode {
                    digest: Vec::new(),
                    sent_at: now,
                });
                RESULT_NO_ADDRESS
            };
            audit(
                state,
                &subject.name,
                subject.directory.as_deref(),
                AuditAction::SelfServiceSendCode,
                result,
                Some(method.as_str().into()),
                origin,
            )
            .await
            .map_err(internal)?;
        }
        VerificationMethod::SecurityQuestions => {
            let stored = registered
                .iter()
                .find(|method| method.method == VerificationMethod::SecurityQuestions.as_str())
                .and_then(|method| method.secret.as_deref())
                .and_then(|secret| serde_json::from_slice::<Vec<StoredQuestion>>(secret).ok());
            challenge.questions = match stored {
                Some(stored) => stored.into_iter().map(|stored| stored.question).collect(),
                None => checks::questions_for_unknown(
                    &subject.identifier,
                    &settings.security_questions,
                    usize::from(settings.questions_asked),
                ),
            };
        }
        VerificationMethod::AuthenticatorApp => {}
    }
    Ok(challenge)
}

/// Where a reset's or unlock's proof is posted.
pub const FLOW_PROOF: ProofTarget = ProofTarget {
    action: "/portal/verify/proof",
    resend: "/portal/verify/start",
    back: "/portal/verify",
};

/// Where a proof page posts its answer, asks for a new code, and goes back to.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget {
    pub action: &'static str,
    pub resend: &'static str,
    pub back: &'static str,
}

pub fn proof_page(
    challenge: &Challenge,
    csrf: String,
    notice: Option<Notice>,
    target: ProofTarget,
) -> ProofPage {
    let (heading, instruction) = match challenge.method {
        VerificationMethod::Email => (
            "Enter the code we emailed",
            "If this account has an email address registered for self-service, we sent a code to it. The code is valid for 5 minutes.".to_owned(),
        ),
        VerificationMethod::AuthenticatorApp => (
            "Enter the code from your authenticator app",
            "Open the authenticator app you registered and type the code it shows for Writeback.".to_owned(),
        ),
        VerificationMethod::SecurityQuestions => (
            "Answer your security questions",
            "Answer as you did when you registered. Case and punctuation do not matter.".to_owned(),
        ),
        VerificationMethod::Sms => (
            "Enter the code we texted",
            "If this account has a mobile phone registered for self-service, we texted a code to it. The code is valid for 5 minutes.".to_owned(),
        ),
    };
    ProofPage {
        csrf,
        heading,
        instruction,
        method: challenge.method.as_str(),
        can_resend: matches!(
            challenge.method,
            VerificationMethod::Email | VerificationMethod::Sms
        ),
        questions: challenge.questions.clone(),
        notice,
        action: target.action,
        resend: target.resend,
        back: target.back,
    }
}

pub async fn show_proof(context: FlowContext) -> Response {
    match &context.flow.challenge {
        Some(challenge) => render(
            StatusCode::OK,
            &proof_page(challenge, context.csrf, None, FLOW_PROOF),
        ),
        None => Redirect::to("/portal/verify").into_response(),
    }
}

/// What a proof page posts: a code, or the answers to up to five questions.
pub trait ProofAnswers {
    fn code(&self) -> Option<&str>;
    fn answers(&self) -> [Option<&SecretString>; 5];
}

/// Declares a proof form that goes with `cookie`.
macro_rules! proof_form {
    ($name:ident, $cookie:expr) => {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            csrf: String,
            code: Option<String>,
            answer_0: Option<SecretString>,
            answer_1: Option<SecretString>,
            answer_2: Option<SecretString>,
            answer_3: Option<SecretString>,
            answer_4: Option<SecretString>,
        }

        form_fields!(crate::portal::pages::refused, $cookie => $name);

        impl ProofAnswers for $name {
            fn code(&self) -> Option<&str> {
                self.code.as_deref()
            }

            fn answers(&self) -> [Option<&SecretString>; 5] {
                [
                    self.answer_0.as_ref(),
                    self.answer_1.as_ref(),
                    self.answer_2.as_ref(),
                    self.answer_3.as_ref(),
                    self.answer_4.as_ref(),
                ]
            }
        }
    };
}
pub(super) use proof_form;

proof_form!(ProofForm, FLOW_COOKIE);

pub async fn check_proof(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<ProofForm>,
) -> Response {
    let key = token_hash(&form.cookie);
    let now = UnixMillis::now();
    // The challenge leaves the flow here, under the lock: a second request with the same proof
    // finds none, and cannot count it again.
    let Some((flow, challenge)) = state.portal.take_challenge(&key, now) else {
        return match state.portal.flow(&key, now) {
            Some(_) => Redirect::to("/portal/verify").into_response(),
            None => session_ended(),
        };
    };
    let subject = ProofSubject {
        name: flow.audit_name(),
        directory: flow
            .account
            .as_ref()
            .map(|account| account.directory.to_string()),
        account: flow.account.clone(),
        identifier: flow.identifier.clone(),
        salt: key.clone(),
    };
    let csrf = csrf_token(&form.cookie);
    let retry = |notice| {
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &proof_page(&challenge, csrf.clone(), Some(notice), FLOW_PROOF),
        )
    };
    let outcome = judge_proof(
        &state,
        &origin,
        &subject,
        &challenge,
        &form.fields,
        now,
        retry,
    )
    .await;
    match outcome {
        ProofOutcome::Passed => {}
        ProofOutcome::Failed(response) => {
            state.portal.return_challenge(&key, now, challenge);
            return response;
        }
        ProofOutcome::Ended(response) => {
            state.portal.end_flow(&key);
            return response;
        }
    }
    let Some(flow) = state.portal.record_proof(&key, now, challenge.method) else {
        return session_ended();
    };
    // Only now, with one proof given, may the portal say why this person cannot go on.
    if let Some(account) = &flow.account {
        let settings = match settings(&state).await {
            Ok(settings) => settings,
            Err(error) => return internal(error),
        };
        if let Some(response) = standing(&state, &settings, account, &key).await {
            return response;
        }
    }
    Redirect::to("/portal/verify").into_response()
}

/// What checking one proof came to.
pub enum ProofOutcome {
    Passed,
    /// Not passed, and the person may try again: the challenge goes back.
    Failed(Response),
    /// Not passed, and the flow is over (blocked).
    Ended(Response),
}

/// Checks one proof within the limits: the attempt is reserved before the check (so a burst of
/// parallel guesses gets exactly the allowance through), released when the proof holds, and
/// kept, and audited, when it does not.
pub async fn judge_proof(
    state: &AppState,
    origin: &Option<String>,
    subject: &ProofSubject,
    challenge: &Challenge,
    form: &impl ProofAnswers,
    now: UnixMillis,
    retry: impl FnOnce(Notice) -> Response,
) -> ProofOutcome {
    let settings = match settings(state).await {
        Ok(settings) => settings,
        Err(error) => return ProofOutcome::Failed(internal(error)),
    };
    let name = &subject.name;
    let directory = &subject.directory;
    match limits(state).is_blocked(name, now).await {
        Ok(true) => return ProofOutcome::Ended(too_many_attempts(&settings.helpdesk)),
        Ok(false) => {}
        Err(error) => return ProofOutcome::Failed(internal(error)),
    }
    let reservation = match reserve(
        state,
        Guarded::Proof,
        name,
        directory.as_deref(),
        origin,
        None,
        &settings.helpdesk,
    )
    .await
    {
        Ok(reservation) => reservation,
        Err(Refused::Blocked(response)) => return ProofOutcome::Ended(response),
        Err(Refused::Later(response) | Refused::Broken(response)) => {
            return ProofOutcome::Failed(response);
        }
    };
    let passed = match prove(state, subject, challenge, form, now).await {
        Ok(passed) => passed,
        Err(response) => {
            if let Err(error) = limits(state).release(reservation).await {
                return ProofOutcome::Failed(internal(error));
            }
            return ProofOutcome::Failed(response);
        }
    };
    let method = challenge.method.as_str();
    let result = if passed { "success" } else { RESULT_INVALID };
    if let Err(error) = audit(
        state,
        name,
        directory.as_deref(),
        AuditAction::SelfServiceVerify,
        result,
        Some(method.into()),
        origin,
    )
    .await
    {
        return ProofOutcome::Failed(internal(error));
    }
    if passed {
        return match limits(state).release(reservation).await {
            Ok(()) => ProofOutcome::Passed,
            Err(error) => ProofOutcome::Failed(internal(error)),
        };
    }
    match limits(state).used_up(Guarded::Proof, name, now).await {
        Ok(true) => {
            return ProofOutcome::Ended(
                block(
                    state,
                    name,
                    directory.as_deref(),
                    origin,
                    &settings.helpdesk,
                )
                .await,
            );
        }
        Ok(false) => {}
        Err(error) => return ProofOutcome::Failed(internal(error)),
    }
    let notice = Notice::bad(match challenge.method {
        VerificationMethod::SecurityQuestions => "At least one answer is not right. Try again.",
        _ => "That code is not right, or it has expired. Try again.",
    });
    ProofOutcome::Failed(retry(notice))
}

/// Whether the proof holds. Unknown names and unregistered methods go through the same work
/// against stand-ins, so the time taken does not tell them apart.
async fn prove(
    state: &AppState,
    subject: &ProofSubject,
    challenge: &Challenge,
    form: &impl ProofAnswers,
    now: UnixMillis,
) -> Result<bool, Response> {
    let registered = registered_methods(state, subject.account.as_ref())
        .await
        .map_err(internal)?;
    let stored = |method: VerificationMethod| {
        registered
            .iter()
            .find(|registered| registered.method == method.as_str())
    };
    let typed_code = form.code().unwrap_or_default();
    Ok(match challenge.method {
        VerificationMethod::Email | VerificationMethod::Sms => challenge
            .code
            .as_ref()
            .is_some_and(|sent| checks::code_matches(&subject.salt, sent, typed_code, now)),
        VerificationMethod::AuthenticatorApp => {
            let secret = stored(VerificationMethod::AuthenticatorApp)
                .and_then(|method| method.secret.clone())
                .map(Zeroizing::new);
            let stand_in = Zeroizing::new(subject.salt.clone());
            let matched = totp::matching_step(
                secret.as_deref().map_or(stand_in.as_slice(), Vec::as_slice),
                typed_code,
                now,
                None,
            );
            match (matched, &subject.account, secret.is_some()) {
                (Some(step), Some(account), true) => {
                    let owned = owner(account);
                    state
                        .store
                        .accept_self_service_totp_step(method_owner(&owned), step)
                        .await
                        .map_err(internal)?
                }
                _ => false,
            }
        }
        VerificationMethod::SecurityQuestions => {
            let stored_answers: Vec<StoredQuestion> = stored(VerificationMethod::SecurityQuestions)
                .and_then(|method| method.secret.as_deref())
                .and_then(|secret| serde_json::from_slice(secret).ok())
                .unwrap_or_default();
            let answers: Vec<Option<SecretString>> = form
                .answers()
                .into_iter()
                .take(challenge.questions.len())
                .map(|answer| {
                    answer.map(|answer| {
                        SecretString::from(checks::normalize_answer(answer.expose_secret()))
                    })
                })
                .collect();
            let hashes: Vec<Option<String>> = (0..challenge.questions.len())
                .map(|index| {
                    stored_answers
                        .get(index)
                        .map(|stored| stored.answer_hash.clone())
                })
                .collect();
            state
                .hashing
                .run(move || {
                    let mut all = !answers.is_empty();
                    for (answer, hash) in answers.iter().zip(&hashes) {
                        let empty = SecretString::from(String::new());
                        let answer = answer.as_ref().unwrap_or(&empty);
                        all &= crate::service::auth::verify_password(answer, hash.as_deref());
                    }
                    all && hashes.iter().all(Option::is_some)
                })
                .await
                .map_err(|_| busy())?
        }
    })
}

/// The page for a verified person who cannot go on, if any: out of scope, disabled, or fewer
/// registered methods than the policy requires. The flow ends with it.
async fn standing(
    state: &AppState,
    settings: &SelfServiceSettings,
    account: &PortalAccount,
    key: &[u8],
) -> Option<Response> {
    let detail = match account_detail(state, account).await {
        Ok(Some(detail)) => detail,
        Ok(None) => return Some(internal("the account is no longer in the synced copy")),
        Err(error) => return Some(internal(error)),
    };
    let page = if !in_scope(settings, &detail) {
        Some(out_of_scope(&settings.helpdesk))
    } else if !detail.user.enabled {
        Some(account_disabled(&settings.helpdesk))
    } else {
        let registered = match stored_methods(state, account).await {
            Ok(registered) => registered,
            Err(error) => return Some(internal(error)),
        };
        let usable = usable_methods(&offered_methods(state, settings), &registered).len();
        (usable < usize::from(settings.methods_required))
            .then(|| not_enough_methods(&settings.helpdesk))
    };
    if page.is_some() {
        state.portal.end_flow(key);
    }
    page
}

/// The words a new password must not contain: the user name and the parts of the full name.
pub fn user_words(account: &PortalAccount) -> Vec<String> {
    let mut words = vec![account.sam_account_name.clone()];
    if let Some(display_name) = &account.display_name {
        words.extend(
            display_name
                .split([',', '.', '-', '_', '#', '\t', ' '])
                .filter(|token| token.chars().count() >= 3)
                .map(str::to_owned),
        );
    }
    words
}

pub async fn show_new_password(State(state): State<AppState>, context: FlowContext) -> Response {
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    let Some(account) = verified_account(&context, &settings) else {
        return Redirect::to("/portal/verify").into_response();
    };
    match context.flow.purpose {
        Purpose::Unlock => render(
            StatusCode::OK,
            &UnlockPage {
                csrf: context.csrf,
                request_id: fresh_request_id(),
                notice: None,
            },
        ),
        Purpose::Reset => {
            if !settings.writeback_enabled {
                return MessagePage::new(
                    "Resets are handled by your helpdesk",
                    "Your organisation does not let passwords be reset here yet.",
                )
                .with_helpdesk(&settings.helpdesk)
                .render(StatusCode::FORBIDDEN);
            }
            render(
                StatusCode::OK,
                &reset_page(&state, &settings, account, context.csrf.clone(), None),
            )
        }
    }
}

/// The verified account, once every required proof is given.
fn verified_account<'a>(
    context: &'a FlowContext,
    settings: &SelfServiceSettings,
) -> Option<&'a PortalAccount> {
    (context.flow.verified.len() >= usize::from(settings.methods_required))
        .then_some(context.flow.account.as_ref())
        .flatten()
}

/// The flow a final form (new password, unlock) belongs to, once every required proof is given
/// and the settings allow `purpose`: the flow, the settings and the account. Otherwise the page
/// to go back to.
async fn proven_flow(
    state: &AppState,
    cookie_value: &str,
    purpose: Purpose,
) -> Result<(FlowContext, SelfServiceSettings, PortalAccount), Response> {
    let context = FlowContext::from_form(state, cookie_value)?;
    let settings = settings(state).await.map_err(internal)?;
    let Some(account) = verified_account(&context, &settings).cloned() else {
        return Err(Redirect::to("/portal/verify").into_response());
    };
    let allowed = match purpose {
        Purpose::Reset => settings.writeback_enabled,
        Purpose::Unlock => settings.unlock_without_reset,
    };
    if context.flow.purpose != purpose || !allowed {
        return Err(Redirect::to("/portal/new-password").into_response());
    }
    Ok((context, settings, account))
}

pub fn fresh_request_id() -> String {
    RequestId::generate()
        .map(|id| id.to_string())
        .unwrap_or_default()
}

fn reset_page(
    state: &AppState,
    settings: &SelfServiceSettings,
    account: &PortalAccount,
    csrf: String,
    notice: Option<Notice>,
) -> NewPasswordPage {
    NewPasswordPage {
        csrf,
        action: "/portal/new-password",
        heading: "Choose a new password",
        ask_current: false,
        request_id: fresh_request_id(),
        checklist: checklist(
            reported_policy(state, &account.directory).as_ref(),
            &user_words(account),
            settings,
        ),
        notice,
        signed_in: false,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPasswordForm {
    csrf: String,
    request_id: String,
    new_password: SecretString,
    confirm_password: SecretString,
}

form_fields!(crate::portal::pages::refused, FLOW_COOKIE => NewPasswordForm);

/// Why a new password is refused before anything is sent, in plain words: too short for the
/// directory's reported policy first (what to fix first), then the cloud's own rules. The agent
/// checks the directory's whole policy again.
pub fn refuse_before_sending(
    state: &AppState,
    settings: &SelfServiceSettings,
    account: &PortalAccount,
    new_password: &SecretString,
    confirm_password: &SecretString,
    kind: OperationKind,
) -> Option<String> {
    if new_password.expose_secret() != confirm_password.expose_secret() {
        return Some("The two new passwords are not the same. Type them again.".into());
    }
    match check_password(SecretField::NewPassword, new_password) {
        Err(WritebackError::EmptyPassword(_)) => return Some("Type a new password.".into()),
        Err(_) => {
            return Some(format!(
                "The new password is longer than the directory accepts ({} characters).",
                writeback_policy::MAX_PASSWORD_UTF16_UNITS
            ));
        }
        Ok(()) => {}
    }
    let policy = reported_policy(state, &account.directory);
    if let Some(policy) = &policy
        && writeback_policy::utf16_length(new_password.expose_secret()) < policy.min_length as usize
    {
        return Some(messages::describe(
            kind,
            &ResultCode::PolicyViolation {
                reason: writeback_policy::PolicyReason::TooShort,
                requirements: Some(policy.clone()),
            },
        ));
    }
    let words = user_words(account);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    checks::cloud_password_rules(settings, new_password, &words)
        .err()
        .map(|reason| {
            messages::describe(
                kind,
                &ResultCode::PolicyViolation {
                    reason,
                    requirements: None,
                },
            )
        })
}

pub async fn set_new_password(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<NewPasswordForm>,
) -> Response {
    let (context, settings, account) = match proven_flow(&state, &form.cookie, Purpose::Reset).await
    {
        Ok(proven) => proven,
        Err(response) => return response,
    };
    let retry = |notice: String| {
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &reset_page(
                &state,
                &settings,
                &account,
                context.csrf.clone(),
                Some(Notice::bad(notice)),
            ),
        )
    };
    let fields = form.fields;
    if let Some(problem) = refuse_before_sending(
        &state,
        &settings,
        &account,
        &fields.new_password,
        &fields.confirm_password,
        OperationKind::ResetPassword,
    ) {
        return retry(problem);
    }
    let Ok(request_id) = fields.request_id.parse::<RequestId>() else {
        return retry("The form is damaged. Try again.".into());
    };
    if let Some(response) = unless_usable(&state, &account, &settings.helpdesk).await {
        return response;
    }
    let reset = Writeback::ResetPassword {
        new_password: fields.new_password,
        must_change: false,
        unlock: true,
    };
    let result = match run(&state, &account, &origin, request_id, reset).await {
        Ok(result) => result,
        Err(response) => return response,
    };
    match result {
        ResultCode::Success => {
            state.portal.end_flow(&context.key);
            notify_user(&state, &settings, &account, "reset through self-service").await;
            MessagePage::new(
                "Your password was changed",
                "Your new password is set in your organisation's directory, and your account is unlocked. You can sign in with it now.",
            )
            .render(StatusCode::OK)
        }
        ResultCode::AgentUnavailable | ResultCode::DirectoryUnavailable { .. } => {
            service_unavailable(&settings.helpdesk)
        }
        ResultCode::AccountDisabled => account_disabled(&settings.helpdesk),
        other => retry(messages::describe(OperationKind::ResetPassword, &other)),
    }
}

/// The "service unavailable" page at once when the account's directory has no usable agent,
/// rather than after a request times out.
pub async fn unless_usable(
    state: &AppState,
    account: &PortalAccount,
    helpdesk: &str,
) -> Option<Response> {
    match directory_usable(state, &account.directory).await {
        Ok(true) => None,
        Ok(false) => Some(service_unavailable(helpdesk)),
        Err(error) => Some(internal(error)),
    }
}

/// Runs one operation for the portal user, audited as theirs. The account is synced, so it is
/// addressed by its anchor and not looked up again.
pub async fn run(
    state: &AppState,
    account: &PortalAccount,
    origin: &Option<String>,
    request_id: RequestId,
    operation: Writeback,
) -> Result<ResultCode, Response> {
    let actor = Actor::self_service(&account.audit_name(), origin.clone());
    let target = UserTarget {
        directory: account.directory.clone(),
        name: account.sam_account_name.clone(),
        user: UserRef::Anchor(account.anchor),
    };
    match writeback::perform(
        state,
        &actor,
        Requester::SelfService,
        target,
        request_id,
        operation,
    )
    .await
    {
        Ok(outcome) => Ok(outcome.result),
        Err(error) => Err(internal(error)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockForm {
    csrf: String,
    request_id: String,
}

form_fields!(crate::portal::pages::refused, FLOW_COOKIE => UnlockForm);

pub async fn unlock(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<UnlockForm>,
) -> Response {
    let (context, settings, account) =
        match proven_flow(&state, &form.cookie, Purpose::Unlock).await {
            Ok(proven) => proven,
            Err(response) => return response,
        };
    let Ok(request_id) = form.fields.request_id.parse::<RequestId>() else {
        return Redirect::to("/portal/new-password").into_response();
    };
    if let Some(response) = unless_usable(&state, &account, &settings.helpdesk).await {
        return response;
    }
    let result = match run(&state, &account, &origin, request_id, Writeback::Unlock).await {
        Ok(result) => result,
        Err(response) => return response,
    };
    match result {
        ResultCode::Success => {
            state.portal.end_flow(&context.key);
            MessagePage::new(
                "Your account is unlocked",
                "Your account is unlocked in your organisation's directory. Sign in with your usual password.",
            )
            .render(StatusCode::OK)
        }
        ResultCode::AgentUnavailable | ResultCode::DirectoryUnavailable { .. } => {
            service_unavailable(&settings.helpdesk)
        }
        ResultCode::AccountDisabled => account_disabled(&settings.helpdesk),
        other => render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &UnlockPage {
                csrf: context.csrf,
                request_id: fresh_request_id(),
                notice: Some(Notice::bad(messages::describe(
                    OperationKind::Unlock,
                    &other,
                ))),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    /// Properties of what the portal reads from a browser: the forms, and the typed name.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;
        use secrecy::ExposeSecret;

        use super::super::*;

        /// Form bodies: raw bytes, and pairs of names (real and made up) with any values.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            let names = prop::sample::select(vec![
                "csrf",
                "purpose",
                "account",
                "method",
                "code",
                "answer_0",
                "answer_4",
                "answer_5",
                "request_id",
                "new_password",
                "confirm_password",
                "extra",
            ]);
            prop_oneof![
                vec(any::<u8>(), 0..300),
                vec((names, "\\PC{0,40}"), 0..8).prop_map(|pairs| {
                    serde_urlencoded::to_string(&pairs).unwrap().into_bytes()
                }),
            ]
        }

        proptest! {
            #[test]
            fn any_body_parses_to_a_form_or_a_refusal(bytes in body()) {
                let _ = serde_urlencoded::from_bytes::<IdentifyForm>(&bytes);
                let _ = serde_urlencoded::from_bytes::<MethodForm>(&bytes);
                let _ = serde_urlencoded::from_bytes::<ProofForm>(&bytes);
                let _ = serde_urlencoded::from_bytes::<NewPasswordForm>(&bytes);
                let _ = serde_urlencoded::from_bytes::<UnlockForm>(&bytes);
            }

            #[test]
            fn a_form_parses_back_to_what_was_typed(
                csrf in "\\PC{0,40}",
                new_password in "\\PC{0,80}",
                request_id in "[0-9a-f]{32}",
            ) {
                let body = serde_urlencoded::to_string([
                    ("csrf", csrf.as_str()),
                    ("request_id", request_id.as_str()),
                    ("new_password", new_password.as_str()),
                    ("confirm_password", new_password.as_str()),
                ])
                .unwrap();
                let form: NewPasswordForm = serde_urlencoded::from_bytes(body.as_bytes()).unwrap();
                prop_assert_eq!(form.csrf, csrf);
                prop_assert_eq!(form.request_id, request_id);
                prop_assert_eq!(form.new_password.expose_secret(), new_password.as_str());
                prop_assert!(serde_urlencoded::from_bytes::<IdentifyForm>(body.as_bytes()).is_err());
            }

            #[test]
            fn a_typed_name_is_normalized_or_refused(name in "\\PC{0,300}") {
                if let Ok(normalized) = normalize_identifier(&name) {
                    prop_assert_eq!(normalized.clone(), normalized.trim().to_lowercase());
                    prop_assert!(!normalized.is_empty());
                    prop_assert!(UserRef::logon_name(&normalized).is_ok());
                }
            }
        }
    }
}
