//! A plain HTTP client with a cookie jar, for the console and portal tests' requests that a
//! browser would never send (forged tokens, other content types, replays).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test infrastructure: a failed step should stop the test"
)]

use hyper::Method;

use crate::Stack;

/// A plain HTTP client with a cookie jar, for what a browser would never send.
#[derive(Debug)]
pub struct WebClient {
    pub client: writeback_cli::ApiClient,
    pub cookies: Vec<(String, String)>,
}

impl WebClient {
    pub fn new(stack: &Stack) -> Self {
        Self::for_url(&stack.url(), stack.fingerprint)
    }

    /// A client signed in to the console of the cloud node at `url` as `stack`'s administrator,
    /// with its password and a fresh code of its authenticator.
    pub async fn console_signed_in(
        stack: &Stack,
        url: &str,
        fingerprint: writeback_tls::Fingerprint,
    ) -> Self {
        let mut console = Self::for_url(url, fingerprint);
        let page = console
            .send(Method::GET, "/console/sign-in", None, &[])
            .await;
        let csrf = Self::csrf(&page);
        let password = console
            .send(
                Method::POST,
                "/console/sign-in",
                Some(&[
                    ("csrf", &csrf),
                    ("email", crate::stack::ADMIN_EMAIL),
                    ("password", &stack.admin_password),
                ]),
                &[],
            )
            .await;
        assert_eq!(password.status, hyper::StatusCode::SEE_OTHER);
        let code_path = Self::location(&password);
        let code_page = console.send(Method::GET, &code_path, None, &[]).await;
        let csrf = Self::csrf(&code_page);
        let code = stack.admin_authenticator.fresh_code().await;
        let signed_in = console
            .send(
                Method::POST,
                &code_path,
                Some(&[("csrf", &csrf), ("code", &code)]),
                &[],
            )
            .await;
        assert_eq!(signed_in.status, hyper::StatusCode::SEE_OTHER);
        console
    }

    /// A client of the cloud at `url`, whose certificate has `fingerprint`.
    pub fn for_url(url: &str, fingerprint: writeback_tls::Fingerprint) -> Self {
        Self {
            client: writeback_cli::ApiClient::new(url, &writeback_tls::Trust::Pinned(fingerprint))
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra: &[(&str, String)],
    ) -> writeback_cli::RawResponse {
        let mut headers: Vec<(&str, String)> = extra.to_vec();
        if !self.cookies.is_empty() {
            let jar = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ");
            headers.push(("cookie", jar));
        }
        let (content_type, body) = match form {
            Some(fields) => (
                Some("application/x-www-form-urlencoded"),
                fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", writeback_cli::percent_encode(value)))
                    .collect::<Vec<_>>()
                    .join("&")
                    .into_bytes(),
            ),
            None => (None, Vec::new()),
        };
        let response = self
            .client
            .send(method, path, content_type, body, &headers)
            .await
            .unwrap();
        for set in response.headers.get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(existing, _)| existing != name);
            if !text.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        response
    }

    pub fn body(response: &writeback_cli::RawResponse) -> String {
        String::from_utf8_lossy(&response.body).into_owned()
    }

    /// The value of the first `csrf` field in a page.
    pub fn csrf(response: &writeback_cli::RawResponse) -> String {
        Self::body(response)
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page has a form")
            .to_owned()
    }

    pub fn location(response: &writeback_cli::RawResponse) -> String {
        response.headers["location"].to_str().unwrap().to_owned()
    }
}

/// A bare TLS connection to the stack's cloud, for writing requests byte by byte as a slow or
/// broken client would.
pub async fn tls_stream(
    stack: &Stack,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut config =
        writeback_tls::client_config(&writeback_tls::Trust::Pinned(stack.fingerprint))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(stack.address).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    Ok(connector.connect(name, tcp).await?)
}
