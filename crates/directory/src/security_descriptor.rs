//! Windows security descriptors as AD stores them in `nTSecurityDescriptor` (self-relative form),
//! read far enough to answer one question: does this DACL give these SIDs this right on user
//! objects below, or on the object itself?
//!
//! Evaluation follows the DACL in order, as the DC does: the first ACE that names one of the
//! account's SIDs and covers the right decides, allow or deny.

use writeback_proto::sync::ObjectAnchor;

use crate::sync::sid_to_string;

/// `SE_DACL_PROTECTED`: the object does not inherit ACEs from its parent.
const DACL_PROTECTED: u16 = 0x1000;

const ACCESS_ALLOWED: u8 = 0x00;
const ACCESS_DENIED: u8 = 0x01;
const ACCESS_ALLOWED_OBJECT: u8 = 0x05;
const ACCESS_DENIED_OBJECT: u8 = 0x06;

pub const CONTAINER_INHERIT: u8 = 0x02;
pub const INHERIT_ONLY: u8 = 0x08;
const INHERITED: u8 = 0x10;

const DACL_PRESENT: u16 = 0x0004;
const DACL_AUTO_INHERIT_REQUESTED: u16 = 0x0100;
const DACL_AUTO_INHERITED: u16 = 0x0400;
const SELF_RELATIVE: u16 = 0x8000;
/// The ACL revision that allows object ACEs.
const ACL_REVISION_DS: u8 = 4;

const OBJECT_TYPE_PRESENT: u32 = 0x1;
const INHERITED_OBJECT_TYPE_PRESENT: u32 = 0x2;

const GENERIC_ALL: u32 = 0x1000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;

/// The `user` class's schemaIDGUID.
pub const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";

/// What a right needs in an ACE's access mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `CR`, an extended right (control access).
    ControlAccess,
    /// `WP`, writing a property.
    WriteProperty,
}

impl Access {
    pub fn mask(self) -> u32 {
        match self {
            Self::ControlAccess => 0x100,
            Self::WriteProperty => 0x20,
        }
    }

    fn covered_by(self, mask: u32) -> bool {
        mask & (self.mask() | GENERIC_ALL) != 0
            || (self == Self::WriteProperty && mask & GENERIC_WRITE != 0)
    }

    /// The SDDL right letters.
    pub fn sddl(self) -> &'static str {
        match self {
            Self::ControlAccess => "CR",
            Self::WriteProperty => "WP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    pub allow: bool,
    pub flags: u8,
    pub mask: u32,
    /// The right, property or property set the ACE is limited to; `None` means all of them.
    pub object_type: Option<String>,
    /// The class of objects that inherit it; `None` means all classes.
    pub inherited_object_type: Option<String>,
    pub sid: String,
}

impl Ace {
    /// The ACE in SDDL, as an administrator would see it in `dsacls` or `samba-tool dsacl get`.
    pub fn sddl(&self) -> String {
        let mut flags = String::new();
        for (bit, letters) in [
            (0x01, "OI"),
            (CONTAINER_INHERIT, "CI"),
            (0x04, "NP"),
            (INHERIT_ONLY, "IO"),
            (INHERITED, "ID"),
        ] {
            if self.flags & bit != 0 {
                flags.push_str(letters);
            }
        }
        let kind = match (self.allow, self.is_object_ace()) {
            (true, true) => "OA",
            (true, false) => "A",
            (false, true) => "OD",
            (false, false) => "D",
        };
        let rights = match self.mask {
            0x100 => "CR".to_owned(),
            0x20 => "WP".to_owned(),
            mask => format!("0x{mask:x}"),
        };
        format!(
            "({kind};{flags};{rights};{};{};{})",
            self.object_type.as_deref().unwrap_or_default(),
            self.inherited_object_type.as_deref().unwrap_or_default(),
            self.sid
        )
    }

    /// The ACE's binary form; `None` if its SID or a GUID is not well formed.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut body = self.mask.to_le_bytes().to_vec();
        let kind = if self.is_object_ace() {
            let mut present = 0;
            if self.object_type.is_some() {
                present |= OBJECT_TYPE_PRESENT;
            }
            if self.inherited_object_type.is_some() {
                present |= INHERITED_OBJECT_TYPE_PRESENT;
            }
            body.extend_from_slice(&present.to_le_bytes());
            for guid in [&self.object_type, &self.inherited_object_type]
                .into_iter()
                .flatten()
            {
                body.extend_from_slice(guid.parse::<ObjectAnchor>().ok()?.as_bytes());
            }
            if self.allow {
                ACCESS_ALLOWED_OBJECT
            } else {
                ACCESS_DENIED_OBJECT
            }
        } else if self.allow {
            ACCESS_ALLOWED
        } else {
            ACCESS_DENIED
        };
        body.extend(sid_from_string(&self.sid)?);
        let size = u16::try_from(body.len() + 4).ok()?;
        let mut ace = vec![kind, self.flags];
        ace.extend_from_slice(&size.to_le_bytes());
        ace.extend(body);
        Some(ace)
    }

