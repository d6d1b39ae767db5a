//! What `writeback-agent doctor` reads about the service account's own standing, as the service
//! account: who it is and which groups it is in, the security descriptors of the domain root and
//! the allowed OUs, the domain's minimum password age, and the users in scope that the delegated
//! rights do not reach. Judging it is the agent's business; this module only reads.

use std::collections::HashMap;

use ldap3::controls::RawControl;
use ldap3::{Scope, SearchEntry};

use crate::active_directory::{ActiveDirectory, first, number};
use crate::security_descriptor::{Ace, SecurityDescriptor, add_aces};
use crate::sync::{binary, binary_values, sid_to_string};
use crate::{DirectoryError, decode};

const SD_FLAGS_OID: &str = "1.2.840.113556.1.4.801";

/// Writes of one DACL before giving up on a concurrent writer.
const ACL_WRITE_ATTEMPTS: usize = 3;

/// The SIDs every signed-in account holds besides its own and its groups': Everyone and
/// Authenticated Users.
const WELL_KNOWN_TOKEN_SIDS: &[&str] = &["S-1-1-0", "S-1-5-11"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionFacts {
    pub account_sid: String,
    /// The account's SID, its groups' (nested ones included, from `tokenGroups`), and the
    /// well-known SIDs of any signed-in account: whom an ACE must name to apply to it.
    pub token: Vec<String>,
    pub domain_root: String,
    pub domain_root_descriptor: Option<SecurityDescriptor>,
    /// Each allowed OU and its descriptor; `None` when it could not be read.
    pub allowed_ou_descriptors: Vec<(String, Option<SecurityDescriptor>)>,
    /// The property set each of these attributes belongs to (`attributeSecurityGUID`): a grant
    /// on the set grants the attribute.
    pub property_sets: HashMap<String, String>,
    /// `minPwdAge` of the domain, in 100-nanosecond intervals (negative, or 0).
    pub minimum_password_age: i64,
    pub policy_hints_supported: bool,
    /// Users under the allowed OUs the delegated rights do not reach.
    pub unreachable_users: Vec<UnreachableUser>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachableUser {
    pub distinguished_name: String,
    /// `adminCount = 1`: AdminSDHolder rewrites its ACL.
    pub protected: bool,
    pub inheritance_disabled: bool,
}

/// The SD-flags control asking for the DACL only: the one part an ordinary account may read.
fn dacl_only() -> RawControl {
    RawControl {
        ctype: SD_FLAGS_OID.into(),
        crit: true,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x04]),
    }
}

