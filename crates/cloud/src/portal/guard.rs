//! Why a portal step stopped, as the page to show: the core's [`Stop`] in the portal's words.

use axum::http::StatusCode;
use axum::response::Response;

use super::pages::MessagePage;
use crate::service::self_service::accounts::settings;
use crate::service::self_service::stop::Stop;
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

/// The page for `stop`, with the organisation's helpdesk where it helps.
pub async fn stopped(state: &AppState, stop: Stop) -> Response {
    let helpdesk = match &stop {
        Stop::Busy | Stop::Ended | Stop::Failed(_) => String::new(),
        _ => match settings(state).await {
            Ok(settings) => settings.helpdesk,
            Err(error) => return internal(error),
        },
    };
    page_for(stop, &helpdesk)
}

fn page_for(stop: Stop, helpdesk: &str) -> Response {
    let page = |title: &str, text: &str| MessagePage::new(title, text).with_helpdesk(helpdesk);
    match stop {
        Stop::SelfServiceOff => page(
            "Self-service is not available",
            "Your organisation has not turned on password self-service.",
        )
        .render(StatusCode::FORBIDDEN),
        Stop::UnlockNotOffered => MessagePage::new(
            "Unlocking is not offered",
            "Your organisation does not let you unlock your account without resetting the password.",
        )
        .with_link("/portal/identify?purpose=reset", "Reset my password")
        .render(StatusCode::FORBIDDEN),
        Stop::ResetsOff => page(
            "Resets are handled by your helpdesk",
            "Your organisation does not let passwords be reset here yet.",
        )
        .render(StatusCode::FORBIDDEN),
        Stop::Blocked => page(
            "Too many attempts",
            "There were too many attempts for this account, so self-service is blocked for it for 24 hours. Nothing was changed.",
        )
        .with_paragraph("If you did not make these attempts, tell your helpdesk: someone may be trying to get into your account.")
        .render(StatusCode::TOO_MANY_REQUESTS),
        Stop::TryLater => page(
            "Please wait a while",
            "There have been too many attempts in the last few minutes, so this one was not tried. Nothing was changed. Wait a few minutes and try again.",
        )
        .with_link("/portal", "Start again")
        .render(StatusCode::TOO_MANY_REQUESTS),
        Stop::Busy => MessagePage::new(
            "Writeback is busy",
            "Writeback is checking many answers at the moment, so yours was not checked. Nothing was changed. Try again shortly.",
        )
        .with_link("/portal", "Start again")
        .render(StatusCode::SERVICE_UNAVAILABLE),
        Stop::Unavailable => page(
            "The on-premises service is unavailable",
            "Your organisation's directory cannot be reached right now, so passwords cannot be changed. Nothing was changed. Try again in a few minutes.",
        )
        .with_link("/portal", "Start again")
        .render(StatusCode::SERVICE_UNAVAILABLE),
        Stop::OutOfScope => page(
            "Self-service is not available for your account",
            "Your organisation has not turned on password self-service for your account. Nothing was changed.",
        )
        .render(StatusCode::FORBIDDEN),
        Stop::AccountDisabled => page(
            "Your account is disabled",
            "Your account is disabled in your organisation's directory, so its password cannot be reset or changed here. Nothing was changed.",
        )
        .with_paragraph("Only an administrator can enable it again.")
        .render(StatusCode::FORBIDDEN),
        Stop::NotEnoughMethods => page(
            "Not enough methods registered",
            "To reset your password yourself, you need more verification methods registered than you have. Nothing was changed.",
        )
        .with_paragraph("Once you can sign in, register more methods on your account page. Until then, your helpdesk can reset your password.")
        .render(StatusCode::FORBIDDEN),
        Stop::Ended => MessagePage::new(
            "Your session has ended",
            "For your safety, a reset must be finished within 15 minutes. Nothing was changed. Start again.",
        )
        .with_link("/portal", "Start again")
        .render(StatusCode::GONE),
        Stop::Failed(error) => internal(error),
    }
}
