//! Console sign-in: password, then the authenticator code (or, the first time, enrolment of an
//! authenticator), then a session cookie. Between the two steps only a short-lived challenge
//! exists, which opens nothing by itself.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use writeback_proto::time::UnixMillis;
use writeback_store::{Administrator, SignInChallenge};

use super::pages::{EnrolPage, ErrorPage, SecondFactorPage, SignInPage, render};
use super::session::{
    CHALLENGE_COOKIE, ConsoleForm, PRE_SIGN_IN_COOKIE, SESSION_COOKIE, cookie, csrf_token,
    set_cookie,
};
use crate::api::{ApiError, Origin};
use crate::auth::{new_token, token_hash};
use crate::browser_form::form_fields;
use crate::sign_in::{self, CodeCheck, MAX_SECOND_FACTOR_FAILURES};
use crate::{AppState, totp};

/// Time to type a code (or scan a QR code and type one) after the password.
const CHALLENGE_LIFETIME: Duration = Duration::from_secs(5 * 60);
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

form_fields!(Console, PRE_SIGN_IN_COOKIE => PasswordForm);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeForm {
    csrf: String,
    code: String,
}

form_fields!(Console, CHALLENGE_COOKIE => CodeForm);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOutForm {
    csrf: String,
}

form_fields!(Console, SESSION_COOKIE => SignOutForm);

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
        && let Ok(Some(administrator)) = state
            .store
            .session_administrator(&token_hash(&token), UnixMillis::now())
            .await
        && administrator.totp_enrolled
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
    let administrator = match sign_in::check_password(&state, &email, password, &origin, now).await
    {
        Ok(Some(administrator)) => administrator,
        Ok(None) => {
            return sign_in_page(
                &headers,
                StatusCode::UNAUTHORIZED,
                &email,
                Some("The email or password is not correct."),
            );
        }
        Err(error) => return internal(error),
    };
    let proposed = if administrator.totp_enrolled {
        None
    } else {
        match totp::new_secret() {
            Ok(secret) => Some(secret),
            Err(error) => return internal(error),
        }
    };
    let challenge = match new_token("wbc_") {
        Ok(token) => token,
        Err(error) => return internal(error),
    };
    let created = state
        .store
        .create_sign_in_challenge(
            &token_hash(challenge.expose_secret()),
            administrator.id,
            proposed.as_deref().map(Vec::as_slice),
            now,
            now.saturating_add(CHALLENGE_LIFETIME),
        )
        .await;
    if let Err(error) = created {
        return internal(error);
    }
    let next = if proposed.is_some() {
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
            challenge.expose_secret(),
            CHALLENGE_LIFETIME.as_secs(),
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
) -> Result<(String, SignInChallenge), Response> {
    let restart = || Redirect::to("/console/sign-in").into_response();
    let token = cookie(headers, CHALLENGE_COOKIE).ok_or_else(restart)?;
    let challenge = state
        .store
        .sign_in_challenge(&token_hash(&token), UnixMillis::now())
        .await
        .map_err(internal)?
        .ok_or_else(restart)?;
    Ok((token, challenge))
}

pub async fn show_code(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match pending_challenge(&state, &headers).await {
        Ok((_, challenge)) if challenge.proposed_totp_secret.is_some() => {
            Redirect::to("/console/sign-in/enrol").into_response()
        }
        Ok((token, challenge)) => code_page(&token, &challenge, StatusCode::OK, None),
        Err(response) => response,
    }
}

fn code_page(
    token: &str,
    challenge: &SignInChallenge,
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
        Ok((token, challenge)) => match &challenge.proposed_totp_secret {
            Some(secret) => enrolment_page(&token, &challenge, secret, StatusCode::OK, None),
            None => Redirect::to("/console/sign-in/code").into_response(),
        },
        Err(response) => response,
    }
}

fn enrolment_page(
    token: &str,
    challenge: &SignInChallenge,
    secret: &[u8],
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let email = &challenge.administrator.email;
    let uri = totp::provisioning_uri("Writeback", email, secret);
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
        &EnrolPage {
            layout: None,
            csrf: csrf_token(token),
            email: email.clone(),
            manual_key,
            qr_data_uri: format!("data:image/svg+xml;base64,{}", STANDARD.encode(svg)),
            error: error.map(str::to_owned),
        },
    )
}

