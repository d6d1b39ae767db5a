//! Layered configuration for the three programs: built-in defaults, then a TOML file, then
//! `WRITEBACK_<PROGRAM>_*` environment variables, then command-line flags. The merged result is
//! deserialized into the program's one configuration struct, which denies unknown fields, so a
//! typo is an error that names the key instead of a setting silently ignored.
//!
//! Secrets are never configuration values: the configuration names a file that holds the secret,
//! read with [`read_secret_file`].
//!
//! [`LogConfig`] and [`init_logging`] are the logging section and set-up every program shares.

pub mod command_line;
mod logging;
pub mod metrics;
pub mod system_log;

pub use logging::{LogConfig, init_logging, system_log_target};

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use toml::{Table, Value};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("{path} is empty; it should hold the secret")]
    EmptySecret { path: PathBuf },
    #[error("logging: {0}")]
    Logging(String),
}

/// Where configuration values come from, beyond the defaults.
#[derive(Debug, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// Environment variables, e.g. `std::env::vars()`; only those with the prefix are used.
    pub environment: Vec<(String, String)>,
    /// Dotted keys set by command-line flags, e.g. `("directory.url", "ldaps://dc1")`.
    pub flags: Vec<(String, Value)>,
}

/// Loads `T` from its defaults and `sources`. `environment_prefix` is e.g. `WRITEBACK_AGENT_`;
/// `WRITEBACK_AGENT_DIRECTORY__URL` sets `directory.url` (a double underscore nests).
pub fn load<T>(sources: &Sources, environment_prefix: &str) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut merged = match Value::try_from(T::default()) {
        Ok(Value::Table(table)) => table,
        Ok(_) => return Err(ConfigError::Invalid("the defaults are not a table".into())),
        Err(error) => {
            return Err(ConfigError::Invalid(format!(
                "the defaults do not serialize: {error}"
            )));
        }
    };
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: Table = text
            .parse()
            .map_err(|error: toml::de::Error| ConfigError::Parse {
                path: path.clone(),
                message: error.message().to_owned(),
            })?;
        merge(&mut merged, table);
    }
    for (name, raw) in &sources.environment {
        let Some(key) = name.strip_prefix(environment_prefix) else {
            continue;
        };
        let path: Vec<String> = key.split("__").map(str::to_lowercase).collect();
        set(&mut merged, &path, environment_value(raw));
    }
    for (key, value) in &sources.flags {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        set(&mut merged, &path, value.clone());
    }
    Value::Table(merged)
        .try_into()
        .map_err(|error: toml::de::Error| ConfigError::Invalid(error.message().to_owned()))
}

/// An environment value as TOML when it reads as a number, boolean or array; otherwise a string.
fn environment_value(raw: &str) -> Value {
    let looks_structured =
        raw.parse::<i64>().is_ok() || raw == "true" || raw == "false" || raw.starts_with('[');
    if looks_structured
        && let Ok(table) = format!("value = {raw}").parse::<Table>()
        && let Some(value) = table.get("value")
    {
        return value.clone();
    }
    Value::String(raw.to_owned())
}

fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(nested)) => merge(existing, nested),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        let Value::Table(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert(last.clone(), value);
}

/// Reads a secret from a file, dropping one trailing newline.
pub fn read_secret_file(path: &Path) -> Result<SecretString, ConfigError> {
    let mut text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(ConfigError::EmptySecret {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::from(text))
}

/// Writes `contents` to `path` so that only the owner can read it (mode 0600), replacing any
/// previous contents, and flushes it to disk. For keys, tokens and sessions.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a new file; an existing one may have been readable by others.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        listen: String,
        workers: u32,
        verbose: bool,
        allowed: Vec<String>,
        directory: Nested,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        url: String,
        timeout_seconds: u64,
    }

    impl Default for Example {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:8443".into(),
                workers: 2,
                verbose: false,
                allowed: vec![],
                directory: Nested::default(),
            }
        }
    }

    impl Default for Nested {
        fn default() -> Self {
            Self {
                url: "ldaps://localhost".into(),
                timeout_seconds: 10,
            }
        }
    }

    fn temporary_file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("writeback-config-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn each_layer_overrides_the_one_before() {
        let file = temporary_file(
            "layers.toml",
            "workers = 4\nverbose = true\n[directory]\nurl = \"ldaps://from-file\"\n",
        );
        let sources = Sources {
            file: Some(file.clone()),
            environment: vec![
                ("WRITEBACK_TEST_WORKERS".into(), "8".into()),
                (
                    "WRITEBACK_TEST_DIRECTORY__URL".into(),
                    "ldaps://from-env".into(),
                ),
                (
                    "WRITEBACK_TEST_ALLOWED".into(),
                    r#"["OU=A", "OU=B"]"#.into(),
                ),
                ("UNRELATED".into(), "x".into()),
            ],
            flags: vec![(
                "directory.url".into(),
                Value::String("ldaps://from-flag".into()),
            )],
        };
        let loaded: Example = load(&sources, "WRITEBACK_TEST_").unwrap();
        std::fs::remove_file(file).unwrap();
        assert_eq!(loaded.listen, "127.0.0.1:8443");
        assert_eq!(loaded.workers, 8);
        assert!(loaded.verbose);
        assert_eq!(loaded.allowed, vec!["OU=A".to_owned(), "OU=B".to_owned()]);
        assert_eq!(loaded.directory.url, "ldaps://from-flag");
        assert_eq!(loaded.directory.timeout_seconds, 10);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let file = temporary_file("unknown.toml", "wokers = 4\n");
        let error = load::<Example>(
            &Sources {
                file: Some(file.clone()),
                ..Sources::default()
            },
            "X_",
        )
        .unwrap_err();
        std::fs::remove_file(file).unwrap();
        assert!(error.to_string().contains("wokers"), "{error}");
        let sources = Sources {
            environment: vec![("WRITEBACK_TEST_DIRECTORY__URLL".into(), "x".into())],
            ..Sources::default()
        };
        let error = load::<Example>(&sources, "WRITEBACK_TEST_").unwrap_err();
        assert!(error.to_string().contains("urll"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let sources = Sources {
            file: Some("/nonexistent/writeback.toml".into()),
            ..Sources::default()
        };
        let error = load::<Example>(&sources, "X_").unwrap_err();
        assert!(error.to_string().contains("/nonexistent/writeback.toml"));
    }

    #[test]
    fn private_files_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let file = temporary_file("private", "previous contents, readable by all");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&file, b"key").unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"key");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn secret_files_lose_one_trailing_newline_and_must_not_be_empty() {
        use secrecy::ExposeSecret;
        let file = temporary_file("secret", "p@ss word\n");
        assert_eq!(
            read_secret_file(&file).unwrap().expose_secret(),
            "p@ss word"
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            read_secret_file(&file),
            Err(ConfigError::EmptySecret { .. })
        ));
        std::fs::remove_file(file).unwrap();
    }
}
