//! The synced copy of each directory: applying the agent's batches, and the lookups the API and
//! the relay make on it.

use sqlx::any::AnyRow;
use sqlx::{Row, Transaction};

use writeback_proto::api::{
    DirectoryGroup, DirectoryUser, DirectoryUserDetail, GroupRef, SyncErrorView, SyncStatus,
};
use writeback_proto::ids::DirectoryName;
use writeback_proto::sync::{
    ObjectAnchor, PasswordExpiry, SyncBatch, SyncChange, SyncCursor, SyncPhase, SyncStart,
    SyncedGroup, SyncedUser,
};
use writeback_proto::time::UnixMillis;

use crate::{Backend, Store, StoreError, flag, from_millis, millis};

/// Sync errors kept per directory; older ones are dropped.
const KEPT_SYNC_ERRORS: i64 = 1000;

/// Nesting deeper than this is not followed (and a membership cycle stops here).
const MAX_NESTING: i64 = 32;

/// How users are looked up in a search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserQuery {
    /// Part of a logon name, UPN, mail or display name.
    pub text: Option<String>,
    /// Only members of this group (by name or anchor), directly or through nested groups.
    pub group: Option<String>,
    pub limit: u32,
}

pub(crate) const USER_COLUMNS: &str = "anchor, sid, sam_account_name, user_principal_name, mail, display_name, \
    given_name, surname, distinguished_name, enabled, locked_out, password_last_set, \
    must_change_password, password_never_expires, protected, synced_at, password_expiry, \
    password_expires_at";

fn anchor_column(row: &AnyRow, name: &str) -> Result<ObjectAnchor, StoreError> {
    let text: String = row.get(name);
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("stored anchor {text:?} is not a GUID")))
}

fn expiry_from_columns(kind: String, at: Option<UnixMillis>) -> PasswordExpiry {
    match (kind.as_str(), at) {
        ("never", _) => PasswordExpiry::Never,
        ("at", Some(at)) => PasswordExpiry::At(at),
        _ => PasswordExpiry::Unknown,
    }
}

fn expiry_columns(expiry: PasswordExpiry) -> (&'static str, Option<i64>) {
    match expiry {
        PasswordExpiry::Unknown => ("unknown", None),
        PasswordExpiry::Never => ("never", None),
        PasswordExpiry::At(at) => ("at", Some(millis(at))),
    }
}

pub(crate) fn user_from_row(row: &AnyRow) -> Result<DirectoryUser, StoreError> {
    Ok(DirectoryUser {
        user: SyncedUser {
            anchor: anchor_column(row, "anchor")?,
            sid: row.get("sid"),
            sam_account_name: row.get("sam_account_name"),
            user_principal_name: row.get("user_principal_name"),
            mail: row.get("mail"),
            display_name: row.get("display_name"),
            given_name: row.get("given_name"),
            surname: row.get("surname"),
            distinguished_name: row.get("distinguished_name"),
            enabled: flag(row, "enabled"),
            locked_out: flag(row, "locked_out"),
            password_last_set: from_millis(row.get("password_last_set")),
            must_change_password: flag(row, "must_change_password"),
            password_never_expires: flag(row, "password_never_expires"),
            password_expiry: expiry_from_columns(
                row.get("password_expiry"),
                from_millis(row.get("password_expires_at")),
            ),
            protected: flag(row, "protected"),
        },
        last_synced_at: from_millis(row.get("synced_at")).unwrap_or(UnixMillis(0)),
    })
}

