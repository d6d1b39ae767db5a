//! Directory sync on the wire: the agent streams batches of changes, the cloud applies each batch
//! and its cursor in one transaction and acknowledges it.
//!
//! The cursor lives in the cloud, next to the objects it describes. A reconnecting agent is told
//! the last committed cursor and continues from there, so an interruption at any point loses
//! nothing and, because every change is an idempotent upsert or removal by anchor, duplicates
//! nothing either.
//!
//! ```text
//! agent                                   cloud
//!   ◀─── sync_start {cursor, full} ────────   (after welcome, and when a full resync is asked for)
//!   ──── sync_batch {seq, changes, cursor} ▶   applied with its cursor in one transaction
//!   ◀─── sync_ack {seq} ───────────────────
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ProtoError;
use crate::time::UnixMillis;

/// An object's `objectGUID`: the anchor that survives renames and moves.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectAnchor([u8; 16]);

impl ObjectAnchor {
    /// From the 16 bytes of `objectGUID` as the directory returns them.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// The first three fields of a GUID are little-endian in `objectGUID`; the text form that
/// administrators see in AD tools prints them big-endian. Byte `i` of the text form is byte
/// `TEXT_ORDER[i]` of the binary value.
const TEXT_ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];

impl fmt::Display for ObjectAnchor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, index) in TEXT_ORDER.iter().enumerate() {
            if matches!(position, 4 | 6 | 8 | 10) {
                formatter.write_str("-")?;
            }
            write!(formatter, "{:02x}", self.0[*index])?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectAnchor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ObjectAnchor({self})")
    }
}

impl FromStr for ObjectAnchor {
    type Err = ProtoError;

    /// Accepts the text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, in either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ProtoError::InvalidValue {
            what: "object anchor",
            problem: "expected a GUID like 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
        };
        let bytes = text.as_bytes();
        if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&dash| bytes[dash] != b'-') {
            return Err(invalid());
        }
        let digits: Vec<u8> = bytes.iter().copied().filter(|&byte| byte != b'-').collect();
        if digits.len() != 32 {
            return Err(invalid());
        }
        let mut anchor = [0u8; 16];
        for (position, index) in TEXT_ORDER.iter().enumerate() {
            let pair = std::str::from_utf8(&digits[position * 2..position * 2 + 2])
                .map_err(|_| invalid())?;
            anchor[*index] = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(anchor))
    }
}

impl Serialize for ObjectAnchor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectAnchor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where sync stands. Update sequence numbers belong to one domain controller, so the cursor names
/// the one it came from; a cursor from another DC means a full sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncCursor {
    /// The DC's `dsServiceName`.
    pub server: String,
    /// Counts full syncs; objects a completed full sync did not see are removed.
    pub generation: u64,
    pub phase: SyncPhase,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "phase", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncPhase {
    /// A full sync of `generation` is under way. It began when the DC's highest committed USN was
    /// `start_usn`; deltas continue from there once it completes, so nothing changed during the
    /// full sync is missed, even across interruptions.
    Full { start_usn: u64 },
    /// Every change up to and including `usn` has been applied. With a DirSync cookie, deltas are
    /// read with DirSync from that cookie; `usn` stays a safe place to poll from should DirSync
    /// stop being allowed.
    Delta {
        usn: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dirsync_cookie: Option<DirSyncCookie>,
    },
}

impl SyncPhase {
    /// Deltas polled by update sequence number, from `usn`.
    pub fn polled_from(usn: u64) -> Self {
        Self::Delta {
            usn,
            dirsync_cookie: None,
        }
    }
}

/// A DirSync cookie: the DC's own opaque record of what a DirSync client has seen, sent back
/// unchanged with the next DirSync search.
#[derive(Clone, PartialEq, Eq)]
pub struct DirSyncCookie(Vec<u8>);

impl DirSyncCookie {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for DirSyncCookie {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "DirSyncCookie({} bytes)", self.0.len())
    }
}

impl Serialize for DirSyncCookie {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64_STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for DirSyncCookie {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64_STANDARD
            .decode(text)
            .map(Self)
            .map_err(|_| serde::de::Error::custom("a DirSync cookie must be base64"))
    }
}

/// When a user's password expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "at", rename_all = "snake_case")]
pub enum PasswordExpiry {
    /// Neither the DC nor the policy the agent can read says: no reminder is sent.
    #[default]
    Unknown,
    /// The password never expires: no maximum age applies, or the account's password is set
    /// never to expire, or it must be changed at next sign-in anyway.
    Never,
    At(UnixMillis),
}

/// One user as the cloud keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncedUser {
    pub anchor: ObjectAnchor,
    pub sid: Option<String>,
    pub sam_account_name: String,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub distinguished_name: String,
    pub enabled: bool,
    pub locked_out: bool,
    /// `None` when `pwdLastSet` is 0 (must change) or was never set.
    pub password_last_set: Option<UnixMillis>,
    pub must_change_password: bool,
    pub password_never_expires: bool,
    /// When the password expires: as the DC computes it (`msDS-UserPasswordExpiryTimeComputed`),
    /// or, where it does not, from `pwdLastSet` and the user's effective maximum age.
    #[serde(default)]
    pub password_expiry: PasswordExpiry,
    /// `adminCount = 1`.
    pub protected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncedGroup {
    pub anchor: ObjectAnchor,
    pub sid: Option<String>,
    pub name: String,
    pub distinguished_name: String,
}

