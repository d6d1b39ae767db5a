//! Screening new passwords against lists of commonly used and breached passwords, as NIST SP
//! 800-63B asks of a verifier.
//!
//! A list is kept as a binary fuse filter (xorf's `BinaryFuse16`) of the first 64 bits of each
//! password's hash: about 2.25 bytes per entry, never a false negative, and a false positive for
//! about one password in 65,536 that is on no list ([`FALSE_POSITIVE_RATE`]). No password, and
//! no whole hash, is kept.
//!
//! Two lists exist: the built-in list of commonly used passwords, compiled into the binary, and an
//! optional corpus an administrator imports once (a public breach corpus's SHA-1 or NTLM hash
//! list), read into a filter the same way.

use std::sync::OnceLock;

use md4::Md4;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use thiserror::Error;
use xorf::{BinaryFuse16, Descriptor, Filter};

/// How often a password on no list is taken for a listed one: a 16-bit fingerprint.
pub const FALSE_POSITIVE_RATE: f64 = 1.0 / 65_536.0;

/// The built-in list: the union of the `passwords` crate's list of common passwords and zxcvbn's
/// own password list: 107,838 distinct in lower case. `cargo xtask common-passwords` rebuilds it.
const BUILT_IN_COMMON_PASSWORDS: &[u8] = include_bytes!("../data/common-passwords.fuse");

/// What a filter file starts with; the last byte is the format's version.
const MAGIC: &[u8; 8] = b"WBPWFLT1";
const HEADER_LENGTH: usize = 8 + 1 + 8 + 8 + 4 + 4 + 4 + 8 + 32;

/// Why a filter or a corpus could not be read, or a filter not built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScreeningError {
    #[error("not a Writeback password filter: {0}")]
    MalformedFilter(&'static str),
    #[error("line {line}: {problem}")]
    CorpusLine { line: u64, problem: &'static str },
    #[error(
        "line {line}: a {found} hash in a corpus of {expected} hashes; import one kind per file"
    )]
    MixedHashes {
        line: u64,
        expected: &'static str,
        found: &'static str,
    },
    #[error("the corpus holds no hashes")]
    EmptyCorpus,
    #[error("the filter could not be built: {0}")]
    Construction(&'static str),
}

/// How a list's entries were hashed, which is how a password is hashed to look it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListHashing {
    /// SHA-256 of the password in lower case: the built-in list.
    LowerCaseSha256,
    /// SHA-1 of the password as typed, in UTF-8: Have I Been Pwned's SHA-1 list and others.
    Sha1,
    /// The NT hash, MD4 of the password in UTF-16LE: Have I Been Pwned's NTLM list.
    Ntlm,
}

impl ListHashing {
    /// The name administrators know the hash by.
    pub fn name(self) -> &'static str {
        match self {
            Self::LowerCaseSha256 => "SHA-256 (lower case)",
            Self::Sha1 => "SHA-1",
            Self::Ntlm => "NTLM",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Self::LowerCaseSha256 => 1,
            Self::Sha1 => 2,
            Self::Ntlm => 3,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::LowerCaseSha256),
            2 => Some(Self::Sha1),
            3 => Some(Self::Ntlm),
            _ => None,
        }
    }

    /// The first 64 bits of the password's hash, as the filter holds them.
    pub fn key(self, password: &str) -> u64 {
        match self {
            Self::LowerCaseSha256 => {
                leading_u64(&Sha256::digest(password.to_lowercase().as_bytes()))
            }
            Self::Sha1 => leading_u64(&Sha1::digest(password.as_bytes())),
            Self::Ntlm => {
                let mut hasher = Md4::new();
                for unit in password.encode_utf16() {
                    hasher.update(unit.to_le_bytes());
                }
                leading_u64(&hasher.finalize())
            }
        }
    }
}

fn leading_u64(digest: &[u8]) -> u64 {
    let mut leading = [0u8; 8];
    for (slot, byte) in leading.iter_mut().zip(digest) {
        *slot = *byte;
    }
    u64::from_be_bytes(leading)
}

/// One list of passwords as a filter.
#[derive(Debug, Clone)]
pub struct PasswordFilter {
    hashing: ListHashing,
    entries: u64,
    filter: BinaryFuse16,
}

