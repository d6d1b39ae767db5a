//! Password expiry reminders: whose passwords expire soon, and which reminders were taken. A
//! reminder is taken (a row written) before its message goes, in one statement that only one
//! caller can win, so that two nodes of a cluster never both send it.

use sqlx::Row;
use writeback_proto::api::DirectoryUser;
use writeback_proto::ids::DirectoryName;
use writeback_proto::sync::ObjectAnchor;
use writeback_proto::time::UnixMillis;

use crate::sync::{USER_COLUMNS, user_from_row};
use crate::{Store, StoreError, millis};

/// A user whose password expires within the window asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringPassword {
    pub directory: DirectoryName,
    pub user: DirectoryUser,
    pub expires_at: UnixMillis,
}

impl Store {
    /// Enabled users, not asked to change at next sign-in and whose passwords may expire, whose
    /// password expires from `from` up to `until`, soonest first, at most `limit`.
    pub async fn passwords_expiring(
        &self,
        from: UnixMillis,
        until: UnixMillis,
        limit: u32,
    ) -> Result<Vec<ExpiringPassword>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT directories.name AS directory_name, {USER_COLUMNS} \
             FROM synced_users JOIN directories ON directories.id = synced_users.directory_id \
             WHERE password_expiry = 'at' AND password_expires_at >= $1 \
               AND password_expires_at <= $2 AND enabled = 1 AND must_change_password = 0 \
               AND password_never_expires = 0 \
             ORDER BY password_expires_at, directories.name, sam_account_name LIMIT $3"
        ))
        .bind(millis(from))
        .bind(millis(until))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.get("directory_name");
                let directory = name
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("directory name {name:?}")))?;
                let user = user_from_row(row)?;
                let expires_at = match user.user.password_expiry {
                    writeback_proto::sync::PasswordExpiry::At(at) => at,
                    _ => return Err(StoreError::Corrupt("an expiry without its time".into())),
                };
                Ok(ExpiringPassword {
                    directory,
                    user,
                    expires_at,
                })
            })
            .collect()
    }

    /// Takes the reminder `threshold_days` before the expiry at `expires_at` of the user
    /// `anchor`: `true` when nobody had, and the caller sends it.
    pub async fn take_expiry_reminder(
        &self,
        directory: &DirectoryName,
        anchor: &ObjectAnchor,
        expires_at: UnixMillis,
        threshold_days: u32,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        let mut transaction = self.begin_write().await?;
        let taken = sqlx::query(
            "INSERT INTO expiry_reminders (directory_id, user_anchor, expires_at, threshold_days, sent_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(directory_id)
        .bind(anchor.to_string())
        .bind(millis(expires_at))
        .bind(i64::from(threshold_days))
        .bind(millis(now))
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(taken == 1)
    }

    /// Gives back a reminder whose message could not be sent, so that the next pass tries again.
    pub async fn give_back_expiry_reminder(
        &self,
        directory: &DirectoryName,
        anchor: &ObjectAnchor,
        expires_at: UnixMillis,
        threshold_days: u32,
    ) -> Result<(), StoreError> {
        let directory_id = self.directory_id(directory).await?;
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM expiry_reminders WHERE directory_id = $1 AND user_anchor = $2 \
             AND expires_at = $3 AND threshold_days = $4",
        )
        .bind(directory_id)
        .bind(anchor.to_string())
        .bind(millis(expires_at))
        .bind(i64::from(threshold_days))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The thresholds (in days) whose reminders were taken for the user's expiry at
    /// `expires_at`, largest first.
    pub async fn expiry_reminders_taken(
        &self,
        directory: &DirectoryName,
        anchor: &ObjectAnchor,
        expires_at: UnixMillis,
    ) -> Result<Vec<u32>, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        let thresholds: Vec<i64> = sqlx::query_scalar(
            "SELECT threshold_days FROM expiry_reminders WHERE directory_id = $1 \
             AND user_anchor = $2 AND expires_at = $3 ORDER BY threshold_days DESC",
        )
        .bind(directory_id)
        .bind(anchor.to_string())
        .bind(millis(expires_at))
        .fetch_all(&self.pool)
        .await?;
        Ok(thresholds
            .into_iter()
            .filter_map(|days| u32::try_from(days).ok())
            .collect())
    }

    /// Forgets the reminders of expiries before `before`: they can never be sent again.
    pub async fn forget_expiry_reminders(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let forgotten = sqlx::query("DELETE FROM expiry_reminders WHERE expires_at < $1")
            .bind(millis(before))
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        transaction.commit().await?;
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use writeback_proto::sync::{PasswordExpiry, SyncChange, SyncPhase, SyncedUser};

    use super::*;
    use crate::sync::tests::{batch, with_directory};

    const NOW: UnixMillis = UnixMillis(1_000_000_000);
    const DAY: u64 = 86_400_000;

    fn user(index: u8, name: &str, expiry: PasswordExpiry) -> SyncChange {
        SyncChange::User(SyncedUser {
            anchor: ObjectAnchor::from_bytes([index; 16]),
            sid: None,
            sam_account_name: name.into(),
            user_principal_name: None,
            mail: Some(format!("{name}@example.org")),
            display_name: None,
            given_name: None,
            surname: None,
            distinguished_name: format!("CN={name},OU=Staff,DC=corp"),
            enabled: name != "disabled",
            locked_out: false,
            password_last_set: Some(NOW),
            must_change_password: false,
            password_never_expires: false,
            password_expiry: expiry,
            protected: false,
        })
    }

    on_both_databases! {
        async fn expiring_passwords_are_listed_soonest_first_and_a_reminder_is_taken_once(store: Store) {
            let (store, corp) = with_directory(store).await;
            let at = |days: u64| UnixMillis(NOW.0 + days * DAY);
            let changes = vec![
                user(1, "later", PasswordExpiry::At(at(10))),
                user(2, "sooner", PasswordExpiry::At(at(3))),
                user(3, "never", PasswordExpiry::Never),
                user(4, "unknown", PasswordExpiry::Unknown),
                user(5, "far", PasswordExpiry::At(at(40))),
                user(6, "disabled", PasswordExpiry::At(at(2))),
                user(7, "expired", PasswordExpiry::At(UnixMillis(NOW.0 - DAY))),
            ];
            let batch = batch(1, SyncPhase::polled_from(1), changes, true);
            store.apply_sync_batch(&corp, &batch, NOW).await.unwrap();
            let expiring = store.passwords_expiring(NOW, at(14), 100).await.unwrap();
            let names: Vec<&str> = expiring
                .iter()
                .map(|expiring| expiring.user.user.sam_account_name.as_str())
                .collect();
            assert_eq!(names, ["sooner", "later"]);
            assert_eq!(expiring[0].expires_at, at(3));
            assert_eq!(expiring[0].directory, corp);

            let sooner = expiring[0].user.user.anchor;
            let take = |threshold| store.take_expiry_reminder(&corp, &sooner, at(3), threshold, NOW);
            let (first, second) = tokio::join!(take(7), take(7));
            assert!(first.unwrap() ^ second.unwrap(), "exactly one caller takes it");
            assert!(!take(7).await.unwrap());
            assert!(take(14).await.unwrap());
            assert_eq!(
                store.expiry_reminders_taken(&corp, &sooner, at(3)).await.unwrap(),
                [14, 7]
            );
            store.give_back_expiry_reminder(&corp, &sooner, at(3), 7).await.unwrap();
            assert!(take(7).await.unwrap());
            // A new password is a new expiry: its thresholds start again.
            assert!(store.take_expiry_reminder(&corp, &sooner, at(50), 7, NOW).await.unwrap());
            assert_eq!(store.forget_expiry_reminders(at(4)).await.unwrap(), 2);
            assert!(store.expiry_reminders_taken(&corp, &sooner, at(3)).await.unwrap().is_empty());
        }
    }
}
