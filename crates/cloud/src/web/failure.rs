//! A failed request as HTTP sees it.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use writeback_proto::api::{ErrorBody, ErrorResponse};
use writeback_proto::result::ResultCode;

use writeback_store::StoreError;

use crate::service::agents::AgentError;
use crate::service::directory::InputError;
use crate::service::error::SettingsError;
use crate::service::writeback::WritebackError;

/// A request that failed before any use case answered, or a use case's refusal, with an HTTP
/// status, a stable code and a message. The API answers it as its JSON error body; the console
/// shows it as a page.
#[derive(Debug)]
pub struct HttpFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl HttpFailure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unknown_directory(directory: &impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_directory",
            format!("No directory is named {directory}."),
        )
    }

    /// A store failure while reading `directory`: its `NotFound` is an unknown directory.
    pub fn from_directory_store(directory: &impl std::fmt::Display, error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => Self::unknown_directory(directory),
            other => Self::internal(other),
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error in the API");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong inside Writeback.",
        )
    }
}

/// Why an operation was not sent to the directory, as the API and the console say it.
impl From<WritebackError> for HttpFailure {
    fn from(error: WritebackError) -> Self {
        match error {
            WritebackError::EmptyPassword(_) | WritebackError::PasswordTooLong(_) => {
                Self::invalid(format!("{error}."))
            }
            WritebackError::UnknownDirectory(directory) => Self::unknown_directory(&directory),
            WritebackError::Store(error) => Self::internal(error),
        }
    }
}

/// Input no directory could hold: its message is already plain.
impl From<InputError> for HttpFailure {
    fn from(error: InputError) -> Self {
        Self::invalid(error.to_string())
    }
}

impl From<SettingsError> for HttpFailure {
    fn from(error: SettingsError) -> Self {
        match error {
            SettingsError::Invalid(problems) => Self::invalid(problems),
            SettingsError::Store(error) => Self::internal(error),
        }
    }
}

impl From<AgentError> for HttpFailure {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::InvalidId => Self::invalid("The agent id must be 32 hexadecimal digits."),
            AgentError::Unknown(agent_id) => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_agent",
                format!("No agent has the id {agent_id}."),
            ),
            AgentError::Store(error) => Self::internal(error),
        }
    }
}

impl IntoResponse for HttpFailure {
    fn into_response(self) -> Response {
        let status = self.status;
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code.into(),
                message: self.message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a slow body is not waited for: the connection ends with the answer.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// The HTTP status that fits a directory's verdict, for the API and the console alike.
pub fn operation_status(result: &ResultCode) -> StatusCode {
    match result {
        ResultCode::Success => StatusCode::OK,
        ResultCode::PolicyViolation { .. }
        | ResultCode::WrongCurrentPassword
        | ResultCode::PasswordExpired
        | ResultCode::MustChangePassword
        | ResultCode::AccountDisabled
        | ResultCode::AccountLocked
        | ResultCode::RequestIdReused => StatusCode::UNPROCESSABLE_ENTITY,
        ResultCode::UserNotFound => StatusCode::NOT_FOUND,
        ResultCode::AmbiguousUser => StatusCode::CONFLICT,
        ResultCode::PermissionDenied | ResultCode::ProtectedAccount | ResultCode::OutOfScope => {
            StatusCode::FORBIDDEN
        }
        ResultCode::DirectoryUnavailable { .. } => StatusCode::BAD_GATEWAY,
        ResultCode::AgentUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ResultCode::Timeout | ResultCode::OutcomeUnknown { .. } => StatusCode::GATEWAY_TIMEOUT,
        ResultCode::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
