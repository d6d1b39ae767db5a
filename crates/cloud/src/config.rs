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
    /// A PostgreSQL database (`postgres://user:password@host/name`) instead of the SQLite file in
    /// the data directory: the one every node of a cluster shares.
    pub database_url: Option<String>,
    /// A file holding `database_url`, so that its password stays out of the configuration.
    pub database_url_file: Option<PathBuf>,
    /// PEM certificate chain; with `tls_private_key`. When absent, a self-signed certificate for
    /// `self_signed_names` is generated once and kept in the data directory.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub self_signed_names: Vec<String>,
    /// The key that seals the secrets kept in the database (authenticator keys, what checks each
    /// self-service method). Created 0600 at first start; `data_dir/secrets.key` unless set, and
    /// best kept on other storage than the database's backups.
    pub secrets_key_file: Option<PathBuf>,
    /// The filter of breached passwords `writeback-cloud breached import` writes and the cloud
    /// screens new passwords against; `data_dir/breached-passwords.fuse` unless set. Each node of
    /// a cluster reads its own copy.
    pub breached_passwords_file: Option<PathBuf>,
    /// How long a writeback may take end to end before the caller is told "timeout".
    pub request_timeout_seconds: u64,
    /// How often agents send a heartbeat; three missed end the connection, and the agent's
    /// requests go elsewhere.
    pub heartbeat_interval_ms: u64,
    pub admin_session_hours: u64,
    /// An administrator session unused for this long ends.
    pub admin_idle_minutes: u64,
    pub registration_token_minutes: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Connected agents older than this make their directory's health "agent outdated".
    pub minimum_agent_version: String,
    /// A directory is "degraded" when writebacks failed for want of an agent or the directory
    /// within this many minutes.
    pub health_window_minutes: u64,
    /// A directory with fewer connected agents that can use it than this is "degraded": one
    /// more loss and writeback stops. Set it to the number of agents run for redundancy.
    pub minimum_healthy_agents: u64,
    /// This cloud node's name, shown beside each agent connected to it; the host's name when
    /// empty.
    pub node_name: String,
    /// Serve Prometheus metrics (numbers only, no names of users) on a listener of their own, plain
    /// HTTP, e.g. `127.0.0.1:9464`. Off by default.
    pub metrics_listen: Option<String>,
    /// Serve `/metrics` on the main listener too, to scrapers that send this file's token as
    /// `Authorization: Bearer`. Without it the main listener has no `/metrics`.
    pub metrics_token_file: Option<PathBuf>,
    /// What one server spends on its clients at most.
    pub resources: ResourcesConfig,
    /// Outgoing mail: one-time codes for the portal and notifications. Without a host no mail is
    /// sent, and the email method cannot be offered.
    pub smtp: SmtpConfig,
    /// Text messages: one-time codes for the portal, through an HTTP provider. Without a URL no
    /// text is sent, and the SMS method cannot be offered.
    pub sms: SmsConfig,
    /// The portal's sessions (a reset in progress, or a signed-in user) end this long after they
    /// start.
    pub portal_session_minutes: u64,
    /// How many wrong guesses and sent codes are allowed, per account, per client address and in
    /// all, and which proxies may say who the client is.
    pub limits: LimitsConfig,
    /// Mail and texts telling people their password expires soon.
    pub expiry_reminders: ExpiryRemindersConfig,
    pub log: LogConfig,
}

/// When people are told their password expires soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryRemindersConfig {
    /// Days before expiry at which a reminder goes, each once per password; empty sends none.
    pub days_before: Vec<u32>,
    /// How often the cloud looks for passwords that reached a threshold.
    pub check_interval_minutes: u64,
    /// The portal's address as people reach it, for the link in a reminder, e.g.
    /// `https://passwords.example.com`; `https://` and the first of `self_signed_names` with the
    /// listener's port when empty.
    pub portal_url: String,
}

impl Default for ExpiryRemindersConfig {
    fn default() -> Self {
        Self {
            days_before: vec![14, 7, 1],
            check_interval_minutes: 60,
            portal_url: String::new(),
        }
    }
}

/// Bounds on connections, slow clients and password hashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesConfig {
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// A client must send a request's headers within this time of starting them, or of the
    /// connection becoming idle.
    pub header_timeout_seconds: u64,
    /// A client must send a request's whole body within this time.
    pub body_timeout_seconds: u64,
    /// A client must take each part of an answer within this time.
    pub write_timeout_seconds: u64,
    /// Password hashes (Argon2) computed at once, and how many more may wait; beyond that the
    /// answer is "try again shortly".
    pub hashing_threads: usize,
    pub hashing_queue: usize,
    /// Resets in progress and signed-in portal users held at once, each apart: beyond these
    /// the oldest give way, and a flood of new resets never signs anyone out.
    pub portal_max_flows: usize,
    pub portal_max_sessions: usize,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout_seconds: 10,
            body_timeout_seconds: 10,
            write_timeout_seconds: 30,
            hashing_threads: 2,
            hashing_queue: 16,
            portal_max_flows: 50_000,
            portal_max_sessions: 50_000,
        }
    }
}

