//! Applies one request to the directory, guarded:
//!
//! 1. the request id is checked against the journal (a repeat is answered from it);
//! 2. the deadline is checked (never start what the cloud has already answered "timeout" for);
//! 3. the user is found; protected accounts, users outside the allowed OUs and disabled accounts
//!    are refused;
//! 4. the sealed passwords are opened (only now, and only here);
//! 5. the new password is checked against the effective policy, for a specific reason;
//! 6. before a password is written, the agent tells the cloud, on the connection that delivered
//!    the request, the password's stamp as it read it ([`Announcer`]); it writes only if that
//!    message was written to the connection;
//! 7. exactly one directory modify is made, and the DC's answer is translated.
//!
//! A request the cloud delivered before on a connection that was lost ([`EarlierDelivery`])
//! first looks at the directory: if the password's stamp moved past the one the earlier agent was
//! about to overwrite, that write landed (or a later one did), nothing is written again, and the
//! answer is success only if this request's password is the one in place.
//!
//! The domain policy for step 5 is the one read at most [`Executor::with_policy_lifetime`] ago
//! (the directory status check reads it at that interval anyway), so a reset costs the directory
//! one search before its modify. A policy changed in the meantime is the DC's to enforce: it
//! checks every password it is given.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fail::fail_point;
use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};
use writeback_directory::{
    Directory, DirectoryError, EffectivePolicy, ResetOptions, SignInVerdict, UserAccount,
};
use writeback_policy::{AccountFacts, PasswordPolicy, PolicyReason, WriteKind, check_password};
use writeback_proto::ids::RequestId;
use writeback_proto::intent::sealed_field_context;
use writeback_proto::operation::{
    AgentTrace, Operation, OperationKind, PasswordStamp, Request, UserRef, Verdict,
};
use writeback_proto::result::{OutcomeWarning, PolicyRequirements, ResultCode};
use writeback_proto::sealing::{SealedSecret, SecretField};
use writeback_proto::sync::ObjectAnchor;
use writeback_proto::time::UnixMillis;

use crate::journal::{Begin, Journal};
use crate::state::KeyRing;

/// The time source; a parameter so that deadlines are tested without waiting.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// "About to write this request's password over this stamp", on its way to the connection;
/// `written` says whether it reached the socket.
#[derive(Debug)]
pub struct Announcement {
    pub request_id: RequestId,
    pub before: PasswordStamp,
    pub written: oneshot::Sender<bool>,
}

/// Where a request's announcements go: the connection that delivered it. The default goes
/// nowhere and always lets the write go ahead, for an executor with no cloud (unit tests).
#[derive(Debug, Clone, Default)]
pub struct Announcer {
    connection: Option<mpsc::Sender<Announcement>>,
}

impl Announcer {
    pub fn on(connection: mpsc::Sender<Announcement>) -> Self {
        Self {
            connection: Some(connection),
        }
    }

    /// Whether the announcement was written to the connection; when it was not (the connection
    /// is gone), the write must not happen: the cloud may already be handing the request to
    /// another agent, which could not know of it.
    async fn announce(&self, request_id: RequestId, before: PasswordStamp) -> bool {
        let Some(connection) = &self.connection else {
            return true;
        };
        let (written, answer) = oneshot::channel();
        let announcement = Announcement {
            request_id,
            before,
            written,
        };
        connection.send(announcement).await.is_ok() && answer.await.unwrap_or(false)
    }
}

/// A user whose password was never written has no stamp; the first write makes version 1.
const NEVER_WRITTEN: PasswordStamp = PasswordStamp {
    version: 0,
    changed_at: UnixMillis(0),
};

#[derive(Debug, Clone, Default)]
pub struct Guards {
    pub allowed_ous: Vec<String>,
    pub allow_protected_accounts: bool,
    pub banned_passwords: Vec<String>,
}

pub struct Executor<D> {
    directory: D,
    journal: Journal,
    keys: KeyRing,
    guards: Guards,
    clock: Clock,
    /// The domain policy last read, and when.
    domain_policy: Mutex<Option<(PasswordPolicy, UnixMillis)>>,
    policy_lifetime: Duration,
}

impl<D> std::fmt::Debug for Executor<D> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Executor")
            .field("guards", &self.guards)
            .finish_non_exhaustive()
    }
}

/// An outcome, and whether the journal should keep it for repeats. Outcomes reached without
/// touching the directory for a passing reason are not kept: a retry deserves a real attempt.
struct Outcome {
    verdict: Verdict,
    keep: bool,
    /// Time spent finding the user and the policy, and in the one write, for the trace.
    lookup: Duration,
    write: Duration,
}

impl Outcome {
    fn kept(result: ResultCode) -> Self {
        Self {
            verdict: result.into(),
            keep: true,
            lookup: Duration::ZERO,
            write: Duration::ZERO,
        }
    }

    fn passing(result: ResultCode) -> Self {
        Self {
            verdict: result.into(),
            keep: false,
            lookup: Duration::ZERO,
            write: Duration::ZERO,
        }
    }

    fn timed(mut self, lookup: Duration, write: Duration) -> Self {
        self.lookup = lookup;
        self.write = write;
        self
    }

    /// A success that had less effect than asked: see [`OutcomeWarning`].
    fn warning_of(mut self, warning: Option<OutcomeWarning>) -> Self {
        if self.verdict.result.is_success() {
            self.verdict.warnings.extend(warning);
        }
        self
    }
}

impl<D: Directory> Executor<D> {
    pub fn new(
        directory: D,
        journal: Journal,
        keys: KeyRing,
        guards: Guards,
        clock: Clock,
    ) -> Self {
        Self {
            directory,
            journal,
            keys,
            guards,
            clock,
            domain_policy: Mutex::new(None),
            policy_lifetime: Duration::ZERO,
        }
    }

