//! Secrets the cloud itself checks: administrator passwords (Argon2id) and bearer tokens (random,
//! stored as SHA-256 hashes, so a copy of the database grants nothing).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::OnceLock;

use argon2::Argon2;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use writeback_proto::ids::random_bytes;

use crate::service::error::CloudError;

/// Prefixes make a leaked token recognisable (and greppable) for what it is.
pub const SESSION_TOKEN_PREFIX: &str = "wbs_";
pub const REGISTRATION_TOKEN_PREFIX: &str = "wbr_";

pub fn hash_password(password: &SecretString) -> Result<String, CloudError> {
    let salt_bytes =
        random_bytes::<16>().map_err(|error| CloudError::Internal(error.to_string()))?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|error| CloudError::Internal(error.to_string()))?;
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| CloudError::Internal(format!("hashing a password: {error}")))
}

/// Checks `password` against `stored`. With no stored hash (unknown user) a dummy hash is checked
/// anyway, so the answer takes as long either way and does not reveal which emails exist.
pub fn verify_password(password: &SecretString, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy =
        DUMMY.get_or_init(|| hash_password(&SecretString::from("not a real password")).ok());
    let Some(candidate) = stored.or(dummy.as_deref()) else {
        return false;
    };
    let Ok(parsed) = PasswordHash::new(candidate) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok();
    matches && stored.is_some()
}

/// A new random bearer token with `prefix`.
pub fn new_token(prefix: &str) -> Result<SecretString, CloudError> {
    let bytes = random_bytes::<32>().map_err(|error| CloudError::Internal(error.to_string()))?;
    Ok(SecretString::from(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// Compares secrets without an early exit, so the time taken says nothing about where they differ.
pub fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(left, right).into()
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password(&SecretString::from("correct horse")).unwrap();
        assert!(!hash.contains("correct horse"));
        assert!(verify_password(
            &SecretString::from("correct horse"),
            Some(&hash)
        ));
        assert!(!verify_password(
            &SecretString::from("wrong horse"),
            Some(&hash)
        ));
        assert!(!verify_password(&SecretString::from("correct horse"), None));
    }

    #[test]
    fn tokens_are_unique_and_prefixed() {
        let first = new_token(SESSION_TOKEN_PREFIX).unwrap();
        let second = new_token(SESSION_TOKEN_PREFIX).unwrap();
        assert!(first.expose_secret().starts_with("wbs_"));
        assert_ne!(first.expose_secret(), second.expose_secret());
        assert_eq!(token_hash(first.expose_secret()).len(), 32);
    }
}
