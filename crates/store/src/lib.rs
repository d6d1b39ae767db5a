//! The cloud's persistent state, in SQLite (WAL) under the data directory. The only crate that
//! knows SQL. Every time is passed in by the caller; secrets arrive already hashed.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use thiserror::Error;
use writeback_proto::identity::IdentityPublicKey;
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::time::UnixMillis;

mod administrators;
mod audit;
mod rate_limits;
mod sealed;
mod self_service;
mod sync;
pub use administrators::{Administrator, AdministratorSummary, SignInChallenge, TotpState};
pub use audit::{AuditEntry, AuditEvent, AuditFilter, AuditOutcome};
pub use rate_limits::{LONGEST_WINDOW, Limit, Reservation, Reserved};
pub use sealed::SecretOwner;
pub use self_service::{MethodOwner, RegisteredMethod};
pub use sync::UserQuery;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot prepare the database file {0}")]
    Io(String),
    #[error("refused: {0}")]
    Refused(String),
}

/// Migrations compiled into the binary, applied in order at start.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (
        2,
        "directory sync",
        include_str!("../migrations/0002_directory_sync.sql"),
    ),
    (
        3,
        "operations",
        include_str!("../migrations/0003_operations.sql"),
    ),
    (
        4,
        "second factor",
        include_str!("../migrations/0004_second_factor.sql"),
    ),
    (
        5,
        "self-service methods",
        include_str!("../migrations/0005_self_service_methods.sql"),
    ),
    (
        6,
        "rate limits",
        include_str!("../migrations/0006_rate_limits.sql"),
    ),
    (
        7,
        "administrators",
        include_str!("../migrations/0007_administrators.sql"),
    ),
    (
        8,
        "operation traces",
        include_str!("../migrations/0008_operation_traces.sql"),
    ),
];

#[derive(Debug)]
struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRecord {
    pub id: i64,
    pub name: DirectoryName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub agent_id: AgentId,
    pub name: String,
    pub version: String,
    pub identity_key: IdentityPublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub agent_id: AgentId,
    pub directory: DirectoryName,
    pub name: String,
    pub version: String,
    pub identity_key: IdentityPublicKey,
    pub registered_at: UnixMillis,
    pub last_connected_at: Option<UnixMillis>,
    pub last_heartbeat_at: Option<UnixMillis>,
    pub last_error: Option<String>,
    /// Revoked agents stay listed, for the record, and are refused at every connection.
    pub revoked_at: Option<UnixMillis>,
    pub last_address: Option<String>,
}

/// Creates `path` 0600 if it is missing, and makes it and its WAL files 0600.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |error: std::io::Error| StoreError::Io(format!("{}: {error}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}

/// A connection that can only read `path`, which must exist.
async fn open_read_only(path: &Path) -> Result<SqlitePool, StoreError> {
    if !path.is_file() {
        return Err(StoreError::NotFound(format!(
            "the database {}",
            path.display()
        )));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

/// Whether `pool` holds a whole Writeback database this version knows.
async fn check_backup(pool: &SqlitePool, source: &Path) -> Result<(), StoreError> {
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(pool)
        .await
        .map_err(|error| StoreError::Corrupt(format!("{}: {error}", source.display())))?;
    if verdict != "ok" {
        return Err(StoreError::Corrupt(format!(
            "{} fails SQLite's integrity check: {verdict}",
            source.display()
        )));
    }
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(|error| {
                StoreError::Corrupt(format!(
                    "{} is not a Writeback database: {error}",
                    source.display()
                ))
            })?;
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    let newest = newest.unwrap_or(0);
    if newest > known {
        return Err(StoreError::Refused(format!(
            "{} comes from a newer Writeback (schema {newest}, this one knows up to {known}); restore it with that version",
            source.display()
        )));
    }
    Ok(())
}

/// Copies the database of `pool` into the new file `destination`, or leaves nothing there.
async fn copy_into(pool: &SqlitePool, destination: &Path) -> Result<(), StoreError> {
    create_new_owner_only(destination)?;
    let target = destination
        .to_str()
        .ok_or_else(|| StoreError::Io(format!("{}: not UTF-8", destination.display())))?;
    let copied = sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(pool)
        .await;
    if let Err(error) = copied {
        // Nothing half-written stays behind under a name that looks like a database.
        let _ = std::fs::remove_file(destination);
        return Err(error.into());
    }
    Ok(())
}

/// Creates `path` empty and readable by its owner only; an existing file is refused.
fn create_new_owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::Refused(format!(
                "{} already exists; move it away or choose another file",
                path.display()
            )),
            _ => StoreError::Io(format!("{}: {error}", path.display())),
        })
}

