//! What the self-service portal remembers between pages, when several nodes share it: entries
//! by kind (a flow, a session) and key (the SHA-256 of a cookie), with a body the cloud seals.
//! Every entry of a kind lives for the same time from its start, so "live" is "started at or
//! after" a moment the caller passes in, and the oldest go first when a kind is full.

use sqlx::Row;
use writeback_proto::time::UnixMillis;

use crate::{Store, StoreError, from_millis, millis};

/// One thing the portal remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalEntry {
    pub started_at: UnixMillis,
    /// Sealed by the cloud; opaque here.
    pub body: Vec<u8>,
}

impl Store {
    /// Keeps `entry` under `kind` and `key`, replacing what was there. Entries of `kind` that
    /// started before `expired_before` are removed first; then, while `capacity` or more remain,
    /// the oldest, so that the table stays bounded whatever anyone sends.
    pub async fn put_portal_entry(
        &self,
        kind: &str,
        key: &[u8],
        entry: &PortalEntry,
        expired_before: UnixMillis,
        capacity: usize,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM portal_entries WHERE kind = $1 AND started_at < $2")
            .bind(kind)
            .bind(millis(expired_before))
            .execute(&mut *transaction)
            .await?;
        let held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM portal_entries WHERE kind = $1 AND key <> $2")
                .bind(kind)
                .bind(key)
                .fetch_one(&mut *transaction)
                .await?;
        let capacity = i64::try_from(capacity.max(1)).unwrap_or(i64::MAX);
        if held >= capacity {
            sqlx::query(
                "DELETE FROM portal_entries WHERE kind = $1 AND key IN \
                 (SELECT key FROM portal_entries WHERE kind = $1 AND key <> $2 \
                  ORDER BY started_at LIMIT $3)",
            )
            .bind(kind)
            .bind(key)
            .bind(held - capacity + 1)
            .execute(&mut *transaction)
            .await?;
        }
        sqlx::query(
            "INSERT INTO portal_entries (kind, key, started_at, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, key) DO UPDATE SET started_at = excluded.started_at, body = excluded.body",
        )
        .bind(kind)
        .bind(key)
        .bind(millis(entry.started_at))
        .bind(entry.body.as_slice())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The entry under `kind` and `key` if it started at or after `live_since`.
    pub async fn portal_entry(
        &self,
        kind: &str,
        key: &[u8],
        live_since: UnixMillis,
    ) -> Result<Option<PortalEntry>, StoreError> {
        let row = sqlx::query(
            "SELECT started_at, body FROM portal_entries WHERE kind = $1 AND key = $2 AND started_at >= $3",
        )
        .bind(kind)
        .bind(key)
        .bind(millis(live_since))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| PortalEntry {
            started_at: from_millis(Some(row.get("started_at"))).unwrap_or(UnixMillis(0)),
            body: row.get("body"),
        }))
    }

    /// Passes the live entry under `kind` and `key` through `change`, which answers the body to
    /// keep instead (`None` keeps it as it is) and what to return; all in one write transaction,
    /// so that two requests changing one entry take turns. `None` when there is no live entry.
    pub async fn change_portal_entry<R>(
        &self,
        kind: &str,
        key: &[u8],
        live_since: UnixMillis,
        change: impl FnOnce(&PortalEntry) -> (Option<Vec<u8>>, R),
    ) -> Result<Option<R>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT started_at, body FROM portal_entries WHERE kind = $1 AND key = $2 AND started_at >= $3",
        )
        .bind(kind)
        .bind(key)
        .bind(millis(live_since))
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let entry = PortalEntry {
            started_at: from_millis(Some(row.get("started_at"))).unwrap_or(UnixMillis(0)),
            body: row.get("body"),
        };
        let (body, answer) = change(&entry);
        if let Some(body) = body {
            sqlx::query("UPDATE portal_entries SET body = $1 WHERE kind = $2 AND key = $3")
                .bind(body.as_slice())
                .bind(kind)
                .bind(key)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(Some(answer))
    }

    pub async fn remove_portal_entry(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM portal_entries WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many entries of `kind` are live.
    pub async fn count_portal_entries(
        &self,
        kind: &str,
        live_since: UnixMillis,
    ) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM portal_entries WHERE kind = $1 AND started_at >= $2",
        )
        .bind(kind)
        .bind(millis(live_since))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Ends everything the portal remembers: when the key its bodies are sealed under changes.
    pub async fn remove_all_portal_entries(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM portal_entries")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64, body: &[u8]) -> PortalEntry {
        PortalEntry {
            started_at: UnixMillis(at),
            body: body.to_vec(),
        }
    }

    on_both_databases! {
        async fn entries_expire_are_bounded_and_change_in_turns(store: Store) {
            store.put_portal_entry("flow", b"a", &entry(1_000, b"one"), UnixMillis(0), 2).await.unwrap();
            store.put_portal_entry("flow", b"b", &entry(2_000, b"two"), UnixMillis(0), 2).await.unwrap();
            store.put_portal_entry("session", b"a", &entry(2_000, b"own kind"), UnixMillis(0), 2).await.unwrap();
            // Full: the oldest flow makes room, the session is untouched.
            store.put_portal_entry("flow", b"c", &entry(3_000, b"three"), UnixMillis(0), 2).await.unwrap();
            assert_eq!(store.portal_entry("flow", b"a", UnixMillis(0)).await.unwrap(), None);
            assert_eq!(store.count_portal_entries("flow", UnixMillis(0)).await.unwrap(), 2);
            assert_eq!(
                store.portal_entry("session", b"a", UnixMillis(0)).await.unwrap(),
                Some(entry(2_000, b"own kind"))
            );
            // Expired: not live, and removed by the next put.
            assert_eq!(store.portal_entry("flow", b"b", UnixMillis(2_001)).await.unwrap(), None);
            store.put_portal_entry("flow", b"d", &entry(4_000, b"four"), UnixMillis(2_500), 2).await.unwrap();
            assert_eq!(store.count_portal_entries("flow", UnixMillis(0)).await.unwrap(), 2);

            // Parallel changes of one entry take turns: each sees the one before.
            let changes: Vec<_> = (0..20)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .change_portal_entry("flow", b"c", UnixMillis(0), |entry| {
                                let mut body = entry.body.clone();
                                body.push(b'+');
                                (Some(body), ())
                            })
                            .await
                            .unwrap()
                    })
                })
                .collect();
            for change in changes {
                assert_eq!(change.await.unwrap(), Some(()));
            }
            let changed = store.portal_entry("flow", b"c", UnixMillis(0)).await.unwrap().unwrap();
            assert_eq!(changed.body, [b"three".as_slice(), &[b'+'; 20]].concat());
            assert_eq!(
                store.change_portal_entry("flow", b"gone", UnixMillis(0), |_| (None, ())).await.unwrap(),
                None
            );
            store.remove_portal_entry("flow", b"c").await.unwrap();
            assert_eq!(store.portal_entry("flow", b"c", UnixMillis(0)).await.unwrap(), None);
            assert_eq!(store.remove_all_portal_entries().await.unwrap(), 2);
        }
    }
}
