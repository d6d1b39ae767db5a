//! An in-memory [`Directory`] for unit tests of the agent. It keeps passwords in plain text and
//! counts writes, which is exactly what a test needs and exactly what production must never do.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};
use writeback_policy::{PasswordPolicy, PolicySource};
use writeback_proto::frame::LockoutPolicy;
use writeback_proto::operation::{PasswordStamp, UserRef};
use writeback_proto::time::UnixMillis;

use crate::{Directory, DirectoryError, PasswordLastSet, ResetOptions, SignInVerdict, UserAccount};

#[derive(Debug, Clone)]
pub struct FakeUser {
    pub account: UserAccount,
    pub password: String,
    pub must_change: bool,
}

impl FakeUser {
    /// What a DC does to the password's replication metadata on every password write.
    fn next_password_version(&mut self) {
        let version = self
            .account
            .password_stamp
            .map_or(1, |stamp| stamp.version.saturating_add(1));
        self.account.password_stamp = Some(PasswordStamp {
            version,
            changed_at: UnixMillis::now(),
        });
    }
}

#[derive(Debug)]
pub struct FakeDirectory {
    state: Mutex<FakeState>,
}

#[derive(Debug)]
struct FakeState {
    users: HashMap<String, FakeUser>,
    policy: PasswordPolicy,
    lockout: LockoutPolicy,
    writes: usize,
    /// When set, every call fails with this error.
    failure: Option<DirectoryError>,
}

impl Default for FakeDirectory {
    fn default() -> Self {
        Self {
            state: Mutex::new(FakeState {
                users: HashMap::new(),
                policy: PasswordPolicy {
                    min_length: 7,
                    complexity: true,
                    history_length: 24,
                    min_age: std::time::Duration::ZERO,
                    source: PolicySource::Domain,
                },
                lockout: LockoutPolicy {
                    threshold: 0,
                    observation_window_seconds: 1800,
                },
                writes: 0,
                failure: None,
            }),
        }
    }
}

impl FakeDirectory {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an enabled, unlocked user in `OU=Staff,DC=example,DC=test`.
    pub fn add_user(&self, name: &str, password: &str) -> UserAccount {
        let account = UserAccount {
            distinguished_name: format!("CN={name},OU=Staff,DC=example,DC=test"),
            sam_account_name: name.to_owned(),
            user_principal_name: Some(format!("{name}@example.test")),
            display_name: None,
            object_guid: None,
            protected: false,
            disabled: false,
            locked_out: false,
            password_never_expires: false,
            password_last_set: PasswordLastSet::At { unix_ms: 0 },
            resultant_pso: None,
            password_stamp: Some(PasswordStamp {
                version: 1,
                changed_at: UnixMillis(0),
            }),
        };
        self.put(account.clone(), password);
        account
    }

    pub fn put(&self, account: UserAccount, password: &str) {
        self.state().users.insert(
            account.sam_account_name.clone(),
            FakeUser {
                account,
                password: password.to_owned(),
                must_change: false,
            },
        );
    }

    /// As `pwdLastSet = 0`: the password must be changed at next sign-in.
    pub fn set_must_change(&self, name: &str) {
        if let Some(user) = self.state().users.get_mut(name) {
            user.must_change = true;
            user.account.password_last_set = PasswordLastSet::MustChange;
        }
    }

    pub fn user(&self, name: &str) -> Option<FakeUser> {
        self.state().users.get(name).cloned()
    }

    pub fn writes(&self) -> usize {
        self.state().writes
    }

    pub fn set_domain_policy(&self, policy: PasswordPolicy) {
        self.state().policy = policy;
    }

    pub fn fail_with(&self, failure: Option<DirectoryError>) {
        self.state().failure = failure;
    }

    fn check_failure(&self) -> Result<(), DirectoryError> {
        self.state().failure.clone().map_or(Ok(()), Err)
    }

