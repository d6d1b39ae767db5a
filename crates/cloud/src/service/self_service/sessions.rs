//! Signed-in self-service, as steps: sign-in with the directory password (checked by the agent,
//! never here), the step-up proof of an existing method before the methods may change, and the
//! change of password.
//!
//! Rules kept here:
//! * nothing reaches the directory unless self-service is on, the name is one synced account in
//!   scope and enabled, and its attempts are within their limits, which stay below the
//!   directory's own lockout threshold;
//! * every refused sign-in reads the same, whatever the reason, and takes at least
//!   [`SIGN_IN_FLOOR`], so neither the words nor the time tell a wrong password from an unknown
//!   name;
//! * a session whose password expired or must change may only change it.

use secrecy::{ExposeSecret, SecretString};
use writeback_proto::ids::RequestId;
use writeback_proto::result::ResultCode;
use writeback_proto::sealing::SecretField;
use writeback_proto::time::UnixMillis;

use crate::service::audit::AuditAction;
use crate::service::auth::{new_token, token_hash};
use crate::service::error::CloudError;
use crate::service::limits::Guarded;
use crate::service::self_service::accounts::{
    account_detail, any_directory_usable, audit, find_account, in_scope, offered_methods,
    reported_lockout, settings, stored_methods, usable_methods,
};
use crate::service::self_service::checks::RESULT_INVALID;
use crate::service::self_service::notices::notify_user;
use crate::service::self_service::proof::{
    ProofAnswer, ProofSubject, Verdict, issue_challenge, judge,
};
use crate::service::self_service::recovery::{
    FinalOutcome, Identifier, PasswordRefusal, open_settings, refuse_before_sending, run,
    write_back,
};
use crate::service::self_service::state::{Challenge, PortalAccount, PortalSession};
use crate::service::self_service::stop::{Stop, block_if_used_up, limits, reserve, unless_blocked};
use crate::service::state::AppState;
use crate::service::writeback::{Writeback, check_password};

/// A refused sign-in takes at least this long to answer, whether or not the account exists, so
/// the time taken does not tell (a real bind takes about a tenth of a second).
pub const SIGN_IN_FLOOR: std::time::Duration = std::time::Duration::from_millis(400);

/// What a sign-in came to.
#[derive(Debug)]
pub enum SignIn {
    /// The password was right: a session, whose cookie value this is. `must_change` when the
    /// directory says the password expired or must be changed first.
    Opened {
        token: SecretString,
        must_change: bool,
    },
    /// The one refusal, whatever the reason.
    Refused,
}