impl PasswordFilter {
    /// A filter of `keys` (hashed as `hashing` says); duplicates count once.
    pub fn from_keys(hashing: ListHashing, mut keys: Vec<u64>) -> Result<Self, ScreeningError> {
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Err(ScreeningError::EmptyCorpus);
        }
        let filter = BinaryFuse16::try_from(&keys).map_err(ScreeningError::Construction)?;
        Ok(Self {
            hashing,
            entries: keys.len() as u64,
            filter,
        })
    }

    /// Whether `password`, exactly as given, is on the list (or is one of the rare false
    /// positives).
    pub fn contains_password(&self, password: &str) -> bool {
        self.filter.contains(&self.hashing.key(password))
    }

    pub fn hashing(&self) -> ListHashing {
        self.hashing
    }

    /// How many distinct entries the list had.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The filter's size as stored.
    pub fn size_in_bytes(&self) -> usize {
        HEADER_LENGTH + self.filter.fingerprints.len() * 2
    }

    /// The filter as stored in a file: a header, a SHA-256 of the fingerprints, and the
    /// fingerprints.
    pub fn to_bytes(&self) -> Vec<u8> {
        let fingerprints = fingerprint_bytes(&self.filter.fingerprints);
        let descriptor = &self.filter.descriptor;
        let mut bytes = Vec::with_capacity(HEADER_LENGTH + fingerprints.len());
        bytes.extend_from_slice(MAGIC);
        bytes.push(self.hashing.tag());
        bytes.extend_from_slice(&self.entries.to_le_bytes());
        bytes.extend_from_slice(&descriptor.seed.to_le_bytes());
        bytes.extend_from_slice(&descriptor.segment_length.to_le_bytes());
        bytes.extend_from_slice(&descriptor.segment_length_mask.to_le_bytes());
        bytes.extend_from_slice(&descriptor.segment_count_length.to_le_bytes());
        bytes.extend_from_slice(&(self.filter.fingerprints.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(&fingerprints));
        bytes.extend_from_slice(&fingerprints);
        bytes
    }

    /// Reads a filter written by [`Self::to_bytes`]. The checksum and the shape are checked, so
    /// a damaged file is refused rather than screening against garbage or reading out of bounds.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ScreeningError> {
        let mut reader = HeaderReader { bytes, at: 0 };
        if reader.take(8)? != MAGIC {
            return Err(ScreeningError::MalformedFilter("wrong magic or version"));
        }
        let hashing = ListHashing::from_tag(reader.take(1)?[0])
            .ok_or(ScreeningError::MalformedFilter("unknown hashing"))?;
        let entries = reader.u64()?;
        let seed = reader.u64()?;
        let segment_length = reader.u32()?;
        let segment_length_mask = reader.u32()?;
        let segment_count_length = reader.u32()?;
        let fingerprint_count = usize::try_from(reader.u64()?)
            .map_err(|_| ScreeningError::MalformedFilter("too many fingerprints"))?;
        let checksum = reader.take(32)?;
        let body = &bytes[reader.at..];
        if Some(body.len()) != fingerprint_count.checked_mul(2) {
            return Err(ScreeningError::MalformedFilter(
                "length does not match the header",
            ));
        }
        if Sha256::digest(body).as_slice() != checksum {
            return Err(ScreeningError::MalformedFilter("checksum does not match"));
        }
        // Every index the lookup computes is below segment_count_length + 2 * segment_length.
        let reach = u64::from(segment_count_length) + 2 * u64::from(segment_length);
        let shape_holds = segment_length.is_power_of_two()
            && segment_length_mask == segment_length - 1
            && segment_count_length % segment_length == 0
            && reach <= u64::from(u32::MAX)
            && reach <= fingerprint_count as u64
            && entries > 0;
        if !shape_holds {
            return Err(ScreeningError::MalformedFilter("inconsistent shape"));
        }
        let fingerprints: Box<[u16]> = body
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        let filter = BinaryFuse16 {
            descriptor: Descriptor {
                seed,
                segment_length,
                segment_length_mask,
                segment_count_length,
            },
            fingerprints,
        };
        Ok(Self {
            hashing,
            entries,
            filter,
        })
    }
}

fn fingerprint_bytes(fingerprints: &[u16]) -> Vec<u8> {
    fingerprints
        .iter()
        .flat_map(|fingerprint| fingerprint.to_le_bytes())
        .collect()
}

struct HeaderReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> HeaderReader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], ScreeningError> {
        let taken = self
            .bytes
            .get(self.at..self.at + length)
            .ok_or(ScreeningError::MalformedFilter("shorter than its header"))?;
        self.at += length;
        Ok(taken)
    }

    fn u64(&mut self) -> Result<u64, ScreeningError> {
        let mut value = [0u8; 8];
        value.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(value))
    }

    fn u32(&mut self) -> Result<u32, ScreeningError> {
        let mut value = [0u8; 4];
        value.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(value))
    }
}

