//! The web admin console: server-rendered pages under `/console`, no JavaScript, the same
//! operations as the API through the same code. Every page is sent with a strict CSP and no
//! caching; every form is CSRF-checked (see [`session`]).

mod administrators;
mod agents;
mod audit;
mod directory;
mod pages;
mod session;
mod sign_in_pages;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::service::state::AppState;
use crate::web::browser_form::{set_security_headers, static_asset};
pub use pages::ErrorPage;

/// No script of any kind, styles and images only from here (the QR code is a data URI), forms
/// only to here, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("../../static/console.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(directory::overview))
        .route("/console/static/console.css", get(stylesheet))
        .route(
            "/console/sign-in",
            get(sign_in_pages::show_sign_in).post(sign_in_pages::submit_password),
        )
        .route(
            "/console/sign-in/code",
            get(sign_in_pages::show_code).post(sign_in_pages::submit_code),
        )
        .route(
            "/console/sign-in/enrol",
            get(sign_in_pages::show_enrolment).post(sign_in_pages::submit_enrolment),
        )
        .route("/console/sign-out", post(sign_in_pages::sign_out))
        .route("/console/users", get(directory::users))
        .route(
            "/console/directories/{directory}/users/{user}",
            get(directory::user),
        )
        .route(
            "/console/directories/{directory}/users/{user}/reset",
            post(directory::reset),
        )
        .route(
            "/console/directories/{directory}/users/{user}/unlock",
            post(directory::unlock),
        )
        .route("/console/groups", get(directory::groups))
        .route("/console/agents", get(agents::agents))
        .route("/console/agents/register", post(agents::register))
        .route("/console/agents/revoke", post(agents::revoke))
        .route(
            "/console/administrators",
            get(administrators::administrators),
        )
        .route(
            "/console/administrators/change",
            post(administrators::change),
        )
        .route("/console/audit", get(audit::audit_log))
        .route("/console/audit/export", get(audit::export))
        .route("/console/settings", get(audit::settings))
        .route("/console/settings/audit", post(audit::update_retention))
        .route(
            "/console/settings/self-service",
            post(audit::update_self_service),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// Every console route that no handler claims: an HTML 404 with the same headers.
pub async fn not_found() -> Response {
    security_headers(
        ErrorPage::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page in the console.",
        )
        .into_response(),
    )
    .await
}

async fn security_headers(mut response: Response) -> Response {
    set_security_headers(&mut response, CONTENT_SECURITY_POLICY);
    response
}

async fn stylesheet() -> Response {
    static_asset("text/css; charset=utf-8", STYLESHEET)
}
