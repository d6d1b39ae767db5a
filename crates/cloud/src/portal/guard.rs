//! What stops a portal step before it starts, as the page to show: limits reached, a blocked
//! account, a directory that cannot be served now, an internal failure.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use writeback_proto::frame::LockoutPolicy;
use writeback_proto::time::UnixMillis;
use writeback_store::Reservation;

use super::pages::MessagePage;
use crate::service::audit::AuditAction;
use crate::service::limits::{Exhausted, Guarded, Limits};
use crate::service::self_service::accounts::audit;
use crate::service::self_service::checks::RESULT_TOO_MANY;
use crate::service::state::AppState;

/// An internal failure as a page; the detail goes to the log only.
pub fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "a portal page failed");
    MessagePage::new(
        "Something went wrong",
        "Something went wrong inside Writeback. Nothing was changed. Try again in a few minutes.",
    )
    .with_link("/portal", "Start again")
    .render(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The limits of this cloud's configuration.
pub fn limits(state: &AppState) -> Limits<'_> {
    Limits::new(&state.store, &state.config.limits)
}

/// Why an attempt may not go ahead, as the page to show.
#[derive(Debug)]
pub enum Refused {
    /// The account used up its allowance and is now blocked.
    Blocked(Response),
    /// This address, or everyone together, used up theirs: wait a while.
    Later(Response),
    Broken(Response),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Blocked(response) | Self::Later(response) | Self::Broken(response) => response,
        }
    }
}

/// Holds one attempt of `guarded` for `name`, from the client's address, before the work it
/// guards. An account that has used up its allowance is blocked (and audited as such).
pub async fn reserve(
    state: &AppState,
    guarded: Guarded,
    name: &str,
    directory: Option<&str>,
    origin: &Option<String>,
    lockout: Option<LockoutPolicy>,
    helpdesk: &str,
) -> Result<Reservation, Refused> {
    let reserved = limits(state)
        .reserve(guarded, name, origin.as_deref(), lockout, UnixMillis::now())
        .await;
    match reserved {
        Ok(Ok(reservation)) => Ok(reservation),
        Ok(Err(Exhausted::Account)) => Err(Refused::Blocked(
            block(state, name, directory, origin, helpdesk).await,
        )),
        Ok(Err(Exhausted::Address | Exhausted::Everyone)) => {
            Err(Refused::Later(try_later(helpdesk)))
        }
        Err(error) => Err(Refused::Broken(internal(error))),
    }
}

pub fn too_many_attempts(helpdesk: &str) -> Response {
    MessagePage::new(
        "Too many attempts",
        "There were too many attempts for this account, so self-service is blocked for it for 24 hours. Nothing was changed.",
    )
    .with_paragraph("If you did not make these attempts, tell your helpdesk: someone may be trying to get into your account.")
    .with_helpdesk(helpdesk)
    .render(StatusCode::TOO_MANY_REQUESTS)
}

/// Too many attempts from this address, or from everywhere: nothing is blocked, but this one
/// waits.
pub fn try_later(helpdesk: &str) -> Response {
    MessagePage::new(
        "Please wait a while",
        "There have been too many attempts in the last few minutes, so this one was not tried. Nothing was changed. Wait a few minutes and try again.",
    )
    .with_helpdesk(helpdesk)
    .with_link("/portal", "Start again")
    .render(StatusCode::TOO_MANY_REQUESTS)
}

/// The password checks are queued beyond their limit.
pub fn busy() -> Response {
    MessagePage::new(
        "Writeback is busy",
        "Writeback is checking many answers at the moment, so yours was not checked. Nothing was changed. Try again shortly.",
    )
    .with_link("/portal", "Start again")
    .render(StatusCode::SERVICE_UNAVAILABLE)
}

pub fn service_unavailable(helpdesk: &str) -> Response {
    MessagePage::new(
        "The on-premises service is unavailable",
        "Your organisation's directory cannot be reached right now, so passwords cannot be changed. Nothing was changed. Try again in a few minutes.",
    )
    .with_helpdesk(helpdesk)
    .with_link("/portal", "Start again")
    .render(StatusCode::SERVICE_UNAVAILABLE)
}

pub fn self_service_off(helpdesk: &str) -> Response {
    MessagePage::new(
        "Self-service is not available",
        "Your organisation has not turned on password self-service.",
    )
    .with_helpdesk(helpdesk)
    .render(StatusCode::FORBIDDEN)
}

/// Records the block (24 hours by default), audited, and shows it.
pub async fn block(
    state: &AppState,
    name: &str,
    directory: Option<&str>,
    origin: &Option<String>,
    helpdesk: &str,
) -> Response {
    if let Err(error) = limits(state).block(name, UnixMillis::now()).await {
        return internal(error);
    }
    if let Err(error) = audit(
        state,
        name,
        directory,
        AuditAction::SelfServiceBlocked,
        RESULT_TOO_MANY,
        None,
        origin,
    )
    .await
    {
        return internal(error);
    }
    too_many_attempts(helpdesk)
}

pub fn out_of_scope(helpdesk: &str) -> Response {
    MessagePage::new(
        "Self-service is not available for your account",
        "Your organisation has not turned on password self-service for your account. Nothing was changed.",
    )
    .with_helpdesk(helpdesk)
    .render(StatusCode::FORBIDDEN)
}

pub fn account_disabled(helpdesk: &str) -> Response {
    MessagePage::new(
        "Your account is disabled",
        "Your account is disabled in your organisation's directory, so its password cannot be reset or changed here. Nothing was changed.",
    )
    .with_paragraph("Only an administrator can enable it again.")
    .with_helpdesk(helpdesk)
    .render(StatusCode::FORBIDDEN)
}