pub(crate) fn millis(value: UnixMillis) -> i64 {
    i64::try_from(value.0).unwrap_or(i64::MAX)
}

pub(crate) fn from_millis(value: Option<i64>) -> Option<UnixMillis> {
    value.map(|millis| UnixMillis(u64::try_from(millis).unwrap_or(0)))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending migrations. The
    /// database is readable by its owner only: it is created 0600 before SQLite opens it, so the
    /// WAL and shared-memory files SQLite makes beside it take the same mode, and an existing one
    /// (with its WAL) is made 0600 too.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        owner_only(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        Self::connect(options).await
    }

    /// A consistent copy of the database at `database` in `destination`, taken while the cloud
    /// runs: SQLite's `VACUUM INTO` reads one snapshot, on a read-only connection that changes
    /// nothing. The file is new and readable by its owner only; an existing one is refused,
    /// never overwritten.
    pub async fn back_up(database: &Path, destination: &Path) -> Result<(), StoreError> {
        let pool = open_read_only(database).await?;
        let copied = copy_into(&pool, destination).await;
        pool.close().await;
        copied
    }

    /// Puts the backup at `source` in place as a new database at `database`, which must not
    /// exist yet. The backup is checked whole first (`PRAGMA integrity_check`) and must not come
    /// from a newer Writeback, whose schema this one does not know; pending migrations apply at
    /// the next start.
    pub async fn restore(source: &Path, database: &Path) -> Result<(), StoreError> {
        let pool = open_read_only(source).await?;
        let checked = check_backup(&pool, source).await;
        let copied = match checked {
            Ok(()) => copy_into(&pool, database).await,
            Err(error) => Err(error),
        };
        pool.close().await;
        copied
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let in_memory = options.get_filename() == Path::new(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection.
            .max_connections(if in_memory { 1 } else { 4 })
            // A local file has no connection to go stale; the default ping before every query
            // only adds a round trip to the connection's worker thread.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Migrator::new(EmbeddedMigrations).await?.run(&pool).await?;
        Ok(Self { pool })
    }

    /// A transaction that holds the write lock from its first statement. A deferred one that
    /// reads first would take a snapshot, and its first write would then fail at once ("database
    /// is locked", SQLITE_BUSY_SNAPSHOT) whenever another connection committed in between; this
    /// one waits its turn under the busy timeout instead.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The directory named `name`, created if it does not exist yet.
    pub async fn ensure_directory(
        &self,
        name: &DirectoryName,
        now: UnixMillis,
    ) -> Result<DirectoryRecord, StoreError> {
        sqlx::query("INSERT INTO directories (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name.as_str())
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        self.directory(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("directory {name} vanished after creation")))
    }

    pub async fn directory(
        &self,
        name: &DirectoryName,
    ) -> Result<Option<DirectoryRecord>, StoreError> {
        let row = sqlx::query("SELECT id FROM directories WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| DirectoryRecord {
            id: row.get("id"),
            name: name.clone(),
        }))
    }

    pub async fn create_registration_token(
        &self,
        token_hash: &[u8],
        directory_id: i64,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO registration_tokens (token_hash, directory_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(token_hash)
            .bind(directory_id)
            .bind(millis(now))
            .bind(millis(expires_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Redeems an unused, unexpired token and registers the agent, atomically: a token registers
    /// at most one agent, even when two agents race with it. `None` when the token is unknown,
    /// used or expired.
    pub async fn redeem_registration_token(
        &self,
        token_hash: &[u8],
        agent: &NewAgent,
        now: UnixMillis,
    ) -> Result<Option<DirectoryName>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE registration_tokens SET redeemed_at = ?, agent_id = ? \
             WHERE token_hash = ? AND redeemed_at IS NULL AND expires_at > ? \
             RETURNING directory_id",
        )
        .bind(millis(now))
        .bind(agent.agent_id.to_string())
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        let directory_id: i64 = claimed.get("directory_id");
        sqlx::query(
            "INSERT INTO agents (id, directory_id, name, version, identity_key, registered_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(agent.agent_id.to_string())
        .bind(directory_id)
        .bind(&agent.name)
        .bind(&agent.version)
        .bind(agent.identity_key.0.as_slice())
        .bind(millis(now))
        .execute(&mut *transaction)
        .await?;
        let name: String = sqlx::query("SELECT name FROM directories WHERE id = ?")
            .bind(directory_id)
            .fetch_one(&mut *transaction)
            .await?
            .get("name");
        transaction.commit().await?;
        parse_directory(&name).map(Some)
    }

    pub async fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let rows = self.agent_rows(Some(agent_id)).await?;
        Ok(rows.into_iter().next())
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agent_rows(None).await
    }

    async fn agent_rows(&self, only: Option<&AgentId>) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, d.name AS directory, a.name, a.version, a.identity_key, a.registered_at, \
             a.last_connected_at, a.last_heartbeat_at, a.last_error, a.revoked_at, a.last_address \
             FROM agents a JOIN directories d ON d.id = a.directory_id \
             WHERE (?1 IS NULL OR a.id = ?1) ORDER BY d.name, a.registered_at",
        )
        .bind(only.map(ToString::to_string))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.get("id");
                let key: Vec<u8> = row.get("identity_key");
                let key = <[u8; 32]>::try_from(key.as_slice())
                    .map_err(|_| StoreError::Corrupt(format!("identity key of agent {id}")))?;
                Ok(AgentRecord {
                    agent_id: id
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("agent id {id}")))?,
                    directory: parse_directory(&row.get::<String, _>("directory"))?,
                    name: row.get("name"),
                    version: row.get("version"),
                    identity_key: IdentityPublicKey(key),
                    registered_at: from_millis(Some(row.get("registered_at")))
                        .unwrap_or(UnixMillis(0)),
                    last_connected_at: from_millis(row.get("last_connected_at")),
                    last_heartbeat_at: from_millis(row.get("last_heartbeat_at")),
                    last_error: row.get("last_error"),
                    revoked_at: from_millis(row.get("revoked_at")),
                    last_address: row.get("last_address"),
                })
            })
            .collect()
    }

    /// Marks the agent revoked. `false` when no agent has this id; revoking twice keeps the first
    /// time.
    pub async fn revoke_agent(
        &self,
        agent_id: &AgentId,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE agents SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(millis(now))
                .bind(agent_id.to_string())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A setting's stored JSON, `None` when it was never set.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.get("value")))
    }

    pub async fn put_setting(
        &self,
        name: &str,
        value: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every directory, by name.
    pub async fn directories(&self) -> Result<Vec<DirectoryRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM directories ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DirectoryRecord {
                    id: row.get("id"),
                    name: parse_directory(&row.get::<String, _>("name"))?,
                })
            })
            .collect()
    }

    pub async fn record_agent_connected(
        &self,
        agent_id: &AgentId,
        version: &str,
        address: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET version = ?, last_address = ?, last_connected_at = ?, last_heartbeat_at = ?, last_error = NULL WHERE id = ?")
            .bind(version)
            .bind(address)
            .bind(millis(now))
            .bind(millis(now))
            .bind(agent_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn record_agent_heartbeat(
        &self,
        agent_id: &AgentId,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET last_heartbeat_at = ? WHERE id = ?")
            .bind(millis(now))
            .bind(agent_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn record_agent_error(
        &self,
        agent_id: &AgentId,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET last_error = ? WHERE id = ?")
            .bind(error)
            .bind(agent_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn parse_directory(name: &str) -> Result<DirectoryName, StoreError> {
    name.parse()
        .map_err(|_| StoreError::Corrupt(format!("directory name {name}")))
}

#[cfg(test)]
mod tests {
    use writeback_proto::identity::IdentityKeyPair;

    use super::*;

    const NOW: UnixMillis = UnixMillis(1_000_000);

    fn later(seconds: u64) -> UnixMillis {
        NOW.saturating_add(Duration::from_secs(seconds))
    }

    fn new_agent() -> NewAgent {
        NewAgent {
            agent_id: AgentId::generate().unwrap(),
            name: "dc-host".into(),
            version: "0.1.0".into(),
            identity_key: IdentityKeyPair::generate().unwrap().public_key(),
        }
    }

    fn scratch_directory(name: &str) -> std::path::PathBuf {
        let directory =
            std::env::temp_dir().join(format!("writeback-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[tokio::test]
    async fn a_backup_restores_into_a_new_database_with_everything_and_is_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let directory = scratch_directory("backup");
        let live = directory.join("live.db");
        let store = Store::open(&live).await.unwrap();
        store.put_setting("kept", "yes", NOW).await.unwrap();
        let backup = directory.join("backup.db");
        Store::back_up(&live, &backup).await.unwrap();
        assert_eq!(
            std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A backup is never written over, and nothing is touched when refused.
        let before = std::fs::read(&backup).unwrap();
        assert!(matches!(
            Store::back_up(&live, &backup).await,
            Err(StoreError::Refused(_))
        ));
        assert_eq!(std::fs::read(&backup).unwrap(), before);

        // With the cloud stopped as well as running.
        store.pool.close().await;
        Store::back_up(&live, &directory.join("stopped.db"))
            .await
            .unwrap();

        let restored_path = directory.join("restored.db");
        Store::restore(&backup, &restored_path).await.unwrap();
        assert!(matches!(
            Store::restore(&backup, &restored_path).await,
            Err(StoreError::Refused(_))
        ));
        let restored = Store::open(&restored_path).await.unwrap();
        assert_eq!(
            restored.setting("kept").await.unwrap().as_deref(),
            Some("yes")
        );
    }

    #[tokio::test]
    async fn a_damaged_or_foreign_file_is_refused_and_leaves_no_database_behind() {
        let directory = scratch_directory("refused");
        let target = directory.join("restored.db");
        let garbage = directory.join("garbage.db");
        std::fs::write(&garbage, b"this is not a database at all").unwrap();
        assert!(Store::restore(&garbage, &target).await.is_err());
        assert!(!target.exists());
        assert!(matches!(
            Store::restore(&directory.join("missing.db"), &target).await,
            Err(StoreError::NotFound(_))
        ));

        // A database of a newer Writeback, whose schema this one cannot know.
        let newer = directory.join("newer.db");
        let store = Store::open(&newer).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'future', TRUE, x'00', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.pool.close().await;
        assert!(matches!(
            Store::restore(&newer, &target).await,
            Err(StoreError::Refused(message)) if message.contains("newer Writeback")
        ));
        assert!(!target.exists());
    }

    #[tokio::test]
    async fn a_registration_token_registers_exactly_one_agent() {
        let store = Store::in_memory().await.unwrap();
        let directory = store
            .ensure_directory(&"corp".parse().unwrap(), NOW)
            .await
            .unwrap();
        store
            .create_registration_token(b"hash", directory.id, NOW, later(3600))
            .await
            .unwrap();

        let first = new_agent();
        let redeemed = store
            .redeem_registration_token(b"hash", &first, later(1))
            .await
            .unwrap();
        assert_eq!(redeemed, Some("corp".parse().unwrap()));
        assert_eq!(
            store
                .redeem_registration_token(b"hash", &new_agent(), later(2))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .redeem_registration_token(b"unknown", &new_agent(), later(2))
                .await
                .unwrap(),
            None
        );

        let agents = store.agents().await.unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].agent_id, first.agent_id);
        assert_eq!(agents[0].identity_key, first.identity_key);
    }

    #[tokio::test]
    async fn an_expired_registration_token_is_refused() {
        let store = Store::in_memory().await.unwrap();
        let directory = store
            .ensure_directory(&"corp".parse().unwrap(), NOW)
            .await
            .unwrap();
        store
            .create_registration_token(b"hash", directory.id, NOW, later(60))
            .await
            .unwrap();
        assert_eq!(
            store
                .redeem_registration_token(b"hash", &new_agent(), later(60))
                .await
                .unwrap(),
            None
        );
        assert!(store.agents().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn agent_health_is_recorded() {
        let store = Store::in_memory().await.unwrap();
        let directory = store
            .ensure_directory(&"corp".parse().unwrap(), NOW)
            .await
            .unwrap();
        store
            .create_registration_token(b"hash", directory.id, NOW, later(60))
            .await
            .unwrap();
        let agent = new_agent();
        store
            .redeem_registration_token(b"hash", &agent, NOW)
            .await
            .unwrap();
        store
            .record_agent_error(&agent.agent_id, "lost")
            .await
            .unwrap();
        store
            .record_agent_connected(&agent.agent_id, "0.2.0", Some("192.0.2.9"), later(5))
            .await
            .unwrap();
        store
            .record_agent_heartbeat(&agent.agent_id, later(35))
            .await
            .unwrap();
        let record = store.agent(&agent.agent_id).await.unwrap().unwrap();
        assert_eq!(record.version, "0.2.0");
        assert_eq!(record.last_connected_at, Some(later(5)));
        assert_eq!(record.last_heartbeat_at, Some(later(35)));
        assert_eq!(record.last_error, None);
        assert_eq!(record.revoked_at, None);
        assert_eq!(record.last_address.as_deref(), Some("192.0.2.9"));

        assert!(
            store
                .revoke_agent(&agent.agent_id, later(40))
                .await
                .unwrap()
        );
        assert!(
            store
                .revoke_agent(&agent.agent_id, later(50))
                .await
                .unwrap()
        );
        let record = store.agent(&agent.agent_id).await.unwrap().unwrap();
        assert_eq!(record.revoked_at, Some(later(40)));
        assert!(
            !store
                .revoke_agent(&AgentId::generate().unwrap(), later(40))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_write_transaction_that_reads_first_survives_a_concurrent_commit() {
        let directory =
            std::env::temp_dir().join(format!("writeback-store-write-lock-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("store.db");
        let _ = std::fs::remove_file(&path);
        let store = Store::open(&path).await.unwrap();
        let mut transaction = store.begin_write().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM administrators")
            .fetch_one(&mut *transaction)
            .await
            .unwrap();
        // Another connection writes while the transaction is open: it must wait, not overtake.
        let other = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_administrator("second@example.test", "hash", NOW)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("INSERT INTO administrators (email, password_hash, created_at) VALUES ('first@example.test', 'hash', 0)")
            .execute(&mut *transaction)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        other.await.unwrap().unwrap();
        assert!(
            store
                .administrator_by_email("first@example.test")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .administrator_by_email("second@example.test")
                .await
                .unwrap()
                .is_some()
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&directory);
    }

    #[tokio::test]
    async fn settings_are_stored_by_name() {
        let store = Store::in_memory().await.unwrap();
        assert_eq!(store.setting("audit").await.unwrap(), None);
        store
            .put_setting("audit", "{\"retention_days\":30}", NOW)
            .await
            .unwrap();
        store
            .put_setting("audit", "{\"retention_days\":90}", later(1))
            .await
            .unwrap();
        assert_eq!(
            store.setting("audit").await.unwrap().as_deref(),
            Some("{\"retention_days\":90}")
        );
    }
}
