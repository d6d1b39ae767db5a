//! Reading users and groups for directory sync: every object under the synced OUs (a full sync),
//! or every object changed after an update sequence number (a delta).
//!
//! Both are paged searches streamed into a channel, so the agent sends the first batch while the DC
//! is still answering. Group members are read with the extended-DN control, which gives each
//! member's `objectGUID`: membership is kept by anchor and survives renames and moves. A delta
//! searches the whole domain with the show-deleted control, so deletions (tombstones) and moves out
//! of the synced OUs are seen as well as changes inside them.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::{Scope, SearchEntry};
use tokio::sync::{Notify, mpsc};
use writeback_proto::ids::parse_hex_16;
use writeback_proto::sync::{
    DirSyncCookie, MAX_MEMBERS_PER_CHANGE, ObjectAnchor, SyncChange, SyncedGroup, SyncedUser,
};
use writeback_proto::time::UnixMillis;

use crate::active_directory::{
    ActiveDirectory, UF_ACCOUNTDISABLE, UF_DONT_EXPIRE_PASSWD, UF_LOCKOUT, first, number,
};
use crate::decode::{self, is_within};
use crate::{DirectoryError, PasswordLastSet};

const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";
/// `LDAP_SERVER_NOTIFICATION_OID`: a search that stays open and returns each object as it
/// changes.
const NOTIFICATION_OID: &str = "1.2.840.113556.1.4.528";
const EXTENDED_DN_OID: &str = "1.2.840.113556.1.4.529";
/// Entries per page of a sync search.
pub const SYNC_PAGE_SIZE: i32 = 500;

/// What sync reads of each user and group.
pub const SYNC_ATTRIBUTES: &[&str] = &[
    "objectClass",
    "objectGUID",
    "objectSid",
    "sAMAccountName",
    "userPrincipalName",
    "mail",
    "displayName",
    "givenName",
    "sn",
    "cn",
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
    "pwdLastSet",
    "msDS-UserPasswordExpiryTimeComputed",
    "msDS-ResultantPSO",
    "adminCount",
    "member",
    "isDeleted",
];

/// The full sync's search filter: people and groups.
/// All a reconciliation reads of each object.
const ANCHOR_ATTRIBUTES: &[&str] = &["objectGUID"];

/// Anchors per [`SyncChange::Present`]: about 20 KiB of JSON, well inside a frame.
const ANCHORS_PER_CHANGE: usize = 500;

pub const FULL_SYNC_FILTER: &str =
    "(|(&(objectCategory=person)(objectClass=user))(objectClass=group))";

/// The maximum password ages a sync falls back on for a DC that does not compute each user's
/// expiry: the domain's, and each readable fine-grained policy's by DN in lower case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaximumAges {
    pub domain: Option<Duration>,
    pub by_policy: HashMap<String, Duration>,
}

impl MaximumAges {
    /// The maximum age for a user whose `msDS-ResultantPSO` is `resultant_policy`; `None` when
    /// the policy that applies could not be read.
    pub fn for_user(&self, resultant_policy: Option<&str>) -> Option<Duration> {
        match resultant_policy {
            Some(policy) => self.by_policy.get(&policy.to_lowercase()).copied(),
            None => self.domain,
        }
    }
}

/// Which DC answers, and how far its changes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPosition {
    /// `dsServiceName`: update sequence numbers are only comparable on the same DC.
    pub server: String,
    pub highest_committed_usn: u64,
}

/// What directory sync reads. Implemented by [`ActiveDirectory`].
pub trait DirectorySync: Send + Sync {
    fn sync_position(&self) -> impl Future<Output = Result<SyncPosition, DirectoryError>> + Send;

