//! `/metrics` over HTTP: on the public listener for a scraper with the token, or alone on a
//! listener of its own.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use writeback_config::metrics::CONTENT_TYPE;
use writeback_proto::api::{ErrorBody, ErrorResponse};

use writeback_config::metrics::render_gauge;
use writeback_proto::api::HealthState;
use writeback_proto::time::UnixMillis;

use crate::service::health;
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

/// The metrics as Prometheus text, gauges computed now.
async fn render(state: &AppState) -> Result<String, writeback_store::StoreError> {
    let now = UnixMillis::now();
    let mut out = String::new();
    state.metrics.operations.render(&mut out);
    state.metrics.operation_seconds.render(&mut out);
    let live = state.relay.live_agents();
    let mut connected = Vec::new();
    let mut in_flight = Vec::new();
    let mut lag = Vec::new();
    let mut healthy = Vec::new();
    for judged in health::of_every_directory(state, now).await? {
        let name = judged.directory.to_string();
        let waiting: usize = live
            .iter()
            .filter(|agent| agent.directory == judged.directory)
            .map(|agent| agent.requests_in_flight)
            .sum();
        connected.push((vec![name.clone()], judged.agents_connected as f64));
        in_flight.push((vec![name.clone()], waiting as f64));
        let status = state.store.sync_status(&judged.directory, now).await?;
        if let Some(age) = status.cursor_age_ms {
            lag.push((vec![name.clone()], age as f64 / 1000.0));
        }
        healthy.push((
            vec![name, judged.state.as_str().to_owned()],
            f64::from(u8::from(judged.state == HealthState::Healthy)),
        ));
    }
    render_gauge(
        "writeback_agents_connected",
        "Agents connected, by directory.",
        &["directory"],
        &connected,
        &mut out,
    );
    render_gauge(
        "writeback_requests_in_flight",
        "Operations sent to agents and not answered yet, by directory.",
        &["directory"],
        &in_flight,
        &mut out,
    );
    render_gauge(
        "writeback_sync_lag_seconds",
        "Time since the agent last confirmed the sync cursor, by directory.",
        &["directory"],
        &lag,
        &mut out,
    );
    render_gauge(
        "writeback_directory_healthy",
        "1 when the directory's health is healthy, else 0; the state is a label.",
        &["directory", "state"],
        &healthy,
        &mut out,
    );
    Ok(out)
}
