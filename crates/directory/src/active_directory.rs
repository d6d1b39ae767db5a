//! [`Directory`] over LDAPS to an Active Directory (or Samba AD) domain controller.
//!
//! One warm connection, bound as the service account, is shared by all operations (ldap3
//! multiplexes requests on it). It is re-established when it breaks, to the DC it was on or, when
//! that one does not answer, to the next of the configured DCs: a write and the reads after it go
//! to one DC, which replication between DCs could otherwise make disagree. Reads are retried once
//! on a fresh connection; a write is retried only when it provably never left (`OpSend`),
//! because applying a password twice would fail the history check and report a failure for a
//! reset that worked.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use writeback_policy::{PasswordPolicy, PolicySource};
use writeback_proto::frame::LockoutPolicy;
use writeback_proto::operation::UserRef;
use writeback_tls::Trust;

use crate::decode::{self, SecretBytes};
use crate::{Directory, DirectoryError, ResetOptions, SignInVerdict, UserAccount};

pub(crate) const UF_ACCOUNTDISABLE: u64 = 0x2;
pub(crate) const UF_LOCKOUT: u64 = 0x10;
pub(crate) const UF_DONT_EXPIRE_PASSWD: u64 = 0x1_0000;
const PASSWORD_COMPLEX: u64 = 0x1;

/// Everything needed to reach and use the domain controller.
#[derive(Clone)]
pub struct DirectorySettings {
    /// The domain's DCs, `ldaps://host[:port]` each, in order of preference. Plain `ldap://` is
    /// refused: AD will not accept a password over it.
    pub urls: Vec<String>,
    pub trust: Trust,
    /// The service account, as a DN or a UPN.
    pub bind_name: String,
    pub bind_password: SecretString,
    /// Where users are searched for; usually the domain root.
    pub search_base: String,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
}

impl fmt::Debug for DirectorySettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DirectorySettings")
            .field("urls", &self.urls)
            .field("trust", &self.trust)
            .field("bind_name", &self.bind_name)
            .field("search_base", &self.search_base)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) ldap: ldap3::Ldap,
    /// The domain root, where the domain password policy lives.
    pub(crate) default_naming_context: String,
    policy_hints: Option<&'static str>,
}

pub struct ActiveDirectory {
    settings: DirectorySettings,
    /// The index in `settings.urls` of the DC last connected to, where a new connection tries
    /// first.
    current: AtomicUsize,
    tls: Arc<rustls::ClientConfig>,
    connection: Mutex<Option<Connection>>,
    /// Directory sync reads on its own connection, so a long paged search never queues a
    /// password reset behind it.
    sync_connection: Mutex<Option<Connection>>,
    /// Read again with every full sync and reconciliation; what deltas fall back on for the
    /// expiry of a DC that does not compute it.
    pub(crate) maximum_ages: std::sync::Mutex<crate::sync::MaximumAges>,
}

impl fmt::Debug for ActiveDirectory {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ActiveDirectory")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const USER_ATTRIBUTES: &[&str] = &[
    "sAMAccountName",
    "userPrincipalName",
    "displayName",
    "objectGUID",
    "adminCount",
    "userAccountControl",
    "pwdLastSet",
    "msDS-User-Account-Control-Computed",
    "msDS-ResultantPSO",
    "replPropertyMetaData",
];

/// Constructed attributes, read again with a base-scope read if a DC leaves them out of a subtree
/// search. AD and Samba both return them, and then the fallback costs nothing.
const CONSTRUCTED_USER_ATTRIBUTES: &[&str] =
    &["msDS-User-Account-Control-Computed", "msDS-ResultantPSO"];

const DOMAIN_POLICY_ATTRIBUTES: &[&str] = &[
    "minPwdLength",
    "pwdProperties",
    "pwdHistoryLength",
    "minPwdAge",
];

const DOMAIN_LOCKOUT_ATTRIBUTES: &[&str] = &["lockoutThreshold", "lockOutObservationWindow"];
const PSO_LOCKOUT_ATTRIBUTES: &[&str] = &["msDS-LockoutThreshold", "msDS-LockoutObservationWindow"];

