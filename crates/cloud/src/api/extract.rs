//! Request extractors that refuse bad input with a clear JSON error and never echo a body: a body
//! may hold a password.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use writeback_proto::api::IDEMPOTENCY_KEY_HEADER;
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::time::UnixMillis;

use crate::service::administrator_sign_in::{self, SignedIn};
use crate::service::auth::token_hash;
use crate::service::directory::UserTarget;
use crate::service::state::AppState;
pub use crate::web::body::JsonBody;
use crate::web::client::origin_of;
pub use crate::web::failure::HttpFailure as ApiError;

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
        let administrator = administrator_sign_in::session(state, token, UnixMillis::now())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "session_expired",
                    "The session is unknown, has expired or was idle too long; sign in again.",
                )
            })?;
        Ok(Self {
            administrator,
            token_hash: hash,
            origin: origin_of(parts),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UserTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((directory, user)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("The URL must name a directory and a user."))?;
        Self::parse(&directory, user).map_err(|error| ApiError::invalid(error.to_string()))
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
