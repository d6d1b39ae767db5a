//! Pure translations between Active Directory's encodings and ours: filters, DNs, FILETIMEs,
//! `unicodePwd` values, the modifications of each write, and the DC's error answers.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use ldap3::Mod;
use ldap3::controls::RawControl;
use secrecy::{ExposeSecret, SecretString};
use writeback_policy::PolicyReason;
use writeback_proto::operation::PasswordStamp;
use writeback_proto::sync::{ObjectAnchor, PasswordExpiry};
use writeback_proto::time::UnixMillis;
use zeroize::Zeroizing;

use crate::{DirectoryError, PasswordLastSet, ResetOptions, SignInVerdict};

pub const POLICY_HINTS_OID: &str = "1.2.840.113556.1.4.2239";
pub const POLICY_HINTS_DEPRECATED_OID: &str = "1.2.840.113556.1.4.2066";

/// Seconds between 1601-01-01 (the FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET_SECONDS: i64 = 11_644_473_600;
const FILETIME_TICKS_PER_MILLISECOND: i64 = 10_000;

const LDAP_CONSTRAINT_VIOLATION: u32 = 19;
const LDAP_NO_SUCH_OBJECT: u32 = 32;
const LDAP_INSUFFICIENT_ACCESS: u32 = 50;

/// Bytes that are wiped when dropped. Every value of a password modify uses this type, so the
/// `unicodePwd` value we hand to `ldap3` is zeroized when `ldap3` drops the request. (The BER
/// encoding `ldap3` writes to the socket is outside our reach.)
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    fn public(text: &str) -> Self {
        Self(Zeroizing::new(text.as_bytes().to_vec()))
    }
}

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl Eq for SecretBytes {}

impl Hash for SecretBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_slice().hash(state);
    }
}

/// The `unicodePwd` value AD expects: the password in double quotes, UTF-16LE.
pub fn unicode_pwd_value(password: &SecretString) -> SecretBytes {
    let quoted = std::iter::once('"')
        .chain(password.expose_secret().chars())
        .chain(std::iter::once('"'));
    let mut bytes = Zeroizing::new(Vec::with_capacity((password.expose_secret().len() + 2) * 2));
    let mut units = [0u16; 2];
    for character in quoted {
        for unit in character.encode_utf16(&mut units) {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
    }
    SecretBytes(bytes)
}

fn one(value: SecretBytes) -> HashSet<SecretBytes> {
    HashSet::from([value])
}

fn attribute(name: &str) -> SecretBytes {
    SecretBytes::public(name)
}

/// A reset: the new password, the must-change flag and optionally the unlock, in one modify.
pub fn reset_modifications(
    password: &SecretString,
    options: ResetOptions,
) -> Vec<Mod<SecretBytes>> {
    let mut modifications = vec![Mod::Replace(
        attribute("unicodePwd"),
        one(unicode_pwd_value(password)),
    )];
    if options.unlock {
        modifications.push(Mod::Replace(
            attribute("lockoutTime"),
            one(SecretBytes::public("0")),
        ));
    }
    let password_last_set = if options.must_change { "0" } else { "-1" };
    modifications.push(Mod::Replace(
        attribute("pwdLastSet"),
        one(SecretBytes::public(password_last_set)),
    ));
    modifications
}

/// A change: delete the current value and add the new one, so the DC verifies the current
/// password and applies history and minimum age.
pub fn change_modifications(current: &SecretString, new: &SecretString) -> Vec<Mod<SecretBytes>> {
    vec![
        Mod::Delete(attribute("unicodePwd"), one(unicode_pwd_value(current))),
        Mod::Add(attribute("unicodePwd"), one(unicode_pwd_value(new))),
    ]
}

pub fn unlock_modifications() -> Vec<Mod<SecretBytes>> {
    vec![Mod::Replace(
        attribute("lockoutTime"),
        one(SecretBytes::public("0")),
    )]
}

/// The policy-hints control (`SEQUENCE { INTEGER 1 }`), which makes a reset enforce history.
pub fn policy_hints_control(oid: &str) -> RawControl {
    RawControl {
        ctype: oid.to_owned(),
        crit: true,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    }
}

/// The control to send with a reset, if the DC advertises one.
pub fn choose_policy_hints(supported_controls: &[String]) -> Option<&'static str> {
    [POLICY_HINTS_OID, POLICY_HINTS_DEPRECATED_OID]
        .into_iter()
        .find(|oid| supported_controls.iter().any(|supported| supported == oid))
}