const PSO_ATTRIBUTES: &[&str] = &[
    "msDS-MinimumPasswordLength",
    "msDS-PasswordComplexityEnabled",
    "msDS-PasswordHistoryLength",
    "msDS-MinimumPasswordAge",
];

impl ActiveDirectory {
    pub fn new(settings: DirectorySettings) -> Result<Self, DirectoryError> {
        if settings.urls.is_empty() {
            return Err(DirectoryError::Configuration(
                "no domain controller URL is configured".into(),
            ));
        }
        if let Some(url) = settings
            .urls
            .iter()
            .find(|url| !url.to_ascii_lowercase().starts_with("ldaps://"))
        {
            return Err(DirectoryError::Configuration(format!(
                "the directory URL must start with ldaps:// (got {url}); Active Directory accepts passwords only over an encrypted connection"
            )));
        }
        let tls = writeback_tls::client_config(&settings.trust)
            .map_err(|error| DirectoryError::Configuration(error.to_string()))?;
        Ok(Self {
            settings,
            current: AtomicUsize::new(0),
            tls: Arc::new(tls),
            connection: Mutex::new(None),
            sync_connection: Mutex::new(None),
            maximum_ages: std::sync::Mutex::default(),
        })
    }

    /// The DC in use: the one the last connection was made to.
    pub fn current_url(&self) -> &str {
        let index = self.current.load(Ordering::Relaxed);
        self.settings
            .urls
            .get(index)
            .or_else(|| self.settings.urls.first())
            .map_or("", String::as_str)
    }

    /// Connects and binds now, so a misconfiguration shows at start-up rather than at the first
    /// reset.
    pub async fn check_connection(&self) -> Result<(), DirectoryError> {
        self.connection().await.map(|_| ())
    }

    async fn connection(&self) -> Result<Connection, DirectoryError> {
        self.cached_connection(&self.connection).await
    }

    /// The connection for sync reads. Any failure on it discards it, so the next read reconnects.
    pub(crate) async fn sync_connection(&self) -> Result<Connection, DirectoryError> {
        self.cached_connection(&self.sync_connection).await
    }

    pub(crate) fn bind_name(&self) -> &str {
        &self.settings.bind_name
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        self.settings.operation_timeout
    }

    /// The domain root: where deltas search, so deletions and moves out of scope are seen.
    pub(crate) async fn domain_root(&self) -> Result<String, DirectoryError> {
        Ok(self.sync_connection().await?.default_naming_context)
    }

    /// Translates a failed sync read, dropping the sync connection if it broke.
    pub(crate) fn sync_failure(&self, error: LdapError) -> DirectoryError {
        if is_transport_failure(&error)
            && let Ok(mut slot) = self.sync_connection.try_lock()
        {
            *slot = None;
        }
        self.transport_error(error)
    }

