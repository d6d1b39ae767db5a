//! The admin API client, used by the `writeback` CLI, the test kit and the benchmark. It keeps one
//! HTTPS connection alive and reuses it for consecutive requests.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use writeback_proto::api::{
    AdministratorChange, AdministratorList, AgentSummary, AuditPage, AuditSettings,
    ChallengeAnswerRequest, ChangePasswordRequest, CloudNode, DirectoryGroup, DirectoryHealth,
    DirectoryUser, DirectoryUserDetail, EnrolmentChallenge, EnrolmentRequest, ErrorResponse,
    FullSyncResponse, IDEMPOTENCY_KEY_HEADER, MethodsCleared, OperationInFlight, OperationResponse,
    RegistrationTokenResponse, ResetPasswordRequest, SelfServiceSettings, SignInRequest,
    SignInResponse, SyncStatus,
};
use writeback_proto::ids::{AgentId, DirectoryName, RequestId};
use writeback_tls::Trust;

const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid cloud URL {0}: use https://host[:port]")]
    Url(String),
    #[error("cannot reach {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer (HTTP {status}): {detail}")]
    Decode { status: u16, detail: String },
}

/// A change to an administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdministratorAction {
    Disable,
    Enable,
    Delete,
    EndSessions,
}

#[derive(Debug)]
pub struct ApiClient {
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    token: Option<SecretString>,
    connection: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

/// A raw answer, for callers that check status codes themselves.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl ApiClient {
    /// The same server, trust and session on a connection of its own, for requests that run
    /// beside this client's.
    pub fn on_another_connection(&self) -> Self {
        Self {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.clone(),
            token: self.token.clone(),
            connection: Mutex::new(None),
        }
    }

