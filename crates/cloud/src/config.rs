//! `writeback-cloud`'s one configuration struct. Layered by `writeback-config`: defaults, then the
//! file given with `--config`, then `WRITEBACK_CLOUD_*` variables, then flags.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use writeback_config::LogConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Address the HTTPS listener binds, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// Holds the database (`writeback.db`) and, when no certificate is configured, the generated
    /// self-signed one under `tls/`.
    pub data_dir: PathBuf,
    /// PEM certificate chain; with `tls_private_key`. When absent, a self-signed certificate for
    /// `self_signed_names` is generated once and kept in the data directory.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub self_signed_names: Vec<String>,
    /// How long a writeback may take end to end before the caller is told "timeout".
    pub request_timeout_seconds: u64,
    pub heartbeat_interval_seconds: u64,
    pub admin_session_hours: u64,
    pub registration_token_minutes: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Connected agents older than this make their directory's health "agent outdated".
    pub minimum_agent_version: String,
    /// A directory is "degraded" when writebacks failed for want of an agent or the directory
    /// within this many minutes.
    pub health_window_minutes: u64,
    /// Serve Prometheus metrics at `/metrics` (numbers only, no names of users).
    pub metrics_enabled: bool,
    /// Outgoing mail: one-time codes for the portal and notifications. Without a host no mail is
    /// sent, and the email method cannot be offered.
    pub smtp: SmtpConfig,
    /// Text messages: one-time codes for the portal, through an HTTP provider. Without a URL no
    /// text is sent, and the SMS method cannot be offered.
    pub sms: SmsConfig,
    /// The portal's sessions (a reset in progress, or a signed-in user) end this long after they
    /// start.
    pub portal_session_minutes: u64,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: Option<String>,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The sender, e.g. `Writeback <writeback@example.com>`.
    pub from: String,
    pub username: Option<String>,
    /// A file holding the SMTP password, read at start.
    pub password_file: Option<PathBuf>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: 587,
            security: SmtpSecurity::StartTls,
            from: "Writeback <writeback@localhost>".into(),
            username: None,
            password_file: None,
        }
    }
}

/// An SMS provider reached over HTTPS. Each text is one `POST` to `url` of the JSON object
/// `{"to": "+447700900123", "from": <sender>, "text": "..."}`, with `Authorization: Bearer
/// <token>` when a token file is set; any 2xx answer means the provider took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// The provider's endpoint, `https://...`.
    pub url: Option<String>,
    /// A file holding the provider's bearer token, read at start.
    pub token_file: Option<PathBuf>,
    /// The sender name or number the phone shows.
    pub sender: String,
    /// PEM certificates to trust for the provider instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// How long one text may take to hand over before it counts as failed.
    pub timeout_seconds: u64,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            url: None,
            token_file: None,
            sender: "Writeback".into(),
            ca_file: None,
            timeout_seconds: 10,
        }
    }
}

/// How the SMTP connection is protected. `none` is for a relay on the same host or loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    None,
    StartTls,
    Tls,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            data_dir: PathBuf::from("/var/lib/writeback-cloud"),
            tls_certificate: None,
            tls_private_key: None,
            self_signed_names: vec!["localhost".into(), "127.0.0.1".into()],
            request_timeout_seconds: 15,
            heartbeat_interval_seconds: 30,
            admin_session_hours: 12,
            registration_token_minutes: 60,
            max_body_bytes: 16 * 1024,
            minimum_agent_version: env!("CARGO_PKG_VERSION").into(),
            health_window_minutes: 15,
            metrics_enabled: true,
            smtp: SmtpConfig::default(),
            sms: SmsConfig::default(),
            portal_session_minutes: 15,
            log: LogConfig::default(),
        }
    }
}

impl CloudConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds.max(1))
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_seconds.max(1))
    }

    pub fn health_window(&self) -> Duration {
        Duration::from_secs(self.health_window_minutes.max(1) * 60)
    }

    pub fn portal_session(&self) -> Duration {
        Duration::from_secs(self.portal_session_minutes.max(1) * 60)
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("writeback.db")
    }
}
