//! What to tell an administrator when the DC's certificate is not trusted: the certificate the
//! DC presented (subject, names, issuer, expiry, fingerprint) and the exact setting that would
//! trust it. Samba's own generated certificate has no subject alternative name, so no CA file
//! can make it valid for the DC's name; pinning it is the way short of issuing a new one.

use std::time::Duration;

/// Advice for `error`, met connecting to `url`, when it is a certificate the agent does not
/// trust; `None` for any other failure, or when the certificate cannot be read either.
pub async fn certificate_advice(url: &str, error: &str, timeout: Duration) -> Option<String> {
    if !error.contains("certificate") {
        return None;
    }
    let (host, port) = host_and_port(url)?;
    let presented = tokio::task::spawn_blocking(move || {
        writeback_tls::presented_certificate(&host, port, timeout)
    })
    .await
    .ok()?
    .ok()?;
    Some(format!(
        "The DC presented: {presented}. To trust exactly this certificate, set in [directory]: \
         tls_pin = \"{}\" (instead of ca_file); or put the CA that issued it in directory.ca_file \
         if the certificate names this DC.",
        presented.fingerprint
    ))
}

/// The host and port of an `ldaps://host[:port]` URL (636 by default).
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("ldaps://")?;
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        }
        _ => Some((authority.trim_matches(['[', ']']).to_owned(), 636)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ldaps_url_gives_its_host_and_port() {
        assert_eq!(
            host_and_port("ldaps://dc1.corp.example:3269"),
            Some(("dc1.corp.example".into(), 3269))
        );
        assert_eq!(
            host_and_port("ldaps://dc1.corp.example"),
            Some(("dc1.corp.example".into(), 636))
        );
        assert_eq!(
            host_and_port("ldaps://127.0.0.9:636/"),
            Some(("127.0.0.9".into(), 636))
        );
        assert_eq!(host_and_port("ldap://dc1"), None);
    }
}