/// The search filter for a logon name. The name is escaped (RFC 4515), so `*)(uid=*` is looked up
/// literally and matches nobody.
pub fn user_filter(logon_name: &str) -> String {
    let escaped = ldap3::ldap_escape(logon_name);
    format!(
        "(&(objectCategory=person)(objectClass=user)(|(sAMAccountName={escaped})(userPrincipalName={escaped})))"
    )
}

/// The search filter for a synced user's anchor.
pub fn anchor_filter(anchor: &ObjectAnchor) -> String {
    format!(
        "(&(objectCategory=person)(objectClass=user){})",
        anchor_assertion(anchor)
    )
}

/// `(objectGUID=…)` for `anchor`, its bytes escaped one by one.
pub(crate) fn anchor_assertion(anchor: &ObjectAnchor) -> String {
    let escaped: String = anchor
        .as_bytes()
        .iter()
        .map(|byte| format!("\\{byte:02x}"))
        .collect();
    format!("(objectGUID={escaped})")
}

pub fn filetime_to_unix_ms(filetime: i64) -> Option<u64> {
    let unix_ms = filetime / FILETIME_TICKS_PER_MILLISECOND - FILETIME_UNIX_OFFSET_SECONDS * 1000;
    u64::try_from(unix_ms).ok()
}

pub fn password_last_set(value: Option<&str>) -> PasswordLastSet {
    match value.and_then(|text| text.parse::<i64>().ok()) {
        Some(filetime) if filetime > 0 => filetime_to_unix_ms(filetime)
            .map(|unix_ms| PasswordLastSet::At { unix_ms })
            .unwrap_or(PasswordLastSet::MustChange),
        _ => PasswordLastSet::MustChange,
    }
}

/// The value AD gives `msDS-UserPasswordExpiryTimeComputed` for a password that never expires.
const NEVER_EXPIRES: i64 = i64::MAX;

/// A user's password expiry from what the DC says (`computed`, the FILETIME of
/// `msDS-UserPasswordExpiryTimeComputed`) or, when it says nothing, from when the password was
/// set and the maximum age that applies (`None` when it is not known, zero when passwords never
/// expire).
pub fn password_expiry(
    computed: Option<&str>,
    never_expires: bool,
    last_set: PasswordLastSet,
    maximum_age: Option<Duration>,
) -> PasswordExpiry {
    if never_expires {
        return PasswordExpiry::Never;
    }
    let PasswordLastSet::At { unix_ms } = last_set else {
        // Must change at next sign-in: the DC asks the user at once, no reminder can help.
        return PasswordExpiry::Never;
    };
    match computed.map(str::parse::<i64>) {
        Some(Ok(NEVER_EXPIRES)) => PasswordExpiry::Never,
        Some(Ok(filetime)) if filetime > 0 => filetime_to_unix_ms(filetime)
            .map_or(PasswordExpiry::Unknown, |at| {
                PasswordExpiry::At(UnixMillis(at))
            }),
        Some(_) => PasswordExpiry::Unknown,
        None => match maximum_age {
            None => PasswordExpiry::Unknown,
            Some(age) if age.is_zero() => PasswordExpiry::Never,
            Some(age) => u64::try_from(age.as_millis())
                .ok()
                .and_then(|age| unix_ms.checked_add(age))
                .map_or(PasswordExpiry::Never, |at| {
                    PasswordExpiry::At(UnixMillis(at))
                }),
        },
    }
}

/// The attribute id of `unicodePwd` in replication metadata (MS-ADA3).
const UNICODE_PWD_ATTID: u32 = 0x0009_005A;
/// `replPropertyMetaDataBlob`: a version and a reserved word, then the count of entries and
/// another reserved word, then the entries.
const METADATA_HEADER_BYTES: usize = 16;
/// One `replPropertyMetaData1`: attid, version, change time (seconds since 1601), the
/// originating DC's invocation id, and two USNs.
const METADATA_ENTRY_BYTES: usize = 48;

