//! Console sign-in: password, then the authenticator code (or, the first time, enrolment of an
//! authenticator), then a session cookie. Between the two steps only a short-lived challenge
//! exists, which opens nothing by itself.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use writeback_proto::time::UnixMillis;

use super::pages::{EnrolPage, ErrorPage, SecondFactorPage, SignInPage, render};
use super::session::{
    CHALLENGE_COOKIE, ConsoleForm, PRE_SIGN_IN_COOKIE, SESSION_COOKIE, cookie, csrf_token,
    set_cookie,
};
use crate::service::administrator_sign_in::{
    self as sign_in, Challenge, ChallengeAnswer, PasswordCheck,
};
use crate::service::auth::{new_token, token_hash};
use crate::service::state::AppState;
use crate::web::browser_form::form_fields;
use crate::web::client::Origin;
use crate::web::failure::HttpFailure as ApiError;
use crate::web::pages::AuthenticatorPicture;

const PRE_SIGN_IN_SECONDS: u64 = 3600;

fn internal(error: impl std::fmt::Display) -> Response {
    ErrorPage::from(ApiError::internal(error)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordForm {
    csrf: String,
    email: String,
    password: SecretString,
}

form_fields!(crate::console::pages::refused, PRE_SIGN_IN_COOKIE => PasswordForm);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeForm {
    csrf: String,
    code: String,
}

form_fields!(crate::console::pages::refused, CHALLENGE_COOKIE => CodeForm);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOutForm {
    csrf: String,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => SignOutForm);

/// The sign-in page with a fresh anchor cookie for its CSRF token (or the one the browser has).
fn sign_in_page(
    headers: &HeaderMap,
    status: StatusCode,
    email: &str,
    error: Option<&str>,
) -> Response {
    let anchor = match cookie(headers, PRE_SIGN_IN_COOKIE) {
        Some(anchor) => anchor,
        None => match new_token("wbp_") {
            Ok(token) => token.expose_secret().to_owned(),
            Err(error) => return internal(error),
        },
    };
    let page = SignInPage {
        layout: None,
        csrf: csrf_token(&anchor),
        email: email.into(),
        error: error.map(str::to_owned),
    };
    let mut response = render(status, &page);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(PRE_SIGN_IN_COOKIE, &anchor, PRE_SIGN_IN_SECONDS),
    );
    response
}

pub async fn show_sign_in(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Ok(Some(_)) = sign_in::session(&state, &token, UnixMillis::now()).await
    {
        return Redirect::to("/console").into_response();
    }
    sign_in_page(&headers, StatusCode::OK, "", None)
}

pub async fn submit_password(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    form: ConsoleForm<PasswordForm>,
) -> Response {
    let PasswordForm {
        email, password, ..
    } = form.fields;
    let now = UnixMillis::now();
    let refused = |status, message| sign_in_page(&headers, status, &email, Some(message));
    let administrator = match sign_in::check_password(&state, &email, password, &origin, now).await
    {
        Ok(PasswordCheck::Accepted(administrator)) => administrator,
        Ok(PasswordCheck::Wrong) => {
            return refused(
                StatusCode::UNAUTHORIZED,
                "The email or password is not correct.",
            );
        }
        Ok(PasswordCheck::Throttled) => {
            return refused(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_ATTEMPTS);
        }
        Ok(PasswordCheck::Busy) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Writeback is checking many passwords at the moment. Try again shortly.",
            );
        }
        Err(error) => return internal(error),
    };
    let pending = match sign_in::begin_second_step(&state, &administrator, now).await {
        Ok(pending) => pending,
        Err(error) => return internal(error),
    };
    let next = if pending.proposed_key.is_some() {
        "/console/sign-in/enrol"
    } else {
        "/console/sign-in/code"
    };
    let mut response = Redirect::to(next).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            CHALLENGE_COOKIE,
            pending.token.expose_secret(),
            sign_in::CHALLENGE_LIFETIME.as_secs(),
        ),
    );
    headers.append(header::SET_COOKIE, set_cookie(PRE_SIGN_IN_COOKIE, "", 0));
    response
}

/// The pending challenge and its cookie value, or the answer that sends the browser back to the
/// start.
async fn pending_challenge(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, Challenge), Response> {
    let restart = || Redirect::to("/console/sign-in").into_response();
    let token = cookie(headers, CHALLENGE_COOKIE).ok_or_else(restart)?;
    let challenge = sign_in::pending_challenge(state, &token, UnixMillis::now())
        .await
        .map_err(internal)?
        .ok_or_else(restart)?;
    Ok((token, challenge))
}

