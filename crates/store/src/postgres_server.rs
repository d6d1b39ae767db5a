//! A throwaway PostgreSQL server for tests, from Debian's `postgresql` package: `initdb` in a
//! temporary directory, its own port on loopback, and a fresh database for each test. A
//! watchdog stops the server and removes its directory when the test process ends, however it
//! ends. Compiled for this crate's tests and, with the `test-postgres` feature, for others'.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{Store, StoreError};

/// A PostgreSQL server that lives as long as the test process.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    /// Holds the watchdog's standard input open; closing it stops the server.
    _watchdog: Mutex<Child>,
}

static SHARED: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The role the tests connect as; the server trusts loopback connections.
const ROLE: &str = "writeback";

fn failure(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("test PostgreSQL server: {what}: {detail}"))
}

impl PostgresServer {
    /// The test binary's server, started on first use.
    pub fn shared() -> Result<&'static PostgresServer, StoreError> {
        SHARED
            .get_or_init(|| Self::start().map_err(|error| error.to_string()))
            .as_ref()
            .map_err(|error| StoreError::Io(error.clone()))
    }

    /// Initialises a cluster in a new temporary directory and starts it, blocking until it
    /// accepts connections.
    pub fn start() -> Result<PostgresServer, StoreError> {
        let binaries = binaries()?;
        let directory = std::env::temp_dir().join(format!(
            "writeback-postgres-{}-{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory)
            .map_err(|error| failure("temporary directory", error))?;
        // PostgreSQL refuses to run as root: as root, it runs as the package's `postgres` user.
        let as_root = running_as_root();
        if as_root {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&directory))?;
        }
        let data = directory.join("data");
        run(as_server_user(as_root, &binaries.join("initdb"))
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", ROLE, "--auth", "trust", "--encoding", "UTF8"])
            .args(["--locale", "C.UTF-8", "--no-sync"]))?;
        let port = free_port()?;
        let watchdog = start_watchdog(&binaries, &directory, port, as_root)?;
        let server = PostgresServer {
            port,
            _watchdog: Mutex::new(watchdog),
        };
        server.wait_until_ready(&directory)?;
        Ok(server)
    }

    fn wait_until_ready(&self, directory: &Path) -> Result<(), StoreError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(directory.join("postgres.log")).unwrap_or_default();
                return Err(failure("did not accept connections within 60 s", log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database of its own, by URL.
    pub async fn fresh_database(&self) -> Result<String, StoreError> {
        use sqlx::Connection;
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut connection = loop {
            // The port opens a moment before the server takes connections.
            match sqlx::PgConnection::connect(&self.url("postgres")).await {
                Ok(connection) => break connection,
                Err(error) if Instant::now() > deadline => return Err(error.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        sqlx::Executor::execute(&mut connection, format!("CREATE DATABASE {name}").as_str())
            .await?;
        connection.close().await?;
        Ok(self.url(&name))
    }

    /// A store on a new database of its own.
    pub async fn fresh_store(&self) -> Result<Store, StoreError> {
        Store::open_postgres(&self.fresh_database().await?).await
    }
}

/// Where Debian installs the server's programs (the newest version), or else the `PATH`.
fn binaries() -> Result<PathBuf, StoreError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|directory| directory.join("initdb").is_file())
        .ok_or_else(|| failure("initdb not found", "install Debian's postgresql package"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

fn as_server_user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                "postgres",
                "--regid",
                "postgres",
                "--init-groups",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, StoreError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| failure("free port", error))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| failure("free port", error))
}

fn run(command: &mut Command) -> Result<(), StoreError> {
    let output = command
        .output()
        .map_err(|error| failure(&format!("{command:?}"), error))?;
    if output.status.success() {
        return Ok(());
    }
    Err(failure(
        &format!("{command:?}"),
        String::from_utf8_lossy(&output.stderr),
    ))
}

/// The watchdog starts the server, waits for its standard input to close, then stops the server
/// and removes its directory. It ignores the signals a terminal or `timeout` sends to a whole
/// process group: it must outlive its parent to clean up after it. Durability is off: the
/// cluster is thrown away.
fn start_watchdog(
    binaries: &Path,
    directory: &Path,
    port: u16,
    as_root: bool,
) -> Result<Child, StoreError> {
    let script = r#"$4 "$2/postgres" -D "$1/data" -p "$3" -h 127.0.0.1 -k "$1" \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
  >"$1/postgres.log" 2>&1 &
server=$!
trap '' INT HUP TERM
cat >/dev/null
kill -INT "$server" 2>/dev/null
wait "$server"
rm -rf "$1""#;
    let run_as = if as_root {
        "setpriv --reuid postgres --regid postgres --init-groups"
    } else {
        ""
    };
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(directory)
        .arg(binaries)
        .arg(port.to_string())
        .arg(run_as)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| failure("starting the watchdog", error))
}
