//! Certificates and TLS configuration, shared by every program that opens or accepts a TLS
//! connection. All configurations use the `ring` provider explicitly; nothing installs a process-
//! wide default.
//!
//! Clients trust a peer in one of three ways ([`Trust`]): the system roots, a CA file (the usual
//! choice for a domain controller), or a pinned SHA-256 fingerprint of the exact certificate (the
//! usual choice for a cloud with a self-signed certificate).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use thiserror::Error;

mod inspect;
pub use inspect::{PresentedCertificate, describe, presented_certificate};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("invalid certificate fingerprint: expected 64 hexadecimal digits (colons allowed)")]
    Fingerprint,
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("no trusted root certificates: {0}")]
    NoRoots(String),
    #[error("cannot read the certificate the server presents: {0}")]
    Inspect(String),
}

/// A certificate and its private key, PEM encoded.
pub struct PemPair {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PemPair(..)")
    }
}

/// A self-signed certificate for `subject_names` (DNS names or IP addresses), for a cloud that has
/// no certificate of its own yet. Agents pin its fingerprint.
pub fn self_signed_certificate(subject_names: &[String]) -> Result<PemPair, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(subject_names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        subject_names.first().cloned().unwrap_or_default(),
    );
    let certificate = params.self_signed(&key)?;
    Ok(PemPair {
        certificate_pem: certificate.pem(),
        private_key_pem: key.serialize_pem(),
    })
}

/// A small certificate authority for test and demo domain controllers: Samba's own generated
/// certificate has no subject alternative name, which rustls rightly refuses.
pub struct LocalCertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl fmt::Debug for LocalCertificateAuthority {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("LocalCertificateAuthority(..)")
    }
}

impl LocalCertificateAuthority {
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            certificate_pem: certificate.pem(),
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A certificate with a common name and no subject alternative name, as Samba generates for
    /// itself when none is configured: what a name check refuses and a pin accepts.
    pub fn issue_common_name_only(&self, common_name: &str) -> Result<PemPair, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }

    pub fn issue(&self, subject_names: &[String]) -> Result<PemPair, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(subject_names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            subject_names.first().cloned().unwrap_or_default(),
        );
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certificates)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "private key",
    })
}

/// A server configuration from PEM files; HTTP/1.1 only, since that is what WebSocket upgrades use.
pub fn server_config(
    certificate_path: &Path,
    private_key_path: &Path,
) -> Result<ServerConfig, TlsError> {
    let certificates = load_certificates(certificate_path)?;
    let key = load_private_key(private_key_path)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A SHA-256 fingerprint of one DER certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(certificate: &CertificateDer<'_>) -> Self {
        Self(Sha256::digest(certificate.as_ref()).into())
    }

    /// The fingerprint of the first certificate in a PEM file.
    pub fn of_pem_file(path: &Path) -> Result<Self, TlsError> {
        let certificates = load_certificates(path)?;
        certificates
            .first()
            .map(Self::of)
            .ok_or_else(|| TlsError::Pem {
                path: path.to_owned(),
                what: "certificate",
            })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0
            .iter()
            .try_for_each(|byte| write!(formatter, "{byte:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = TlsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits: String = text
            .trim()
            .trim_start_matches("sha256:")
            .chars()
            .filter(|character| *character != ':')
            .collect();
        if digits.len() != 64 || !digits.is_ascii() {
            return Err(TlsError::Fingerprint);
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = digits
                .get(index * 2..index * 2 + 2)
                .ok_or(TlsError::Fingerprint)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| TlsError::Fingerprint)?;
        }
        Ok(Self(bytes))
    }
}

/// How a client decides to trust the server it connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    SystemRoots,
    CaFile(PathBuf),
    /// Exactly this certificate, whatever its issuer and names.
    Pinned(Fingerprint),
}

pub fn client_config(trust: &Trust) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::SystemRoots => {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(TlsError::NoRoots(format!(
                    "{} system certificates loaded",
                    added
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(load_certificates(path)?);
            if added == 0 {
                return Err(TlsError::Pem {
                    path: path.clone(),
                    what: "CA certificate",
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EndEntityVerifier::new(
                EndEntityRule::Pinned(*fingerprint),
            )))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// What the end-entity certificate of a server must be, the chain and names aside.
#[derive(Debug)]
enum EndEntityRule {
    /// Exactly this certificate.
    Pinned(Fingerprint),
    /// Any certificate, kept here: for describing what a server presents, never for trusting it.
    Record(Arc<std::sync::Mutex<Option<Vec<u8>>>>),
}

/// Checks the end-entity certificate by its rule alone. Handshake signatures are still
/// verified, so the peer must hold the certificate's private key.
#[derive(Debug)]
struct EndEntityVerifier {
    rule: EndEntityRule,
    algorithms: WebPkiSupportedAlgorithms,
}

impl EndEntityVerifier {
    fn new(rule: EndEntityRule) -> Self {
        Self {
            rule,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for EndEntityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.rule {
            EndEntityRule::Pinned(fingerprint) => {
                let presented = Fingerprint::of(end_entity);
                if presented != *fingerprint {
                    return Err(rustls::Error::General(format!(
                        "server certificate fingerprint {presented} does not match the pinned {fingerprint}"
                    )));
                }
            }
            EndEntityRule::Record(seen) => {
                *seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(end_entity.to_vec());
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons_and_prefix() {
        let fingerprint = Fingerprint([0xab; 32]);
        let plain = fingerprint.to_string();
        assert_eq!(plain.parse::<Fingerprint>().unwrap(), fingerprint);
        let colons = plain
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            format!("sha256:{colons}").parse::<Fingerprint>().unwrap(),
            fingerprint
        );
        assert!("abcd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn an_issued_certificate_names_its_subjects() {
        let authority = LocalCertificateAuthority::generate("Test CA").unwrap();
        let pair = authority
            .issue(&["dc1.example.test".into(), "127.0.0.9".into()])
            .unwrap();
        assert!(
            pair.certificate_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(pair.private_key_pem.contains("PRIVATE KEY"));
        assert!(
            authority
                .certificate_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}
