//! The secrets the store holds for the cloud (administrators' authenticator keys, and what checks
//! each self-service method) arrive sealed by the cloud and stay opaque here. What the store
//! offers is one pass over all of them, to seal ones still in clear or re-seal them under a new
//! key, in one transaction.

use sqlx::Row;

use crate::{Store, StoreError};

/// Whose secret a stored value is, so the cloud can bind each sealed value to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOwner<'a> {
    /// An administrator's enrolled authenticator key.
    Administrator { id: i64 },
    /// What checks one self-service method of one user.
    Method {
        directory: &'a str,
        user_anchor: &'a str,
        method: &'a str,
    },
    /// What the portal remembers under one cookie, on a cluster ([`crate::PortalEntry`]).
    PortalEntry { kind: &'a str, key: &'a [u8] },
    /// A message between a cluster's nodes on the bus channel `channel`; never stored.
    BusMessage { channel: &'a str },
}

impl Store {
    /// Passes every stored secret through `rewrite`, which answers the value to store instead
    /// (or `None` to keep it), all in one transaction: a failure leaves every value as it was.
    /// Pending sign-in challenges, which hold only a proposed key for five minutes, are ended.
    /// Returns how many values changed.
    pub async fn rewrite_secrets<E>(
        &self,
        mut rewrite: impl FnMut(SecretOwner<'_>, &[u8]) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Result<usize, E>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let mut changed = 0;
        let administrators =
            sqlx::query("SELECT id, totp_secret FROM administrators WHERE totp_secret IS NOT NULL")
                .fetch_all(&mut *transaction)
                .await?;
        for row in administrators {
            let id: i64 = row.get("id");
            let secret: Vec<u8> = row.get("totp_secret");
            let replacement = match rewrite(SecretOwner::Administrator { id }, &secret) {
                Ok(replacement) => replacement,
                Err(error) => return Ok(Err(error)),
            };
            if let Some(replacement) = replacement {
                sqlx::query("UPDATE administrators SET totp_secret = $1 WHERE id = $2")
                    .bind(replacement)
                    .bind(id)
                    .execute(&mut *transaction)
                    .await?;
                changed += 1;
            }
        }
        let methods = sqlx::query(
            "SELECT directory, user_anchor, method, secret FROM self_service_methods \
             WHERE secret IS NOT NULL",
        )
        .fetch_all(&mut *transaction)
        .await?;
        for row in methods {
            let (directory, user_anchor, method): (String, String, String) = (
                row.get("directory"),
                row.get("user_anchor"),
                row.get("method"),
            );
            let secret: Vec<u8> = row.get("secret");
            let owner = SecretOwner::Method {
                directory: &directory,
                user_anchor: &user_anchor,
                method: &method,
            };
            let replacement = match rewrite(owner, &secret) {
                Ok(replacement) => replacement,
                Err(error) => return Ok(Err(error)),
            };
            if let Some(replacement) = replacement {
                sqlx::query(
                    "UPDATE self_service_methods SET secret = $1 \
                     WHERE directory = $2 AND user_anchor = $3 AND method = $4",
                )
                .bind(replacement)
                .bind(&directory)
                .bind(&user_anchor)
                .bind(&method)
                .execute(&mut *transaction)
                .await?;
                changed += 1;
            }
        }
        sqlx::query("DELETE FROM admin_sign_in_challenges")
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(Ok(changed))
    }
}

#[cfg(test)]
mod tests {
    use writeback_proto::time::UnixMillis;

    use super::*;
    use crate::{MethodOwner, RegisteredMethod};

    on_both_databases! {
        async fn every_secret_is_rewritten_in_one_pass_or_none_is(store: Store) {
            let id = store
                .create_administrator("admin@example.test", "hash", UnixMillis(1))
                .await
                .unwrap();
            store.enrol_totp(id, b"admin-key", 1).await.unwrap();
            let owner = MethodOwner {
                directory: "corp",
                user_anchor: "anchor",
            };
            store
                .register_self_service_method(
                    owner,
                    &RegisteredMethod {
                        method: "authenticator_app".into(),
                        value: None,
                        secret: Some(b"user-key".to_vec()),
                        registered_at: UnixMillis(1),
                    },
                )
                .await
                .unwrap();

            let failed: Result<usize, &str> = store
                .rewrite_secrets(|owner, _| match owner {
                    SecretOwner::Method { .. } => Err("cannot"),
                    SecretOwner::Administrator { .. } => Ok(Some(b"changed".to_vec())),
                    SecretOwner::PortalEntry { .. } | SecretOwner::BusMessage { .. } => {
                        Err("neither is stored as a secret")
                    }
                })
                .await
                .unwrap();
            assert_eq!(failed, Err("cannot"));
            assert_eq!(
                store.totp_state(id).await.unwrap().unwrap().secret,
                b"admin-key"
            );

            let mut seen = Vec::new();
            let changed: Result<usize, ()> = store
                .rewrite_secrets(|owner, secret| {
                    seen.push(format!("{owner:?}"));
                    Ok(Some([b"sealed:", secret].concat()))
                })
                .await
                .unwrap();
            assert_eq!(changed, Ok(2));
            assert_eq!(seen.len(), 2);
            assert_eq!(
                store.totp_state(id).await.unwrap().unwrap().secret,
                b"sealed:admin-key"
            );
            let methods = store.self_service_methods(owner).await.unwrap();
            assert_eq!(methods[0].secret.as_deref(), Some(&b"sealed:user-key"[..]));
        }
    }
}
