//! Where a test run's logs and secrets go, so that `cargo xtask test` can check afterwards that no
//! password used by any test appears in any log.
//!
//! * `target/test-logs/`: every log of the run: each test process's own (JSON, debug level), each
//!   agent process's, and the test runner's output.
//! * `target/test-secrets/`: one file per test process listing every password it used.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

/// The profile directory (`target/debug` or `target/release`) the running executable belongs to:
/// test binaries live in its `deps/`, the product's binaries in it directly.
fn profile_directory() -> Result<PathBuf> {
    let executable = std::env::current_exe()?;
    executable
        .ancestors()
        .find(|ancestor| {
            ancestor
                .file_name()
                .is_some_and(|name| name == "debug" || name == "release")
        })
        .map(PathBuf::from)
        .context("cannot find target/debug or target/release above the running executable")
}

/// The Cargo target directory.
pub fn target_directory() -> Result<PathBuf> {
    profile_directory()?
        .parent()
        .map(PathBuf::from)
        .context("the profile directory has no parent")
}

/// A binary of the product, built beside the running executable.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = profile_directory()?.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    Ok(path)
}

pub fn logs_directory() -> Result<PathBuf> {
    let directory = target_directory()?.join("test-logs");
    std::fs::create_dir_all(&directory)?;
    Ok(directory)
}

pub fn secrets_directory() -> Result<PathBuf> {
    let directory = target_directory()?.join("test-secrets");
    std::fs::create_dir_all(&directory)?;
    Ok(directory)
}

fn process_label() -> String {
    let executable = std::env::current_exe().ok();
    let name = executable
        .as_ref()
        .and_then(|path| path.file_stem())
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "test".into());
    format!("{name}-{}", std::process::id())
}

/// This process's own log file, as [`init`] names it.
pub fn own_log() -> Result<PathBuf> {
    Ok(logs_directory()?.join(format!("{}.log", process_label())))
}

/// Sends this process's `tracing` output (debug level for our crates) to its log file. Idempotent.
pub fn init() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let Ok(directory) = logs_directory() else {
            return;
        };
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(directory.join(format!("{}.log", process_label())))
        else {
            return;
        };
        let file = std::sync::Arc::new(file);
        let filter = tracing_subscriber::EnvFilter::new(
            "info,writeback_cloud=debug,writeback_testkit=debug,writeback_directory=debug",
        );
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(move || file.clone())
            .try_init();
    });
}

/// Records `password` as used by this test run, and returns it.
pub fn remember_secret(password: &str) -> String {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let directory = secrets_directory().ok()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(directory.join(format!("{}.txt", process_label())))
            .ok()
            .map(Mutex::new)
    });
    if let Some(file) = file
        && let Ok(mut file) = file.lock()
    {
        let _ = writeln!(file, "{password}");
    }
    password.to_owned()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::getrandom(&mut bytes);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{count}", u32::from_le_bytes(bytes))
}

/// A new strong password, unique to this run, so finding it in a log proves a leak.
pub fn strong_password() -> String {
    remember_secret(&format!("Wb-{}-Zq9!", unique_suffix()))
}

/// A password that breaks a rule on purpose, still unique to this run.
pub fn password_like(template: &str) -> String {
    remember_secret(&template.replace("{unique}", &unique_suffix()))
}

/// A unique sAMAccountName (at most 20 characters) starting with `prefix`.
pub fn unique_user(prefix: &str) -> String {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = format!("{prefix}{count}");
    name.truncate(20);
    name
}
