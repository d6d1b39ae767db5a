//! The admin REST API. Every writeback answers synchronously with the directory's own result.

mod administrators;
pub(crate) mod agents;
pub(crate) mod audit;
pub(crate) mod directory;
mod extract;
pub(crate) mod self_service;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use writeback_policy::{MAX_PASSWORD_UTF16_UNITS, utf16_length};
use writeback_proto::ProtoError;
use writeback_proto::api::{
    ChallengeAnswerRequest, ChangePasswordRequest, EnrolmentChallenge, EnrolmentRequest,
    ErrorResponse, OperationResponse, ResetPasswordRequest, SignInRequest, SignInResponse,
};
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::operation::{Operation, OperationKind, UserRef};
use writeback_proto::result::ResultCode;
use writeback_proto::sealing::{SealContext, SealedSecret, SealingPublicKey, SecretField, seal};
use writeback_proto::time::UnixMillis;
use writeback_store::{Administrator, AuditEvent};

pub use extract::{ApiError, Origin, PeerAddress, SignedIn, UserPath};
pub(crate) use extract::{BodyFailure, origin_of, read_body};
use extract::{IdempotencyKey, JsonBody};

use crate::sign_in::{self, ChallengeAnswer, CodeCheck, PasswordCheck};
use crate::{AppState, messages, relay, totp};

/// Describes the API: everything under `/api/v1`, generated from the handlers' annotations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Writeback admin API",
        description = "Administer Writeback: reset, change and unlock passwords in the on-premises directory with its own synchronous verdict; read the synced users and groups; manage agents; read the audit log and health. Sign in with POST /api/v1/sessions and send the token as `Authorization: Bearer`. Bodies are JSON; errors are `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerSecurity),
    tags(
        (name = "sessions", description = "Administrator sign-in, always with an authenticator code; enrolment of the authenticator."),
        (name = "administrators", description = "Listing, disabling, enabling and deleting administrators, and ending their sessions."),
        (name = "writeback", description = "Password resets, changes and unlocks, answered with the directory's own result."),
        (name = "directory", description = "The synced copy of each directory's users and groups."),
        (name = "health", description = "Each directory's health."),
        (name = "agents", description = "Registering and revoking on-premises agents."),
        (name = "audit", description = "The append-only audit log and its retention."),
        (name = "settings", description = "The self-service policy.")
    )
)]
struct ApiDocument;

#[derive(Debug)]
struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The documented API routes, with their description.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDocument::openapi())
        .routes(routes!(sign_in))
        .routes(routes!(begin_enrolment))
        .routes(routes!(answer_challenge))
        .routes(routes!(sign_out))
        .routes(routes!(administrators::list_administrators))
        .routes(routes!(administrators::delete_administrator))
        .routes(routes!(administrators::disable_administrator))
        .routes(routes!(administrators::enable_administrator))
        .routes(routes!(administrators::end_administrator_sessions))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::revoke_agent))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::audit_settings, audit::update_audit_settings))
        .routes(routes!(
            self_service::self_service_settings,
            self_service::update_self_service_settings
        ))
        .routes(routes!(self_service::clear_self_service_methods))
        .routes(routes!(directory::list_directories))
        .routes(routes!(directory::directory_health))
        .routes(routes!(agents::create_registration_token))
        .routes(routes!(reset_password))
        .routes(routes!(change_password))
        .routes(routes!(unlock))
        .routes(routes!(directory::list_users))
        .routes(routes!(directory::show_user))
        .routes(routes!(directory::list_groups))
        .routes(routes!(directory::sync_status))
        .routes(routes!(directory::request_full_sync))
}