    pub fn new(url: &str, trust: &Trust) -> Result<Self, ClientError> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Url(url.into()))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host.trim_matches(['[', ']']).to_owned(),
                port.parse().map_err(|_| ClientError::Url(url.into()))?,
            ),
            _ => (authority.trim_matches(['[', ']']).to_owned(), 443),
        };
        if host.is_empty() {
            return Err(ClientError::Url(url.into()));
        }
        let mut tls = writeback_tls::client_config(trust)
            .map_err(|error| ClientError::Tls(error.to_string()))?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            host,
            port,
            tls: Arc::new(tls),
            token: None,
            connection: Mutex::new(None),
        })
    }

    pub fn with_token(mut self, token: SecretString) -> Self {
        self.token = Some(token);
        self
    }

    /// `host:port`, with an IPv6 address in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let address = self.authority();
        let failed = |detail: String| ClientError::Connect {
            address: address.clone(),
            detail,
        };
        let tcp =
            tokio::time::timeout(TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
                .await
                .map_err(|_| failed("timed out".into()))?
                .map_err(|error| failed(error.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|error| failed(error.to_string()))?;
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|error| ClientError::Tls(error.to_string()))?;
        let stream = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|error| ClientError::Tls(error.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one request; `body` is JSON when present.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<RawResponse, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.authority());
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| ClientError::Http(error.to_string()))?;
        let mut slot = self.connection.lock().await;
        let mut reusable = slot.take().filter(|sender| !sender.is_closed());
        if let Some(sender) = reusable.as_mut()
            && sender.ready().await.is_err()
        {
            reusable = None;
        }
        let mut sender = match reusable {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| ClientError::Http("no answer within 60 s".into()))?
            .map_err(|error| ClientError::Http(error.to_string()))?;
        *slot = Some(sender);
        drop(slot);
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?
            .to_bytes();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, T), ClientError> {
        let (content_type, bytes) = match body {
            Some(body) => (
                Some("application/json"),
                serde_json::to_vec(body).map_err(|error| ClientError::Http(error.to_string()))?,
            ),
            None => (None, Vec::new()),
        };
        let response = self
            .send(method, path, content_type, bytes, headers)
            .await?;
        if let Ok(parsed) = serde_json::from_slice::<T>(&response.body) {
            return Ok((response.status, parsed));
        }
        if let Ok(error) = serde_json::from_slice::<ErrorResponse>(&response.body) {
            return Err(ClientError::Api {
                status: response.status.as_u16(),
                code: error.error.code,
                message: error.error.message,
            });
        }
        Err(ClientError::Decode {
            status: response.status.as_u16(),
            detail: String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect(),
        })
    }

    pub async fn sign_in(
        &self,
        email: &str,
        password: SecretString,
        totp_code: Option<String>,
    ) -> Result<SignInResponse, ClientError> {
        let body = SignInRequest {
            email: email.to_owned(),
            password,
            totp_code,
        };
        Ok(self
            .json(Method::POST, "/api/v1/sessions", Some(&body), &[])
            .await?
            .1)
    }

    /// Asks for an authenticator key for an administrator who has none yet.
    pub async fn begin_enrolment(
        &self,
        email: &str,
        password: SecretString,
    ) -> Result<EnrolmentChallenge, ClientError> {
        let body = EnrolmentRequest {
            email: email.to_owned(),
            password,
        };
        Ok(self
            .json(Method::POST, "/api/v1/sessions/enrolment", Some(&body), &[])
            .await?
            .1)
    }

    /// Answers an enrolment challenge with the first code from the new authenticator.
    pub async fn answer_challenge(
        &self,
        challenge: &SecretString,
        totp_code: &str,
    ) -> Result<SignInResponse, ClientError> {
        let body = ChallengeAnswerRequest {
            challenge: challenge.clone(),
            totp_code: totp_code.to_owned(),
        };
        Ok(self
            .json(Method::POST, "/api/v1/sessions/challenge", Some(&body), &[])
            .await?
            .1)
    }

    /// Removes every self-service method of `user`, who then registers anew.
    pub async fn clear_self_service_methods(
        &self,
        directory: &DirectoryName,
        user: &str,
    ) -> Result<MethodsCleared, ClientError> {
        let path = user_path(directory, user, "self-service-methods");
        Ok(self
            .json::<(), _>(Method::DELETE, &path, None, &[])
            .await?
            .1)
    }

    pub async fn administrators(&self) -> Result<AdministratorList, ClientError> {
        Ok(self
            .json::<(), _>(Method::GET, "/api/v1/administrators", None, &[])
            .await?
            .1)
    }

    /// Disables, enables or deletes an administrator, or ends their sessions.
    pub async fn change_administrator(
        &self,
        email: &str,
        change: AdministratorAction,
    ) -> Result<AdministratorChange, ClientError> {
        let base = format!("/api/v1/administrators/{}", percent_encode(email));
        let (method, path) = match change {
            AdministratorAction::Disable => (Method::POST, format!("{base}/disable")),
            AdministratorAction::Enable => (Method::POST, format!("{base}/enable")),
            AdministratorAction::Delete => (Method::DELETE, base),
            AdministratorAction::EndSessions => (Method::DELETE, format!("{base}/sessions")),
        };
        Ok(self.json::<(), _>(method, &path, None, &[]).await?.1)
    }

    pub async fn sign_out(&self) -> Result<(), ClientError> {
        let response = self
            .send(
                Method::DELETE,
                "/api/v1/sessions/current",
                None,
                Vec::new(),
                &[],
            )
            .await?;
        if response.status.is_success() {
            Ok(())
        } else {
            Err(ClientError::Decode {
                status: response.status.as_u16(),
                detail: "sign-out refused".into(),
            })
        }
    }

    /// Every operation the cloud is waiting on now, oldest first.
    pub async fn operations_in_flight(&self) -> Result<Vec<OperationInFlight>, ClientError> {
        Ok(self
            .json::<(), _>(Method::GET, "/api/v1/operations", None, &[])
            .await?
            .1)
    }

    /// The cloud's nodes, as the node answering sees them.
    pub async fn nodes(&self) -> Result<Vec<CloudNode>, ClientError> {
        Ok(self
            .json::<(), _>(Method::GET, "/api/v1/nodes", None, &[])
            .await?
            .1)
    }

    pub async fn agents(&self) -> Result<Vec<AgentSummary>, ClientError> {
        Ok(self
            .json::<(), _>(Method::GET, "/api/v1/agents", None, &[])
            .await?
            .1)
    }

    pub async fn reset_password(
        &self,
        directory: &DirectoryName,
        user: &str,
        request: &ResetPasswordRequest,
        idempotency_key: Option<RequestId>,
    ) -> Result<OperationResponse, ClientError> {
        let path = user_path(directory, user, "reset-password");
        let headers = idempotency_headers(idempotency_key);
        Ok(self
            .json(Method::POST, &path, Some(request), &headers)
            .await?
            .1)
    }

    pub async fn change_password(
        &self,
        directory: &DirectoryName,
        user: &str,
        request: &ChangePasswordRequest,
    ) -> Result<OperationResponse, ClientError> {
        let path = user_path(directory, user, "change-password");
        Ok(self.json(Method::POST, &path, Some(request), &[]).await?.1)
    }

    pub async fn unlock(
        &self,
        directory: &DirectoryName,
        user: &str,
    ) -> Result<OperationResponse, ClientError> {
        let path = user_path(directory, user, "unlock");
        Ok(self.json::<(), _>(Method::POST, &path, None, &[]).await?.1)
    }
}

