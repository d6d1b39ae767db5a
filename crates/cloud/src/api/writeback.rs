//! Resets, changes and unlocks through the API: parse, call [`writeback::perform`], answer with
//! the directory's own verdict and the HTTP status that fits it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use writeback_proto::api::{
    ChangePasswordRequest, ErrorResponse, OperationResponse, ResetPasswordRequest, WarningView,
};
use writeback_proto::ids::{DirectoryName, RequestId};

use super::extract::{ApiError, IdempotencyKey, JsonBody};
use crate::service::administrator_sign_in::SignedIn;
use crate::service::directory::UserTarget;
use crate::service::messages;
use crate::service::state::AppState;
use crate::service::writeback::{self, Requester, Writeback, WritebackError, WritebackOutcome};
use crate::web::failure::operation_status;

type Answer = Result<(StatusCode, Json<OperationResponse>), ApiError>;

#[utoipa::path(post, path = "/api/v1/directories/{directory}/users/{user}/reset-password", tag = "writeback", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID."), ("Idempotency-Key" = Option<String>, Header, description = "32 hexadecimal digits; a retry with the same key is applied at most once.")), request_body = ResetPasswordRequest, responses((status = 200, description = "Done in the directory.", body = OperationResponse), (status = 403, description = "The directory or Writeback refused: out of scope, protected account, no permission.", body = OperationResponse), (status = 404, description = "No such user, or no such directory.", body = OperationResponse), (status = 409, description = "More than one user matches.", body = OperationResponse), (status = 422, description = "Refused by the password policy or the account state, or the Idempotency-Key was already used for a different request.", body = OperationResponse), (status = 502, description = "The directory did not answer.", body = OperationResponse), (status = 503, description = "No agent is connected.", body = OperationResponse), (status = 504, description = "The outcome is unknown: the agent did not answer in time (timeout), or it was lost and the directory does not show the new password (outcome_unknown).", body = OperationResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn reset_password(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserTarget,
    IdempotencyKey(request_id): IdempotencyKey,
    JsonBody(body): JsonBody<ResetPasswordRequest>,
) -> Answer {
    let reset = Writeback::ResetPassword {
        new_password: body.new_password,
        must_change: body.must_change,
        unlock: body.unlock,
    };
    perform(&state, &signed_in, target, request_id, reset).await
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/users/{user}/change-password", tag = "writeback", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID."), ("Idempotency-Key" = Option<String>, Header, description = "32 hexadecimal digits; a retry with the same key is applied at most once.")), request_body = ChangePasswordRequest, responses((status = 200, description = "Done in the directory.", body = OperationResponse), (status = 403, description = "The directory or Writeback refused: out of scope, protected account, no permission.", body = OperationResponse), (status = 404, description = "No such user, or no such directory.", body = OperationResponse), (status = 409, description = "More than one user matches.", body = OperationResponse), (status = 422, description = "Refused by the password policy or the account state, or the Idempotency-Key was already used for a different request.", body = OperationResponse), (status = 502, description = "The directory did not answer.", body = OperationResponse), (status = 503, description = "No agent is connected.", body = OperationResponse), (status = 504, description = "The outcome is unknown: the agent did not answer in time (timeout), or it was lost and the directory does not show the new password (outcome_unknown).", body = OperationResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn change_password(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserTarget,
    IdempotencyKey(request_id): IdempotencyKey,
    JsonBody(body): JsonBody<ChangePasswordRequest>,
) -> Answer {
    let change = Writeback::ChangePassword {
        current_password: body.current_password,
        new_password: body.new_password,
    };
    perform(&state, &signed_in, target, request_id, change).await
}

#[utoipa::path(post, path = "/api/v1/directories/{directory}/users/{user}/unlock", tag = "writeback", security(("bearer" = [])), params(("directory" = DirectoryName, Path, description = "The directory (AD domain)."), ("user" = String, Path, description = "The user: logon name, UPN, mail or objectGUID."), ("Idempotency-Key" = Option<String>, Header, description = "32 hexadecimal digits; a retry with the same key is applied at most once.")), responses((status = 200, description = "Done in the directory.", body = OperationResponse), (status = 403, description = "The directory or Writeback refused: out of scope, protected account, no permission.", body = OperationResponse), (status = 404, description = "No such user, or no such directory.", body = OperationResponse), (status = 409, description = "More than one user matches.", body = OperationResponse), (status = 422, description = "Refused by the password policy or the account state, or the Idempotency-Key was already used for a different request.", body = OperationResponse), (status = 502, description = "The directory did not answer.", body = OperationResponse), (status = 503, description = "No agent is connected.", body = OperationResponse), (status = 504, description = "The outcome is unknown: the agent did not answer in time (timeout), or it was lost and the directory does not show the new password (outcome_unknown).", body = OperationResponse), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn unlock(
    State(state): State<AppState>,
    signed_in: SignedIn,
    target: UserTarget,
    IdempotencyKey(request_id): IdempotencyKey,
) -> Answer {
    perform(&state, &signed_in, target, request_id, Writeback::Unlock).await
}

/// Performs `writeback` for the signed-in administrator and answers with its outcome.
async fn perform(
    state: &AppState,
    signed_in: &SignedIn,
    target: UserTarget,
    request_id: RequestId,
    writeback: Writeback,
) -> Answer {
    let actor = signed_in.actor();
    let requester = Requester::Administrator;
    let outcome = writeback::perform(state, &actor, requester, target, request_id, writeback).await;
    let (status, response) = operation_response(outcome)?;
    Ok((status, Json(response)))
}

/// The API's answer to an operation's outcome.
fn operation_response(
    outcome: Result<WritebackOutcome, WritebackError>,
) -> Result<(StatusCode, OperationResponse), ApiError> {
    match outcome {
        Ok(outcome) => Ok((
            operation_status(&outcome.result),
            OperationResponse {
                request_id: outcome.request_id,
                message: messages::describe(outcome.kind, &outcome.result),
                result: outcome.result,
                warnings: outcome
                    .warnings
                    .into_iter()
                    .map(|code| WarningView {
                        code,
                        message: messages::describe_warning(code),
                    })
                    .collect(),
            },
        )),
        Err(error) => Err(error.into()),
    }
}
