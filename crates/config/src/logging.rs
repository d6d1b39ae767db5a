//! Logging set-up shared by the programs: JSON or text lines, to standard error or a file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line) or `text`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `writeback_agent=debug,info`.
    pub level: String,
    /// Append to this file instead of standard error.
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "json".into(),
            level: "info".into(),
            file: None,
        }
    }
}

/// Libraries that print whole messages at debug or trace level. An agent's registration frame
/// carries its token, so these stay at `info` whatever level is configured.
const CAPPED: &[&str] = &[
    "tungstenite=info",
    "tokio_tungstenite=info",
    "hyper=info",
    "ldap3=info",
    "rustls=info",
];

/// The filter for `level`, with [`CAPPED`] libraries held at `info`.
pub fn filter(level: &str) -> Result<EnvFilter, ConfigError> {
    let mut filter = EnvFilter::try_new(level)
        .map_err(|error| ConfigError::Logging(format!("invalid level {level:?}: {error}")))?;
    for directive in CAPPED {
        let directive = directive
            .parse()
            .map_err(|error| ConfigError::Logging(format!("{directive}: {error}")))?;
        filter = filter.add_directive(directive);
    }
    Ok(filter)
}

type MakeWriter = Box<dyn Fn() -> Box<dyn Write> + Send + Sync>;

/// Installs the process-wide subscriber described by `config`.
pub fn init_logging(config: &LogConfig) -> Result<(), ConfigError> {
    let writer: MakeWriter = match &config.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
            let file = Arc::new(file);
            Box::new(move || Box::new(file.clone()) as Box<dyn Write>)
        }
        None => Box::new(|| Box::new(std::io::stderr()) as Box<dyn Write>),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&config.level)?)
        .with_writer(writer);
    let installed = match config.format.as_str() {
        "json" => builder.json().try_init(),
        "text" => builder.try_init(),
        other => {
            return Err(ConfigError::Logging(format!(
                "log.format must be json or text, not {other:?}"
            )));
        }
    };
    installed.map_err(|error| ConfigError::Logging(error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_level_does_not_open_up_libraries_that_print_whole_messages() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter("trace,tungstenite=trace").unwrap())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "tungstenite::protocol", "writing frame wbr_registration_token");
            tracing::trace!(target: "writeback_agent", "agent detail at trace");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("wbr_registration_token"), "{text}");
        assert!(text.contains("agent detail at trace"), "{text}");
    }

    #[test]
    fn an_invalid_level_or_format_is_an_error() {
        assert!(filter("x=notalevel").is_err());
        let config = LogConfig {
            format: "xml".into(),
            ..LogConfig::default()
        };
        assert!(init_logging(&config).is_err());
    }
}
