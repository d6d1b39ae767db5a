//! Proving a registered method: the challenge (a code sent, questions asked, or an authenticator
//! to read), then the verdict on what came back, within the proof limits. Reset and unlock flows
//! and a signed-in person's step-up share both.
//!
//! Anti-enumeration: a name that matched no account, or a method not registered, goes through
//! the same steps against stand-ins (a code that matches nothing, the same questions each time,
//! a secret derived from the flow), so neither the answer nor the time taken tells them apart.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use writeback_proto::api::{SelfServiceSettings, VerificationMethod};
use writeback_proto::time::UnixMillis;
use zeroize::Zeroizing;

use crate::service::audit::AuditAction;
use crate::service::auth::verify_password;
use crate::service::error::CloudError;
use crate::service::limits::Guarded;
use crate::service::self_service::accounts::{audit, method_owner, owner, registered_methods};
use crate::service::self_service::checks::{self, RESULT_INVALID, RESULT_NO_ADDRESS, RESULT_SENT};
use crate::service::self_service::notices::send_code;
use crate::service::self_service::state::{Challenge, PortalAccount, SentCode};
use crate::service::self_service::stop::{Stop, block_if_used_up, limits, reserve, unless_blocked};
use crate::service::state::AppState;
use crate::service::totp;

/// The stored security questions of a registration: questions with their answers' hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredQuestion {
    pub question: String,
    pub answer_hash: String,
}

/// Who a proof is for: the name the limits and the audit log use, the account (none for a name
/// that matched nobody), the name as typed, and the salt one-time codes are hashed with (the
/// digest of the flow's or session's cookie).
#[derive(Debug, Clone)]
pub struct ProofSubject {
    pub name: String,
    pub directory: Option<String>,
    pub account: Option<PortalAccount>,
    pub identifier: String,
    pub salt: Vec<u8>,
}

impl ProofSubject {
    /// A signed-in person proving one of their own methods.
    pub fn signed_in(account: &PortalAccount, salt: &[u8]) -> Self {
        Self {
            name: account.audit_name(),
            directory: Some(account.directory.to_string()),
            account: Some(account.clone()),
            identifier: account.sam_account_name.to_lowercase(),
            salt: salt.to_vec(),
        }
    }
}

/// What a person sent back: a code, or answers to the questions asked, in order.
#[derive(Debug, Default)]
pub struct ProofAnswer {
    pub code: Option<String>,
    pub answers: Vec<Option<SecretString>>,
}

/// What checking one proof came to.
#[derive(Debug)]
pub enum Verdict {
    Passed,
    /// Not passed, counted, and the person may try again.
    Wrong,
    /// Not checked, or checked and the account is now blocked: see [`Stop::ends_flow`].
    Stopped(Stop),
}