    /// Lets a domain policy read up to `lifetime` ago stand for the current one; without it,
    /// every password operation reads the policy again.
    pub fn with_policy_lifetime(mut self, lifetime: Duration) -> Self {
        self.policy_lifetime = lifetime;
        self
    }

    pub fn directory(&self) -> &D {
        &self.directory
    }

    /// Reads the domain policy from the directory now, and remembers it.
    pub async fn read_domain_policy(&self) -> Result<PasswordPolicy, DirectoryError> {
        let policy = self.directory.domain_policy().await?;
        *self
            .domain_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((policy.clone(), (self.clock)()));
        Ok(policy)
    }

    /// The domain policy read within the policy lifetime, or a fresh read.
    async fn domain_policy(&self) -> Result<PasswordPolicy, DirectoryError> {
        let now = (self.clock)();
        let remembered = self
            .domain_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match remembered {
            Some((policy, read_at)) if now.duration_since(read_at) < self.policy_lifetime => {
                Ok(policy)
            }
            _ => self.read_domain_policy().await,
        }
    }

    pub async fn execute(&self, request: &Request, announcer: &Announcer) -> Verdict {
        let fingerprint = request.operation.fingerprint();
        loop {
            match self.journal.begin(request.request_id, &fingerprint) {
                Begin::Finished(verdict) => {
                    tracing::info!(request_id = %request.request_id, result = verdict.result.code(), "repeated request id: answering the recorded outcome without touching the directory");
                    return verdict;
                }
                Begin::Conflict => {
                    tracing::warn!(request_id = %request.request_id, "request id reused for a different operation; refused");
                    return ResultCode::RequestIdReused.into();
                }
                Begin::Running(mut finished) => {
                    if let Ok(verdict) = finished.wait_for(Option::is_some).await
                        && let Some(verdict) = verdict.clone()
                    {
                        return verdict;
                    }
                }
                Begin::Fresh(guard) => {
                    // Durations for the log only; decisions use the clock parameter.
                    let started = std::time::Instant::now();
                    let mut found_anchor = None;
                    let outcome = self.apply(request, announcer, &mut found_anchor).await;
                    fail_point!("after-write", |_| crash("after-write"));
                    let operation = request.operation.kind();
                    tracing::info!(
                        request_id = %request.request_id,
                        %operation,
                        user = %request.operation.user(),
                        result = outcome.verdict.result.code(),
                        warnings = ?outcome.verdict.warnings,
                        event_id = outcome.verdict.result.event_id(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "operation done"
                    );
                    // Named by logon name, the request may come again by the anchor it led to.
                    let by_anchor = match request.operation.user() {
                        UserRef::LogonName(_) => found_anchor
                            .map(|anchor| request.operation.fingerprint_by_anchor(anchor)),
                        UserRef::Anchor(_) => None,
                    };
                    guard.finish(&outcome.verdict, outcome.keep, by_anchor, (self.clock)());
                    fail_point!("after-journal", |_| crash("after-journal"));
                    // Kept out of the journal: a repeat answered from it did no such work.
                    let mut verdict = outcome.verdict;
                    verdict.trace = Some(Box::new(AgentTrace {
                        domain_controller: self.directory.server(),
                        lookup_us: micros(outcome.lookup),
                        write_us: micros(outcome.write),
                        total_us: micros(started.elapsed()),
                        relayed_us: None,
                    }));
                    return verdict;
                }
            }
        }
    }

    /// Applies the request; `found_anchor` is set to the anchor of the user it found.
    async fn apply(
        &self,
        request: &Request,
        announcer: &Announcer,
        found_anchor: &mut Option<ObjectAnchor>,
    ) -> Outcome {
        if (self.clock)() >= request.deadline {
            return Outcome::passing(ResultCode::Timeout);
        }
        match &request.operation {
            Operation::Unlock { user } => {
                let looking_up = std::time::Instant::now();
                let found = self.directory.find_user(user).await;
                let lookup = looking_up.elapsed();
                let account = match self.admit(request, found, found_anchor) {
                    Ok(account) => account,
                    Err(refusal) => return refusal,
                };
                if let Some(late) = self.too_late(request) {
                    return late;
                }
                let writing = std::time::Instant::now();
                let written = self.directory.unlock(&account).await;
                let write = writing.elapsed();
                write_outcome(written, OperationKind::Unlock, None)
                    .warning_of((!account.locked_out).then_some(OutcomeWarning::WasNotLocked))
                    .timed(lookup, write)
            }
            Operation::ResetPassword {
                user,
                new_password,
                must_change,
                unlock,
            } => {
                // The domain policy does not depend on the user: read it while the user is looked up.
                let looking_up = std::time::Instant::now();
                let (found, domain_policy) =
                    tokio::join!(self.directory.find_user(user), self.domain_policy());
                let lookup = looking_up.elapsed();
                let account = match self.admit(request, found, found_anchor) {
                    Ok(account) => account,
                    Err(refusal) => return refusal,
                };
                let new_password = match self.open(request, SecretField::NewPassword, new_password)
                {
                    Ok(secret) => secret,
                    Err(failure) => return failure,
                };
                // With DONT_EXPIRE_PASSWORD the DC takes pwdLastSet = 0 and never asks the user.
                let ignored = (*must_change && account.password_never_expires)
                    .then_some(OutcomeWarning::MustChangeIgnored);
                if let Some(landed) = self.earlier_write(request, &account, &new_password).await {
                    return landed.warning_of(ignored);
                }
                let enforce_history = match self.directory.reset_enforces_history().await {
                    Ok(enforced) => enforced,
                    Err(error) => return lookup_failure(error),
                };
                let kind = WriteKind::Reset {
                    enforce_minimum_age: enforce_history,
                };
                let policy = match self
                    .checked_policy(&account, domain_policy, &new_password, kind)
                    .await
                {
                    Ok(policy) => policy,
                    Err(refusal) => return refusal,
                };
                if let Some(refusal) = self.ready_to_write(request, &account, announcer).await {
                    return refusal;
                }
                let options = ResetOptions {
                    must_change: *must_change,
                    unlock: *unlock,
                };
                let writing = std::time::Instant::now();
                let written = self
                    .directory
                    .reset_password(&account, &new_password, options)
                    .await;
                let write = writing.elapsed();
                write_outcome(
                    written,
                    OperationKind::ResetPassword,
                    policy.as_ref().map(|policy| (policy, enforce_history)),
                )
                .warning_of(ignored)
                .timed(lookup, write)
            }
            Operation::ChangePassword {
                user,
                current_password,
                new_password,
            } => {
                let looking_up = std::time::Instant::now();
                let (found, domain_policy) =
                    tokio::join!(self.directory.find_user(user), self.domain_policy());
                let lookup = looking_up.elapsed();
                let account = match self.admit(request, found, found_anchor) {
                    Ok(account) => account,
                    Err(refusal) => return refusal,
                };
                if account.locked_out {
                    return Outcome::kept(ResultCode::AccountLocked);
                }
                let current =
                    match self.open(request, SecretField::CurrentPassword, current_password) {
                        Ok(secret) => secret,
                        Err(failure) => return failure,
                    };
                let new_password = match self.open(request, SecretField::NewPassword, new_password)
                {
                    Ok(secret) => secret,
                    Err(failure) => return failure,
                };
                if let Some(landed) = self.earlier_write(request, &account, &new_password).await {
                    return landed;
                }
                let policy = match self
                    .checked_policy(&account, domain_policy, &new_password, WriteKind::Change)
                    .await
                {
                    Ok(policy) => policy,
                    Err(refusal) => return refusal,
                };
                if let Some(refusal) = self.ready_to_write(request, &account, announcer).await {
                    return refusal;
                }
                let writing = std::time::Instant::now();
                let written = self
                    .directory
                    .change_password(&account, &current, &new_password)
                    .await;
                let write = writing.elapsed();
                write_outcome(
                    written,
                    OperationKind::ChangePassword,
                    policy.as_ref().map(|policy| (policy, true)),
                )
                .timed(lookup, write)
            }
            Operation::VerifyPassword { user, password } => {
                self.verify(request, user, password, found_anchor).await
            }
        }
    }

    /// A pass-through sign-in. Protected and out-of-scope accounts are refused before any bind,
    /// so the portal cannot be used to try administrators' passwords; a disabled or locked
    /// account is left to the DC, which says so only to someone who knows the password.
    async fn verify(
        &self,
        request: &Request,
        user: &UserRef,
        password: &SealedSecret,
        found_anchor: &mut Option<ObjectAnchor>,
    ) -> Outcome {
        let account = match self.directory.find_user(user).await {
            Ok(account) => account,
            Err(error) => return lookup_failure(error),
        };
        *found_anchor = account.object_guid.map(ObjectAnchor::from_bytes);
        match self.guard(&account) {
            Ok(()) | Err(ResultCode::AccountDisabled) => {}
            Err(refusal) => return Outcome::kept(refusal),
        }
        let password = match self.open(request, SecretField::CurrentPassword, password) {
            Ok(secret) => secret,
            Err(failure) => return failure,
        };
        if let Some(late) = self.too_late(request) {
            return late;
        }
        match self.directory.verify_password(&account, &password).await {
            Ok(verdict) => Outcome::kept(match verdict {
                SignInVerdict::Accepted => ResultCode::Success,
                SignInVerdict::WrongPassword | SignInVerdict::NotPermitted => {
                    ResultCode::WrongCurrentPassword
                }
                SignInVerdict::Expired => ResultCode::PasswordExpired,
                SignInVerdict::MustChange => ResultCode::MustChangePassword,
                SignInVerdict::Disabled => ResultCode::AccountDisabled,
                SignInVerdict::LockedOut => ResultCode::AccountLocked,
            }),
            Err(error) => Outcome::passing(directory_failure(error)),
        }
    }

    /// The found user, unless the lookup failed or the agent's guard refuses them.
    fn admit(
        &self,
        request: &Request,
        found: Result<UserAccount, DirectoryError>,
        found_anchor: &mut Option<ObjectAnchor>,
    ) -> Result<UserAccount, Outcome> {
        let account = found.map_err(lookup_failure)?;
        *found_anchor = account.object_guid.map(ObjectAnchor::from_bytes);
        if let Err(refusal) = self.guard(&account) {
            tracing::info!(request_id = %request.request_id, dn = %account.distinguished_name, result = refusal.code(), "refused by the agent's guard");
            return Err(Outcome::kept(refusal));
        }
        Ok(account)
    }

    /// The last steps before a password is written: still within the deadline, and the cloud
    /// told on the delivering connection what is about to be overwritten. `Some` is why not.
    async fn ready_to_write(
        &self,
        request: &Request,
        account: &UserAccount,
        announcer: &Announcer,
    ) -> Option<Outcome> {
        if let Some(late) = self.too_late(request) {
            return Some(late);
        }
        let before = account.password_stamp.unwrap_or(NEVER_WRITTEN);
        if !announcer.announce(request.request_id, before).await {
            tracing::warn!(request_id = %request.request_id, "the connection that delivered the request is gone; not writing, the cloud hands it on");
            return Some(Outcome::passing(ResultCode::AgentUnavailable));
        }
        fail_point!("before-write", |_| crash("before-write"));
        None
    }

    /// For a request delivered before on a lost connection: `Some` when the password moved since
    /// the earlier agent was about to write it, so that nothing must be written again. The answer
    /// is success only if the directory takes `new_password` now; a bind that fails counts as a
    /// bad password for the user, which is the price of never writing twice.
    async fn earlier_write(
        &self,
        request: &Request,
        account: &UserAccount,
        new_password: &SecretString,
    ) -> Option<Outcome> {
        let before = request.earlier_delivery?.about_to_write?;
        let Some(now) = account.password_stamp else {
            return Some(Outcome::kept(ResultCode::OutcomeUnknown {
                detail: "the agent that had this request was lost after it set out to write the password, and the directory does not show the password's replication metadata".into(),
            }));
        };
        if now.version <= before.version {
            tracing::info!(request_id = %request.request_id, version = now.version, "taken over: the password has not moved since the lost agent read it; writing");
            return None;
        }
        let writes = now.version - before.version;
        let changed_at = humantime::format_rfc3339_seconds(now.changed_at.to_system_time());
        tracing::info!(request_id = %request.request_id, writes, %changed_at, "taken over: the password moved since the lost agent read it; not writing again");
        Some(
            match self.directory.verify_password(account, new_password).await {
                Ok(
                    SignInVerdict::Accepted | SignInVerdict::MustChange | SignInVerdict::Expired,
                ) => Outcome::kept(ResultCode::Success),
                Ok(_) => Outcome::kept(ResultCode::OutcomeUnknown {
                    detail: format!(
                        "the agent that had this request was lost; the password was written {writes} time(s) since it set out to write, last at {changed_at}, and the directory does not take this request's password"
                    ),
                }),
                Err(error) => Outcome::passing(directory_failure(error)),
            },
        )
    }

    /// The last check before writing: lookups take time, and the cloud stops waiting at the
    /// deadline.
    fn too_late(&self, request: &Request) -> Option<Outcome> {
        ((self.clock)() >= request.deadline).then(|| Outcome::passing(ResultCode::Timeout))
    }

    fn guard(&self, account: &UserAccount) -> Result<(), ResultCode> {
        if account.protected && !self.guards.allow_protected_accounts {
            return Err(ResultCode::ProtectedAccount);
        }
        let in_scope = self
            .guards
            .allowed_ous
            .iter()
            .any(|ou| writeback_directory::is_within(&account.distinguished_name, ou));
        if !in_scope {
            return Err(ResultCode::OutOfScope);
        }
        if account.disabled {
            return Err(ResultCode::AccountDisabled);
        }
        Ok(())
    }

    fn open(
        &self,
        request: &Request,
        field: SecretField,
        sealed: &SealedSecret,
    ) -> Result<SecretString, Outcome> {
        let context = sealed_field_context(request.request_id, &request.operation, field);
        let opened = self.keys.with(|keys| {
            keys.iter()
                .find(|(key, _)| key.public_key().key_id == sealed.key_id)
                .map(|(key, _)| key.open(&context, sealed))
        });
        match opened {
            Some(Ok(secret)) => Ok(secret),
            Some(Err(error)) => {
                tracing::warn!(request_id = %request.request_id, %error, event_id = 32004, "a sealed password did not open");
                Err(Outcome::kept(ResultCode::Internal {
                    detail: "the sealed password could not be opened for this request".into(),
                }))
            }
            None => {
                tracing::warn!(request_id = %request.request_id, key_id = %sealed.key_id, event_id = 32004, "a password was sealed to a key this agent does not hold");
                Err(Outcome::kept(ResultCode::Internal {
                    detail: format!(
                        "the password was sealed to key {}, which this agent does not hold",
                        sealed.key_id
                    ),
                }))
            }
        }
    }

    /// Finds the effective policy (the user's PSO, or `domain`, the domain policy read alongside
    /// the user) and checks the new password against it. `Ok(None)` when a fine-grained policy
    /// applies that the service account cannot read: the DC decides alone.
    async fn checked_policy(
        &self,
        account: &UserAccount,
        domain: Result<PasswordPolicy, DirectoryError>,
        password: &SecretString,
        kind: WriteKind,
    ) -> Result<Option<PasswordPolicy>, Outcome> {
        let domain = domain.map_err(lookup_failure)?;
        let policy =
            match writeback_directory::effective_policy(&self.directory, account, domain).await {
                Ok(EffectivePolicy::Known(policy)) => policy,
                Ok(EffectivePolicy::Unreadable { .. }) => return Ok(None),
                Err(error) => return Err(lookup_failure(error)),
            };
        let facts = AccountFacts {
            sam_account_name: account.sam_account_name.clone(),
            display_name: account.display_name.clone(),
            password_last_set_unix_ms: account.password_last_set.unix_ms(),
        };
        let verdict = check_password(
            &policy,
            &self.guards.banned_passwords,
            &facts,
            secrecy::ExposeSecret::expose_secret(password),
            kind,
            (self.clock)().0,
        );
        match verdict {
            Ok(()) => Ok(Some(policy)),
            Err(reason) => Err(Outcome::kept(ResultCode::PolicyViolation {
                reason,
                requirements: Some(PolicyRequirements::from(&policy)),
            })),
        }
    }
}

/// A kill point's action: the process ends at once, as in a crash, with nothing flushed or
/// answered. Reached only in builds with the `kill-points` feature and a `FAILPOINTS` setting.
#[cfg(feature = "kill-points")]
pub(crate) fn crash(point: &str) -> ! {
    eprintln!("kill point {point}: exiting");
    std::process::exit(86)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A failure before anything was written.
fn lookup_failure(error: DirectoryError) -> Outcome {
    match error {
        DirectoryError::UserNotFound => Outcome::kept(ResultCode::UserNotFound),
        DirectoryError::AmbiguousUser { .. } => Outcome::kept(ResultCode::AmbiguousUser),
        other => {
            tracing::warn!(error = %other, "directory lookup failed");
            Outcome::passing(directory_failure(other))
        }
    }
}

fn directory_failure(error: DirectoryError) -> ResultCode {
    match error {
        DirectoryError::Unavailable(detail) | DirectoryError::Configuration(detail) => {
            ResultCode::DirectoryUnavailable { detail }
        }
        DirectoryError::TimedOut(after) => ResultCode::DirectoryUnavailable {
            detail: format!(
                "the domain controller did not answer within {} s",
                after.as_secs()
            ),
        },
        other => ResultCode::Internal {
            detail: other.to_string(),
        },
    }
}

/// Translates the DC's answer to the one write. `policy` is the effective policy the agent
/// checked (and whether history applied to this write), when it could read it.
fn write_outcome(
    written: Result<(), DirectoryError>,
    kind: OperationKind,
    policy: Option<(&PasswordPolicy, bool)>,
) -> Outcome {
    let error = match written {
        Ok(()) => return Outcome::kept(ResultCode::Success),
        Err(error) => error,
    };
    tracing::info!(operation = %kind, %error, "the domain controller refused the write");
    Outcome::kept(match error {
        DirectoryError::PolicyRestriction { reason, .. } => ResultCode::PolicyViolation {
            reason: reason.unwrap_or_else(|| unexplained_policy_reason(kind, policy)),
            requirements: policy.map(|(policy, _)| PolicyRequirements::from(policy)),
        },
        DirectoryError::WrongCurrentPassword => ResultCode::WrongCurrentPassword,
        DirectoryError::InsufficientAccess(_) => ResultCode::PermissionDenied,
        DirectoryError::UserNotFound => ResultCode::UserNotFound,
        other => directory_failure(other),
    })
}

/// A Windows DC refuses every policy failure with the same `0000052D` and no words. When the
/// agent's own check passed, what remains is history (on a change, or a reset the DC polices with
/// the hints control) or a password filter on the DC, which we report as a banned password.
fn unexplained_policy_reason(
    kind: OperationKind,
    policy: Option<(&PasswordPolicy, bool)>,
) -> PolicyReason {
    let history_applies = match policy {
        Some((policy, enforced)) => enforced && policy.history_length > 0,
        None => kind == OperationKind::ChangePassword,
    };
    if history_applies {
        PolicyReason::InHistory
    } else {
        PolicyReason::Banned
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use secrecy::SecretString;
    use writeback_directory::fake::FakeDirectory;
    use writeback_policy::PolicySource;
    use writeback_proto::ids::RequestId;
    use writeback_proto::sealing::{SealContext, SealingKeyPair, seal};

    use super::*;

    const STAFF: &str = "OU=Staff,DC=example,DC=test";

    struct Harness {
        executor: Executor<FakeDirectory>,
        key: writeback_proto::sealing::SealingPublicKey,
        now: Arc<AtomicU64>,
    }

    fn harness() -> Harness {
        let state = crate::state::AgentState::new(
            writeback_proto::ids::AgentId::generate().unwrap(),
            "corp".parse().unwrap(),
            "https://cloud".into(),
            crate::state::CloudTrust::SystemRoots,
            writeback_proto::identity::IdentityKeyPair::generate().unwrap(),
            SealingKeyPair::generate(),
            UnixMillis(0),
        );
        let key = state.current_sealing_key().unwrap();
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock_source = now.clone();
        let clock: Clock = Arc::new(move || UnixMillis(clock_source.load(Ordering::Relaxed)));
        let guards = Guards {
            allowed_ous: vec![STAFF.into()],
            allow_protected_accounts: false,
            banned_passwords: vec!["contoso".into()],
        };
        let executor = Executor::new(
            FakeDirectory::default(),
            Journal::in_memory(Duration::from_secs(3600)),
            state.keys.clone(),
            guards,
            clock,
        );
        Harness { executor, key, now }
    }

    impl Harness {
        async fn execute(&self, request: &Request) -> Verdict {
            self.executor.execute(request, &Announcer::default()).await
        }

        fn deadline(&self) -> UnixMillis {
            UnixMillis(self.now.load(Ordering::Relaxed)).saturating_add(Duration::from_secs(10))
        }

        fn reset(&self, name: &str, password: &str, request_id: RequestId) -> Request {
            self.reset_of(UserRef::logon_name(name).unwrap(), password, request_id)
        }

        fn reset_of(&self, user: UserRef, password: &str, request_id: RequestId) -> Request {
            let context = SealContext {
                request_id,
                operation: OperationKind::ResetPassword,
                user: &user,
                field: SecretField::NewPassword,
            };
            Request {
                request_id,
                deadline: self.deadline(),
                earlier_delivery: None,
                operation: Operation::ResetPassword {
                    new_password: seal(
                        &self.key,
                        &context,
                        &SecretString::from(password.to_owned()),
                    )
                    .unwrap(),
                    user,
                    must_change: false,
                    unlock: true,
                },
            }
        }

        fn change(&self, name: &str, current: &str, new: &str) -> Request {
            let request_id = RequestId::generate().unwrap();
            let user = UserRef::logon_name(name).unwrap();
            let sealed = |field, text: &str| {
                let context = SealContext {
                    request_id,
                    operation: OperationKind::ChangePassword,
                    user: &user,
                    field,
                };
                seal(&self.key, &context, &SecretString::from(text.to_owned())).unwrap()
            };
            Request {
                request_id,
                deadline: self.deadline(),
                earlier_delivery: None,
                operation: Operation::ChangePassword {
                    current_password: sealed(SecretField::CurrentPassword, current),
                    new_password: sealed(SecretField::NewPassword, new),
                    user: user.clone(),
                },
            }
        }
    }

    impl Harness {
        fn verify(&self, name: &str, password: &str) -> Request {
            let request_id = RequestId::generate().unwrap();
            let user = UserRef::logon_name(name).unwrap();
            let context = SealContext {
                request_id,
                operation: OperationKind::VerifyPassword,
                user: &user,
                field: SecretField::CurrentPassword,
            };
            let password = seal(
                &self.key,
                &context,
                &SecretString::from(password.to_owned()),
            );
            Request {
                request_id,
                deadline: self.deadline(),
                earlier_delivery: None,
                operation: Operation::VerifyPassword {
                    password: password.unwrap(),
                    user,
                },
            }
        }
    }

    #[tokio::test]
    async fn a_sign_in_is_the_directorys_verdict_and_protected_accounts_are_never_tried() {
        let harness = harness();
        let directory = harness.executor.directory();
        directory.add_user("jdoe", "Right-Passw0rd!");
        let verdict = |name: &'static str, password: &'static str| {
            let request = harness.verify(name, password);
            let harness = &harness;
            async move { harness.execute(&request).await.result }
        };
        assert_eq!(
            verdict("jdoe", "Right-Passw0rd!").await,
            ResultCode::Success
        );
        assert_eq!(
            verdict("jdoe", "Wrong-Passw0rd!").await,
            ResultCode::WrongCurrentPassword
        );
        assert_eq!(verdict("jdoe", "").await, ResultCode::WrongCurrentPassword);
        directory.set_must_change("jdoe");
        assert_eq!(
            verdict("jdoe", "Right-Passw0rd!").await,
            ResultCode::MustChangePassword
        );

        let mut admin = directory.add_user("admin", "Admin-Passw0rd!");
        admin.protected = true;
        directory.put(admin, "Admin-Passw0rd!");
        assert_eq!(
            verdict("admin", "Admin-Passw0rd!").await,
            ResultCode::ProtectedAccount
        );
        assert_eq!(directory.writes(), 0, "a sign-in writes nothing");
    }

    #[tokio::test]
    async fn a_reset_writes_once_and_a_repeat_is_answered_from_the_journal() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        let request = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());
        assert_eq!(harness.execute(&request).await.result, ResultCode::Success);
        assert_eq!(
            harness.executor.directory().user("jdoe").unwrap().password,
            "New-Passw0rd!"
        );
        assert_eq!(harness.execute(&request).await.result, ResultCode::Success);
        assert_eq!(harness.executor.directory().writes(), 1);
    }

    /// The cloud sent a reset by logon name, lost the answer (it restarted), and the retry comes
    /// by anchor because the user was synced in between: the journal answers it, nothing is
    /// written again. The same id for another user is still refused.
    #[tokio::test]
    async fn a_repeat_by_the_anchor_the_logon_name_led_to_is_answered_from_the_journal() {
        let harness = harness();
        let directory = harness.executor.directory();
        let mut account = directory.add_user("jdoe", "Old-Passw0rd!");
        account.object_guid = Some([7; 16]);
        directory.put(account, "Old-Passw0rd!");
        let mut other = directory.add_user("other", "Old-Passw0rd!");
        other.object_guid = Some([8; 16]);
        directory.put(other, "Old-Passw0rd!");
        let request_id = RequestId::generate().unwrap();
        let by_name = harness.reset("jdoe", "New-Passw0rd!", request_id);
        assert_eq!(harness.execute(&by_name).await.result, ResultCode::Success);
        let anchor = |byte| UserRef::Anchor(ObjectAnchor::from_bytes([byte; 16]));
        let by_anchor = harness.reset_of(anchor(7), "New-Passw0rd!", request_id);
        assert_eq!(
            harness.execute(&by_anchor).await.result,
            ResultCode::Success
        );
        assert_eq!(directory.writes(), 1);
        let for_another = harness.reset_of(anchor(8), "New-Passw0rd!", request_id);
        assert_eq!(
            harness.execute(&for_another).await.result,
            ResultCode::RequestIdReused
        );
        assert_eq!(directory.writes(), 1);
    }

    #[tokio::test]
    async fn concurrent_repeats_apply_once() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        let request = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());
        let (first, second) = tokio::join!(harness.execute(&request), harness.execute(&request));
        assert_eq!(
            (first.result, second.result),
            (ResultCode::Success, ResultCode::Success)
        );
        assert_eq!(harness.executor.directory().writes(), 1);
    }

    #[tokio::test]
    async fn guards_refuse_before_any_write() {
        let harness = harness();
        let directory = harness.executor.directory();
        let mut protected = directory.add_user("admin1", "x");
        protected.protected = true;
        directory.put(protected, "x");
        let mut outside = directory.add_user("outside", "x");
        outside.distinguished_name = "CN=outside,OU=StaffNot,DC=example,DC=test".into();
        directory.put(outside, "x");
        let mut disabled = directory.add_user("gone", "x");
        disabled.disabled = true;
        directory.put(disabled, "x");
        for (name, expected) in [
            ("admin1", ResultCode::ProtectedAccount),
            ("outside", ResultCode::OutOfScope),
            ("gone", ResultCode::AccountDisabled),
            ("nobody", ResultCode::UserNotFound),
        ] {
            let request = harness.reset(name, "Fine-Passw0rd!", RequestId::generate().unwrap());
            assert_eq!(harness.execute(&request).await.result, expected, "{name}");
        }
        assert_eq!(directory.writes(), 0);
    }

    #[tokio::test]
    async fn the_agents_own_policy_check_gives_the_specific_reason_with_the_requirement() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        for (password, reason) in [
            ("Ab1!", PolicyReason::TooShort),
            ("alllowercase", PolicyReason::NotComplex),
            ("Xjdoe-2024!", PolicyReason::NotComplex),
            ("I-love-Contoso-1", PolicyReason::Banned),
        ] {
            let request = harness.reset("jdoe", password, RequestId::generate().unwrap());
            let result = harness.execute(&request).await.result;
            let ResultCode::PolicyViolation {
                reason: got,
                requirements: Some(requirements),
            } = result
            else {
                panic!("{password}: {result:?}");
            };
            assert_eq!(got, reason, "{password}");
            assert_eq!(requirements.min_length, 7);
        }
        assert_eq!(harness.executor.directory().writes(), 0);
    }

    #[tokio::test]
    async fn a_domain_policy_read_within_its_lifetime_stands_and_a_later_change_applies_after_it() {
        let mut harness = harness();
        harness.executor = harness
            .executor
            .with_policy_lifetime(Duration::from_secs(15));
        let directory = harness.executor.directory();
        directory.add_user("jdoe", "Old-Passw0rd!");
        let twelve = "Twelve-Chars1";
        let reset = |password| harness.reset("jdoe", password, RequestId::generate().unwrap());
        assert_eq!(
            harness.execute(&reset(twelve)).await.result,
            ResultCode::Success
        );
        let stricter = PasswordPolicy {
            min_length: 16,
            ..directory.domain_policy().await.unwrap()
        };
        directory.set_domain_policy(stricter);
        // Within the lifetime the policy read before stands; the DC is the one to refuse.
        harness.now.fetch_add(14_000, Ordering::Relaxed);
        assert_eq!(
            harness.execute(&reset("Another-Twelve2")).await.result,
            ResultCode::Success
        );
        harness.now.fetch_add(1_000, Ordering::Relaxed);
        let result = harness.execute(&reset("Third-Twelve-3")).await.result;
        assert!(
            matches!(
                &result,
                ResultCode::PolicyViolation {
                    reason: PolicyReason::TooShort,
                    requirements: Some(requirements),
                } if requirements.min_length == 16
            ),
            "{result:?}"
        );
        assert_eq!(directory.writes(), 2);
    }

    #[tokio::test]
    async fn a_success_says_what_part_of_it_had_no_effect() {
        let harness = harness();
        let directory = harness.executor.directory();
        let mut never_expires = directory.add_user("kiosk", "Old-Passw0rd!");
        never_expires.password_never_expires = true;
        directory.put(never_expires, "Old-Passw0rd!");
        directory.add_user("jdoe", "Old-Passw0rd!");
        let must_change = |name| {
            let mut request = harness.reset(name, "New-Passw0rd!", RequestId::generate().unwrap());
            if let Operation::ResetPassword { must_change, .. } = &mut request.operation {
                *must_change = true;
            }
            request
        };
        let ignored = harness.execute(&must_change("kiosk")).await;
        assert_eq!(ignored.result, ResultCode::Success);
        assert_eq!(ignored.warnings, [OutcomeWarning::MustChangeIgnored]);
        let honoured = harness.execute(&must_change("jdoe")).await;
        assert_eq!(
            (honoured.result, honoured.warnings),
            (ResultCode::Success, vec![])
        );
        // Work done now says where its time went, and at which DC.
        let trace = honoured.trace.expect("a trace");
        assert_eq!(trace.domain_controller, "fake-dc");
        assert!(trace.total_us >= trace.lookup_us + trace.write_us);

        let unlock = |name| Request {
            request_id: RequestId::generate().unwrap(),
            deadline: harness.deadline(),
            earlier_delivery: None,
            operation: Operation::Unlock {
                user: UserRef::logon_name(name).unwrap(),
            },
        };
        let not_locked = harness.execute(&unlock("jdoe")).await;
        assert_eq!(not_locked.result, ResultCode::Success);
        assert_eq!(not_locked.warnings, [OutcomeWarning::WasNotLocked]);
        let mut locked = directory.add_user("locked", "Old-Passw0rd!");
        locked.locked_out = true;
        directory.put(locked, "Old-Passw0rd!");
        let unlocked = harness.execute(&unlock("locked")).await;
        assert_eq!(
            (unlocked.result, unlocked.warnings),
            (ResultCode::Success, vec![])
        );
        // A refusal carries no warning: nothing had an effect.
        let mut refused = must_change("kiosk");
        refused.deadline = UnixMillis(0);
        assert_eq!(harness.execute(&refused).await.warnings, []);
    }

    #[tokio::test]
    async fn a_change_that_is_too_young_is_refused_by_the_agent() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        harness
            .executor
            .directory()
            .set_domain_policy(PasswordPolicy {
                min_length: 7,
                complexity: true,
                history_length: 24,
                min_age: Duration::from_secs(86_400),
                source: PolicySource::Domain,
            });
        let request = harness.change("jdoe", "Old-Passw0rd!", "New-Passw0rd!");
        assert!(matches!(
            harness.execute(&request).await.result,
            ResultCode::PolicyViolation {
                reason: PolicyReason::TooYoung,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn the_directory_verdict_is_translated_on_a_change() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        let wrong = harness.change("jdoe", "Wrong-Passw0rd!", "New-Passw0rd!");
        assert_eq!(
            harness.execute(&wrong).await.result,
            ResultCode::WrongCurrentPassword
        );
        let same = harness.change("jdoe", "Old-Passw0rd!", "Old-Passw0rd!");
        assert!(matches!(
            harness.execute(&same).await.result,
            ResultCode::PolicyViolation {
                reason: PolicyReason::InHistory,
                ..
            }
        ));
        let mut locked = harness.executor.directory().user("jdoe").unwrap().account;
        locked.locked_out = true;
        harness.executor.directory().put(locked, "Old-Passw0rd!");
        let request = harness.change("jdoe", "Old-Passw0rd!", "New-Passw0rd!");
        assert_eq!(
            harness.execute(&request).await.result,
            ResultCode::AccountLocked
        );
    }

    #[tokio::test]
    async fn an_expired_deadline_touches_nothing_and_is_not_recorded() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        let request = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());
        harness.now.fetch_add(60_000, Ordering::Relaxed);
        assert_eq!(harness.execute(&request).await.result, ResultCode::Timeout);
        assert_eq!(harness.executor.directory().writes(), 0);
        let retried = Request {
            deadline: harness.deadline(),
            earlier_delivery: None,
            ..request
        };
        assert_eq!(harness.execute(&retried).await.result, ResultCode::Success);
    }

    fn taken_over(request: Request, about_to_write: Option<PasswordStamp>) -> Request {
        Request {
            earlier_delivery: Some(writeback_proto::operation::EarlierDelivery { about_to_write }),
            ..request
        }
    }

    #[tokio::test]
    async fn a_taken_over_request_writes_only_if_the_password_has_not_moved_since_the_lost_agent_read_it()
     {
        let harness = harness();
        let directory = harness.executor.directory();
        let account = directory.add_user("jdoe", "Old-Passw0rd!");
        let read_by_the_lost_agent = account.password_stamp;

        // It had not written: this agent writes, once.
        let request = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());
        let request = taken_over(request, read_by_the_lost_agent);
        assert_eq!(harness.execute(&request).await.result, ResultCode::Success);
        assert_eq!(directory.writes(), 1);
        assert_eq!(directory.user("jdoe").unwrap().password, "New-Passw0rd!");

        // It had written (the stamp moved) and its password is in place: success, no write.
        let request = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());
        let request = taken_over(request, read_by_the_lost_agent);
        assert_eq!(harness.execute(&request).await.result, ResultCode::Success);
        assert_eq!(directory.writes(), 1);

        // The stamp moved, but to another password: nobody is told "success", nothing written.
        let request = harness.reset("jdoe", "Third-Passw0rd!", RequestId::generate().unwrap());
        let request = taken_over(request, read_by_the_lost_agent);
        let ResultCode::OutcomeUnknown { detail } = harness.execute(&request).await.result else {
            panic!("expected outcome_unknown");
        };
        assert!(detail.contains("written 1 time(s)"), "{detail}");
        assert_eq!(directory.writes(), 1);
        assert_eq!(directory.user("jdoe").unwrap().password, "New-Passw0rd!");

        // The lost agent never said it was about to write: it wrote nothing, so this one does.
        let request = harness.reset("jdoe", "Fourth-Passw0rd!", RequestId::generate().unwrap());
        assert_eq!(
            harness.execute(&taken_over(request, None)).await.result,
            ResultCode::Success
        );
        assert_eq!(directory.writes(), 2);
    }

    #[tokio::test]
    async fn nothing_is_written_when_the_announcement_cannot_reach_the_delivering_connection() {
        let harness = harness();
        let directory = harness.executor.directory();
        let account = directory.add_user("jdoe", "Old-Passw0rd!");
        let request = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());

        let (connection, closed) = mpsc::channel(1);
        drop(closed);
        let verdict = harness
            .executor
            .execute(&request, &Announcer::on(connection))
            .await;
        assert_eq!(verdict.result, ResultCode::AgentUnavailable);
        assert_eq!(directory.writes(), 0);

        // On a live connection the stamp read before the write is announced first.
        let (connection, mut announced) = mpsc::channel(1);
        let listener = tokio::spawn(async move {
            let announcement: Announcement = announced.recv().await.unwrap();
            let before = announcement.before;
            announcement.written.send(true).unwrap();
            before
        });
        let verdict = harness
            .executor
            .execute(&request, &Announcer::on(connection))
            .await;
        assert_eq!(verdict.result, ResultCode::Success);
        assert_eq!(Some(listener.await.unwrap()), account.password_stamp);
        assert_eq!(directory.writes(), 1);
    }

    #[tokio::test]
    async fn a_password_sealed_for_another_request_is_refused() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        let original = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());
        let replayed = Request {
            request_id: RequestId::generate().unwrap(),
            ..original
        };
        assert!(matches!(
            harness.execute(&replayed).await.result,
            ResultCode::Internal { .. }
        ));
        assert_eq!(harness.executor.directory().writes(), 0);
    }

    #[tokio::test]
    async fn an_unreachable_directory_is_reported_and_not_recorded() {
        let harness = harness();
        harness
            .executor
            .directory()
            .add_user("jdoe", "Old-Passw0rd!");
        harness
            .executor
            .directory()
            .fail_with(Some(DirectoryError::Unavailable(
                "connection refused".into(),
            )));
        let request = harness.reset("jdoe", "New-Passw0rd!", RequestId::generate().unwrap());
        assert!(matches!(
            harness.execute(&request).await.result,
            ResultCode::DirectoryUnavailable { .. }
        ));
        harness.executor.directory().fail_with(None);
        assert_eq!(harness.execute(&request).await.result, ResultCode::Success);
    }

    #[test]
    fn an_unexplained_refusal_is_history_where_history_applies_and_a_filter_otherwise() {
        let policy = PasswordPolicy {
            min_length: 7,
            complexity: true,
            history_length: 24,
            min_age: Duration::ZERO,
            source: PolicySource::Domain,
        };
        assert_eq!(
            unexplained_policy_reason(OperationKind::ChangePassword, Some((&policy, true))),
            PolicyReason::InHistory
        );
        assert_eq!(
            unexplained_policy_reason(OperationKind::ResetPassword, Some((&policy, false))),
            PolicyReason::Banned
        );
        assert_eq!(
            unexplained_policy_reason(OperationKind::ResetPassword, Some((&policy, true))),
            PolicyReason::InHistory
        );
        assert_eq!(
            unexplained_policy_reason(OperationKind::ChangePassword, None),
            PolicyReason::InHistory
        );
    }
}
