//! Logging set-up shared by the programs: JSON or text lines, to standard error or a file, and a
//! copy to the system journal or syslog.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::ConfigError;
use crate::system_log::{JOURNAL_SOCKET, SYSLOG_SOCKET, SystemLogFormat, SystemLogLayer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line) or `text`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `writeback_agent=debug,info`.
    pub level: String,
    /// Append to this file instead of standard error.
    pub file: Option<PathBuf>,
    /// Also send every event to the system journal (`journal`), to syslog (`syslog`), to
    /// whichever of the two this host has (`auto`), or to neither (`off`).
    pub system_log: String,
    /// The socket to send to, instead of the journal's or `/dev/log`.
    pub system_log_socket: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "json".into(),
            level: "info".into(),
            file: None,
            system_log: "auto".into(),
            system_log_socket: None,
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

/// Where `config` sends the system-log copy, if anywhere.
pub fn system_log_target(
    config: &LogConfig,
) -> Result<Option<(PathBuf, SystemLogFormat)>, ConfigError> {
    let present = |path: &str| Path::new(path).exists().then(|| PathBuf::from(path));
    let socket = |default: &str| {
        config
            .system_log_socket
            .clone()
            .or_else(|| present(default))
    };
    Ok(match config.system_log.as_str() {
        "off" => None,
        "journal" => socket(JOURNAL_SOCKET).map(|path| (path, SystemLogFormat::Journal)),
        "syslog" => socket(SYSLOG_SOCKET).map(|path| (path, SystemLogFormat::Syslog)),
        "auto" => socket(JOURNAL_SOCKET)
            .map(|path| (path, SystemLogFormat::Journal))
            .or_else(|| present(SYSLOG_SOCKET).map(|path| (path, SystemLogFormat::Syslog))),
        other => {
            return Err(ConfigError::Logging(format!(
                "log.system_log must be auto, journal, syslog or off, not {other:?}"
            )));
        }
    })
}

/// Installs the process-wide subscriber described by `config`: JSON or text lines, plus a copy to
/// the system journal or syslog when there is one.
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
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match config.format.as_str() {
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed(),
        "text" => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
        other => {
            return Err(ConfigError::Logging(format!(
                "log.format must be json or text, not {other:?}"
            )));
        }
    };
    let identifier = std::env::current_exe()
        .ok()
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "writeback".into());
    let system_log = match system_log_target(config)? {
        Some((path, format)) => Some(SystemLogLayer::connect(&path, format, &identifier).map_err(
            |error| {
                ConfigError::Logging(format!(
                    "cannot use the system log {}: {error}",
                    path.display()
                ))
            },
        )?),
        None => None,
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(system_log)
        .with(filter(&config.level)?)
        .try_init()
        .map_err(|error| ConfigError::Logging(error.to_string()))
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
        let config = LogConfig {
            system_log: "eventlog".into(),
            ..LogConfig::default()
        };
        assert!(init_logging(&config).is_err());
    }

    #[test]
    fn the_system_log_is_used_only_where_it_exists_unless_a_socket_is_named() {
        let off = LogConfig {
            system_log: "off".into(),
            system_log_socket: Some("/tmp/anything".into()),
            ..LogConfig::default()
        };
        assert_eq!(system_log_target(&off).unwrap(), None);
        let named = LogConfig {
            system_log: "syslog".into(),
            system_log_socket: Some("/tmp/writeback-test-log".into()),
            ..LogConfig::default()
        };
        assert_eq!(
            system_log_target(&named).unwrap(),
            Some(("/tmp/writeback-test-log".into(), SystemLogFormat::Syslog))
        );
        let auto = system_log_target(&LogConfig::default()).unwrap();
        let expected = if Path::new(JOURNAL_SOCKET).exists() {
            Some((PathBuf::from(JOURNAL_SOCKET), SystemLogFormat::Journal))
        } else if Path::new(SYSLOG_SOCKET).exists() {
            Some((PathBuf::from(SYSLOG_SOCKET), SystemLogFormat::Syslog))
        } else {
            None
        };
        assert_eq!(auto, expected);
    }
}
