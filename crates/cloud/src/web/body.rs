//! Reading a request body within the router's size limit and the server's body timeout, and a
//! JSON object body for the surfaces that take one.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use writeback_proto::frame::describe_json_error;
use zeroize::Zeroize;

use crate::web::failure::HttpFailure;
use crate::web::server::BodyTimeout;

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// It did not arrive within the server's body timeout.
    TooSlow,
    /// It is larger than the router's body limit.
    TooLarge,
    Unreadable,
}

/// The whole body of `request`, within the body limit and the server's body timeout.
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, BodyFailure> {
    let limit = request
        .extensions()
        .get::<BodyTimeout>()
        .map_or(std::time::Duration::from_secs(10), |timeout| timeout.0);
    match tokio::time::timeout(limit, Bytes::from_request(request, state)).await {
        Err(_) => Err(BodyFailure::TooSlow),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(BodyFailure::TooLarge)
        }
        Ok(Err(_)) => Err(BodyFailure::Unreadable),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// A JSON object body: `Content-Type: application/json` required, size bounded by the router's
/// body limit, parse errors described without quoting the input. The raw body is wiped after parsing
/// when nothing else holds it.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpFailure;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(HttpFailure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be JSON, sent with Content-Type: application/json.",
            ));
        }
        let bytes = read_body(request, state)
            .await
            .map_err(|failure| match failure {
                BodyFailure::TooSlow => HttpFailure::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_too_slow",
                    "The request body did not arrive in time.",
                ),
                BodyFailure::TooLarge => HttpFailure::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "The request body is too large.",
                ),
                BodyFailure::Unreadable => {
                    HttpFailure::invalid("The request body could not be read.")
                }
            })?;
        // Every body is a JSON object; serde would also fill a struct from an array.
        let is_object = bytes
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|first| *first == b'{');
        let parsed = if is_object {
            serde_json::from_slice::<T>(&bytes).map_err(|error| {
                HttpFailure::invalid(format!(
                    "The request body is not valid: {}.",
                    describe_json_error(&error)
                ))
            })
        } else {
            Err(HttpFailure::invalid(
                "The request body must be a JSON object.",
            ))
        };
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
        parsed.map(JsonBody)
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
