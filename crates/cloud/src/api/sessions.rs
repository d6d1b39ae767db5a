//! Administrator sign-in through the API, always with an authenticator code, and the enrolment
//! of that authenticator.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use secrecy::{ExposeSecret, SecretString};
use writeback_proto::api::{
    ChallengeAnswerRequest, EnrolmentChallenge, EnrolmentRequest, ErrorResponse, SignInRequest,
    SignInResponse,
};
use writeback_proto::time::UnixMillis;
use writeback_store::Administrator;

use super::extract::{ApiError, JsonBody};
use crate::service::administrator_sign_in::{
    self as sign_in, ChallengeAnswer, CodeCheck, PasswordCheck, SignedIn,
};
use crate::service::state::AppState;
use crate::service::totp;
use crate::web::client::Origin;

/// The API's answer to a refused password.
fn password_refusal(check: PasswordCheck) -> Result<Administrator, ApiError> {
    match check {
        PasswordCheck::Accepted(administrator) => Ok(administrator),
        PasswordCheck::Wrong => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            sign_in::INVALID_CREDENTIALS,
            "The email or password is not correct.",
        )),
        PasswordCheck::Throttled => Err(too_many_attempts()),
        PasswordCheck::Busy => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Writeback is checking many passwords at the moment: try again shortly.",
        )),
    }
}

fn too_many_attempts() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        sign_in::TOO_MANY_ATTEMPTS,
        "Too many wrong passwords or codes for this administrator or from this address: wait 15 minutes and try again.",
    )
}

#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = SignInRequest, responses((status = 201, description = "Signed in.", body = SignInResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Wrong email or password, authenticator code missing (`second_factor_required`) or wrong.", body = ErrorResponse), (status = 403, description = "No authenticator enrolled yet (`second_factor_enrolment_required`): enrol with POST /api/v1/sessions/enrolment.", body = ErrorResponse), (status = 429, description = "Too many wrong passwords or codes for this administrator or from this address.", body = ErrorResponse), (status = 503, description = "Too many password checks at once: try again shortly.", body = ErrorResponse)))]
pub async fn sign_in(
    State(state): State<AppState>,
    Origin(origin): Origin,
    JsonBody(body): JsonBody<SignInRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let now = UnixMillis::now();
    let unauthorized = |code, message: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, message);
    let administrator = password_refusal(
        sign_in::check_password(&state, &body.email, body.password, &origin, now)
            .await
            .map_err(ApiError::internal)?,
    )?;
    if !administrator.totp_enrolled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "second_factor_enrolment_required",
            "This administrator has no authenticator yet: enrol one with POST /api/v1/sessions/enrolment (`writeback login` does it for you).",
        ));
    }
    let Some(code) = body.totp_code.as_deref() else {
        return Err(unauthorized(
            "second_factor_required",
            "Send the code from your authenticator app as `totp_code` too.",
        ));
    };
    match sign_in::sign_in_with_code(&state, &administrator, code, &origin, now)
        .await
        .map_err(ApiError::internal)?
    {
        Ok((token, expires_at)) => Ok((
            StatusCode::CREATED,
            Json(SignInResponse { token, expires_at }),
        )),
        Err(CodeCheck::Throttled) => Err(too_many_attempts()),
        Err(_) => Err(unauthorized(
            sign_in::INVALID_SECOND_FACTOR,
            "The authenticator code is not correct, or was already used.",
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/sessions/enrolment", tag = "sessions", request_body = EnrolmentRequest, responses((status = 201, description = "A key proposed for the administrator's authenticator, and the challenge to answer with its first code at POST /api/v1/sessions/challenge.", body = EnrolmentChallenge), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Wrong email or password.", body = ErrorResponse), (status = 409, description = "An authenticator is enrolled already.", body = ErrorResponse), (status = 429, description = "Too many wrong passwords for this administrator or from this address.", body = ErrorResponse), (status = 503, description = "Too many password checks at once: try again shortly.", body = ErrorResponse)))]
pub async fn begin_enrolment(
    State(state): State<AppState>,
    Origin(origin): Origin,
    JsonBody(body): JsonBody<EnrolmentRequest>,
) -> Result<(StatusCode, Json<EnrolmentChallenge>), ApiError> {
    let now = UnixMillis::now();
    let administrator = password_refusal(
        sign_in::check_password(&state, &body.email, body.password, &origin, now)
            .await
            .map_err(ApiError::internal)?,
    )?;
    if administrator.totp_enrolled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_enrolled",
            "This administrator has an authenticator already: sign in with its code. A lost one is removed with `writeback-cloud admin reset-second-factor` on the cloud's host.",
        ));
    }
    let pending = sign_in::begin_second_step(&state, &administrator, now)
        .await
        .map_err(ApiError::internal)?;
    let key = pending
        .proposed_key
        .ok_or_else(|| ApiError::internal("no key was proposed"))?;
    Ok((
        StatusCode::CREATED,
        Json(EnrolmentChallenge {
            challenge: pending.token,
            otpauth_uri: SecretString::from(totp::provisioning_uri(
                "Writeback",
                &administrator.email,
                &key,
            )),
            key: SecretString::from(totp::base32(&key)),
            expires_at: pending.expires_at,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/sessions/challenge", tag = "sessions", request_body = ChallengeAnswerRequest, responses((status = 201, description = "The authenticator is enrolled and the administrator signed in.", body = SignInResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "The code is not correct; try the next one.", body = ErrorResponse), (status = 410, description = "The challenge is unknown, expired, or ended after too many wrong codes: start again.", body = ErrorResponse), (status = 429, description = "Too many wrong codes for this administrator or from this address.", body = ErrorResponse)))]
pub async fn answer_challenge(
    State(state): State<AppState>,
    Origin(origin): Origin,
    JsonBody(body): JsonBody<ChallengeAnswerRequest>,
) -> Result<(StatusCode, Json<SignInResponse>), ApiError> {
    let now = UnixMillis::now();
    let token = body.challenge.expose_secret();
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            "challenge_ended",
            "The enrolment has expired or ended after too many wrong codes: start again with POST /api/v1/sessions/enrolment.",
        )
    };
    let challenge = sign_in::pending_challenge(&state, token, now)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(gone)?;
    match sign_in::answer_challenge(&state, token, &challenge, &body.totp_code, &origin, now)
        .await
        .map_err(ApiError::internal)?
    {
        ChallengeAnswer::SignedIn {
            token, expires_at, ..
        } => Ok((
            StatusCode::CREATED,
            Json(SignInResponse { token, expires_at }),
        )),
        ChallengeAnswer::Wrong => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            sign_in::INVALID_SECOND_FACTOR,
            "That code is not correct: wait for the next one and try again.",
        )),
        ChallengeAnswer::Ended => Err(gone()),
    }
}

#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "sessions", security(("bearer" = [])), responses((status = 204, description = "Signed out."), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn sign_out(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_session(&signed_in.token_hash)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