/// `LIKE` pattern for a substring, with the pattern's own metacharacters escaped (use with
/// `ESCAPE '\'`).
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::from("%");
    for character in text.chars() {
        if matches!(character, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// What the agent of `directory` is told when it connects: the last committed cursor.
    pub async fn sync_start(&self, directory: &DirectoryName) -> Result<SyncStart, StoreError> {
        let row = sqlx::query(
            "SELECT cursor, full_requested FROM sync_state JOIN directories ON directories.id = sync_state.directory_id WHERE directories.name = $1",
        )
        .bind(directory.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(SyncStart {
                cursor: None,
                full: false,
            });
        };
        Ok(SyncStart {
            cursor: parse_cursor(row.get("cursor"))?,
            full: flag(&row, "full_requested"),
        })
    }

    /// Marks a full sync as wanted; it starts when an agent of the directory is next told to sync.
    pub async fn request_full_sync(&self, directory: &DirectoryName) -> Result<(), StoreError> {
        let directory_id = self.directory_id(directory).await?;
        sqlx::query(
            "INSERT INTO sync_state (directory_id, full_requested) VALUES ($1, 1) \
             ON CONFLICT (directory_id) DO UPDATE SET full_requested = 1",
        )
        .bind(directory_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Applies one batch and its cursor in one transaction: after a crash either both are there or
    /// neither is, so the agent resumes exactly where the stored cursor says.
    pub async fn apply_sync_batch(
        &self,
        directory: &DirectoryName,
        batch: &SyncBatch,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let directory_id = self.directory_id(directory).await?;
        let generation = i64::try_from(batch.cursor.generation).unwrap_or(i64::MAX);
        let mut transaction = self.begin_write().await?;
        let stored_generation: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM sync_state WHERE directory_id = $1")
                .bind(directory_id)
                .fetch_optional(&mut *transaction)
                .await?;
        let new_full_sync = matches!(batch.cursor.phase, SyncPhase::Full { .. })
            && stored_generation.is_none_or(|stored| stored < generation);
        if new_full_sync {
            sqlx::query("DELETE FROM sync_errors WHERE directory_id = $1")
                .bind(directory_id)
                .execute(&mut *transaction)
                .await?;
        }
        let mut upserted_users = Vec::new();
        for change in &batch.changes {
            match change {
                SyncChange::User(user) => {
                    upsert_user(&mut transaction, directory_id, user, generation, now).await?;
                    upserted_users.push(user);
                }
                SyncChange::Group(group) => {
                    upsert_group(&mut transaction, directory_id, group, generation, now).await?;
                }
                SyncChange::Members {
                    group,
                    members,
                    replace,
                } => {
                    if *replace {
                        sqlx::query(
                            "DELETE FROM synced_members WHERE directory_id = $1 AND group_anchor = $2",
                        )
                        .bind(directory_id)
                        .bind(group.to_string())
                        .execute(&mut *transaction)
                        .await?;
                    }
                    for member in members {
                        sqlx::query("INSERT INTO synced_members (directory_id, group_anchor, member_anchor) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(directory_id)
                            .bind(group.to_string())
                            .bind(member.to_string())
                            .execute(&mut *transaction)
                            .await?;
                    }
                }
                SyncChange::Remove { anchor } => {
                    remove_object(&mut transaction, directory_id, anchor).await?;
                }
                SyncChange::Present { anchors } => {
                    for anchor in anchors {
                        for table in ["synced_users", "synced_groups"] {
                            sqlx::query(&format!(
                                "UPDATE {table} SET generation = $1 WHERE directory_id = $2 AND anchor = $3"
                            ))
                            .bind(generation)
                            .bind(directory_id)
                            .bind(anchor.to_string())
                            .execute(&mut *transaction)
                            .await?;
                        }
                    }
                }
                SyncChange::Error { object, message } => {
                    record_error(
                        &mut transaction,
                        directory_id,
                        generation,
                        object,
                        message,
                        now,
                    )
                    .await?;
                }
            }
        }
        // Checked once the whole batch is in, so a rename and a reuse of the old name in the same
        // batch do not look like a conflict.
        for user in upserted_users {
            report_duplicate_names(
                &mut transaction,
                self.backend,
                directory_id,
                user,
                generation,
                now,
            )
            .await?;
        }
        if batch.completes_full_sync || batch.completes_reconciliation {
            for table in ["synced_users", "synced_groups"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE directory_id = $1 AND generation <> $2"
                ))
                .bind(directory_id)
                .bind(generation)
                .execute(&mut *transaction)
                .await?;
            }
            sqlx::query("DELETE FROM synced_members WHERE directory_id = $1 AND group_anchor NOT IN (SELECT anchor FROM synced_groups WHERE directory_id = $2)")
                .bind(directory_id)
                .bind(directory_id)
                .execute(&mut *transaction)
                .await?;
        }
        let cursor = serde_json::to_string(&batch.cursor).map_err(|error| {
            StoreError::Corrupt(format!("cannot encode a sync cursor: {error}"))
        })?;
        let changed = !batch.changes.is_empty();
        sqlx::query(
            "INSERT INTO sync_state (directory_id, cursor, generation, full_requested, last_full_started_at, last_full_completed_at, last_change_at, cursor_updated_at) \
             VALUES ($1, $2, $3, 0, $4, $5, $6, $7) \
             ON CONFLICT (directory_id) DO UPDATE SET \
               cursor = $2, generation = $3, \
               full_requested = CASE WHEN $4 IS NOT NULL THEN 0 ELSE sync_state.full_requested END, \
               last_full_started_at = COALESCE($4, sync_state.last_full_started_at), \
               last_full_completed_at = COALESCE($5, sync_state.last_full_completed_at), \
               last_change_at = COALESCE($6, sync_state.last_change_at), \
               cursor_updated_at = $7",
        )
        .bind(directory_id)
        .bind(cursor)
        .bind(generation)
        .bind(new_full_sync.then(|| millis(now)))
        .bind(batch.completes_full_sync.then(|| millis(now)))
        .bind(changed.then(|| millis(now)))
        .bind(millis(now))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn sync_status(
        &self,
        directory: &DirectoryName,
        now: UnixMillis,
    ) -> Result<SyncStatus, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        // One snapshot for every read: a batch committed between two of them would otherwise
        // show its users without the cursor stored with them.
        let mut read = self.pool.begin().await?;
        let state = sqlx::query("SELECT * FROM sync_state WHERE directory_id = $1")
            .bind(directory_id)
            .fetch_optional(&mut *read)
            .await?;
        let users = count_rows(&mut read, "synced_users", directory_id).await?;
        let groups = count_rows(&mut read, "synced_groups", directory_id).await?;
        let error_count = count_rows(&mut read, "sync_errors", directory_id).await?;
        let recent_errors = sqlx::query(
            "SELECT at, object, message FROM sync_errors WHERE directory_id = $1 ORDER BY id DESC LIMIT 20",
        )
        .bind(directory_id)
        .fetch_all(&mut *read)
        .await?
        .iter()
        .map(|row| SyncErrorView {
            at: from_millis(row.get("at")).unwrap_or(UnixMillis(0)),
            object: row.get("object"),
            message: row.get("message"),
        })
        .collect();
        let time = |name: &str| {
            state
                .as_ref()
                .and_then(|row| from_millis(row.get::<Option<i64>, _>(name)))
        };
        let cursor_updated_at = time("cursor_updated_at");
        Ok(SyncStatus {
            directory: directory.clone(),
            cursor: match &state {
                Some(row) => parse_cursor(row.get("cursor"))?,
                None => None,
            },
            full_sync_requested: state
                .as_ref()
                .is_some_and(|row| row.get::<i64, _>("full_requested") != 0),
            last_full_sync_started_at: time("last_full_started_at"),
            last_full_sync_completed_at: time("last_full_completed_at"),
            last_change_at: time("last_change_at"),
            cursor_updated_at,
            cursor_age_ms: cursor_updated_at
                .map(|at| u64::try_from(now.duration_since(at).as_millis()).unwrap_or(u64::MAX)),
            users: u64::try_from(users).unwrap_or(0),
            groups: u64::try_from(groups).unwrap_or(0),
            error_count: u64::try_from(error_count).unwrap_or(0),
            recent_errors,
        })
    }

    pub async fn search_users(
        &self,
        directory: &DirectoryName,
        query: &UserQuery,
    ) -> Result<Vec<DirectoryUser>, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        let group_anchor = match &query.group {
            Some(group) => match self.group_anchor(directory_id, group).await? {
                Some(anchor) => Some(anchor.to_string()),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let pattern = query.text.as_deref().map(contains_pattern);
        let [sam_account_name, user_principal_name, mail, display_name] = [
            "sam_account_name",
            "user_principal_name",
            "mail",
            "display_name",
        ]
        .map(|column| self.backend.like(column));
        let rows = sqlx::query(&format!(
            "WITH RECURSIVE groups_below (anchor, depth) AS ( \
                 SELECT $1, 0 WHERE $1 IS NOT NULL \
                 UNION SELECT member_anchor, depth + 1 FROM synced_members JOIN groups_below ON group_anchor = groups_below.anchor \
                   WHERE directory_id = $2 AND depth < {MAX_NESTING}) \
             SELECT {USER_COLUMNS} FROM synced_users WHERE directory_id = $2 \
               AND ($3 IS NULL OR {sam_account_name} $3 ESCAPE '\\' OR {user_principal_name} $3 ESCAPE '\\' \
                    OR {mail} $3 ESCAPE '\\' OR {display_name} $3 ESCAPE '\\') \
               AND ($1 IS NULL OR anchor IN (SELECT member_anchor FROM synced_members WHERE directory_id = $2 \
                    AND group_anchor IN (SELECT anchor FROM groups_below))) \
             ORDER BY sam_account_name LIMIT $4"
        ))
        .bind(group_anchor)
        .bind(directory_id)
        .bind(pattern)
        .bind(i64::from(query.limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// One user, by anchor, sAMAccountName, UPN or mail (case-insensitive), with its groups.
    /// `None` when nothing, or more than one user, matches.
    pub async fn user_detail(
        &self,
        directory: &DirectoryName,
        key: &str,
    ) -> Result<Option<DirectoryUserDetail>, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        let Some(user) = self.find_synced_user(directory_id, key).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(&format!(
            "WITH RECURSIVE memberships (group_anchor, depth) AS ( \
                 SELECT group_anchor, 1 FROM synced_members WHERE directory_id = $1 AND member_anchor = $2 \
                 UNION SELECT synced_members.group_anchor, depth + 1 FROM synced_members JOIN memberships \
                   ON synced_members.member_anchor = memberships.group_anchor \
                   WHERE synced_members.directory_id = $1 AND depth < {MAX_NESTING}) \
             SELECT synced_groups.anchor, synced_groups.name, MIN(depth) AS depth FROM memberships \
               JOIN synced_groups ON synced_groups.directory_id = $1 AND synced_groups.anchor = memberships.group_anchor \
             GROUP BY synced_groups.anchor, synced_groups.name ORDER BY synced_groups.name"
        ))
        .bind(directory_id)
        .bind(user.user.anchor.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut direct_groups = Vec::new();
        let mut nested_groups = Vec::new();
        for row in &rows {
            let group = GroupRef {
                anchor: anchor_column(row, "anchor")?,
                name: row.get("name"),
            };
            if row.get::<i64, _>("depth") == 1 {
                direct_groups.push(group);
            } else {
                nested_groups.push(group);
            }
        }
        Ok(Some(DirectoryUserDetail {
            user: user.user,
            last_synced_at: user.last_synced_at,
            direct_groups,
            nested_groups,
        }))
    }

    /// The one synced user an anchor, sAMAccountName, UPN or mail names, without its groups.
    pub async fn synced_user(
        &self,
        directory: &DirectoryName,
        key: &str,
    ) -> Result<Option<DirectoryUser>, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        self.find_synced_user(directory_id, key).await
    }

    /// The anchor of the one synced user a logon name (sAMAccountName or UPN) or anchor names.
    pub async fn resolve_user(
        &self,
        directory: &DirectoryName,
        key: &str,
    ) -> Result<Option<ObjectAnchor>, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        Ok(self
            .find_synced_user(directory_id, key)
            .await?
            .map(|user| user.user.anchor))
    }

    pub async fn search_groups(
        &self,
        directory: &DirectoryName,
        text: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DirectoryGroup>, StoreError> {
        let directory_id = self.directory_id(directory).await?;
        let rows = sqlx::query(&format!(
            "SELECT anchor, sid, name, distinguished_name, synced_at, \
               (SELECT COUNT(*) FROM synced_members WHERE synced_members.directory_id = synced_groups.directory_id AND group_anchor = anchor) AS direct_members \
             FROM synced_groups WHERE directory_id = $1 AND ($2 IS NULL OR {} $2 ESCAPE '\\') \
             ORDER BY name LIMIT $3",
            self.backend.like("name")
        ))
        .bind(directory_id)
        .bind(text.map(contains_pattern))
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DirectoryGroup {
                    group: SyncedGroup {
                        anchor: anchor_column(row, "anchor")?,
                        sid: row.get("sid"),
                        name: row.get("name"),
                        distinguished_name: row.get("distinguished_name"),
                    },
                    last_synced_at: from_millis(row.get("synced_at")).unwrap_or(UnixMillis(0)),
                    direct_members: u64::try_from(row.get::<i64, _>("direct_members")).unwrap_or(0),
                })
            })
            .collect()
    }

    pub(crate) async fn directory_id(&self, directory: &DirectoryName) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT id FROM directories WHERE name = $1")
            .bind(directory.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("directory {directory}")))
    }

    async fn group_anchor(
        &self,
        directory_id: i64,
        key: &str,
    ) -> Result<Option<ObjectAnchor>, StoreError> {
        let rows = sqlx::query(
            "SELECT anchor FROM synced_groups WHERE directory_id = $1 AND (anchor = $2 OR name = $3) LIMIT 2",
        )
        .bind(directory_id)
        .bind(key.to_ascii_lowercase())
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        match rows.as_slice() {
            [row] => anchor_column(row, "anchor").map(Some),
            _ => Ok(None),
        }
    }

    async fn find_synced_user(
        &self,
        directory_id: i64,
        key: &str,
    ) -> Result<Option<DirectoryUser>, StoreError> {
        // One indexed lookup per way of naming a user; an OR across columns would make SQLite scan
        // the directory's users. The planner also needs telling which index serves the UPN. One
        // statement whatever the name names, so that a name that exists and one that does not
        // take the same work: the self-service portal must not reveal by its timing which names
        // exist. Two rows mean two users answer to the name, and none is chosen.
        let [by_sam, by_upn, by_mail] =
            ["synced_users_sam", "synced_users_upn", "synced_users_mail"]
                .map(|index| self.backend.indexed_by(index));
        let rows = sqlx::query(&format!(
            "WITH matches (anchor) AS ( \
               SELECT anchor FROM synced_users WHERE directory_id = $1 AND anchor = $2 \
               UNION SELECT anchor FROM synced_users {by_sam} WHERE directory_id = $1 AND sam_account_name = $3 \
               UNION SELECT anchor FROM synced_users {by_upn} WHERE directory_id = $1 AND user_principal_name = $3 \
               UNION SELECT anchor FROM synced_users {by_mail} WHERE directory_id = $1 AND mail = $3) \
             SELECT {USER_COLUMNS} FROM synced_users \
             WHERE directory_id = $1 AND anchor IN (SELECT anchor FROM matches) LIMIT 2",
        ))
        .bind(directory_id)
        .bind(key.to_ascii_lowercase())
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        match rows.as_slice() {
            [row] => user_from_row(row).map(Some),
            _ => Ok(None),
        }
    }
}

