//! Signed-in self-service, as pages: sign-in with the directory password, change password, and
//! the registration of verification methods. Each handler parses its form, calls one step of
//! [`crate::service::self_service::sessions`] or [`crate::service::self_service::registration`]
//! and renders what it answers.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use writeback_proto::api::{SelfServiceSettings, VerificationMethod};
use writeback_proto::ids::RequestId;
use writeback_proto::operation::OperationKind;
use writeback_proto::time::UnixMillis;
use writeback_store::RegisteredMethod;

use super::guard::{internal, stopped};
use super::pages::{
    AccountPage, AuthenticatorPage, MessagePage, MethodChoice, NewPasswordPage, Notice,
    QuestionsPage, RegisteredRow, SignInPage, render,
};
use super::reset::{
    ProofTarget, START_COOKIE, fresh_request_id, method_label, password_checklist, proof_form,
    proof_page, refusal_text, start_cookie, with_start_cookie, wrong_proof,
};
use crate::service::notify::{is_mail_address, normalize_phone_number};
use crate::service::self_service::accounts::{
    method_owner, offered_methods, owner, settings, stored_methods, usable_methods,
};
use crate::service::self_service::proof::ProofAnswer;
use crate::service::self_service::recovery::{FinalOutcome, Identifier};
use crate::service::self_service::registration::{self, Confirmation, MethodRefusal, method_name};
use crate::service::self_service::sessions::{self, SessionHandle, SignIn, StepUp};
use crate::service::self_service::stop::Stop;
use crate::service::state::AppState;
use crate::web::browser_form::{BrowserForm, cookie, csrf_token, form_fields, set_cookie};
use crate::web::client::Origin;
use crate::web::pages::AuthenticatorPicture;

pub const SESSION_COOKIE: &str = "__Host-writeback-portal";

fn signed_out() -> Response {
    Redirect::to("/portal/sign-in").into_response()
}

/// A signed-in user, from the session cookie.
#[derive(Debug)]
pub struct SessionContext {
    pub handle: SessionHandle,
    pub csrf: String,
}

impl SessionContext {
    async fn from_cookie(state: &AppState, value: &str) -> Result<Self, Response> {
        let handle = SessionHandle::open(state, value, UnixMillis::now())
            .await
            .map_err(|_| signed_out())?;
        Ok(Self {
            handle,
            csrf: csrf_token(value),
        })
    }

