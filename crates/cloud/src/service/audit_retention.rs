//! Audit retention: the setting, and the pruning that applies it (at start, hourly, and whenever
//! the setting changes).

use std::time::Duration;

use writeback_proto::api::AuditSettings;
use writeback_proto::time::UnixMillis;
use writeback_store::{Store, StoreError};

use crate::service::audit::{Actor, AuditAction};
use crate::service::error::SettingsError;
use crate::service::state::{AppState, stopped};

/// The name the audit settings are stored under.
pub const AUDIT_SETTINGS: &str = "audit";
/// Ten years: longer retention is "keep for ever", which is `null`.
const MAX_RETENTION_DAYS: u32 = 3650;
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

/// Stores new retention settings for `actor`, audits the change and applies it at once.
pub async fn apply(
    state: &AppState,
    actor: &Actor,
    settings: AuditSettings,
) -> Result<AuditSettings, SettingsError> {
    if let Some(days) = settings.retention_days
        && !(1..=MAX_RETENTION_DAYS).contains(&days)
    {
        return Err(SettingsError::Invalid(format!(
            "`retention_days` must be between 1 and {MAX_RETENTION_DAYS}, or null to keep entries for ever."
        )));
    }
    let now = UnixMillis::now();
    let before = self::settings(&state.store).await?;
    let value = serde_json::to_string(&settings)
        .map_err(|error| StoreError::Corrupt(format!("audit settings: {error}")))?;
    state.store.put_setting(AUDIT_SETTINGS, &value, now).await?;
    let describe =
        |days: Option<u32>| days.map_or("for ever".to_owned(), |days| format!("{days} days"));
    AuditAction::UpdateSettings
        .by(actor, now)
        .target(AUDIT_SETTINGS)
        .detail(format!(
            "audit retention: {} -> {}",
            describe(before.retention_days),
            describe(settings.retention_days)
        ))
        .record(&state.store)
        .await?;
    prune(&state.store, now).await?;
    Ok(settings)
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
