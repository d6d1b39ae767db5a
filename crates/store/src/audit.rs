//! The audit log: appended to by every action, read with filters, pruned only by retention. The
//! database itself refuses any other update or delete (migration 0003).

use sqlx::Row;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use writeback_proto::time::UnixMillis;

use crate::sync::contains_pattern;
use crate::{Store, StoreError, from_millis, millis};

/// One line of the audit log. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: UnixMillis,
    /// Who acted: an administrator's email, a user's name, an agent, or a set-up command.
    pub actor: String,
    /// What was done, e.g. `reset_password`, `sign_in`, `revoke_agent`.
    pub action: String,
    pub directory: Option<String>,
    /// Whom or what it was done to.
    pub target: Option<String>,
    pub request_id: Option<String>,
    /// `success`, or the result code or API error code of the failure.
    pub result_code: String,
    pub detail: Option<String>,
    /// The client address the action came from.
    pub origin: Option<String>,
    /// Where an operation's time went, as the cloud encoded it.
    pub trace: Option<String>,
}

/// A stored event with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub event: AuditEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    Failure,
}

/// Which entries to read. Text fields match case-insensitively anywhere in the value, so `jdoe`
/// finds `jdoe` and `jdoe@corp.example.com`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    pub directory: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub result_code: Option<String>,
    pub request_id: Option<String>,
    /// Only entries older than this position, for reading page after page.
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Store {
    pub async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, directory, target, request_id, result_code, detail, origin, trace) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(millis(event.at))
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.directory)
        .bind(&event.target)
        .bind(&event.request_id)
        .bind(&event.result_code)
        .bind(&event.detail)
        .bind(&event.origin)
        .bind(&event.trace)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Entries matching `filter`, newest first.
    pub async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut parameters = Parameters::default();
        let mut sql = String::from(
            "SELECT id, at, actor, action, directory, target, request_id, result_code, detail, origin, trace \
             FROM audit_events WHERE 1 = 1",
        );
        if let Some(since) = filter.since {
            let since = parameters.integer(millis(since));
            sql.push_str(&format!(" AND at >= {since}"));
        }
        if let Some(until) = filter.until {
            let until = parameters.integer(millis(until));
            sql.push_str(&format!(" AND at < {until}"));
        }
        for (column, value) in [
            ("actor", &filter.actor),
            ("target", &filter.target),
            ("directory", &filter.directory),
        ] {
            if let Some(value) = value {
                let pattern = parameters.text(contains_pattern(value));
                let like = self.backend.like(column);
                sql.push_str(&format!(" AND {like} {pattern} ESCAPE '\\'"));
            }
        }
        for (column, value) in [
            ("action", &filter.action),
            ("request_id", &filter.request_id),
            ("result_code", &filter.result_code),
        ] {
            if let Some(value) = value {
                let value = parameters.text(value.clone());
                sql.push_str(&format!(" AND {column} = {value}"));
            }
        }
        match filter.outcome {
            Some(AuditOutcome::Success) => sql.push_str(" AND result_code = 'success'"),
            Some(AuditOutcome::Failure) => sql.push_str(" AND result_code <> 'success'"),
            None => {}
        }
        if let Some(before_id) = filter.before_id {
            let before_id = parameters.integer(before_id);
            sql.push_str(&format!(" AND id < {before_id}"));
        }
        let limit = parameters.integer(i64::from(filter.limit));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let rows = parameters
            .bound_to(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| AuditEntry {
                id: row.get("id"),
                event: AuditEvent {
                    at: from_millis(Some(row.get("at"))).unwrap_or(UnixMillis(0)),
                    actor: row.get("actor"),
                    action: row.get("action"),
                    directory: row.get("directory"),
                    target: row.get("target"),
                    request_id: row.get("request_id"),
                    result_code: row.get("result_code"),
                    detail: row.get("detail"),
                    origin: row.get("origin"),
                    trace: row.get("trace"),
                },
            })
            .collect())
    }

    /// How many entries about `directory` since `since` ended in one of `result_codes`.
    pub async fn count_audit_results(
        &self,
        directory: &str,
        since: UnixMillis,
        result_codes: &[&str],
    ) -> Result<u64, StoreError> {
        if result_codes.is_empty() {
            return Ok(0);
        }
        let mut parameters = Parameters::default();
        let directory = parameters.text(directory.to_owned());
        let since = parameters.integer(millis(since));
        let codes: Vec<String> = result_codes
            .iter()
            .map(|code| parameters.text((*code).to_owned()))
            .collect();
        let sql = format!(
            "SELECT COUNT(*) AS count FROM audit_events WHERE directory = {directory} \
             AND at >= {since} AND result_code IN ({})",
            codes.join(", ")
        );
        let count: i64 = parameters
            .bound_to(sqlx::query(&sql))
            .fetch_one(&self.pool)
            .await?
            .get("count");
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Removes entries older than `before`, the one deletion the audit log allows. Returns how
    /// many were removed.
    pub async fn prune_audit(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "UPDATE audit_retention_floor SET prune_before = CASE WHEN prune_before > $1 THEN prune_before ELSE $1 END WHERE only_row = 1",
        )
        .bind(millis(before))
        .execute(&mut *transaction)
        .await?;
        let removed = sqlx::query(
            "DELETE FROM audit_events WHERE at < (SELECT prune_before FROM audit_retention_floor WHERE only_row = 1)",
        )
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(removed)
    }
}