    fn write(
        &self,
        account: &UserAccount,
        apply: impl FnOnce(&mut FakeUser) -> Result<(), DirectoryError>,
    ) -> Result<(), DirectoryError> {
        self.check_failure()?;
        let mut state = self.state();
        let user = state
            .users
            .get_mut(&account.sam_account_name)
            .ok_or(DirectoryError::UserNotFound)?;
        apply(user)?;
        state.writes += 1;
        Ok(())
    }
}

impl Directory for FakeDirectory {
    fn server(&self) -> String {
        "fake-dc".to_owned()
    }

    async fn find_user(&self, user: &UserRef) -> Result<UserAccount, DirectoryError> {
        self.check_failure()?;
        let state = self.state();
        let matches: Vec<_> = state
            .users
            .values()
            .filter(|candidate| match user {
                UserRef::LogonName(name) => {
                    candidate.account.sam_account_name == *name
                        || candidate.account.user_principal_name.as_deref() == Some(name.as_str())
                }
                UserRef::Anchor(anchor) => {
                    candidate.account.object_guid == Some(*anchor.as_bytes())
                }
            })
            .collect();
        match matches.as_slice() {
            [] => Err(DirectoryError::UserNotFound),
            [one] => Ok(one.account.clone()),
            many => Err(DirectoryError::AmbiguousUser { count: many.len() }),
        }
    }

    async fn domain_policy(&self) -> Result<PasswordPolicy, DirectoryError> {
        self.check_failure()?;
        Ok(self.state().policy.clone())
    }

    /// Like a four-rights service account, the fake cannot read fine-grained policies.
    async fn lockout_policy(&self) -> Result<LockoutPolicy, DirectoryError> {
        self.check_failure()?;
        Ok(self.state().lockout)
    }

    async fn password_settings(
        &self,
        _pso: &str,
    ) -> Result<Option<PasswordPolicy>, DirectoryError> {
        self.check_failure()?;
        Ok(None)
    }

    async fn reset_enforces_history(&self) -> Result<bool, DirectoryError> {
        Ok(false)
    }

    async fn reset_password(
        &self,
        account: &UserAccount,
        new_password: &SecretString,
        options: ResetOptions,
    ) -> Result<(), DirectoryError> {
        self.write(account, |user| {
            user.password = new_password.expose_secret().to_owned();
            user.next_password_version();
            user.must_change = options.must_change;
            if options.unlock {
                user.account.locked_out = false;
            }
            Ok(())
        })
    }

    async fn change_password(
        &self,
        account: &UserAccount,
        current_password: &SecretString,
        new_password: &SecretString,
    ) -> Result<(), DirectoryError> {
        self.write(account, |user| {
            if user.password != current_password.expose_secret() {
                return Err(DirectoryError::WrongCurrentPassword);
            }
            if user.password == new_password.expose_secret() {
                return Err(DirectoryError::PolicyRestriction {
                    reason: Some(writeback_policy::PolicyReason::InHistory),
                    diagnostic: "0000052D: the password was already used (in history)".into(),
                });
            }
            user.password = new_password.expose_secret().to_owned();
            user.next_password_version();
            Ok(())
        })
    }

    async fn unlock(&self, account: &UserAccount) -> Result<(), DirectoryError> {
        self.write(account, |user| {
            user.account.locked_out = false;
            Ok(())
        })
    }

    async fn verify_password(
        &self,
        account: &UserAccount,
        password: &SecretString,
    ) -> Result<SignInVerdict, DirectoryError> {
        self.check_failure()?;
        let state = self.state();
        let Some(user) = state.users.get(&account.sam_account_name) else {
            return Ok(SignInVerdict::WrongPassword);
        };
        Ok(if user.password != password.expose_secret() {
            SignInVerdict::WrongPassword
        } else if user.account.disabled {
            SignInVerdict::Disabled
        } else if user.account.locked_out {
            SignInVerdict::LockedOut
        } else if user.must_change {
            SignInVerdict::MustChange
        } else {
            SignInVerdict::Accepted
        })
    }
}