pub async fn show_code(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match pending_challenge(&state, &headers).await {
        Ok((_, challenge)) if challenge.proposed_key.is_some() => {
            Redirect::to("/console/sign-in/enrol").into_response()
        }
        Ok((token, challenge)) => code_page(&token, &challenge, StatusCode::OK, None),
        Err(response) => response,
    }
}

fn code_page(
    token: &str,
    challenge: &Challenge,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    render(
        status,
        &SecondFactorPage {
            layout: None,
            csrf: csrf_token(token),
            email: challenge.administrator.email.clone(),
            error: error.map(str::to_owned),
        },
    )
}

pub async fn show_enrolment(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match pending_challenge(&state, &headers).await {
        Ok((token, challenge)) => match &challenge.proposed_key {
            Some(key) => enrolment_page(&token, &challenge, key, StatusCode::OK, None),
            None => Redirect::to("/console/sign-in/code").into_response(),
        },
        Err(response) => response,
    }
}

fn enrolment_page(
    token: &str,
    challenge: &Challenge,
    secret: &[u8],
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let email = &challenge.administrator.email;
    let picture = match AuthenticatorPicture::new("Writeback", email, secret) {
        Ok(picture) => picture,
        Err(error) => return internal(error),
    };
    render(
        status,
        &EnrolPage {
            layout: None,
            csrf: csrf_token(token),
            email: email.clone(),
            manual_key: picture.manual_key,
            qr_data_uri: format!("data:image/svg+xml;base64,{}", picture.qr_svg_base64),
            error: error.map(str::to_owned),
        },
    )
}

const TOO_MANY_CODES: &str =
    "Too many wrong codes. Wait 15 minutes, then sign in again from the start.";
const TOO_MANY_ATTEMPTS: &str = "Too many wrong passwords or codes for this administrator or from this address. Wait 15 minutes and try again.";

/// Answers the pending challenge with a code, from the code page or the enrolment page.
async fn answer(
    state: &AppState,
    origin: &Option<String>,
    headers: &HeaderMap,
    code: &str,
    enrolling: bool,
) -> Response {
    let (token, challenge) = match pending_challenge(state, headers).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    if challenge.proposed_key.is_some() != enrolling {
        let page = if enrolling {
            "/console/sign-in/code"
        } else {
            "/console/sign-in/enrol"
        };
        return Redirect::to(page).into_response();
    }
    let now = UnixMillis::now();
    match sign_in::answer_challenge(state, &token, &challenge, code, origin, now).await {
        Ok(ChallengeAnswer::SignedIn { token: session, .. }) => {
            let mut response = Redirect::to("/console").into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                set_cookie(
                    SESSION_COOKIE,
                    session.expose_secret(),
                    state.config.admin_session_hours * 3600,
                ),
            );
            headers.append(header::SET_COOKIE, set_cookie(CHALLENGE_COOKIE, "", 0));
            response
        }
        Ok(ChallengeAnswer::Wrong) => match &challenge.proposed_key {
            Some(key) => enrolment_page(
                &token,
                &challenge,
                key,
                StatusCode::UNAUTHORIZED,
                Some(
                    "That code does not match. Check that the app shows Writeback's new entry, wait for its next code and try again.",
                ),
            ),
            None => code_page(
                &token,
                &challenge,
                StatusCode::UNAUTHORIZED,
                Some(
                    "That code is not correct, or was already used. Wait for the next code and try again.",
                ),
            ),
        },
        Ok(ChallengeAnswer::Ended) => {
            let mut response = sign_in_page(
                headers,
                StatusCode::TOO_MANY_REQUESTS,
                "",
                Some(TOO_MANY_CODES),
            );
            response
                .headers_mut()
                .append(header::SET_COOKIE, set_cookie(CHALLENGE_COOKIE, "", 0));
            response
        }
        Err(error) => internal(error),
    }
}

pub async fn submit_code(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    form: ConsoleForm<CodeForm>,
) -> Response {
    answer(&state, &origin, &headers, &form.fields.code, false).await
}

pub async fn submit_enrolment(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    form: ConsoleForm<CodeForm>,
) -> Response {
    answer(&state, &origin, &headers, &form.fields.code, true).await
}

pub async fn sign_out(State(state): State<AppState>, form: ConsoleForm<SignOutForm>) -> Response {
    if let Err(error) = state.store.delete_session(&token_hash(&form.cookie)).await {
        return internal(error);
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    response
}