/// The values of a statement built at run time, each named `$n` in the order it was added.
#[derive(Debug, Default)]
struct Parameters(Vec<Parameter>);

#[derive(Debug)]
enum Parameter {
    Integer(i64),
    Text(String),
}

impl Parameters {
    /// Adds `value` and returns the placeholder that names it.
    fn integer(&mut self, value: i64) -> String {
        self.0.push(Parameter::Integer(value));
        format!("${}", self.0.len())
    }

    fn text(&mut self, value: String) -> String {
        self.0.push(Parameter::Text(value));
        format!("${}", self.0.len())
    }

    fn bound_to<'q>(
        self,
        mut query: Query<'q, sqlx::Any, AnyArguments<'q>>,
    ) -> Query<'q, sqlx::Any, AnyArguments<'q>> {
        for parameter in self.0 {
            query = match parameter {
                Parameter::Integer(value) => query.bind(value),
                Parameter::Text(value) => query.bind(value),
            };
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: u64, actor: &str, action: &str, target: &str, result_code: &str) -> AuditEvent {
        AuditEvent {
            at: UnixMillis(at),
            actor: actor.into(),
            action: action.into(),
            directory: Some("corp".into()),
            target: Some(target.into()),
            request_id: None,
            result_code: result_code.into(),
            detail: None,
            origin: Some("192.0.2.7".into()),
            trace: None,
        }
    }

    async fn with_events(store: Store) -> Store {
        for event in [
            event(
                1_000,
                "admin@corp.test",
                "reset_password",
                "jdoe",
                "success",
            ),
            event(
                2_000,
                "admin@corp.test",
                "unlock",
                "jdoe@corp.test",
                "user_not_found",
            ),
            event(
                3_000,
                "helpdesk@corp.test",
                "reset_password",
                "asmith",
                "policy_violation",
            ),
            event(4_000, "helpdesk@corp.test", "sign_in", "", "success"),
            event(5_000, "100%_sure", "sign_in", "", "invalid_credentials"),
        ] {
            store.append_audit(&event).await.unwrap();
        }
        store
    }

    fn filter() -> AuditFilter {
        AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        }
    }

    fn times(entries: &[AuditEntry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.event.at.0).collect()
    }

    on_both_databases! {
        async fn filters_combine_and_results_come_newest_first(store: Store) {
            let store = with_events(store).await;
            let all = store.audit_entries(&filter()).await.unwrap();
            assert_eq!(times(&all), [5_000, 4_000, 3_000, 2_000, 1_000]);
            assert_eq!(all[0].event.origin.as_deref(), Some("192.0.2.7"));

            let window = AuditFilter {
                since: Some(UnixMillis(2_000)),
                until: Some(UnixMillis(4_000)),
                ..filter()
            };
            assert_eq!(
                times(&store.audit_entries(&window).await.unwrap()),
                [3_000, 2_000]
            );

            let target = AuditFilter {
                target: Some("JDOE".into()),
                ..filter()
            };
            assert_eq!(
                times(&store.audit_entries(&target).await.unwrap()),
                [2_000, 1_000]
            );

            let failures_by_admin = AuditFilter {
                actor: Some("admin@".into()),
                outcome: Some(AuditOutcome::Failure),
                ..filter()
            };
            assert_eq!(
                times(&store.audit_entries(&failures_by_admin).await.unwrap()),
                [2_000]
            );

            let resets = AuditFilter {
                action: Some("reset_password".into()),
                outcome: Some(AuditOutcome::Success),
                ..filter()
            };
            assert_eq!(times(&store.audit_entries(&resets).await.unwrap()), [1_000]);

            let by_code = AuditFilter {
                result_code: Some("policy_violation".into()),
                ..filter()
            };
            assert_eq!(
                times(&store.audit_entries(&by_code).await.unwrap()),
                [3_000]
            );
        }
    }

    on_both_databases! {
        async fn results_are_counted_by_directory_time_and_code(store: Store) {
            let store = with_events(store).await;
            let count = |since, codes: &'static [&'static str]| {
                let store = store.clone();
                async move {
                    store
                        .count_audit_results("corp", UnixMillis(since), codes)
                        .await
                        .unwrap()
                }
            };
            assert_eq!(count(0, &["success"]).await, 2);
            assert_eq!(
                count(2_000, &["user_not_found", "policy_violation"]).await,
                2
            );
            assert_eq!(count(2_500, &["user_not_found"]).await, 0);
            assert_eq!(
                store
                    .count_audit_results("other", UnixMillis(0), &["success"])
                    .await
                    .unwrap(),
                0
            );
        }
    }

    on_both_databases! {
        async fn like_metacharacters_in_a_filter_match_only_themselves(store: Store) {
            let store = with_events(store).await;
            let percent = AuditFilter {
                actor: Some("0%_".into()),
                ..filter()
            };
            assert_eq!(
                times(&store.audit_entries(&percent).await.unwrap()),
                [5_000]
            );
            let underscore = AuditFilter {
                actor: Some("_".into()),
                ..filter()
            };
            assert_eq!(
                times(&store.audit_entries(&underscore).await.unwrap()),
                [5_000]
            );
        }
    }

    on_both_databases! {
        async fn pages_follow_each_other_without_overlap(store: Store) {
            let store = with_events(store).await;
            let first = store
                .audit_entries(&AuditFilter {
                    limit: 2,
                    ..filter()
                })
                .await
                .unwrap();
            let second = store
                .audit_entries(&AuditFilter {
                    limit: 2,
                    before_id: first.last().map(|entry| entry.id),
                    ..filter()
                })
                .await
                .unwrap();
            assert_eq!(times(&first), [5_000, 4_000]);
            assert_eq!(times(&second), [3_000, 2_000]);
        }
    }

    on_both_databases! {
        async fn the_log_cannot_be_edited_and_only_retention_removes_entries(store: Store) {
            let store = with_events(store).await;
            let update = sqlx::query("UPDATE audit_events SET result_code = 'success'")
                .execute(&store.pool)
                .await;
            assert!(update.unwrap_err().to_string().contains("append-only"));
            let delete = sqlx::query("DELETE FROM audit_events WHERE at = 3000")
                .execute(&store.pool)
                .await;
            assert!(delete.unwrap_err().to_string().contains("append-only"));

            assert_eq!(store.prune_audit(UnixMillis(3_000)).await.unwrap(), 2);
            assert_eq!(
                times(&store.audit_entries(&filter()).await.unwrap()),
                [5_000, 4_000, 3_000]
            );
            // The floor never moves back, so an older cutoff cannot reopen newer entries.
            assert_eq!(store.prune_audit(UnixMillis(0)).await.unwrap(), 0);
            let rewind = sqlx::query("UPDATE audit_retention_floor SET prune_before = 0")
                .execute(&store.pool)
                .await;
            assert!(rewind.is_err());
            let delete = sqlx::query("DELETE FROM audit_events WHERE at = 4000")
                .execute(&store.pool)
                .await;
            assert!(delete.is_err());
        }
    }
}
