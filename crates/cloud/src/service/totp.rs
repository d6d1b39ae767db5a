//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA1, 6 digits, 30-second steps,
//! the parameters every authenticator app accepts. The time is always a parameter.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};
use writeback_proto::ids::random_bytes;
use writeback_proto::time::UnixMillis;
use zeroize::Zeroizing;

use crate::service::error::CloudError;

pub const STEP_SECONDS: u64 = 30;
pub const DIGITS: usize = 6;
/// 160 bits, the size RFC 4226 recommends for HMAC-SHA1.
pub const SECRET_BYTES: usize = 20;
/// Codes from one step before or after are accepted too: phone clocks drift and people type slowly.
const ALLOWED_DRIFT_STEPS: u64 = 1;

pub fn new_secret() -> Result<Zeroizing<Vec<u8>>, CloudError> {
    random_bytes::<SECRET_BYTES>()
        .map(|bytes| Zeroizing::new(bytes.to_vec()))
        .map_err(|error| CloudError::Internal(error.to_string()))
}

pub fn step_at(now: UnixMillis) -> u64 {
    now.0 / 1000 / STEP_SECONDS
}

/// The code for `step`, zero-padded to six digits.
pub fn code_at_step(secret: &[u8], step: u64) -> String {
    // Unchecked: a stand-in key for an unknown account may be of any length, and its codes must
    // cost the same to compute as real ones. The generator zeroizes its copy of the key.
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP_SECONDS, secret.to_vec())
        .generate(step.saturating_mul(STEP_SECONDS))
}

pub fn code_at(secret: &[u8], now: UnixMillis) -> String {
    code_at_step(secret, step_at(now))
}

/// The step `code` belongs to, if it is a current code for `secret` (within the allowed drift)
/// and later than `last_accepted_step`. The caller must still record the step as used. Every
/// step of the window is computed and compared in constant time, whichever matches.
pub fn matching_step(
    secret: &[u8],
    code: &str,
    now: UnixMillis,
    last_accepted_step: Option<u64>,
) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let current = step_at(now);
    let earliest = current.saturating_sub(ALLOWED_DRIFT_STEPS);
    let mut matched = None;
    for step in earliest..=current + ALLOWED_DRIFT_STEPS {
        let equal: bool = code_at_step(secret, step)
            .as_bytes()
            .ct_eq(code.as_bytes())
            .into();
        let fresh = last_accepted_step.is_none_or(|last| step > last);
        if equal && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// RFC 4648 base32 without padding: how authenticator apps take a key typed by hand.
pub fn base32(bytes: &[u8]) -> String {
    Secret::Raw(bytes.to_vec()).to_encoded().to_string()
}

/// Decodes base32 as [`base32`] writes it, ignoring spaces, padding and case; `None` when it is
/// not base32.
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Secret::Encoded(cleaned).to_bytes().ok()
}

/// The `otpauth://` address an authenticator app reads from a QR code.
pub fn provisioning_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                    char::from(byte).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        encode(issuer),
        encode(account),
        base32(secret),
        encode(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column (the last six of its eight digits).
    #[test]
    fn codes_match_the_rfc_test_vectors() {
        let secret = b"12345678901234567890";
        for (seconds, code) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(
                code_at(secret, UnixMillis(seconds * 1000)),
                code,
                "{seconds}"
            );
        }
    }

    #[test]
    fn a_code_matches_within_one_step_and_only_after_the_last_accepted() {
        let secret = b"12345678901234567890";
        let now = UnixMillis(1_111_111_111_000);
        let step = step_at(now);
        let previous = code_at_step(secret, step - 1);
        assert_eq!(matching_step(secret, &previous, now, None), Some(step - 1));
        assert_eq!(
            matching_step(secret, &code_at_step(secret, step + 1), now, None),
            Some(step + 1)
        );
        assert_eq!(
            matching_step(secret, &code_at_step(secret, step - 2), now, None),
            None
        );
        assert_eq!(matching_step(secret, &previous, now, Some(step - 1)), None);
        let spaced = format!("{} {}", &previous[..3], &previous[3..]);
        assert_eq!(matching_step(secret, &spaced, now, None), Some(step - 1));
        for malformed in ["", "12345", "1234567", "12345a", "１２３４５６"] {
            assert_eq!(
                matching_step(secret, malformed, now, None),
                None,
                "{malformed}"
            );
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(decode_base32("mzxw 6ytb oi").unwrap(), b"foobar");
        assert_eq!(decode_base32("MZXW6YQ=").unwrap(), b"foob");
        assert_eq!(decode_base32("MZ1"), None);
        let secret = new_secret().unwrap();
        assert_eq!(decode_base32(&base32(&secret)).unwrap(), *secret);
    }

    #[test]
    fn the_provisioning_uri_escapes_the_account() {
        let uri = provisioning_uri("Writeback", "a b@example.test", b"foobar");
        assert_eq!(
            uri,
            "otpauth://totp/Writeback:a%20b@example.test?secret=MZXW6YTBOI&issuer=Writeback&algorithm=SHA1&digits=6&period=30"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                prop_assert_eq!(decode_base32(&base32(&bytes)).unwrap(), bytes.clone());
                prop_assert_eq!(decode_base32(&base32(&bytes).to_lowercase()).unwrap(), bytes);
            }

            #[test]
            fn any_typed_text_is_a_code_or_nothing(typed in "\\PC{0,12}", at in 0u64..4_000_000_000_000) {
                let secret = b"12345678901234567890";
                let now = UnixMillis(at);
                if let Some(step) = matching_step(secret, &typed, now, None) {
                    prop_assert!(step.abs_diff(step_at(now)) <= 1);
                    prop_assert_eq!(matching_step(secret, &typed, now, Some(step)), None);
                }
                let _ = decode_base32(&typed);
            }
        }
    }
}