/// Members are sent apart from their group because a large group's list does not fit one frame.
pub const MAX_MEMBERS_PER_CHANGE: usize = 800;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncChange {
    User(SyncedUser),
    Group(SyncedGroup),
    /// Direct members of `group`, by anchor. The first chunk replaces the stored list; later chunks
    /// of the same group add to it.
    Members {
        group: ObjectAnchor,
        members: Vec<ObjectAnchor>,
        replace: bool,
    },
    /// Deleted, or moved out of the synced OUs.
    Remove {
        anchor: ObjectAnchor,
    },
    /// Still in the synced OUs: the listing of a reconciliation, which finds what the service
    /// account cannot see being deleted. Objects a completed reconciliation did not name are
    /// removed.
    Present {
        anchors: Vec<ObjectAnchor>,
    },
    /// The agent could not sync this object; the rest of the sync goes on.
    Error {
        object: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBatch {
    /// Counts batches on this connection, from 1; the acknowledgement names it.
    pub sequence: u64,
    pub changes: Vec<SyncChange>,
    /// Where sync stands once these changes are applied.
    pub cursor: SyncCursor,
    /// The last batch of a full sync: objects the generation did not see are removed.
    pub completes_full_sync: bool,
    /// The last batch of a reconciliation: objects the generation did not see (upserted or named
    /// present) are removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completes_reconciliation: bool,
}

impl SyncBatch {
    /// What this batch is, for logs: counts only, never attribute values.
    pub fn summary(&self) -> String {
        let count = |wanted: fn(&SyncChange) -> bool| {
            self.changes.iter().filter(|change| wanted(change)).count()
        };
        format!(
            "batch {} users={} groups={} removals={} present={} errors={}",
            self.sequence,
            count(|change| matches!(change, SyncChange::User(_))),
            count(|change| matches!(change, SyncChange::Group(_))),
            count(|change| matches!(change, SyncChange::Remove { .. })),
            self.changes
                .iter()
                .map(|change| match change {
                    SyncChange::Present { anchors } => anchors.len(),
                    _ => 0,
                })
                .sum::<usize>(),
            count(|change| matches!(change, SyncChange::Error { .. })),
        )
    }
}

/// Sent by the cloud after the handshake, and again when an administrator asks for a full resync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncStart {
    /// The last committed cursor, `None` before the first sync.
    pub cursor: Option<SyncCursor>,
    /// Start a new full sync whatever the cursor says.
    pub full: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_print_like_active_directory_tools() {
        // objectGUID bytes of a real Samba object and the text form ldbsearch prints for them.
        let bytes = [
            0x80, 0x9d, 0x6c, 0x8b, 0x75, 0x53, 0x42, 0x4f, 0x98, 0x73, 0xa5, 0xea, 0x33, 0x34,
            0x70, 0x41,
        ];
        let anchor = ObjectAnchor::from_bytes(bytes);
        assert_eq!(anchor.to_string(), "8b6c9d80-5375-4f42-9873-a5ea33347041");
        assert_eq!(
            "8B6C9D80-5375-4F42-9873-A5EA33347041"
                .parse::<ObjectAnchor>()
                .unwrap(),
            anchor
        );
    }

    #[test]
    fn malformed_anchors_are_refused() {
        for text in [
            "",
            "8b6c9d80537542f9873a5ea33347041",
            "8b6c9d80-5375-4f42-9873-a5ea3334704",
            "8b6c9d80-5375-4f42-9873-a5ea333470411",
            "8b6c9d80+5375-4f42-9873-a5ea33347041",
            "zz6c9d80-5375-4f42-9873-a5ea33347041",
            "8b6c9d80-5375-4f42-9873-a5ea3334704é",
        ] {
            assert!(text.parse::<ObjectAnchor>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_batch_round_trips_through_a_frame() {
        let batch = SyncBatch {
            sequence: 1,
            changes: vec![
                SyncChange::Members {
                    group: ObjectAnchor::from_bytes([1; 16]),
                    members: vec![ObjectAnchor::from_bytes([2; 16])],
                    replace: true,
                },
                SyncChange::Remove {
                    anchor: ObjectAnchor::from_bytes([3; 16]),
                },
            ],
            cursor: SyncCursor {
                server: "CN=NTDS Settings,CN=DC1".into(),
                generation: 2,
                phase: SyncPhase::Delta {
                    usn: 4008,
                    dirsync_cookie: Some(DirSyncCookie::from_bytes(vec![0, 1, 2, 250])),
                },
            },
            completes_full_sync: false,
            completes_reconciliation: false,
        };
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.contains(r#""dirsync_cookie":"AAEC+g==""#), "{text}");
        assert_eq!(serde_json::from_str::<SyncBatch>(&text).unwrap(), batch);
        assert!(batch.summary().contains("removals=1"));
    }

    #[test]
    fn a_cursor_stored_before_dirsync_still_reads() {
        let stored = r#"{"server":"CN=NTDS Settings,CN=DC1","generation":1,"phase":{"phase":"delta","usn":7}}"#;
        let cursor: SyncCursor = serde_json::from_str(stored).unwrap();
        assert_eq!(cursor.phase, SyncPhase::polled_from(7));
        assert_eq!(serde_json::to_string(&cursor).unwrap(), stored);
    }
}
