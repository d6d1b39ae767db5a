//! `cargo xtask`: the project's own commands (matklad/cargo-xtask).
//!
//! * `test`: what CI runs: format check, clippy, build, every test, then a scan of every log the
//!   tests wrote for every password the tests used.
//! * `demo`: a throwaway Samba AD domain, the cloud and a registered agent, left running.
//! * `bench writeback`: direct LDAP resets against end-to-end resets, side by side.
//! * `bench sync`: a full sync of N users against the same paged search done directly, and the
//!   delay before a directory change reaches the cloud.
//! * `bench portal`: every self-service portal page, timed beside a static file's floor.
//! * `bench screening`: lookups in a filter of breached passwords beside a hash set of the same
//!   hashes, its bytes per entry and its measured false-positive rate.
//! * `package`: Debian packages of the cloud and the agent, from a release build, into
//!   `target/packages`.
//! * `common-passwords`: rebuilds the built-in filter of common passwords from the lists the
//!   `passwords` and `zxcvbn` crates ship.
//! * `fuzz [--minutes N]`: the property tests of every parser of untrusted input (the
//!   `properties` modules), over and over with many more cases and fresh seeds, for N minutes
//!   (10 by default). `test` runs them too, with [`TEST_CASES`] cases each.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Features that only tests build: the agent's kill points (the `fail` crate), which the crash
/// tests stop it at. Building and testing with the same features keeps one agent binary.
const TEST_FEATURES: &str = "writeback-agent/kill-points";

/// Cases per property in `cargo xtask test`: enough to catch the obvious in seconds.
const TEST_CASES: u32 = 256;
/// Cases per property and run in `cargo xtask fuzz`.
const FUZZ_CASES: u32 = 20_000;

const BENCH_USAGE: &str = "writeback [--iterations N] | bench sync [--users N] [--changes N] | bench portal [--rounds N] | bench cluster [--iterations N] [--agents N] [--idle-only] | bench screening [--entries N]";

