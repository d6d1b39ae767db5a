//! Headless Chromium (Debian's `chromium`), driven over the DevTools protocol on a WebSocket: load
//! a page, fill fields, press buttons, read text, take screenshots. Small on purpose: the pages
//! under test need no JavaScript, so "press a button and wait for the next document" is all the
//! synchronisation there is.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::logs;

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Long enough for a page whose request waits on the directory (a reset).
const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// One browser with one tab, closed when dropped.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    socket: Mutex<WebSocketStream<TcpStream>>,
    session_id: String,
    next_id: AtomicU64,
    profile: PathBuf,
    screenshots: PathBuf,
    screenshot_count: AtomicU64,
}

fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

impl Browser {
    /// Starts Chromium with a fresh profile; screenshots go to
    /// `target/test-artifacts/screenshots/<suite>/`.
    pub async fn launch(suite: &str) -> Result<Browser> {
        let profile =
            std::env::temp_dir().join(format!("writeback-chromium-{}-{suite}", std::process::id()));
        if profile.exists() {
            std::fs::remove_dir_all(&profile)?;
        }
        std::fs::create_dir_all(&profile)?;
        let screenshots = logs::target_directory()?
            .join("test-artifacts")
            .join("screenshots")
            .join(suite);
        if screenshots.exists() {
            std::fs::remove_dir_all(&screenshots)?;
        }
        std::fs::create_dir_all(&screenshots)?;
        // The background-networking flags keep Chromium from calling home, which a closed test
        // network refuses noisily; the certificate flag accepts the cloud's self-signed one.
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {CHROMIUM} (apt-get install chromium)"))?;
        let stderr = child.stderr.take().context("Chromium's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return Ok(url.trim().to_owned());
                }
            }
            Err(anyhow!("Chromium exited before it listened"))
        })
        .await
        .context("Chromium did not start within 30 s")??;
        // Chromium keeps writing to stderr; a full pipe would stall it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let address = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .context("the DevTools address")?
            .to_owned();
        let tcp = TcpStream::connect(&address).await?;
        let (socket, _) = tokio_tungstenite::client_async(endpoint.as_str(), tcp).await?;
        let mut browser = Browser {
            child,
            socket: Mutex::new(socket),
            session_id: String::new(),
            next_id: AtomicU64::new(1),
            profile,
            screenshots,
            screenshot_count: AtomicU64::new(0),
        };
        let target = browser
            .command("Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_owned();
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        browser.session_id = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_owned();
        browser
            .command(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await?;
        Ok(browser)
    }

    /// Sends one DevTools command (to the tab once attached) and returns its result.
    async fn command(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session_id.is_empty() {
            message["sessionId"] = Value::String(self.session_id.clone());
        }
        let mut socket = self.socket.lock().await;
        socket.send(Message::text(message.to_string())).await?;
        let deadline = Instant::now() + NAVIGATION_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(remaining, socket.next())
                .await
                .with_context(|| format!("no answer to {method}"))?
                .context("the DevTools connection closed")??;
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(text.as_str())?;
            // Events (no id) and answers to other commands are not waited for.
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                bail!("{method} failed: {error}");
            }
            return Ok(answer["result"].clone());
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn evaluate(&self, expression: &str) -> Result<Value> {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("evaluating {expression}: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Marks the current document, so that [`Self::wait_for_new_document`] can tell it was replaced.
    async fn mark_document(&self) -> Result<()> {
        self.evaluate("window.__writebackOldDocument = true")
            .await?;
        Ok(())
    }

    async fn wait_for_new_document(&self) -> Result<()> {
        let deadline = Instant::now() + NAVIGATION_TIMEOUT;
        loop {
            // While the old document unloads, evaluation may fail; that is not an answer yet.
            let loaded = self
                .evaluate(
                    "window.__writebackOldDocument === undefined && document.readyState === 'complete'",
                )
                .await;
            if matches!(loaded, Ok(Value::Bool(true))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no new page within {NAVIGATION_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.mark_document().await?;
        let navigated = self.command("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = navigated.get("errorText") {
            bail!("loading {url}: {error}");
        }
        self.wait_for_new_document().await
    }

    /// Sets the value of the field `selector` matches, as typing would.
    pub async fn fill(&self, selector: &str, value: &str) -> Result<()> {
        let done = self
            .evaluate(&format!(
                "(() => {{ const field = document.querySelector({}); if (!field) return false; \
                 field.value = {}; field.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
                quoted(selector),
                quoted(value)
            ))
            .await?;
        if done != Value::Bool(true) {
            bail!("no field matches {selector}");
        }
        Ok(())
    }

    pub async fn set_checked(&self, selector: &str, checked: bool) -> Result<()> {
        let done = self
            .evaluate(&format!(
                "(() => {{ const box = document.querySelector({}); if (!box) return false; box.checked = {checked}; return true; }})()",
                quoted(selector)
            ))
            .await?;
        if done != Value::Bool(true) {
            bail!("no checkbox matches {selector}");
        }
        Ok(())
    }

    /// Presses the button `selector` matches and waits for the page it leads to.
    pub async fn press(&self, selector: &str) -> Result<()> {
        self.mark_document().await?;
        let found = self
            .evaluate(&format!(
                "(() => {{ const button = document.querySelector({}); if (!button) return false; \
                 setTimeout(() => button.click(), 0); return true; }})()",
                quoted(selector)
            ))
            .await?;
        if found != Value::Bool(true) {
            bail!("no button matches {selector}");
        }
        self.wait_for_new_document().await
    }

    /// The text of the first element `selector` matches, or `None` when nothing matches.
    pub async fn text(&self, selector: &str) -> Result<Option<String>> {
        let value = self
            .evaluate(&format!(
                "(() => {{ const element = document.querySelector({}); return element ? element.innerText : null; }})()",
                quoted(selector)
            ))
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> Result<String> {
        self.text("body").await?.context("the page has no body")
    }

    pub async fn attribute(&self, selector: &str, name: &str) -> Result<Option<String>> {
        let value = self
            .evaluate(&format!(
                "(() => {{ const element = document.querySelector({}); return element ? element.getAttribute({}) : null; }})()",
                quoted(selector),
                quoted(name)
            ))
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    pub async fn url(&self) -> Result<String> {
        let value = self.evaluate("location.href").await?;
        value.as_str().map(str::to_owned).context("location.href")
    }

    /// Saves a PNG of the page as `NN-<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let shot = self
            .command(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await?;
        let data = shot["data"].as_str().context("screenshot data")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
        let number = self.screenshot_count.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.screenshots.join(format!("{number:02}-{name}.png"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    pub fn screenshot_directory(&self) -> &Path {
        &self.screenshots
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
