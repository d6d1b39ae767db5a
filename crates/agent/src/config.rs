//! `writeback-agent`'s one configuration struct. Layered by `writeback-config`: defaults, then the
//! file given with `--config`, then `WRITEBACK_AGENT_*` variables, then flags.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use writeback_config::LogConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Holds `agent.json` (identity, keys, cloud address; mode 0600) and `journal.jsonl`.
    pub data_dir: PathBuf,
    pub directory: DirectoryConfig,
    /// Words no password may contain (case-insensitive), checked before the directory is touched.
    pub banned_passwords: Vec<String>,
    /// A new sealing key is generated at connection time once the current one is this old.
    pub sealing_key_rotation_days: u64,
    /// Other nodes of the cloud (`https://…`), tried in turn after the one the agent registered
    /// with when it cannot be reached. Each must present a certificate the registration's trust
    /// accepts (the same pin, or a certificate from the same CA).
    pub cloud_urls: Vec<String>,
    pub reconnect_initial_delay_ms: u64,
    pub reconnect_max_delay_seconds: u64,
    pub sync: SyncConfig,
    /// Serve Prometheus metrics at `http://<this>/metrics`, e.g. `127.0.0.1:9464`. Off when unset.
    pub metrics_listen: Option<String>,
    pub log: LogConfig,
}

/// Directory sync of the allowed OUs' users and groups to the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub enabled: bool,
    /// How often the DC's highest committed USN is read; a change reaches the cloud within about
    /// this long. The read is a single root DSE lookup, and a search for what changed follows only
    /// when the number moved, so five reads a second cost a DC next to nothing.
    pub poll_interval_ms: u64,
    /// When nothing changed for this long, the agent still confirms its cursor, so the cloud can
    /// tell a quiet directory from a stalled sync.
    pub confirm_interval_seconds: u64,
    /// How often the anchors in scope are listed (objectGUID only) and the cloud's copy is
    /// reconciled with them: a deletion the service account cannot see reaches the cloud within
    /// about this long.
    pub reconcile_interval_seconds: u64,
    /// Keep a change-notification search open on the DC, so a change is read as soon as the DC
    /// reports it rather than at the next poll. The poll goes on either way: it is what finds a
    /// change the DC does not report at once. Off by default: Samba reports at once only changes
    /// made through the LDAP worker process the search is on, re-runs the search over the whole
    /// domain every 5 s otherwise, and with one worker a large directory's lag grew (`cargo
    /// xtask bench sync`, 20,000 users); meant for AD.
    pub change_notification: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_ms: 200,
            confirm_interval_seconds: 60,
            reconcile_interval_seconds: 30,
            change_notification: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// `ldaps://dc1.corp.example.com:636`
    pub url: String,
    /// More DCs of the domain, tried in this order after `url` when it does not answer (or
    /// instead of `url`).
    pub urls: Vec<String>,
    /// The AD domain (`corp.example.com`) whose DCs the agent finds in DNS at start, from the
    /// SRV records `_ldap._tcp.dc._msdcs.<domain>` every DC registers: tried after `url` and
    /// `urls`, by the records' priority and weight, each by LDAPS on port 636.
    pub discover_domain: Option<String>,
    /// The name server asked (`10.0.0.53`, or with a port, `10.0.0.53:53`); the first of
    /// `/etc/resolv.conf` when absent.
    pub name_server: Option<String>,
    /// CA certificate(s) that issued the DC's certificate; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Instead of `ca_file`: the SHA-256 fingerprint of the DC's certificate itself (64
    /// hexadecimal digits, colons allowed), trusted whatever its issuer and names, as for a
    /// Samba DC serving the certificate it generated for itself.
    pub tls_pin: Option<String>,
    /// The service account, as a UPN (`svc-writeback@corp.example.com`) or DN.
    pub bind_name: String,
    /// File holding the service account's password.
    pub bind_password_file: PathBuf,
    /// Where users are searched for, usually the domain root (`DC=corp,DC=example,DC=com`).
    pub base_dn: String,
    /// Only users in these OUs (or below) are managed.
    pub allowed_ous: Vec<String>,
    /// Manage `adminCount = 1` accounts too. Off unless an administrator decides otherwise.
    pub allow_protected_accounts: bool,
    pub connect_timeout_seconds: u64,
    pub operation_timeout_seconds: u64,
    /// How often the agent checks that it can use the directory, and tells the cloud when that
    /// changes.
    pub check_interval_seconds: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/writeback-agent"),
            directory: DirectoryConfig::default(),
            banned_passwords: Vec::new(),
            sealing_key_rotation_days: 30,
            cloud_urls: Vec::new(),
            reconnect_initial_delay_ms: 500,
            reconnect_max_delay_seconds: 30,
            sync: SyncConfig::default(),
            metrics_listen: None,
            log: LogConfig::default(),
        }
    }
}

impl DirectoryConfig {
    /// Every configured DC, `url` first, each once.
    pub fn dc_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for url in std::iter::once(&self.url).chain(&self.urls) {
            if !url.is_empty() && !urls.contains(url) {
                urls.push(url.clone());
            }
        }
        urls
    }
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            urls: Vec::new(),
            discover_domain: None,
            name_server: None,
            ca_file: None,
            tls_pin: None,
            bind_name: String::new(),
            bind_password_file: PathBuf::from("/etc/writeback-agent/bind-password"),
            base_dn: String::new(),
            allowed_ous: Vec::new(),
            allow_protected_accounts: false,
            connect_timeout_seconds: 10,
            operation_timeout_seconds: 10,
            check_interval_seconds: 15,
        }
    }
}

impl AgentConfig {
    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("agent.json")
    }

    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("journal.jsonl")
    }

    pub fn sealing_key_rotation(&self) -> Duration {
        Duration::from_secs(self.sealing_key_rotation_days.max(1) * 86_400)
    }

    /// What must be set before `run` can work; each problem names its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.directory.dc_urls().is_empty() && self.directory.discover_domain.is_none() {
            problems.push(
                "directory.url is not set (e.g. ldaps://dc1.corp.example.com), nor directory.urls, nor directory.discover_domain"
                    .to_owned(),
            );
        }
        for url in &self.cloud_urls {
            if !url.starts_with("https://") {
                problems.push(format!("cloud_urls: {url} must start with https://"));
            }
        }
        if self.directory.ca_file.is_some() && self.directory.tls_pin.is_some() {
            problems.push(
                "directory.ca_file and directory.tls_pin are both set: trust the DC by its CA or by its certificate's fingerprint, not both"
                    .to_owned(),
            );
        }
        if let Some(pin) = &self.directory.tls_pin
            && pin.parse::<writeback_tls::Fingerprint>().is_err()
        {
            problems.push(
                "directory.tls_pin is not a SHA-256 fingerprint (64 hexadecimal digits, colons allowed)"
                    .to_owned(),
            );
        }
        if self.directory.bind_name.is_empty() {
            problems.push("directory.bind_name is not set (the service account)".to_owned());
        }
        if self.directory.base_dn.is_empty() {
            problems
                .push("directory.base_dn is not set (e.g. DC=corp,DC=example,DC=com)".to_owned());
        }
        if self.directory.allowed_ous.is_empty() {
            problems.push(
                "directory.allowed_ous is empty: name the OUs whose users Writeback may manage"
                    .to_owned(),
            );
        }
        problems
    }
}
