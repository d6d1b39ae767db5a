//! Administrator sign-in, shared by the API, the CLI and the console: the password (Argon2id, in
//! the bounded hashing pool), then the authenticator code, then a session. An administrator
//! without an authenticator enrols one first, through a short-lived challenge that holds the
//! proposed key (sealed) and opens nothing; no session exists before the second factor.
//!
//! Wrong passwords and codes are limited per administrator and per client address, reserved
//! before they are checked; every refusal is audited.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use writeback_proto::time::UnixMillis;
use writeback_store::{Administrator, SecretOwner, SignInChallenge, StoreError};
use zeroize::Zeroizing;

use crate::service::audit::{Actor, AuditAction};
use crate::service::auth::{SESSION_TOKEN_PREFIX, new_token, token_hash, verify_password};
use crate::service::error::CloudError;
use crate::service::limits::{Guarded, Limits};
use crate::service::state::AppState;
use crate::service::totp;

/// Wrong codes allowed on one challenge before it ends and the sign-in starts again.
pub const MAX_CHALLENGE_FAILURES: u32 = 5;
/// Time to type a code (or scan a QR code and type one) after the password.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(5 * 60);

pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
pub const INVALID_SECOND_FACTOR: &str = "invalid_second_factor";
pub const TOO_MANY_ATTEMPTS: &str = "too_many_attempts";

/// What a password turned out to be.
#[derive(Debug)]
pub enum PasswordCheck {
    Accepted(Administrator),
    /// Wrong, an unknown email, or a disabled administrator: the same answer for all three.
    Wrong,
    /// Too many wrong attempts for this administrator or from this address: not even checked.
    Throttled,
    /// The hashing pool is full: try again shortly.
    Busy,
}

/// What a second-factor code turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Accepted,
    Wrong,
    /// Too many wrong codes recently: this one was not even looked at.
    Throttled,
}

async fn audit(
    state: &AppState,
    email: &str,
    result_code: &str,
    detail: Option<String>,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<(), CloudError> {
    AuditAction::SignIn
        .by(&Actor::new(email, origin.clone()), now)
        .result(result_code)
        .maybe_detail(detail)
        .record(&state.store)
        .await?;
    Ok(())
}

/// A signed-in administrator: by bearer token at the API, by cookie at the console.
#[derive(Debug)]
pub struct SignedIn {
    pub administrator: Administrator,
    pub token_hash: Vec<u8>,
    pub origin: Option<String>,
}

impl SignedIn {
    /// The administrator as the audit log names them.
    pub fn actor(&self) -> Actor {
        Actor::new(self.administrator.email.as_str(), self.origin.clone())
    }
}

fn limits(state: &AppState) -> Limits<'_> {
    Limits::new(&state.store, &state.config.limits)
}