    async fn cached_connection(
        &self,
        slot: &Mutex<Option<Connection>>,
    ) -> Result<Connection, DirectoryError> {
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_mut()
            && !connection.ldap.is_closed()
        {
            return Ok(connection.clone());
        }
        let connection = self.connect().await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn discard_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// Connects to the DC in use or, if it does not answer, to each of the others in turn; the one
    /// that answers is in use from then on. A refusal to sign in is not a DC failing, and ends the
    /// attempt.
    pub(crate) async fn connect(&self) -> Result<Connection, DirectoryError> {
        let count = self.settings.urls.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for offset in 0..count {
            let index = (first + offset) % count;
            let Some(url) = self.settings.urls.get(index) else {
                continue;
            };
            match self.connect_to(url).await {
                Ok(connection) => {
                    if index != first {
                        tracing::warn!(%url, unavailable = ?failures, "moved to another domain controller");
                    }
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(DirectoryError::Unavailable(detail)) => failures.push(detail),
                Err(DirectoryError::TimedOut(after)) => {
                    failures.push(format!("{url} did not answer within {} s", after.as_secs()))
                }
                Err(other) => return Err(other),
            }
        }
        Err(DirectoryError::Unavailable(failures.join("; ")))
    }

    /// An LDAPS connection to `url`, not yet bound, its driver running until it closes.
    async fn open(&self, url: &str) -> Result<ldap3::Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_config(self.tls.clone())
            .set_conn_timeout(self.settings.connect_timeout);
        let (driver, ldap) =
            LdapConnAsync::with_settings(settings, url)
                .await
                .map_err(|error| {
                    DirectoryError::Unavailable(format!("cannot connect to {url}: {error}"))
                })?;
        tokio::spawn(async move {
            if let Err(error) = driver.drive().await {
                tracing::debug!(%error, "directory connection ended");
            }
        });
        Ok(ldap)
    }

    async fn connect_to(&self, url: &str) -> Result<Connection, DirectoryError> {
        let transport = |error: LdapError| match error {
            LdapError::Timeout { .. } => DirectoryError::TimedOut(self.settings.operation_timeout),
            other => DirectoryError::Unavailable(format!("{url}: {other}")),
        };
        let mut ldap = self.open(url).await?;
        let bind = ldap
            .with_timeout(self.settings.operation_timeout)
            .simple_bind(
                &self.settings.bind_name,
                self.settings.bind_password.expose_secret(),
            )
            .await
            .map_err(transport)?;
        if bind.rc != 0 {
            return Err(DirectoryError::Configuration(format!(
                "the service account {} cannot sign in to the directory: {}",
                self.settings.bind_name,
                decode::bind_failure_reason(&bind.text)
            )));
        }
        let root = ldap
            .with_timeout(self.settings.operation_timeout)
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                vec!["supportedControl", "defaultNamingContext"],
            )
            .await
            .map_err(transport)?;
        let root = root
            .0
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| {
                DirectoryError::Unavailable("the directory returned no root DSE".into())
            })?;
        let supported_controls = root
            .attrs
            .get("supportedControl")
            .cloned()
            .unwrap_or_default();
        let default_naming_context = first(&root.attrs, "defaultNamingContext")
            .map(str::to_owned)
            .ok_or_else(|| {
                DirectoryError::Unavailable("the root DSE names no defaultNamingContext".into())
            })?;
        let policy_hints = decode::choose_policy_hints(&supported_controls);
        tracing::info!(
            %url,
            policy_hints = policy_hints.unwrap_or("not supported"),
            "connected to the directory"
        );
        Ok(Connection {
            ldap,
            default_naming_context,
            policy_hints,
        })
    }

    /// A search, retried once on a fresh connection if the connection broke.
    pub(crate) async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.search_with_controls(base, scope, filter, attributes, Vec::new())
            .await
    }

    /// [`Self::search`] with request controls.
    pub(crate) async fn search_with_controls(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: &[&str],
        controls: Vec<RawControl>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let mut retried = false;
        loop {
            let mut connection = self.connection().await?;
            let outcome = connection
                .ldap
                .with_controls(controls.clone())
                .with_timeout(self.settings.operation_timeout)
                .search(base, scope, filter, attributes.to_vec())
                .await;
            match outcome {
                Ok(ldap3::SearchResult(entries, result)) => {
                    // 32 noSuchObject: a base read of something that is not there (or not visible).
                    if result.rc != 0 && result.rc != 32 {
                        return Err(DirectoryError::Refused {
                            code: result.rc,
                            diagnostic: result.text,
                        });
                    }
                    return Ok(entries.into_iter().map(SearchEntry::construct).collect());
                }
                Err(error) if is_transport_failure(&error) && !retried => {
                    tracing::debug!(%error, "directory connection broke; reconnecting for a read");
                    self.discard_connection().await;
                    retried = true;
                }
                Err(error) => {
                    if is_transport_failure(&error) {
                        self.discard_connection().await;
                    }
                    return Err(self.transport_error(error));
                }
            }
        }
    }

    /// Replaces one binary attribute, under `controls`. Not retried: the caller reads again first.
    pub(crate) async fn replace_binary(
        &self,
        distinguished_name: &str,
        attribute: &str,
        value: Vec<u8>,
        controls: Vec<RawControl>,
    ) -> Result<(), DirectoryError> {
        let mut connection = self.connection().await?;
        let modification = Mod::Replace(
            attribute.as_bytes().to_vec(),
            std::collections::HashSet::from([value]),
        );
        let result = connection
            .ldap
            .with_controls(controls)
            .with_timeout(self.settings.operation_timeout)
            .modify(distinguished_name, vec![modification])
            .await
            .map_err(|error| self.transport_error(error))?;
        match result.rc {
            0 => Ok(()),
            50 => Err(DirectoryError::InsufficientAccess(format!(
                "{} may not change {attribute} of {distinguished_name}",
                self.settings.bind_name
            ))),
            code => Err(DirectoryError::Refused {
                code,
                diagnostic: result.text,
            }),
        }
    }

    /// One modify. Retried only if the request was never sent.
    async fn modify(
        &self,
        distinguished_name: &str,
        modifications: impl Fn() -> Vec<Mod<SecretBytes>>,
        controls: Vec<RawControl>,
    ) -> Result<(), DirectoryError> {
        let mut retried = false;
        loop {
            let mut connection = self.connection().await?;
            let request = connection
                .ldap
                .with_timeout(self.settings.operation_timeout);
            if !controls.is_empty() {
                request.with_controls(controls.clone());
            }
            match request.modify(distinguished_name, modifications()).await {
                Ok(result) if result.rc == 0 => return Ok(()),
                Ok(result) => return Err(decode::decode_modify_failure(result.rc, &result.text)),
                Err(error @ LdapError::OpSend { .. }) if !retried => {
                    tracing::debug!(%error, "directory connection was closed before the modify was sent; reconnecting");
                    self.discard_connection().await;
                    retried = true;
                }
                Err(error) => {
                    if is_transport_failure(&error) {
                        self.discard_connection().await;
                    }
                    return Err(self.transport_error(error));
                }
            }
        }
    }

    pub(crate) async fn read_one(
        &self,
        distinguished_name: &str,
        attributes: &[&str],
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        Ok(self
            .search(
                distinguished_name,
                Scope::Base,
                "(objectClass=*)",
                attributes,
            )
            .await?
            .into_iter()
            .next())
    }
}

