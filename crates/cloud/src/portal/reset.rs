//! Forgot password and unlock, as pages: each handler parses its form, calls one step of
//! [`crate::service::self_service::recovery`] and renders what it answers.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use writeback_proto::api::VerificationMethod;
use writeback_proto::ids::RequestId;
use writeback_proto::operation::OperationKind;
use writeback_proto::result::OutcomeWarning;
use writeback_proto::time::UnixMillis;

use super::guard::{internal, stopped};
use super::pages::{
    IdentifyPage, MessagePage, MethodChoice, MethodsPage, NewPasswordPage, Notice, ProofPage,
    UnlockPage, checklist, render,
};
use crate::service::auth::new_token;
use crate::service::messages;
use crate::service::self_service::accounts::{any_directory_usable, reported_policy};
use crate::service::self_service::proof::ProofAnswer;
use crate::service::self_service::recovery::{
    self, FinalOutcome, FlowHandle, Identifier, Methods, NotYet, PasswordRefusal, ProofStep,
    Proven, user_words,
};
use crate::service::self_service::state::{Challenge, PortalAccount, Purpose};
use crate::service::self_service::stop::Stop;
use crate::service::state::AppState;
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

/// The reset or unlock in progress, from its cookie.
#[derive(Debug)]
pub struct FlowContext {
    pub handle: FlowHandle,
    pub csrf: String,
}

impl FlowContext {
    async fn open(state: &AppState, value: &str) -> Result<Self, Stop> {
        Ok(Self {
            handle: FlowHandle::open(state, value, UnixMillis::now()).await?,
            csrf: csrf_token(value),
        })
    }
}

impl FromRequestParts<AppState> for FlowContext {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = cookie(&parts.headers, FLOW_COOKIE).unwrap_or_default();
        match Self::open(state, &value).await {
            Ok(context) => Ok(context),
            Err(stop) => Err(stopped(state, stop).await),
        }
    }
}

