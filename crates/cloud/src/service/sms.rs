//! Text messages: one-time codes sent through the SMS provider the administrator configured, one
//! HTTPS `POST` of JSON per text (see [`SmsConfig`]). Like mail, a text goes out on its own task,
//! so a slow provider cannot make a page slow and a page's timing cannot tell whether a text was
//! sent. Neither the text (it holds a code) nor the number is logged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use writeback_tls::Trust;

use crate::config::SmsConfig;
use crate::service::error::CloudError;

/// One text. The body holds a one-time code and is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct TextMessage {
    /// In international format, `+` and digits only.
    pub to: String,
    pub body: String,
}

impl std::fmt::Debug for TextMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TextMessage(..)")
    }
}

#[derive(Clone)]
pub struct SmsSender {
    provider: Arc<Provider>,
}

struct Provider {
    endpoint: Uri,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    token: Option<SecretString>,
    sender: String,
    timeout: Duration,
}

impl std::fmt::Debug for SmsSender {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SmsSender")
            .field("endpoint", &self.provider.endpoint.to_string())
            .finish_non_exhaustive()
    }
}

impl SmsSender {
    /// The configured provider; `None` when no URL is set.
    pub fn from_config(config: &SmsConfig) -> Result<Option<Self>, CloudError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let invalid = |what: &str, problem: String| {
            CloudError::InvalidInput(format!("sms.{what}: {problem}"))
        };
        let endpoint: Uri = url
            .parse()
            .map_err(|error| invalid("url", format!("{error}")))?;
        if endpoint.scheme_str() != Some("https") {
            return Err(invalid(
                "url",
                "must start with https:// (codes must not cross the network in clear)".into(),
            ));
        }
        let host = endpoint
            .host()
            .ok_or_else(|| invalid("url", "has no host".into()))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = endpoint.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|error| invalid("url", format!("host {host}: {error}")))?;
        let trust = match &config.ca_file {
            Some(path) => Trust::CaFile(path.clone()),
            None => Trust::SystemRoots,
        };
        let mut tls = writeback_tls::client_config(&trust)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let token = match &config.token_file {
            Some(path) => Some(
                writeback_config::read_secret_file(path)
                    .map_err(|error| invalid("token_file", error.to_string()))?,
            ),
            None => None,
        };
        if config.sender.trim().is_empty() {
            return Err(invalid("sender", "is empty".into()));
        }
        Ok(Some(Self {
            provider: Arc::new(Provider {
                endpoint,
                host,
                port,
                server_name,
                tls: Arc::new(tls),
                token,
                sender: config.sender.clone(),
                timeout: Duration::from_secs(config.timeout_seconds.max(1)),
            }),
        }))
    }

    /// Sends `text` on a task of its own; a failure is logged, never shown.
    pub fn send_later(&self, text: TextMessage) {
        let sender = self.clone();
        tokio::spawn(async move {
            if let Err(error) = sender.send(&text).await {
                tracing::warn!(%error, "a text message could not be sent");
            }
        });
    }

    /// Hands `text` to the provider; `Ok` once it answered 2xx.
    pub async fn send(&self, text: &TextMessage) -> Result<(), CloudError> {
        let provider = &self.provider;
        let attempt = async {
            let failed = |what: &str, error: &dyn std::fmt::Display| {
                CloudError::Internal(format!(
                    "SMS provider {}:{}: {what}: {error}",
                    provider.host, provider.port
                ))
            };
            let tcp = TcpStream::connect((provider.host.as_str(), provider.port))
                .await
                .map_err(|error| failed("connecting", &error))?;
            let stream = TlsConnector::from(provider.tls.clone())
                .connect(provider.server_name.clone(), tcp)
                .await
                .map_err(|error| failed("TLS", &error))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|error| failed("HTTP", &error))?;
            tokio::spawn(connection);
            let body = serde_json::json!({
                "to": text.to,
                "from": provider.sender,
                "text": text.body,
            });
            let path = provider
                .endpoint
                .path_and_query()
                .map_or("/", |path| path.as_str());
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(HOST, authority(&provider.endpoint))
                .header(CONTENT_TYPE, "application/json")
                .header(
                    USER_AGENT,
                    concat!("writeback-cloud/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(token) = &provider.token {
                request =
                    request.header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
            }
            let request = request
                .body(Body::from(body.to_string()))
                .map_err(|error| failed("building the request", &error))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| failed("HTTP", &error))?;
            let status = response.status();
            if !status.is_success() {
                // The provider's answer may echo the text, so only its status is reported.
                return Err(CloudError::Internal(format!(
                    "SMS provider {}:{} refused the text: HTTP {status}",
                    provider.host, provider.port
                )));
            }
            Ok(())
        };
        tokio::time::timeout(provider.timeout, attempt)
            .await
            .map_err(|_| {
                CloudError::Internal(format!(
                    "SMS provider {}:{} did not answer within {} s",
                    provider.host,
                    provider.port,
                    provider.timeout.as_secs()
                ))
            })??;
        tracing::info!("text message sent");
        Ok(())
    }
}

