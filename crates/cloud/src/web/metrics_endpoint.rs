//! `/metrics` over HTTP: on the public listener for a scraper with the token, or alone on a
//! listener of its own.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use writeback_config::metrics::CONTENT_TYPE;
use writeback_proto::api::{ErrorBody, ErrorResponse};

use crate::service::metrics::render;
use crate::service::state::AppState;

/// The API's error body, so `/metrics` refuses like any other route.
fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
) -> (StatusCode, Json<ErrorResponse>) {
    (
        status,
        Json(ErrorResponse {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }),
    )
}

/// `/metrics` on the public listener: only for a scraper with the configured token. Without a
/// token configured the route answers like any unknown one.
pub async fn scrape_public(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = &state.metrics_token else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "No such endpoint.")
            .into_response();
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if !crate::service::auth::constant_time_equal(
        offered.as_bytes(),
        expected.expose_secret().as_bytes(),
    ) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Send the metrics token as Authorization: Bearer.",
        )
        .into_response();
    }
    scrape(State(state)).await
}

/// Serves `/metrics` alone, over plain HTTP, on a listener of its own (`metrics_listen`), until
/// the server stops.
pub async fn serve_own_listener(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(state);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { crate::service::state::stopped(&mut stopping).await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the metrics listener failed");
    }
}

pub async fn scrape(State(state): State<AppState>) -> Response {
    match render(&state).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot compute metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot compute metrics").into_response()
        }
    }
}
