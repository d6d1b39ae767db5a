//! `POST /portal/strength`: how strong a password being typed is, by the same zxcvbn judgement
//! the server applies when the form is sent, so the page never says more or less than the server
//! will. Nothing is stored or logged; the work runs in the bounded hashing pool.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::service::self_service::checks::strength;
use crate::service::state::AppState;
use crate::web::body::read_body;

/// At most this many of the person's own words, each at most this long: what the page lists.
const MAX_WORDS: usize = 20;
const MAX_WORD_CHARS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrengthRequest {
    password: SecretString,
    #[serde(default)]
    words: Vec<String>,
}

fn refused(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

pub async fn judge(State(state): State<AppState>, request: Request) -> Response {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send JSON with Content-Type: application/json.",
        );
    }
    let Ok(body) = read_body(request, &state).await else {
        return refused(StatusCode::BAD_REQUEST, "The body could not be read.");
    };
    let Ok(asked) = serde_json::from_slice::<StrengthRequest>(&body) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Send {\"password\": \"...\", \"words\": [...]}.",
        );
    };
    let words_fit = asked.words.len() <= MAX_WORDS
        && asked
            .words
            .iter()
            .all(|word| word.chars().count() <= MAX_WORD_CHARS);
    if !words_fit {
        return refused(StatusCode::BAD_REQUEST, "Too many words, or too long.");
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
        Err(_) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy: the strength is checked again when the form is sent.",
        ),
    }
}