impl Directory for ActiveDirectory {
    fn server(&self) -> String {
        let url = self.current_url();
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        rest.rsplit_once(':')
            .map_or(rest, |(host, _)| host)
            .to_owned()
    }

    async fn find_user(&self, user: &UserRef) -> Result<UserAccount, DirectoryError> {
        let filter = match user {
            UserRef::Anchor(anchor) => decode::anchor_filter(anchor),
            UserRef::LogonName(logon_name) => decode::user_filter(logon_name),
        };
        let mut entries = self
            .search(
                &self.settings.search_base,
                Scope::Subtree,
                &filter,
                USER_ATTRIBUTES,
            )
            .await?;
        let entry = match entries.len() {
            0 => return Err(DirectoryError::UserNotFound),
            1 => entries.remove(0),
            count => return Err(DirectoryError::AmbiguousUser { count }),
        };
        let constructed = if entry
            .attrs
            .contains_key("msDS-User-Account-Control-Computed")
        {
            entry.attrs.clone()
        } else {
            self.read_one(&entry.dn, CONSTRUCTED_USER_ATTRIBUTES)
                .await?
                .ok_or(DirectoryError::UserNotFound)?
                .attrs
        };
        let user_account_control = number(&entry.attrs, "userAccountControl").unwrap_or(0);
        let computed_control =
            number(&constructed, "msDS-User-Account-Control-Computed").unwrap_or(0);
        let object_guid =
            binary_value(&entry, "objectGUID").and_then(|bytes| <[u8; 16]>::try_from(bytes).ok());
        Ok(UserAccount {
            sam_account_name: first(&entry.attrs, "sAMAccountName")
                .unwrap_or_default()
                .to_owned(),
            user_principal_name: first(&entry.attrs, "userPrincipalName").map(str::to_owned),
            display_name: first(&entry.attrs, "displayName").map(str::to_owned),
            object_guid,
            protected: number(&entry.attrs, "adminCount").unwrap_or(0) == 1,
            disabled: user_account_control & UF_ACCOUNTDISABLE != 0,
            locked_out: computed_control & UF_LOCKOUT != 0,
            password_never_expires: user_account_control & UF_DONT_EXPIRE_PASSWD != 0,
            password_last_set: decode::password_last_set(first(&entry.attrs, "pwdLastSet")),
            resultant_pso: first(&constructed, "msDS-ResultantPSO").map(str::to_owned),
            password_stamp: binary_value(&entry, "replPropertyMetaData")
                .and_then(decode::password_stamp),
            distinguished_name: entry.dn,
        })
    }

