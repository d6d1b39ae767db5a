//! Forgot password and unlock, as steps: identify, choose a method, prove it (as many distinct
//! methods as the policy requires), then set a new password or unlock, written back
//! synchronously. Each step takes the flow's key and the time, and answers a typed outcome; the
//! portal only parses forms and renders these.
//!
//! Rules kept here:
//! * every typed name gets the same next step; a name that matched nobody, or is blocked only
//!   after a proof, never learns so before it proves a method;
//! * proofs count against the limits before they are checked, once each (the challenge leaves
//!   the flow under the lock);
//! * only after one proof may the flow say why the person cannot go on (scope, disabled, not
//!   enough methods), and the flow ends with it;
//! * the final step needs every required proof and the purpose the flow was started for.

use secrecy::{ExposeSecret, SecretString};
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_proto::ids::RequestId;
use writeback_proto::operation::UserRef;
use writeback_proto::result::{OutcomeWarning, ResultCode};
use writeback_proto::sealing::SecretField;
use writeback_proto::time::UnixMillis;

use crate::service::audit::{Actor, AuditAction};
use crate::service::auth::{new_token, token_hash};
use crate::service::directory::UserTarget;
use crate::service::self_service::accounts::{
    account_detail, audit, find_account, in_scope, offered_methods, reported_policy, settings,
    stored_methods, usable_methods,
};
use crate::service::self_service::checks;
use crate::service::self_service::notices::notify_user;
use crate::service::self_service::proof::{
    ProofAnswer, ProofSubject, Verdict, issue_challenge, judge,
};
use crate::service::self_service::state::{Challenge, Flow, PortalAccount, Purpose};
use crate::service::self_service::stop::{Stop, unless_blocked};
use crate::service::state::AppState;
use crate::service::writeback::{self, Requester, Writeback, WritebackError, check_password};

/// A name typed at the portal, as the portal compares it: trimmed, lower-cased, and something
/// an account name could be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier(String);

