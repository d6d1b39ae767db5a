//! The one place every surface meets: the REST API, the console, the portal, the agent socket and
//! the metrics endpoint, under one router with the layers they all share.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};

use crate::service::state::AppState;
use crate::web::{client, metrics_endpoint};
use crate::{agent_socket, api, console, portal};

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let (api_routes, document) = api::routes();
    let document = Arc::new(document);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_endpoint::scrape_public))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .merge(api_routes)
        .route("/agent/v1/connect", get(agent_socket::upgrade))
        .merge(console::router())
        .merge(portal::router())
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/console") {
                console::not_found().await
            } else if uri.path().starts_with("/portal") {
                portal::not_found().await
            } else {
                api::not_found().await
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            client::resolve_client,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
