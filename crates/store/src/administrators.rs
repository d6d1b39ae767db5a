//! Administrators, their second factor and their sessions.

use sqlx::Row;
use sqlx::any::AnyRow;
use writeback_proto::time::UnixMillis;

use crate::{Store, StoreError, flag, from_millis, millis};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Administrator {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    /// Whether a TOTP second factor is enrolled; the secret itself is read only to check a code.
    pub totp_enrolled: bool,
    /// A disabled administrator is kept for the record and refused everywhere.
    pub enabled: bool,
}

/// An administrator as the list of administrators shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdministratorSummary {
    pub email: String,
    pub enabled: bool,
    pub second_factor: bool,
    pub created_at: UnixMillis,
    /// Sessions open now.
    pub sessions: u64,
    /// When any of their sessions was last used.
    pub last_active_at: Option<UnixMillis>,
}

/// A session unused for this long is touched again at most once a minute: enough for an idle
/// timeout counted in minutes, without a write on every request.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// An enrolled TOTP secret and the last time step a code was accepted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpState {
    pub secret: Vec<u8>,
    pub last_step: Option<u64>,
}

/// A sign-in waiting for its second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInChallenge {
    pub administrator: Administrator,
    /// Set when the administrator is enrolling: the secret they were shown.
    pub proposed_totp_secret: Option<Vec<u8>>,
    pub failed_attempts: u32,
}

const ADMINISTRATOR_COLUMNS: &str = "a.id, a.email, a.password_hash, \
     CASE WHEN a.totp_secret IS NULL THEN 0 ELSE 1 END AS totp_enrolled, \
     CASE WHEN a.disabled_at IS NULL THEN 1 ELSE 0 END AS enabled";

fn administrator(row: &AnyRow) -> Administrator {
    Administrator {
        id: row.get("id"),
        email: row.get("email"),
        password_hash: row.get("password_hash"),
        totp_enrolled: flag(row, "totp_enrolled"),
        enabled: flag(row, "enabled"),
    }
}

async fn administrator_id(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    email: &str,
) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT id FROM administrators WHERE email = $1")
        .bind(email.trim())
        .fetch_optional(&mut **transaction)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("an administrator with the email {email}")))
}

/// Refuses when `id` is the only enabled administrator: nobody could administer Writeback after.
async fn refuse_last_enabled(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: i64,
) -> Result<(), StoreError> {
    let others: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM administrators WHERE disabled_at IS NULL AND id != $1",
    )
    .bind(id)
    .fetch_one(&mut **transaction)
    .await?;
    let this_disabled_at: Option<i64> =
        sqlx::query_scalar("SELECT disabled_at FROM administrators WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **transaction)
            .await?;
    let this_enabled = this_disabled_at.is_none();
    if this_enabled && others == 0 {
        return Err(StoreError::Refused(
            "this is the last enabled administrator; enable or create another first".into(),
        ));
    }
    Ok(())
}

async fn end_sessions(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: i64,
) -> Result<u64, StoreError> {
    let ended = sqlx::query("DELETE FROM admin_sessions WHERE administrator_id = $1")
        .bind(id)
        .execute(&mut **transaction)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM admin_sign_in_challenges WHERE administrator_id = $1")
        .bind(id)
        .execute(&mut **transaction)
        .await?;
    Ok(ended)
}

fn step(value: Option<i64>) -> Option<u64> {
    value.and_then(|step| u64::try_from(step).ok())
}

impl Store {
    pub async fn create_administrator(
        &self,
        email: &str,
        password_hash: &str,
        now: UnixMillis,
    ) -> Result<i64, StoreError> {
        let result = sqlx::query_scalar(
            "INSERT INTO administrators (email, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(email)
        .bind(password_hash)
        .bind(millis(now))
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(id) => Ok(id),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Err(
                StoreError::Conflict(format!("an administrator with the email {email}")),
            ),
            Err(error) => Err(error.into()),
        }
    }

