//! The self-service portal for end users, under `/portal`: forgot password, unlock, sign-in with
//! the directory password (checked by the agent), change password, and registration of the
//! methods that prove who they are. Pages are server-rendered and work without JavaScript; one
//! script (`portal.js`) only ticks the new-password checklist while the user types.
//!
//! Nothing a page says, nor how long it takes, tells whether an account exists: every name gets
//! the same pages, and the reasons a person cannot go on are shown only once they have proven who
//! they are (after a verification, or a sign-in with their password).
//!
//! `portal.js` ticks the new-password checklist while the user types, asking `/portal/strength`
//! for the same strength judgement the server applies.

// Helpers return the page to show as their error, which is what the handler sends anyway.
#![allow(clippy::result_large_err)]

mod account;
mod guard;
mod pages;
mod reset;
mod strength;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use crate::service::state::AppState;
use crate::web::browser_form::{set_security_headers, static_asset};
use pages::MessagePage;

/// Scripts, styles and images only from here, forms only to here, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const STYLESHEET: &str = include_str!("../../static/portal.css");
const SCRIPT: &str = include_str!("../../static/portal.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal", get(reset::home))
        .route("/portal/static/portal.css", get(stylesheet))
        .route("/portal/static/portal.js", get(script))
        .route(
            "/portal/identify",
            get(reset::show_identify).post(reset::identify),
        )
        .route("/portal/verify", get(reset::show_methods))
        .route("/portal/verify/start", post(reset::start_method))
        .route(
            "/portal/verify/proof",
            get(reset::show_proof).post(reset::check_proof),
        )
        .route(
            "/portal/new-password",
            get(reset::show_new_password).post(reset::set_new_password),
        )
        .route("/portal/unlock", post(reset::unlock))
        .route("/portal/strength", post(strength::judge))
        .route(
            "/portal/sign-in",
            get(account::show_sign_in).post(account::sign_in),
        )
        .route("/portal/sign-out", post(account::sign_out))
        .route("/portal/account", get(account::show_account))
        .route("/portal/account/confirm", post(account::confirm_methods))
        .route(
            "/portal/account/confirm-identity",
            get(account::show_step_up).post(account::start_step_up),
        )
        .route(
            "/portal/account/confirm-identity/proof",
            post(account::check_step_up),
        )
        .route("/portal/account/remove", post(account::remove_method))
        .route("/portal/account/email", post(account::register_email))
        .route("/portal/account/phone", post(account::register_phone))
        .route("/portal/account/code", post(account::confirm_code))
        .route(
            "/portal/account/authenticator",
            get(account::show_authenticator).post(account::confirm_authenticator),
        )
        .route(
            "/portal/account/questions",
            get(account::show_questions).post(account::register_questions),
        )
        .route(
            "/portal/change",
            get(account::show_change).post(account::change_password),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// Every portal route no handler claims: a portal 404 with the same headers.
pub async fn not_found() -> Response {
    security_headers(
        MessagePage::new("Page not found", "There is no such page.")
            .with_link("/portal", "Start again")
            .render(StatusCode::NOT_FOUND),
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

async fn script() -> Response {
    static_asset("text/javascript; charset=utf-8", SCRIPT)
}
