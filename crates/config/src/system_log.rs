//! A `tracing` layer that sends every event to the system journal (its native datagram protocol)
//! or to syslog (`/dev/log`), so administrators find Writeback's events with `journalctl` or in
//! their syslog, filtered by `EVENT_ID`, beside the JSON lines.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_SOCKET: &str = "/dev/log";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemLogFormat {
    /// systemd-journald's native protocol: one `FIELD=value` per line.
    Journal,
    /// RFC 3164 as local syslog daemons read it from `/dev/log`.
    Syslog,
}

#[derive(Debug)]
pub struct SystemLogLayer {
    socket: UnixDatagram,
    path: PathBuf,
    format: SystemLogFormat,
    identifier: String,
}

impl SystemLogLayer {
    pub fn connect(
        path: &Path,
        format: SystemLogFormat,
        identifier: &str,
    ) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self {
            socket,
            path: path.to_owned(),
            format,
            identifier: identifier.to_owned(),
        })
    }
}

/// The event's message and fields, in the order they were given.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.others.push((field.name().to_owned(), value));
        }
    }
}

fn journal_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A journal field; values with a newline use the protocol's length-prefixed form.
fn journal_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// Journal field names are upper-case letters, digits and underscores, starting with a letter.
fn journal_name(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if upper.starts_with(|character: char| character.is_ascii_alphabetic()) {
        upper
    } else {
        format!("F_{upper}")
    }
}

pub fn encode(
    format: SystemLogFormat,
    identifier: &str,
    level: &Level,
    target: &str,
    fields: &[(String, String)],
    message: &str,
) -> Vec<u8> {
    match format {
        SystemLogFormat::Journal => {
            let mut out = Vec::new();
            journal_field(&mut out, "MESSAGE", message);
            journal_field(&mut out, "PRIORITY", &journal_priority(level).to_string());
            journal_field(&mut out, "SYSLOG_IDENTIFIER", identifier);
            journal_field(&mut out, "TARGET", target);
            for (name, value) in fields {
                journal_field(&mut out, &journal_name(name), value);
            }
            out
        }
        SystemLogFormat::Syslog => {
            // Facility "daemon" (3).
            let priority = 3 * 8 + journal_priority(level);
            let mut line = format!(
                "<{priority}>{identifier}[{}]: {message}",
                std::process::id()
            );
            for (name, value) in fields {
                let _ = write!(line, " {name}={value}");
            }
            line.replace('\n', " ").into_bytes()
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for SystemLogLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let datagram = encode(
            self.format,
            &self.identifier,
            metadata.level(),
            metadata.target(),
            &fields.others,
            &fields.message,
        );
        // The system log is a second copy: losing it must not stop the program or its JSON log.
        if self.socket.send(&datagram).is_err() {
            let _ = self.socket.connect(&self.path);
            let _ = self.socket.send(&datagram);
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn receive_one(format: SystemLogFormat) -> String {
        let directory = std::env::temp_dir().join(format!(
            "writeback-system-log-{}-{format:?}",
            std::process::id()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("socket");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let layer = SystemLogLayer::connect(&path, format, "writeback-agent").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                event_id = 32002,
                reason = "the cloud closed\nthe connection",
                "connection to the cloud ended"
            );
        });
        let mut buffer = vec![0u8; 4096];
        let length = receiver.recv(&mut buffer).unwrap();
        let _ = std::fs::remove_dir_all(&directory);
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }

    #[test]
    fn journal_entries_carry_the_event_id_as_a_field() {
        let entry = receive_one(SystemLogFormat::Journal);
        assert!(
            entry.starts_with("MESSAGE=connection to the cloud ended\n"),
            "{entry:?}"
        );
        assert!(entry.contains("PRIORITY=4\n"));
        assert!(entry.contains("SYSLOG_IDENTIFIER=writeback-agent\n"));
        assert!(entry.contains("EVENT_ID=32002\n"));
        // A value with a newline is sent length-prefixed, as the protocol requires.
        let value = "the cloud closed\nthe connection";
        let mut expected = b"REASON\n".to_vec();
        expected.extend_from_slice(&(value.len() as u64).to_le_bytes());
        expected.extend_from_slice(value.as_bytes());
        assert!(
            entry
                .as_bytes()
                .windows(expected.len())
                .any(|window| window == expected),
            "{entry:?}"
        );
    }

    #[test]
    fn syslog_lines_have_priority_identifier_and_fields() {
        let line = receive_one(SystemLogFormat::Syslog);
        let expected = format!(
            "<28>writeback-agent[{}]: connection to the cloud ended event_id=32002 reason=the cloud closed the connection",
            std::process::id()
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn field_names_become_journal_names() {
        assert_eq!(journal_name("event_id"), "EVENT_ID");
        assert_eq!(journal_name("request.id"), "REQUEST_ID");
        assert_eq!(journal_name("_private"), "F__PRIVATE");
        assert_eq!(journal_name("9lives"), "F_9LIVES");
    }
}
