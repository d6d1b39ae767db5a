//! A signed-in person's verification methods, as steps: add an email address or phone (proven
//! by a code sent to it), an authenticator (proven by a code from it), security questions; remove
//! one; confirm they are still current.
//!
//! Rules kept here:
//! * the caller has checked [`super::sessions::may_change_methods`] first;
//! * codes sent count against the code limits, wrong codes against the proof limits, like a
//!   reset's, so registration cannot be used to guess codes;
//! * every change is audited and told to every address and phone registered before and after;
//! * a method confirmed by a code is itself a fresh proof; one code registers once.

use secrecy::{ExposeSecret, SecretString};
use writeback_proto::api::VerificationMethod;
use writeback_proto::time::UnixMillis;
use writeback_store::RegisteredMethod;
use zeroize::Zeroizing;

use crate::service::audit::AuditAction;
use crate::service::auth::hash_password;
use crate::service::error::CloudError;
use crate::service::limits::Guarded;
use crate::service::self_service::accounts::{
    audit, method_owner, offered_methods, owner, save_method, settings, stored_methods,
};
use crate::service::self_service::checks::{self, RESULT_INVALID, RESULT_SENT};
use crate::service::self_service::notices::{notify_method_change, send_code};
use crate::service::self_service::proof::StoredQuestion;
use crate::service::self_service::sessions::SessionHandle;
use crate::service::self_service::state::{PendingRegistration, PortalAccount};
use crate::service::self_service::stop::{Stop, limits, reserve};
use crate::service::state::AppState;
use crate::service::totp;

/// What a code typed to confirm a method came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    Registered,
    /// No method of this kind is waiting for a code.
    NothingPending,
    /// Wrong, counted; the method waits for another try.
    Wrong,
}

/// Why a method was not registered, in terms the person can fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodRefusal {
    /// This deployment does not offer the method.
    NotOffered(VerificationMethod),
    /// The same question chosen twice.
    SameQuestion,
    /// A question left unchosen or unanswered.
    Unanswered,
    /// An answer too short or too guessable, with why.
    WeakAnswer(&'static str),
}

async fn audit_account(
    state: &AppState,
    account: &PortalAccount,
    action: AuditAction,
    result: &str,
    detail: Option<String>,
    origin: &Option<String>,
) -> Result<(), writeback_store::StoreError> {
    let directory = account.directory.to_string();
    audit(
        state,
        &account.audit_name(),
        Some(&directory),
        action,
        result,
        detail,
        origin,
    )
    .await
}

