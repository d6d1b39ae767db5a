//! Serde helpers for secrets: `secrecy` refuses to serialize a secret by default, which is right
//! everywhere except the few fields whose whole purpose is to carry one over TLS.

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

pub fn serialize_exposed<S: Serializer>(
    secret: &SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// Builds a `SecretString` from bytes that must be UTF-8, without leaving a copy behind: the
/// caller's buffer is zeroized by its owner, and the new allocation is exactly sized so that the
/// conversion to a boxed string does not reallocate and strand a copy.
pub fn secret_from_utf8(bytes: &[u8]) -> Option<SecretString> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut owned = String::with_capacity(text.len());
    owned.push_str(text);
    Some(SecretString::from(owned))
}
