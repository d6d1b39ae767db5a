//! `cargo xtask common-passwords`: rebuilds the built-in filter of commonly used passwords
//! (`crates/policy/data/common-passwords.fuse`) from the lists two crates ship: the `passwords`
//! crate's list of common passwords and zxcvbn's own password list. Cargo says where their
//! sources are (`xtask/password-lists` names the versions); nothing is fetched by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use writeback_policy::screening::{FALSE_POSITIVE_RATE, ListHashing, PasswordFilter};

fn main() -> Result<()> {
    let root = std::env::current_dir()?;
    let sources = crate_sources(&root.join("xtask/password-lists/Cargo.toml"))?;
    let passwords_crate = source_of(&sources, "passwords")?;
    let zxcvbn_crate = source_of(&sources, "zxcvbn")?;

    let listed: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(passwords_crate.join("data/common-passwords.json"))
            .context("reading the passwords crate's list")?,
    )?;
    let zxcvbn_source = std::fs::read_to_string(zxcvbn_crate.join("src/frequency_lists.rs"))
        .context("reading zxcvbn's frequency lists")?;
    let zxcvbn_passwords = zxcvbn_source
        .split_once("const PASSWORDS: &str = \"")
        .and_then(|(_, rest)| rest.split_once("\";"))
        .map(|(list, _)| list)
        .context("zxcvbn's PASSWORDS list is not where it was")?;
    let zxcvbn_passwords = unescape(zxcvbn_passwords)?;

    let mut lowered: Vec<String> = listed
        .iter()
        .map(String::as_str)
        .chain(zxcvbn_passwords.split(','))
        .filter(|password| !password.is_empty())
        .map(str::to_lowercase)
        .collect();
    lowered.sort();
    lowered.dedup();
    let keys = lowered
        .iter()
        .map(|password| ListHashing::LowerCaseSha256.key(password))
        .collect();
    let filter = PasswordFilter::from_keys(ListHashing::LowerCaseSha256, keys)?;
    let bytes = filter.to_bytes();
    let output = root.join("crates/policy/data/common-passwords.fuse");
    std::fs::write(&output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "common-passwords passwords_crate={} zxcvbn={} entries={} bytes={} bytes_per_entry={:.3} false_positive_rate={:.6}%",
        listed.len(),
        zxcvbn_passwords.split(',').count(),
        filter.entries(),
        bytes.len(),
        bytes.len() as f64 / filter.entries() as f64,
        FALSE_POSITIVE_RATE * 100.0
    );
    Ok(())
}

/// The list as the Rust string literal means it: `\'`, `\"` and `\\` are the only escapes in it.
fn unescape(literal: &str) -> Result<String> {
    let mut text = String::with_capacity(literal.len());
    let mut characters = literal.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            text.push(character);
            continue;
        }
        match characters.next() {
            Some(escaped @ ('\'' | '"' | '\\')) => text.push(escaped),
            other => bail!(
                "zxcvbn's PASSWORDS list has an escape this reader does not expect: {other:?}"
            ),
        }
    }
    Ok(text)
}

/// Each package's source directory, from `cargo metadata` on the list manifest.
fn crate_sources(manifest: &Path) -> Result<serde_json::Value> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn source_of(metadata: &serde_json::Value, name: &str) -> Result<PathBuf> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == name)
        .and_then(|package| package["manifest_path"].as_str())
        .and_then(|manifest| Path::new(manifest).parent().map(Path::to_path_buf))
        .with_context(|| format!("cargo metadata does not list {name}"))
}