/// The built-in list of commonly used passwords.
pub fn built_in_common_passwords() -> Result<&'static PasswordFilter, &'static ScreeningError> {
    static BUILT_IN: OnceLock<Result<PasswordFilter, ScreeningError>> = OnceLock::new();
    BUILT_IN
        .get_or_init(|| PasswordFilter::from_bytes(BUILT_IN_COMMON_PASSWORDS))
        .as_ref()
}

/// Whether `password` is on the built-in list: itself, or its letters with the digits and
/// symbols people stick on either end ("Password1!") trimmed off, in any case.
pub fn is_common_password(common: &PasswordFilter, password: &str) -> bool {
    let lowered = password.to_lowercase();
    let core = lowered.trim_matches(|character: char| !character.is_alphabetic());
    common.contains_password(&lowered)
        || (core.chars().count() >= 4 && core != lowered && common.contains_password(core))
}

/// The keys of a hash corpus, read line by line: `HASH` or `HASH:COUNT`, as Have I Been Pwned
/// publishes them, with SHA-1 (40 hex digits) or NTLM (32) hashes, one kind per corpus. Blank
/// lines and lines starting with `#` are skipped.
#[derive(Debug, Default)]
pub struct CorpusKeys {
    hashing: Option<ListHashing>,
    keys: Vec<u64>,
    lines: u64,
}

impl CorpusKeys {
    pub fn add_line(&mut self, line: &str) -> Result<(), ScreeningError> {
        self.lines += 1;
        let line_number = self.lines;
        let Some((hashing, key)) =
            corpus_key(line).map_err(|problem| ScreeningError::CorpusLine {
                line: line_number,
                problem,
            })?
        else {
            return Ok(());
        };
        match self.hashing {
            Some(expected) if expected != hashing => {
                return Err(ScreeningError::MixedHashes {
                    line: line_number,
                    expected: expected.name(),
                    found: hashing.name(),
                });
            }
            Some(_) => {}
            None => self.hashing = Some(hashing),
        }
        self.keys.push(key);
        Ok(())
    }

    /// How many hashes were read so far, duplicates included.
    pub fn hashes(&self) -> usize {
        self.keys.len()
    }

    pub fn into_filter(self) -> Result<PasswordFilter, ScreeningError> {
        let hashing = self.hashing.ok_or(ScreeningError::EmptyCorpus)?;
        PasswordFilter::from_keys(hashing, self.keys)
    }
}

