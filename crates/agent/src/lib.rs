//! `writeback-agent`: the on-premises half. It dials out to the cloud (never the other way),
//! applies the fixed set of operations of the protocol to the directory, guarded, and syncs the
//! allowed OUs' users and groups up to the cloud.
//!
//! Entry points: [`register`] (once, with a token) and [`run`] (the service).

pub mod backoff;
pub mod backup;
pub mod certificate;
pub mod config;
pub mod connection;
pub mod directory_status;
pub mod doctor;
pub mod executor;
pub mod grant;
pub mod journal;
pub mod metrics;
pub mod state;
pub mod sync;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use thiserror::Error;
use writeback_directory::{ActiveDirectory, DirectoryError, DirectorySettings};
use writeback_proto::identity::IdentityKeyPair;
use writeback_proto::sealing::SealingKeyPair;
use writeback_proto::time::UnixMillis;
use writeback_tls::Trust;

pub use config::AgentConfig;
use executor::{Executor, Guards};
use journal::Journal;
use state::{AgentState, CloudTrust};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the journal remembers an outcome: far longer than any deadline or reconnect.
const JOURNAL_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("agent state: {0}")]
    State(String),
    #[error("{0}")]
    Transport(String),
    #[error("the cloud refused: {0}")]
    Rejected(String),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Settings(#[from] writeback_config::ConfigError),
}

/// Registers this agent with the cloud and saves its new identity in the data directory.
pub async fn register(
    config: &AgentConfig,
    cloud_url: &str,
    cloud_trust: CloudTrust,
    token: SecretString,
    name: String,
    replace_existing: bool,
) -> Result<AgentState, AgentError> {
    let path = config.state_path();
    if path.exists() && !replace_existing {
        return Err(AgentError::State(format!(
            "{} already exists: this agent is registered. Use --force to register it again with a new identity",
            path.display()
        )));
    }
    transport::cloud_endpoint(cloud_url)?;
    let identity = Arc::new(
        IdentityKeyPair::generate().map_err(|error| AgentError::State(error.to_string()))?,
    );
    let sealing = SealingKeyPair::generate();
    let trust = cloud_trust.to_trust()?;
    let (agent_id, directory) = connection::register(
        cloud_url,
        &trust,
        token,
        name,
        identity.clone(),
        sealing.public_key().clone(),
    )
    .await?;
    let identity = IdentityKeyPair::from_secret_bytes(&identity.secret_bytes());
    let state = AgentState::new(
        agent_id,
        directory,
        cloud_url.to_owned(),
        cloud_trust,
        identity,
        sealing,
        UnixMillis::now(),
    );
    state.save(&path)?;
    tracing::info!(%agent_id, directory = %state.directory, event_id = 31018, "registered with the cloud; keys created");
    Ok(state)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(AgentError::Config(problems.join("; ")));
    }
    let state = Arc::new(AgentState::load(&config.state_path())?);
    let directory = directory_from_config(&config)?;
    // Find a broken directory configuration now, not at the first reset; the agent still connects
    // to the cloud, so the cloud can report the problem.
    if let Err(error) = directory.check_connection().await {
        tracing::error!(%error, event_id = 33009, "cannot use the directory; operations will fail until this is fixed");
    }
    let journal = Journal::open(&config.journal_path(), JOURNAL_RETENTION, UnixMillis::now())?;
    let guards = Guards {
        allowed_ous: config.directory.allowed_ous.clone(),
        allow_protected_accounts: config.directory.allow_protected_accounts,
        banned_passwords: config.banned_passwords.clone(),
    };
    let check_interval = Duration::from_secs(config.directory.check_interval_seconds.max(1));
    let executor = Arc::new(
        Executor::new(
            directory,
            journal,
            state.keys.clone(),
            guards,
            Arc::new(UnixMillis::now),
        )
        .with_policy_lifetime(check_interval),
    );
    let policy = connection::ReconnectPolicy {
        initial_delay: Duration::from_millis(config.reconnect_initial_delay_ms.max(1)),
        max_delay: Duration::from_secs(config.reconnect_max_delay_seconds.max(1)),
        sealing_key_rotation: config.sealing_key_rotation(),
        other_cloud_urls: config.cloud_urls.clone(),
    };
    let sync = config.sync.enabled.then(|| sync::SyncSettings {
        bases: config.directory.allowed_ous.clone(),
        poll_interval: Duration::from_millis(config.sync.poll_interval_ms.max(50)),
        confirm_interval: Duration::from_secs(config.sync.confirm_interval_seconds.max(1)),
        reconcile_interval: Duration::from_secs(config.sync.reconcile_interval_seconds.max(1)),
        change_notification: config.sync.change_notification,
    });
    let (status_sender, directory_status) = directory_status::channel();
    tokio::spawn(directory_status::watch(
        executor.clone(),
        config.directory.dc_urls(),
        check_interval,
        status_sender,
    ));
    let metrics = Arc::new(metrics::AgentMetrics::default());
    if let Some(address) = &config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| AgentError::Config(format!("metrics_listen {address}: {error}")))?;
        tracing::info!(%address, "serving metrics at /metrics");
        tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            directory_status.clone(),
        ));
    }
    let state_path = config.state_path();
    tracing::info!(agent_id = %state.agent_id, directory = %state.directory, cloud = %state.cloud_url, version = VERSION, event_id = 31015, "writeback-agent starting");
    connection::run(
        state,
        move |state| state.save(&state_path),
        executor,
        sync,
        connection::Reporting {
            directory_status,
            metrics,
        },
        policy,
        shutdown,
    )
    .await;
    tracing::info!(event_id = 31016, "writeback-agent stopped");
    Ok(())
}

