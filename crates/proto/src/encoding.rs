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

/// A whole number, also when JSON writes it with a zero fraction (`30.0`): JSON Schema counts
/// that an integer, so clients generated from the API description may send it.
pub mod whole_number {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    struct Whole<T>(PhantomData<T>);

    impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a whole number in range")
        }

        fn visit_u64<E: Error>(self, value: u64) -> Result<T, E> {
            T::try_from(value).map_err(|_| E::custom(format!("{value} is out of range")))
        }

        fn visit_i64<E: Error>(self, value: i64) -> Result<T, E> {
            let value = u64::try_from(value).map_err(|_| E::custom("must not be negative"))?;
            self.visit_u64(value)
        }

        fn visit_f64<E: Error>(self, value: f64) -> Result<T, E> {
            // Below 2^53 every whole f64 is exact, and far above any count this API takes.
            if value.fract() != 0.0 || !(0.0..9_007_199_254_740_992.0).contains(&value) {
                return Err(E::custom(format!("{value} is not a whole number in range")));
            }
            self.visit_u64(value as u64)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        deserializer.deserialize_any(Whole(PhantomData))
    }

    /// The same, or `null`.
    pub mod optional {
        use std::fmt;
        use std::marker::PhantomData;

        use serde::Deserializer;
        use serde::de::Visitor;

        struct MaybeWhole<T>(PhantomData<T>);

        impl<'de, T: TryFrom<u64>> Visitor<'de> for MaybeWhole<T> {
            type Value = Option<T>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a whole number in range, or null")
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Option<T>, D::Error> {
                super::deserialize(deserializer).map(Some)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
            deserializer: D,
        ) -> Result<Option<T>, D::Error> {
            deserializer.deserialize_option(MaybeWhole(PhantomData))
        }
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