/// One corpus line: its hash's kind and first 64 bits, or `None` for a blank or comment line.
fn corpus_key(line: &str) -> Result<Option<(ListHashing, u64)>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (hash, count) = match line.split_once(':') {
        Some((hash, count)) => (hash, Some(count)),
        None => (line, None),
    };
    if count.is_some_and(|count| count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the count after ':' must be a number");
    }
    let hashing = match hash.len() {
        40 => ListHashing::Sha1,
        32 => ListHashing::Ntlm,
        _ => return Err("expected a SHA-1 (40 hex digits) or NTLM (32 hex digits) hash"),
    };
    if !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err("a hash holds hex digits only");
    }
    let key = u64::from_str_radix(&hash[..16], 16).map_err(|_| "a hash holds hex digits only")?;
    Ok(Some((hashing, key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sha1_line(password: &str) -> String {
        let digest = Sha1::digest(password.as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02X}")).collect();
        format!("{hex}:42")
    }

    #[test]
    fn the_built_in_list_holds_over_a_hundred_thousand_common_passwords() {
        let common = built_in_common_passwords().unwrap();
        assert!(common.entries() >= 100_000, "{}", common.entries());
        assert_eq!(common.hashing(), ListHashing::LowerCaseSha256);
        for password in [
            "123456", "password", "qwerty", "iloveyou", "trustno1", "Dragon",
        ] {
            assert!(is_common_password(common, password), "{password}");
        }
        for password in ["Password1!", "Sunshine2026!", "!!Monkey99", "QWERTY"] {
            assert!(is_common_password(common, password), "{password}");
        }
        for password in [
            "correct-horse-battery-staple-73",
            "Tq8#vLm2&Zr",
            "Writeback rocks on Tuesdays",
        ] {
            assert!(!is_common_password(common, password), "{password}");
        }
    }

    #[test]
    fn a_filter_of_a_corpus_finds_every_entry_and_few_others() {
        let listed: Vec<String> = (0..20_000).map(|n| format!("listed-{n}")).collect();
        let mut corpus = CorpusKeys::default();
        corpus.add_line("# a comment").unwrap();
        corpus.add_line("").unwrap();
        for password in &listed {
            corpus.add_line(&sha1_line(password)).unwrap();
        }
        let filter = corpus.into_filter().unwrap();
        assert_eq!(filter.entries(), 20_000);
        assert!(
            listed
                .iter()
                .all(|password| filter.contains_password(password))
        );
        let false_positives = (0..200_000)
            .filter(|n| filter.contains_password(&format!("unlisted-{n}")))
            .count();
        // 200,000 / 65,536 is about 3; far more would mean a broken filter.
        assert!(false_positives < 20, "{false_positives}");
        let bytes = filter.to_bytes();
        assert_eq!(bytes.len(), filter.size_in_bytes());
        let read = PasswordFilter::from_bytes(&bytes).unwrap();
        assert!(
            listed
                .iter()
                .all(|password| read.contains_password(password))
        );
        assert!(!read.contains_password("unlisted-but-not-a-false-positive-3"));
    }

    #[test]
    fn sha1_lines_are_the_sha1_of_the_password_as_typed() {
        // Have I Been Pwned's line for "password".
        let mut corpus = CorpusKeys::default();
        corpus
            .add_line("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:10434004")
            .unwrap();
        let filter = corpus.into_filter().unwrap();
        assert!(filter.contains_password("password"));
        assert!(!filter.contains_password("Password"));
    }

    #[test]
    fn ntlm_hashes_are_the_nt_hash_of_the_password() {
        // The NT hash of "password", as every reference lists it.
        let line = "8846F7EAEE8FB117AD06BDD830B7586C:1";
        let mut corpus = CorpusKeys::default();
        corpus.add_line(line).unwrap();
        let filter = corpus.into_filter().unwrap();
        assert_eq!(filter.hashing(), ListHashing::Ntlm);
        assert!(filter.contains_password("password"));
        assert!(!filter.contains_password("Password"));
    }

    #[test]
    fn a_corpus_line_that_is_not_a_hash_is_refused_with_its_number() {
        let mut corpus = CorpusKeys::default();
        corpus.add_line(&sha1_line("one")).unwrap();
        assert_eq!(
            corpus.add_line("not a hash"),
            Err(ScreeningError::CorpusLine {
                line: 2,
                problem: "expected a SHA-1 (40 hex digits) or NTLM (32 hex digits) hash"
            })
        );
        assert!(matches!(
            corpus.add_line("8846F7EAEE8FB117AD06BDD830B7586C"),
            Err(ScreeningError::MixedHashes { line: 3, .. })
        ));
        assert!(matches!(
            corpus.add_line("ZZ46F7EAEE8FB117AD06BDD830B7586CAAAAAAAA"),
            Err(ScreeningError::CorpusLine { line: 4, .. })
        ));
        assert_eq!(
            CorpusKeys::default().into_filter().unwrap_err(),
            ScreeningError::EmptyCorpus
        );
    }

    #[test]
    fn a_damaged_filter_is_refused() {
        let filter = PasswordFilter::from_keys(ListHashing::Sha1, (0..1_000).collect()).unwrap();
        let bytes = filter.to_bytes();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(PasswordFilter::from_bytes(&flipped).is_err());
        assert!(PasswordFilter::from_bytes(&bytes[..bytes.len() - 2]).is_err());
        assert!(PasswordFilter::from_bytes(&bytes[..10]).is_err());
        let mut shape = bytes.clone();
        // segment_length, at offset 8 + 1 + 8 + 8.
        shape[25..29].copy_from_slice(&3u32.to_le_bytes());
        assert!(PasswordFilter::from_bytes(&shape).is_err());
    }

    proptest! {
        #[test]
        fn any_filter_bytes_are_read_or_refused_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            keep_header in any::<bool>(),
        ) {
            let mut candidate = bytes;
            if keep_header {
                let mut with_magic = MAGIC.to_vec();
                with_magic.extend(candidate);
                candidate = with_magic;
            }
            if let Ok(filter) = PasswordFilter::from_bytes(&candidate) {
                let _ = filter.contains_password("anything");
            }
        }

        #[test]
        fn any_corpus_line_is_read_or_refused_and_a_hash_line_is_read(
            line in "\\PC{0,80}",
            hash in "[0-9a-fA-F]{40}",
            count in proptest::option::of(0u64..10_000_000),
        ) {
            let _ = corpus_key(&line);
            let typed = match count {
                Some(count) => format!("{hash}:{count}\r"),
                None => hash.clone(),
            };
            let (hashing, key) = corpus_key(&typed).unwrap().unwrap();
            prop_assert_eq!(hashing, ListHashing::Sha1);
            prop_assert_eq!(key, u64::from_str_radix(&hash[..16], 16).unwrap());
        }
    }
}
