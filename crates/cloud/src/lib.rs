//! `writeback-cloud`: the admin API, the console, the self-service portal, the socket agents dial
//! into, and the use cases behind them. The only crate that speaks HTTP.
//!
//! Layers, each importing only from those below it: [`service`] (the use cases, no HTTP),
//! [`outbound`] (clients of outside services over HTTP), [`web`] (what the HTTP surfaces share), the surfaces [`api`], [`console`], [`portal`] and
//! [`agent_socket`], and [`router`], which assembles them. This file wires them together.
//!
//! Entry points: [`start`] runs the server (used by `main.rs` and, in-process, by the testkit);
//! [`create_administrator`] and [`create_registration_token`] are the set-up commands.

pub mod agent_socket;
pub mod api;
pub mod config;
pub mod console;
#[cfg(test)]
mod layering;
pub mod outbound;
pub mod portal;
pub mod router;
pub mod service;
pub mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use writeback_store::Store;
use writeback_tls::Fingerprint;

pub use config::CloudConfig;
pub use service::administration::{create_administrator, reset_second_factor};
pub use service::agents::create_registration_token;
pub use service::error::CloudError;
use service::error::io_error;
use service::relay::Relay;
use service::screening::PasswordScreen;
pub use service::state::AppState;
use service::state::stopped;
use service::{audit_retention, expiry, hashing, notify, screening, secrets, self_service};

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

/// Opens the store: the PostgreSQL database when one is configured, otherwise the SQLite file in
/// the data directory, which is made readable by its owner only.
pub async fn open_store(config: &CloudConfig) -> Result<Store, CloudError> {
    use std::os::unix::fs::PermissionsExt;
    let context = || format!("preparing the data directory {}", config.data_dir.display());
    std::fs::create_dir_all(&config.data_dir).map_err(io_error(context()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error(context()))?;
    match postgres_url(config)? {
        Some(url) => Ok(Store::open_postgres(&url).await?),
        None => Ok(Store::open(&config.database_path()).await?),
    }
}

fn postgres_url(config: &CloudConfig) -> Result<Option<String>, CloudError> {
    config.database_url().map_err(io_error(format!(
        "reading database_url_file {}",
        config
            .database_url_file
            .as_deref()
            .unwrap_or(Path::new(""))
            .display()
    )))
}

/// Backup and restore here copy the SQLite file; PostgreSQL's own tools do it for a cluster.
fn refuse_on_postgres(config: &CloudConfig, command: &str) -> Result<(), CloudError> {
    if postgres_url(config)?.is_some() {
        return Err(CloudError::InvalidInput(format!(
            "this cloud keeps its data in PostgreSQL: {command} it with pg_dump and pg_restore \
             (see the README, \"Running a cluster\"); `{command}` copies the SQLite file of one node"
        )));
    }
    Ok(())
}

/// `writeback-cloud backup FILE`: a consistent copy of the database, taken while the cloud runs.
/// What it does not hold is listed in the answer: the secrets key and, when the cloud made its
/// own certificate, the TLS files, which a restore needs beside it.
pub async fn back_up(config: &CloudConfig, file: &Path) -> Result<Vec<PathBuf>, CloudError> {
    refuse_on_postgres(config, "backup")?;
    Store::back_up(&config.database_path(), file).await?;
    Ok(kept_apart(config))
}

/// `writeback-cloud restore FILE`: a backup made by [`back_up`] becomes the database of a data
/// directory that has none; the files [`back_up`] named must be put back beside it.
pub async fn restore(config: &CloudConfig, file: &Path) -> Result<Vec<PathBuf>, CloudError> {
    use std::os::unix::fs::PermissionsExt;
    refuse_on_postgres(config, "restore")?;
    let context = || format!("preparing the data directory {}", config.data_dir.display());
    std::fs::create_dir_all(&config.data_dir).map_err(io_error(context()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error(context()))?;
    Store::restore(file, &config.database_path()).await?;
    Ok(kept_apart(config)
        .into_iter()
        .filter(|path| !path.exists())
        .collect())
}

/// Files the cloud needs that a database backup does not hold.
fn kept_apart(config: &CloudConfig) -> Vec<PathBuf> {
    let mut files = vec![config.secrets_key_path()];
    if config.tls_certificate.is_none() {
        let directory = config.data_dir.join("tls");
        files.extend([directory.join("cert.pem"), directory.join("key.pem")]);
    }
    files
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
    let sms = outbound::sms::SmsSender::from_config(&config.sms)?
        .map(|sender| Arc::new(sender) as Arc<dyn notify::TextMessages>);
    // On a cluster's shared database, any node serves any page of a reset or a session.
    let portal = Arc::new(if store.has_bus() {
        self_service::state::PortalState::shared(
            config.portal_session(),
            config.resources.portal_max_flows,
            config.resources.portal_max_sessions,
            store.clone(),
            secrets.clone(),
        )
    } else {
        self_service::state::PortalState::with_capacity(
            config.portal_session(),
            config.resources.portal_max_flows,
            config.resources.portal_max_sessions,
        )
    });
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
    let relay = Arc::new(Relay::default());
    let cluster = if store.has_bus() {
        let (cluster, tasks) = service::cluster::Cluster::join(
            store.clone(),
            relay.clone(),
            config.node(),
            secrets.clone(),
        )
        .await?;
        let mut cluster_stopping = stopping_signal.clone();
        tokio::spawn(async move {
            stopped(&mut cluster_stopping).await;
            for task in tasks {
                task.abort();
            }
        });
        Some(cluster)
    } else {
        None
    };
    let screen = Arc::new(PasswordScreen::open(config.breached_passwords_path())?);
    tokio::spawn(screening::refresh_periodically(
        screen.clone(),
        stopping_signal.clone(),
    ));
    let state = AppState {
        store,
        relay,
        cluster,
        mailer,
        sms,
        portal,
        secrets,
        screen,
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
    let app = router::router(state.clone());
    if let Some(listener) = metrics_listener {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "metrics listening");
        }
        tokio::spawn(web::metrics_endpoint::serve_own_listener(
            listener,
            state.clone(),
            stopping_signal.clone(),
        ));
    }
    tokio::spawn(expiry::run(state.clone(), stopping_signal.clone()));
    tokio::spawn(audit_retention::run(
        state.store.clone(),
        stopping_signal.clone(),
    ));
    let mut server_stopping = stopping_signal;
    let resources = state.config.resources.clone();
    let task = tokio::spawn(web::server::run(
        listener,
        tls,
        app,
        resources,
        async move {
            stopped(&mut server_stopping).await;
        },
    ));
    tracing::info!(%address, %fingerprint, "writeback-cloud listening");
    Ok(RunningCloud {
        address,
        fingerprint,
        state,
        stopping,
        task,
    })
}
