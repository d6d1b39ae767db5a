//! Request extractors that refuse bad input with a clear JSON error and never echo a body: a body
//! may hold a password.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use writeback_proto::api::IDEMPOTENCY_KEY_HEADER;
use writeback_proto::frame::describe_json_error;
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::time::UnixMillis;
use zeroize::Zeroize;

use crate::service::administrator_sign_in::{self, SignedIn};
use crate::service::auth::token_hash;
use crate::service::directory::UserTarget;
use crate::service::state::AppState;
use crate::web::body::{BodyFailure, read_body};
use crate::web::client::origin_of;
pub use crate::web::failure::HttpFailure as ApiError;

/// A JSON object body: `Content-Type: application/json` required, size bounded by the router's
/// body limit, parse errors described without quoting the input. The raw body is wiped after parsing
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
        let bytes = read_body(request, state)
            .await
            .map_err(|failure| match failure {
                BodyFailure::TooSlow => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_too_slow",
                    "The request body did not arrive in time.",
                ),
                BodyFailure::TooLarge => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "The request body is too large.",
                ),
                BodyFailure::Unreadable => ApiError::invalid("The request body could not be read."),
            })?;
        // Every body is a JSON object; serde would also fill a struct from an array.
        let is_object = bytes
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|first| *first == b'{');
        let parsed = if is_object {
            serde_json::from_slice::<T>(&bytes).map_err(|error| {
                ApiError::invalid(format!(
                    "The request body is not valid: {}.",
                    describe_json_error(&error)
                ))
            })
        } else {
            Err(ApiError::invalid("The request body must be a JSON object."))
        };
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
        parsed.map(JsonBody)
    }
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use writeback_proto::api::AuditSettings;

    use super::*;

    async fn parse(content_type: &str, body: &'static str) -> Result<AuditSettings, StatusCode> {
        let request = Request::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        JsonBody::<AuditSettings>::from_request(request, &())
            .await
            .map(|JsonBody(settings)| settings)
            .map_err(|error| error.status)
    }

    #[tokio::test]
    async fn only_a_json_object_with_the_json_content_type_is_a_body() {
        let json = "application/json";
        assert_eq!(
            parse(json, r#"{"retention_days": 30.0}"#).await,
            Ok(AuditSettings {
                retention_days: Some(30)
            })
        );
        assert_eq!(
            parse("application/json; charset=utf-8", " {}").await,
            Ok(AuditSettings {
                retention_days: None
            })
        );
        for refused in [
            "[]",
            "[30]",
            "null",
            "30",
            r#"{"retention_days": 30.5}"#,
            "",
        ] {
            assert_eq!(
                parse(json, refused).await,
                Err(StatusCode::BAD_REQUEST),
                "{refused}"
            );
        }
        assert_eq!(
            parse("text/plain", "{}").await,
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }
}