/// Errors end the run with their chain of causes and no backtrace, so that the last lines of a
/// failed CI run are what failed, not how xtask returned.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match arguments.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("demo") => run_devtool(&root, "writeback-demo", &arguments[1..], false),
        Some("bench") => {
            let rest = &arguments[1..];
            match rest.first().map(String::as_str) {
                Some("writeback") => run_devtool(&root, "writeback-bench", rest, true),
                Some("cluster") => run_devtool(&root, "writeback-cluster-bench", rest, true),
                Some("sync") => run_devtool(&root, "writeback-sync-bench", rest, true),
                Some("portal") => run_devtool(&root, "writeback-portal-bench", rest, true),
                Some("screening") => run_devtool(&root, "writeback-screening-bench", rest, true),
                _ => bail!("usage: cargo xtask bench {BENCH_USAGE}"),
            }
        }
        Some("package") => run_devtool(&root, "writeback-package", &arguments[1..], true),
        Some("common-passwords") => {
            run_devtool(&root, "writeback-common-passwords", &arguments[1..], true)
        }
        Some("fuzz") => fuzz(&root, &arguments[1..]),
        Some("scan-logs") => scan_logs(&root.join("target")).map(|_| ()),
        _ => {
            eprintln!(
                "usage: cargo xtask <test | demo | bench {BENCH_USAGE} | package | common-passwords | fuzz [--minutes N] | scan-logs>"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives inside the workspace")
}

fn cargo(root: &Path, arguments: &[&str]) -> Result<()> {
    let started = Instant::now();
    eprintln!("==> cargo {}", arguments.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(arguments)
        .current_dir(root)
        .status()
        .with_context(|| format!("running cargo {}", arguments.join(" ")))?;
    eprintln!("    ({:.1} s)", started.elapsed().as_secs_f64());
    if !status.success() {
        bail!("cargo {} failed ({status})", arguments.join(" "));
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    let started = Instant::now();
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The end-to-end tests start the real binaries, so they must exist first; the agent with its
    // kill points, for the crash tests.
    cargo(
        root,
        &[
            "build",
            "--workspace",
            "--bins",
            "--features",
            TEST_FEATURES,
        ],
    )?;
    let target = root.join("target");
    install_schemathesis(&target)?;
    for directory in ["test-logs", "test-secrets"] {
        let path = target.join(directory);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("clearing {}", path.display()))?;
        }
        std::fs::create_dir_all(&path)?;
    }
    let tests = run_tests_teed(root, &target.join("test-logs/cargo-test.log"));
    let scanned = scan_logs(&target);
    tests?;
    scanned?;
    eprintln!(
        "==> all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The schemathesis version the API conformance test runs, pinned so that a new release cannot
/// change what the test checks.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Installs schemathesis from PyPI into its own virtual environment under `target/tools`, once.
fn install_schemathesis(target: &Path) -> Result<()> {
    let environment = target.join("tools/schemathesis");
    if environment.join("bin/schemathesis").exists() {
        return Ok(());
    }
    eprintln!(
        "==> installing {SCHEMATHESIS} into {}",
        environment.display()
    );
    let run = |program: &Path, arguments: &[&str]| -> Result<()> {
        let status = Command::new(program)
            .args(arguments)
            .status()
            .with_context(|| format!("running {}", program.display()))?;
        if !status.success() {
            bail!(
                "{} {} failed ({status})",
                program.display(),
                arguments.join(" ")
            );
        }
        Ok(())
    };
    let environment_text = environment.display().to_string();
    run(Path::new("python3"), &["-m", "venv", &environment_text])?;
    run(
        &environment.join("bin/pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ],
    )
}

/// Runs `cargo test --workspace`, echoing its output and keeping a copy among the logs.
fn run_tests_teed(root: &Path, log: &Path) -> Result<()> {
    let started = Instant::now();
    eprintln!("==> cargo test --workspace");
    eprintln!("    property tests run {TEST_CASES} cases each");
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--features",
            TEST_FEATURES,
        ])
        .current_dir(root)
        .env("RUST_BACKTRACE", "1")
        .env("PROPTEST_CASES", TEST_CASES.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut copy = std::fs::File::create(log)?;
    let mut failures = FailureSummary::default();
    let stderr = child.stderr.take().context("no stderr")?;
    let stderr_copy = log.with_extension("stderr.log");
    let stderr_thread = std::thread::spawn(move || -> std::io::Result<()> {
        let mut copy = std::fs::File::create(stderr_copy)?;
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            eprintln!("{line}");
            writeln!(copy, "{line}")?;
        }
        Ok(())
    });
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        writeln!(copy, "{line}")?;
        failures.read(&line);
    }
    let status = child.wait()?;
    let _ = stderr_thread.join();
    eprintln!("    ({:.1} s)", started.elapsed().as_secs_f64());
    if !status.success() {
        failures.print();
        bail!("tests failed ({status})");
    }
    Ok(())
}

/// What failed in a `cargo test` run, read from its output as it passes: each failed test's
/// name and the first line of its panic, printed again at the end where they cannot be missed.
#[derive(Default)]
struct FailureSummary {
    failed: Vec<String>,
    panics: Vec<String>,
    panic_follows: bool,
}

impl FailureSummary {
    fn read(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failed.push(name.to_owned());
        }
        if self.panic_follows {
            self.panics.push(line.to_owned());
            self.panic_follows = false;
        } else if line.starts_with("thread '") && line.contains(" panicked at ") {
            self.panics.push(line.to_owned());
            self.panic_follows = true;
        }
    }

    fn print(&self) {
        eprintln!("==> {} failed tests:", self.failed.len());
        for name in &self.failed {
            eprintln!("    {name}");
        }
        for line in &self.panics {
            eprintln!("    {line}");
        }
    }
}

/// Runs every `properties` module of the workspace's libraries again and again, with
/// [`FUZZ_CASES`] cases per property and a fresh random seed each run, until `--minutes` have
/// passed or a property fails (proptest then prints the smallest failing input).
fn fuzz(root: &Path, arguments: &[String]) -> Result<()> {
    let minutes: u64 = match arguments {
        [] => 10,
        [flag, value] if flag == "--minutes" => value
            .parse()
            .context("--minutes takes a whole number of minutes")?,
        _ => bail!("usage: cargo xtask fuzz [--minutes N]"),
    };
    cargo(root, &["test", "--workspace", "--lib", "--no-run"])?;
    let started = Instant::now();
    let deadline = std::time::Duration::from_secs(minutes * 60);
    let mut runs = 0u64;
    while started.elapsed() < deadline {
        runs += 1;
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["test", "--quiet", "--workspace", "--lib", "properties::"])
            .current_dir(root)
            .env("PROPTEST_CASES", FUZZ_CASES.to_string())
            .status()
            .context("running the property tests")?;
        if !status.success() {
            bail!("a property failed in run {runs}; its smallest failing input is printed above");
        }
        eprintln!(
            "==> run {runs}: every property held for {FUZZ_CASES} cases ({:.0} s so far)",
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "==> {runs} runs of {FUZZ_CASES} cases per property, no failure, in {minutes} minutes"
    );
    Ok(())
}