    /// Every administrator's email, for notices all administrators get.
    pub async fn administrator_emails(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT email FROM administrators ORDER BY email")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn administrator_by_email(
        &self,
        email: &str,
    ) -> Result<Option<Administrator>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ADMINISTRATOR_COLUMNS} FROM administrators a WHERE a.email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(administrator))
    }

    pub async fn create_session(
        &self,
        token_hash: &[u8],
        administrator_id: i64,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO admin_sessions (token_hash, administrator_id, created_at, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(token_hash)
            .bind(administrator_id)
            .bind(millis(now))
            .bind(millis(expires_at))
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The enabled administrator holding a session with this token hash that has neither expired
    /// nor been idle for `idle` or longer; the session counts as used now.
    pub async fn session_administrator(
        &self,
        token_hash: &[u8],
        now: UnixMillis,
        idle: std::time::Duration,
    ) -> Result<Option<Administrator>, StoreError> {
        let idle_since = millis(now.saturating_sub(idle));
        let row = sqlx::query(&format!(
            "SELECT {ADMINISTRATOR_COLUMNS}, s.last_used_at FROM admin_sessions s \
             JOIN administrators a ON a.id = s.administrator_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND s.last_used_at > $3 \
               AND a.disabled_at IS NULL"
        ))
        .bind(token_hash)
        .bind(millis(now))
        .bind(idle_since)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let last_used: i64 = row.get("last_used_at");
        if millis(now) - last_used >= TOUCH_INTERVAL_MS {
            sqlx::query("UPDATE admin_sessions SET last_used_at = $1 WHERE token_hash = $2")
                .bind(millis(now))
                .bind(token_hash)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(administrator(&row)))
    }

    /// Every administrator, by email, with their open sessions.
    pub async fn administrators(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<AdministratorSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.email, CASE WHEN a.disabled_at IS NULL THEN 1 ELSE 0 END AS enabled, \
               CASE WHEN a.totp_secret IS NULL THEN 0 ELSE 1 END AS second_factor, a.created_at, \
               COUNT(s.token_hash) AS sessions, MAX(s.last_used_at) AS last_active_at \
             FROM administrators a \
             LEFT JOIN admin_sessions s ON s.administrator_id = a.id AND s.expires_at > $1 \
             GROUP BY a.id ORDER BY a.email",
        )
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| AdministratorSummary {
                email: row.get("email"),
                enabled: flag(row, "enabled"),
                second_factor: flag(row, "second_factor"),
                created_at: from_millis(row.get("created_at")).unwrap_or(UnixMillis(0)),
                sessions: u64::try_from(row.get::<i64, _>("sessions")).unwrap_or(0),
                last_active_at: from_millis(row.get("last_active_at")),
            })
            .collect())
    }

    /// Enables or disables the administrator `email`. Disabling ends their sessions and pending
    /// sign-ins, and is refused for the last enabled administrator. `false` when nothing changed.
    pub async fn set_administrator_enabled(
        &self,
        email: &str,
        enabled: bool,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let id = administrator_id(&mut transaction, email).await?;
        if !enabled {
            refuse_last_enabled(&mut transaction, id).await?;
        }
        let changed = sqlx::query(
            "UPDATE administrators SET disabled_at = $1 WHERE id = $2 \
             AND (disabled_at IS NULL) = $3",
        )
        .bind((!enabled).then_some(millis(now)))
        .bind(id)
        .bind(!enabled)
        .execute(&mut *transaction)
        .await?
        .rows_affected()
            == 1;
        if !enabled {
            end_sessions(&mut transaction, id).await?;
        }
        transaction.commit().await?;
        Ok(changed)
    }

    /// Deletes the administrator `email` with their sessions; refused for the last enabled one.
    pub async fn delete_administrator(&self, email: &str) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let id = administrator_id(&mut transaction, email).await?;
        refuse_last_enabled(&mut transaction, id).await?;
        sqlx::query("DELETE FROM administrators WHERE id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Ends every session and pending sign-in of the administrator `email`; how many sessions.
    pub async fn end_administrator_sessions(&self, email: &str) -> Result<u64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let id = administrator_id(&mut transaction, email).await?;
        let ended = end_sessions(&mut transaction, id).await?;
        transaction.commit().await?;
        Ok(ended)
    }

    pub async fn delete_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn totp_state(&self, administrator_id: i64) -> Result<Option<TotpState>, StoreError> {
        let row = sqlx::query(
            "SELECT totp_secret, totp_last_step FROM administrators \
             WHERE id = $1 AND totp_secret IS NOT NULL",
        )
        .bind(administrator_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| TotpState {
            secret: row.get("totp_secret"),
            last_step: step(row.get("totp_last_step")),
        }))
    }

    /// Records that a code for `step` was accepted, unless a code for it or a later step already
    /// was: `false` means the code is a replay and must be refused. Atomic, so two requests racing
    /// with the same code cannot both win.
    pub async fn accept_totp_step(
        &self,
        administrator_id: i64,
        step: u64,
    ) -> Result<bool, StoreError> {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE administrators SET totp_last_step = $1 \
             WHERE id = $2 AND totp_secret IS NOT NULL \
             AND (totp_last_step IS NULL OR totp_last_step < $3)",
        )
        .bind(step)
        .bind(administrator_id)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Enrols `secret` as the administrator's second factor, with the step of the code that
    /// confirmed it already used. Refused when one is enrolled already: replacing a second factor
    /// is not something a half-signed-in session may do.
    pub async fn enrol_totp(
        &self,
        administrator_id: i64,
        secret: &[u8],
        confirmed_step: u64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE administrators SET totp_secret = $1, totp_last_step = $2 \
             WHERE id = $3 AND totp_secret IS NULL",
        )
        .bind(secret)
        .bind(i64::try_from(confirmed_step).unwrap_or(i64::MAX))
        .bind(administrator_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "a second factor for this administrator".into(),
            ))
        }
    }

    /// Removes the administrator's second factor, for `writeback-cloud admin reset-second-factor`
    /// when an authenticator is lost. `false` when there is no such administrator.
    pub async fn remove_totp(&self, email: &str) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM administrators WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut *transaction)
            .await?;
        let Some(id) = id else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE administrators SET totp_secret = NULL, totp_last_step = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *transaction)
        .await?;
        // Sessions opened with the old factor end with it.
        sqlx::query("DELETE FROM admin_sessions WHERE administrator_id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    pub async fn create_sign_in_challenge(
        &self,
        token_hash: &[u8],
        administrator_id: i64,
        proposed_totp_secret: Option<&[u8]>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM admin_sign_in_challenges WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO admin_sign_in_challenges \
             (token_hash, administrator_id, proposed_totp_secret, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(administrator_id)
        .bind(proposed_totp_secret)
        .bind(millis(now))
        .bind(millis(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn sign_in_challenge(
        &self,
        token_hash: &[u8],
        now: UnixMillis,
    ) -> Result<Option<SignInChallenge>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ADMINISTRATOR_COLUMNS}, c.proposed_totp_secret, c.failed_attempts \
             FROM admin_sign_in_challenges c \
             JOIN administrators a ON a.id = c.administrator_id \
             WHERE c.token_hash = $1 AND c.expires_at > $2"
        ))
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| SignInChallenge {
            administrator: administrator(&row),
            proposed_totp_secret: row.get("proposed_totp_secret"),
            failed_attempts: u32::try_from(row.get::<i64, _>("failed_attempts"))
                .unwrap_or(u32::MAX),
        }))
    }

    /// Counts a wrong code against the challenge and returns the failures so far.
    pub async fn record_challenge_failure(&self, token_hash: &[u8]) -> Result<u32, StoreError> {
        let failures: Option<i64> = sqlx::query_scalar(
            "UPDATE admin_sign_in_challenges SET failed_attempts = failed_attempts + 1 \
             WHERE token_hash = $1 RETURNING failed_attempts",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(failures.map_or(u32::MAX, |count| u32::try_from(count).unwrap_or(u32::MAX)))
    }

    pub async fn delete_sign_in_challenge(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM admin_sign_in_challenges WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: UnixMillis = UnixMillis(1_000_000);
    const IDLE: Duration = Duration::from_secs(3600);

    fn later(seconds: u64) -> UnixMillis {
        NOW.saturating_add(Duration::from_secs(seconds))
    }

    on_both_databases! {
        async fn sessions_expire(store: Store) {
            let id = store
                .create_administrator("admin@example.test", "hash", NOW)
                .await
                .unwrap();
            store
                .create_session(b"token", id, NOW, later(60))
                .await
                .unwrap();
            assert!(
                store
                    .session_administrator(b"token", later(59), IDLE)
                    .await
                    .unwrap()
                    .is_some()
            );
            assert!(
                store
                    .session_administrator(b"token", later(60), IDLE)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                store
                    .session_administrator(b"other", later(1), IDLE)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    on_both_databases! {
        async fn administrator_emails_are_unique_ignoring_case(store: Store) {
            store
                .create_administrator("Admin@example.test", "hash", NOW)
                .await
                .unwrap();
            let duplicate = store
                .create_administrator("admin@EXAMPLE.test", "hash", NOW)
                .await;
            assert!(matches!(duplicate, Err(StoreError::Conflict(_))));
            assert!(
                store
                    .administrator_by_email("ADMIN@example.test")
                    .await
                    .unwrap()
                    .is_some()
            );
        }
    }

    on_both_databases! {
        async fn a_totp_step_is_accepted_once_and_never_an_earlier_one(store: Store) {
            let id = store
                .create_administrator("admin@example.test", "hash", NOW)
                .await
                .unwrap();
            assert!(
                !store.accept_totp_step(id, 5).await.unwrap(),
                "not enrolled"
            );
            store.enrol_totp(id, b"secret", 10).await.unwrap();
            assert!(matches!(
                store.enrol_totp(id, b"other", 11).await,
                Err(StoreError::Conflict(_))
            ));
            assert!(
                !store.accept_totp_step(id, 10).await.unwrap(),
                "the enrolment code"
            );
            assert!(store.accept_totp_step(id, 11).await.unwrap());
            assert!(!store.accept_totp_step(id, 11).await.unwrap(), "replayed");
            assert!(!store.accept_totp_step(id, 9).await.unwrap(), "older");
            let state = store.totp_state(id).await.unwrap().unwrap();
            assert_eq!(state.secret, b"secret");
            assert_eq!(state.last_step, Some(11));
            let administrator = store
                .administrator_by_email("admin@example.test")
                .await
                .unwrap()
                .unwrap();
            assert!(administrator.totp_enrolled);

            store
                .create_session(b"token", id, NOW, later(60))
                .await
                .unwrap();
            assert!(store.remove_totp("ADMIN@example.test").await.unwrap());
            assert!(store.totp_state(id).await.unwrap().is_none());
            assert!(
                store
                    .session_administrator(b"token", NOW, IDLE)
                    .await
                    .unwrap()
                    .is_none(),
                "sessions end with the factor they were opened with"
            );
            assert!(!store.remove_totp("nobody@example.test").await.unwrap());
        }
    }

    on_both_databases! {
        async fn challenges_count_failures_and_expire(store: Store) {
            let id = store
                .create_administrator("admin@example.test", "hash", NOW)
                .await
                .unwrap();
            store
                .create_sign_in_challenge(b"challenge", id, Some(b"proposed"), NOW, later(300))
                .await
                .unwrap();
            let challenge = store
                .sign_in_challenge(b"challenge", later(1))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(challenge.administrator.id, id);
            assert_eq!(
                challenge.proposed_totp_secret.as_deref(),
                Some(&b"proposed"[..])
            );
            assert_eq!(challenge.failed_attempts, 0);
            assert_eq!(
                store.record_challenge_failure(b"challenge").await.unwrap(),
                1
            );
            assert_eq!(
                store.record_challenge_failure(b"challenge").await.unwrap(),
                2
            );
            assert!(
                store
                    .sign_in_challenge(b"challenge", later(300))
                    .await
                    .unwrap()
                    .is_none()
            );
            store.delete_sign_in_challenge(b"challenge").await.unwrap();
            assert!(
                store
                    .sign_in_challenge(b"challenge", later(1))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    on_both_databases! {
        async fn an_idle_session_ends_and_a_used_one_lives_on(store: Store) {
            let id = store
                .create_administrator("admin@example.test", "hash", NOW)
                .await
                .unwrap();
            store
                .create_session(b"token", id, NOW, later(12 * 3600))
                .await
                .unwrap();
            let idle = Duration::from_secs(30 * 60);
            for minutes in [20, 40, 60] {
                assert!(
                    store
                        .session_administrator(b"token", later(minutes * 60), idle)
                        .await
                        .unwrap()
                        .is_some(),
                    "used every 20 minutes, it lives ({minutes})"
                );
            }
            assert!(
                store
                    .session_administrator(b"token", later(91 * 60), idle)
                    .await
                    .unwrap()
                    .is_none(),
                "31 minutes idle"
            );
        }
    }

    on_both_databases! {
        async fn administrators_are_listed_disabled_enabled_deleted_and_never_the_last_one(store: Store) {
            let first = store
                .create_administrator("first@example.test", "hash", NOW)
                .await
                .unwrap();
            store
                .create_administrator("second@example.test", "hash", NOW)
                .await
                .unwrap();
            store
                .create_session(b"first", first, NOW, later(3600))
                .await
                .unwrap();
            let listed = store.administrators(NOW).await.unwrap();
            assert_eq!(listed.len(), 2);
            assert_eq!(listed[0].sessions, 1);
            assert!(listed.iter().all(|administrator| administrator.enabled));

            assert!(
                store
                    .set_administrator_enabled("FIRST@example.test", false, NOW)
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .set_administrator_enabled("first@example.test", false, NOW)
                    .await
                    .unwrap(),
                "already disabled"
            );
            assert!(
                store
                    .session_administrator(b"first", NOW, IDLE)
                    .await
                    .unwrap()
                    .is_none(),
                "disabling ends the sessions"
            );
            let only = store
                .administrator_by_email("first@example.test")
                .await
                .unwrap()
                .unwrap();
            assert!(!only.enabled);
            assert!(matches!(
                store
                    .set_administrator_enabled("second@example.test", false, NOW)
                    .await,
                Err(StoreError::Refused(_))
            ));
            assert!(matches!(
                store.delete_administrator("second@example.test").await,
                Err(StoreError::Refused(_))
            ));
            store
                .delete_administrator("first@example.test")
                .await
                .unwrap();
            assert!(matches!(
                store.delete_administrator("first@example.test").await,
                Err(StoreError::NotFound(_))
            ));
            assert_eq!(store.administrators(NOW).await.unwrap().len(), 1);
        }
    }

    on_both_databases! {
        async fn two_parallel_disables_never_leave_no_administrator(store: Store) with a SQLite file {
            for email in ["a@example.test", "b@example.test"] {
                store
                    .create_administrator(email, "hash", NOW)
                    .await
                    .unwrap();
            }
            let (a, b) = tokio::join!(
                store.set_administrator_enabled("a@example.test", false, NOW),
                store.set_administrator_enabled("b@example.test", false, NOW)
            );
            assert!(a.is_ok() != b.is_ok(), "exactly one of them is refused");
            let enabled = store
                .administrators(NOW)
                .await
                .unwrap()
                .iter()
                .filter(|administrator| administrator.enabled)
                .count();
            assert_eq!(enabled, 1);
        }
    }
}
