//! Reading a request body within the router's size limit and the server's body timeout.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

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
