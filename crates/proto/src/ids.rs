//! Identifiers that cross the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ProtoError;

/// Fills `buffer` from the operating system's random number generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], ProtoError> {
    let mut buffer = [0u8; N];
    getrandom::getrandom(&mut buffer).map_err(|_| ProtoError::Randomness)?;
    Ok(buffer)
}

macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            pub fn generate() -> Result<Self, ProtoError> {
                random_bytes().map(Self)
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|byte| write!(formatter, "{byte:02x}"))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = ProtoError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hex_16(text).map(Self).ok_or_else(|| ProtoError::InvalidValue {
                    what: $what,
                    problem: "expected 32 hexadecimal digits".into(),
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// Names one operation end to end: the admin API, the relay, the agent's outcome journal and
    /// the sealed password's associated data all carry it.
    RequestId,
    "request id"
);
hex_id!(
    /// Names one registered agent; assigned by the cloud at registration.
    AgentId,
    "agent id"
);
hex_id!(
    /// Names one running cloud node on the bus between nodes; new at each start.
    NodeId,
    "node id"
);

/// 16 bytes from 32 hexadecimal digits, in order.
pub fn parse_hex_16(text: &str) -> Option<[u8; 16]> {
    // Only hexadecimal digits: `from_str_radix` alone would also take a sign.
    if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// The name of a directory (an AD domain) as the cloud knows it: lower-case letters, digits and
/// dashes, so that it is safe in URLs, file names and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DirectoryName(String);

impl DirectoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DirectoryName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl FromStr for DirectoryName {
    type Err = ProtoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid_characters = text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if text.is_empty() || text.len() > 63 || !valid_characters || text.starts_with('-') {
            return Err(ProtoError::InvalidValue {
                what: "directory name",
                problem:
                    "use 1 to 63 lower-case letters, digits and dashes, not starting with a dash"
                        .into(),
            });
        }
        Ok(Self(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for DirectoryName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_round_trip_through_text() {
        let id = RequestId::generate().unwrap();
        let parsed: RequestId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(id.to_string().len(), 32);
    }

    #[test]
    fn request_ids_refuse_anything_but_32_hex_digits() {
        for text in [
            "",
            "abc",
            "zz000000000000000000000000000000",
            "é0000000000000000000000000000000",
        ] {
            assert!(text.parse::<RequestId>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn directory_names_are_restricted() {
        assert!("corp-eu1".parse::<DirectoryName>().is_ok());
        for text in ["", "Corp", "-corp", "corp.example", "a/b", &"x".repeat(64)] {
            assert!(text.parse::<DirectoryName>().is_err(), "{text:?}");
        }
    }
}