fn authority(endpoint: &Uri) -> String {
    endpoint
        .authority()
        .map_or_else(String::new, |authority| authority.to_string())
}

/// A mobile number as typed, in international format: `+`, the country code and the number, with
/// spaces, dashes, dots and brackets allowed between digits. Returns `+` and the digits.
pub fn normalize_phone_number(text: &str) -> Result<String, &'static str> {
    const PROBLEM: &str =
        "Type the number in international format: + and the country code, e.g. +44 7700 900123.";
    let text = text.trim();
    let Some(rest) = text.strip_prefix('+') else {
        return Err(PROBLEM);
    };
    let mut digits = String::from("+");
    for character in rest.chars() {
        match character {
            '0'..='9' => digits.push(character),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(PROBLEM),
        }
    }
    // E.164: at most 15 digits; no country's mobile numbers are shorter than 8 in all.
    let count = digits.len() - 1;
    if !(8..=15).contains(&count) || digits.starts_with("+0") {
        return Err(PROBLEM);
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_kept_in_international_format_only() {
        assert_eq!(
            normalize_phone_number(" +44 (7700) 900-123 ").unwrap(),
            "+447700900123"
        );
        assert_eq!(
            normalize_phone_number("+1.555.010.9999").unwrap(),
            "+15550109999"
        );
        for wrong in [
            "07700 900123",
            "+44 7700 9001x3",
            "+0 7700 900123",
            "+1234",
            "+1234567890123456",
            "+44 7700 900123; rm",
            "",
        ] {
            assert!(normalize_phone_number(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn the_provider_must_be_reached_over_https() {
        assert!(
            SmsSender::from_config(&SmsConfig::default())
                .unwrap()
                .is_none()
        );
        let clear = SmsConfig {
            url: Some("http://sms.example.com/send".into()),
            ..SmsConfig::default()
        };
        let error = SmsSender::from_config(&clear).unwrap_err();
        assert!(error.to_string().contains("https://"), "{error}");
        let authority = writeback_tls::LocalCertificateAuthority::generate("SMS test").unwrap();
        let ca_file = std::env::temp_dir().join(format!("sms-ca-{}.pem", std::process::id()));
        std::fs::write(&ca_file, authority.certificate_pem()).unwrap();
        let fine = SmsConfig {
            url: Some("https://sms.example.com:8443/v1/messages?account=7".into()),
            ca_file: Some(ca_file.clone()),
            ..SmsConfig::default()
        };
        let sender = SmsSender::from_config(&fine).unwrap().unwrap();
        assert_eq!(sender.provider.port, 8443);
        assert_eq!(sender.provider.host, "sms.example.com");
        std::fs::remove_file(ca_file).unwrap();
    }

    #[test]
    fn a_text_message_never_shows_its_body_in_debug_output() {
        let text = TextMessage {
            to: "+447700900123".into(),
            body: "Your code is 123456".into(),
        };
        let shown = format!("{text:?}");
        assert!(
            !shown.contains("123456") && !shown.contains("7700"),
            "{shown}"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn a_phone_number_is_normalized_to_plus_and_digits_or_refused(typed in "\\PC{0,40}") {
                if let Ok(number) = normalize_phone_number(&typed) {
                    prop_assert!(number.starts_with('+'));
                    prop_assert!(number[1..].chars().all(|c| c.is_ascii_digit()));
                    prop_assert_eq!(normalize_phone_number(&number), Ok(number.clone()));
                }
            }

            #[test]
            fn any_text_is_a_mail_address_or_not(typed in "\\PC{0,300}") {
                let _ = crate::service::notify::is_mail_address(&typed);
            }
        }
    }
}