async fn count_rows(
    read: &mut Transaction<'_, sqlx::Any>,
    table: &str,
    directory_id: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {table} WHERE directory_id = $1"
    ))
    .bind(directory_id)
    .fetch_one(&mut **read)
    .await?)
}

fn parse_cursor(text: Option<String>) -> Result<Option<SyncCursor>, StoreError> {
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|error| StoreError::Corrupt(format!("stored sync cursor: {error}")))
    })
    .transpose()
}

async fn upsert_user(
    transaction: &mut Transaction<'_, sqlx::Any>,
    directory_id: i64,
    user: &SyncedUser,
    generation: i64,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let (expiry_kind, expires_at) = expiry_columns(user.password_expiry);
    sqlx::query(&format!(
        "INSERT INTO synced_users (directory_id, generation, {USER_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
           $19, $20) \
         ON CONFLICT (directory_id, anchor) DO UPDATE SET generation = excluded.generation, \
           sid = excluded.sid, sam_account_name = excluded.sam_account_name, \
           user_principal_name = excluded.user_principal_name, mail = excluded.mail, \
           display_name = excluded.display_name, given_name = excluded.given_name, \
           surname = excluded.surname, distinguished_name = excluded.distinguished_name, \
           enabled = excluded.enabled, locked_out = excluded.locked_out, \
           password_last_set = excluded.password_last_set, \
           must_change_password = excluded.must_change_password, \
           password_never_expires = excluded.password_never_expires, \
           protected = excluded.protected, synced_at = excluded.synced_at, \
           password_expiry = excluded.password_expiry, \
           password_expires_at = excluded.password_expires_at"
    ))
    .bind(directory_id)
    .bind(generation)
    .bind(user.anchor.to_string())
    .bind(&user.sid)
    .bind(&user.sam_account_name)
    .bind(&user.user_principal_name)
    .bind(&user.mail)
    .bind(&user.display_name)
    .bind(&user.given_name)
    .bind(&user.surname)
    .bind(&user.distinguished_name)
    .bind(i64::from(user.enabled))
    .bind(i64::from(user.locked_out))
    .bind(user.password_last_set.map(millis))
    .bind(i64::from(user.must_change_password))
    .bind(i64::from(user.password_never_expires))
    .bind(i64::from(user.protected))
    .bind(millis(now))
    .bind(expiry_kind)
    .bind(expires_at)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