/// The OpenAPI document of the admin API, as served at `/api/v1/openapi.json` and committed as
/// `docs/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let (api, document) = api_routes().split_for_parts();
    let document = Arc::new(document);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::scrape_public))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .merge(api)
        .route("/agent/v1/connect", get(relay::connection::upgrade))
        .merge(crate::console::router())
        .merge(crate::portal::router())
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/console") {
                crate::console::not_found().await
            } else if uri.path().starts_with("/portal") {
                crate::portal::not_found().await
            } else {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such endpoint.")
                    .into_response()
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::resolve_client,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

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
async fn sign_in(
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
async fn begin_enrolment(
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
async fn answer_challenge(
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
async fn sign_out(
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

/// Passwords longer than AD accepts are refused before anything is sealed or sent.
pub(crate) fn check_password_shape(password: &SecretString, field: &str) -> Result<(), ApiError> {
    let length = utf16_length(secrecy::ExposeSecret::expose_secret(password));
    if length == 0 {
        return Err(ApiError::invalid(format!("`{field}` must not be empty.")));
    }
    if length > MAX_PASSWORD_UTF16_UNITS {
        return Err(ApiError::invalid(format!(
            "`{field}` is longer than {MAX_PASSWORD_UTF16_UNITS} characters."
        )));
    }
    Ok(())
}

pub(crate) fn seal_for(
    key: &SealingPublicKey,
    request_id: RequestId,
    operation: OperationKind,
    user: &UserRef,
    field: SecretField,
    secret: &SecretString,
) -> Result<SealedSecret, ProtoError> {
    let context = SealContext {
        request_id,
        operation,
        user,
        field,
    };
    seal(key, &context, secret)
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/users/{user}/reset-password", tag = "writeback", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID."), ("Idempotency-Key" = Option<String>, Header, description = "32 hexadecimal digits; a retry with the same key is applied at most once.")), request_body = ResetPasswordRequest, responses((status = 200, description = "Done in the directory.", body = OperationResponse), (status = 403, description = "The directory or Writeback refused: out of scope, protected account, no permission.", body = OperationResponse), (status = 404, description = "No such user, or no such directory.", body = OperationResponse), (status = 409, description = "More than one user matches.", body = OperationResponse), (status = 422, description = "Refused by the password policy, or the account state.", body = OperationResponse), (status = 502, description = "The directory did not answer.", body = OperationResponse), (status = 503, description = "No agent is connected.", body = OperationResponse), (status = 504, description = "The agent did not answer in time; the outcome is unknown.", body = OperationResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
async fn reset_password(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserPath,
    IdempotencyKey(request_id): IdempotencyKey,
    JsonBody(body): JsonBody<ResetPasswordRequest>,
) -> Result<(StatusCode, Json<OperationResponse>), ApiError> {
    reset_password_as(&state, &signed_in, target, request_id, body)
        .await
        .map(|(status, response)| (status, Json(response)))
}

/// A reset by `signed_in`, for the API and the console alike.
pub(crate) async fn reset_password_as(
    state: &AppState,
    signed_in: &SignedIn,
    target: UserPath,
    request_id: RequestId,
    body: ResetPasswordRequest,
) -> Result<(StatusCode, OperationResponse), ApiError> {
    check_password_shape(&body.new_password, "new_password")?;
    let target = directory::resolve_target(state, target).await?;
    let notice_target = (
        target.directory.clone(),
        target.name.clone(),
        target.user.clone(),
    );
    let (must_change, unlock) = (body.must_change, body.unlock);
    let user = target.user.clone();
    let new_password = body.new_password;
    let build = move |key: &SealingPublicKey| -> Result<Operation, ProtoError> {
        Ok(Operation::ResetPassword {
            new_password: seal_for(
                key,
                request_id,
                OperationKind::ResetPassword,
                &user,
                SecretField::NewPassword,
                &new_password,
            )?,
            user: user.clone(),
            must_change,
            unlock,
        })
    };
    let answer = perform(
        state,
        signed_in,
        target,
        request_id,
        OperationKind::ResetPassword,
        &build,
    )
    .await?;
    if answer.1.result.is_success() {
        let (directory, name, user) = notice_target;
        crate::portal::notify_admin_reset(
            state,
            &signed_in.administrator.email,
            &directory,
            &name,
            &user,
        )
        .await;
    }
    Ok(answer)
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/users/{user}/change-password", tag = "writeback", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID."), ("Idempotency-Key" = Option<String>, Header, description = "32 hexadecimal digits; a retry with the same key is applied at most once.")), request_body = ChangePasswordRequest, responses((status = 200, description = "Done in the directory.", body = OperationResponse), (status = 403, description = "The directory or Writeback refused: out of scope, protected account, no permission.", body = OperationResponse), (status = 404, description = "No such user, or no such directory.", body = OperationResponse), (status = 409, description = "More than one user matches.", body = OperationResponse), (status = 422, description = "Refused by the password policy, or the account state.", body = OperationResponse), (status = 502, description = "The directory did not answer.", body = OperationResponse), (status = 503, description = "No agent is connected.", body = OperationResponse), (status = 504, description = "The agent did not answer in time; the outcome is unknown.", body = OperationResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
async fn change_password(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserPath,
    IdempotencyKey(request_id): IdempotencyKey,
    JsonBody(body): JsonBody<ChangePasswordRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_password_shape(&body.current_password, "current_password")?;
    check_password_shape(&body.new_password, "new_password")?;
    let target = directory::resolve_target(&state, target).await?;
    let user = target.user.clone();
    let (current_password, new_password) = (body.current_password, body.new_password);
    let build = move |key: &SealingPublicKey| -> Result<Operation, ProtoError> {
        let kind = OperationKind::ChangePassword;
        Ok(Operation::ChangePassword {
            current_password: seal_for(
                key,
                request_id,
                kind,
                &user,
                SecretField::CurrentPassword,
                &current_password,
            )?,
            new_password: seal_for(
                key,
                request_id,
                kind,
                &user,
                SecretField::NewPassword,
                &new_password,
            )?,
            user: user.clone(),
        })
    };
    perform(
        &state,
        &signed_in,
        target,
        request_id,
        OperationKind::ChangePassword,
        &build,
    )
    .await
    .map(|(status, response)| (status, Json(response)))
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/users/{user}/unlock", tag = "writeback", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID."), ("Idempotency-Key" = Option<String>, Header, description = "32 hexadecimal digits; a retry with the same key is applied at most once.")), responses((status = 200, description = "Done in the directory.", body = OperationResponse), (status = 403, description = "The directory or Writeback refused: out of scope, protected account, no permission.", body = OperationResponse), (status = 404, description = "No such user, or no such directory.", body = OperationResponse), (status = 409, description = "More than one user matches.", body = OperationResponse), (status = 422, description = "Refused by the password policy, or the account state.", body = OperationResponse), (status = 502, description = "The directory did not answer.", body = OperationResponse), (status = 503, description = "No agent is connected.", body = OperationResponse), (status = 504, description = "The agent did not answer in time; the outcome is unknown.", body = OperationResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
async fn unlock(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserPath,
    IdempotencyKey(request_id): IdempotencyKey,
) -> Result<(StatusCode, Json<OperationResponse>), ApiError> {
    unlock_as(&state, &signed_in, target, request_id)
        .await
        .map(|(status, response)| (status, Json(response)))
}

pub(crate) async fn unlock_as(
    state: &AppState,
    signed_in: &SignedIn,
    target: UserPath,
    request_id: RequestId,
) -> Result<(StatusCode, OperationResponse), ApiError> {
    let target = directory::resolve_target(state, target).await?;
    let user = target.user.clone();
    let build = move |_: &SealingPublicKey| -> Result<Operation, ProtoError> {
        Ok(Operation::Unlock { user: user.clone() })
    };
    perform(
        state,
        signed_in,
        target,
        request_id,
        OperationKind::Unlock,
        &build,
    )
    .await
}

/// Who asked for an operation, as the audit log records them.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub name: String,
    pub origin: Option<String>,
}

impl From<&SignedIn> for Actor {
    fn from(signed_in: &SignedIn) -> Self {
        Self {
            name: signed_in.administrator.email.clone(),
            origin: signed_in.origin.clone(),
        }
    }
}

/// Dispatches one operation for an administrator, waits for the directory's answer, audits it
/// and answers.
async fn perform(
    state: &AppState,
    signed_in: &SignedIn,
    target: UserPath,
    request_id: RequestId,
    kind: OperationKind,
    build: &relay::BuildOperation<'_>,
) -> Result<(StatusCode, OperationResponse), ApiError> {
    perform_as(
        state,
        &Actor::from(signed_in),
        target,
        request_id,
        kind,
        build,
    )
    .await
}

/// Dispatches one operation for `actor`, waits for the directory's answer, audits it and answers.
pub(crate) async fn perform_as(
    state: &AppState,
    actor: &Actor,
    target: UserPath,
    request_id: RequestId,
    kind: OperationKind,
    build: &relay::BuildOperation<'_>,
) -> Result<(StatusCode, OperationResponse), ApiError> {
    let UserPath {
        directory,
        name,
        user,
    } = target;
    let user = directory::describe_target(&name, &user);
    // An agent of the directory can only be connected if the directory exists.
    let known = state.relay.serves(&directory)
        || state
            .store
            .directory(&directory)
            .await
            .map_err(ApiError::internal)?
            .is_some();
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_directory",
            format!("No directory is named {directory}."),
        ));
    }
    let started = UnixMillis::now();
    let deadline = started.saturating_add(state.config.request_timeout());
    tracing::info!(%request_id, operation = %kind, %directory, %user, actor = %actor.name, "operation started");
    let dispatched = std::time::Instant::now();
    let result = state
        .relay
        .dispatch(&directory, request_id, deadline, build)
        .await;
    let dispatch_us = dispatched.elapsed().as_micros() as u64;
    state
        .metrics
        .operations
        .increment(&[directory.as_str(), kind.as_str(), result.code()]);
    state
        .metrics
        .operation_seconds
        .observe(&[kind.as_str()], dispatched.elapsed().as_secs_f64());
    let finished = UnixMillis::now();
    tracing::info!(
        %request_id,
        operation = %kind,
        %directory,
        %user,
        result = result.code(),
        elapsed_ms = finished.duration_since(started).as_millis() as u64,
        dispatch_us,
        "operation finished"
    );
    let detail = match &result {
        ResultCode::DirectoryUnavailable { detail } | ResultCode::Internal { detail } => {
            Some(detail.clone())
        }
        ResultCode::PolicyViolation { reason, .. } => Some(reason.as_str().into()),
        _ => None,
    };
    let audit = AuditEvent {
        at: finished,
        actor: actor.name.clone(),
        action: kind.as_str().into(),
        directory: Some(directory.to_string()),
        target: Some(user.to_string()),
        request_id: Some(request_id.to_string()),
        result_code: result.code().into(),
        detail,
        origin: actor.origin.clone(),
    };
    state
        .store
        .append_audit(&audit)
        .await
        .map_err(ApiError::internal)?;
    let status = http_status(&result);
    let message = messages::describe(kind, &result);
    Ok((
        status,
        OperationResponse {
            request_id,
            result,
            message,
        },
    ))
}

pub(crate) fn http_status(result: &ResultCode) -> StatusCode {
    match result {
        ResultCode::Success => StatusCode::OK,
        ResultCode::PolicyViolation { .. }
        | ResultCode::WrongCurrentPassword
        | ResultCode::PasswordExpired
        | ResultCode::MustChangePassword
        | ResultCode::AccountDisabled
        | ResultCode::AccountLocked => StatusCode::UNPROCESSABLE_ENTITY,
        ResultCode::UserNotFound => StatusCode::NOT_FOUND,
        ResultCode::AmbiguousUser => StatusCode::CONFLICT,
        ResultCode::PermissionDenied | ResultCode::ProtectedAccount | ResultCode::OutOfScope => {
            StatusCode::FORBIDDEN
        }
        ResultCode::DirectoryUnavailable { .. } => StatusCode::BAD_GATEWAY,
        ResultCode::AgentUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ResultCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ResultCode::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI fails when the API changes and `docs/openapi.json` does not follow. To accept the
    /// change: `WRITEBACK_UPDATE_OPENAPI=1 cargo test -p writeback-cloud openapi`.
    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let generated = format!("{}\n", openapi_document().to_pretty_json().unwrap());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        if std::env::var_os("WRITEBACK_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not what the code describes; run \
             `WRITEBACK_UPDATE_OPENAPI=1 cargo test -p writeback-cloud openapi` and commit it"
        );
    }

    #[test]
    fn every_operation_but_sign_in_needs_a_session() {
        let document = openapi_document();
        let mut operations = 0;
        for (path, item) in &document.paths.paths {
            for (method, operation) in [
                ("get", &item.get),
                ("post", &item.post),
                ("put", &item.put),
                ("delete", &item.delete),
            ] {
                let Some(operation) = operation else { continue };
                operations += 1;
                let secured = operation
                    .security
                    .as_ref()
                    .is_some_and(|security| !security.is_empty());
                let is_sign_in = path.starts_with("/api/v1/sessions")
                    && path != "/api/v1/sessions/current"
                    && method == "post";
                assert_eq!(secured, !is_sign_in, "{method} {path}");
            }
        }
        assert_eq!(operations, 28);
        let schemas = &document.components.as_ref().unwrap().schemas;
        for name in [
            "ResultCode",
            "OperationResponse",
            "UnixMillis",
            "DirectoryName",
            "ErrorResponse",
        ] {
            assert!(schemas.contains_key(name), "{name} is described");
        }
    }
}
