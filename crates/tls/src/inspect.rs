//! What certificate a TLS server presents, read without trusting it: for the error an
//! administrator sees when a certificate is not trusted, which says what the server showed and the
//! exact setting (a pin) that would trust it.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection};
use rustls_pki_types::{CertificateDer, ServerName};
use x509_parser::extensions::GeneralName;

use crate::{EndEntityRule, EndEntityVerifier, Fingerprint, TlsError, provider};

/// The certificate a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCertificate {
    pub subject: String,
    /// Its subject alternative names (DNS names and addresses); empty when it has none, which
    /// is what a name check needs.
    pub names: Vec<String>,
    pub issuer: String,
    pub not_after: String,
    pub fingerprint: Fingerprint,
}

impl std::fmt::Display for PresentedCertificate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = if self.names.is_empty() {
            "none".to_owned()
        } else {
            self.names.join(", ")
        };
        write!(
            formatter,
            "subject {}; names {names}; issuer {}; valid until {}; SHA-256 fingerprint {}",
            self.subject, self.issuer, self.not_after, self.fingerprint
        )
    }
}

/// Connects to `host:port` (blocking, within `timeout`), completes a TLS handshake without
/// trusting anything, and describes the certificate the server presented.
pub fn presented_certificate(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<PresentedCertificate, TlsError> {
    let io = |error: std::io::Error| TlsError::Inspect(format!("{host}:{port}: {error}"));
    let seen = Arc::new(Mutex::new(None));
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EndEntityVerifier::new(EndEntityRule::Record(
            seen.clone(),
        ))))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|error| TlsError::Inspect(format!("{host}: {error}")))?;
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(io)?
        .next()
        .ok_or_else(|| TlsError::Inspect(format!("{host}:{port} resolves to no address")))?;
    let mut socket = TcpStream::connect_timeout(&address, timeout).map_err(io)?;
    socket.set_read_timeout(Some(timeout)).map_err(io)?;
    socket.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut connection = ClientConnection::new(Arc::new(config), name)?;
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).map_err(io)?;
    }
    connection.send_close_notify();
    let _ = connection.write_tls(&mut socket);
    let _ = socket.flush();
    let certificate = seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .ok_or_else(|| TlsError::Inspect(format!("{host}:{port} presented no certificate")))?;
    describe(&certificate)
}

/// The facts an administrator needs about one DER certificate.
pub fn describe(der: &[u8]) -> Result<PresentedCertificate, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| TlsError::Inspect(format!("unreadable certificate: {error}")))?;
    let names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .ok()
                            .map(|octets| std::net::Ipv4Addr::from(octets).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(|octets| std::net::Ipv6Addr::from(octets).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PresentedCertificate {
        subject: parsed.subject().to_string(),
        names,
        issuer: parsed.issuer().to_string(),
        not_after: parsed
            .validity()
            .not_after
            .to_rfc2822()
            .unwrap_or_else(|_| parsed.validity().not_after.to_string()),
        fingerprint: Fingerprint::of(&CertificateDer::from(der.to_vec())),
    })
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn a_certificate_is_described_by_its_names_issuer_and_fingerprint() {
        let pair = crate::self_signed_certificate(&["dc1.corp.example".into(), "127.0.0.1".into()])
            .unwrap();
        let der = CertificateDer::from_pem_slice(pair.certificate_pem.as_bytes()).unwrap();
        let described = describe(&der).unwrap();
        assert_eq!(described.names, ["dc1.corp.example", "127.0.0.1"]);
        assert_eq!(described.fingerprint, Fingerprint::of(&der));
        assert!(described.subject.contains("dc1.corp.example"));
        let shown = described.to_string();
        assert!(
            shown.contains(&described.fingerprint.to_string()),
            "{shown}"
        );

        let authority = crate::LocalCertificateAuthority::generate("Samba CA").unwrap();
        let bare = authority.issue_common_name_only("dc1").unwrap();
        let der = CertificateDer::from_pem_slice(bare.certificate_pem.as_bytes()).unwrap();
        let described = describe(&der).unwrap();
        assert!(described.names.is_empty());
        assert!(described.issuer.contains("Samba CA"));
        assert!(described.to_string().contains("names none"));
    }
}