/// The limits' name for an administrator: the email as typed, trimmed and lower-cased, so an
/// unknown email is limited like a known one.
fn limited_name(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Checks an administrator's password. The attempt is reserved against the limits first and
/// released when the password is right; an unknown email costs the same hash as a known one.
pub async fn check_password(
    state: &AppState,
    email: &str,
    password: SecretString,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<PasswordCheck, CloudError> {
    let name = limited_name(email);
    let reservation = match limits(state)
        .reserve(Guarded::Administrator, &name, origin.as_deref(), None, now)
        .await?
    {
        Ok(reservation) => reservation,
        Err(_) => {
            audit(state, email, TOO_MANY_ATTEMPTS, None, origin, now).await?;
            tracing::warn!(%email, "administrator sign-in refused: too many attempts");
            return Ok(PasswordCheck::Throttled);
        }
    };
    let administrator = state.store.administrator_by_email(email.trim()).await?;
    let stored_hash = administrator
        .as_ref()
        .map(|administrator| administrator.password_hash.clone());
    let Ok(verified) = state
        .hashing
        .run(move || verify_password(&password, stored_hash.as_deref()))
        .await
    else {
        limits(state).release(reservation).await?;
        return Ok(PasswordCheck::Busy);
    };
    match administrator.filter(|administrator| verified && administrator.enabled) {
        Some(administrator) => {
            limits(state).release(reservation).await?;
            Ok(PasswordCheck::Accepted(administrator))
        }
        None => {
            audit(state, email, INVALID_CREDENTIALS, None, origin, now).await?;
            tracing::warn!(%email, "administrator sign-in refused");
            Ok(PasswordCheck::Wrong)
        }
    }
}

/// The administrator's enrolled key, unsealed.
async fn enrolled_key(
    state: &AppState,
    administrator: &Administrator,
) -> Result<Option<(Zeroizing<Vec<u8>>, Option<u64>)>, CloudError> {
    let Some(enrolled) = state.store.totp_state(administrator.id).await? else {
        return Ok(None);
    };
    let owner = SecretOwner::Administrator {
        id: administrator.id,
    };
    Ok(Some((
        state.secrets.open(owner, &enrolled.secret)?,
        enrolled.last_step,
    )))
}

/// Reserves a code attempt: `Err(CodeCheck::Throttled)` (audited) when the limits are used up.
async fn reserve_code(
    state: &AppState,
    administrator: &Administrator,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Result<writeback_store::Reservation, CodeCheck>, CloudError> {
    let name = limited_name(&administrator.email);
    match limits(state)
        .reserve(Guarded::Administrator, &name, origin.as_deref(), None, now)
        .await?
    {
        Ok(reservation) => Ok(Ok(reservation)),
        Err(_) => {
            audit(
                state,
                &administrator.email,
                TOO_MANY_ATTEMPTS,
                None,
                origin,
                now,
            )
            .await?;
            Ok(Err(CodeCheck::Throttled))
        }
    }
}

/// Checks a code against the administrator's enrolled key and uses it up.
pub async fn check_enrolled_code(
    state: &AppState,
    administrator: &Administrator,
    code: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<CodeCheck, CloudError> {
    let reservation = match reserve_code(state, administrator, origin, now).await? {
        Ok(reservation) => reservation,
        Err(throttled) => return Ok(throttled),
    };
    let Some((key, last_step)) = enrolled_key(state, administrator).await? else {
        return Err(CloudError::Internal(
            "the administrator has no second factor enrolled".into(),
        ));
    };
    let step = totp::matching_step(&key, code, now, last_step);
    let accepted = match step {
        Some(step) => state.store.accept_totp_step(administrator.id, step).await?,
        None => false,
    };
    if accepted {
        limits(state).release(reservation).await?;
        return Ok(CodeCheck::Accepted);
    }
    audit(
        state,
        &administrator.email,
        INVALID_SECOND_FACTOR,
        None,
        origin,
        now,
    )
    .await?;
    tracing::warn!(email = %administrator.email, "administrator second factor refused");
    Ok(CodeCheck::Wrong)
}

/// Signs an enrolled administrator in with a code sent together with the password (the API's
/// one-step sign-in): a session, or why not.
pub async fn sign_in_with_code(
    state: &AppState,
    administrator: &Administrator,
    code: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Result<(SecretString, UnixMillis), CodeCheck>, CloudError> {
    match check_enrolled_code(state, administrator, code, origin, now).await? {
        CodeCheck::Accepted => Ok(Ok(open_session(state, administrator, origin, now).await?)),
        refused => Ok(Err(refused)),
    }
}

/// A pending sign-in: its token (for a cookie or the API client) and, for an enrolment, the key
/// proposed.
#[derive(Debug)]
pub struct PendingSignIn {
    pub token: SecretString,
    pub proposed_key: Option<Zeroizing<Vec<u8>>>,
    pub expires_at: UnixMillis,
}

/// Starts the second step for an administrator whose password was right: a challenge, with a
/// new key proposed (sealed in the store) when they have none yet.
pub async fn begin_second_step(
    state: &AppState,
    administrator: &Administrator,
    now: UnixMillis,
) -> Result<PendingSignIn, CloudError> {
    let proposed_key = if administrator.totp_enrolled {
        None
    } else {
        Some(totp::new_secret()?)
    };
    let sealed = match &proposed_key {
        Some(key) => Some(state.secrets.seal(
            SecretOwner::Administrator {
                id: administrator.id,
            },
            key,
        )?),
        None => None,
    };
    let token = new_token("wbc_")?;
    let expires_at = now.saturating_add(CHALLENGE_LIFETIME);
    state
        .store
        .create_sign_in_challenge(
            &token_hash(token.expose_secret()),
            administrator.id,
            sealed.as_deref(),
            now,
            expires_at,
        )
        .await?;
    Ok(PendingSignIn {
        token,
        proposed_key,
        expires_at,
    })
}

/// A pending sign-in found by its token, with the proposed key unsealed.
#[derive(Debug)]
pub struct Challenge {
    pub administrator: Administrator,
    pub proposed_key: Option<Zeroizing<Vec<u8>>>,
}

pub async fn pending_challenge(
    state: &AppState,
    token: &str,
    now: UnixMillis,
) -> Result<Option<Challenge>, CloudError> {
    let Some(SignInChallenge {
        administrator,
        proposed_totp_secret,
        ..
    }) = state
        .store
        .sign_in_challenge(&token_hash(token), now)
        .await?
    else {
        return Ok(None);
    };
    if !administrator.enabled {
        return Ok(None);
    }
    let proposed_key = match proposed_totp_secret {
        Some(sealed) => Some(state.secrets.open(
            SecretOwner::Administrator {
                id: administrator.id,
            },
            &sealed,
        )?),
        None => None,
    };
    Ok(Some(Challenge {
        administrator,
        proposed_key,
    }))
}

/// What answering a challenge came to.
#[derive(Debug)]
pub enum ChallengeAnswer {
    /// The second factor is met: the challenge is over and a session open.
    SignedIn {
        administrator: Administrator,
        token: SecretString,
        expires_at: UnixMillis,
    },
    /// Wrong; the challenge stays for another try.
    Wrong,
    /// Too many wrong codes (here or recently): the challenge is over.
    Ended,
}

/// Answers a pending sign-in with a code: from the enrolled authenticator, or, for an
/// enrolment, from the proposed key, which then becomes the administrator's second factor.
pub async fn answer_challenge(
    state: &AppState,
    token: &str,
    challenge: &Challenge,
    code: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<ChallengeAnswer, CloudError> {
    let administrator = &challenge.administrator;
    let check = match &challenge.proposed_key {
        Some(proposed) => {
            confirm_enrolment(state, administrator, proposed, code, origin, now).await?
        }
        None => check_enrolled_code(state, administrator, code, origin, now).await?,
    };
    let hash = token_hash(token);
    match check {
        CodeCheck::Accepted => {
            state.store.delete_sign_in_challenge(&hash).await?;
            let administrator = Administrator {
                totp_enrolled: true,
                ..administrator.clone()
            };
            let (token, expires_at) = open_session(state, &administrator, origin, now).await?;
            Ok(ChallengeAnswer::SignedIn {
                administrator,
                token,
                expires_at,
            })
        }
        CodeCheck::Wrong => {
            let failures = state.store.record_challenge_failure(&hash).await?;
            if failures >= MAX_CHALLENGE_FAILURES {
                state.store.delete_sign_in_challenge(&hash).await?;
                return Ok(ChallengeAnswer::Ended);
            }
            Ok(ChallengeAnswer::Wrong)
        }
        CodeCheck::Throttled => {
            state.store.delete_sign_in_challenge(&hash).await?;
            Ok(ChallengeAnswer::Ended)
        }
    }
}

/// Confirms an enrolment: `code` must be current for the `proposed` key, which then becomes the
/// administrator's second factor, sealed.
async fn confirm_enrolment(
    state: &AppState,
    administrator: &Administrator,
    proposed: &[u8],
    code: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<CodeCheck, CloudError> {
    let reservation = match reserve_code(state, administrator, origin, now).await? {
        Ok(reservation) => reservation,
        Err(throttled) => return Ok(throttled),
    };
    let Some(step) = totp::matching_step(proposed, code, now, None) else {
        audit(
            state,
            &administrator.email,
            INVALID_SECOND_FACTOR,
            Some("enrolment".into()),
            origin,
            now,
        )
        .await?;
        return Ok(CodeCheck::Wrong);
    };
    let sealed = state.secrets.seal(
        SecretOwner::Administrator {
            id: administrator.id,
        },
        proposed,
    )?;
    match state
        .store
        .enrol_totp(administrator.id, &sealed, step)
        .await
    {
        Ok(()) => {}
        // Enrolled meanwhile through another challenge: this key is not theirs.
        Err(StoreError::Conflict(_)) => return Ok(CodeCheck::Wrong),
        Err(error) => return Err(error.into()),
    }
    limits(state).release(reservation).await?;
    AuditAction::EnrolSecondFactor
        .by(
            &Actor::new(administrator.email.as_str(), origin.clone()),
            now,
        )
        .target(administrator.email.as_str())
        .detail("authenticator app (TOTP)")
        .record(&state.store)
        .await?;
    tracing::info!(email = %administrator.email, "administrator enrolled a second factor");
    Ok(CodeCheck::Accepted)
}

/// Opens a session for an administrator who passed every check, and audits the sign-in.
async fn open_session(
    state: &AppState,
    administrator: &Administrator,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<(SecretString, UnixMillis), CloudError> {
    let token = new_token(SESSION_TOKEN_PREFIX)?;
    let expires_at =
        now.saturating_add(Duration::from_secs(state.config.admin_session_hours * 3600));
    state
        .store
        .create_session(
            &token_hash(token.expose_secret()),
            administrator.id,
            now,
            expires_at,
        )
        .await?;
    audit(
        state,
        &administrator.email,
        "success",
        Some("password and authenticator code".into()),
        origin,
        now,
    )
    .await?;
    tracing::info!(email = %administrator.email, "administrator signed in");
    Ok((token, expires_at))
}

/// The administrator holding the session `token`: unexpired, not idle too long, enabled and with
/// a second factor.
pub async fn session(
    state: &AppState,
    token: &str,
    now: UnixMillis,
) -> Result<Option<Administrator>, CloudError> {
    let idle = Duration::from_secs(state.config.admin_idle_minutes.max(1) * 60);
    Ok(state
        .store
        .session_administrator(&token_hash(token), now, idle)
        .await?
        .filter(|administrator| administrator.totp_enrolled))
}