/// The password's stamp in a user's `replPropertyMetaData` (MS-DRSR 5.166): `None` when the
/// value is not a version-1 blob, is cut short, or has no entry for `unicodePwd` (a user whose
/// password was never set).
pub fn password_stamp(metadata: &[u8]) -> Option<PasswordStamp> {
    let word = |offset: usize| -> Option<u32> {
        let bytes = metadata.get(offset..offset.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    if word(0)? != 1 {
        return None;
    }
    let count = usize::try_from(word(8)?).ok()?;
    let needed = count
        .checked_mul(METADATA_ENTRY_BYTES)?
        .checked_add(METADATA_HEADER_BYTES)?;
    if metadata.len() < needed {
        return None;
    }
    (0..count)
        .map(|index| METADATA_HEADER_BYTES + index * METADATA_ENTRY_BYTES)
        .find(|&entry| word(entry) == Some(UNICODE_PWD_ATTID))
        .and_then(|entry| {
            let version = word(entry + 4)?;
            let seconds = u64::from(word(entry + 8)?) | (u64::from(word(entry + 12)?) << 32);
            let unix_seconds = seconds.checked_sub(FILETIME_UNIX_OFFSET_SECONDS as u64)?;
            Some(PasswordStamp {
                version,
                changed_at: UnixMillis(unix_seconds.checked_mul(1000)?),
            })
        })
}

/// AD stores policy ages as negative counts of 100 ns; "never" is the most negative value.
pub fn interval_to_duration(value: Option<&str>) -> Duration {
    let ticks = value.and_then(|text| text.parse::<i64>().ok()).unwrap_or(0);
    if ticks == i64::MIN {
        return Duration::ZERO;
    }
    Duration::from_millis(ticks.unsigned_abs() / 10_000)
}

/// Whether `dn` lies within (or is) the container `container_dn`, comparing RDN by RDN and
/// ignoring case and spaces around separators, as AD does.
pub fn is_within(dn: &str, container_dn: &str) -> bool {
    let dn = normalized_rdns(dn);
    let container = normalized_rdns(container_dn);
    !container.is_empty()
        && dn.len() >= container.len()
        && dn[dn.len() - container.len()..] == container[..]
}

fn normalized_rdns(dn: &str) -> Vec<String> {
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for character in dn.chars() {
        if escaped {
            current.push(character);
            escaped = false;
        } else if character == '\\' {
            current.push(character);
            escaped = true;
        } else if character == ',' {
            rdns.push(normalize_rdn(&current));
            current.clear();
        } else {
            current.push(character);
        }
    }
    if !current.trim().is_empty() {
        rdns.push(normalize_rdn(&current));
    }
    rdns
}

fn normalize_rdn(rdn: &str) -> String {
    match rdn.split_once('=') {
        Some((kind, value)) => format!(
            "{}={}",
            kind.trim().to_lowercase(),
            value.trim().to_lowercase()
        ),
        None => rdn.trim().to_lowercase(),
    }
}

/// Translates a refused modify into our terms. `diagnostic` is the DC's text, which carries the
/// Windows error code first (`0000052D: ...`) and, on Samba, a readable reason.
pub fn decode_modify_failure(code: u32, diagnostic: &str) -> DirectoryError {
    let windows_code = diagnostic.get(..8).unwrap_or_default().to_ascii_uppercase();
    match (code, windows_code.as_str()) {
        (LDAP_CONSTRAINT_VIOLATION, "0000052D") => DirectoryError::PolicyRestriction {
            reason: policy_reason_from_text(diagnostic),
            diagnostic: diagnostic.to_owned(),
        },
        (LDAP_CONSTRAINT_VIOLATION, "00000056") => DirectoryError::WrongCurrentPassword,
        (LDAP_INSUFFICIENT_ACCESS, _) => DirectoryError::InsufficientAccess(diagnostic.to_owned()),
        (LDAP_NO_SUCH_OBJECT, _) => DirectoryError::UserNotFound,
        _ => DirectoryError::Refused {
            code,
            diagnostic: diagnostic.to_owned(),
        },
    }
}

/// Samba explains a policy refusal in words; Windows does not, and then this finds nothing.
fn policy_reason_from_text(diagnostic: &str) -> Option<PolicyReason> {
    let text = diagnostic.to_lowercase();
    if text.contains("too short") {
        Some(PolicyReason::TooShort)
    } else if text.contains("complexity") {
        Some(PolicyReason::NotComplex)
    } else if text.contains("history") {
        Some(PolicyReason::InHistory)
    } else if text.contains("too young") {
        Some(PolicyReason::TooYoung)
    } else {
        None
    }
}

/// The `NNN` of a bind answer's `data NNN`, the reason a bind failed; empty when there is none.
pub fn bind_data_code(diagnostic: &str) -> &str {
    diagnostic
        .split("data ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap_or_default()
}

/// A user's own bind, judged: `rc` 0 is acceptance; `49` carries the reason in its data code.
/// Any other refusal, and an unexplained 49, count as a wrong password, which reveals nothing.
pub fn sign_in_verdict(rc: u32, diagnostic: &str) -> SignInVerdict {
    if rc == 0 {
        return SignInVerdict::Accepted;
    }
    match bind_data_code(diagnostic) {
        "532" => SignInVerdict::Expired,
        "773" => SignInVerdict::MustChange,
        "533" => SignInVerdict::Disabled,
        "775" => SignInVerdict::LockedOut,
        "530" | "531" | "701" => SignInVerdict::NotPermitted,
        _ => SignInVerdict::WrongPassword,
    }
}

/// Bind answers carry `data NNN` with the reason a bind failed.
pub fn bind_failure_reason(diagnostic: &str) -> &'static str {
    match bind_data_code(diagnostic) {
        "52e" => "invalid credentials",
        "525" => "no such user",
        "530" | "531" => "sign-in not permitted at this time or from this host",
        "532" => "password expired",
        "533" => "account disabled",
        "701" => "account expired",
        "773" => "password must be changed",
        "775" => "account locked out",
        _ => "bind refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_bind_is_judged_by_its_data_code() {
        let refused = |data: &str| {
            sign_in_verdict(
                49,
                &format!(
                    "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {data}, v1db1"
                ),
            )
        };
        assert_eq!(sign_in_verdict(0, ""), SignInVerdict::Accepted);
        assert_eq!(refused("52e"), SignInVerdict::WrongPassword);
        assert_eq!(refused("532"), SignInVerdict::Expired);
        assert_eq!(refused("773"), SignInVerdict::MustChange);
        assert_eq!(refused("533"), SignInVerdict::Disabled);
        assert_eq!(refused("775"), SignInVerdict::LockedOut);
        assert_eq!(refused("701"), SignInVerdict::NotPermitted);
        assert_eq!(
            sign_in_verdict(49, "no data code"),
            SignInVerdict::WrongPassword
        );
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16_little_endian() {
        let value = unicode_pwd_value(&SecretString::from("aé😀"));
        let expected: Vec<u8> = "\"aé😀\""
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(value.as_ref(), expected.as_slice());
    }

    #[test]
    fn a_reset_is_one_modify_with_every_requested_attribute() {
        let password = SecretString::from("pw");
        let names = |modifications: Vec<Mod<SecretBytes>>| -> Vec<(String, String)> {
            modifications
                .into_iter()
                .map(|modification| match modification {
                    Mod::Replace(name, values) => {
                        let value = values
                            .into_iter()
                            .next()
                            .map(|v| v.as_ref().to_vec())
                            .unwrap_or_default();
                        let shown = if name.as_ref() == b"unicodePwd" {
                            "<password>".to_owned()
                        } else {
                            String::from_utf8(value).unwrap()
                        };
                        (String::from_utf8(name.as_ref().to_vec()).unwrap(), shown)
                    }
                    _ => panic!("a reset only replaces"),
                })
                .collect()
        };
        let all = ResetOptions {
            must_change: true,
            unlock: true,
        };
        assert_eq!(
            names(reset_modifications(&password, all)),
            vec![
                ("unicodePwd".into(), "<password>".into()),
                ("lockoutTime".into(), "0".into()),
                ("pwdLastSet".into(), "0".into()),
            ]
        );
        assert_eq!(
            names(reset_modifications(&password, ResetOptions::default())),
            vec![
                ("unicodePwd".into(), "<password>".into()),
                ("pwdLastSet".into(), "-1".into())
            ]
        );
    }

    #[test]
    fn a_change_deletes_the_current_value_and_adds_the_new_one() {
        let modifications =
            change_modifications(&SecretString::from("old"), &SecretString::from("new"));
        assert!(matches!(
            &modifications[..],
            [Mod::Delete(..), Mod::Add(..)]
        ));
    }

    #[test]
    fn the_policy_hints_control_is_sent_only_when_advertised() {
        assert_eq!(
            choose_policy_hints(&["1.2.840.113556.1.4.319".into()]),
            None
        );
        assert_eq!(
            choose_policy_hints(&[POLICY_HINTS_DEPRECATED_OID.into(), POLICY_HINTS_OID.into()]),
            Some(POLICY_HINTS_OID)
        );
        assert_eq!(
            choose_policy_hints(&[POLICY_HINTS_DEPRECATED_OID.into()]),
            Some(POLICY_HINTS_DEPRECATED_OID)
        );
        let control = policy_hints_control(POLICY_HINTS_OID);
        assert_eq!(control.val, Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]));
        assert!(control.crit);
    }

    #[test]
    fn filter_metacharacters_in_names_are_escaped() {
        assert_eq!(
            user_filter("*)(uid=*"),
            r"(&(objectCategory=person)(objectClass=user)(|(sAMAccountName=\2a\29\28uid=\2a)(userPrincipalName=\2a\29\28uid=\2a)))"
        );
        assert!(user_filter("a\\b\0").contains(r"a\5cb\00"));
    }

    #[test]
    fn an_anchor_is_searched_for_byte_by_byte() {
        let anchor: ObjectAnchor = "8b6c9d80-5375-4f42-9873-a5ea33347041".parse().unwrap();
        assert_eq!(
            anchor_filter(&anchor),
            r"(&(objectCategory=person)(objectClass=user)(objectGUID=\80\9d\6c\8b\75\53\42\4f\98\73\a5\ea\33\34\70\41))"
        );
    }

    #[test]
    fn filetimes_convert_to_unix_milliseconds() {
        // 2020-01-01T00:00:00Z
        assert_eq!(
            filetime_to_unix_ms(132_223_104_000_000_000),
            Some(1_577_836_800_000)
        );
        assert_eq!(password_last_set(Some("0")), PasswordLastSet::MustChange);
        assert_eq!(password_last_set(Some("-5")), PasswordLastSet::MustChange);
        assert_eq!(password_last_set(None), PasswordLastSet::MustChange);
        assert_eq!(
            password_last_set(Some("132223104000000000")),
            PasswordLastSet::At {
                unix_ms: 1_577_836_800_000
            }
        );
    }

    #[test]
    fn policy_intervals_are_negative_ticks() {
        assert_eq!(
            interval_to_duration(Some("-864000000000")),
            Duration::from_secs(86_400)
        );
        assert_eq!(interval_to_duration(Some("0")), Duration::ZERO);
        assert_eq!(
            interval_to_duration(Some("-9223372036854775808")),
            Duration::ZERO
        );
        assert_eq!(interval_to_duration(None), Duration::ZERO);
    }

    #[test]
    fn scope_compares_whole_rdns_ignoring_case_and_spacing() {
        let ou = "OU=Staff,DC=corp,DC=example,DC=test";
        assert!(is_within(
            "CN=Alice,OU=Staff,DC=corp,DC=example,DC=test",
            ou
        ));
        assert!(is_within(
            "cn=alice, ou=staff, dc=CORP, dc=example, dc=test",
            ou
        ));
        assert!(is_within(
            "CN=Alice,OU=Team,OU=Staff,DC=corp,DC=example,DC=test",
            ou
        ));
        assert!(!is_within(
            "CN=Alice,OU=NotStaff,DC=corp,DC=example,DC=test",
            ou
        ));
        assert!(!is_within(
            "CN=Alice,OU=Elsewhere,DC=corp,DC=example,DC=test",
            ou
        ));
        assert!(!is_within(
            "CN=Staff\\,OU=Staff,DC=evil,DC=corp,DC=example,DC=test",
            ou
        ));
        assert!(!is_within(
            "CN=Alice,OU=Staff,DC=corp,DC=example,DC=test",
            ""
        ));
    }

    #[test]
    fn samba_and_windows_refusals_decode() {
        let samba_short = "0000052D: Constraint violation - check_password_restrictions: the password is too short. It should be equal or longer than 7 characters!";
        assert_eq!(
            decode_modify_failure(19, samba_short),
            DirectoryError::PolicyRestriction {
                reason: Some(PolicyReason::TooShort),
                diagnostic: samba_short.into()
            }
        );
        for (text, reason) in [
            (
                "0000052D: ... the password does not meet the complexity criteria!",
                PolicyReason::NotComplex,
            ),
            (
                "0000052D: ... the password was already used (in history)!",
                PolicyReason::InHistory,
            ),
            (
                "0000052D: ... password is too young to change!",
                PolicyReason::TooYoung,
            ),
        ] {
            assert!(
                matches!(decode_modify_failure(19, text), DirectoryError::PolicyRestriction { reason: Some(r), .. } if r == reason)
            );
        }
        let windows = "0000052D: Constraint violation - check_password_restrictions";
        assert!(matches!(
            decode_modify_failure(19, windows),
            DirectoryError::PolicyRestriction { reason: None, .. }
        ));
        assert_eq!(
            decode_modify_failure(
                19,
                "00000056: Constraint violation - The old password specified doesn't match!"
            ),
            DirectoryError::WrongCurrentPassword
        );
        assert!(matches!(
            decode_modify_failure(50, "insufficient access"),
            DirectoryError::InsufficientAccess(_)
        ));
        assert!(matches!(
            decode_modify_failure(53, "0000001F: not encrypted"),
            DirectoryError::Refused { code: 53, .. }
        ));
    }

    #[test]
    fn bind_failures_name_their_reason() {
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 773, v1db1";
        assert_eq!(bind_failure_reason(text), "password must be changed");
        assert_eq!(bind_failure_reason("data 775, v1db1"), "account locked out");
        assert_eq!(bind_failure_reason("nonsense"), "bind refused");
    }

    /// A `replPropertyMetaDataBlob` with `entries` of (attid, version, seconds since 1601).
    fn metadata_blob(entries: &[(u32, u32, u64)]) -> Vec<u8> {
        let mut blob = Vec::new();
        blob.extend(1u32.to_le_bytes());
        blob.extend(0u32.to_le_bytes());
        blob.extend((entries.len() as u32).to_le_bytes());
        blob.extend(0u32.to_le_bytes());
        for (attid, version, seconds) in entries {
            blob.extend(attid.to_le_bytes());
            blob.extend(version.to_le_bytes());
            blob.extend(seconds.to_le_bytes());
            blob.extend([7u8; 16]);
            blob.extend(12345u64.to_le_bytes());
            blob.extend(12346u64.to_le_bytes());
        }
        blob
    }

    #[test]
    fn the_password_stamp_is_the_unicode_pwd_entry_of_the_metadata() {
        let at_2026 = 11_644_473_600 + 1_780_000_000;
        let blob = metadata_blob(&[(0x0009_0001, 9, 5), (0x0009_005A, 4, at_2026), (3, 1, 2)]);
        assert_eq!(
            password_stamp(&blob),
            Some(PasswordStamp {
                version: 4,
                changed_at: UnixMillis(1_780_000_000_000)
            })
        );
        assert_eq!(password_stamp(&metadata_blob(&[(0x0009_0001, 9, 5)])), None);
        assert_eq!(password_stamp(&blob[..blob.len() - 1]), None);
        let mut other_version = blob.clone();
        other_version[0] = 2;
        assert_eq!(password_stamp(&other_version), None);
    }

    /// Properties of the escaping and scope checks that stand between a typed name and LDAP.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Undoes RFC 4515 escaping: `\\xx` is the byte xx.
        fn unescape(text: &str) -> Option<String> {
            let bytes = text.as_bytes();
            let mut out = Vec::new();
            let mut index = 0;
            while index < bytes.len() {
                if bytes[index] == b'\\' {
                    let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    index += 3;
                } else {
                    out.push(bytes[index]);
                    index += 1;
                }
            }
            String::from_utf8(out).ok()
        }

        proptest! {
            /// Whatever a person types, the filter holds it as one value: no metacharacter
            /// survives unescaped, and unescaping gives the name back.
            #[test]
            fn a_typed_name_stays_one_escaped_value(name in "\\PC{0,64}") {
                let filter = user_filter(&name);
                let value = filter
                    .split("(sAMAccountName=")
                    .nth(1)
                    .and_then(|rest| rest.split(")(userPrincipalName=").next())
                    .unwrap();
                prop_assert!(!value.contains(['(', ')', '*', '\0']));
                prop_assert_eq!(unescape(value).unwrap(), name);
                prop_assert_eq!(filter.matches('(').count(), filter.matches(')').count());
            }

            /// Whatever bytes a DC sends as replication metadata, reading the stamp ends
            /// without a panic, and a well-formed blob gives back its entry's version.
            #[test]
            fn any_metadata_is_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = password_stamp(&bytes);
            }

            #[test]
            fn a_well_formed_blob_gives_its_password_version(
                version in any::<u32>(),
                others in proptest::collection::vec((any::<u32>().prop_filter("not unicodePwd", |attid| *attid != 0x0009_005A), any::<u32>(), any::<u64>()), 0..8),
                position in 0usize..8,
            ) {
                let mut entries = others.clone();
                let seconds = 11_644_473_600 + 1_000_000;
                entries.insert(position.min(entries.len()), (0x0009_005A, version, seconds));
                let stamp = password_stamp(&metadata_blob(&entries)).unwrap();
                prop_assert_eq!(stamp.version, version);
                prop_assert_eq!(stamp.changed_at, UnixMillis(1_000_000_000));
            }

            #[test]
            fn the_scope_check_never_panics(dn in "\\PC{0,120}", container in "\\PC{0,120}") {
                let _ = is_within(&dn, &container);
            }

            /// A user directly below an OU is within it, however the DN is cased or spaced, and
            /// a look-alike OU whose name only ends the same is not.
            #[test]
            fn the_scope_check_follows_rdns_not_text(
                user in "[A-Za-z][A-Za-z0-9 ]{0,20}",
                ou in "[A-Za-z][A-Za-z0-9]{0,20}",
                prefix in "[A-Za-z]{1,5}",
            ) {
                let container = format!("OU={ou},DC=corp,DC=example,DC=test");
                let dn = format!("CN={user},{container}");
                prop_assert!(is_within(&dn, &container));
                prop_assert!(is_within(&dn.to_uppercase(), &container.to_lowercase()));
                prop_assert!(is_within(&dn.replace(',', ", "), &container));
                let look_alike = format!("CN={user},OU={prefix}{ou},DC=corp,DC=example,DC=test");
                prop_assert!(!is_within(&look_alike, &container));
                prop_assert!(!is_within(&container, &dn));
            }
        }
    }

    #[test]
    fn a_password_expires_when_the_dc_says_or_by_its_maximum_age() {
        let set = PasswordLastSet::At {
            unix_ms: 1_577_836_800_000,
        };
        let day = Duration::from_secs(86_400);
        // 2020-01-11T00:00:00Z as the DC computes it.
        assert_eq!(
            password_expiry(Some("132231744000000000"), false, set, Some(day)),
            PasswordExpiry::At(UnixMillis(1_578_700_800_000))
        );
        assert_eq!(
            password_expiry(Some("9223372036854775807"), false, set, Some(day)),
            PasswordExpiry::Never
        );
        assert_eq!(
            password_expiry(None, false, set, Some(10 * day)),
            PasswordExpiry::At(UnixMillis(1_578_700_800_000))
        );
        assert_eq!(
            password_expiry(None, false, set, Some(Duration::ZERO)),
            PasswordExpiry::Never
        );
        assert_eq!(
            password_expiry(None, false, set, None),
            PasswordExpiry::Unknown
        );
        assert_eq!(
            password_expiry(Some("garbage"), false, set, Some(day)),
            PasswordExpiry::Unknown
        );
        assert_eq!(
            password_expiry(Some("132231744000000000"), true, set, Some(day)),
            PasswordExpiry::Never
        );
        assert_eq!(
            password_expiry(Some("0"), false, PasswordLastSet::MustChange, Some(day)),
            PasswordExpiry::Never
        );
    }
}
