//! `writeback-cloud`: the admin API, the relay agents dial into, and the store behind them. The
//! only crate that speaks HTTP.
//!
//! Entry points: [`start`] runs the server (used by `main.rs` and, in-process, by the testkit);
//! [`create_administrator`] and [`create_registration_token`] are the set-up commands.

pub mod administration;
pub mod api;
pub mod audit_retention;
pub mod auth;
pub mod browser_form;
pub mod config;
pub mod console;
pub mod hashing;
pub mod health;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod notify;
pub mod portal;
pub mod relay;
pub mod secrets;
pub mod server;
pub mod sign_in;
pub mod sms;
pub mod totp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use writeback_proto::ids::DirectoryName;
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditEvent, Store, StoreError};
use writeback_tls::{Fingerprint, TlsError};

pub use config::CloudConfig;
use relay::Relay;

/// The audit log's "from where" for set-up commands run on the cloud's own host.
const LOCAL_ORIGIN: &str = "local command";

#[derive(Debug, Error)]
pub enum CloudError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    InvalidInput(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What every request handler and agent connection shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub relay: Arc<Relay>,
    pub config: Arc<CloudConfig>,
    pub metrics: Arc<metrics::CloudMetrics>,
    /// Of the certificate this server presents, for the agent set-up command the console shows.
    pub fingerprint: Fingerprint,
    /// Mail for the portal and notifications; `None` when no SMTP server is configured.
    pub mailer: Option<notify::Mailer>,
    /// Text messages for the portal; `None` when no SMS provider is configured.
    pub sms: Option<sms::SmsSender>,
    /// The portal's resets in progress and signed-in users.
    pub portal: Arc<portal::PortalState>,
    /// Seals the secrets the store keeps.
    pub secrets: Arc<secrets::SecretKeys>,
    /// Where every password hash is computed, bounded.
    pub hashing: Arc<hashing::HashingPool>,
    /// The token a scraper sends for `/metrics` on the public listener; none serves no metrics
    /// there.
    pub metrics_token: Option<Arc<SecretString>>,
    /// Becomes `true` when the server stops. Agent WebSockets run outside the HTTP connection
    /// tasks once upgraded, so they watch this to close with the server.
    pub stopping: watch::Receiver<bool>,
}

