//! Request extractors that refuse bad input with a clear JSON error and never echo a body: a body
//! may hold a password.

use std::net::IpAddr;

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

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    /// It did not arrive within the server's body timeout.
    TooSlow,
    /// It is larger than the router's body limit.
    TooLarge,
    Unreadable,
}

/// The whole body of `request`, within the body limit and the server's body timeout.
pub(crate) async fn read_body<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<Bytes, BodyFailure> {
    let limit = request
        .extensions()
        .get::<crate::server::BodyTimeout>()
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
        .get::<ClientAddress>()
        .map(|client| client.0)
        .or_else(|| {
            parts
                .extensions
                .get::<PeerAddress>()
                .map(|peer| peer.0.ip())
        })
        .map(|address| address.to_string())
}

/// The client's address as far as the server can trust it, set on every request by
/// [`resolve_client`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// The client's address: the peer's own, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not a trusted proxy. Each proxy appends the address it
/// got the request from, so entries to the right of the first untrusted one were written by
/// proxies we trust, and anything to its left may be the client's own invention. A malformed
/// entry stops the walk at the last address known.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_for
        .iter()
        .flat_map(|value| value.split(','))
        .rev()
    {
        let Ok(address) = entry.trim().parse::<IpAddr>() else {
            return client;
        };
        client = address;
        if !trusted.contains(&address) {
            return address;
        }
    }
    client
}

/// Puts the [`ClientAddress`] on the request, from the peer and the trusted proxies' headers.
pub async fn resolve_client(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(PeerAddress(peer)) = request.extensions().get::<PeerAddress>().copied() {
        let headers: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let client = client_address(peer.ip(), &headers, &state.config.limits.trusted_proxies);
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
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
        let administrator = crate::sign_in::session(state, token, UnixMillis::now())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let trusted = [proxy, ip("10.0.0.2")];
        assert_eq!(
            client_address(ip("198.51.100.9"), &["203.0.113.5"], &trusted),
            ip("198.51.100.9"),
            "a client cannot name itself"
        );
        assert_eq!(
            client_address(proxy, &["203.0.113.5"], &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(proxy, &["192.0.2.66, 203.0.113.5, 10.0.0.2"], &trusted),
            ip("203.0.113.5"),
            "what the client wrote left of the real address is ignored"
        );
        assert_eq!(
            client_address(proxy, &["192.0.2.66", "203.0.113.5"], &trusted),
            ip("203.0.113.5"),
            "several headers read as one list"
        );
        assert_eq!(client_address(proxy, &[], &trusted), proxy);
        assert_eq!(
            client_address(proxy, &["not-an-address, 10.0.0.2"], &trusted),
            ip("10.0.0.2")
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// The answer is always the peer or an address from the header; from an untrusted peer,
            /// always the peer.
            #[test]
            fn the_client_address_is_never_invented(
                peer in any::<[u8; 4]>(),
                entries in proptest::collection::vec("[0-9a-f.:, ]{0,40}", 0..4),
                trust_peer in any::<bool>(),
            ) {
                let peer = IpAddr::from(peer);
                let trusted: Vec<IpAddr> = if trust_peer { vec![peer] } else { Vec::new() };
                let headers: Vec<&str> = entries.iter().map(String::as_str).collect();
                let client = client_address(peer, &headers, &trusted);
                if !trust_peer {
                    prop_assert_eq!(client, peer);
                }
                let named = headers
                    .iter()
                    .flat_map(|value| value.split(','))
                    .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
                    .any(|address| address == client);
                prop_assert!(client == peer || named);
            }
        }
    }
}
