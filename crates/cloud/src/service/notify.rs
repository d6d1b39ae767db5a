//! Mail: one-time codes for the portal, and notices after a password is reset or changed. Sending
//! never holds up an answer: mail goes out on its own task, so a slow or absent mail server
//! cannot make a page slow, and the time a page takes cannot tell whether mail was sent.

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::service::error::CloudError;

/// One message. The body is plain text and never holds a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(Outbox),
}

/// Mail kept in memory instead of sent: what a [`Mailer::outbox`] mailer was given, in order.
#[derive(Debug, Clone, Default)]
pub struct Outbox(std::sync::Arc<std::sync::Mutex<Vec<Mail>>>);

impl Outbox {
    fn keep(&self, mail: Mail) {
        if let Ok(mut messages) = self.0.lock() {
            messages.push(mail);
        }
    }

    /// Every message so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        self.0
            .lock()
            .map(|messages| messages.clone())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The configured mailer; `None` when no SMTP host is set.
    pub fn from_config(config: &SmtpConfig) -> Result<Option<Self>, CloudError> {
        let Some(host) = &config.host else {
            return Ok(None);
        };
        let invalid = |what: &str, error: &dyn std::fmt::Display| {
            CloudError::InvalidInput(format!("smtp.{what}: {error}"))
        };
        let builder = match config.security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|error| invalid("host", &error))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|error| invalid("host", &error))?,
        };
        let mut builder = builder.port(config.port);
        if let Some(username) = &config.username {
            let password = match &config.password_file {
                Some(path) => writeback_config::read_secret_file(path)
                    .map_err(|error| invalid("password_file", &error))?,
                None => {
                    return Err(CloudError::InvalidInput(
                        "smtp.username is set but smtp.password_file is not".into(),
                    ));
                }
            };
            builder = builder.credentials(Credentials::new(
                username.clone(),
                secrecy::ExposeSecret::expose_secret(&password).to_owned(),
            ));
        }
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|error| invalid("from", &error))?;
        Ok(Some(Self {
            transport: Transport::Smtp(builder.build()),
            from,
        }))
    }

    /// A mailer that keeps every message in the returned [`Outbox`] instead of sending it.
    pub fn outbox() -> Result<(Self, Outbox), CloudError> {
        let outbox = Outbox::default();
        let from = "writeback@localhost"
            .parse::<Mailbox>()
            .map_err(|error| CloudError::Internal(error.to_string()))?;
        let mailer = Self {
            transport: Transport::Outbox(outbox.clone()),
            from,
        };
        Ok((mailer, outbox))
    }

    /// Sends `mail` on a task of its own; a failure is logged, never shown.
    pub fn send_later(&self, mail: Mail) {
        if let Transport::Outbox(outbox) = &self.transport {
            outbox.keep(mail);
            return;
        }
        let mailer = self.clone();
        tokio::spawn(async move {
            if let Err(error) = mailer.send(&mail).await {
                tracing::warn!(%error, subject = %mail.subject, "mail could not be sent");
            }
        });
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), CloudError> {
        let to = mail
            .to
            .parse::<Mailbox>()
            .map_err(|error| CloudError::InvalidInput(format!("mail recipient: {error}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .body(mail.body.clone())
            .map_err(|error| CloudError::Internal(format!("building mail: {error}")))?;
        match &self.transport {
            Transport::Smtp(transport) => {
                transport
                    .send(message)
                    .await
                    .map_err(|error| CloudError::Internal(format!("sending mail: {error}")))?;
            }
            Transport::Outbox(outbox) => outbox.keep(mail.clone()),
        }
        tracing::info!(subject = %mail.subject, "mail sent");
        Ok(())
    }
}

/// Whether `text` looks like one mailbox address that mail can be sent to.
pub fn is_mail_address(text: &str) -> bool {
    text.len() <= 254 && !text.contains(['<', '>', ',', ' ']) && text.parse::<Mailbox>().is_ok()
}

/// One text. The body holds a one-time code and is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct TextMessage {
    /// In international format, `+` and digits only.
    pub to: String,
    pub body: String,
}

impl std::fmt::Debug for TextMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TextMessage(..)")
    }
}

/// Where text messages go: the SMS provider's client (`outbound::sms`), kept behind this port so
/// that the use cases know no HTTP.
pub trait TextMessages: Send + Sync + std::fmt::Debug {
    /// Sends `text` on a task of its own; a failure is logged, never shown.
    fn send_later(&self, text: TextMessage);
}

/// A mobile number as typed, in international format: `+`, the country code and the number, with
/// spaces, dashes, dots and brackets allowed between digits. Returns `+` and the digits.
pub fn normalize_phone_number(text: &str) -> Result<String, &'static str> {
    const PROBLEM: &str =
        "Type the number in international format: + and the country code, e.g. +44 7700 900123.";
    let text = text.trim();
    let Some(rest) = text.strip_prefix('+') else {
        return Err(PROBLEM);
    };
    let mut digits = String::from("+");
    for character in rest.chars() {
        match character {
            '0'..='9' => digits.push(character),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(PROBLEM),
        }
    }
    // E.164: at most 15 digits; no country's mobile numbers are shorter than 8 in all.
    let count = digits.len() - 1;
    if !(8..=15).contains(&count) || digits.starts_with("+0") {
        return Err(PROBLEM);
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_single_addresses_are_accepted() {
        assert!(is_mail_address("jane.doe@example.com"));
        assert!(!is_mail_address("Jane <jane@example.com>"));
        assert!(!is_mail_address("a@example.com, b@example.com"));
        assert!(!is_mail_address("not an address"));
    }

    #[test]
    fn without_a_host_there_is_no_mailer() {
        assert!(
            Mailer::from_config(&SmtpConfig::default())
                .unwrap()
                .is_none()
        );
        let wrong = SmtpConfig {
            host: Some("127.0.0.1".into()),
            security: SmtpSecurity::None,
            from: "not a mailbox".into(),
            ..SmtpConfig::default()
        };
        assert!(Mailer::from_config(&wrong).is_err());
    }

    #[test]
    fn numbers_are_kept_in_international_format_only() {
        assert_eq!(
            normalize_phone_number(" +44 (7700) 900-123 ").unwrap(),
            "+447700900123"
        );
        assert_eq!(
            normalize_phone_number("+1.555.010.9999").unwrap(),
            "+15550109999"
        );
        for wrong in [
            "07700 900123",
            "+44 7700 9001x3",
            "+0 7700 900123",
            "+1234",
            "+1234567890123456",
            "+44 7700 900123; rm",
            "",
        ] {
            assert!(normalize_phone_number(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_text_message_never_shows_its_body_in_debug_output() {
        let text = TextMessage {
            to: "+447700900123".into(),
            body: "Your code is 123456".into(),
        };
        let shown = format!("{text:?}");
        assert!(
            !shown.contains("123456") && !shown.contains("7700"),
            "{shown}"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn a_phone_number_is_normalized_to_plus_and_digits_or_refused(typed in "\\PC{0,40}") {
                if let Ok(number) = normalize_phone_number(&typed) {
                    prop_assert!(number.starts_with('+'));
                    prop_assert!(number[1..].chars().all(|c| c.is_ascii_digit()));
                    prop_assert_eq!(normalize_phone_number(&number), Ok(number.clone()));
                }
            }

            #[test]
            fn any_text_is_a_mail_address_or_not(typed in "\\PC{0,300}") {
                let _ = is_mail_address(&typed);
            }
        }
    }
}