    async fn domain_policy(&self) -> Result<PasswordPolicy, DirectoryError> {
        let domain_root = self.connection().await?.default_naming_context;
        let entry = self
            .read_one(&domain_root, DOMAIN_POLICY_ATTRIBUTES)
            .await?
            .ok_or_else(|| {
                DirectoryError::Unavailable(format!(
                    "cannot read the domain policy at {domain_root}"
                ))
            })?;
        Ok(PasswordPolicy {
            min_length: number_u32(&entry.attrs, "minPwdLength"),
            complexity: number(&entry.attrs, "pwdProperties").unwrap_or(0) & PASSWORD_COMPLEX != 0,
            history_length: number_u32(&entry.attrs, "pwdHistoryLength"),
            min_age: decode::interval_to_duration(first(&entry.attrs, "minPwdAge")),
            source: PolicySource::Domain,
        })
    }

    async fn lockout_policy(&self) -> Result<LockoutPolicy, DirectoryError> {
        let domain_root = self.connection().await?.default_naming_context;
        let entry = self
            .read_one(&domain_root, DOMAIN_LOCKOUT_ATTRIBUTES)
            .await?
            .ok_or_else(|| {
                DirectoryError::Unavailable(format!(
                    "cannot read the lockout policy at {domain_root}"
                ))
            })?;
        let domain = LockoutPolicy {
            threshold: number_u32(&entry.attrs, "lockoutThreshold"),
            observation_window_seconds: decode::interval_to_duration(first(
                &entry.attrs,
                "lockOutObservationWindow",
            ))
            .as_secs(),
        };
        let container = format!("CN=Password Settings Container,CN=System,{domain_root}");
        let settings = self
            .search(
                &container,
                Scope::OneLevel,
                "(objectClass=msDS-PasswordSettings)",
                PSO_LOCKOUT_ATTRIBUTES,
            )
            .await;
        let settings = match settings {
            Ok(settings) => settings,
            // Without Read on the container the domain's lockout is all the agent knows.
            Err(DirectoryError::Refused { code, diagnostic }) => {
                tracing::debug!(code, %diagnostic, "cannot list fine-grained password policies");
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        Ok(settings
            .iter()
            .filter(|entry| entry.attrs.contains_key("msDS-LockoutThreshold"))
            .map(|entry| LockoutPolicy {
                threshold: number_u32(&entry.attrs, "msDS-LockoutThreshold"),
                observation_window_seconds: decode::interval_to_duration(first(
                    &entry.attrs,
                    "msDS-LockoutObservationWindow",
                ))
                .as_secs(),
            })
            .fold(domain, LockoutPolicy::strictest))
    }

    async fn password_settings(&self, pso: &str) -> Result<Option<PasswordPolicy>, DirectoryError> {
        let entry = self.read_one(pso, PSO_ATTRIBUTES).await?;
        let readable = entry.filter(|entry| entry.attrs.contains_key("msDS-MinimumPasswordLength"));
        let Some(entry) = readable else {
            tracing::warn!(
                pso = %pso,
                "a fine-grained password policy applies but the service account cannot read it; \
                 the domain controller's verdict is used instead of the agent's own check"
            );
            return Ok(None);
        };
        Ok(Some(PasswordPolicy {
            min_length: number_u32(&entry.attrs, "msDS-MinimumPasswordLength"),
            complexity: first(&entry.attrs, "msDS-PasswordComplexityEnabled")
                .is_some_and(|value| value.eq_ignore_ascii_case("TRUE")),
            history_length: number_u32(&entry.attrs, "msDS-PasswordHistoryLength"),
            min_age: decode::interval_to_duration(first(&entry.attrs, "msDS-MinimumPasswordAge")),
            source: PolicySource::FineGrained(pso.to_owned()),
        }))
    }

    async fn reset_enforces_history(&self) -> Result<bool, DirectoryError> {
        Ok(self.connection().await?.policy_hints.is_some())
    }

    async fn reset_password(
        &self,
        account: &UserAccount,
        new_password: &SecretString,
        options: ResetOptions,
    ) -> Result<(), DirectoryError> {
        let controls = self
            .connection()
            .await?
            .policy_hints
            .map(decode::policy_hints_control)
            .into_iter()
            .collect();
        self.modify(
            &account.distinguished_name,
            || decode::reset_modifications(new_password, options),
            controls,
        )
        .await
    }

    async fn change_password(
        &self,
        account: &UserAccount,
        current_password: &SecretString,
        new_password: &SecretString,
    ) -> Result<(), DirectoryError> {
        self.modify(
            &account.distinguished_name,
            || decode::change_modifications(current_password, new_password),
            Vec::new(),
        )
        .await
    }

    async fn unlock(&self, account: &UserAccount) -> Result<(), DirectoryError> {
        self.modify(
            &account.distinguished_name,
            decode::unlock_modifications,
            Vec::new(),
        )
        .await
    }

    async fn verify_password(
        &self,
        account: &UserAccount,
        password: &SecretString,
    ) -> Result<SignInVerdict, DirectoryError> {
        // An empty password makes a simple bind anonymous, which every DC accepts.
        if password.expose_secret().is_empty() {
            return Ok(SignInVerdict::WrongPassword);
        }
        // The DC in use took any write this sign-in follows; another may not have it yet.
        let mut ldap = self.open(self.current_url()).await?;
        let bind = ldap
            .with_timeout(self.settings.operation_timeout)
            .simple_bind(&account.distinguished_name, password.expose_secret())
            .await
            .map_err(|error| self.transport_error(error))?;
        let _ = ldap.unbind().await;
        Ok(decode::sign_in_verdict(bind.rc, &bind.text))
    }
}

pub(crate) fn first<'a>(
    attributes: &'a HashMap<String, Vec<String>>,
    name: &str,
) -> Option<&'a str> {
    attributes
        .get(name)
        .and_then(|values| values.first())
        .map(String::as_str)
}