async fn upsert_group(
    transaction: &mut Transaction<'_, sqlx::Any>,
    directory_id: i64,
    group: &SyncedGroup,
    generation: i64,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO synced_groups (directory_id, anchor, sid, name, distinguished_name, generation, synced_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (directory_id, anchor) DO UPDATE SET sid = excluded.sid, name = excluded.name, \
           distinguished_name = excluded.distinguished_name, generation = excluded.generation, \
           synced_at = excluded.synced_at",
    )
    .bind(directory_id)
    .bind(group.anchor.to_string())
    .bind(&group.sid)
    .bind(&group.name)
    .bind(&group.distinguished_name)
    .bind(generation)
    .bind(millis(now))
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

async fn remove_object(
    transaction: &mut Transaction<'_, sqlx::Any>,
    directory_id: i64,
    anchor: &ObjectAnchor,
) -> Result<(), StoreError> {
    let anchor = anchor.to_string();
    for statement in [
        "DELETE FROM synced_users WHERE directory_id = $1 AND anchor = $2",
        "DELETE FROM synced_groups WHERE directory_id = $1 AND anchor = $2",
        "DELETE FROM synced_members WHERE directory_id = $1 AND group_anchor = $2",
        "DELETE FROM synced_members WHERE directory_id = $1 AND member_anchor = $2",
    ] {
        sqlx::query(statement)
            .bind(directory_id)
            .bind(&anchor)
            .execute(&mut **transaction)
            .await?;
    }
    Ok(())
}

async fn record_error(
    transaction: &mut Transaction<'_, sqlx::Any>,
    directory_id: i64,
    generation: i64,
    object: &str,
    message: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sync_errors (directory_id, at, generation, object, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(directory_id)
    .bind(millis(now))
    .bind(generation)
    .bind(object)
    .bind(message)
    .execute(&mut **transaction)
    .await?;
    sqlx::query(
        "DELETE FROM sync_errors WHERE directory_id = $1 AND id <= \
         (SELECT id FROM sync_errors WHERE directory_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(directory_id)
    .bind(KEPT_SYNC_ERRORS)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// A UPN names one person; two users claiming it would make sign-in ambiguous. Both stay synced
/// (lookups by that UPN then find no single user), and the conflict is reported by name.
async fn report_duplicate_names(
    transaction: &mut Transaction<'_, sqlx::Any>,
    backend: Backend,
    directory_id: i64,
    user: &SyncedUser,
    generation: i64,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let Some(upn) = &user.user_principal_name else {
        return Ok(());
    };
    let others: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT distinguished_name FROM synced_users {} \
         WHERE directory_id = $1 AND user_principal_name = $2 AND anchor <> $3",
        backend.indexed_by("synced_users_upn")
    ))
    .bind(directory_id)
    .bind(upn)
    .bind(user.anchor.to_string())
    .fetch_all(&mut **transaction)
    .await?;
    if let Some(other) = others.first() {
        record_error(
            transaction,
            directory_id,
            generation,
            &user.distinguished_name,
            &format!("userPrincipalName {upn} is also used by {other}"),
            now,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_000_000);

    fn anchor(index: u8) -> ObjectAnchor {
        ObjectAnchor::from_bytes([index; 16])
    }

    fn user(index: u8, name: &str) -> SyncChange {
        SyncChange::User(SyncedUser {
            anchor: anchor(index),
            sid: Some(format!("S-1-5-21-1-2-3-{index}")),
            sam_account_name: name.into(),
            user_principal_name: Some(format!("{name}@corp.example.test")),
            mail: Some(format!("{name}@example.org")),
            display_name: Some(format!("User {name}")),
            given_name: None,
            surname: None,
            distinguished_name: format!("CN={name},OU=Staff,DC=corp"),
            enabled: true,
            locked_out: false,
            password_last_set: Some(NOW),
            must_change_password: false,
            password_never_expires: false,
            password_expiry: PasswordExpiry::Unknown,
            protected: false,
        })
    }

    fn group(index: u8, name: &str, members: &[u8]) -> Vec<SyncChange> {
        vec![
            SyncChange::Group(SyncedGroup {
                anchor: anchor(index),
                sid: None,
                name: name.into(),
                distinguished_name: format!("CN={name},OU=Staff,DC=corp"),
            }),
            SyncChange::Members {
                group: anchor(index),
                members: members.iter().copied().map(anchor).collect(),
                replace: true,
            },
        ]
    }

    pub(crate) fn batch(
        generation: u64,
        phase: SyncPhase,
        changes: Vec<SyncChange>,
        completes: bool,
    ) -> SyncBatch {
        SyncBatch {
            sequence: 1,
            changes,
            cursor: SyncCursor {
                server: "dc1".into(),
                generation,
                phase,
            },
            completes_full_sync: completes,
            completes_reconciliation: false,
        }
    }

    pub(crate) async fn with_directory(store: Store) -> (Store, DirectoryName) {
        let name: DirectoryName = "corp".parse().unwrap();
        store.ensure_directory(&name, NOW).await.unwrap();
        (store, name)
    }

    async fn names(store: &Store, directory: &DirectoryName, query: UserQuery) -> Vec<String> {
        store
            .search_users(
                directory,
                &UserQuery {
                    limit: 100,
                    ..query
                },
            )
            .await
            .unwrap()
            .into_iter()
            .map(|user| user.user.sam_account_name)
            .collect()
    }

    // A reconciliation keeps what it names and what deltas upserted in its generation, removes
    // the rest (users and groups, with the deleted groups' member lists), and is not a full sync.
    on_both_databases! {
        async fn a_reconciliation_removes_what_it_did_not_name_and_nothing_else(store: Store) {
            let (store, corp) = with_directory(store).await;
            let delta = SyncPhase::polled_from(10);
            let mut first = vec![user(1, "alice"), user(2, "bob"), user(3, "carol")];
            first.extend(group(7, "staff", &[1, 2]));
            first.extend(group(8, "gone", &[3]));
            store
                .apply_sync_batch(&corp, &batch(1, delta.clone(), first, true), NOW)
                .await
                .unwrap();
            let full_completed = store
                .sync_status(&corp, NOW)
                .await
                .unwrap()
                .last_full_sync_completed_at;
            // Generation 2: bob and the group "gone" were deleted where the agent could not see it;
            // dave arrived by a delta while the listing was sent.
            let present = SyncChange::Present {
                anchors: vec![anchor(1), anchor(3), anchor(7)],
            };
            let mut reconciliation = batch(2, delta.clone(), vec![present, user(4, "dave")], false);
            reconciliation.completes_reconciliation = true;
            store
                .apply_sync_batch(
                    &corp,
                    &reconciliation,
                    NOW.saturating_add(std::time::Duration::from_secs(60)),
                )
                .await
                .unwrap();
            assert_eq!(
                names(&store, &corp, UserQuery::default()).await,
                ["alice", "carol", "dave"]
            );
            let groups: Vec<String> = store
                .search_groups(&corp, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|group| group.group.name)
                .collect();
            assert_eq!(groups, ["staff"]);
            assert_eq!(
                store
                    .sync_status(&corp, NOW)
                    .await
                    .unwrap()
                    .last_full_sync_completed_at,
                full_completed,
                "a reconciliation is not a full sync"
            );
        }
    }

    on_both_databases! {
        async fn an_interrupted_full_sync_resumed_in_its_generation_ends_with_exactly_the_directory(store: Store) {
            let (store, corp) = with_directory(store).await;
            let full = SyncPhase::Full { start_usn: 10 };
            store
                .apply_sync_batch(
                    &corp,
                    &batch(
                        1,
                        full,
                        vec![user(1, "alice"), user(2, "bob"), user(3, "carol")],
                        false,
                    ),
                    NOW,
                )
                .await
                .unwrap();
            store
                .apply_sync_batch(
                    &corp,
                    &batch(1, SyncPhase::polled_from(10), vec![], true),
                    NOW,
                )
                .await
                .unwrap();
            // Generation 2: carol was deleted; the agent dies after the first batch and starts again.
            store.request_full_sync(&corp).await.unwrap();
            assert!(store.sync_start(&corp).await.unwrap().full);
            let full = SyncPhase::Full { start_usn: 20 };
            store
                .apply_sync_batch(
                    &corp,
                    &batch(2, full.clone(), vec![user(1, "alice")], false),
                    NOW,
                )
                .await
                .unwrap();
            let resumed = store.sync_start(&corp).await.unwrap();
            assert!(
                !resumed.full,
                "the request is taken once the full sync has begun"
            );
            assert_eq!(resumed.cursor.unwrap().phase, full.clone());
            store
                .apply_sync_batch(
                    &corp,
                    &batch(2, full, vec![user(1, "alice"), user(2, "bob")], false),
                    NOW,
                )
                .await
                .unwrap();
            store
                .apply_sync_batch(
                    &corp,
                    &batch(2, SyncPhase::polled_from(20), vec![], true),
                    NOW,
                )
                .await
                .unwrap();
            assert_eq!(
                names(&store, &corp, UserQuery::default()).await,
                ["alice", "bob"]
            );
            let status = store.sync_status(&corp, NOW).await.unwrap();
            assert_eq!(status.users, 2);
            assert!(status.last_full_sync_completed_at.is_some());
            assert!(!status.full_sync_requested);
        }
    }

    on_both_databases! {
        async fn nested_memberships_are_followed_and_cycles_end(store: Store) {
            let (store, corp) = with_directory(store).await;
            let mut changes = vec![user(1, "alice"), user(2, "bob")];
            changes.extend(group(10, "Staff", &[11, 2]));
            changes.extend(group(11, "Engineers", &[1, 12]));
            // A cycle: Platform contains Staff, which contains Engineers, which contains Platform.
            changes.extend(group(12, "Platform", &[10]));
            store
                .apply_sync_batch(
                    &corp,
                    &batch(1, SyncPhase::polled_from(5), changes, false),
                    NOW,
                )
                .await
                .unwrap();
            let alice = store.user_detail(&corp, "ALICE").await.unwrap().unwrap();
            let direct: Vec<_> = alice
                .direct_groups
                .iter()
                .map(|group| group.name.as_str())
                .collect();
            let nested: Vec<_> = alice
                .nested_groups
                .iter()
                .map(|group| group.name.as_str())
                .collect();
            assert_eq!(direct, ["Engineers"]);
            assert_eq!(nested, ["Platform", "Staff"]);
            let staff = UserQuery {
                group: Some("staff".into()),
                ..UserQuery::default()
            };
            assert_eq!(names(&store, &corp, staff).await, ["alice", "bob"]);

            // Engineers loses alice: she leaves Staff and Platform too.
            store
                .apply_sync_batch(
                    &corp,
                    &batch(
                        1,
                        SyncPhase::polled_from(6),
                        group(11, "Engineers", &[12]),
                        false,
                    ),
                    NOW,
                )
                .await
                .unwrap();
            let alice = store.user_detail(&corp, "alice").await.unwrap().unwrap();
            assert!(alice.direct_groups.is_empty() && alice.nested_groups.is_empty());
        }
    }

    on_both_databases! {
        async fn a_duplicate_upn_is_reported_by_name_and_the_rest_still_syncs(store: Store) {
            let (store, corp) = with_directory(store).await;
            let mut twin = user(2, "alice2");
            if let SyncChange::User(twin) = &mut twin {
                twin.user_principal_name = Some("ALICE@corp.example.test".into());
            }
            let changes = vec![
                user(1, "alice"),
                twin,
                SyncChange::Error {
                    object: "CN=ghost,OU=Staff,DC=corp".into(),
                    message: "the object has no readable objectGUID".into(),
                },
                user(3, "carol"),
            ];
            store
                .apply_sync_batch(
                    &corp,
                    &batch(1, SyncPhase::polled_from(5), changes, false),
                    NOW,
                )
                .await
                .unwrap();
            let status = store.sync_status(&corp, NOW).await.unwrap();
            assert_eq!(status.users, 3);
            let objects: Vec<_> = status
                .recent_errors
                .iter()
                .map(|error| error.object.as_str())
                .collect();
            assert!(
                objects.contains(&"CN=ghost,OU=Staff,DC=corp"),
                "{objects:?}"
            );
            assert!(
                status
                    .recent_errors
                    .iter()
                    .any(|error| error.message.contains("alice@corp.example.test")
                        || error.message.contains("ALICE@corp.example.test")),
                "{:?}",
                status.recent_errors
            );
            assert_eq!(
                store
                    .resolve_user(&corp, "alice@corp.example.test")
                    .await
                    .unwrap(),
                None,
                "ambiguous"
            );
            assert_eq!(
                store.resolve_user(&corp, "alice").await.unwrap(),
                Some(anchor(1))
            );
        }
    }

    on_both_databases! {
        async fn removals_renames_and_search_text_with_like_metacharacters(store: Store) {
            let (store, corp) = with_directory(store).await;
            store
                .apply_sync_batch(
                    &corp,
                    &batch(
                        1,
                        SyncPhase::polled_from(5),
                        vec![user(1, "alice"), user(2, "a_b"), user(3, "a%c")],
                        false,
                    ),
                    NOW,
                )
                .await
                .unwrap();
            let text = |text: &str| UserQuery {
                text: Some(text.into()),
                ..UserQuery::default()
            };
            assert_eq!(names(&store, &corp, text("_")).await, ["a_b"]);
            assert_eq!(names(&store, &corp, text("%")).await, ["a%c"]);
            assert_eq!(names(&store, &corp, text("example.org")).await.len(), 3);

            let renamed = user(1, "alicia");
            store
                .apply_sync_batch(
                    &corp,
                    &batch(
                        1,
                        SyncPhase::polled_from(6),
                        vec![renamed, SyncChange::Remove { anchor: anchor(2) }],
                        false,
                    ),
                    NOW,
                )
                .await
                .unwrap();
            assert_eq!(
                names(&store, &corp, UserQuery::default()).await,
                ["a%c", "alicia"]
            );
            assert_eq!(
                store.resolve_user(&corp, "alicia").await.unwrap(),
                Some(anchor(1))
            );
            assert_eq!(
                store
                    .resolve_user(&corp, &anchor(1).to_string().to_uppercase())
                    .await
                    .unwrap(),
                Some(anchor(1))
            );
            assert_eq!(store.resolve_user(&corp, "alice").await.unwrap(), None);
        }
    }
}