    /// The same session re-read, so a page shows what the step just changed.
    async fn refreshed(&self, state: &AppState) -> Option<Self> {
        let session = state
            .portal
            .session(&self.handle.key, UnixMillis::now())
            .await?;
        Some(Self {
            handle: SessionHandle {
                key: self.handle.key.clone(),
                session,
            },
            csrf: self.csrf.clone(),
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
        Self::from_cookie(state, &value).await
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

pub async fn sign_in(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<SignInForm>,
) -> Response {
    let page = |status: StatusCode, text: &str| {
        render(
            status,
            &SignInPage {
                csrf: csrf_token(&form.cookie),
                account: form.fields.account.chars().take(256).collect(),
                notice: Some(Notice::bad(text)),
            },
        )
    };
    let identifier = match Identifier::parse(&form.fields.account) {
        Ok(identifier) => identifier,
        Err(problem) => return page(StatusCode::BAD_REQUEST, problem),
    };
    match sessions::sign_in(
        &state,
        &identifier,
        form.fields.password,
        &origin,
        UnixMillis::now(),
    )
    .await
    {
        Ok(SignIn::Opened { token, must_change }) => {
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
            response
        }
        Ok(SignIn::Refused) => page(StatusCode::UNAUTHORIZED, NOT_SIGNED_IN),
        Err(stop) => stopped(&state, stop).await,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainForm {
    csrf: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => PlainForm);

pub async fn sign_out(State(state): State<AppState>, form: BrowserForm<PlainForm>) -> Response {
    state
        .portal
        .end_session(&crate::service::auth::token_hash(&form.cookie))
        .await;
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
    if context.handle.session.must_change {
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
    let account = context.handle.account();
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
                label: method_name(kind),
                detail: method_detail(method),
            })
        })
        .collect();
    let session = &context.handle.session;
    let pending = |method: VerificationMethod| {
        session.pending.as_ref().and_then(|pending| {
            (pending.method == method)
                .then(|| pending.value.clone())
                .flatten()
        })
    };
    let may_change = session.may_change_methods(!registered.is_empty(), now);
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

pub async fn show_account(State(state): State<AppState>, context: SessionContext) -> Response {
    if let Err(response) = full_session(&context) {
        return response;
    }
    match account_page(&state, &context, None).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

/// The account page, as of now, with `notice`.
async fn account_with(
    state: &AppState,
    context: &SessionContext,
    status: StatusCode,
    notice: Notice,
) -> Response {
    let Some(context) = context.refreshed(state).await else {
        return signed_out();
    };
    match account_page(state, &context, Some(notice)).await {
        Ok(page) => render(status, &page),
        Err(response) => response,
    }
}

async fn session_from_form(
    state: &AppState,
    cookie_value: &str,
) -> Result<SessionContext, Response> {
    let context = SessionContext::from_cookie(state, cookie_value).await?;
    full_session(&context)?;
    Ok(context)
}

/// A session that may change its methods now: none are registered yet, or one was proven in
/// the last few minutes. Otherwise the account page, asking for that proof first.
async fn changing_session(
    state: &AppState,
    cookie_value: &str,
) -> Result<SessionContext, Response> {
    let context = session_from_form(state, cookie_value).await?;
    match sessions::may_change_methods(state, &context.handle, UnixMillis::now()).await {
        Ok(true) => Ok(context),
        Ok(false) => Err(account_with(
            state,
            &context,
            StatusCode::FORBIDDEN,
            Notice::bad(CONFIRM_FIRST),
        )
        .await),
        Err(stop) => Err(stopped(state, stop).await),
    }
}

const CONFIRM_FIRST: &str =
    "To add, replace or remove a method, first confirm it is you with one you already have.";

pub async fn confirm_methods(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<PlainForm>,
) -> Response {
    let context = match session_from_form(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let confirmed =
        registration::confirm_current(&state, &context.handle, &origin, UnixMillis::now()).await;
    match confirmed {
        Ok(()) => {
            account_with(
                &state,
                &context,
                StatusCode::OK,
                Notice::good("Thank you. Your methods are confirmed."),
            )
            .await
        }
        Err(stop) => stopped(&state, stop).await,
    }
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

/// Starts the proof of a registered method: a code sent, questions asked, or an authenticator.
pub async fn start_step_up(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<StepUpMethodForm>,
) -> Response {
    let context = match session_from_form(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let started = sessions::start_step_up(
        &state,
        &context.handle,
        &form.fields.method,
        &origin,
        UnixMillis::now(),
    )
    .await;
    match started {
        Ok(Some(_)) => Redirect::to("/portal/account/confirm-identity").into_response(),
        Ok(None) => Redirect::to("/portal/account").into_response(),
        Err(stop) => stopped(&state, stop).await,
    }
}

pub async fn show_step_up(context: SessionContext) -> Response {
    if let Err(response) = full_session(&context) {
        return response;
    }
    match &context.handle.session.step_up {
        Some(challenge) => render(
            StatusCode::OK,
            &proof_page(challenge, context.csrf, None, STEP_UP_PROOF),
        ),
        None => Redirect::to("/portal/account").into_response(),
    }
}

pub async fn check_step_up(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<StepUpProofForm>,
) -> Response {
    let context = match session_from_form(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let answer = ProofAnswer::from(form.fields);
    let checked =
        sessions::check_step_up(&state, &context.handle, &answer, &origin, UnixMillis::now()).await;
    match checked {
        Ok(StepUp::Proven) => {
            account_with(
                &state,
                &context,
                StatusCode::OK,
                Notice::good("Thank you. For the next 10 minutes you can change your methods."),
            )
            .await
        }
        Ok(StepUp::Wrong(challenge)) => wrong_proof(&challenge, context.csrf, STEP_UP_PROOF),
        Ok(StepUp::NoChallenge) => Redirect::to("/portal/account").into_response(),
        Err(stop) => stopped(&state, stop).await,
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
    match registration::remove(&state, &context.handle, method, &origin).await {
        Ok(_) => {
            account_with(
                &state,
                &context,
                StatusCode::OK,
                Notice::good(format!("{} is removed.", method_name(method))),
            )
            .await
        }
        Err(stop) => stopped(&state, stop).await,
    }
}

/// After a method was registered: back to the account page.
fn registered() -> Response {
    let mut response = Redirect::to("/portal/account").into_response();
    response.headers_mut().insert(
        header::HeaderName::from_static("x-writeback-registered"),
        header::HeaderValue::from_static("1"),
    );
    response
}

/// Why a method was not registered, on the account page.
async fn refused_method(
    state: &AppState,
    context: &SessionContext,
    refusal: MethodRefusal,
) -> Response {
    let (status, text) = match refusal {
        MethodRefusal::NotOffered(method) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} cannot be used here.", method_name(method)),
        ),
        MethodRefusal::SameQuestion => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a different question for each answer.".into(),
        ),
        MethodRefusal::Unanswered => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose and answer every question.".into(),
        ),
        MethodRefusal::WeakAnswer(problem) => (StatusCode::UNPROCESSABLE_ENTITY, problem.into()),
    };
    account_with(state, context, status, Notice::bad(text)).await
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

async fn send_registration_code(
    state: &AppState,
    context: &SessionContext,
    method: VerificationMethod,
    destination: String,
    origin: &Option<String>,
) -> Response {
    let sent = registration::send_code_to(
        state,
        &context.handle,
        method,
        destination,
        origin,
        UnixMillis::now(),
    )
    .await;
    match sent {
        Ok(Ok(())) => Redirect::to("/portal/account").into_response(),
        Ok(Err(refusal)) => refused_method(state, context, refusal).await,
        Err(Stop::TryLater | Stop::Blocked) => {
            account_with(
                state,
                context,
                StatusCode::TOO_MANY_REQUESTS,
                Notice::bad(
                    "Too many codes were sent in the last 10 minutes. Wait a while and try again.",
                ),
            )
            .await
        }
        Err(stop) => stopped(state, stop).await,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeForm {
    csrf: String,
    code: String,
}
form_fields!(crate::portal::pages::refused, SESSION_COOKIE => CodeForm);

const TOO_MANY_CODES: &str = "Too many wrong codes. Wait an hour and try again.";

/// The code sent to an email address or phone being registered.
pub async fn confirm_code(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<CodeForm>,
) -> Response {
    let context = match changing_session(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let confirmed = registration::confirm_code(
        &state,
        &context.handle,
        &form.fields.code,
        &origin,
        UnixMillis::now(),
    )
    .await;
    let (status, text) = match confirmed {
        Ok(Confirmation::Registered) => return registered(),
        Ok(Confirmation::NothingPending) => {
            return Redirect::to("/portal/account").into_response();
        }
        Ok(Confirmation::Wrong) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "That code is not right, or it has expired.",
        ),
        Err(Stop::TryLater) => (StatusCode::TOO_MANY_REQUESTS, TOO_MANY_CODES),
        Err(stop) => return stopped(&state, stop).await,
    };
    account_with(&state, &context, status, Notice::bad(text)).await
}

pub async fn show_authenticator(
    State(state): State<AppState>,
    context: SessionContext,
) -> Response {
    if let Err(response) = full_session(&context) {
        return response;
    }
    let now = UnixMillis::now();
    match sessions::may_change_methods(&state, &context.handle, now).await {
        Ok(true) => {}
        Ok(false) => {
            return account_with(
                &state,
                &context,
                StatusCode::FORBIDDEN,
                Notice::bad(CONFIRM_FIRST),
            )
            .await;
        }
        Err(stop) => return stopped(&state, stop).await,
    }
    match registration::authenticator_key(&state, &context.handle, now).await {
        Ok(secret) => authenticator_page(&context, &secret, None, StatusCode::OK),
        Err(stop) => stopped(&state, stop).await,
    }
}

fn authenticator_page(
    context: &SessionContext,
    secret: &[u8],
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let account = context.handle.account();
    let picture =
        match AuthenticatorPicture::new("Writeback self-service", &account.audit_name(), secret) {
            Ok(picture) => picture,
            Err(error) => return internal(error),
        };
    render(
        status,
        &AuthenticatorPage {
            csrf: context.csrf.clone(),
            qr_svg_base64: picture.qr_svg_base64,
            manual_key: picture.manual_key,
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
    let confirmed = registration::confirm_authenticator(
        &state,
        &context.handle,
        &form.fields.code,
        &origin,
        now,
    )
    .await;
    match confirmed {
        Ok(Confirmation::Registered) => registered(),
        Ok(Confirmation::NothingPending) => {
            Redirect::to("/portal/account/authenticator").into_response()
        }
        Ok(Confirmation::Wrong) => {
            match registration::authenticator_key(&state, &context.handle, now).await {
                Ok(secret) => authenticator_page(
                    &context,
                    &secret,
                    Some(Notice::bad(
                        "That code is not right. Type the code your app shows now.",
                    )),
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
                Err(stop) => stopped(&state, stop).await,
            }
        }
        Err(Stop::TryLater) => {
            account_with(
                &state,
                &context,
                StatusCode::TOO_MANY_REQUESTS,
                Notice::bad(TOO_MANY_CODES),
            )
            .await
        }
        Err(stop) => stopped(&state, stop).await,
    }
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
    match sessions::may_change_methods(&state, &context.handle, UnixMillis::now()).await {
        Ok(true) => render(
            StatusCode::OK,
            &questions_page(&settings, context.csrf, None),
        ),
        Ok(false) => {
            account_with(
                &state,
                &context,
                StatusCode::FORBIDDEN,
                Notice::bad(CONFIRM_FIRST),
            )
            .await
        }
        Err(stop) => stopped(&state, stop).await,
    }
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
    let fields = form.fields;
    let picks = vec![
        (fields.question_0, fields.answer_0),
        (fields.question_1, fields.answer_1),
        (fields.question_2, fields.answer_2),
        (fields.question_3, fields.answer_3),
        (fields.question_4, fields.answer_4),
    ];
    let stored = registration::register_questions(
        &state,
        &context.handle,
        picks,
        &origin,
        UnixMillis::now(),
    )
    .await;
    match stored {
        Ok(Ok(())) => registered(),
        Ok(Err(MethodRefusal::NotOffered(_))) => Redirect::to("/portal/account").into_response(),
        Ok(Err(refusal)) => {
            let settings = match settings(&state).await {
                Ok(settings) => settings,
                Err(error) => return internal(error),
            };
            let text = match refusal {
                MethodRefusal::SameQuestion => "Choose a different question for each answer.",
                MethodRefusal::WeakAnswer(problem) => problem,
                _ => "Choose and answer every question.",
            };
            render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &questions_page(&settings, context.csrf, Some(Notice::bad(text))),
            )
        }
        Err(stop) => stopped(&state, stop).await,
    }
}

fn change_page(
    state: &AppState,
    settings: &SelfServiceSettings,
    context: &SessionContext,
    notice: Option<Notice>,
) -> NewPasswordPage {
    NewPasswordPage {
        csrf: context.csrf.clone(),
        action: "/portal/change",
        heading: "Change your password",
        ask_current: true,
        request_id: fresh_request_id(),
        checklist: password_checklist(state, settings, context.handle.account()),
        notice,
        signed_in: !context.handle.session.must_change,
    }
}

pub async fn show_change(State(state): State<AppState>, context: SessionContext) -> Response {
    let settings = match settings(&state).await {
        Ok(settings) => settings,
        Err(error) => return internal(error),
    };
    let notice = context.handle.session.must_change.then(|| {
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
    let context = match SessionContext::from_cookie(&state, &form.cookie).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    let retry = async |text: String| match settings(&state).await {
        Ok(settings) => render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &change_page(&state, &settings, &context, Some(Notice::bad(text))),
        ),
        Err(error) => internal(error),
    };
    let fields = form.fields;
    let Ok(request_id) = fields.request_id.parse::<RequestId>() else {
        return retry("The form is damaged. Try again.".into()).await;
    };
    let changed = sessions::change_password(
        &state,
        &context.handle,
        fields.current_password,
        fields.new_password,
        &fields.confirm_password,
        request_id,
        &origin,
    )
    .await;
    match changed {
        Ok(FinalOutcome::Done(_)) => MessagePage::new(
            "Your password was changed",
            "Your new password is set in your organisation's directory. Use it from now on.",
        )
        .with_link("/portal/account", "Back to your account")
        .render(StatusCode::OK),
        Ok(FinalOutcome::Refused(refusal)) => {
            retry(refusal_text(OperationKind::ChangePassword, &refusal)).await
        }
        Ok(FinalOutcome::NotYet(_)) => Redirect::to("/portal/change").into_response(),
        Err(stop) => stopped(&state, stop).await,
    }
}