    /// Every user and group under `bases`, in no particular order.
    fn read_all(
        &self,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Every user and group anywhere in the domain whose `uSNChanged` is above `after_usn`: an
    /// upsert when it lies under `bases`, a removal when it was deleted or lies elsewhere.
    fn read_changes(
        &self,
        after_usn: u64,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// The anchors of every user and group under `bases`, as [`SyncChange::Present`] chunks: what
    /// a reconciliation compares the cloud's copy with.
    fn read_anchors(
        &self,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Holds a change-notification search over the whole domain open on a connection of its own
    /// and wakes `changed` for every object the DC reports changed. Returns when the DC ends the
    /// search or the connection drops; [`DirectoryError::Refused`] or `Unsupported` when the DC
    /// or the service account may not use it.
    fn notify_changes(
        &self,
        changed: &Notify,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// A DirSync cookie for the directory as it stands now. [`DirectoryError::InsufficientAccess`]
    /// when the service account may not use DirSync (it lacks Replicating Directory Changes).
    fn start_dirsync(&self) -> impl Future<Output = Result<DirSyncCookie, DirectoryError>> + Send;

    /// Like [`DirectorySync::read_changes`], for the changes since `cookie`, read with DirSync;
    /// returns the cookie to continue from.
    fn read_dirsync_changes(
        &self,
        cookie: &DirSyncCookie,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> impl Future<Output = Result<DirSyncCookie, DirectoryError>> + Send;
}

impl DirectorySync for ActiveDirectory {
    async fn sync_position(&self) -> Result<SyncPosition, DirectoryError> {
        let connection = self.sync_connection().await?;
        let mut ldap = connection.ldap.clone();
        let (entries, _) = ldap
            .with_timeout(self.operation_timeout())
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                vec!["dsServiceName", "highestCommittedUSN"],
            )
            .await
            .map_err(|error| self.sync_failure(error))?
            .success()
            .map_err(|error| self.sync_failure(error))?;
        entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .and_then(|root| {
                Some(SyncPosition {
                    server: first(&root.attrs, "dsServiceName")?.to_owned(),
                    highest_committed_usn: number(&root.attrs, "highestCommittedUSN")?,
                })
            })
            .ok_or_else(|| {
                DirectoryError::Unavailable(
                    "the root DSE names no dsServiceName or highestCommittedUSN".into(),
                )
            })
    }

    async fn read_all(
        &self,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> Result<(), DirectoryError> {
        let ages = self.refresh_maximum_ages().await;
        for base in bases {
            let sent = self
                .stream_changes(
                    base,
                    FULL_SYNC_FILTER,
                    vec![extended_dn_control()],
                    changes,
                    |entry| changes_for_entry(entry, None, &ages),
                )
                .await?;
            if !sent {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn read_anchors(
        &self,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> Result<(), DirectoryError> {
        self.refresh_maximum_ages().await;
        for base in bases {
            let mut stream = self
                .paged_search(base, FULL_SYNC_FILTER, ANCHOR_ATTRIBUTES, Vec::new())
                .await?;
            let mut anchors = Vec::with_capacity(ANCHORS_PER_CHANGE);
            while let Some(entry) = self.next_entry(&mut stream).await? {
                anchors.extend(entry_anchor(&entry));
                if anchors.len() == ANCHORS_PER_CHANGE {
                    let full = std::mem::take(&mut anchors);
                    if changes
                        .send(SyncChange::Present { anchors: full })
                        .await
                        .is_err()
                    {
                        let _ = stream.finish().await;
                        return Ok(());
                    }
                }
            }
            self.finish_paged(stream).await?;
            if !anchors.is_empty() && changes.send(SyncChange::Present { anchors }).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn read_changes(
        &self,
        after_usn: u64,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> Result<(), DirectoryError> {
        let domain_root = self.domain_root().await?;
        let filter = format!(
            "(&(uSNChanged>={})(|(objectClass=user)(objectClass=group)))",
            after_usn.saturating_add(1)
        );
        let controls = vec![extended_dn_control(), show_deleted_control()];
        let ages = self.last_maximum_ages();
        self.stream_changes(&domain_root, &filter, controls, changes, |entry| {
            changes_for_entry(entry, Some(bases), &ages)
        })
        .await
        .map(|_| ())
    }

    async fn notify_changes(&self, changed: &Notify) -> Result<(), DirectoryError> {
        // Its own connection: the search never ends, and must not hold up the others.
        let connection = self.connect().await?;
        let mut ldap = connection.ldap.clone();
        let mut stream = ldap
            .with_controls(RawControl {
                ctype: NOTIFICATION_OID.to_owned(),
                crit: true,
                val: None,
            })
            .streaming_search(
                &connection.default_naming_context,
                Scope::Subtree,
                "(objectClass=*)",
                vec!["objectGUID"],
            )
            .await
            .map_err(|error| self.transport_error(error))?;
        while stream
            .next()
            .await
            .map_err(|error| self.transport_error(error))?
            .is_some()
        {
            changed.notify_one();
        }
        let result = stream.finish().await;
        let _ = ldap.unbind().await;
        match result.rc {
            0 => Ok(()),
            code => Err(DirectoryError::Refused {
                code,
                diagnostic: result.text,
            }),
        }
    }

    async fn start_dirsync(&self) -> Result<DirSyncCookie, DirectoryError> {
        self.dirsync_cookie_now().await
    }

    async fn read_dirsync_changes(
        &self,
        cookie: &DirSyncCookie,
        bases: &[String],
        changes: &mpsc::Sender<SyncChange>,
    ) -> Result<DirSyncCookie, DirectoryError> {
        self.stream_dirsync_changes(cookie, bases, changes).await
    }
}

impl ActiveDirectory {
    /// Reads the maximum password ages again and keeps them for the deltas that follow. A
    /// failure keeps the last ones read: they only matter to a DC that does not compute expiry.
    async fn refresh_maximum_ages(&self) -> MaximumAges {
        match self.read_maximum_ages().await {
            Ok(ages) => {
                *self
                    .maximum_ages
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = ages.clone();
                ages
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read the maximum password ages");
                self.last_maximum_ages()
            }
        }
    }

    /// The domain's maximum password age and that of every fine-grained policy the service
    /// account may read. Unreadable ones are left out: their users' expiry stays unknown rather
    /// than wrong.
    pub(crate) async fn read_maximum_ages(&self) -> Result<MaximumAges, DirectoryError> {
        let domain_root = self.domain_root().await?;
        let domain = self
            .read_one(&domain_root, &["maxPwdAge"])
            .await?
            .and_then(|entry| {
                first(&entry.attrs, "maxPwdAge").map(|age| decode::interval_to_duration(Some(age)))
            });
        let container = format!("CN=Password Settings Container,CN=System,{domain_root}");
        let settings = match self
            .search(
                &container,
                Scope::OneLevel,
                "(objectClass=msDS-PasswordSettings)",
                &["msDS-MaximumPasswordAge"],
            )
            .await
        {
            Ok(settings) => settings,
            Err(DirectoryError::Refused { .. }) => Vec::new(),
            Err(error) => return Err(error),
        };
        let by_policy = settings
            .iter()
            .filter_map(|entry| {
                let age = first(&entry.attrs, "msDS-MaximumPasswordAge")?;
                Some((
                    entry.dn.to_lowercase(),
                    decode::interval_to_duration(Some(age)),
                ))
            })
            .collect();
        Ok(MaximumAges { domain, by_policy })
    }

    pub(crate) fn last_maximum_ages(&self) -> MaximumAges {
        self.maximum_ages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Streams one paged subtree search through `translate` into `changes`. `Ok(false)` when the
    /// receiver has gone (the sync was cancelled).
    pub(crate) async fn stream_changes(
        &self,
        base: &str,
        filter: &str,
        controls: Vec<RawControl>,
        changes: &mpsc::Sender<SyncChange>,
        mut translate: impl FnMut(SearchEntry) -> Vec<SyncChange> + Send,
    ) -> Result<bool, DirectoryError> {
        let mut stream = self
            .paged_search(base, filter, SYNC_ATTRIBUTES, controls)
            .await?;
        while let Some(entry) = self.next_entry(&mut stream).await? {
            for change in translate(entry) {
                if changes.send(change).await.is_err() {
                    let _ = stream.finish().await;
                    return Ok(false);
                }
            }
        }
        self.finish_paged(stream).await?;
        Ok(true)
    }

    /// A paged subtree search on the sync connection, entries only.
    pub(crate) async fn paged_search(
        &self,
        base: &str,
        filter: &str,
        attributes: &'static [&'static str],
        controls: Vec<RawControl>,
    ) -> Result<PagedStream, DirectoryError> {
        let connection = self.sync_connection().await?;
        let mut ldap = connection.ldap.clone();
        let adapters: Vec<Box<dyn Adapter<'static, &'static str, Vec<&'static str>>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(SYNC_PAGE_SIZE)),
        ];
        ldap.with_controls(controls)
            .with_timeout(self.operation_timeout())
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attributes.to_vec())
            .await
            .map_err(|error| self.sync_failure(error))
    }

    pub(crate) async fn next_entry(
        &self,
        stream: &mut PagedStream,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        match stream.next().await {
            Ok(entry) => Ok(entry.map(SearchEntry::construct)),
            Err(error) => Err(self.sync_failure(error)),
        }
    }

    /// Ends a paged search. noSuchObject (32) is no error: a synced OU that does not exist (any
    /// more) simply holds nothing.
    pub(crate) async fn finish_paged(&self, mut stream: PagedStream) -> Result<(), DirectoryError> {
        let result = stream.finish().await;
        if result.rc != 0 && result.rc != 32 {
            return Err(DirectoryError::Refused {
                code: result.rc,
                diagnostic: result.text,
            });
        }
        Ok(())
    }
}

pub(crate) type PagedStream = ldap3::SearchStream<'static, &'static str, Vec<&'static str>>;

/// The extended-DN control: each DN value also carries the object's GUID and SID.
pub fn extended_dn_control() -> RawControl {
    // SEQUENCE { INTEGER 1 }: GUIDs and SIDs in their string forms.
    RawControl {
        ctype: EXTENDED_DN_OID.into(),
        crit: true,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    }
}

fn show_deleted_control() -> RawControl {
    RawControl {
        ctype: SHOW_DELETED_OID.into(),
        crit: true,
        val: None,
    }
}

/// An extended DN, `<GUID=…>;<SID=…>;CN=…`, split into its anchor, SID and plain DN. A plain DN
/// comes back unchanged with neither.
pub(crate) fn split_extended_dn(value: &str) -> (Option<ObjectAnchor>, Option<String>, &str) {
    let mut rest = value;
    let mut anchor = None;
    let mut sid = None;
    while let Some(component) = rest.strip_prefix('<') {
        let Some((inside, after)) = component.split_once('>') else {
            break;
        };
        if let Some(guid) = inside.strip_prefix("GUID=") {
            anchor = parse_guid(guid);
        } else if let Some(text) = inside.strip_prefix("SID=") {
            sid = Some(text.to_owned());
        }
        rest = after.strip_prefix(';').unwrap_or(after);
    }
    (anchor, sid, rest)
}

/// A GUID in its string form, or as 32 hex digits in byte order (the control's other format).
fn parse_guid(text: &str) -> Option<ObjectAnchor> {
    text.parse()
        .ok()
        .or_else(|| parse_hex_16(text).map(ObjectAnchor::from_bytes))
}

/// A binary attribute, wherever `ldap3` filed it: values that happen to be valid UTF-8 land among
/// the text attributes.
pub(crate) fn binary<'a>(entry: &'a SearchEntry, name: &str) -> Option<&'a [u8]> {
    binary_values(entry, name).into_iter().next()
}

/// Every value of a binary attribute, from both of the places `ldap3` may file them.
pub(crate) fn binary_values<'a>(entry: &'a SearchEntry, name: &str) -> Vec<&'a [u8]> {
    let binary = entry.bin_attrs.get(name).into_iter().flatten();
    let text = entry.attrs.get(name).into_iter().flatten();
    binary
        .map(Vec::as_slice)
        .chain(text.map(String::as_bytes))
        .collect()
}

/// `S-1-5-21-…` from a binary `objectSid`.
pub(crate) fn sid_to_string(bytes: &[u8]) -> Option<String> {
    let revision = *bytes.first()?;
    let count = usize::from(*bytes.get(1)?);
    if bytes.len() != 8 + count * 4 {
        return None;
    }
    let authority = bytes[2..8]
        .iter()
        .fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
    let mut text = format!("S-{revision}-{authority}");
    for chunk in bytes[8..].chunks_exact(4) {
        let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        text.push_str(&format!("-{value}"));
    }
    Some(text)
}

/// The entry's `objectGUID`, from the attribute or else from its extended DN.
pub(crate) fn entry_anchor(entry: &SearchEntry) -> Option<ObjectAnchor> {
    binary(entry, "objectGUID")
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .map(ObjectAnchor::from_bytes)
        .or_else(|| split_extended_dn(&entry.dn).0)
}

fn has_class(entry: &SearchEntry, class: &str) -> bool {
    entry.attrs.get("objectClass").is_some_and(|classes| {
        classes
            .iter()
            .any(|value| value.eq_ignore_ascii_case(class))
    })
}

/// What one search entry means for the cloud's copy. `bases` is `None` in a full sync (every entry
/// is in scope); in a delta it decides between upsert and removal.
pub(crate) fn changes_for_entry(
    entry: SearchEntry,
    bases: Option<&[String]>,
    ages: &MaximumAges,
) -> Vec<SyncChange> {
    let (_, dn_sid, plain_dn) = split_extended_dn(&entry.dn);
    let plain_dn = plain_dn.to_owned();
    let Some(anchor) = entry_anchor(&entry) else {
        return vec![SyncChange::Error {
            object: plain_dn,
            message: "the object has no readable objectGUID, so it cannot be anchored".into(),
        }];
    };
    let deleted =
        first(&entry.attrs, "isDeleted").is_some_and(|value| value.eq_ignore_ascii_case("TRUE"));
    let in_scope = bases.is_none_or(|bases| bases.iter().any(|base| is_within(&plain_dn, base)));
    let is_group = has_class(&entry, "group");
    let is_user = has_class(&entry, "user") && !has_class(&entry, "computer");
    if deleted || !in_scope {
        // A computer never reaches the cloud, so it never needs removing.
        return if is_group || is_user {
            vec![SyncChange::Remove { anchor }]
        } else {
            Vec::new()
        };
    }
    let sid = binary(&entry, "objectSid")
        .and_then(sid_to_string)
        .or(dn_sid);
    if is_group {
        return group_changes(&entry, anchor, sid, plain_dn);
    }
    if !is_user {
        return Vec::new();
    }
    let Some(sam_account_name) = first(&entry.attrs, "sAMAccountName") else {
        return vec![SyncChange::Error {
            object: plain_dn,
            message: "the user has no readable sAMAccountName".into(),
        }];
    };
    let control = number(&entry.attrs, "userAccountControl").unwrap_or(0);
    let computed = number(&entry.attrs, "msDS-User-Account-Control-Computed").unwrap_or(0);
    let password_last_set = decode::password_last_set(first(&entry.attrs, "pwdLastSet"));
    let text = |name: &str| first(&entry.attrs, name).map(str::to_owned);
    vec![SyncChange::User(SyncedUser {
        anchor,
        sid,
        sam_account_name: sam_account_name.to_owned(),
        user_principal_name: text("userPrincipalName"),
        mail: text("mail"),
        display_name: text("displayName"),
        given_name: text("givenName"),
        surname: text("sn"),
        distinguished_name: plain_dn,
        enabled: control & UF_ACCOUNTDISABLE == 0,
        locked_out: computed & UF_LOCKOUT != 0,
        password_last_set: password_last_set.unix_ms().map(UnixMillis),
        must_change_password: password_last_set == PasswordLastSet::MustChange,
        password_never_expires: control & UF_DONT_EXPIRE_PASSWD != 0,
        password_expiry: decode::password_expiry(
            first(&entry.attrs, "msDS-UserPasswordExpiryTimeComputed"),
            control & UF_DONT_EXPIRE_PASSWD != 0,
            password_last_set,
            ages.for_user(first(&entry.attrs, "msDS-ResultantPSO")),
        ),
        protected: number(&entry.attrs, "adminCount").unwrap_or(0) == 1,
    })]
}

fn group_changes(
    entry: &SearchEntry,
    anchor: ObjectAnchor,
    sid: Option<String>,
    plain_dn: String,
) -> Vec<SyncChange> {
    if entry
        .attrs
        .keys()
        .any(|name| name.starts_with("member;range="))
    {
        return vec![SyncChange::Error {
            object: plain_dn,
            message: "the group has more members than the domain controller returns at once; \
                      ranged retrieval of members is not supported yet"
                .into(),
        }];
    }
    let name = first(&entry.attrs, "sAMAccountName")
        .or_else(|| first(&entry.attrs, "cn"))
        .unwrap_or_default()
        .to_owned();
    let members: Vec<ObjectAnchor> = entry
        .attrs
        .get("member")
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|value| split_extended_dn(value).0)
        .collect();
    let mut changes = vec![SyncChange::Group(SyncedGroup {
        anchor,
        sid,
        name,
        distinguished_name: plain_dn,
    })];
    if members.is_empty() {
        changes.push(SyncChange::Members {
            group: anchor,
            members: Vec::new(),
            replace: true,
        });
    }
    for (index, chunk) in members.chunks(MAX_MEMBERS_PER_CHANGE).enumerate() {
        changes.push(SyncChange::Members {
            group: anchor,
            members: chunk.to_vec(),
            replace: index == 0,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const STAFF: &str = "OU=Staff,DC=corp,DC=example,DC=test";
    const GUID_TEXT: &str = "8b6c9d80-5375-4f42-9873-a5ea33347041";
    const GUID_BYTES: [u8; 16] = [
        0x80, 0x9d, 0x6c, 0x8b, 0x75, 0x53, 0x42, 0x4f, 0x98, 0x73, 0xa5, 0xea, 0x33, 0x34, 0x70,
        0x41,
    ];

    fn entry(dn: &str, text: &[(&str, &[&str])], guid: Option<[u8; 16]>) -> SearchEntry {
        let attrs: HashMap<String, Vec<String>> = text
            .iter()
            .map(|(name, values)| {
                (
                    (*name).to_owned(),
                    values.iter().map(|value| (*value).to_owned()).collect(),
                )
            })
            .collect();
        let mut bin_attrs = HashMap::new();
        if let Some(guid) = guid {
            bin_attrs.insert("objectGUID".to_owned(), vec![guid.to_vec()]);
        }
        SearchEntry {
            dn: dn.to_owned(),
            attrs,
            bin_attrs,
        }
    }

    fn user_entry(dn: &str) -> SearchEntry {
        entry(
            dn,
            &[
                (
                    "objectClass",
                    &["top", "person", "organizationalPerson", "user"],
                ),
                ("sAMAccountName", &["alice"]),
                ("userPrincipalName", &["alice@corp.example.test"]),
                ("userAccountControl", &["66050"]),
                ("msDS-User-Account-Control-Computed", &["16"]),
                ("pwdLastSet", &["0"]),
                ("adminCount", &["1"]),
            ],
            Some(GUID_BYTES),
        )
    }

    #[test]
    fn a_user_entry_becomes_a_synced_user() {
        let dn = format!("<GUID={GUID_TEXT}>;<SID=S-1-5-21-1-2-3-1105>;CN=alice,{STAFF}");
        let [SyncChange::User(user)] =
            &changes_for_entry(user_entry(&dn), None, &MaximumAges::default())[..]
        else {
            panic!("expected one user");
        };
        assert_eq!(user.anchor.to_string(), GUID_TEXT);
        assert_eq!(user.sid.as_deref(), Some("S-1-5-21-1-2-3-1105"));
        assert_eq!(user.distinguished_name, format!("CN=alice,{STAFF}"));
        assert!(!user.enabled, "0x2 is set in 66050");
        assert!(user.password_never_expires, "0x10000 is set in 66050");
        assert!(user.locked_out);
        assert!(user.must_change_password);
        assert_eq!(user.password_last_set, None);
        assert!(user.protected);
    }

    #[test]
    fn in_a_delta_a_deleted_or_out_of_scope_object_is_a_removal() {
        let bases = vec![STAFF.to_owned()];
        let elsewhere = user_entry("CN=alice,OU=Elsewhere,DC=corp,DC=example,DC=test");
        assert!(matches!(
            &changes_for_entry(elsewhere, Some(&bases), &MaximumAges::default())[..],
            [SyncChange::Remove { anchor }] if anchor.to_string() == GUID_TEXT
        ));
        let mut tombstone = user_entry(&format!(
            "CN=alice\\0ADEL:{GUID_TEXT},CN=Deleted Objects,DC=corp,DC=example,DC=test"
        ));
        tombstone
            .attrs
            .insert("isDeleted".into(), vec!["TRUE".into()]);
        assert!(matches!(
            &changes_for_entry(tombstone, Some(&bases), &MaximumAges::default())[..],
            [SyncChange::Remove { .. }]
        ));
        let inside = user_entry(&format!("CN=alice,{STAFF}"));
        assert!(matches!(
            &changes_for_entry(inside, Some(&bases), &MaximumAges::default())[..],
            [SyncChange::User(_)]
        ));
    }

    #[test]
    fn an_object_without_an_anchor_is_reported_by_name() {
        let mut nameless = user_entry(&format!("CN=ghost,{STAFF}"));
        nameless.bin_attrs.clear();
        assert!(matches!(
            &changes_for_entry(nameless, None, &MaximumAges::default())[..],
            [SyncChange::Error { object, message }]
                if object == &format!("CN=ghost,{STAFF}") && message.contains("objectGUID")
        ));
    }

    #[test]
    fn a_guid_that_happens_to_be_valid_utf8_is_still_read() {
        let ascii_guid = *b"0123456789abcdef";
        let mut user = user_entry(&format!("CN=alice,{STAFF}"));
        user.bin_attrs.clear();
        user.attrs
            .insert("objectGUID".into(), vec!["0123456789abcdef".into()]);
        let [SyncChange::User(user)] = &changes_for_entry(user, None, &MaximumAges::default())[..]
        else {
            panic!("expected one user");
        };
        assert_eq!(user.anchor, ObjectAnchor::from_bytes(ascii_guid));
    }

    #[test]
    fn group_members_are_anchors_sent_in_chunks() {
        let members: Vec<String> = (0..MAX_MEMBERS_PER_CHANGE + 1)
            .map(|index| {
                format!(
                    "<GUID=00000000-0000-0000-0000-{index:012x}>;<SID=S-1-5-21-9>;CN=u{index},{STAFF}"
                )
            })
            .collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        let group = entry(
            &format!("CN=Team,{STAFF}"),
            &[
                ("objectClass", &["top", "group"]),
                ("sAMAccountName", &["Team"]),
                ("member", &members),
            ],
            Some(GUID_BYTES),
        );
        let changes = changes_for_entry(group, None, &MaximumAges::default());
        assert!(matches!(&changes[0], SyncChange::Group(group) if group.name == "Team"));
        assert!(
            matches!(&changes[1], SyncChange::Members { members, replace: true, .. } if members.len() == MAX_MEMBERS_PER_CHANGE)
        );
        assert!(
            matches!(&changes[2], SyncChange::Members { members, replace: false, .. } if members.len() == 1)
        );
    }

    #[test]
    fn an_empty_group_clears_its_members() {
        let group = entry(
            &format!("CN=Empty,{STAFF}"),
            &[("objectClass", &["top", "group"]), ("cn", &["Empty"])],
            Some(GUID_BYTES),
        );
        assert!(matches!(
            &changes_for_entry(group, None, &MaximumAges::default())[..],
            [SyncChange::Group(_), SyncChange::Members { members, replace: true, .. }] if members.is_empty()
        ));
    }

    #[test]
    fn extended_dns_split_in_both_guid_formats() {
        let (anchor, sid, dn) = split_extended_dn(
            "<GUID=809d6c8b7553424f9873a5ea33347041>;<SID=S-1-5-32-546>;CN=Guests",
        );
        assert_eq!(
            anchor.map(|anchor| anchor.to_string()).as_deref(),
            Some(GUID_TEXT)
        );
        assert_eq!(sid.as_deref(), Some("S-1-5-32-546"));
        assert_eq!(dn, "CN=Guests");
        assert_eq!(
            split_extended_dn("CN=plain,DC=x"),
            (None, None, "CN=plain,DC=x")
        );
    }

    #[test]
    fn sids_print_in_their_usual_form() {
        let sid = [
            1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 0x1d, 0x68, 0x48, 0x72, 0xed, 0x1b, 0xef, 0x04,
            0x63, 0x67, 0x5b, 0x64, 0x4e, 0x04, 0, 0,
        ];
        assert_eq!(
            sid_to_string(&sid).as_deref(),
            Some("S-1-5-21-1917347869-82779117-1683711843-1102")
        );
        assert_eq!(sid_to_string(&sid[..27]), None);
    }
}