/// Sends a code to the address or number being registered, within the code limits, and keeps
/// the registration pending until the code comes back. [`Stop::TryLater`] or [`Stop::Blocked`]
/// when too many codes were sent.
pub async fn send_code_to(
    state: &AppState,
    handle: &SessionHandle,
    method: VerificationMethod,
    destination: String,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Result<(), MethodRefusal>, Stop> {
    let settings = settings(state).await?;
    if !offered_methods(state, &settings).contains(&method) {
        return Ok(Err(MethodRefusal::NotOffered(method)));
    }
    let account = handle.account();
    let name = account.audit_name();
    let _held = reserve(
        state,
        Guarded::Code,
        &name,
        Some(account.directory.as_str()),
        origin,
        None,
        now,
    )
    .await?;
    let (code, sent) = checks::new_code(&handle.key, now)
        .map_err(|error| CloudError::Internal(error.to_string()))?;
    let text = format!(
        "Your code to confirm this {} for password self-service is {}. It is valid for 5 minutes.",
        match method {
            VerificationMethod::Sms => "phone",
            _ => "address",
        },
        code.expose_secret()
    );
    if !send_code(
        state,
        method,
        destination.clone(),
        "Confirm your email address",
        text,
    ) {
        return Err(
            CloudError::Internal(format!("no way to send a {} code", method.as_str())).into(),
        );
    }
    audit_account(
        state,
        account,
        AuditAction::SelfServiceSendCode,
        RESULT_SENT,
        Some(format!("{} registration", method.as_str())),
        origin,
    )
    .await?;
    state
        .portal
        .update_session(&handle.key, now, |session| {
            session.pending = Some(PendingRegistration {
                method,
                value: Some(destination),
                secret: None,
                code: Some(sent),
            });
        })
        .await;
    Ok(Ok(()))
}

/// The code sent to an email address or phone being registered. The pending registration is
/// taken out of the session first, so one code registers once.
pub async fn confirm_code(
    state: &AppState,
    handle: &SessionHandle,
    typed: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Confirmation, Stop> {
    let Some(pending) = state.portal.take_pending(&handle.key, now).await else {
        return Ok(Confirmation::NothingPending);
    };
    let PendingRegistration {
        method,
        value: Some(destination),
        code: Some(sent),
        ..
    } = pending.clone()
    else {
        state.portal.return_pending(&handle.key, now, pending).await;
        return Ok(Confirmation::NothingPending);
    };
    if !checks::code_matches(&handle.key, &sent, typed, now) {
        count_wrong_code(state, handle, origin, pending, now).await?;
        return Ok(Confirmation::Wrong);
    }
    register(state, handle, method, Some(destination), None, origin, now).await?;
    Ok(Confirmation::Registered)
}

/// The authenticator key being registered: the one already shown in this session, or a new one
/// kept pending until a code from it is typed.
pub async fn authenticator_key(
    state: &AppState,
    handle: &SessionHandle,
    now: UnixMillis,
) -> Result<Zeroizing<Vec<u8>>, Stop> {
    let shown = handle.session.pending.as_ref().and_then(|pending| {
        (pending.method == VerificationMethod::AuthenticatorApp)
            .then(|| pending.secret.clone())
            .flatten()
    });
    if let Some(secret) = shown {
        return Ok(secret);
    }
    let secret = totp::new_secret().map_err(|error| CloudError::Internal(error.to_string()))?;
    let kept = secret.clone();
    state
        .portal
        .update_session(&handle.key, now, |session| {
            session.pending = Some(PendingRegistration {
                method: VerificationMethod::AuthenticatorApp,
                value: None,
                secret: Some(kept),
                code: None,
            });
        })
        .await;
    Ok(secret)
}

/// A code from the authenticator being registered. The code that confirms the key is used up:
/// it cannot also prove a reset.
pub async fn confirm_authenticator(
    state: &AppState,
    handle: &SessionHandle,
    typed: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Confirmation, Stop> {
    let Some(pending) = state.portal.take_pending(&handle.key, now).await else {
        return Ok(Confirmation::NothingPending);
    };
    let Some(secret) = pending
        .secret
        .clone()
        .filter(|_| pending.method == VerificationMethod::AuthenticatorApp)
    else {
        state.portal.return_pending(&handle.key, now, pending).await;
        return Ok(Confirmation::NothingPending);
    };
    let Some(step) = totp::matching_step(&secret, typed, now, None) else {
        count_wrong_code(state, handle, origin, pending, now).await?;
        return Ok(Confirmation::Wrong);
    };
    register(
        state,
        handle,
        VerificationMethod::AuthenticatorApp,
        None,
        Some(secret.to_vec()),
        origin,
        now,
    )
    .await?;
    let owned = owner(handle.account());
    state
        .store
        .accept_self_service_totp_step(method_owner(&owned), step)
        .await?;
    Ok(Confirmation::Registered)
}

/// Counts a wrong registration code against the proof limits and audits it; the registration
/// waits for another try unless the limit is reached ([`Stop::TryLater`]: the person is signed
/// in with their password, so the account is not blocked for it).
async fn count_wrong_code(
    state: &AppState,
    handle: &SessionHandle,
    origin: &Option<String>,
    pending: PendingRegistration,
    now: UnixMillis,
) -> Result<(), Stop> {
    let account = handle.account();
    let name = account.audit_name();
    let reserved = limits(state)
        .reserve(Guarded::Proof, &name, origin.as_deref(), None, now)
        .await?;
    if reserved.is_err() {
        return Err(Stop::TryLater);
    }
    audit_account(
        state,
        account,
        AuditAction::SelfServiceVerify,
        RESULT_INVALID,
        Some("registration code".into()),
        origin,
    )
    .await?;
    if limits(state).used_up(Guarded::Proof, &name, now).await? {
        return Err(Stop::TryLater);
    }
    state.portal.return_pending(&handle.key, now, pending).await;
    Ok(())
}

/// Stores security questions: `picks` are the chosen questions (indexes into the policy's pool)
/// with their answers, as many as the policy asks. Answers are hashed, never kept.
pub async fn register_questions(
    state: &AppState,
    handle: &SessionHandle,
    picks: Vec<(Option<usize>, Option<SecretString>)>,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Result<(), MethodRefusal>, Stop> {
    let settings = settings(state).await?;
    let method = VerificationMethod::SecurityQuestions;
    if !offered_methods(state, &settings).contains(&method) {
        return Ok(Err(MethodRefusal::NotOffered(method)));
    }
    let wanted = usize::from(settings.questions_asked);
    let mut chosen: Vec<(String, SecretString)> = Vec::new();
    let mut problem = None;
    for index in 0..wanted {
        let (question, answer) = picks.get(index).cloned().unwrap_or((None, None));
        match (
            question.and_then(|index| settings.security_questions.get(index)),
            answer,
        ) {
            (Some(question), Some(answer)) => {
                if chosen.iter().any(|(existing, _)| existing == question) {
                    problem = Some(MethodRefusal::SameQuestion);
                } else if let Some(weak) = checks::answer_problem(answer.expose_secret()) {
                    problem = Some(MethodRefusal::WeakAnswer(weak));
                }
                chosen.push((question.clone(), answer));
            }
            _ => problem = Some(MethodRefusal::Unanswered),
        }
    }
    if let Some(problem) = problem {
        return Ok(Err(problem));
    }
    let hashed = state
        .hashing
        .run(move || {
            chosen
                .into_iter()
                .map(|(question, answer)| {
                    let normalized =
                        SecretString::from(checks::normalize_answer(answer.expose_secret()));
                    hash_password(&normalized).map(|answer_hash| StoredQuestion {
                        question,
                        answer_hash,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|_| Stop::Busy)??;
    let secret = serde_json::to_vec(&hashed)
        .map_err(|error| CloudError::Internal(format!("storing questions: {error}")))?;
    register(state, handle, method, None, Some(secret), origin, now).await?;
    Ok(Ok(()))
}

/// Stores a method the person has just set up, audits it and tells every address and phone
/// registered before and after. A method confirmed by a code is itself a fresh proof.
async fn register(
    state: &AppState,
    handle: &SessionHandle,
    method: VerificationMethod,
    value: Option<String>,
    secret: Option<Vec<u8>>,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<(), Stop> {
    let account = handle.account();
    let before = stored_methods(state, account).await?;
    let replaced = before
        .iter()
        .any(|existing| existing.method == method.as_str());
    let registered = RegisteredMethod {
        method: method.as_str().into(),
        value: value.clone(),
        secret,
        registered_at: now,
    };
    save_method(state, account, registered).await?;
    audit_account(
        state,
        account,
        AuditAction::SelfServiceRegister,
        "success",
        Some(method.as_str().into()),
        origin,
    )
    .await?;
    let described = match &value {
        Some(value) => format!("{} {value}", method_name(method)),
        None => method_name(method).to_owned(),
    };
    let change = if replaced {
        format!("{described} replaced the one registered before")
    } else {
        format!("{described} was added")
    };
    let mut told = before;
    told.push(RegisteredMethod {
        method: method.as_str().into(),
        value,
        secret: None,
        registered_at: now,
    });
    notify_method_change(state, account, &told, &change, origin);
    let proves = method != VerificationMethod::SecurityQuestions;
    state
        .portal
        .update_session(&handle.key, now, |session| {
            session.pending = None;
            if proves {
                session.proven_at = Some(now);
            }
        })
        .await;
    Ok(())
}

/// Removes the method named `method`; `Ok(false)` when none such was registered.
pub async fn remove(
    state: &AppState,
    handle: &SessionHandle,
    method: VerificationMethod,
    origin: &Option<String>,
) -> Result<bool, Stop> {
    let account = handle.account();
    let before = stored_methods(state, account).await?;
    let owned = owner(account);
    let removed = state
        .store
        .remove_self_service_method(method_owner(&owned), method.as_str())
        .await?;
    if removed {
        audit_account(
            state,
            account,
            AuditAction::SelfServiceRemove,
            "success",
            Some(method.as_str().into()),
            origin,
        )
        .await?;
        notify_method_change(
            state,
            account,
            &before,
            &format!("{} was removed", method_name(method)),
            origin,
        );
    }
    Ok(removed)
}

/// Records that the person confirmed their methods are still current.
pub async fn confirm_current(
    state: &AppState,
    handle: &SessionHandle,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<(), Stop> {
    let account = handle.account();
    let owned = owner(account);
    state
        .store
        .confirm_self_service_methods(method_owner(&owned), now)
        .await?;
    audit_account(
        state,
        account,
        AuditAction::SelfServiceConfirm,
        "success",
        None,
        origin,
    )
    .await?;
    Ok(())
}

/// A method's name in the notices mailed about it.
pub fn method_name(method: VerificationMethod) -> &'static str {
    match method {
        VerificationMethod::Email => "Email",
        VerificationMethod::AuthenticatorApp => "Authenticator app",
        VerificationMethod::SecurityQuestions => "Security questions",
        VerificationMethod::Sms => "Mobile phone",
    }
}