/// The directory as the configured service account sees it.
pub fn directory_from_config(config: &AgentConfig) -> Result<ActiveDirectory, AgentError> {
    let password = writeback_config::read_secret_file(&config.directory.bind_password_file)?;
    directory_as(config, config.directory.bind_name.clone(), password)
}

/// How the DC's certificate is trusted: by its pinned fingerprint, by the CA in `ca_file`, or by
/// the system roots.
fn directory_trust(directory: &config::DirectoryConfig) -> Result<Trust, AgentError> {
    Ok(match (&directory.tls_pin, &directory.ca_file) {
        (Some(pin), _) => Trust::Pinned(pin.parse().map_err(|_| {
            AgentError::Config(
                "directory.tls_pin is not a SHA-256 fingerprint (64 hexadecimal digits)".into(),
            )
        })?),
        (None, Some(ca_file)) => Trust::CaFile(ca_file.clone()),
        (None, None) => Trust::SystemRoots,
    })
}

/// One configured DC alone, as the service account: what the doctor checks, DC by DC.
pub fn one_dc_from_config(config: &AgentConfig, url: &str) -> Result<ActiveDirectory, AgentError> {
    let password = writeback_config::read_secret_file(&config.directory.bind_password_file)?;
    directory_at(
        config,
        vec![url.to_owned()],
        config.directory.bind_name.clone(),
        password,
    )
}

/// With `directory.discover_domain`, asks DNS for the domain's DCs and adds them after the
/// configured ones, so that every command (run, doctor, grant) knows them all.
pub async fn discover_domain_controllers(config: &mut AgentConfig) -> Result<(), AgentError> {
    let Some(domain) = config.directory.discover_domain.clone() else {
        return Ok(());
    };
    let server = match &config.directory.name_server {
        Some(server) => server
            .parse::<std::net::SocketAddr>()
            .or_else(|_| {
                server
                    .parse::<std::net::IpAddr>()
                    .map(|ip| std::net::SocketAddr::new(ip, 53))
            })
            .map_err(|_| {
                AgentError::Config(format!(
                    "directory.name_server: {server} is not an address (10.0.0.53 or 10.0.0.53:53)"
                ))
            })?,
        None => writeback_directory::discovery::system_name_server().ok_or_else(|| {
            AgentError::Config(
                "directory.discover_domain is set, but /etc/resolv.conf names no name server: set directory.name_server".into(),
            )
        })?,
    };
    let timeout = Duration::from_secs(config.directory.connect_timeout_seconds.max(1));
    let found =
        writeback_directory::discovery::discover_domain_controllers(&domain, server, timeout)
            .await?;
    tracing::info!(%domain, name_server = %server, dcs = ?found, "domain controllers found in DNS");
    for url in found {
        if !config.directory.dc_urls().contains(&url) {
            config.directory.urls.push(url);
        }
    }
    Ok(())
}

/// The configured directory, signed in as someone else (a domain administrator, for `grant`).
pub fn directory_as(
    config: &AgentConfig,
    bind_name: String,
    bind_password: SecretString,
) -> Result<ActiveDirectory, AgentError> {
    directory_at(config, config.directory.dc_urls(), bind_name, bind_password)
}

fn directory_at(
    config: &AgentConfig,
    urls: Vec<String>,
    bind_name: String,
    bind_password: SecretString,
) -> Result<ActiveDirectory, AgentError> {
    Ok(ActiveDirectory::new(DirectorySettings {
        urls,
        trust: directory_trust(&config.directory)?,
        bind_name,
        bind_password,
        search_base: config.directory.base_dn.clone(),
        connect_timeout: Duration::from_secs(config.directory.connect_timeout_seconds.max(1)),
        operation_timeout: Duration::from_secs(config.directory.operation_timeout_seconds.max(1)),
    })?)
}

/// The default agent name: this host's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "writeback-agent".into())
}

/// Whether this agent has registered (its state file exists).
pub fn is_registered(config: &AgentConfig) -> bool {
    config.state_path().exists()
}

#[cfg(test)]
mod tests {
    /// Every `event_id = N` the agent logs is in the catalogue `writeback-agent events` prints.
    #[test]
    fn every_logged_event_id_is_catalogued() {
        let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = 0;
        for entry in std::fs::read_dir(sources).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for (_, rest) in text
                .match_indices("event_id = ")
                .map(|(at, _)| text.split_at(at + 11))
            {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if digits.is_empty() {
                    continue;
                }
                let id: u32 = digits.parse().unwrap();
                assert!(
                    writeback_proto::events::definition(id).is_some(),
                    "event {id} is logged but not catalogued"
                );
                found += 1;
            }
        }
        assert!(found >= 20, "only {found} event ids found");
    }
}
