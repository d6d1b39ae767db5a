//! Audit retention: the setting, and the pruning that applies it (at start, hourly, and whenever
//! the setting changes).

use std::time::Duration;

use writeback_proto::api::AuditSettings;
use writeback_proto::time::UnixMillis;
use writeback_store::{Store, StoreError};

use crate::stopped;

/// The name the audit settings are stored under.
pub const AUDIT_SETTINGS: &str = "audit";
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

pub async fn settings(store: &Store) -> Result<AuditSettings, StoreError> {
    match store.setting(AUDIT_SETTINGS).await? {
        None => Ok(AuditSettings {
            retention_days: None,
        }),
        Some(json) => serde_json::from_str(&json)
            .map_err(|error| StoreError::Corrupt(format!("audit settings: {error}"))),
    }
}

/// Removes entries older than the retention; nothing when entries are kept for ever.
pub async fn prune(store: &Store, now: UnixMillis) -> Result<u64, StoreError> {
    let Some(days) = settings(store).await?.retention_days else {
        return Ok(0);
    };
    let keep = Duration::from_secs(u64::from(days) * 86_400);
    let before = UnixMillis(now.0.saturating_sub(keep.as_millis() as u64));
    let removed = store.prune_audit(before).await?;
    if removed > 0 {
        tracing::info!(removed, retention_days = days, "pruned the audit log");
    }
    Ok(removed)
}

/// Prunes now and then every [`PRUNE_INTERVAL`], until `stopping` turns true.
pub async fn run(store: Store, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(error) = prune(&store, UnixMillis::now()).await {
                    tracing::error!(%error, "cannot prune the audit log");
                }
            }
            () = stopped(&mut stopping) => return,
        }
    }
}