impl ResourcesConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_seconds.max(1))
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_seconds.max(1))
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_seconds.max(1))
    }
}

/// At most `max` within `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: u64,
    pub window_seconds: u64,
}

impl RateLimit {
    pub const fn new(max: u64, window_seconds: u64) -> Self {
        Self {
            max,
            window_seconds,
        }
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds.max(1))
    }
}

/// Every limit is reserved in the store before the work it guards, so a burst of parallel
/// requests gets exactly `max` through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Reverse proxies in front of the cloud. Only a request from one of these addresses may name
    /// its client in `X-Forwarded-For`; from anywhere else the header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Wrong proofs (one-time codes, authenticator codes, security answers, portal sign-in
    /// passwords) for one account; the next is refused and self-service is blocked for that
    /// account for `block_hours`. Portal sign-ins are held below the directory's lockout
    /// threshold as well.
    pub proof_failures_per_account: RateLimit,
    /// Wrong proofs from one client address, whatever the account.
    pub proof_failures_per_address: RateLimit,
    /// Wrong proofs from everywhere together: a ceiling on guessing spread over many accounts and
    /// addresses.
    pub proof_failures_global: RateLimit,
    /// One-time codes mailed or texted to one account; the next is refused and self-service is
    /// blocked for `block_hours`.
    pub codes_per_account: RateLimit,
    pub codes_per_address: RateLimit,
    pub codes_global: RateLimit,
    pub block_hours: u64,
    /// Wrong administrator passwords or authenticator codes for one administrator (an unknown
    /// email counts as one too), then refused until the window has passed.
    pub admin_failures_per_account: RateLimit,
    pub admin_failures_per_address: RateLimit,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            proof_failures_per_account: RateLimit::new(5, 3600),
            proof_failures_per_address: RateLimit::new(20, 3600),
            proof_failures_global: RateLimit::new(300, 60),
            codes_per_account: RateLimit::new(10, 600),
            codes_per_address: RateLimit::new(30, 600),
            codes_global: RateLimit::new(300, 60),
            block_hours: 24,
            admin_failures_per_account: RateLimit::new(5, 900),
            admin_failures_per_address: RateLimit::new(20, 900),
        }
    }
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
            database_url: None,
            database_url_file: None,
            secrets_key_file: None,
            breached_passwords_file: None,
            request_timeout_seconds: 15,
            heartbeat_interval_ms: 500,
            admin_session_hours: 12,
            admin_idle_minutes: 30,
            registration_token_minutes: 60,
            max_body_bytes: 16 * 1024,
            minimum_agent_version: env!("CARGO_PKG_VERSION").into(),
            health_window_minutes: 15,
            minimum_healthy_agents: 1,
            node_name: String::new(),
            metrics_listen: None,
            metrics_token_file: None,
            resources: ResourcesConfig::default(),
            smtp: SmtpConfig::default(),
            sms: SmsConfig::default(),
            portal_session_minutes: 15,
            limits: LimitsConfig::default(),
            expiry_reminders: ExpiryRemindersConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl CloudConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds.max(1))
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(100))
    }

    /// `node_name`, or the host's name.
    pub fn node(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "writeback-cloud".to_owned())
    }

    pub fn health_window(&self) -> Duration {
        Duration::from_secs(self.health_window_minutes.max(1) * 60)
    }

    pub fn portal_session(&self) -> Duration {
        Duration::from_secs(self.portal_session_minutes.max(1) * 60)
    }

    /// The PostgreSQL database's URL, when one is configured: `database_url_file`'s first line,
    /// or `database_url`.
    pub fn database_url(&self) -> std::io::Result<Option<String>> {
        match &self.database_url_file {
            Some(file) => Ok(std::fs::read_to_string(file)?
                .lines()
                .next()
                .map(|line| line.trim().to_owned())),
            None => Ok(self.database_url.clone()),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("writeback.db")
    }

    /// Where a reminder's link sends people: the portal's page for changing a password.
    pub fn portal_change_url(&self) -> String {
        let configured = self.expiry_reminders.portal_url.trim_end_matches('/');
        let base = if configured.is_empty() {
            let host = self
                .self_signed_names
                .first()
                .map_or("localhost", String::as_str);
            let port = self.listen.rsplit(':').next().unwrap_or("443");
            format!("https://{host}:{port}")
        } else {
            configured.to_owned()
        };
        format!("{base}/portal/change")
    }

    pub fn breached_passwords_path(&self) -> PathBuf {
        self.breached_passwords_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("breached-passwords.fuse"))
    }

    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secrets.key"))
    }
}