impl ActiveDirectory {
    /// Reads everything the doctor judges. `attributes` are the lDAPDisplayNames whose property
    /// sets are wanted.
    pub async fn permission_facts(
        &self,
        allowed_ous: &[String],
        attributes: &[&str],
    ) -> Result<PermissionFacts, DirectoryError> {
        let root = self
            .search_with_controls(
                "",
                Scope::Base,
                "(objectClass=*)",
                &[
                    "defaultNamingContext",
                    "schemaNamingContext",
                    "supportedControl",
                ],
                Vec::new(),
            )
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                DirectoryError::Unavailable("the directory returned no root DSE".into())
            })?;
        let domain_root = first(&root.attrs, "defaultNamingContext")
            .unwrap_or_default()
            .to_owned();
        let schema = first(&root.attrs, "schemaNamingContext")
            .unwrap_or_default()
            .to_owned();
        let policy_hints_supported = decode::choose_policy_hints(
            root.attrs
                .get("supportedControl")
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .is_some();

        let (account_sid, token) = self.service_account_token(&domain_root).await?;
        let domain_root_descriptor = self.descriptor(&domain_root).await?;
        let minimum_password_age = self
            .search_with_controls(
                &domain_root,
                Scope::Base,
                "(objectClass=*)",
                &["minPwdAge"],
                Vec::new(),
            )
            .await?
            .first()
            .and_then(|entry| first(&entry.attrs, "minPwdAge"))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let mut allowed_ou_descriptors = Vec::new();
        let mut unreachable_users = Vec::new();
        for ou in allowed_ous {
            allowed_ou_descriptors.push((ou.clone(), self.descriptor(ou).await?));
            unreachable_users.extend(self.unreachable_users(ou).await?);
        }
        let property_sets = self.property_sets(&schema, attributes).await?;
        Ok(PermissionFacts {
            account_sid,
            token,
            domain_root,
            domain_root_descriptor,
            allowed_ou_descriptors,
            property_sets,
            minimum_password_age,
            policy_hints_supported,
            unreachable_users,
        })
    }

    /// The service account's SID, and the domain root.
    pub async fn service_account_sid(&self) -> Result<(String, String), DirectoryError> {
        let domain_root = self.domain_root().await?;
        let (sid, _) = self.service_account_token(&domain_root).await?;
        Ok((sid, domain_root))
    }

    /// Adds `aces` to the DACL of `dn` (those it does not hold already), keeping it canonical.
    /// Needs an account allowed to write the DACL: a domain administrator. The DACL is read again
    /// after each write: a descriptor is replaced whole, so a change someone else made at the same
    /// moment can undo this one, and then it is made again.
    pub async fn add_aces(&self, dn: &str, aces: &[Ace]) -> Result<(), DirectoryError> {
        for _ in 0..ACL_WRITE_ATTEMPTS {
            let entries = self.read_descriptor(dn).await?;
            let current = entries
                .first()
                .and_then(|entry| binary(entry, "nTSecurityDescriptor"))
                .ok_or_else(|| {
                    DirectoryError::InsufficientAccess(format!(
                        "cannot read the security descriptor of {dn}"
                    ))
                })?;
            let held = SecurityDescriptor::parse(current)
                .is_some_and(|descriptor| aces.iter().all(|ace| descriptor.dacl.contains(ace)));
            if held {
                return Ok(());
            }
            let updated = add_aces(current, aces).ok_or_else(|| DirectoryError::Refused {
                code: 0,
                diagnostic: format!(
                    "the security descriptor of {dn} is not in a form Writeback can extend"
                ),
            })?;
            self.replace_binary(dn, "nTSecurityDescriptor", updated, vec![dacl_only()])
                .await?;
        }
        Err(DirectoryError::Refused {
            code: 0,
            diagnostic: format!(
                "the security descriptor of {dn} kept changing under another writer; run grant again"
            ),
        })
    }

    /// The service account's SID and token. `tokenGroups` is constructed, so it is read with
    /// a base search of the account itself.
    async fn service_account_token(
        &self,
        domain_root: &str,
    ) -> Result<(String, Vec<String>), DirectoryError> {
        let bind_name = self.bind_name();
        let account = if bind_name.contains('=') {
            bind_name.to_owned()
        } else {
            let logon_name = bind_name.split('@').next().unwrap_or(bind_name);
            let filter = format!(
                "(&(objectClass=user)(|(userPrincipalName={})(sAMAccountName={})))",
                ldap3::ldap_escape(bind_name),
                ldap3::ldap_escape(logon_name)
            );
            self.search_with_controls(
                domain_root,
                Scope::Subtree,
                &filter,
                &["objectSid"],
                Vec::new(),
            )
            .await?
            .into_iter()
            .next()
            .map(|entry| entry.dn)
            .ok_or_else(|| {
                DirectoryError::Configuration(format!(
                    "the service account {bind_name} cannot find itself in {domain_root}"
                ))
            })?
        };
        let entry = self
            .search_with_controls(
                &account,
                Scope::Base,
                "(objectClass=*)",
                &["objectSid", "tokenGroups"],
                Vec::new(),
            )
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                DirectoryError::Configuration(format!(
                    "the service account {account} cannot read itself"
                ))
            })?;
        let sids = |name: &str| -> Vec<String> {
            binary_values(&entry, name)
                .into_iter()
                .filter_map(sid_to_string)
                .collect()
        };
        let account_sid = sids("objectSid").into_iter().next().ok_or_else(|| {
            DirectoryError::Configuration(format!(
                "the service account {account} has no readable objectSid"
            ))
        })?;
        let mut token = vec![account_sid.clone()];
        token.extend(sids("tokenGroups"));
        token.extend(WELL_KNOWN_TOKEN_SIDS.iter().map(|sid| (*sid).to_owned()));
        Ok((account_sid, token))
    }

    /// The entry of `dn` with its DACL, as raw search entries.
    async fn read_descriptor(&self, dn: &str) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.search_with_controls(
            dn,
            Scope::Base,
            "(objectClass=*)",
            &["nTSecurityDescriptor"],
            vec![dacl_only()],
        )
        .await
    }

    async fn descriptor(&self, dn: &str) -> Result<Option<SecurityDescriptor>, DirectoryError> {
        let entries = self.read_descriptor(dn).await?;
        Ok(entries
            .first()
            .and_then(|entry| binary(entry, "nTSecurityDescriptor"))
            .and_then(SecurityDescriptor::parse))
    }

    /// Users under `ou` that AdminSDHolder protects or that do not inherit their OU's ACEs.
    async fn unreachable_users(&self, ou: &str) -> Result<Vec<UnreachableUser>, DirectoryError> {
        let mut stream = self
            .paged_search(
                ou,
                "(&(objectCategory=person)(objectClass=user))",
                &["adminCount", "nTSecurityDescriptor"],
                vec![dacl_only()],
            )
            .await?;
        let mut unreachable = Vec::new();
        while let Some(entry) = self.next_entry(&mut stream).await? {
            let protected = number(&entry.attrs, "adminCount").unwrap_or(0) == 1;
            let inheritance_disabled = binary(&entry, "nTSecurityDescriptor")
                .and_then(SecurityDescriptor::parse)
                .is_some_and(|descriptor| descriptor.inheritance_disabled());
            if protected || inheritance_disabled {
                unreachable.push(UnreachableUser {
                    distinguished_name: entry.dn,
                    protected,
                    inheritance_disabled,
                });
            }
        }
        self.finish_paged(stream).await?;
        Ok(unreachable)
    }

    async fn property_sets(
        &self,
        schema: &str,
        attributes: &[&str],
    ) -> Result<HashMap<String, String>, DirectoryError> {
        let assertions: String = attributes
            .iter()
            .map(|name| format!("(lDAPDisplayName={})", ldap3::ldap_escape(*name)))
            .collect();
        let entries = self
            .search_with_controls(
                schema,
                Scope::OneLevel,
                &format!("(|{assertions})"),
                &["lDAPDisplayName", "attributeSecurityGUID"],
                Vec::new(),
            )
            .await?;
        Ok(entries
            .iter()
            .filter_map(|entry| {
                let name = first(&entry.attrs, "lDAPDisplayName")?;
                let guid: [u8; 16] = binary(entry, "attributeSecurityGUID")?.try_into().ok()?;
                Some((
                    name.to_owned(),
                    writeback_proto::sync::ObjectAnchor::from_bytes(guid).to_string(),
                ))
            })
            .collect())
    }
}