/// A search of the synced users.
#[derive(Debug, Clone, Default)]
pub struct UserSearch {
    pub text: Option<String>,
    pub group: Option<String>,
    pub limit: Option<u32>,
}

impl ApiClient {
    pub async fn users(
        &self,
        directory: &DirectoryName,
        search: &UserSearch,
    ) -> Result<Vec<DirectoryUser>, ClientError> {
        let mut parameters = Vec::new();
        if let Some(text) = &search.text {
            parameters.push(format!("q={}", percent_encode(text)));
        }
        if let Some(group) = &search.group {
            parameters.push(format!("group={}", percent_encode(group)));
        }
        if let Some(limit) = search.limit {
            parameters.push(format!("limit={limit}"));
        }
        let path = format!(
            "/api/v1/directories/{directory}/users?{}",
            parameters.join("&")
        );
        Ok(self.json::<(), _>(Method::GET, &path, None, &[]).await?.1)
    }

    pub async fn user(
        &self,
        directory: &DirectoryName,
        user: &str,
    ) -> Result<DirectoryUserDetail, ClientError> {
        let path = format!(
            "/api/v1/directories/{directory}/users/{}",
            percent_encode(user)
        );
        Ok(self.json::<(), _>(Method::GET, &path, None, &[]).await?.1)
    }

    pub async fn groups(
        &self,
        directory: &DirectoryName,
        text: Option<&str>,
    ) -> Result<Vec<DirectoryGroup>, ClientError> {
        let query = text
            .map(|text| format!("?q={}", percent_encode(text)))
            .unwrap_or_default();
        let path = format!("/api/v1/directories/{directory}/groups{query}");
        Ok(self.json::<(), _>(Method::GET, &path, None, &[]).await?.1)
    }

    pub async fn sync_status(&self, directory: &DirectoryName) -> Result<SyncStatus, ClientError> {
        let path = format!("/api/v1/directories/{directory}/sync");
        Ok(self.json::<(), _>(Method::GET, &path, None, &[]).await?.1)
    }

    pub async fn request_full_sync(
        &self,
        directory: &DirectoryName,
    ) -> Result<FullSyncResponse, ClientError> {
        let path = format!("/api/v1/directories/{directory}/sync/full");
        Ok(self.json::<(), _>(Method::POST, &path, None, &[]).await?.1)
    }
}

pub use writeback_proto::api::AuditQuery;

/// `query` as the API's query string, asking for `format` (whatever `query.format` says).
fn audit_query_string(query: &AuditQuery, format: &str) -> String {
    let mut parameters = vec![format!("format={format}")];
    let texts = [
        ("since", &query.since),
        ("until", &query.until),
        ("actor", &query.actor),
        ("target", &query.target),
        ("directory", &query.directory),
        ("operation", &query.operation),
        ("outcome", &query.outcome),
        ("result_code", &query.result_code),
        ("request_id", &query.request_id),
    ];
    for (name, value) in texts {
        if let Some(value) = value {
            parameters.push(format!("{name}={}", percent_encode(value)));
        }
    }
    if let Some(before) = query.before {
        parameters.push(format!("before={before}"));
    }
    if let Some(limit) = query.limit {
        parameters.push(format!("limit={limit}"));
    }
    parameters.join("&")
}

impl ApiClient {
    /// Fails with the API's error unless the answer is a 2xx; returns the body.
    async fn expect_success(&self, method: Method, path: &str) -> Result<Bytes, ClientError> {
        let response = self.send(method, path, None, Vec::new(), &[]).await?;
        if response.status.is_success() {
            return Ok(response.body);
        }
        Err(
            match serde_json::from_slice::<ErrorResponse>(&response.body) {
                Ok(error) => ClientError::Api {
                    status: response.status.as_u16(),
                    code: error.error.code,
                    message: error.error.message,
                },
                Err(_) => ClientError::Decode {
                    status: response.status.as_u16(),
                    detail: String::from_utf8_lossy(&response.body)
                        .chars()
                        .take(200)
                        .collect(),
                },
            },
        )
    }