/// Ends a challenge that had too many wrong codes: the next try starts from the password.
async fn give_up(state: &AppState, headers: &HeaderMap, token: &str, message: &str) -> Response {
    if let Err(error) = state
        .store
        .delete_sign_in_challenge(&token_hash(token))
        .await
    {
        return internal(error);
    }
    let mut response = sign_in_page(headers, StatusCode::TOO_MANY_REQUESTS, "", Some(message));
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(CHALLENGE_COOKIE, "", 0));
    response
}

const TOO_MANY_CODES: &str =
    "Too many wrong codes. Wait 15 minutes, then sign in again from the start.";

pub async fn submit_code(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    form: ConsoleForm<CodeForm>,
) -> Response {
    let (token, challenge) = match pending_challenge(&state, &headers).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    if challenge.proposed_totp_secret.is_some() {
        return Redirect::to("/console/sign-in/enrol").into_response();
    }
    let now = UnixMillis::now();
    let check = sign_in::check_enrolled_code(
        &state,
        &challenge.administrator,
        &form.fields.code,
        &origin,
        now,
    )
    .await;
    match check {
        Ok(CodeCheck::Accepted) => {
            complete(&state, &token, &challenge.administrator, &origin, now).await
        }
        Ok(CodeCheck::Wrong) => match state
            .store
            .record_challenge_failure(&token_hash(&token))
            .await
        {
            Ok(failures) if failures as usize >= MAX_SECOND_FACTOR_FAILURES => {
                give_up(&state, &headers, &token, TOO_MANY_CODES).await
            }
            Ok(_) => code_page(
                &token,
                &challenge,
                StatusCode::UNAUTHORIZED,
                Some(
                    "That code is not correct, or was already used. Wait for the next code and try again.",
                ),
            ),
            Err(error) => internal(error),
        },
        Ok(CodeCheck::Throttled) => give_up(&state, &headers, &token, TOO_MANY_CODES).await,
        Err(error) => internal(error),
    }
}

pub async fn submit_enrolment(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    form: ConsoleForm<CodeForm>,
) -> Response {
    let (token, challenge) = match pending_challenge(&state, &headers).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    let Some(proposed) = challenge.proposed_totp_secret.clone() else {
        return Redirect::to("/console/sign-in/code").into_response();
    };
    let proposed = zeroize::Zeroizing::new(proposed);
    let now = UnixMillis::now();
    let check = sign_in::confirm_enrolment(
        &state,
        &challenge.administrator,
        &proposed,
        &form.fields.code,
        &origin,
        now,
    )
    .await;
    match check {
        Ok(CodeCheck::Accepted) => {
            let administrator = Administrator {
                totp_enrolled: true,
                ..challenge.administrator
            };
            complete(&state, &token, &administrator, &origin, now).await
        }
        Ok(CodeCheck::Wrong) => match state
            .store
            .record_challenge_failure(&token_hash(&token))
            .await
        {
            Ok(failures) if failures as usize >= MAX_SECOND_FACTOR_FAILURES => {
                give_up(&state, &headers, &token, TOO_MANY_CODES).await
            }
            Ok(_) => enrolment_page(
                &token,
                &challenge,
                &proposed,
                StatusCode::UNAUTHORIZED,
                Some(
                    "That code does not match. Check that the app shows Writeback's new entry, wait for its next code and try again.",
                ),
            ),
            Err(error) => internal(error),
        },
        Ok(CodeCheck::Throttled) => give_up(&state, &headers, &token, TOO_MANY_CODES).await,
        Err(error) => internal(error),
    }
}

/// The challenge is met: it ends, and a session begins.
async fn complete(
    state: &AppState,
    challenge_token: &str,
    administrator: &Administrator,
    origin: &Option<String>,
    now: UnixMillis,
) -> Response {
    if let Err(error) = state
        .store
        .delete_sign_in_challenge(&token_hash(challenge_token))
        .await
    {
        return internal(error);
    }
    let (session, _) = match sign_in::open_session(state, administrator, origin, now).await {
        Ok(opened) => opened,
        Err(error) => return internal(error),
    };
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
