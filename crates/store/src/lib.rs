//! The cloud's persistent state: SQLite (WAL) under the data directory for one node, or
//! PostgreSQL for several nodes that share it. The only crate that knows SQL. Every time is
//! passed in by the caller; secrets arrive already hashed.
//!
//! Both databases run the same statements through sqlx's `Any` driver, written in the SQL they
//! share (`$n` parameters, `ON CONFLICT`, `RETURNING`); [`Backend`] holds the few phrases that
//! differ. Each has its own migrations, because their column types and triggers differ.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor, Row, SqlitePool};
use thiserror::Error;
use writeback_proto::identity::IdentityPublicKey;
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::time::UnixMillis;

/// A store test, `async fn name(store: Store) { ... }`, made into the module `name` with two
/// tests: the body run on SQLite (in memory, or in a file where the test needs several
/// connections) and on a fresh database of the test binary's PostgreSQL server.
#[cfg(test)]
macro_rules! on_both_databases {
    (async fn $name:ident($store:ident: Store) $body:block) => {
        on_both_databases!(@module $name, $store, $body, $crate::Store::in_memory());
    };
    (async fn $name:ident($store:ident: Store) with a SQLite file $body:block) => {
        on_both_databases!(@module $name, $store, $body, $crate::testing::sqlite_file_store());
    };
    (@module $name:ident, $store:ident, $body:block, $sqlite:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($store: $crate::Store) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                run($sqlite.await.unwrap()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let server = $crate::postgres_server::PostgresServer::shared().unwrap();
                run(server.fresh_store().await.unwrap()).await
            }
        }
    };
}

#[cfg(test)]
mod testing {
    use crate::{Store, StoreError};

    /// A store in a new SQLite file of its own, with the connections a running cloud has.
    pub(crate) async fn sqlite_file_store() -> Result<Store, StoreError> {
        static FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let directory = std::env::temp_dir().join(format!(
            "writeback-store-test-{}-{}",
            std::process::id(),
            FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).map_err(|error| StoreError::Io(error.to_string()))?;
        Store::open(&directory.join("store.db")).await
    }
}

mod administrators;
mod audit;
pub mod bus;
mod expiry;
mod ledger;
mod portal;
#[cfg(any(test, feature = "test-postgres"))]
pub mod postgres_server;
mod rate_limits;
mod sealed;
mod self_service;
mod sync;
pub use administrators::{Administrator, AdministratorSummary, SignInChallenge, TotpState};
pub use audit::{AuditEntry, AuditEvent, AuditFilter, AuditOutcome};
pub use expiry::ExpiringPassword;
pub use ledger::LedgerRecord;
pub use portal::PortalEntry;
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

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `column` matched against a `LIKE` pattern, ignoring ASCII case as SQLite's `LIKE` does.
    /// PostgreSQL's case-insensitive columns use a nondeterministic collation, which `LIKE` does
    /// not take, so the match names a plain one.
    pub(crate) fn like(self, column: &str) -> String {
        match self {
            Backend::Sqlite => format!("{column} LIKE"),
            Backend::Postgres => format!("{column} COLLATE \"C\" ILIKE"),
        }
    }

    /// SQLite's planner needs telling to use `index` in a `UNION` of lookups; PostgreSQL finds
    /// it alone.
    pub(crate) fn indexed_by(self, index: &str) -> String {
        match self {
            Backend::Sqlite => format!("INDEXED BY {index}"),
            Backend::Postgres => String::new(),
        }
    }
}

type MigrationList = &'static [(i64, &'static str, &'static str)];

/// SQLite's migrations, compiled into the binary and applied in order at start.
const SQLITE_MIGRATIONS: MigrationList = &[
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
    (
        9,
        "portal entries",
        include_str!("../migrations/0009_portal_entries.sql"),
    ),
    (
        10,
        "request ledger",
        include_str!("../migrations/0010_request_ledger.sql"),
    ),
    (
        11,
        "password expiry",
        include_str!("../migrations/0011_password_expiry.sql"),
    ),
];

