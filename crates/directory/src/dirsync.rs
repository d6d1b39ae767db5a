//! Deltas read with DirSync (LDAP_SERVER_DIRSYNC_OID), for a service account that holds
//! Replicating Directory Changes on the domain.
//!
//! DirSync hands back a cookie, the DC's own record of what this client has seen, and on the next
//! search only the objects changed since, tombstones included, whether or not the account may list
//! CN=Deleted Objects. Each changed object comes with only its changed attributes, so a tombstone
//! becomes a removal at once and every other object is read again whole, by anchor, through the
//! same translation as a full sync.

use std::collections::HashSet;

use bytes::BytesMut;
use ldap3::asn1::{
    ASNTag, Integer, OctetString, Sequence, StructureTag, Tag, TagClass, Types, parse_tag, write,
};
use ldap3::controls::RawControl;
use ldap3::{LdapResult, Scope, SearchEntry};
use tokio::sync::mpsc;
use writeback_proto::sync::{DirSyncCookie, ObjectAnchor, SyncChange};

use crate::DirectoryError;
use crate::active_directory::{ActiveDirectory, first};
use crate::decode::anchor_assertion;
use crate::sync::{SYNC_ATTRIBUTES, changes_for_entry, entry_anchor, extended_dn_control};

pub(crate) const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";
/// A suggestion to the DC of how much to return at once; it says when there is more.
const DIRSYNC_MAX_BYTES: i64 = 1 << 20;
/// Changed objects read again per search, each an `objectGUID` assertion in one filter.
const REREAD_CHUNK: usize = 100;
/// LDAP result 50, insufficientAccessRights: the account lacks Replicating Directory Changes.
const INSUFFICIENT_ACCESS_RIGHTS: u32 = 50;

/// Users and groups, tombstones included (DirSync always shows them).
const DIRSYNC_FILTER: &str = "(|(objectClass=user)(objectClass=group))";

/// An assertion nothing satisfies, and one the DC answers from its index: the all-zero GUID.
const MATCHES_NOTHING: &str = r"(objectGUID=\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00)";

/// What DirSync watches: an object is returned only when one of these changed. Beyond what sync
/// reads, `name` changes on every rename and move (the RDN attribute itself is never returned),
/// and `lockoutTime` on every lockout and unlock (the lockout flag sync reads is computed).
fn watched_attributes() -> Vec<&'static str> {
    SYNC_ATTRIBUTES
        .iter()
        .copied()
        .chain(["name", "lockoutTime"])
        .collect()
}

impl ActiveDirectory {
    pub(crate) async fn dirsync_cookie_now(&self) -> Result<DirSyncCookie, DirectoryError> {
        let (_, cookie) = self
            .dirsync_search(&DirSyncCookie::from_bytes(Vec::new()), MATCHES_NOTHING)
            .await?;
        Ok(cookie)
    }

