//! The console's cookies and its signed-in session. Three cookies (see [`crate::web::browser_form`]):
//! one before sign-in (it only anchors the sign-in form's CSRF token), one while the second factor
//! is pending, and the session.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use writeback_proto::time::UnixMillis;

use super::pages::{ErrorPage, Layout};
use crate::service::administrator_sign_in::SignedIn;
use crate::service::auth::token_hash;
use crate::service::state::AppState;
pub use crate::web::browser_form::{
    BrowserForm as ConsoleForm, FormFields, cookie, csrf_token, set_cookie,
};
use crate::web::failure::HttpFailure as ApiError;

pub const SESSION_COOKIE: &str = "__Host-writeback-console";
pub const CHALLENGE_COOKIE: &str = "__Host-writeback-sign-in-challenge";
pub const PRE_SIGN_IN_COOKIE: &str = "__Host-writeback-sign-in";

/// A signed-in console administrator, from the session cookie. Pages that need one redirect to
/// the sign-in page without it.
#[derive(Debug)]
pub struct ConsoleSession {
    pub signed_in: SignedIn,
    /// For the forms on the page.
    pub csrf: String,
}

impl FromRequestParts<AppState> for ConsoleSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let to_sign_in = || Redirect::to("/console/sign-in").into_response();
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(to_sign_in)?;
        let hash = token_hash(&token);
        let administrator =
            crate::service::administrator_sign_in::session(state, &token, UnixMillis::now())
                .await
                .map_err(|error| ErrorPage::from(ApiError::internal(error)).into_response())?
                .ok_or_else(to_sign_in)?;
        Ok(Self {
            csrf: csrf_token(&token),
            signed_in: SignedIn {
                administrator,
                token_hash: hash,
                origin: crate::web::client::origin_of(parts),
            },
        })
    }
}

impl ConsoleSession {
    /// What a signed-in page shows around its content, with `section` marked in the navigation.
    pub fn layout(&self, section: &'static str) -> Option<Layout> {
        Some(Layout {
            email: self.signed_in.administrator.email.clone(),
            csrf: self.csrf.clone(),
            section,
        })
    }
}
