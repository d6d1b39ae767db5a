//! What every request handler, use case and agent connection shares.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::watch;
use writeback_store::Store;
use writeback_tls::Fingerprint;

use crate::config::CloudConfig;
use crate::service::cluster::Cluster;
use crate::service::hashing::HashingPool;
use crate::service::metrics::CloudMetrics;
use crate::service::notify::{Mailer, TextMessages};
use crate::service::relay::Relay;
use crate::service::screening::PasswordScreen;
use crate::service::secrets::SecretKeys;
use crate::service::self_service::state::PortalState;

/// What every request handler and agent connection shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub relay: Arc<Relay>,
    /// The other nodes, when this node runs in a cluster (on PostgreSQL).
    pub cluster: Option<Arc<Cluster>>,
    pub config: Arc<CloudConfig>,
    pub metrics: Arc<CloudMetrics>,
    /// Of the certificate this server presents, for the agent set-up command the console shows.
    pub fingerprint: Fingerprint,
    /// Mail for the portal and notifications; `None` when no SMTP server is configured.
    pub mailer: Option<Mailer>,
    /// Text messages for the portal; `None` when no SMS provider is configured.
    pub sms: Option<Arc<dyn TextMessages>>,
    /// The portal's resets in progress and signed-in users.
    pub portal: Arc<PortalState>,
    /// Seals the secrets the store keeps.
    pub secrets: Arc<SecretKeys>,
    /// Screens every new password against the lists of common and breached passwords.
    pub screen: Arc<PasswordScreen>,
    /// Where every password hash is computed, bounded.
    pub hashing: Arc<HashingPool>,
    /// The token a scraper sends for `/metrics` on the public listener; none serves no metrics
    /// there.
    pub metrics_token: Option<Arc<SecretString>>,
    /// Becomes `true` when the server stops. Agent WebSockets run outside the HTTP connection
    /// tasks once upgraded, so they watch this to close with the server.
    pub stopping: watch::Receiver<bool>,
}

/// Resolves once `stopping` turns true (or its sender is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}
