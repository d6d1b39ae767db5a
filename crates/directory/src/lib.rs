//! The on-premises directory, as the agent needs it: find a user, read the password policy that
//! applies to them, apply exactly one of three writes (reset, change, unlock), each as a single
//! LDAP modify, and read users and groups for directory sync ([`DirectorySync`]). This is the only
//! crate that speaks LDAP.
//!
//! [`Directory`] is the seam: [`ActiveDirectory`] implements it over `ldap3` and LDAPS, and
//! [`fake::FakeDirectory`] (feature `fake`) implements it in memory for unit tests of the agent.

mod active_directory;
mod decode;
mod dirsync;
pub mod discovery;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod permissions;
pub mod security_descriptor;
mod sync;

use std::future::Future;
use std::time::Duration;

use secrecy::SecretString;
use thiserror::Error;
use writeback_policy::{PasswordPolicy, PolicyReason};
use writeback_proto::frame::LockoutPolicy;
use writeback_proto::operation::{PasswordStamp, UserRef};

pub use active_directory::{ActiveDirectory, DirectorySettings};
pub use decode::{bind_data_code, is_within};
pub use permissions::{PermissionFacts, UnreachableUser};
pub use sync::{
    DirectorySync, FULL_SYNC_FILTER, SYNC_ATTRIBUTES, SYNC_PAGE_SIZE, SyncPosition,
    extended_dn_control,
};

/// What the agent knows about one user before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccount {
    pub distinguished_name: String,
    pub sam_account_name: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub object_guid: Option<[u8; 16]>,
    /// `adminCount = 1`: a protected account (a member, now or once, of a privileged group).
    pub protected: bool,
    pub disabled: bool,
    pub locked_out: bool,
    /// `DONT_EXPIRE_PASSWORD`: the DC never asks for a new password, even after
    /// `pwdLastSet = 0`.
    pub password_never_expires: bool,
    pub password_last_set: PasswordLastSet,
    /// The fine-grained password settings object that applies, from `msDS-ResultantPSO`.
    pub resultant_pso: Option<String>,
    /// Where the password stands, from `replPropertyMetaData`; `None` if it was never set.
    pub password_stamp: Option<PasswordStamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordLastSet {
    /// `pwdLastSet = 0`: the user must change the password at next sign-in.
    MustChange,
    At {
        unix_ms: u64,
    },
}

impl PasswordLastSet {
    pub fn unix_ms(self) -> Option<u64> {
        match self {
            Self::MustChange => None,
            Self::At { unix_ms } => Some(unix_ms),
        }
    }
}

/// The password policy that applies to one user, as far as the service account can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectivePolicy {
    Known(PasswordPolicy),
    /// A fine-grained policy applies but the service account may not read it (by default only
    /// Domain Admins can). The agent then leaves the verdict to the DC.
    Unreadable {
        pso: String,
    },
}

/// The policy that applies to `account`: its fine-grained policy when one applies, otherwise
/// `domain`. The caller reads `domain` itself, so that it can do so while the user is looked up.
pub async fn effective_policy(
    directory: &impl Directory,
    account: &UserAccount,
    domain: PasswordPolicy,
) -> Result<EffectivePolicy, DirectoryError> {
    let Some(pso) = &account.resultant_pso else {
        return Ok(EffectivePolicy::Known(domain));
    };
    Ok(match directory.password_settings(pso).await? {
        Some(policy) => EffectivePolicy::Known(policy),
        None => EffectivePolicy::Unreadable { pso: pso.clone() },
    })
}

/// What the DC said when the user's own password was tried (a pass-through sign-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInVerdict {
    Accepted,
    WrongPassword,
    /// The password is right but has expired (`data 532`).
    Expired,
    /// The password is right but must be changed first (`data 773`).
    MustChange,
    Disabled,
    LockedOut,
    /// The account has expired, or may not sign in now or from here (`701`, `530`, `531`).
    NotPermitted,
}

/// The options of a reset, applied in the same modify as the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetOptions {
    /// `pwdLastSet = 0`; otherwise `pwdLastSet = -1`, which clears any pending must-change.
    pub must_change: bool,
    /// `lockoutTime = 0`.
    pub unlock: bool,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DirectoryError {
    #[error("the domain controller is unavailable: {0}")]
    Unavailable(String),
    #[error("no user has that name")]
    UserNotFound,
    #[error("{count} users match that name")]
    AmbiguousUser { count: usize },
    /// The DC refused the password under its policy (`0000052D`). `reason` is what its diagnostic
    /// text says, when it says anything (Samba does; Windows does not).
    #[error("the domain controller refused the password under its policy: {diagnostic}")]
    PolicyRestriction {
        reason: Option<PolicyReason>,
        diagnostic: String,
    },
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    #[error("the service account lacks a right: {0}")]
    InsufficientAccess(String),
    #[error("the domain controller refused the operation (LDAP result {code}): {diagnostic}")]
    Refused { code: u32, diagnostic: String },
    #[error("the domain controller did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("directory configuration error: {0}")]
    Configuration(String),
    /// The domain's DCs could not be found in DNS.
    #[error("finding the domain controllers: {0}")]
    Discovery(String),
}

/// The directory operations the agent may perform. There is deliberately no generic modify.
pub trait Directory: Send + Sync {
    fn find_user(
        &self,
        user: &UserRef,
    ) -> impl Future<Output = Result<UserAccount, DirectoryError>> + Send;

    /// The DC in use, by host: where an operation's trace says it went.
    fn server(&self) -> String;

    /// The domain's password policy, from the domain root.
    fn domain_policy(&self) -> impl Future<Output = Result<PasswordPolicy, DirectoryError>> + Send;

    /// The strictest account lockout among the domain's and every fine-grained policy the
    /// service account can read (without Read on the Password Settings Container, the domain's).
    fn lockout_policy(&self) -> impl Future<Output = Result<LockoutPolicy, DirectoryError>> + Send;

    /// The settings of the fine-grained password policy `pso`; `None` when the service account
    /// may not read them.
    fn password_settings(
        &self,
        pso: &str,
    ) -> impl Future<Output = Result<Option<PasswordPolicy>, DirectoryError>> + Send;

    /// Whether a reset also enforces history and minimum age (the DC honours the policy-hints
    /// control).
    fn reset_enforces_history(&self) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    fn reset_password(
        &self,
        account: &UserAccount,
        new_password: &SecretString,
        options: ResetOptions,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    fn change_password(
        &self,
        account: &UserAccount,
        current_password: &SecretString,
        new_password: &SecretString,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    fn unlock(
        &self,
        account: &UserAccount,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Binds as the user on a connection of its own and closes it: the DC checks the password,
    /// counts a wrong one towards lockout as for any sign-in, and says why it refuses.
    fn verify_password(
        &self,
        account: &UserAccount,
        password: &SecretString,
    ) -> impl Future<Output = Result<SignInVerdict, DirectoryError>> + Send;
}
