//! A real HTTPS SMS provider for tests: a hyper server on a loopback port speaking the JSON the
//! cloud sends, with a certificate from its own small authority (which the cloud trusts through
//! `sms.ca_file`). It checks the bearer token and keeps every text it accepts; told to, it
//! refuses every text, like a provider that is down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use writeback_cloud::config::SmsConfig;

use crate::logs;

pub const PATH: &str = "/v1/messages";

/// One text the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedText {
    pub to: String,
    pub from: String,
    pub text: String,
}

#[derive(Debug, Default)]
struct Shared {
    token: String,
    received: Mutex<Vec<ReceivedText>>,
    refusing: AtomicBool,
    /// Requests refused: for a wrong token, path or body, or while refusing everything.
    rejected: Mutex<Vec<StatusCode>>,
}

#[derive(Debug)]
pub struct SmsProvider {
    pub port: u16,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for SmsProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmsProvider {
    pub async fn start(work: &Path) -> Result<SmsProvider> {
        std::fs::create_dir_all(work)?;
        let authority = writeback_tls::LocalCertificateAuthority::generate("Test SMS provider")?;
        let pair = authority.issue(&["127.0.0.1".to_owned()])?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let ca_file = work.join(format!("sms-ca-{port}.pem"));
        let certificate = work.join(format!("sms-cert-{port}.pem"));
        let key = work.join(format!("sms-key-{port}.pem"));
        let token_file = work.join(format!("sms-token-{port}"));
        std::fs::write(&ca_file, authority.certificate_pem())?;
        std::fs::write(&certificate, &pair.certificate_pem)?;
        writeback_config::write_private_file(&key, pair.private_key_pem.as_bytes())?;
        let token = logs::remember_secret(&logs::password_like("sms-token-{unique}"));
        writeback_config::write_private_file(&token_file, token.as_bytes())?;
        let tls = TlsAcceptor::from(Arc::new(writeback_tls::server_config(&certificate, &key)?));
        let shared = Arc::new(Shared {
            token,
            ..Shared::default()
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tls = tls.clone();
                let shared = serving.clone();
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request| answer(shared.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(SmsProvider {
            port,
            ca_file,
            token_file,
            shared,
            task,
        })
    }

    /// The cloud's `[sms]` section for this provider.
    pub fn config(&self) -> SmsConfig {
        SmsConfig {
            url: Some(format!("https://127.0.0.1:{}{PATH}", self.port)),
            token_file: Some(self.token_file.clone()),
            sender: "Writeback".into(),
            ca_file: Some(self.ca_file.clone()),
            timeout_seconds: 5,
        }
    }

    /// Makes every text fail (HTTP 503), or work again.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    pub fn texts(&self) -> Vec<ReceivedText> {
        self.shared
            .received
            .lock()
            .map(|texts| texts.clone())
            .unwrap_or_default()
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.texts().iter().filter(|text| text.to == to).count()
    }

    /// The statuses of the requests it refused.
    pub fn rejected(&self) -> Vec<StatusCode> {
        self.shared
            .rejected
            .lock()
            .map(|rejected| rejected.clone())
            .unwrap_or_default()
    }

    /// Waits for the `index`th text (counting from 1) to `to`.
    pub async fn wait_for(&self, to: &str, index: usize) -> Result<ReceivedText> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(text) = self
                .texts()
                .into_iter()
                .filter(|text| text.to == to)
                .nth(index - 1)
            {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "text {index} to {to} did not arrive within 15 s; received: {:?}; rejected: {:?}",
                    self.texts(),
                    self.rejected()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let status = match accept(&shared, request).await {
        Ok(text) => {
            if shared.refusing.load(Ordering::SeqCst) {
                if let Ok(mut rejected) = shared.rejected.lock() {
                    rejected.push(StatusCode::SERVICE_UNAVAILABLE);
                }
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                if let Ok(mut received) = shared.received.lock() {
                    received.push(text);
                }
                StatusCode::ACCEPTED
            }
        }
        Err(status) => {
            if let Ok(mut rejected) = shared.rejected.lock() {
                rejected.push(status);
            }
            status
        }
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = status;
    Ok(response)
}

/// The text a request carries, or the status that refuses it.
async fn accept(shared: &Shared, request: Request<Incoming>) -> Result<ReceivedText, StatusCode> {
    if request.method() != hyper::Method::POST || request.uri().path() != PATH {
        return Err(StatusCode::NOT_FOUND);
    }
    let authorised = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == format!("Bearer {}", shared.token));
    if !authorised {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let json = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|value| value == "application/json");
    if !json {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|_| StatusCode::BAD_REQUEST)?
        .to_bytes();
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or(StatusCode::BAD_REQUEST)
    };
    Ok(ReceivedText {
        to: field("to")?,
        from: field("from")?,
        text: field("text")?,
    })
}
