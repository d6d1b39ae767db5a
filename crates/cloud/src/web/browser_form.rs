//! What the browser surfaces (the admin console and the self-service portal) share: cookies, and
//! the checks every form goes through before its handler runs.
//!
//! Cookies are all `__Host-` (so Secure, host-only, path `/`), HttpOnly and SameSite=Strict. Each
//! form carries a CSRF token derived from the cookie it goes with, which a page on another origin
//! can neither read nor compute.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::service::auth::constant_time_equal;
use crate::web::body::{BodyFailure, read_body};

/// How a surface shows a refused form, in its own pages.
pub type RefusalPage = fn(StatusCode, &str, &str) -> Response;

const REFUSED_TITLE: &str = "This form could not be accepted";

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A `Set-Cookie` value; `max_age_seconds` of zero removes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: u64) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The CSRF token that goes with a cookie's value.
pub fn csrf_token(cookie_value: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"writeback form csrf\0")
        .chain_update(cookie_value.as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(digest)
}

/// Fields every browser form has.
pub trait FormFields: DeserializeOwned {
    /// The cookie whose CSRF token the form carries.
    const COOKIE: &'static str;
    /// The surface's page for a refused form.
    const REFUSED: RefusalPage;
    fn csrf(&self) -> &str;
}

/// Implements [`FormFields`] for forms that keep their CSRF token in a `csrf` field:
/// `form_fields!(crate::portal::pages::refused, SESSION_COOKIE => EmailForm, CodeForm);`.
macro_rules! form_fields {
    ($refused:path, $cookie:expr => $($form:ty),+ $(,)?) => {
        $(
            impl $crate::web::browser_form::FormFields for $form {
                const COOKIE: &'static str = $cookie;
                const REFUSED: $crate::web::browser_form::RefusalPage = $refused;
                fn csrf(&self) -> &str {
                    &self.csrf
                }
            }
        )+
    };
}
pub(crate) use form_fields;

/// A form of the console or the portal: `application/x-www-form-urlencoded`, within the body limit, sent from this
/// origin, with the CSRF token of the cookie it goes with. Anything else is refused before the
/// handler runs, so nothing changes. The raw body is wiped once parsed: it may hold a password.
#[derive(Debug)]
pub struct BrowserForm<T> {
    pub fields: T,
    /// The value of the form's cookie.
    pub cookie: String,
}

impl<T: FormFields, S: Send + Sync> FromRequest<S> for BrowserForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        // Browsers say where a request comes from; a form posted from another site is refused
        // even before its token is looked at.
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|site| site == "cross-site" || site == "same-site");
        if cross_site {
            return Err((T::REFUSED)(
                StatusCode::FORBIDDEN,
                REFUSED_TITLE,
                "The form was sent from another site. Open the page directly and try again.",
            ));
        }
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media_type| {
                media_type
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err((T::REFUSED)(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                REFUSED_TITLE,
                "Only this site's own forms are accepted.",
            ));
        }
        let Some(cookie_value) = cookie(headers, T::COOKIE) else {
            return Err((T::REFUSED)(
                StatusCode::FORBIDDEN,
                REFUSED_TITLE,
                "Your session has ended, or this browser refuses this site's cookies. Reload the page and try again.",
            ));
        };
        let bytes = read_body(request, state)
            .await
            .map_err(|failure| match failure {
                BodyFailure::TooSlow => {
                    let mut response = (T::REFUSED)(
                        StatusCode::REQUEST_TIMEOUT,
                        REFUSED_TITLE,
                        "The form took too long to arrive. Try again.",
                    );
                    // The rest of a slow body is not waited for.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    response
                }
                BodyFailure::TooLarge => (T::REFUSED)(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    REFUSED_TITLE,
                    "The form is too large.",
                ),
                BodyFailure::Unreadable => (T::REFUSED)(
                    StatusCode::BAD_REQUEST,
                    REFUSED_TITLE,
                    "The form could not be read.",
                ),
            })?;
        let parsed = serde_urlencoded::from_bytes::<T>(&bytes);
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
        let fields = parsed.map_err(|_| {
            (T::REFUSED)(StatusCode::BAD_REQUEST, REFUSED_TITLE,
                "The form is missing a field or has one it should not. Reload the page and try again.",
            )
        })?;
        let expected = csrf_token(&cookie_value);
        if !constant_time_equal(expected.as_bytes(), fields.csrf().as_bytes()) {
            return Err((T::REFUSED)(
                StatusCode::FORBIDDEN,
                REFUSED_TITLE,
                "The form has expired or did not come from this site. Reload the page and try again.",
            ));
        }
        Ok(Self {
            fields,
            cookie: cookie_value,
        })
    }
}

/// The headers every console and portal page carries: the surface's content security policy, no
/// sniffing or framing, no referrer, HSTS, and `no-store` unless the response chose its caching.
pub fn set_security_headers(response: &mut Response, content_security_policy: &'static str) {
    let headers = response.headers_mut();
    let cache_chosen = headers.contains_key(header::CACHE_CONTROL);
    let mut set = |name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, content_security_policy);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    );
    set(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !cache_chosen {
        set(header::CACHE_CONTROL, "no-store");
    }
}

/// A stylesheet or script compiled into the binary, cacheable for an hour.
pub fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-writeback-console=token; other=2"),
        );
        assert_eq!(
            cookie(&headers, "__Host-writeback-console").as_deref(),
            Some("token")
        );
        assert_eq!(cookie(&headers, "__Host-writeback"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_cookie_and_reveal_nothing_of_it() {
        let first = csrf_token("wbs_first");
        assert_eq!(first, csrf_token("wbs_first"));
        assert_ne!(first, csrf_token("wbs_second"));
        assert!(!first.contains("first"));
    }

    #[test]
    fn set_cookie_is_host_only_secure_and_strict() {
        let value = set_cookie("__Host-writeback-console", "token", 0);
        let text = value.to_str().unwrap();
        for attribute in [
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=0",
        ] {
            assert!(text.contains(attribute), "{text}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn a_cookie_is_found_by_its_exact_name_or_not_at_all(
                header in "[ -~]{0,200}",
                value in "[A-Za-z0-9_-]{1,40}",
            ) {
                let mut headers = HeaderMap::new();
                if let Ok(noise) = HeaderValue::from_str(&header) {
                    headers.append(header::COOKIE, noise);
                    let _ = cookie(&headers, "__Host-writeback-portal");
                }
                let mut clean = HeaderMap::new();
                clean.insert(
                    header::COOKIE,
                    HeaderValue::from_str(&format!("a=1; __Host-writeback-portal={value}; b=2"))
                        .unwrap(),
                );
                prop_assert_eq!(cookie(&clean, "__Host-writeback-portal"), Some(value));
                prop_assert_eq!(cookie(&clean, "__Host-writeback"), None);
            }
        }
    }
}