/// Fails if any password listed under `target/test-secrets/` appears in any file under
/// `target/test-logs/`. Returns how many passwords were checked.
fn scan_logs(target: &Path) -> Result<usize> {
    let mut secrets = BTreeSet::new();
    for file in files_under(&target.join("test-secrets"))? {
        for line in std::fs::read_to_string(&file)?.lines() {
            // Passwords shorter than 4 characters would match by accident; the tests use none.
            if line.chars().count() >= 4 {
                secrets.insert(line.to_owned());
            }
        }
    }
    let logs = files_under(&target.join("test-logs"))?;
    let mut bytes = 0usize;
    let mut leaks = Vec::new();
    for file in &logs {
        let contents = std::fs::read(file)?;
        bytes += contents.len();
        for secret in &secrets {
            if contains(&contents, secret.as_bytes()) {
                leaks.push(format!("{} contains a test password", file.display()));
            }
        }
    }
    eprintln!(
        "==> secret scan: {} test passwords against {} log files ({} KiB)",
        secrets.len(),
        logs.len(),
        bytes / 1024
    );
    if secrets.is_empty() || logs.is_empty() {
        bail!("the secret scan had nothing to check: no passwords or no logs were recorded");
    }
    if !leaks.is_empty() {
        bail!("passwords found in logs:\n  {}", leaks.join("\n  "));
    }
    eprintln!("    no password appears in any log");
    Ok(secrets.len())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

fn files_under(directory: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if !directory.exists() {
        return Ok(files);
    }
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Builds the binaries the developer program starts, then runs it.
fn run_devtool(root: &Path, binary: &str, arguments: &[String], release: bool) -> Result<()> {
    let mut build = vec!["build", "--workspace", "--bins"];
    if release {
        build.push("--release");
    }
    cargo(root, &build)?;
    let profile = if release { "release" } else { "debug" };
    let status = Command::new(root.join("target").join(profile).join(binary))
        .args(arguments)
        .current_dir(root)
        .status()
        .with_context(|| format!("running {binary}"))?;
    if !status.success() {
        bail!("{binary} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_each_failed_test_and_the_first_line_of_its_panic() {
        let mut failures = FailureSummary::default();
        for line in [
            "test a_passing_one ... ok",
            "test a_retry_writes_nothing_more ... FAILED",
            "---- a_retry_writes_nothing_more stdout ----",
            "thread 'a_retry_writes_nothing_more' (11646) panicked at tests/cluster.rs:293:5:",
            "assertion `left == right` failed: reused",
            "  left: RequestIdReused",
        ] {
            failures.read(line);
        }
        assert_eq!(failures.failed, ["a_retry_writes_nothing_more"]);
        assert_eq!(
            failures.panics,
            [
                "thread 'a_retry_writes_nothing_more' (11646) panicked at tests/cluster.rs:293:5:",
                "assertion `left == right` failed: reused",
            ]
        );
    }

    #[test]
    fn the_scan_finds_a_planted_password_and_passes_clean_logs() {
        let target = std::env::temp_dir().join(format!("xtask-scan-{}", std::process::id()));
        std::fs::create_dir_all(target.join("test-secrets")).unwrap();
        std::fs::create_dir_all(target.join("test-logs/nested")).unwrap();
        std::fs::write(target.join("test-secrets/a.txt"), "Wb-planted-Zq9!\n").unwrap();
        std::fs::write(
            target.join("test-logs/clean.log"),
            "{\"message\":\"reset done\"}\n",
        )
        .unwrap();
        assert_eq!(scan_logs(&target).unwrap(), 1);
        std::fs::write(
            target.join("test-logs/nested/agent.log"),
            "oops Wb-planted-Zq9! oops",
        )
        .unwrap();
        let error = scan_logs(&target).unwrap_err();
        assert!(error.to_string().contains("agent.log"), "{error}");
        std::fs::remove_dir_all(&target).unwrap();
    }
}