impl Identifier {
    /// The name, or why it cannot be one, in words for the person who typed it.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let name = text.trim().to_lowercase();
        if name.is_empty() {
            return Err("Type your user name, sign-in name or email address.");
        }
        if UserRef::logon_name(&name).is_err() {
            return Err("That name is too long or has characters no account name has.");
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A flow in progress: the digest of its cookie, and the flow as of now.
#[derive(Debug, Clone)]
pub struct FlowHandle {
    pub key: Vec<u8>,
    pub flow: Flow,
}

impl FlowHandle {
    /// The flow the cookie `value` names, if it is still live.
    pub async fn open(state: &AppState, value: &str, now: UnixMillis) -> Result<Self, Stop> {
        let key = token_hash(value);
        let flow = state.portal.flow(&key, now).await.ok_or(Stop::Ended)?;
        Ok(Self { key, flow })
    }

    fn subject(&self) -> ProofSubject {
        subject_of(&self.key, &self.flow)
    }
}

fn subject_of(key: &[u8], flow: &Flow) -> ProofSubject {
    ProofSubject {
        name: flow.audit_name(),
        directory: flow
            .account
            .as_ref()
            .map(|account| account.directory.to_string()),
        account: flow.account.clone(),
        identifier: flow.identifier.clone(),
        salt: key.to_vec(),
    }
}

/// Whether self-service is on, and the settings if it is.
pub async fn open_settings(state: &AppState) -> Result<SelfServiceSettings, Stop> {
    let settings = settings(state).await?;
    if settings.scope == SelfServiceScope::Nobody {
        return Err(Stop::SelfServiceOff);
    }
    Ok(settings)
}

/// Starts a flow for whatever name was typed; every name that is not blocked gets one. Answers
/// the new flow's cookie value.
pub async fn begin(
    state: &AppState,
    purpose: Purpose,
    identifier: Identifier,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<SecretString, Stop> {
    let settings = open_settings(state).await?;
    if purpose == Purpose::Unlock && !settings.unlock_without_reset {
        return Err(Stop::UnlockNotOffered);
    }
    let account = find_account(state, identifier.as_str()).await?;
    let flow = Flow {
        purpose,
        identifier: identifier.0,
        account,
        verified: Default::default(),
        challenge: None,
        started_at: now,
    };
    let name = flow.audit_name();
    unless_blocked(state, &name, now).await?;
    let directory = flow
        .account
        .as_ref()
        .map(|account| account.directory.to_string());
    let known = if flow.account.is_some() {
        "account found"
    } else {
        "no such account"
    };
    audit(
        state,
        &name,
        directory.as_deref(),
        AuditAction::SelfServiceIdentify,
        "started",
        Some(format!("{}; {known}", purpose.as_str())),
        origin,
    )
    .await?;
    let token = new_token("wbf_")?;
    state
        .portal
        .start_flow(token_hash(token.expose_secret()), flow)
        .await;
    Ok(token)
}

/// Where a flow stands before its next proof.
#[derive(Debug, PartialEq, Eq)]
pub enum Methods {
    /// Every required proof is given: on to the final step.
    AllProven,
    /// Proof `step` of `steps`, with one of these methods (none already proven).
    Choose {
        step: usize,
        steps: usize,
        methods: Vec<VerificationMethod>,
    },
}

/// What the flow asks for next. [`Stop::NotEnoughMethods`] when no method is left to prove.
pub async fn methods(state: &AppState, handle: &FlowHandle) -> Result<Methods, Stop> {
    let settings = settings(state).await?;
    let required = usize::from(settings.methods_required);
    let verified = &handle.flow.verified;
    if verified.len() >= required {
        return Ok(Methods::AllProven);
    }
    let methods: Vec<VerificationMethod> = offered_methods(state, &settings)
        .into_iter()
        .filter(|method| !verified.contains(method))
        .collect();
    if methods.is_empty() {
        return Err(Stop::NotEnoughMethods);
    }
    Ok(Methods::Choose {
        step: verified.len() + 1,
        steps: required,
        methods,
    })
}

/// Starts proving the method named `method`; `Ok(None)` when it is not one the flow may prove
/// now (not offered, or already proven).
pub async fn choose_method(
    state: &AppState,
    handle: &FlowHandle,
    method: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Option<Challenge>, Stop> {
    let settings = settings(state).await?;
    let method = offered_methods(state, &settings)
        .into_iter()
        .find(|offered| offered.as_str() == method)
        .filter(|offered| !handle.flow.verified.contains(offered));
    let Some(method) = method else {
        return Ok(None);
    };
    let challenge =
        issue_challenge(state, &settings, &handle.subject(), method, origin, now).await?;
    state
        .portal
        .update_flow(&handle.key, now, |flow| {
            flow.challenge = Some(challenge.clone());
        })
        .await;
    Ok(Some(challenge))
}

/// What one proof in a flow came to.
#[derive(Debug)]
pub enum ProofStep {
    /// There is no method being proven: back to the choice.
    NoChallenge,
    /// The proof held; the flow goes on to the next method or the final step.
    Proven,
    /// Wrong, counted; the same challenge is asked again.
    Wrong(Challenge),
}

/// Checks the proof of the flow's current challenge. The challenge leaves the flow first, under
/// the lock, so a second request with the same proof finds none and cannot count it again; a
/// wrong proof puts it back. [`Stop::Ended`] when the flow is gone; a stop that
/// [`Stop::ends_flow`] ends it.
pub async fn check_proof(
    state: &AppState,
    key: &[u8],
    answer: &ProofAnswer,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<ProofStep, Stop> {
    let Some((flow, challenge)) = state.portal.take_challenge(key, now).await else {
        return match state.portal.flow(key, now).await {
            Some(_) => Ok(ProofStep::NoChallenge),
            None => Err(Stop::Ended),
        };
    };
    let verdict = judge(
        state,
        origin,
        &subject_of(key, &flow),
        &challenge,
        answer,
        now,
    )
    .await;
    match verdict {
        Verdict::Passed => {}
        Verdict::Wrong => {
            state
                .portal
                .return_challenge(key, now, challenge.clone())
                .await;
            return Ok(ProofStep::Wrong(challenge));
        }
        Verdict::Stopped(stop) => {
            if stop.ends_flow() {
                state.portal.end_flow(key).await;
            } else {
                state.portal.return_challenge(key, now, challenge).await;
            }
            return Err(stop);
        }
    }
    let flow = state
        .portal
        .record_proof(key, now, challenge.method)
        .await
        .ok_or(Stop::Ended)?;
    if let Some(account) = &flow.account
        && let Err(stop) = standing(state, account).await
    {
        if stop.ends_flow() {
            state.portal.end_flow(key).await;
        }
        return Err(stop);
    }
    Ok(ProofStep::Proven)
}

/// Whether a verified person may go on: in scope, enabled, and with as many usable methods
/// registered as the policy requires.
async fn standing(state: &AppState, account: &PortalAccount) -> Result<(), Stop> {
    let settings = settings(state).await?;
    let Some(detail) = account_detail(state, account).await? else {
        return Err(Stop::OutOfScope);
    };
    if !in_scope(&settings, &detail) {
        return Err(Stop::OutOfScope);
    }
    if !detail.user.enabled {
        return Err(Stop::AccountDisabled);
    }
    let registered = stored_methods(state, account).await?;
    let usable = usable_methods(&offered_methods(state, &settings), &registered).len();
    if usable < usize::from(settings.methods_required) {
        return Err(Stop::NotEnoughMethods);
    }
    Ok(())
}

/// A flow ready for its final step.
#[derive(Debug, Clone)]
pub struct Proven {
    pub settings: SelfServiceSettings,
    pub account: PortalAccount,
    pub purpose: Purpose,
}

/// Why a flow is not at its final step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotYet {
    /// Proofs are missing.
    Unproven,
    /// The final step asked for is not the one the flow was started for, or is not allowed.
    OtherStep,
}

/// The final step of `handle`, once every required proof is given: [`Stop::ResetsOff`] when
/// resets are left to the helpdesk.
pub async fn final_step(
    state: &AppState,
    handle: &FlowHandle,
) -> Result<Result<Proven, NotYet>, Stop> {
    let settings = settings(state).await?;
    let required = usize::from(settings.methods_required);
    let account = match &handle.flow.account {
        Some(account) if handle.flow.verified.len() >= required => account.clone(),
        _ => return Ok(Err(NotYet::Unproven)),
    };
    if handle.flow.purpose == Purpose::Reset && !settings.writeback_enabled {
        return Err(Stop::ResetsOff);
    }
    Ok(Ok(Proven {
        settings,
        account,
        purpose: handle.flow.purpose,
    }))
}

async fn proven_for(
    state: &AppState,
    handle: &FlowHandle,
    purpose: Purpose,
) -> Result<Result<Proven, NotYet>, Stop> {
    let proven = match final_step(state, handle).await {
        Ok(Ok(proven)) => proven,
        Ok(Err(not_yet)) => return Ok(Err(not_yet)),
        Err(Stop::ResetsOff) => return Ok(Err(NotYet::OtherStep)),
        Err(stop) => return Err(stop),
    };
    let allowed = match purpose {
        Purpose::Reset => proven.settings.writeback_enabled,
        Purpose::Unlock => proven.settings.unlock_without_reset,
    };
    if proven.purpose != purpose || !allowed {
        return Ok(Err(NotYet::OtherStep));
    }
    Ok(Ok(proven))
}

/// Why a new password was not sent, or what the directory said against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordRefusal {
    NotTheSame,
    Empty,
    TooLong,
    /// The current password of a change is missing or longer than any password can be.
    CurrentMissing,
    /// A rule (the directory's reported policy, the cloud's own rules) or the directory's own
    /// verdict.
    Verdict(ResultCode),
}

/// The words a new password must not contain: the user name and the parts of the full name.
pub fn user_words(account: &PortalAccount) -> Vec<String> {
    let mut words = vec![account.sam_account_name.clone()];
    if let Some(display_name) = &account.display_name {
        words.extend(
            display_name
                .split([',', '.', '-', '_', '#', '\t', ' '])
                .filter(|token| token.chars().count() >= 3)
                .map(str::to_owned),
        );
    }
    words
}

/// Why a new password is refused before anything is sent: the two copies differ, empty or too
/// long, too short for the directory's reported policy (what to fix first), then the cloud's
/// own rules. The agent checks the directory's whole policy again.
pub fn refuse_before_sending(
    state: &AppState,
    settings: &SelfServiceSettings,
    account: &PortalAccount,
    new_password: &SecretString,
    confirm_password: &SecretString,
) -> Option<PasswordRefusal> {
    if new_password.expose_secret() != confirm_password.expose_secret() {
        return Some(PasswordRefusal::NotTheSame);
    }
    match check_password(SecretField::NewPassword, new_password) {
        Err(WritebackError::EmptyPassword(_)) => return Some(PasswordRefusal::Empty),
        Err(_) => return Some(PasswordRefusal::TooLong),
        Ok(()) => {}
    }
    let policy = reported_policy(state, &account.directory);
    if let Some(policy) = &policy
        && writeback_policy::utf16_length(new_password.expose_secret()) < policy.min_length as usize
    {
        return Some(PasswordRefusal::Verdict(ResultCode::PolicyViolation {
            reason: writeback_policy::PolicyReason::TooShort,
            requirements: Some(policy.clone()),
        }));
    }
    let words = user_words(account);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    checks::cloud_password_rules(settings, &state.screen, new_password, &words)
        .err()
        .map(|reason| {
            PasswordRefusal::Verdict(ResultCode::PolicyViolation {
                reason,
                requirements: None,
            })
        })
}

/// What a final step (new password, unlock, change) came to.
#[derive(Debug)]
pub enum FinalOutcome {
    /// Done in the directory; the warnings say what part of it had no effect.
    Done(Vec<OutcomeWarning>),
    NotYet(NotYet),
    Refused(PasswordRefusal),
}

/// Sets the flow's new password, written back synchronously (unlocking the account too). The
/// flow ends when the directory took it.
pub async fn set_new_password(
    state: &AppState,
    handle: &FlowHandle,
    new_password: SecretString,
    confirm_password: &SecretString,
    request_id: RequestId,
    origin: &Option<String>,
) -> Result<FinalOutcome, Stop> {
    let proven = match proven_for(state, handle, Purpose::Reset).await? {
        Ok(proven) => proven,
        Err(not_yet) => return Ok(FinalOutcome::NotYet(not_yet)),
    };
    let account = &proven.account;
    if let Some(refusal) = refuse_before_sending(
        state,
        &proven.settings,
        account,
        &new_password,
        confirm_password,
    ) {
        return Ok(FinalOutcome::Refused(refusal));
    }
    let reset = Writeback::ResetPassword {
        new_password,
        must_change: false,
        unlock: true,
    };
    let outcome = write_back(state, account, origin, request_id, reset).await?;
    if matches!(outcome, FinalOutcome::Done(_)) {
        state.portal.end_flow(&handle.key).await;
        notify_user(
            state,
            &proven.settings,
            account,
            "reset through self-service",
        )
        .await;
    }
    Ok(outcome)
}

/// Unlocks the flow's account. The flow ends when the directory did.
pub async fn unlock(
    state: &AppState,
    handle: &FlowHandle,
    request_id: RequestId,
    origin: &Option<String>,
) -> Result<FinalOutcome, Stop> {
    let proven = match proven_for(state, handle, Purpose::Unlock).await? {
        Ok(proven) => proven,
        Err(not_yet) => return Ok(FinalOutcome::NotYet(not_yet)),
    };
    let outcome = write_back(
        state,
        &proven.account,
        origin,
        request_id,
        Writeback::Unlock,
    )
    .await?;
    if matches!(outcome, FinalOutcome::Done(_)) {
        state.portal.end_flow(&handle.key).await;
    }
    Ok(outcome)
}

/// Runs one operation for the person at the portal, audited as theirs, and reads the
/// directory's verdict: an unusable directory and a disabled account stop the flow; anything
/// else that is not success is a refusal to show. The account is synced, so it is addressed by
/// its anchor and not looked up again.
pub async fn write_back(
    state: &AppState,
    account: &PortalAccount,
    origin: &Option<String>,
    request_id: RequestId,
    operation: Writeback,
) -> Result<FinalOutcome, Stop> {
    let (result, warnings) = run(state, account, origin, request_id, operation).await?;
    match result {
        ResultCode::Success => Ok(FinalOutcome::Done(warnings)),
        ResultCode::AgentUnavailable | ResultCode::DirectoryUnavailable { .. } => {
            Err(Stop::Unavailable)
        }
        ResultCode::AccountDisabled => Err(Stop::AccountDisabled),
        other => Ok(FinalOutcome::Refused(PasswordRefusal::Verdict(other))),
    }
}

/// The directory's verdict on one operation for the person at the portal, audited as theirs.
/// The relay answers at once when no agent of the directory is connected; a directory every
/// connected agent reports unusable is refused here, from memory, without a request.
pub async fn run(
    state: &AppState,
    account: &PortalAccount,
    origin: &Option<String>,
    request_id: RequestId,
    operation: Writeback,
) -> Result<(ResultCode, Vec<OutcomeWarning>), Stop> {
    if state.relay.reported_unreachable(&account.directory) {
        return Err(Stop::Unavailable);
    }
    let actor = Actor::self_service(&account.audit_name(), origin.clone());
    let target = UserTarget {
        directory: account.directory.clone(),
        name: account.sam_account_name.clone(),
        user: UserRef::Anchor(account.anchor),
    };
    let outcome = writeback::perform(
        state,
        &actor,
        Requester::SelfService,
        target,
        request_id,
        operation,
    )
    .await
    .map_err(|error| match error {
        WritebackError::Store(error) => Stop::from(error),
        other => Stop::Failed(crate::service::error::CloudError::InvalidInput(
            other.to_string(),
        )),
    })?;
    Ok((outcome.result, outcome.warnings))
}
