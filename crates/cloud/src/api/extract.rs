//! Request extractors that refuse bad input with a clear JSON error and never echo a body: a body
//! may hold a password.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use writeback_proto::api::{ErrorBody, ErrorResponse, IDEMPOTENCY_KEY_HEADER};
use writeback_proto::frame::describe_json_error;
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::operation::UserRef;
use writeback_proto::time::UnixMillis;
use writeback_store::Administrator;
use zeroize::Zeroize;

use crate::AppState;
use crate::auth::token_hash;

/// An API failure that is not a directory result: bad input, no session, unknown directory.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
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

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error in the API");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong inside Writeback.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body: `Content-Type: application/json` required, size bounded by the router's body
/// limit, parse errors described without quoting the input. The raw body is wiped after parsing
/// when nothing else holds it.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be JSON, sent with Content-Type: application/json.",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "The request body is too large.",
                    )
                } else {
                    ApiError::invalid("The request body could not be read.")
                }
            })?;
        let parsed = serde_json::from_slice::<T>(&bytes).map_err(|error| {
            ApiError::invalid(format!(
                "The request body is not valid: {}.",
                describe_json_error(&error)
            ))
        });
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
        parsed.map(JsonBody)
    }
}

/// The client's address, put on every request by `server::run`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub std::net::SocketAddr);

/// Where a request came from, for the audit log: the client's IP address.
#[derive(Debug, Clone)]
pub struct Origin(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(origin_of(parts)))
    }
}

pub(crate) fn origin_of(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<PeerAddress>()
        .map(|peer| peer.0.ip().to_string())
}

/// The signed-in administrator, from `Authorization: Bearer <token>`.
#[derive(Debug)]
pub struct SignedIn {
    pub administrator: Administrator,
    pub token_hash: Vec<u8>,
    pub origin: Option<String>,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthenticated = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Sign in first: send Authorization: Bearer <token> from POST /api/v1/sessions.",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(unauthenticated)?;
        let hash = token_hash(token);
        let administrator = state
            .store
            .session_administrator(&hash, UnixMillis::now())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "session_expired",
                    "The session is unknown or has expired; sign in again.",
                )
            })?;
        Ok(Self {
            administrator,
            token_hash: hash,
            origin: origin_of(parts),
        })
    }
}

/// `/directories/{directory}/users/{user}/...`, validated.
#[derive(Debug, Clone)]
pub struct UserPath {
    pub directory: DirectoryName,
    /// The user as the caller named them: a logon name, a UPN or an anchor.
    pub name: String,
    pub user: UserRef,
}

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((directory, user)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("The URL must name a directory and a user."))?;
        Self::parse(&directory, user)
    }
}

impl UserPath {
    pub fn parse(directory: &str, name: String) -> Result<Self, ApiError> {
        let directory = directory.parse().map_err(|error| {
            ApiError::invalid(format!("The directory name is not valid: {error}."))
        })?;
        let user =
            UserRef::logon_name(&name).map_err(|error| ApiError::invalid(format!("{error}.")))?;
        Ok(Self {
            directory,
            name,
            user,
        })
    }
}

/// `/directories/{directory}/...`, validated.
#[derive(Debug)]
pub struct DirectoryPath(pub DirectoryName);

impl<S: Send + Sync> FromRequestParts<S> for DirectoryPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(directory) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("The URL must name a directory."))?;
        directory.parse().map(DirectoryPath).map_err(|error| {
            ApiError::invalid(format!("The directory name is not valid: {error}."))
        })
    }
}

/// The request id: from `Idempotency-Key` when the client sends one (so a retry is applied at most
/// once), otherwise new.
#[derive(Debug)]
pub struct IdempotencyKey(pub RequestId);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(IDEMPOTENCY_KEY_HEADER) {
            None => RequestId::generate()
                .map(IdempotencyKey)
                .map_err(ApiError::internal),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.parse().ok())
                .map(IdempotencyKey)
                .ok_or_else(|| {
                    ApiError::invalid("The Idempotency-Key header must be 32 hexadecimal digits.")
                }),
        }
    }
}
