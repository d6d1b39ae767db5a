//! The self-service policy: stored as one setting, changed only whole and valid, audited.

use writeback_proto::api::SelfServiceSettings;
use writeback_proto::time::UnixMillis;
use writeback_store::{Store, StoreError};

use crate::service::audit::{Actor, AuditAction};
use crate::service::error::SettingsError;
use crate::service::state::AppState;

pub const SELF_SERVICE_SETTINGS: &str = "self_service";

/// The stored settings, or the defaults (self-service off) before anyone saved any.
pub async fn stored_settings(store: &Store) -> Result<SelfServiceSettings, StoreError> {
    match store.setting(SELF_SERVICE_SETTINGS).await? {
        None => Ok(SelfServiceSettings::default()),
        Some(json) => serde_json::from_str(&json)
            .map_err(|error| StoreError::Corrupt(format!("self-service settings: {error}"))),
    }
}

/// Stores `new` for `actor` if it is valid, and audits which fields changed.
pub async fn apply(
    state: &AppState,
    actor: &Actor,
    new: SelfServiceSettings,
) -> Result<SelfServiceSettings, SettingsError> {
    let problems = new.problems();
    if !problems.is_empty() {
        return Err(SettingsError::Invalid(problems.join(" ")));
    }
    let old = stored_settings(&state.store).await?;
    let now = UnixMillis::now();
    let value = serde_json::to_string(&new)
        .map_err(|error| StoreError::Corrupt(format!("self-service settings: {error}")))?;
    state
        .store
        .put_setting(SELF_SERVICE_SETTINGS, &value, now)
        .await?;
    AuditAction::UpdateSettings
        .by(actor, now)
        .target(SELF_SERVICE_SETTINGS)
        .detail(changed_fields(&old, &new))
        .record(&state.store)
        .await?;
    tracing::info!(actor = %actor.name, "self-service settings changed");
    Ok(new)
}

/// `self-service: scope, methods changed` (names only: the values may be long).
fn changed_fields(old: &SelfServiceSettings, new: &SelfServiceSettings) -> String {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return "self-service settings saved".into();
    };
    let mut changed: Vec<&str> = new
        .iter()
        .filter(|(name, value)| old.get(*name) != Some(value))
        .map(|(name, _)| name.as_str())
        .collect();
    changed.sort_unstable();
    if changed.is_empty() {
        "self-service settings saved unchanged".into()
    } else {
        format!("self-service: {} changed", changed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use writeback_proto::api::SelfServiceScope;

    use super::*;

    #[test]
    fn the_audit_detail_names_what_changed() {
        let old = SelfServiceSettings::default();
        let new = SelfServiceSettings {
            scope: SelfServiceScope::Everyone,
            minimum_strength: 3,
            ..SelfServiceSettings::default()
        };
        assert_eq!(
            changed_fields(&old, &new),
            "self-service: minimum_strength, scope changed"
        );
        assert_eq!(
            changed_fields(&old, &old),
            "self-service settings saved unchanged"
        );
    }
}
