//! The agent's one way out: a WebSocket over TLS to the cloud, which the agent dials.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use writeback_proto::frame::MAX_FRAME_BYTES;
use writeback_tls::Trust;

use crate::AgentError;

pub type CloudSocket = WebSocketStream<TlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_PATH: &str = "/agent/v1/connect";

/// Host and port of an `https://` (or `wss://`) cloud URL.
pub fn cloud_endpoint(cloud_url: &str) -> Result<(String, u16), AgentError> {
    let uri: Uri = cloud_url
        .parse()
        .map_err(|_| AgentError::Config(format!("{cloud_url} is not a URL")))?;
    match uri.scheme_str() {
        Some("https" | "wss") => {}
        _ => {
            return Err(AgentError::Config(format!(
                "the cloud URL must start with https:// (got {cloud_url})"
            )));
        }
    }
    let host = uri
        .host()
        .ok_or_else(|| AgentError::Config(format!("{cloud_url} names no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

pub async fn connect(cloud_url: &str, trust: &Trust) -> Result<CloudSocket, AgentError> {
    let (host, port) = cloud_endpoint(cloud_url)?;
    let unreachable = |detail: String| {
        AgentError::Transport(format!("cannot reach the cloud at {host}:{port}: {detail}"))
    };
    let mut tls = writeback_tls::client_config(trust)
        .map_err(|error| AgentError::Config(error.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|_| AgentError::Config(format!("{host} is not a valid server name")))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|error| unreachable(error.to_string()))?;
    // Frames are small and each one is awaited by the other side: send them without waiting.
    tcp.set_nodelay(true)
        .map_err(|error| unreachable(error.to_string()))?;
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(std::sync::Arc::new(tls)).connect(server_name, tcp),
    )
    .await
    .map_err(|_| unreachable("TLS handshake timed out".into()))?
    .map_err(|error| unreachable(format!("TLS handshake failed: {error}")))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES * 2))
        .max_frame_size(Some(MAX_FRAME_BYTES * 2));
    let (socket, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async_with_config(
            format!("wss://{authority}{CONNECT_PATH}"),
            stream,
            Some(config),
        ),
    )
    .await
    .map_err(|_| unreachable("WebSocket handshake timed out".into()))?
    .map_err(|error| unreachable(format!("WebSocket handshake failed: {error}")))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_must_be_https_and_name_a_host() {
        assert_eq!(
            cloud_endpoint("https://cloud.example.com").unwrap(),
            ("cloud.example.com".into(), 443)
        );
        assert_eq!(
            cloud_endpoint("https://127.0.0.1:8443/").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(
            cloud_endpoint("https://[::1]:9000").unwrap(),
            ("::1".into(), 9000)
        );
        assert!(cloud_endpoint("http://cloud.example.com").is_err());
        assert!(cloud_endpoint("cloud.example.com").is_err());
    }
}
