//! Serde helpers: binary values travel as unpadded base64url text.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).map_err(|_| D::Error::custom("invalid base64url"))
    }
}

pub mod array {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(
        value: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = decode(&text).map_err(|_| D::Error::custom("invalid base64url"))?;
        <[u8; N]>::try_from(bytes.as_slice())
            .map_err(|_| D::Error::custom(format!("expected {N} bytes, got {}", bytes.len())))
    }
}

/// Joins `parts` under a domain-separation `label`, each part prefixed by its length, so that no
/// two different lists of parts produce the same bytes. Used for signed transcripts and for the
/// associated data of sealed secrets.
pub fn transcript(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut output = Vec::with_capacity(
        label.len() + parts.iter().map(|part| part.len() + 4).sum::<usize>() + 4,
    );
    for part in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
        let length = u32::try_from(part.len()).unwrap_or(u32::MAX);
        output.extend_from_slice(&length.to_be_bytes());
        output.extend_from_slice(part);
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_do_not_collide_when_parts_shift() {
        assert_ne!(
            transcript("l", &[b"ab", b"c"]),
            transcript("l", &[b"a", b"bc"])
        );
        assert_ne!(transcript("l", &[b"a"]), transcript("m", &[b"a"]));
    }
}