pub async fn home(State(state): State<AppState>) -> Response {
    let settings = match recovery::open_settings(&state).await {
        Ok(settings) => settings,
        Err(stop) => return stopped(&state, stop).await,
    };
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

/// Starts a flow for whatever name was typed. Every name gets the same answer: the next page.
pub async fn identify(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<IdentifyForm>,
) -> Response {
    let purpose = purpose_of(Some(form.fields.purpose.as_str()));
    let identifier = match Identifier::parse(&form.fields.account) {
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
    let token = match recovery::begin(&state, purpose, identifier, &origin, UnixMillis::now()).await
    {
        Ok(token) => token,
        Err(stop) => return stopped(&state, stop).await,
    };
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
    match recovery::methods(&state, &context.handle).await {
        Ok(Methods::AllProven) => Redirect::to("/portal/new-password").into_response(),
        Ok(Methods::Choose {
            step,
            steps,
            methods,
        }) => render(
            StatusCode::OK,
            &MethodsPage {
                csrf: context.csrf,
                step,
                steps,
                choices: methods
                    .into_iter()
                    .map(|method| MethodChoice {
                        value: method.as_str(),
                        label: method_label(method),
                    })
                    .collect(),
                notice: None,
            },
        ),
        Err(stop) => stopped(&state, stop).await,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodForm {
    csrf: String,
    method: String,
}

form_fields!(crate::portal::pages::refused, FLOW_COOKIE => MethodForm);

pub async fn start_method(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<MethodForm>,
) -> Response {
    let now = UnixMillis::now();
    let started = match FlowHandle::open(&state, &form.cookie, now).await {
        Ok(handle) => {
            recovery::choose_method(&state, &handle, &form.fields.method, &origin, now).await
        }
        Err(stop) => Err(stop),
    };
    match started {
        Ok(Some(_)) => Redirect::to("/portal/verify/proof").into_response(),
        Ok(None) => Redirect::to("/portal/verify").into_response(),
        Err(stop) => stopped(&state, stop).await,
    }
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

/// The proof page again, saying the answer was wrong.
pub fn wrong_proof(challenge: &Challenge, csrf: String, target: ProofTarget) -> Response {
    let notice = Notice::bad(match challenge.method {
        VerificationMethod::SecurityQuestions => "At least one answer is not right. Try again.",
        _ => "That code is not right, or it has expired. Try again.",
    });
    render(
        StatusCode::UNPROCESSABLE_ENTITY,
        &proof_page(challenge, csrf, Some(notice), target),
    )
}

pub async fn show_proof(context: FlowContext) -> Response {
    match &context.handle.flow.challenge {
        Some(challenge) => render(
            StatusCode::OK,
            &proof_page(challenge, context.csrf, None, FLOW_PROOF),
        ),
        None => Redirect::to("/portal/verify").into_response(),
    }
}

/// Declares a proof form that goes with `cookie`: a code, or the answers to up to five
/// questions.
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

        impl From<$name> for ProofAnswer {
            fn from(form: $name) -> Self {
                ProofAnswer {
                    code: form.code,
                    answers: vec![
                        form.answer_0,
                        form.answer_1,
                        form.answer_2,
                        form.answer_3,
                        form.answer_4,
                    ],
                }
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
    let key = crate::service::auth::token_hash(&form.cookie);
    let csrf = csrf_token(&form.cookie);
    let answer = ProofAnswer::from(form.fields);
    match recovery::check_proof(&state, &key, &answer, &origin, UnixMillis::now()).await {
        Ok(ProofStep::NoChallenge | ProofStep::Proven) => {
            Redirect::to("/portal/verify").into_response()
        }
        Ok(ProofStep::Wrong(challenge)) => wrong_proof(&challenge, csrf, FLOW_PROOF),
        Err(stop) => stopped(&state, stop).await,
    }
}

pub async fn show_new_password(State(state): State<AppState>, context: FlowContext) -> Response {
    let proven = match recovery::final_step(&state, &context.handle).await {
        Ok(Ok(proven)) => proven,
        Ok(Err(_)) => return Redirect::to("/portal/verify").into_response(),
        Err(stop) => return stopped(&state, stop).await,
    };
    match proven.purpose {
        Purpose::Unlock => unlock_page(context.csrf, None, StatusCode::OK),
        Purpose::Reset => render(
            StatusCode::OK,
            &reset_page(&state, &proven, context.csrf, None),
        ),
    }
}

pub fn fresh_request_id() -> String {
    RequestId::generate()
        .map(|id| id.to_string())
        .unwrap_or_default()
}

fn reset_page(
    state: &AppState,
    proven: &Proven,
    csrf: String,
    notice: Option<Notice>,
) -> NewPasswordPage {
    NewPasswordPage {
        csrf,
        action: "/portal/new-password",
        heading: "Choose a new password",
        ask_current: false,
        request_id: fresh_request_id(),
        checklist: password_checklist(state, &proven.settings, &proven.account),
        notice,
        signed_in: false,
    }
}

/// What a new password must meet, as the page lists it.
pub fn password_checklist(
    state: &AppState,
    settings: &writeback_proto::api::SelfServiceSettings,
    account: &PortalAccount,
) -> Vec<super::pages::ChecklistItem> {
    checklist(
        reported_policy(state, &account.directory).as_ref(),
        &user_words(account),
        settings,
    )
}

fn unlock_page(csrf: String, notice: Option<Notice>, status: StatusCode) -> Response {
    render(
        status,
        &UnlockPage {
            csrf,
            request_id: fresh_request_id(),
            notice,
        },
    )
}

/// Why a new password was not set, in plain words.
pub fn refusal_text(kind: OperationKind, refusal: &PasswordRefusal) -> String {
    match refusal {
        PasswordRefusal::NotTheSame => {
            "The two new passwords are not the same. Type them again.".into()
        }
        PasswordRefusal::Empty => "Type a new password.".into(),
        PasswordRefusal::TooLong => format!(
            "The new password is longer than the directory accepts ({} characters).",
            writeback_policy::MAX_PASSWORD_UTF16_UNITS
        ),
        PasswordRefusal::CurrentMissing => {
            "Type your current password as you use it to sign in.".into()
        }
        PasswordRefusal::Verdict(result) => messages::describe(kind, result),
    }
}

/// The page a final step goes back to when it was not at that step.
pub fn not_yet(not_yet: NotYet) -> Response {
    match not_yet {
        NotYet::Unproven => Redirect::to("/portal/verify").into_response(),
        NotYet::OtherStep => Redirect::to("/portal/new-password").into_response(),
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

pub async fn set_new_password(
    State(state): State<AppState>,
    Origin(origin): Origin,
    form: BrowserForm<NewPasswordForm>,
) -> Response {
    let context = match FlowContext::open(&state, &form.cookie).await {
        Ok(context) => context,
        Err(stop) => return stopped(&state, stop).await,
    };
    let retry = async |text: String| {
        let proven = match recovery::final_step(&state, &context.handle).await {
            Ok(Ok(proven)) => proven,
            Ok(Err(step)) => return not_yet(step),
            Err(stop) => return stopped(&state, stop).await,
        };
        let notice = Notice::bad(text);
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &reset_page(&state, &proven, context.csrf.clone(), Some(notice)),
        )
    };
    let fields = form.fields;
    let Ok(request_id) = fields.request_id.parse::<RequestId>() else {
        return retry("The form is damaged. Try again.".into()).await;
    };
    let outcome = recovery::set_new_password(
        &state,
        &context.handle,
        fields.new_password,
        &fields.confirm_password,
        request_id,
        &origin,
    )
    .await;
    match outcome {
        Ok(FinalOutcome::Done(_)) => MessagePage::new(
            "Your password was changed",
            "Your new password is set in your organisation's directory, and your account is unlocked. You can sign in with it now.",
        )
        .render(StatusCode::OK),
        Ok(FinalOutcome::NotYet(step)) => not_yet(step),
        Ok(FinalOutcome::Refused(refusal)) => {
            retry(refusal_text(OperationKind::ResetPassword, &refusal)).await
        }
        Err(stop) => stopped(&state, stop).await,
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
    let context = match FlowContext::open(&state, &form.cookie).await {
        Ok(context) => context,
        Err(stop) => return stopped(&state, stop).await,
    };
    let Ok(request_id) = form.fields.request_id.parse::<RequestId>() else {
        return Redirect::to("/portal/new-password").into_response();
    };
    match recovery::unlock(&state, &context.handle, request_id, &origin).await {
        Ok(FinalOutcome::Done(warnings)) if warnings.contains(&OutcomeWarning::WasNotLocked) => {
            MessagePage::new(
                "Your account was not locked",
                "Your account was not locked out, so there was nothing to unlock. Sign in with your usual password; if it is refused, reset your password instead.",
            )
            .with_link("/portal/identify?purpose=reset", "Reset my password")
            .render(StatusCode::OK)
        }
        Ok(FinalOutcome::Done(_)) => MessagePage::new(
            "Your account is unlocked",
            "Your account is unlocked in your organisation's directory. Sign in with your usual password.",
        )
        .render(StatusCode::OK),
        Ok(FinalOutcome::NotYet(step)) => not_yet(step),
        Ok(FinalOutcome::Refused(refusal)) => unlock_page(
            context.csrf,
            Some(Notice::bad(refusal_text(OperationKind::Unlock, &refusal))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(stop) => stopped(&state, stop).await,
    }
}

#[cfg(test)]
mod tests {
    /// Properties of what the portal reads from a browser: the forms.
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

        }
    }
}
