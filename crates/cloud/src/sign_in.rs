//! Administrator sign-in, shared by the API and the console: the password (Argon2id), then the
//! TOTP second factor once enrolled, then a session. Every refusal is audited; the second factor is
//! throttled per administrator, so a known password does not open a brute force of the codes.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use writeback_proto::time::UnixMillis;
use writeback_store::{Administrator, AuditEvent, AuditFilter};

use crate::auth::{SESSION_TOKEN_PREFIX, new_token, token_hash, verify_password};
use crate::{AppState, CloudError, totp};

/// Wrong codes allowed per administrator in [`SECOND_FACTOR_WINDOW`] before codes are refused
/// unread until the window has passed.
pub const MAX_SECOND_FACTOR_FAILURES: usize = 5;
pub const SECOND_FACTOR_WINDOW: Duration = Duration::from_secs(15 * 60);

pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
pub const INVALID_SECOND_FACTOR: &str = "invalid_second_factor";
pub const TOO_MANY_ATTEMPTS: &str = "too_many_attempts";

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
    state
        .store
        .append_audit(&AuditEvent {
            at: now,
            actor: email.into(),
            action: "sign_in".into(),
            directory: None,
            target: None,
            request_id: None,
            result_code: result_code.into(),
            detail,
            origin: origin.clone(),
        })
        .await?;
    Ok(())
}

/// The administrator, if `password` is theirs. Takes as long for an unknown email as for a wrong
/// password, and audits a refusal.
pub async fn check_password(
    state: &AppState,
    email: &str,
    password: SecretString,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<Option<Administrator>, CloudError> {
    let administrator = state.store.administrator_by_email(email.trim()).await?;
    let stored_hash = administrator
        .as_ref()
        .map(|administrator| administrator.password_hash.clone());
    let verified =
        tokio::task::spawn_blocking(move || verify_password(&password, stored_hash.as_deref()))
            .await
            .map_err(|error| CloudError::Internal(error.to_string()))?;
    let administrator = administrator.filter(|_| verified);
    if administrator.is_none() {
        audit(state, email, INVALID_CREDENTIALS, None, origin, now).await?;
        tracing::warn!(%email, "administrator sign-in refused");
    }
    Ok(administrator)
}

/// Whether the administrator had too many wrong codes recently; a code sent now is then refused
/// unread, and that too is audited.
async fn throttled(
    state: &AppState,
    administrator: &Administrator,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<bool, CloudError> {
    let since = UnixMillis(
        now.0
            .saturating_sub(SECOND_FACTOR_WINDOW.as_millis() as u64),
    );
    let failures = state
        .store
        .audit_entries(&AuditFilter {
            since: Some(since),
            actor: Some(administrator.email.clone()),
            action: Some("sign_in".into()),
            result_code: Some(INVALID_SECOND_FACTOR.into()),
            limit: MAX_SECOND_FACTOR_FAILURES as u32 * 4,
            ..AuditFilter::default()
        })
        .await?;
    // The filter matches text anywhere in the actor; only this administrator's entries count.
    let own = failures
        .iter()
        .filter(|entry| entry.event.actor.eq_ignore_ascii_case(&administrator.email))
        .count();
    if own < MAX_SECOND_FACTOR_FAILURES {
        return Ok(false);
    }
    audit(
        state,
        &administrator.email,
        TOO_MANY_ATTEMPTS,
        None,
        origin,
        now,
    )
    .await?;
    Ok(true)
}

/// Checks a code against the administrator's enrolled TOTP secret and uses it up.
pub async fn check_enrolled_code(
    state: &AppState,
    administrator: &Administrator,
    code: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<CodeCheck, CloudError> {
    if throttled(state, administrator, origin, now).await? {
        return Ok(CodeCheck::Throttled);
    }
    let Some(enrolled) = state.store.totp_state(administrator.id).await? else {
        return Err(CloudError::Internal(
            "the administrator has no second factor enrolled".into(),
        ));
    };
    let secret = zeroize::Zeroizing::new(enrolled.secret);
    let step = totp::matching_step(&secret, code, now, enrolled.last_step);
    let accepted = match step {
        Some(step) => state.store.accept_totp_step(administrator.id, step).await?,
        None => false,
    };
    if accepted {
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

/// Confirms an enrolment: `code` must be current for the `proposed` secret, which then becomes
/// the administrator's second factor.
pub async fn confirm_enrolment(
    state: &AppState,
    administrator: &Administrator,
    proposed: &[u8],
    code: &str,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<CodeCheck, CloudError> {
    if throttled(state, administrator, origin, now).await? {
        return Ok(CodeCheck::Throttled);
    }
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
    state
        .store
        .enrol_totp(administrator.id, proposed, step)
        .await?;
    state
        .store
        .append_audit(&AuditEvent {
            at: now,
            actor: administrator.email.clone(),
            action: "enrol_second_factor".into(),
            directory: None,
            target: Some(administrator.email.clone()),
            request_id: None,
            result_code: "success".into(),
            detail: Some("authenticator app (TOTP)".into()),
            origin: origin.clone(),
        })
        .await?;
    tracing::info!(email = %administrator.email, "administrator enrolled a second factor");
    Ok(CodeCheck::Accepted)
}

/// Opens a session for an administrator who passed every check, and audits the sign-in.
pub async fn open_session(
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
    let factor = if administrator.totp_enrolled {
        "password and authenticator code"
    } else {
        "password"
    };
    audit(
        state,
        &administrator.email,
        "success",
        Some(factor.into()),
        origin,
        now,
    )
    .await?;
    tracing::info!(email = %administrator.email, "administrator signed in");
    Ok((token, expires_at))
}