/// A running server; [`RunningCloud::stop`] shuts it down.
#[derive(Debug)]
pub struct RunningCloud {
    pub address: SocketAddr,
    /// SHA-256 of the certificate the server presents, for agents and the CLI to pin.
    pub fingerprint: Fingerprint,
    pub state: AppState,
    stopping: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningCloud {
    pub async fn stop(mut self) {
        let _ = self.stopping.send(true);
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops (it stops only when told to, or on a fatal error).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Resolves once `stopping` turns true (or its sender is gone).
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CloudError {
    let context = context.into();
    move |source| CloudError::Io { context, source }
}

/// Opens the store in the data directory, which is made readable by its owner only.
pub async fn open_store(config: &CloudConfig) -> Result<Store, CloudError> {
    use std::os::unix::fs::PermissionsExt;
    let context = || format!("preparing the data directory {}", config.data_dir.display());
    std::fs::create_dir_all(&config.data_dir).map_err(io_error(context()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error(context()))?;
    Ok(Store::open(&config.database_path()).await?)
}

/// The key that seals stored secrets (created at first start), with every stored secret sealed
/// under it.
pub async fn open_secrets(
    config: &CloudConfig,
    store: &Store,
) -> Result<secrets::SecretKeys, CloudError> {
    let keys = secrets::SecretKeys::load_or_create(&config.secrets_key_path())?;
    let sealed = secrets::reseal(store, &keys).await?;
    if sealed > 0 {
        tracing::info!(sealed, "sealed stored secrets under the current key");
    }
    Ok(keys)
}

/// The certificate and key to serve: the configured ones, or a self-signed pair generated once in
/// the data directory (so its fingerprint, which agents pin, survives restarts).
pub fn certificate_paths(config: &CloudConfig) -> Result<(PathBuf, PathBuf), CloudError> {
    match (&config.tls_certificate, &config.tls_private_key) {
        (Some(certificate), Some(key)) => return Ok((certificate.clone(), key.clone())),
        (None, None) => {}
        _ => {
            return Err(CloudError::InvalidInput(
                "set both tls_certificate and tls_private_key, or neither".into(),
            ));
        }
    }
    let directory = config.data_dir.join("tls");
    let certificate = directory.join("cert.pem");
    let key = directory.join("key.pem");
    if !certificate.exists() || !key.exists() {
        std::fs::create_dir_all(&directory)
            .map_err(io_error(format!("creating {}", directory.display())))?;
        let pair = writeback_tls::self_signed_certificate(&config.self_signed_names)?;
        writeback_config::write_private_file(&key, pair.private_key_pem.as_bytes())
            .map_err(io_error(format!("writing {}", key.display())))?;
        std::fs::write(&certificate, pair.certificate_pem)
            .map_err(io_error(format!("writing {}", certificate.display())))?;
        tracing::info!(path = %certificate.display(), "generated a self-signed certificate");
    }
    Ok((certificate, key))
}

/// Opens the store, binds `config.listen` and serves until stopped.
pub async fn start(config: CloudConfig) -> Result<RunningCloud, CloudError> {
    let store = open_store(&config).await?;
    let secrets = Arc::new(open_secrets(&config, &store).await?);
    let (certificate, key) = certificate_paths(&config)?;
    let tls = Arc::new(writeback_tls::server_config(&certificate, &key)?);
    let fingerprint = Fingerprint::of_pem_file(&certificate)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(io_error(format!("binding {}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(io_error("reading the bound address"))?;
    let (stopping, stopping_signal) = watch::channel(false);
    let mailer = notify::Mailer::from_config(&config.smtp)?;
    let sms = sms::SmsSender::from_config(&config.sms)?;
    let portal = Arc::new(portal::PortalState::with_capacity(
        config.portal_session(),
        config.resources.portal_max_flows,
        config.resources.portal_max_sessions,
    ));
    let metrics_token = match &config.metrics_token_file {
        Some(path) => Some(Arc::new(
            writeback_config::read_secret_file(path)
                .map_err(|error| CloudError::InvalidInput(error.to_string()))?,
        )),
        None => None,
    };
    let metrics_listener = match &config.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(io_error(format!("binding the metrics listener {address}")))?,
        ),
        None => None,
    };
    let state = AppState {
        store,
        relay: Arc::new(Relay::default()),
        mailer,
        sms,
        portal,
        secrets,
        hashing: hashing::HashingPool::new(
            config.resources.hashing_threads,
            config.resources.hashing_queue,
        )
        .map_err(io_error("starting the password hashing threads"))?,
        metrics_token,
        config: Arc::new(config),
        metrics: Arc::default(),
        fingerprint,
        stopping: stopping_signal.clone(),
    };
    let app = api::router(state.clone());
    if let Some(listener) = metrics_listener {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "metrics listening");
        }
        tokio::spawn(metrics::serve_own_listener(
            listener,
            state.clone(),
            stopping_signal.clone(),
        ));
    }
    tokio::spawn(audit_retention::run(
        state.store.clone(),
        stopping_signal.clone(),
    ));
    let mut server_stopping = stopping_signal;
    let resources = state.config.resources.clone();
    let task = tokio::spawn(server::run(listener, tls, app, resources, async move {
        stopped(&mut server_stopping).await;
    }));
    tracing::info!(%address, %fingerprint, "writeback-cloud listening");
    Ok(RunningCloud {
        address,
        fingerprint,
        state,
        stopping,
        task,
    })
}

/// Audits a set-up command run on the cloud's own host, which has no signed-in actor or address.
async fn audit_local_command(
    store: &Store,
    command: &str,
    action: &str,
    target: &str,
    now: UnixMillis,
) -> Result<(), CloudError> {
    store
        .append_audit(&AuditEvent {
            at: now,
            actor: command.into(),
            action: action.into(),
            directory: None,
            target: Some(target.into()),
            request_id: None,
            result_code: "success".into(),
            detail: None,
            origin: Some(LOCAL_ORIGIN.into()),
        })
        .await?;
    Ok(())
}

pub async fn create_administrator(
    store: &Store,
    email: &str,
    password: &SecretString,
) -> Result<(), CloudError> {
    let email = email.trim();
    if !email.contains('@') || email.len() > 254 {
        return Err(CloudError::InvalidInput(format!(
            "{email:?} is not an email address"
        )));
    }
    if secrecy::ExposeSecret::expose_secret(password)
        .chars()
        .count()
        < 12
    {
        return Err(CloudError::InvalidInput(
            "an administrator password must be at least 12 characters long".into(),
        ));
    }
    let password = password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|error| CloudError::Internal(error.to_string()))??;
    let now = UnixMillis::now();
    store.create_administrator(email, &hash, now).await?;
    audit_local_command(
        store,
        "writeback-cloud admin create",
        "create_administrator",
        email,
        now,
    )
    .await
}

/// Removes an administrator's second factor, as the set-up command on the cloud's host (the one
/// way back in after losing an authenticator).
pub async fn reset_second_factor(store: &Store, email: &str) -> Result<(), CloudError> {
    if !store.remove_totp(email.trim()).await? {
        return Err(CloudError::InvalidInput(format!(
            "no administrator has the email {email}"
        )));
    }
    audit_local_command(
        store,
        "writeback-cloud admin reset-second-factor",
        "reset_second_factor",
        email.trim(),
        UnixMillis::now(),
    )
    .await
}

/// Issues a single-use registration token for `directory` (created if new), valid for `lifetime`,
/// as the set-up command on the cloud's host.
pub async fn create_registration_token(
    store: &Store,
    directory: &DirectoryName,
    lifetime: Duration,
) -> Result<(SecretString, UnixMillis), CloudError> {
    issue_registration_token(
        store,
        directory,
        lifetime,
        "writeback-cloud token create",
        Some(LOCAL_ORIGIN.into()),
    )
    .await
}

/// Issues a registration token and audits who asked for it and from where.
pub async fn issue_registration_token(
    store: &Store,
    directory: &DirectoryName,
    lifetime: Duration,
    actor: &str,
    origin: Option<String>,
) -> Result<(SecretString, UnixMillis), CloudError> {
    let now = UnixMillis::now();
    let record = store.ensure_directory(directory, now).await?;
    let token = auth::new_token(auth::REGISTRATION_TOKEN_PREFIX)?;
    let expires_at = now.saturating_add(lifetime);
    store
        .create_registration_token(
            &auth::token_hash(secrecy::ExposeSecret::expose_secret(&token)),
            record.id,
            now,
            expires_at,
        )
        .await?;
    store
        .append_audit(&AuditEvent {
            at: now,
            actor: actor.into(),
            action: "create_registration_token".into(),
            directory: Some(directory.to_string()),
            target: None,
            request_id: None,
            result_code: "success".into(),
            detail: Some(format!("expires in {} minutes", lifetime.as_secs() / 60)),
            origin,
        })
        .await?;
    Ok((token, expires_at))
}
