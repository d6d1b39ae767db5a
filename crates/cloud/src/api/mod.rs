//! The admin REST API. Every writeback answers synchronously with the directory's own result.

pub(crate) mod agents;
pub(crate) mod audit;
pub(crate) mod directory;
mod extract;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use secrecy::SecretString;
use writeback_policy::{MAX_PASSWORD_UTF16_UNITS, utf16_length};
use writeback_proto::ProtoError;
use writeback_proto::api::{
    ChangePasswordRequest, OperationResponse, ResetPasswordRequest, SignInRequest, SignInResponse,
};
use writeback_proto::ids::RequestId;
use writeback_proto::operation::{Operation, OperationKind, UserRef};
use writeback_proto::result::ResultCode;
use writeback_proto::sealing::{SealContext, SealedSecret, SealingPublicKey, SecretField, seal};
use writeback_proto::time::UnixMillis;
use writeback_store::AuditEvent;

pub(crate) use extract::origin_of;
pub use extract::{ApiError, Origin, PeerAddress, SignedIn, UserPath};
use extract::{IdempotencyKey, JsonBody};

use crate::sign_in::{self, CodeCheck};
use crate::{AppState, messages, relay};

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/api/v1/sessions", post(sign_in))
        .route("/api/v1/sessions/current", delete(sign_out))
        .route("/api/v1/agents", get(agents::list_agents))
        .route("/api/v1/agents/{agent}/revoke", post(agents::revoke_agent))
        .route("/api/v1/audit", get(audit::list_audit))
        .route(
            "/api/v1/settings/audit",
            get(audit::audit_settings).put(audit::update_audit_settings),
        )
        .route("/api/v1/directories", get(directory::list_directories))
        .route(
            "/api/v1/directories/{directory}/health",
            get(directory::directory_health),
        )
        .route(
            "/api/v1/directories/{directory}/registration-tokens",
            post(agents::create_registration_token),
        )
        .route(
            "/api/v1/directories/{directory}/users/{user}/reset-password",
            post(reset_password),
        )
        .route(
            "/api/v1/directories/{directory}/users/{user}/change-password",
            post(change_password),
        )
        .route(
            "/api/v1/directories/{directory}/users/{user}/unlock",
            post(unlock),
        )
        .route(
            "/api/v1/directories/{directory}/users",
            get(directory::list_users),
        )
        .route(
            "/api/v1/directories/{directory}/users/{user}",
            get(directory::show_user),
        )
        .route(
            "/api/v1/directories/{directory}/groups",
            get(directory::list_groups),
        )
        .route(
            "/api/v1/directories/{directory}/sync",
            get(directory::sync_status),
        )
        .route(
            "/api/v1/directories/{directory}/sync/full",
            post(directory::request_full_sync),
        )
        .route("/agent/v1/connect", get(relay::connection::upgrade))
        .merge(crate::console::router())
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/console") {
                crate::console::not_found().await
            } else {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such endpoint.")
                    .into_response()
            }
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn sign_in(
    State(state): State<AppState>,
    Origin(origin): Origin,
    JsonBody(body): JsonBody<SignInRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let now = UnixMillis::now();
    let unauthorized = |code, message: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, message);
    let administrator = sign_in::check_password(&state, &body.email, body.password, &origin, now)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            unauthorized(
                sign_in::INVALID_CREDENTIALS,
                "The email or password is not correct.",
            )
        })?;
    if administrator.totp_enrolled {
        let Some(code) = body.totp_code.as_deref() else {
            return Err(unauthorized(
                "second_factor_required",
                "This administrator signs in with a code from their authenticator app too: send it as `totp_code`.",
            ));
        };
        match sign_in::check_enrolled_code(&state, &administrator, code, &origin, now)
            .await
            .map_err(ApiError::internal)?
        {
            CodeCheck::Accepted => {}
            CodeCheck::Wrong => {
                return Err(unauthorized(
                    sign_in::INVALID_SECOND_FACTOR,
                    "The authenticator code is not correct, or was already used.",
                ));
            }
            CodeCheck::Throttled => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    sign_in::TOO_MANY_ATTEMPTS,
                    "Too many wrong authenticator codes: wait 15 minutes and try again.",
                ));
            }
        }
    }
    let (token, expires_at) = sign_in::open_session(&state, &administrator, &origin, now)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(SignInResponse { token, expires_at }),
    ))
}

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
fn check_password_shape(password: &SecretString, field: &str) -> Result<(), ApiError> {
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

fn seal_for(
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
    perform(
        state,
        signed_in,
        target,
        request_id,
        OperationKind::ResetPassword,
        &build,
    )
    .await
}

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

/// Dispatches one operation, waits for the directory's answer, audits it and answers.
async fn perform(
    state: &AppState,
    signed_in: &SignedIn,
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
    tracing::info!(%request_id, operation = %kind, %directory, %user, actor = %signed_in.administrator.email, "operation started");
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
        actor: signed_in.administrator.email.clone(),
        action: kind.as_str().into(),
        directory: Some(directory.to_string()),
        target: Some(user.to_string()),
        request_id: Some(request_id.to_string()),
        result_code: result.code().into(),
        detail,
        origin: signed_in.origin.clone(),
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

fn http_status(result: &ResultCode) -> StatusCode {
    match result {
        ResultCode::Success => StatusCode::OK,
        ResultCode::PolicyViolation { .. }
        | ResultCode::WrongCurrentPassword
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