    pub async fn register_agent(
        &self,
        directory: &DirectoryName,
    ) -> Result<RegistrationTokenResponse, ClientError> {
        let path = format!("/api/v1/directories/{directory}/registration-tokens");
        Ok(self.json::<(), _>(Method::POST, &path, None, &[]).await?.1)
    }

    pub async fn revoke_agent(&self, agent_id: &AgentId) -> Result<(), ClientError> {
        let path = format!("/api/v1/agents/{agent_id}/revoke");
        self.expect_success(Method::POST, &path).await.map(drop)
    }

    pub async fn directories(&self) -> Result<Vec<DirectoryHealth>, ClientError> {
        Ok(self
            .json::<(), _>(Method::GET, "/api/v1/directories", None, &[])
            .await?
            .1)
    }

    pub async fn directory_health(
        &self,
        directory: &DirectoryName,
    ) -> Result<DirectoryHealth, ClientError> {
        let path = format!("/api/v1/directories/{directory}/health");
        Ok(self.json::<(), _>(Method::GET, &path, None, &[]).await?.1)
    }

    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, ClientError> {
        let path = format!("/api/v1/audit?{}", audit_query_string(query, "json"));
        Ok(self.json::<(), _>(Method::GET, &path, None, &[]).await?.1)
    }

    /// The matching entries as CSV, header row first.
    pub async fn audit_csv(&self, query: &AuditQuery) -> Result<String, ClientError> {
        let path = format!("/api/v1/audit?{}", audit_query_string(query, "csv"));
        let body = self.expect_success(Method::GET, &path).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn audit_settings(&self) -> Result<AuditSettings, ClientError> {
        Ok(self
            .json::<(), _>(Method::GET, "/api/v1/settings/audit", None, &[])
            .await?
            .1)
    }

    pub async fn update_audit_settings(
        &self,
        settings: &AuditSettings,
    ) -> Result<AuditSettings, ClientError> {
        Ok(self
            .json(Method::PUT, "/api/v1/settings/audit", Some(settings), &[])
            .await?
            .1)
    }

    pub async fn self_service_settings(&self) -> Result<SelfServiceSettings, ClientError> {
        Ok(self
            .json::<(), _>(Method::GET, "/api/v1/settings/self-service", None, &[])
            .await?
            .1)
    }

    pub async fn update_self_service_settings(
        &self,
        settings: &SelfServiceSettings,
    ) -> Result<SelfServiceSettings, ClientError> {
        Ok(self
            .json(
                Method::PUT,
                "/api/v1/settings/self-service",
                Some(settings),
                &[],
            )
            .await?
            .1)
    }
}

fn idempotency_headers(key: Option<RequestId>) -> Vec<(&'static str, String)> {
    key.map(|key| (IDEMPOTENCY_KEY_HEADER, key.to_string()))
        .into_iter()
        .collect()
}

pub fn user_path(directory: &DirectoryName, user: &str, action: &str) -> String {
    format!(
        "/api/v1/directories/{directory}/users/{}/{action}",
        percent_encode(user)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so any user name is one path
/// segment.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_become_one_path_segment() {
        assert_eq!(percent_encode("jdoe@corp.example"), "jdoe%40corp.example");
        assert_eq!(percent_encode("*)(uid=*"), "%2A%29%28uid%3D%2A");
        assert_eq!(percent_encode("a/b é"), "a%2Fb%20%C3%A9");
    }

    #[test]
    fn urls_must_be_https() {
        assert!(
            ApiClient::new(
                "http://localhost:8443",
                &Trust::Pinned(writeback_tls::Fingerprint([0; 32]))
            )
            .is_err()
        );
        let client = ApiClient::new(
            "https://127.0.0.1:8443/",
            &Trust::Pinned(writeback_tls::Fingerprint([0; 32])),
        )
        .unwrap();
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 8443));
        let client = ApiClient::new(
            "https://cloud.example",
            &Trust::Pinned(writeback_tls::Fingerprint([0; 32])),
        )
        .unwrap();
        assert_eq!((client.host.as_str(), client.port), ("cloud.example", 443));
    }
}