/// The first value of `name` as bytes: ldap3 files a value under `attrs` when it happens to be
/// valid UTF-8, and under `bin_attrs` otherwise.
fn binary_value<'a>(entry: &'a SearchEntry, name: &str) -> Option<&'a [u8]> {
    entry
        .bin_attrs
        .get(name)
        .and_then(|values| values.first())
        .map(Vec::as_slice)
        .or_else(|| first(&entry.attrs, name).map(str::as_bytes))
}

pub(crate) fn number(attributes: &HashMap<String, Vec<String>>, name: &str) -> Option<u64> {
    first(attributes, name)
        .and_then(|value| value.parse::<i64>().ok())
        .map(|value| value as u64)
}

fn number_u32(attributes: &HashMap<String, Vec<String>>, name: &str) -> u32 {
    first(attributes, name)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Errors after which the connection cannot be trusted any more.
fn is_transport_failure(error: &LdapError) -> bool {
    !matches!(
        error,
        LdapError::LdapResult { .. } | LdapError::FilterParsing
    )
}

impl ActiveDirectory {
    /// A broken or timed-out exchange with the DC in use, named.
    pub(crate) fn transport_error(&self, error: LdapError) -> DirectoryError {
        match error {
            LdapError::Timeout { .. } => DirectoryError::TimedOut(self.settings.operation_timeout),
            other => DirectoryError::Unavailable(format!("{}: {other}", self.current_url())),
        }
    }
}