    pub(crate) async fn stream_dirsync_changes(
        &self,
        cookie: &DirSyncCookie,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> Result<DirSyncCookie, DirectoryError> {
        let (changed, next_cookie) = self.dirsync_search(cookie, DIRSYNC_FILTER).await?;
        let mut to_read = Vec::new();
        for change in changed {
            match change {
                Changed::Deleted(anchor) => {
                    if changes.send(SyncChange::Remove { anchor }).await.is_err() {
                        return Ok(next_cookie);
                    }
                }
                Changed::Modified(anchor) => to_read.push(anchor),
            }
        }
        let domain_root = self.domain_root().await?;
        let ages = self.last_maximum_ages();
        for chunk in to_read.chunks(REREAD_CHUNK) {
            let assertions: String = chunk.iter().map(anchor_assertion).collect();
            let filter = format!("(&{DIRSYNC_FILTER}(|{assertions}))");
            let mut found = HashSet::new();
            let sent = self
                .stream_changes(
                    &domain_root,
                    &filter,
                    vec![extended_dn_control()],
                    changes,
                    |entry| {
                        if let Some(anchor) = entry_anchor(&entry) {
                            found.insert(anchor);
                        }
                        changes_for_entry(entry, Some(bases), &ages)
                    },
                )
                .await?;
            if !sent {
                return Ok(next_cookie);
            }
            // Gone between the DirSync answer and this read: deleted since.
            for anchor in chunk.iter().filter(|anchor| !found.contains(anchor)) {
                if changes
                    .send(SyncChange::Remove { anchor: *anchor })
                    .await
                    .is_err()
                {
                    return Ok(next_cookie);
                }
            }
        }
        Ok(next_cookie)
    }

    /// DirSync searches from `cookie` until the DC says there is no more; the objects changed, in
    /// the order first seen, and the cookie to continue from.
    async fn dirsync_search(
        &self,
        cookie: &DirSyncCookie,
        filter: &str,
    ) -> Result<(Vec<Changed>, DirSyncCookie), DirectoryError> {
        let domain_root = self.domain_root().await?;
        let connection = self.sync_connection().await?;
        let mut ldap = connection.ldap.clone();
        let mut cookie = cookie.clone();
        let mut changed = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let ldap3::SearchResult(entries, result) = ldap
                .with_controls(vec![dirsync_control(&cookie)])
                .with_timeout(self.operation_timeout())
                .search(&domain_root, Scope::Subtree, filter, watched_attributes())
                .await
                .map_err(|error| self.sync_failure(error))?;
            if result.rc == INSUFFICIENT_ACCESS_RIGHTS {
                return Err(DirectoryError::InsufficientAccess(format!(
                    "DirSync needs Replicating Directory Changes on {domain_root}: {}",
                    result.text
                )));
            }
            if result.rc != 0 {
                return Err(DirectoryError::Refused {
                    code: result.rc,
                    diagnostic: result.text,
                });
            }
            for entry in entries.into_iter().map(SearchEntry::construct) {
                let Some(change) = Changed::from_entry(&entry) else {
                    continue;
                };
                if seen.insert(change.anchor()) {
                    changed.push(change);
                }
            }
            let response = dirsync_response(&result).ok_or_else(|| DirectoryError::Refused {
                code: result.rc,
                diagnostic:
                    "the domain controller answered a DirSync search without a DirSync cookie"
                        .into(),
            })?;
            cookie = response.cookie;
            if !response.more {
                return Ok((changed, cookie));
            }
        }
    }
}

/// One object in a DirSync answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changed {
    Deleted(ObjectAnchor),
    Modified(ObjectAnchor),
}

impl Changed {
    /// `None` for an entry without an `objectGUID`: DirSync always returns it, so such an entry
    /// is not an object.
    fn from_entry(entry: &SearchEntry) -> Option<Self> {
        let anchor = entry_anchor(entry)?;
        let deleted = first(&entry.attrs, "isDeleted")
            .is_some_and(|value| value.eq_ignore_ascii_case("TRUE"));
        Some(if deleted {
            Self::Deleted(anchor)
        } else {
            Self::Modified(anchor)
        })
    }

    fn anchor(self) -> ObjectAnchor {
        match self {
            Self::Deleted(anchor) | Self::Modified(anchor) => anchor,
        }
    }
}

