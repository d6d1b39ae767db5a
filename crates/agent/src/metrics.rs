//! The agent's Prometheus metrics, served on `metrics_listen` when it is set (off by default; meant
//! for loopback or a management network). This endpoint is the agent's only listener: it answers
//! `GET /metrics` with numbers and nothing else, so it needs no more HTTP than a status line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use writeback_config::metrics::{
    CONTENT_TYPE, CounterFamily, HistogramFamily, LATENCY_BUCKETS, render_gauge,
};
use writeback_proto::frame::AgentStatus;

/// A request head longer than this is not a scrape.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct AgentMetrics {
    pub operations: CounterFamily,
    pub operation_seconds: HistogramFamily,
    pub sync_changes: CounterFamily,
    pub connected: AtomicBool,
    pub requests_in_flight: AtomicUsize,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            operations: CounterFamily::new(
                "writeback_agent_operations_total",
                "Operations applied or refused, by operation and result code.",
                &["operation", "result"],
            ),
            operation_seconds: HistogramFamily::new(
                "writeback_agent_operation_duration_seconds",
                "Time to apply one operation, directory included, by operation.",
                &["operation"],
                LATENCY_BUCKETS,
            ),
            sync_changes: CounterFamily::new(
                "writeback_agent_sync_changes_total",
                "Directory changes sent to the cloud.",
                &[],
            ),
            connected: AtomicBool::new(false),
            requests_in_flight: AtomicUsize::new(0),
        }
    }
}

impl AgentMetrics {
    pub fn render(&self, directory: &AgentStatus) -> String {
        let mut out = String::new();
        self.operations.render(&mut out);
        self.operation_seconds.render(&mut out);
        self.sync_changes.render(&mut out);
        let gauge = |value: bool| vec![(Vec::new(), f64::from(u8::from(value)))];
        render_gauge(
            "writeback_agent_connected",
            "1 while the agent holds its connection to the cloud.",
            &[],
            &gauge(self.connected.load(Ordering::Relaxed)),
            &mut out,
        );
        render_gauge(
            "writeback_agent_directory_reachable",
            "1 while the agent can use its directory.",
            &[],
            &gauge(directory.directory_reachable),
            &mut out,
        );
        render_gauge(
            "writeback_agent_requests_in_flight",
            "Operations being applied now.",
            &[],
            &[(
                Vec::new(),
                self.requests_in_flight.load(Ordering::Relaxed) as f64,
            )],
            &mut out,
        );
        out
    }
}

/// Serves scrapes until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<AgentMetrics>,
    directory: watch::Receiver<AgentStatus>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        let directory = directory.clone();
        tokio::spawn(async move {
            let body = metrics.render(&directory.borrow());
            let _ = answer(stream, &body).await;
        });
    }
}

async fn answer(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await?;
            if read == 0 || head.len() + read > MAX_REQUEST_BYTES {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buffer[..read]);
        }
        Ok(true)
    })
    .await
    .unwrap_or(Ok(false))?;
    let response = if !complete {
        status_only("400 Bad Request")
    } else if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else if head.starts_with(b"GET ") {
        status_only("404 Not Found")
    } else {
        status_only("405 Method Not Allowed")
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn status_only(status: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(address: std::net::SocketAddr, text: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(text).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_scrape_gets_the_text_format_and_anything_else_gets_nothing() {
        let metrics = Arc::new(AgentMetrics::default());
        metrics.operations.increment(&["unlock", "success"]);
        metrics.connected.store(true, Ordering::Relaxed);
        let (_sender, directory) = watch::channel(AgentStatus {
            directory_reachable: false,
            detail: Some("cannot connect to 192.0.2.1".into()),
            password_policy: None,
            lockout: None,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, metrics, directory));

        let scrape = request(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
        assert!(scrape.contains(
            "writeback_agent_operations_total{operation=\"unlock\",result=\"success\"} 1\n"
        ));
        assert!(scrape.contains("writeback_agent_connected 1\n"));
        assert!(scrape.contains("writeback_agent_directory_reachable 0\n"));
        assert!(!scrape.contains("192.0.2.1"), "no free text in metrics");

        let other = request(address, b"GET /agent.json HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = request(address, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let unfinished = request(address, b"GET /metrics HTTP/1.1\r\n").await;
        assert!(unfinished.starts_with("HTTP/1.1 400"), "{unfinished}");
    }
}
