//! `POST /portal/strength`: how strong a password being typed is, by the same zxcvbn judgement
//! the server applies when the form is sent, so the page never says more or less than the server
//! will. Nothing is stored or logged; the work runs in the bounded hashing pool.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::service::self_service::checks::strength;
use crate::service::state::AppState;
use crate::web::body::JsonBody;
use crate::web::failure::HttpFailure;

/// At most this many of the person's own words, each at most this long: what the page lists.
const MAX_WORDS: usize = 20;
const MAX_WORD_CHARS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrengthRequest {
    password: SecretString,
    #[serde(default)]
    words: Vec<String>,
}

/// Takes a JSON object only (as the API's bodies: `Content-Type: application/json`, bounded,
/// the raw body wiped after parsing, since it holds a password).
pub async fn judge(
    State(state): State<AppState>,
    JsonBody(asked): JsonBody<StrengthRequest>,
) -> Response {
    let words_fit = asked.words.len() <= MAX_WORDS
        && asked
            .words
            .iter()
            .all(|word| word.chars().count() <= MAX_WORD_CHARS);
    if !words_fit {
        return HttpFailure::invalid("Too many words, or too long.").into_response();
    }
    let judged = state
        .hashing
        .run(move || {
            let words: Vec<&str> = asked.words.iter().map(String::as_str).collect();
            strength(asked.password.expose_secret(), &words)
        })
        .await;
    match judged {
        Ok(strength) => {
            let mut response = axum::Json(strength).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => HttpFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Busy: the strength is checked again when the form is sent.",
        )
        .into_response(),
    }
}