/// `DirSyncRequestValue ::= SEQUENCE { Flags INTEGER, MaxBytes INTEGER, Cookie OCTET STRING }`,
/// with no flags: the DC checks Replicating Directory Changes and returns every object.
fn dirsync_control(cookie: &DirSyncCookie) -> RawControl {
    let value = Tag::Sequence(Sequence {
        inner: vec![
            Tag::Integer(Integer {
                inner: 0,
                ..Default::default()
            }),
            Tag::Integer(Integer {
                inner: DIRSYNC_MAX_BYTES,
                ..Default::default()
            }),
            Tag::OctetString(OctetString {
                inner: cookie.as_bytes().to_vec(),
                ..Default::default()
            }),
        ],
        ..Default::default()
    })
    .into_structure();
    let mut encoded = BytesMut::new();
    // Encoding into memory cannot fail; an empty value would make the DC refuse the search.
    let _ = write::encode_into(&mut encoded, value);
    RawControl {
        ctype: DIRSYNC_OID.into(),
        crit: true,
        val: Some(encoded.to_vec()),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct DirSyncResponse {
    more: bool,
    cookie: DirSyncCookie,
}

/// The DirSync control of a search result: the same three fields, where a non-zero flag says
/// that more changes are waiting.
fn dirsync_response(result: &LdapResult) -> Option<DirSyncResponse> {
    let control = result
        .ctrls
        .iter()
        .find(|control| control.1.ctype == DIRSYNC_OID)?;
    parse_dirsync_value(control.1.val.as_deref()?)
}

fn parse_dirsync_value(value: &[u8]) -> Option<DirSyncResponse> {
    let (_, tag) = parse_tag(value).ok()?;
    let mut fields = tag.expect_constructed()?.into_iter();
    let flags = universal(fields.next()?, Types::Integer)?;
    let _max_bytes = universal(fields.next()?, Types::Integer)?;
    let cookie = universal(fields.next()?, Types::OctetString)?;
    Some(DirSyncResponse {
        more: flags.iter().any(|byte| *byte != 0),
        cookie: DirSyncCookie::from_bytes(cookie),
    })
}

fn universal(tag: StructureTag, kind: Types) -> Option<Vec<u8>> {
    tag.match_class(TagClass::Universal)?
        .match_id(kind as u64)?
        .expect_primitive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_control_is_the_ber_the_dc_expects() {
        let control = dirsync_control(&DirSyncCookie::from_bytes(vec![0xAB, 0xCD]));
        assert_eq!(control.ctype, DIRSYNC_OID);
        assert!(control.crit, "DirSync must be critical");
        assert_eq!(
            control.val.unwrap(),
            [
                0x30, 0x0c, // SEQUENCE
                0x02, 0x01, 0x00, // flags 0
                0x02, 0x03, 0x10, 0x00, 0x00, // max bytes 1 MiB
                0x04, 0x02, 0xAB, 0xCD, // cookie
            ]
        );
    }

    #[test]
    fn a_response_gives_its_cookie_and_whether_more_is_waiting() {
        let last = [
            0x30, 0x09, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x01, 0x7F,
        ];
        assert_eq!(
            parse_dirsync_value(&last),
            Some(DirSyncResponse {
                more: false,
                cookie: DirSyncCookie::from_bytes(vec![0x7F]),
            })
        );
        let more = [
            0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x04, 0x01, 0x7F,
        ];
        assert!(parse_dirsync_value(&more).unwrap().more);
    }

    #[test]
    fn a_malformed_response_is_no_response() {
        for value in [
            &[][..],
            &[0x30, 0x03, 0x02, 0x01, 0x00][..],
            &[
                0x30, 0x09, 0x04, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x01, 0x7F,
            ][..],
            &[0x30, 0x09, 0x02, 0x01][..],
        ] {
            assert_eq!(parse_dirsync_value(value), None, "{value:02x?}");
        }
    }

    #[test]
    fn a_tombstone_is_a_deletion_and_anything_else_a_modification() {
        let guid = [7u8; 16];
        let mut entry = SearchEntry {
            dn: "CN=x\\0ADEL:…,CN=Deleted Objects,DC=x".into(),
            attrs: Default::default(),
            bin_attrs: [("objectGUID".to_owned(), vec![guid.to_vec()])].into(),
        };
        assert_eq!(
            Changed::from_entry(&entry),
            Some(Changed::Modified(ObjectAnchor::from_bytes(guid)))
        );
        entry.attrs.insert("isDeleted".into(), vec!["TRUE".into()]);
        assert_eq!(
            Changed::from_entry(&entry),
            Some(Changed::Deleted(ObjectAnchor::from_bytes(guid)))
        );
        entry.bin_attrs.clear();
        assert_eq!(Changed::from_entry(&entry), None);
    }

    /// Properties of the DirSync response parser, which reads what the directory returns.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// The BER a DC sends: SEQUENCE { INTEGER flags, INTEGER max, OCTET STRING cookie }.
        fn response(flags: u8, cookie: &[u8]) -> Vec<u8> {
            let mut body = vec![0x02, 0x01, flags, 0x02, 0x01, 0x00, 0x04];
            body.extend(length(cookie.len()));
            body.extend_from_slice(cookie);
            let mut value = vec![0x30];
            value.extend(length(body.len()));
            value.extend(body);
            value
        }

        fn length(length: usize) -> Vec<u8> {
            match length {
                0..=127 => vec![length as u8],
                128..=255 => vec![0x81, length as u8],
                _ => vec![0x82, (length >> 8) as u8, length as u8],
            }
        }

        proptest! {
            #[test]
            fn any_bytes_parse_to_a_response_or_nothing(bytes in vec(any::<u8>(), 0..400)) {
                let _ = parse_dirsync_value(&bytes);
            }

            #[test]
            fn a_response_gives_back_its_cookie_and_flag(
                flags in any::<u8>(),
                cookie in vec(any::<u8>(), 0..1000),
            ) {
                let parsed = parse_dirsync_value(&response(flags, &cookie)).unwrap();
                prop_assert_eq!(parsed.more, flags != 0);
                prop_assert_eq!(parsed.cookie.as_bytes(), cookie.as_slice());
            }

            #[test]
            fn the_request_control_carries_the_cookie_whole(cookie in vec(any::<u8>(), 0..1000)) {
                let control = dirsync_control(&DirSyncCookie::from_bytes(cookie.clone()));
                let value = control.val.unwrap();
                prop_assert!(value.ends_with(&cookie));
                prop_assert_eq!(value[0], 0x30);
            }
        }
    }
}
