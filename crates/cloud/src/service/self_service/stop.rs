//! Why a self-service step stops before it is done, as one typed answer each surface words for
//! itself, and the limit checks that lead to most of them.

use thiserror::Error;
use writeback_proto::frame::LockoutPolicy;
use writeback_proto::time::UnixMillis;
use writeback_store::{Reservation, StoreError};

use crate::service::audit::AuditAction;
use crate::service::error::CloudError;
use crate::service::limits::{Exhausted, Guarded, Limits};
use crate::service::self_service::accounts::audit;
use crate::service::self_service::checks::RESULT_TOO_MANY;
use crate::service::state::AppState;

/// Why a step stopped. Nothing was changed in the directory by a step that stopped.
#[derive(Debug, Error)]
pub enum Stop {
    #[error("self-service is off")]
    SelfServiceOff,
    #[error("unlocking without a reset is not offered")]
    UnlockNotOffered,
    #[error("resets are left to the helpdesk")]
    ResetsOff,
    /// The account used up its allowance: self-service is blocked for it.
    #[error("too many attempts for this account")]
    Blocked,
    /// This address, or everyone together, used up theirs: nothing is blocked, but wait.
    #[error("too many attempts from this address or from everyone")]
    TryLater,
    #[error("the password checks are queued beyond their limit")]
    Busy,
    #[error("the directory cannot be served now")]
    Unavailable,
    #[error("the account is out of the self-service scope")]
    OutOfScope,
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("fewer methods are registered than the policy requires")]
    NotEnoughMethods,
    /// The flow or session is over (expired, finished, or never started).
    #[error("the flow or session has ended")]
    Ended,
    #[error(transparent)]
    Failed(#[from] CloudError),
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Self {
        Self::Failed(CloudError::Store(error))
    }
}

impl Stop {
    /// Whether the step's flow or session must end with it: the account is blocked, or cannot
    /// go on whatever it proves.
    pub fn ends_flow(&self) -> bool {
        matches!(
            self,
            Self::Blocked | Self::OutOfScope | Self::AccountDisabled | Self::NotEnoughMethods
        )
    }
}

/// The limits of this cloud's configuration.
pub fn limits(state: &AppState) -> Limits<'_> {
    Limits::new(&state.store, &state.config.limits)
}

/// [`Stop::Blocked`] when `name` is blocked now.
pub async fn unless_blocked(state: &AppState, name: &str, now: UnixMillis) -> Result<(), Stop> {
    if limits(state).is_blocked(name, now).await? {
        return Err(Stop::Blocked);
    }
    Ok(())
}

/// Holds one attempt of `guarded` for `name`, from `origin`, before the work it guards. An
/// account that has used up its allowance is blocked (and audited as such).
pub async fn reserve(
    state: &AppState,
    guarded: Guarded,
    name: &str,
    directory: Option<&str>,
    origin: &Option<String>,
    lockout: Option<LockoutPolicy>,
    now: UnixMillis,
) -> Result<Reservation, Stop> {
    let reserved = limits(state)
        .reserve(guarded, name, origin.as_deref(), lockout, now)
        .await?;
    match reserved {
        Ok(reservation) => Ok(reservation),
        Err(Exhausted::Account) => Err(block(state, name, directory, origin, now).await),
        Err(Exhausted::Address | Exhausted::Everyone) => Err(Stop::TryLater),
    }
}

/// Blocks self-service for `name` (24 hours by default), audited; the stop to answer with.
pub async fn block(
    state: &AppState,
    name: &str,
    directory: Option<&str>,
    origin: &Option<String>,
    now: UnixMillis,
) -> Stop {
    if let Err(error) = limits(state).block(name, now).await {
        return error.into();
    }
    let audited = audit(
        state,
        name,
        directory,
        AuditAction::SelfServiceBlocked,
        RESULT_TOO_MANY,
        None,
        origin,
    )
    .await;
    match audited {
        Ok(()) => Stop::Blocked,
        Err(error) => error.into(),
    }
}

/// After a wrong answer has been counted: [`Stop::Blocked`] (and the block recorded) when it
/// used up the account's allowance.
pub async fn block_if_used_up(
    state: &AppState,
    name: &str,
    directory: Option<&str>,
    origin: &Option<String>,
    now: UnixMillis,
) -> Result<(), Stop> {
    if limits(state).used_up(Guarded::Proof, name, now).await? {
        return Err(block(state, name, directory, origin, now).await);
    }
    Ok(())
}
