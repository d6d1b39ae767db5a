//! `POST /portal/strength`: how strong a password being typed is, by the same zxcvbn judgement
//! the server applies when the form is sent, and whether it is on a list of breached or common
//! passwords, so the page never says more or less than the server will. Nothing is stored or
//! logged; the work runs in the bounded hashing pool.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::service::self_service::checks::{Strength, strength};
use crate::service::state::AppState;
use crate::web::body::JsonBody;
use crate::web::failure::HttpFailure;

/// At most this many of the person's own words, each at most this long: what the page lists.
const MAX_WORDS: usize = 20;
const MAX_WORD_CHARS: usize = 64;

#[derive(Serialize)]
struct Judged {
    #[serde(flatten)]
    strength: Strength,
    /// On the built-in list of common passwords or in the imported breached ones.
    listed: bool,
}

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
    let screen = state.screen.clone();
    let judged = state
        .hashing
        .run(move || {
            let words: Vec<&str> = asked.words.iter().map(String::as_str).collect();
            let password = asked.password.expose_secret();
            Judged {
                strength: strength(password, &words),
                listed: screen.screen(password).is_some(),
            }
        })
        .await;
    match judged {
        Ok(judged) => {
            let mut response = axum::Json(judged).into_response();
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
