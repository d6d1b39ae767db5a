//! A real SMTP server for tests: Debian's `aiosmtpd` on a loopback port, writing every message it
//! receives into a maildir that tests read. The process dies with the test binary.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct MailServer {
    pub port: u16,
    maildir: PathBuf,
    _process: Child,
}

/// One received message, as far as tests look at it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl MailServer {
    pub async fn start(work: &std::path::Path) -> Result<MailServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // aiosmtpd makes the maildir (tmp, new, cur) only when the folder does not exist yet.
        std::fs::create_dir_all(work)?;
        let maildir = work.join(format!("maildir-{port}"));
        let process = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting aiosmtpd (Debian package python3-aiosmtpd)")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the SMTP server did not start listening on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(MailServer {
            port,
            maildir,
            _process: process,
        })
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Result<Vec<ReceivedMail>> {
        let mut messages = Vec::new();
        for folder in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(folder)) else {
                continue;
            };
            for entry in entries {
                let entry = entry?;
                let received = entry.metadata()?.modified()?;
                let text = std::fs::read_to_string(entry.path())?;
                messages.push((received, parse(&text)));
            }
        }
        messages.sort_by_key(|(received, _)| *received);
        Ok(messages.into_iter().map(|(_, mail)| mail).collect())
    }

    /// Waits for the `index`th message (counting from 1) to `to` whose subject contains
    /// `subject`.
    pub async fn wait_for(&self, to: &str, subject: &str, index: usize) -> Result<ReceivedMail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let matching: Vec<ReceivedMail> = self
                .messages()?
                .into_iter()
                .filter(|mail| mail.to.contains(to) && mail.subject.contains(subject))
                .collect();
            if matching.len() >= index {
                return Ok(matching[index - 1].clone());
            }
            if Instant::now() > deadline {
                bail!("no message {index} to {to} about {subject:?} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many messages went to `to`.
    pub fn count_to(&self, to: &str) -> Result<usize> {
        Ok(self
            .messages()?
            .iter()
            .filter(|mail| mail.to.contains(to))
            .count())
    }
}

fn parse(text: &str) -> ReceivedMail {
    let (headers, body) = text
        .replace("\r\n", "\n")
        .split_once("\n\n")
        .map(|(headers, body)| (headers.to_owned(), body.to_owned()))
        .unwrap_or_default();
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|line| {
                line.split_once(':')
                    .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("quoted-printable") {
        quoted_printable(&body)
    } else {
        body
    };
    ReceivedMail {
        to: header("To"),
        subject: header("Subject"),
        body,
    }
}

/// Decodes a quoted-printable body (RFC 2045): soft line breaks go, `=XX` is the byte XX.
fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'=')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The first run of six digits in `text`: the one-time code of a message.
pub fn code_in(text: &str) -> Option<String> {
    let digits: Vec<char> = text.chars().collect();
    digits.windows(6).enumerate().find_map(|(index, window)| {
        let before = index.checked_sub(1).map(|i| digits[i]);
        let after = digits.get(index + 6);
        (window.iter().all(char::is_ascii_digit)
            && !before.is_some_and(|c| c.is_ascii_digit())
            && !after.is_some_and(char::is_ascii_digit))
        .then(|| window.iter().collect())
    })
}