/// Signs in with the directory password. Every answer but [`SignIn::Opened`] comes no sooner
/// than [`SIGN_IN_FLOOR`] after the call.
pub async fn sign_in(
    state: &AppState,
    identifier: &Identifier,
    password: SecretString,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<SignIn, Stop> {
    let started = tokio::time::Instant::now();
    let outcome = attempt_sign_in(state, identifier, password, origin, now).await;
    if !matches!(outcome, Ok(SignIn::Opened { .. })) {
        tokio::time::sleep_until(started + SIGN_IN_FLOOR).await;
    }
    outcome
}

async fn attempt_sign_in(
    state: &AppState,
    identifier: &Identifier,
    password: SecretString,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<SignIn, Stop> {
    let settings = open_settings(state).await?;
    // Unusable for everyone is said to everyone, before the name is looked up.
    if !any_directory_usable(state).await? {
        return Err(Stop::Unavailable);
    }
    let account = find_account(state, identifier.as_str()).await?;
    let name = account
        .as_ref()
        .map_or_else(|| identifier.as_str().to_owned(), PortalAccount::audit_name);
    unless_blocked(state, &name, now).await?;
    let Some(account) = account else {
        return Ok(SignIn::Refused);
    };
    // Scope and state from the synced copy: out of scope or disabled never reaches a bind.
    match account_detail(state, &account).await? {
        Some(detail) if in_scope(&settings, &detail) && detail.user.enabled => {}
        _ => return Ok(SignIn::Refused),
    }
    let directory = account.directory.to_string();
    let reservation = reserve(
        state,
        Guarded::SignIn,
        &name,
        Some(&directory),
        origin,
        reported_lockout(state, &account.directory),
        now,
    )
    .await?;
    let request_id =
        RequestId::generate().map_err(|error| CloudError::Internal(error.to_string()))?;
    let verify = Writeback::VerifyPassword { password };
    let result = match run(state, &account, origin, request_id, verify).await {
        Ok((result, _)) => result,
        Err(stop) => {
            limits(state).release(reservation).await?;
            return Err(stop);
        }
    };
    let must_change = match result {
        ResultCode::Success => false,
        ResultCode::PasswordExpired | ResultCode::MustChangePassword => true,
        ResultCode::AgentUnavailable
        | ResultCode::DirectoryUnavailable { .. }
        | ResultCode::Timeout
        | ResultCode::OutcomeUnknown { .. } => {
            limits(state).release(reservation).await?;
            return Err(Stop::Unavailable);
        }
        _ => {
            // Wrong, locked, disabled, protected and out-of-OU accounts all read the same; the
            // attempt stays counted.
            audit(
                state,
                &name,
                Some(&directory),
                AuditAction::SelfServiceVerify,
                RESULT_INVALID,
                Some("password".into()),
                origin,
            )
            .await?;
            block_if_used_up(state, &name, Some(&directory), origin, now).await?;
            return Ok(SignIn::Refused);
        }
    };
    limits(state).release(reservation).await?;
    let token = new_token("wbu_")?;
    state
        .portal
        .start_session(
            token_hash(token.expose_secret()),
            PortalSession {
                account,
                must_change,
                pending: None,
                step_up: None,
                proven_at: None,
                started_at: now,
            },
        )
        .await;
    Ok(SignIn::Opened { token, must_change })
}

/// A signed-in person: the digest of their cookie, and the session as of now.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub key: Vec<u8>,
    pub session: PortalSession,
}

impl SessionHandle {
    /// The session the cookie `value` names, if it is still live.
    pub async fn open(state: &AppState, value: &str, now: UnixMillis) -> Result<Self, Stop> {
        let key = token_hash(value);
        let session = state.portal.session(&key, now).await.ok_or(Stop::Ended)?;
        Ok(Self { key, session })
    }

    pub fn account(&self) -> &PortalAccount {
        &self.session.account
    }

    fn subject(&self) -> ProofSubject {
        ProofSubject::signed_in(self.account(), &self.key)
    }
}

/// Whether the session may change its methods now: none are registered yet (the first is
/// registered with the directory password alone), or one was proven in the last few minutes.
pub async fn may_change_methods(
    state: &AppState,
    handle: &SessionHandle,
    now: UnixMillis,
) -> Result<bool, Stop> {
    let has_methods = !stored_methods(state, handle.account()).await?.is_empty();
    Ok(handle.session.may_change_methods(has_methods, now))
}

/// Starts the step-up proof of the registered method named `method`; `Ok(None)` when it is not
/// one this person can prove.
pub async fn start_step_up(
    state: &AppState,
    handle: &SessionHandle,
    method: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Option<Challenge>, Stop> {
    let settings = settings(state).await?;
    let registered = stored_methods(state, handle.account()).await?;
    let Some(method) = usable_methods(&offered_methods(state, &settings), &registered)
        .into_iter()
        .find(|usable| usable.as_str() == method)
    else {
        return Ok(None);
    };
    let challenge =
        issue_challenge(state, &settings, &handle.subject(), method, origin, now).await?;
    state
        .portal
        .update_session(&handle.key, now, |session| {
            session.step_up = Some(challenge.clone());
        })
        .await;
    Ok(Some(challenge))
}

/// What a step-up proof came to.
#[derive(Debug)]
pub enum StepUp {
    NoChallenge,
    /// Proven: the methods may change for the next few minutes.
    Proven,
    Wrong(Challenge),
}

/// Checks the step-up proof. The challenge is taken out of the session first, so one proof
/// counts once; a wrong one puts it back, within the same limits as a reset's proofs. A block
/// ends the session.
pub async fn check_step_up(
    state: &AppState,
    handle: &SessionHandle,
    answer: &ProofAnswer,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<StepUp, Stop> {
    let Some(challenge) = state.portal.take_step_up(&handle.key, now).await else {
        return Ok(StepUp::NoChallenge);
    };
    match judge(state, origin, &handle.subject(), &challenge, answer, now).await {
        Verdict::Passed => {
            state
                .portal
                .update_session(&handle.key, now, |session| {
                    session.proven_at = Some(now);
                })
                .await;
            Ok(StepUp::Proven)
        }
        Verdict::Wrong => {
            state
                .portal
                .return_step_up(&handle.key, now, challenge.clone())
                .await;
            Ok(StepUp::Wrong(challenge))
        }
        Verdict::Stopped(stop) => {
            if stop.ends_flow() {
                state.portal.end_session(&handle.key).await;
            } else {
                state
                    .portal
                    .return_step_up(&handle.key, now, challenge)
                    .await;
            }
            Err(stop)
        }
    }
}

/// Changes the signed-in person's password with their current one, written back synchronously.
/// A session that had to change its password becomes a full one.
pub async fn change_password(
    state: &AppState,
    handle: &SessionHandle,
    current_password: SecretString,
    new_password: SecretString,
    confirm_password: &SecretString,
    request_id: RequestId,
    origin: &Option<String>,
) -> Result<FinalOutcome, Stop> {
    let settings = settings(state).await?;
    let account = handle.account();
    if check_password(SecretField::CurrentPassword, &current_password).is_err() {
        return Ok(FinalOutcome::Refused(PasswordRefusal::CurrentMissing));
    }
    if let Some(refusal) =
        refuse_before_sending(state, &settings, account, &new_password, confirm_password)
    {
        return Ok(FinalOutcome::Refused(refusal));
    }
    let change = Writeback::ChangePassword {
        current_password,
        new_password,
    };
    let outcome = match write_back(state, account, origin, request_id, change).await {
        // Said on the form, beside the passwords, like the directory's other refusals.
        Err(Stop::AccountDisabled) => {
            FinalOutcome::Refused(PasswordRefusal::Verdict(ResultCode::AccountDisabled))
        }
        other => other?,
    };
    if matches!(outcome, FinalOutcome::Done(_)) {
        state
            .portal
            .update_session(&handle.key, UnixMillis::now(), |session| {
                session.must_change = false;
            })
            .await;
        notify_user(state, &settings, account, "changed by you in self-service").await;
    }
    Ok(outcome)
}