/// Starts proving `method`, unless the name is blocked: a code mailed or texted (within the code
/// limits), the security questions to ask, or nothing to prepare for an authenticator.
pub async fn issue_challenge(
    state: &AppState,
    settings: &SelfServiceSettings,
    subject: &ProofSubject,
    method: VerificationMethod,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Challenge, Stop> {
    unless_blocked(state, &subject.name, now).await?;
    let registered = registered_methods(state, subject.account.as_ref()).await?;
    let mut challenge = Challenge {
        method,
        code: None,
        questions: Vec::new(),
    };
    match method {
        VerificationMethod::Email | VerificationMethod::Sms => {
            // Held for good: every code sent counts, whether or not it is ever typed.
            let _held = reserve(
                state,
                Guarded::Code,
                &subject.name,
                subject.directory.as_deref(),
                origin,
                None,
                now,
            )
            .await?;
            let destination = registered
                .iter()
                .find(|registered| registered.method == method.as_str())
                .and_then(|registered| registered.value.clone());
            let (code, sent) = checks::new_code(&subject.salt, now)
                .map_err(|error| CloudError::Internal(error.to_string()))?;
            let text = format!(
                "Your Writeback verification code is {}. It is valid for 5 minutes. Not you? Tell your helpdesk.",
                code.expose_secret()
            );
            let delivered = match destination {
                Some(destination) => {
                    send_code(state, method, destination, "Your verification code", text)
                }
                None => false,
            };
            let result = if delivered {
                challenge.code = Some(sent);
                RESULT_SENT
            } else {
                // Nowhere to send it: a code that matches nothing, so the next page is the same.
                challenge.code = Some(SentCode {
                    digest: Vec::new(),
                    sent_at: now,
                });
                RESULT_NO_ADDRESS
            };
            audit(
                state,
                &subject.name,
                subject.directory.as_deref(),
                AuditAction::SelfServiceSendCode,
                result,
                Some(method.as_str().into()),
                origin,
            )
            .await?;
        }
        VerificationMethod::SecurityQuestions => {
            let stored = registered
                .iter()
                .find(|method| method.method == VerificationMethod::SecurityQuestions.as_str())
                .and_then(|method| method.secret.as_deref())
                .and_then(|secret| serde_json::from_slice::<Vec<StoredQuestion>>(secret).ok());
            challenge.questions = match stored {
                Some(stored) => stored.into_iter().map(|stored| stored.question).collect(),
                None => checks::questions_for_unknown(
                    &subject.identifier,
                    &settings.security_questions,
                    usize::from(settings.questions_asked),
                ),
            };
        }
        VerificationMethod::AuthenticatorApp => {}
    }
    Ok(challenge)
}

/// Checks one proof within the limits: the attempt is reserved before the check (so a burst of
/// parallel guesses gets exactly the allowance through), released when the proof holds, and
/// kept, and audited, when it does not.
pub async fn judge(
    state: &AppState,
    origin: &Option<String>,
    subject: &ProofSubject,
    challenge: &Challenge,
    answer: &ProofAnswer,
    now: UnixMillis,
) -> Verdict {
    match judged(state, origin, subject, challenge, answer, now).await {
        Ok(true) => Verdict::Passed,
        Ok(false) => Verdict::Wrong,
        Err(stop) => Verdict::Stopped(stop),
    }
}

async fn judged(
    state: &AppState,
    origin: &Option<String>,
    subject: &ProofSubject,
    challenge: &Challenge,
    answer: &ProofAnswer,
    now: UnixMillis,
) -> Result<bool, Stop> {
    let name = &subject.name;
    let directory = subject.directory.as_deref();
    unless_blocked(state, name, now).await?;
    let reservation = reserve(state, Guarded::Proof, name, directory, origin, None, now).await?;
    let passed = match prove(state, subject, challenge, answer, now).await {
        Ok(passed) => passed,
        Err(stop) => {
            limits(state).release(reservation).await?;
            return Err(stop);
        }
    };
    let result = if passed { "success" } else { RESULT_INVALID };
    audit(
        state,
        name,
        directory,
        AuditAction::SelfServiceVerify,
        result,
        Some(challenge.method.as_str().into()),
        origin,
    )
    .await?;
    if passed {
        limits(state).release(reservation).await?;
        return Ok(true);
    }
    block_if_used_up(state, name, directory, origin, now).await?;
    Ok(false)
}

/// Whether the proof holds. Unknown names and unregistered methods go through the same work
/// against stand-ins, so the time taken does not tell them apart.
async fn prove(
    state: &AppState,
    subject: &ProofSubject,
    challenge: &Challenge,
    answer: &ProofAnswer,
    now: UnixMillis,
) -> Result<bool, Stop> {
    let registered = registered_methods(state, subject.account.as_ref()).await?;
    let stored = |method: VerificationMethod| {
        registered
            .iter()
            .find(|registered| registered.method == method.as_str())
    };
    let typed_code = answer.code.as_deref().unwrap_or_default();
    Ok(match challenge.method {
        VerificationMethod::Email | VerificationMethod::Sms => challenge
            .code
            .as_ref()
            .is_some_and(|sent| checks::code_matches(&subject.salt, sent, typed_code, now)),
        VerificationMethod::AuthenticatorApp => {
            let secret = stored(VerificationMethod::AuthenticatorApp)
                .and_then(|method| method.secret.clone())
                .map(Zeroizing::new);
            let stand_in = Zeroizing::new(subject.salt.clone());
            let matched = totp::matching_step(
                secret.as_deref().map_or(stand_in.as_slice(), Vec::as_slice),
                typed_code,
                now,
                None,
            );
            match (matched, &subject.account, secret.is_some()) {
                (Some(step), Some(account), true) => {
                    let owned = owner(account);
                    state
                        .store
                        .accept_self_service_totp_step(method_owner(&owned), step)
                        .await?
                }
                _ => false,
            }
        }
        VerificationMethod::SecurityQuestions => {
            let stored_answers: Vec<StoredQuestion> = stored(VerificationMethod::SecurityQuestions)
                .and_then(|method| method.secret.as_deref())
                .and_then(|secret| serde_json::from_slice(secret).ok())
                .unwrap_or_default();
            let asked = challenge.questions.len();
            let answers: Vec<Option<SecretString>> = (0..asked)
                .map(|index| {
                    answer
                        .answers
                        .get(index)
                        .and_then(Option::as_ref)
                        .map(|answer| {
                            SecretString::from(checks::normalize_answer(answer.expose_secret()))
                        })
                })
                .collect();
            let hashes: Vec<Option<String>> = (0..asked)
                .map(|index| {
                    stored_answers
                        .get(index)
                        .map(|stored| stored.answer_hash.clone())
                })
                .collect();
            state
                .hashing
                .run(move || {
                    let mut all = !answers.is_empty();
                    for (answer, hash) in answers.iter().zip(&hashes) {
                        let empty = SecretString::from(String::new());
                        let answer = answer.as_ref().unwrap_or(&empty);
                        all &= verify_password(answer, hash.as_deref());
                    }
                    all && hashes.iter().all(Option::is_some)
                })
                .await
                .map_err(|_| Stop::Busy)?
        }
    })
}