    fn is_object_ace(&self) -> bool {
        self.object_type.is_some() || self.inherited_object_type.is_some()
    }

    /// Whether this ACE reaches a user object created below the object holding it.
    fn reaches_child_users(&self) -> bool {
        self.flags & CONTAINER_INHERIT != 0
            && self
                .inherited_object_type
                .as_deref()
                .is_none_or(|class| class.eq_ignore_ascii_case(USER_CLASS))
    }

    fn reaches_this_object(&self) -> bool {
        self.flags & INHERIT_ONLY == 0 && self.inherited_object_type.is_none()
    }

    fn covers(&self, access: Access, object_types: &[&str]) -> bool {
        access.covered_by(self.mask)
            && self.object_type.as_deref().is_none_or(|granted| {
                object_types
                    .iter()
                    .any(|wanted| granted.eq_ignore_ascii_case(wanted))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDescriptor {
    pub control: u16,
    pub dacl: Vec<Ace>,
}

/// Where a right must take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On user objects below the object whose descriptor is read.
    ChildUsers,
    /// On the object itself.
    ThisObject,
}

/// What the DACL says about a right for a set of SIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed(Ace),
    Denied(Ace),
    Missing,
}

impl SecurityDescriptor {
    /// Parses a self-relative descriptor; `None` when it is malformed.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let control = u16::from_le_bytes([*bytes.get(2)?, *bytes.get(3)?]);
        let dacl_offset = usize::try_from(u32_at(bytes, 16)?).ok()?;
        let dacl = if dacl_offset == 0 {
            Vec::new()
        } else {
            parse_acl(bytes.get(dacl_offset..)?)?
        };
        Some(Self { control, dacl })
    }

    pub fn inheritance_disabled(&self) -> bool {
        self.control & DACL_PROTECTED != 0
    }

    /// The first ACE naming one of `sids` that covers `access` to one of `object_types` at
    /// `target` decides.
    pub fn verdict(
        &self,
        sids: &[String],
        access: Access,
        object_types: &[&str],
        target: Target,
    ) -> Verdict {
        let decisive = self.dacl.iter().find(|ace| {
            sids.iter().any(|sid| sid == &ace.sid)
                && ace.covers(access, object_types)
                && match target {
                    Target::ChildUsers => ace.reaches_child_users(),
                    Target::ThisObject => ace.reaches_this_object(),
                }
        });
        match decisive {
            Some(ace) if ace.allow => Verdict::Allowed(ace.clone()),
            Some(ace) => Verdict::Denied(ace.clone()),
            None => Verdict::Missing,
        }
    }
}

/// `descriptor` with `aces` added after its explicit ACEs (before the first inherited one, which
/// keeps the DACL in canonical order), as a DACL-only descriptor to write back under the SD-flags
/// control that read it. An ACE the DACL already holds explicitly is not added twice.
pub fn add_aces(descriptor: &[u8], aces: &[Ace]) -> Option<Vec<u8>> {
    let parsed = SecurityDescriptor::parse(descriptor)?;
    let control = u16::from_le_bytes([*descriptor.get(2)?, *descriptor.get(3)?]);
    let dacl_offset = usize::try_from(u32_at(descriptor, 16)?).ok()?;
    let mut raw_aces: Vec<Vec<u8>> = Vec::new();
    if dacl_offset != 0 {
        let acl = descriptor.get(dacl_offset..)?;
        let count = u16::from_le_bytes([*acl.get(4)?, *acl.get(5)?]);
        let mut offset = 8;
        for _ in 0..count {
            let size = usize::from(u16::from_le_bytes([
                *acl.get(offset + 2)?,
                *acl.get(offset + 3)?,
            ]));
            raw_aces.push(acl.get(offset..offset + size)?.to_vec());
            offset += size;
        }
    }
    let first_inherited = raw_aces
        .iter()
        .position(|ace| ace.get(1).is_some_and(|flags| flags & INHERITED != 0))
        .unwrap_or(raw_aces.len());
    let mut added = Vec::new();
    for ace in aces {
        if !parsed.dacl.contains(ace) {
            added.push(ace.encode()?);
        }
    }
    raw_aces.splice(first_inherited..first_inherited, added);
    let body: Vec<u8> = raw_aces.concat();
    let mut acl = vec![ACL_REVISION_DS, 0];
    acl.extend_from_slice(&u16::try_from(body.len() + 8).ok()?.to_le_bytes());
    acl.extend_from_slice(&u16::try_from(raw_aces.len()).ok()?.to_le_bytes());
    acl.extend_from_slice(&[0, 0]);
    acl.extend(body);
    let kept = control & (DACL_PROTECTED | DACL_AUTO_INHERITED | DACL_AUTO_INHERIT_REQUESTED);
    let mut new = vec![1, 0];
    new.extend_from_slice(&(kept | DACL_PRESENT | SELF_RELATIVE).to_le_bytes());
    new.extend_from_slice(&[0; 12]);
    new.extend_from_slice(&20u32.to_le_bytes());
    new.extend(acl);
    Some(new)
}

/// `S-1-5-21-…` in its binary form.
fn sid_from_string(text: &str) -> Option<Vec<u8>> {
    let mut parts = text.strip_prefix("S-")?.split('-');
    let revision: u8 = parts.next()?.parse().ok()?;
    let authority: u64 = parts.next()?.parse().ok()?;
    let sub_authorities: Vec<u32> = parts.map(|part| part.parse().ok()).collect::<Option<_>>()?;
    let mut bytes = vec![revision, u8::try_from(sub_authorities.len()).ok()?];
    bytes.extend_from_slice(authority.to_be_bytes().get(2..)?);
    for sub in sub_authorities {
        bytes.extend_from_slice(&sub.to_le_bytes());
    }
    Some(bytes)
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn parse_acl(acl: &[u8]) -> Option<Vec<Ace>> {
    let count = u16::from_le_bytes([*acl.get(4)?, *acl.get(5)?]);
    let mut offset = 8;
    let mut aces = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let kind = *acl.get(offset)?;
        let flags = *acl.get(offset + 1)?;
        let size = usize::from(u16::from_le_bytes([
            *acl.get(offset + 2)?,
            *acl.get(offset + 3)?,
        ]));
        let body = acl.get(offset + 4..offset + size)?;
        offset += size;
        let ace = match kind {
            ACCESS_ALLOWED | ACCESS_DENIED => Ace {
                allow: kind == ACCESS_ALLOWED,
                flags,
                mask: u32_at(body, 0)?,
                object_type: None,
                inherited_object_type: None,
                sid: sid_to_string(sid_bytes(body.get(4..)?)?)?,
            },
            ACCESS_ALLOWED_OBJECT | ACCESS_DENIED_OBJECT => {
                let present = u32_at(body, 4)?;
                let mut position = 8;
                let mut guid = |wanted: bool| -> Option<Option<String>> {
                    if !wanted {
                        return Some(None);
                    }
                    let bytes: [u8; 16] = body.get(position..position + 16)?.try_into().ok()?;
                    position += 16;
                    // Schema GUIDs are stored in the same byte order as objectGUID.
                    Some(Some(ObjectAnchor::from_bytes(bytes).to_string()))
                };
                let object_type = guid(present & OBJECT_TYPE_PRESENT != 0)?;
                let inherited_object_type = guid(present & INHERITED_OBJECT_TYPE_PRESENT != 0)?;
                Ace {
                    allow: kind == ACCESS_ALLOWED_OBJECT,
                    flags,
                    mask: u32_at(body, 0)?,
                    object_type,
                    inherited_object_type,
                    sid: sid_to_string(sid_bytes(body.get(position..)?)?)?,
                }
            }
            // Audit, alarm and callback ACEs grant nothing.
            _ => continue,
        };
        aces.push(ace);
    }
    Some(aces)
}

/// The SID at the start of `bytes`, exactly as long as its sub-authority count says.
fn sid_bytes(bytes: &[u8]) -> Option<&[u8]> {
    let count = usize::from(*bytes.get(1)?);
    bytes.get(..8 + count * 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESET_PASSWORD: &str = "00299570-246d-11d0-a768-00aa006e0529";
    const ACCOUNT: &str = "S-1-5-21-1-2-3-1105";

    fn sid(text: &str) -> Vec<u8> {
        let parts: Vec<u64> = text
            .split('-')
            .skip(1)
            .map(|part| part.parse().unwrap())
            .collect();
        let mut bytes = vec![parts[0] as u8, (parts.len() - 2) as u8];
        bytes.extend_from_slice(&parts[1].to_be_bytes()[2..]);
        for sub in &parts[2..] {
            bytes.extend_from_slice(&(*sub as u32).to_le_bytes());
        }
        bytes
    }

    fn object_ace(
        kind: u8,
        flags: u8,
        mask: u32,
        object_type: Option<&str>,
        class: Option<&str>,
        who: &str,
    ) -> Vec<u8> {
        let mut body = mask.to_le_bytes().to_vec();
        let present = u32::from(object_type.is_some()) | (u32::from(class.is_some()) << 1);
        body.extend_from_slice(&present.to_le_bytes());
        for guid in [object_type, class].into_iter().flatten() {
            body.extend_from_slice(guid.parse::<ObjectAnchor>().unwrap().as_bytes());
        }
        body.extend(sid(who));
        let mut ace = vec![kind, flags];
        ace.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
        ace.extend(body);
        ace
    }

    fn descriptor(control: u16, aces: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = aces.concat();
        let mut bytes = vec![1, 0];
        bytes.extend_from_slice(&control.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(&20u32.to_le_bytes());
        bytes.extend_from_slice(&[4, 0]);
        bytes.extend_from_slice(&((body.len() + 8) as u16).to_le_bytes());
        bytes.extend_from_slice(&(aces.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend(body);
        bytes
    }

    fn reset_password_on_users(kind: u8, who: &str) -> Vec<u8> {
        object_ace(
            kind,
            CONTAINER_INHERIT | INHERIT_ONLY,
            0x100,
            Some(RESET_PASSWORD),
            Some(USER_CLASS),
            who,
        )
    }

    fn verdict(bytes: &[u8]) -> Verdict {
        SecurityDescriptor::parse(bytes).unwrap().verdict(
            &[ACCOUNT.to_owned(), "S-1-1-0".to_owned()],
            Access::ControlAccess,
            &[RESET_PASSWORD],
            Target::ChildUsers,
        )
    }

    #[test]
    fn the_delegated_grant_is_found_and_printed_as_sddl() {
        let bytes = descriptor(
            0,
            &[reset_password_on_users(ACCESS_ALLOWED_OBJECT, ACCOUNT)],
        );
        let Verdict::Allowed(ace) = verdict(&bytes) else {
            panic!("expected the grant to be found");
        };
        assert_eq!(
            ace.sddl(),
            format!("(OA;CIIO;CR;{RESET_PASSWORD};{USER_CLASS};{ACCOUNT})")
        );
    }

    #[test]
    fn a_grant_to_someone_else_or_another_right_or_class_is_missing() {
        let other_account = reset_password_on_users(ACCESS_ALLOWED_OBJECT, "S-1-5-21-1-2-3-9999");
        let other_right = object_ace(
            ACCESS_ALLOWED_OBJECT,
            CONTAINER_INHERIT,
            0x100,
            Some("ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501"),
            None,
            ACCOUNT,
        );
        let other_class = object_ace(
            ACCESS_ALLOWED_OBJECT,
            CONTAINER_INHERIT,
            0x100,
            Some(RESET_PASSWORD),
            Some("bf967a86-0de6-11d0-a285-00aa003049e2"),
            ACCOUNT,
        );
        let not_inherited = object_ace(
            ACCESS_ALLOWED_OBJECT,
            0,
            0x100,
            Some(RESET_PASSWORD),
            None,
            ACCOUNT,
        );
        let bytes = descriptor(0, &[other_account, other_right, other_class, not_inherited]);
        assert_eq!(verdict(&bytes), Verdict::Missing);
    }

    #[test]
    fn a_deny_before_the_grant_wins_and_full_control_counts() {
        let deny = reset_password_on_users(ACCESS_DENIED_OBJECT, "S-1-1-0");
        let allow = reset_password_on_users(ACCESS_ALLOWED_OBJECT, ACCOUNT);
        assert!(matches!(
            verdict(&descriptor(0, &[deny, allow])),
            Verdict::Denied(ace) if ace.sid == "S-1-1-0"
        ));
        let full_control = object_ace(
            ACCESS_ALLOWED_OBJECT,
            CONTAINER_INHERIT,
            0xF01FF,
            None,
            None,
            ACCOUNT,
        );
        assert!(matches!(
            verdict(&descriptor(0, &[full_control])),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn protection_from_inheritance_is_read_from_the_control_bits() {
        let parsed = SecurityDescriptor::parse(&descriptor(DACL_PROTECTED | 0x8004, &[])).unwrap();
        assert!(parsed.inheritance_disabled());
        assert!(
            !SecurityDescriptor::parse(&descriptor(0x8004, &[]))
                .unwrap()
                .inheritance_disabled()
        );
    }

    #[test]
    fn added_aces_go_after_the_explicit_ones_once() {
        let explicit = object_ace(ACCESS_ALLOWED_OBJECT, 0, 0x20, None, None, "S-1-5-11");
        let inherited = object_ace(
            ACCESS_ALLOWED_OBJECT,
            INHERITED | CONTAINER_INHERIT,
            0x20,
            None,
            None,
            "S-1-5-18",
        );
        let before = descriptor(
            DACL_PROTECTED | DACL_PRESENT | SELF_RELATIVE,
            &[explicit, inherited],
        );
        let grant = Ace {
            allow: true,
            flags: CONTAINER_INHERIT | INHERIT_ONLY,
            mask: 0x100,
            object_type: Some(RESET_PASSWORD.into()),
            inherited_object_type: Some(USER_CLASS.into()),
            sid: ACCOUNT.into(),
        };
        let after = add_aces(&before, std::slice::from_ref(&grant)).unwrap();
        let parsed = SecurityDescriptor::parse(&after).unwrap();
        let sids: Vec<&str> = parsed.dacl.iter().map(|ace| ace.sid.as_str()).collect();
        assert_eq!(sids, ["S-1-5-11", ACCOUNT, "S-1-5-18"]);
        assert_eq!(parsed.dacl[1], grant);
        assert!(parsed.inheritance_disabled(), "protection is kept");
        assert!(matches!(verdict(&after), Verdict::Allowed(_)));
        assert_eq!(add_aces(&after, &[grant]).unwrap(), after, "added once");
    }

    #[test]
    fn sids_survive_a_round_trip() {
        for text in [
            "S-1-5-21-1917347869-82779117-1683711843-1102",
            "S-1-1-0",
            "S-1-5-32-544",
        ] {
            assert_eq!(
                sid_to_string(&sid_from_string(text).unwrap()).as_deref(),
                Some(text)
            );
        }
        for text in ["", "S-1", "S-1-x-0", "1-5-32", "S-1-5-99999999999"] {
            assert_eq!(sid_from_string(text), None, "{text}");
        }
    }

    #[test]
    fn malformed_descriptors_are_refused() {
        let good = descriptor(
            0,
            &[reset_password_on_users(ACCESS_ALLOWED_OBJECT, ACCOUNT)],
        );
        for length in [0, 3, 19, 27, good.len() - 1] {
            assert_eq!(
                SecurityDescriptor::parse(&good[..length]),
                None,
                "{length} bytes"
            );
        }
    }

    /// Properties of the descriptor parser, which reads what the directory returns.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        fn guid() -> impl Strategy<Value = Option<String>> {
            proptest::option::of(
                any::<[u8; 16]>().prop_map(|bytes| ObjectAnchor::from_bytes(bytes).to_string()),
            )
        }

        fn ace() -> impl Strategy<Value = Ace> {
            (
                any::<bool>(),
                any::<u8>(),
                any::<u32>(),
                guid(),
                guid(),
                vec(any::<u32>(), 0..6),
            )
                .prop_map(|(allow, flags, mask, object_type, inherited, subs)| Ace {
                    allow,
                    // An inherited ACE is placed after the explicit ones; keep order checkable.
                    flags: flags & !INHERITED,
                    mask,
                    object_type,
                    inherited_object_type: inherited,
                    sid: std::iter::once("S-1-5".to_owned())
                        .chain(subs.iter().map(u32::to_string))
                        .collect::<Vec<_>>()
                        .join("-"),
                })
        }

        /// A descriptor with no DACL: the header only.
        const EMPTY: [u8; 20] = [
            1, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];

        proptest! {
            #[test]
            fn any_bytes_parse_to_a_descriptor_or_nothing(bytes in vec(any::<u8>(), 0..600)) {
                let _ = SecurityDescriptor::parse(&bytes);
                let _ = add_aces(&bytes, &[]);
            }

            #[test]
            fn added_aces_parse_back_as_they_were(aces in vec(ace(), 0..8)) {
                let mut distinct: Vec<Ace> = Vec::new();
                for ace in aces {
                    if !distinct.contains(&ace) {
                        distinct.push(ace);
                    }
                }
                let encoded = add_aces(&EMPTY, &distinct).unwrap();
                let parsed = SecurityDescriptor::parse(&encoded).unwrap();
                prop_assert_eq!(&parsed.dacl, &distinct);
                let again = add_aces(&encoded, &distinct).unwrap();
                prop_assert_eq!(
                    SecurityDescriptor::parse(&again).unwrap().dacl,
                    distinct,
                    "an ACE already held is not added twice"
                );
            }
        }
    }
}
