//! What the console's and the portal's pages share: rendering a template, the banner a page
//! shows, and the picture an authenticator app scans.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::service::totp;

/// Renders `page` with `status`. A template that fails to render is a bug; the answer is then a
/// plain 500 rather than half a page.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong inside Writeback.",
            )
                .into_response()
        }
    }
}

/// A banner: `tone` is the CSS class (`good` or `bad`).
#[derive(Debug, Clone)]
pub struct Notice {
    pub tone: &'static str,
    pub text: String,
}

impl Notice {
    pub fn good(text: impl Into<String>) -> Self {
        Self {
            tone: "good",
            text: text.into(),
        }
    }

    pub fn bad(text: impl Into<String>) -> Self {
        Self {
            tone: "bad",
            text: text.into(),
        }
    }
}

/// What an authenticator app is set up from: its key as a QR code (an SVG, base64) and as text
/// in groups of four to type by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorPicture {
    pub qr_svg_base64: String,
    pub manual_key: String,
}

impl AuthenticatorPicture {
    pub fn new(issuer: &str, account: &str, secret: &[u8]) -> Result<Self, qrcode::types::QrError> {
        let uri = totp::provisioning_uri(issuer, account, secret);
        let svg = qrcode::QrCode::new(uri.as_bytes())?
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build();
        let manual_key = totp::base32(secret)
            .as_bytes()
            .chunks(4)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Self {
            qr_svg_base64: STANDARD.encode(svg),
            manual_key,
        })
    }
}