/// PostgreSQL's migrations. Its schema began at SQLite's eighth, in one step.
const POSTGRES_MIGRATIONS: MigrationList = &[
    (
        1,
        "schema of SQLite's eighth migration",
        include_str!("../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "portal entries",
        include_str!("../migrations/postgres/0002_portal_entries.sql"),
    ),
    (
        3,
        "request ledger",
        include_str!("../migrations/postgres/0003_request_ledger.sql"),
    ),
    (
        4,
        "password expiry",
        include_str!("../migrations/postgres/0004_password_expiry.sql"),
    ),
];

#[derive(Debug)]
struct EmbeddedMigrations(MigrationList);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
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

/// Every write transaction of a PostgreSQL store takes this advisory lock first, so that writes
/// are serialized as SQLite serializes them: a rate limit counted and reserved in one
/// transaction cannot be passed by two nodes at once.
const POSTGRES_WRITE_LOCK: i64 = 0x5772_6974_6562_6163;

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Where a PostgreSQL store's bus listeners connect.
    postgres_url: Option<std::sync::Arc<str>>,
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
    let known = SQLITE_MIGRATIONS
        .last()
        .map_or(0, |(version, _, _)| *version);
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
    let copied = sqlx::query("VACUUM INTO $1")
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

/// A 0-or-1 column as a flag: both databases hold flags as integers, so that one statement
/// serves both.
pub(crate) fn flag(row: &sqlx::any::AnyRow, name: &str) -> bool {
    row.get::<i64, _>(name) != 0
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
        sqlx::any::install_default_drivers();
        let file = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect_sqlite(AnyConnectOptions::from_url(&file.to_url_lossy())?, 4).await
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host/name`) and
    /// applies pending migrations. Every node of a cluster opens the same one.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(StoreError::Refused(
                "a database URL names PostgreSQL (postgres://...); SQLite is a file in the data directory".into(),
            ));
        }
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let mut store = Self::migrated(pool, Backend::Postgres).await?;
        store.postgres_url = Some(url.into());
        Ok(store)
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
        sqlx::any::install_default_drivers();
        // An in-memory database exists once per connection.
        Self::connect_sqlite(AnyConnectOptions::from_str("sqlite::memory:")?, 1).await
    }

    async fn connect_sqlite(
        options: AnyConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            // A local file has no connection to go stale; the default ping before every query
            // only adds a round trip to the connection's worker thread.
            .test_before_acquire(false)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                        )
                        .await
                        .map(drop)
                })
            })
            .connect_with(options)
            .await?;
        Self::migrated(pool, Backend::Sqlite).await
    }

    async fn migrated(pool: AnyPool, backend: Backend) -> Result<Self, StoreError> {
        let migrations = match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        Migrator::new(EmbeddedMigrations(migrations))
            .await?
            .run(&pool)
            .await?;
        Ok(Self {
            pool,
            backend,
            postgres_url: None,
        })
    }

    /// Closes the store's connections, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that holds the write lock from its first statement. On SQLite, a deferred
    /// one that reads first would take a snapshot, and its first write would then fail at once
    /// ("database is locked", SQLITE_BUSY_SNAPSHOT) whenever another connection committed in
    /// between; this one waits its turn under the busy timeout instead. On PostgreSQL it takes
    /// [`POSTGRES_WRITE_LOCK`], so that what it read stays true until it commits.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut transaction = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(POSTGRES_WRITE_LOCK)
                    .execute(&mut *transaction)
                    .await?;
                Ok(transaction)
            }
        }
    }

    /// The directory named `name`, created if it does not exist yet.
    pub async fn ensure_directory(
        &self,
        name: &DirectoryName,
        now: UnixMillis,
    ) -> Result<DirectoryRecord, StoreError> {
        sqlx::query("INSERT INTO directories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
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
        let row = sqlx::query("SELECT id FROM directories WHERE name = $1")
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
        sqlx::query("INSERT INTO registration_tokens (token_hash, directory_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
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
            "UPDATE registration_tokens SET redeemed_at = $1, agent_id = $2 \
             WHERE token_hash = $3 AND redeemed_at IS NULL AND expires_at > $4 \
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
            "INSERT INTO agents (id, directory_id, name, version, identity_key, registered_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(agent.agent_id.to_string())
        .bind(directory_id)
        .bind(&agent.name)
        .bind(&agent.version)
        .bind(agent.identity_key.0.as_slice())
        .bind(millis(now))
        .execute(&mut *transaction)
        .await?;
        let name: String = sqlx::query("SELECT name FROM directories WHERE id = $1")
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
             WHERE ($1 IS NULL OR a.id = $1) ORDER BY d.name, a.registered_at",
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
            sqlx::query("UPDATE agents SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(millis(now))
                .bind(agent_id.to_string())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A setting's stored JSON, `None` when it was never set.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
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
            "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
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
        sqlx::query("UPDATE agents SET version = $1, last_address = $2, last_connected_at = $3, last_heartbeat_at = $4, last_error = NULL WHERE id = $5")
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
        sqlx::query("UPDATE agents SET last_heartbeat_at = $1 WHERE id = $2")
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
        sqlx::query("UPDATE agents SET last_error = $1 WHERE id = $2")
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
    use std::time::Duration;

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

    on_both_databases! {
        async fn a_registration_token_registers_exactly_one_agent(store: Store) {
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
    }

    on_both_databases! {
        async fn an_expired_registration_token_is_refused(store: Store) {
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
    }

    on_both_databases! {
        async fn agent_health_is_recorded(store: Store) {
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

    on_both_databases! {
        async fn settings_are_stored_by_name(store: Store) {
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
}
