//! Rate limits as rows: reserving an attempt counts the attempts already held in each of the
//! limit's buckets and holds one more in each, in one write transaction. Because the count and
//! the insert cannot be split, a burst of parallel requests gets exactly the limit through, and
//! the same holds for several nodes sharing one database.

use std::time::Duration;

use writeback_proto::time::UnixMillis;

use crate::{Store, StoreError, millis};

/// No limit looks further back than this; older rows are pruned.
pub const LONGEST_WINDOW: Duration = Duration::from_secs(48 * 3600);

/// At most `max` attempts in `bucket` within `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub bucket: String,
    pub max: u64,
    pub window: Duration,
}

impl Limit {
    pub fn new(bucket: impl Into<String>, max: u64, window: Duration) -> Self {
        Self {
            bucket: bucket.into(),
            max,
            window,
        }
    }
}

/// The attempts a granted reservation holds, one per limit, to release if the attempt turns out
/// not to count (a correct answer, where only wrong ones are limited).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[must_use = "a reservation is either kept (the attempt counts) or released"]
pub struct Reservation {
    slots: Vec<i64>,
}

/// What reserving gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    Granted(Reservation),
    /// The first limit that was full; nothing was held.
    Refused(Limit),
}

fn since(now: UnixMillis, window: Duration) -> i64 {
    millis(UnixMillis(now.0.saturating_sub(
        window.as_millis().try_into().unwrap_or(u64::MAX),
    )))
}

impl Store {
    /// Holds one attempt in every limit's bucket, or in none when any of them is full.
    pub async fn reserve(&self, limits: &[Limit], now: UnixMillis) -> Result<Reserved, StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM rate_limit_slots WHERE at < $1")
            .bind(since(now, LONGEST_WINDOW))
            .execute(&mut *transaction)
            .await?;
        for limit in limits {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM rate_limit_slots WHERE bucket = $1 AND at > $2",
            )
            .bind(&limit.bucket)
            .bind(since(now, limit.window))
            .fetch_one(&mut *transaction)
            .await?;
            if u64::try_from(held).unwrap_or(u64::MAX) >= limit.max {
                transaction.rollback().await?;
                return Ok(Reserved::Refused(limit.clone()));
            }
        }
        let mut slots = Vec::with_capacity(limits.len());
        for limit in limits {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO rate_limit_slots (bucket, at) VALUES ($1, $2) RETURNING id",
            )
            .bind(&limit.bucket)
            .bind(millis(now))
            .fetch_one(&mut *transaction)
            .await?;
            slots.push(id);
        }
        transaction.commit().await?;
        Ok(Reserved::Granted(Reservation { slots }))
    }

    /// Gives back what a reservation held: the attempt does not count.
    pub async fn release(&self, reservation: Reservation) -> Result<(), StoreError> {
        for slot in reservation.slots {
            sqlx::query("DELETE FROM rate_limit_slots WHERE id = $1")
                .bind(slot)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Records one event in `bucket` outside any limit check: a block, say.
    pub async fn record_in_bucket(&self, bucket: &str, now: UnixMillis) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO rate_limit_slots (bucket, at) VALUES ($1, $2)")
            .bind(bucket)
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many events `bucket` holds within `window` before `now`.
    pub async fn count_in_bucket(
        &self,
        bucket: &str,
        window: Duration,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM rate_limit_slots WHERE bucket = $1 AND at > $2",
        )
        .bind(bucket)
        .bind(since(now, window))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(held).unwrap_or(0))
    }

    /// Forgets every event of `bucket`: an administrator lifted a block, say.
    pub async fn clear_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM rate_limit_slots WHERE bucket = $1")
            .bind(bucket)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    on_both_databases! {
        async fn fifty_parallel_reservations_grant_exactly_the_limit(store: Store) with a SQLite file {
            let now = UnixMillis(10 * 3_600_000);
            let limits = vec![
                Limit::new("proof:account:corp\\jdoe", 5, HOUR),
                Limit::new("proof:address:192.0.2.7", 20, HOUR),
            ];
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let store = store.clone();
                let limits = limits.clone();
                tasks.spawn(async move { store.reserve(&limits, now).await.unwrap() });
            }
            let mut granted = 0;
            while let Some(result) = tasks.join_next().await {
                match result.unwrap() {
                    Reserved::Granted(_) => granted += 1,
                    Reserved::Refused(limit) => assert_eq!(limit.bucket, "proof:account:corp\\jdoe"),
                }
            }
            assert_eq!(granted, 5);
            assert_eq!(
                store
                    .count_in_bucket("proof:address:192.0.2.7", HOUR, now)
                    .await
                    .unwrap(),
                5,
                "a refused reservation holds nothing in any bucket"
            );
        }
    }

    on_both_databases! {
        async fn a_released_attempt_does_not_count_and_old_ones_age_out(store: Store) with a SQLite file {
            let start = UnixMillis(10 * 3_600_000);
            let limit = [Limit::new("codes:account:x", 2, HOUR)];
            let Reserved::Granted(first) = store.reserve(&limit, start).await.unwrap() else {
                panic!("the first is granted");
            };
            store.release(first).await.unwrap();
            for _ in 0..2 {
                assert!(matches!(
                    store.reserve(&limit, start).await.unwrap(),
                    Reserved::Granted(_)
                ));
            }
            assert!(matches!(
                store.reserve(&limit, start).await.unwrap(),
                Reserved::Refused(_)
            ));
            let later = start.saturating_add(HOUR);
            assert!(matches!(
                store.reserve(&limit, later).await.unwrap(),
                Reserved::Granted(_)
            ));
        }
    }
}
