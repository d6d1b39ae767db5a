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
use crate::service::notify::{TextMessage, TextMessages};

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

impl TextMessages for SmsSender {
    /// Sends `text` on a task of its own; a failure is logged, never shown.
    fn send_later(&self, text: TextMessage) {
        let sender = self.clone();
        tokio::spawn(async move {
            if let Err(error) = sender.send(&text).await {
                tracing::warn!(%error, "a text message could not be sent");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
