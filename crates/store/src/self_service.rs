//! The verification methods users register in the self-service portal, and when they last
//! confirmed them. The store keeps methods as names and opaque values; the cloud gives them
//! meaning.

use sqlx::Row;
use writeback_proto::time::UnixMillis;

use crate::{Store, StoreError, from_millis, millis};

/// Whose methods: a synced user, by directory and anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodOwner<'a> {
    pub directory: &'a str,
    pub user_anchor: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredMethod {
    pub method: String,
    pub value: Option<String>,
    pub secret: Option<Vec<u8>>,
    pub registered_at: UnixMillis,
}

impl Store {
    pub async fn self_service_methods(
        &self,
        owner: MethodOwner<'_>,
    ) -> Result<Vec<RegisteredMethod>, StoreError> {
        let rows = sqlx::query(
            "SELECT method, value, secret, registered_at FROM self_service_methods \
             WHERE directory = $1 AND user_anchor = $2 ORDER BY method",
        )
        .bind(owner.directory)
        .bind(owner.user_anchor)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| RegisteredMethod {
                method: row.get("method"),
                value: row.get("value"),
                secret: row.get("secret"),
                registered_at: from_millis(row.get("registered_at")).unwrap_or(UnixMillis(0)),
            })
            .collect())
    }

    /// Registers `method`, replacing an earlier registration of the same kind, and counts as a
    /// confirmation of all the user's methods.
    pub async fn register_self_service_method(
        &self,
        owner: MethodOwner<'_>,
        method: &RegisteredMethod,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO self_service_methods (directory, user_anchor, method, value, secret, last_totp_step, registered_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6) \
             ON CONFLICT (directory, user_anchor, method) DO UPDATE SET value = excluded.value, \
               secret = excluded.secret, last_totp_step = NULL, registered_at = excluded.registered_at",
        )
        .bind(owner.directory)
        .bind(owner.user_anchor)
        .bind(&method.method)
        .bind(&method.value)
        .bind(&method.secret)
        .bind(millis(method.registered_at))
        .execute(&mut *transaction)
        .await?;
        confirm(&mut transaction, owner, method.registered_at).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Whether a method was removed.
    pub async fn remove_self_service_method(
        &self,
        owner: MethodOwner<'_>,
        method: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM self_service_methods WHERE directory = $1 AND user_anchor = $2 AND method = $3",
        )
        .bind(owner.directory)
        .bind(owner.user_anchor)
        .bind(method)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes every method of `owner`, as an administrator does for a person who lost them;
    /// how many there were.
    pub async fn remove_all_self_service_methods(
        &self,
        owner: MethodOwner<'_>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM self_service_methods WHERE directory = $1 AND user_anchor = $2",
        )
        .bind(owner.directory)
        .bind(owner.user_anchor)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn confirm_self_service_methods(
        &self,
        owner: MethodOwner<'_>,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        confirm(&mut transaction, owner, at).await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn self_service_confirmed_at(
        &self,
        owner: MethodOwner<'_>,
    ) -> Result<Option<UnixMillis>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT confirmed_at FROM self_service_confirmations WHERE directory = $1 AND user_anchor = $2",
        )
        .bind(owner.directory)
        .bind(owner.user_anchor)
        .fetch_optional(&self.pool)
        .await?;
        Ok(from_millis(at))
    }

    /// Records `step` as the last authenticator code used, unless a code of that step or a later
    /// one was used already: each code works once. Atomic, so two requests with the same code
    /// cannot both pass.
    pub async fn accept_self_service_totp_step(
        &self,
        owner: MethodOwner<'_>,
        step: u64,
    ) -> Result<bool, StoreError> {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE self_service_methods SET last_totp_step = $3 \
             WHERE directory = $1 AND user_anchor = $2 AND method = 'authenticator_app' \
               AND (last_totp_step IS NULL OR last_totp_step < $3)",
        )
        .bind(owner.directory)
        .bind(owner.user_anchor)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

async fn confirm(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    owner: MethodOwner<'_>,
    at: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO self_service_confirmations (directory, user_anchor, confirmed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (directory, user_anchor) DO UPDATE SET confirmed_at = excluded.confirmed_at",
    )
    .bind(owner.directory)
    .bind(owner.user_anchor)
    .bind(millis(at))
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> MethodOwner<'static> {
        MethodOwner {
            directory: "corp",
            user_anchor: "0f1e2d3c-0000-0000-0000-000000000001",
        }
    }

    fn authenticator(at: u64) -> RegisteredMethod {
        RegisteredMethod {
            method: "authenticator_app".into(),
            value: None,
            secret: Some(vec![1, 2, 3]),
            registered_at: UnixMillis(at),
        }
    }

    on_both_databases! {
        async fn methods_are_registered_replaced_confirmed_and_removed(store: Store) {
            assert!(
                store
                    .self_service_methods(owner())
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                store.self_service_confirmed_at(owner()).await.unwrap(),
                None
            );

            store
                .register_self_service_method(owner(), &authenticator(1_000))
                .await
                .unwrap();
            store
                .register_self_service_method(owner(), &authenticator(2_000))
                .await
                .unwrap();
            let methods = store.self_service_methods(owner()).await.unwrap();
            assert_eq!(methods, vec![authenticator(2_000)]);
            assert_eq!(
                store.self_service_confirmed_at(owner()).await.unwrap(),
                Some(UnixMillis(2_000))
            );
            store
                .confirm_self_service_methods(owner(), UnixMillis(5_000))
                .await
                .unwrap();
            assert_eq!(
                store.self_service_confirmed_at(owner()).await.unwrap(),
                Some(UnixMillis(5_000))
            );

            assert!(
                store
                    .remove_self_service_method(owner(), "authenticator_app")
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .remove_self_service_method(owner(), "authenticator_app")
                    .await
                    .unwrap()
            );
        }
    }

    on_both_databases! {
        async fn an_authenticator_step_is_accepted_once_and_never_an_earlier_one(store: Store) {
            store
                .register_self_service_method(owner(), &authenticator(1_000))
                .await
                .unwrap();
            assert!(
                store
                    .accept_self_service_totp_step(owner(), 10)
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .accept_self_service_totp_step(owner(), 10)
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .accept_self_service_totp_step(owner(), 9)
                    .await
                    .unwrap()
            );
            assert!(
                store
                    .accept_self_service_totp_step(owner(), 11)
                    .await
                    .unwrap()
            );
        }
    }
}
