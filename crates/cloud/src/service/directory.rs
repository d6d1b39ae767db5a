//! The synced copy of each directory: naming a user, finding them, and asking for a full sync.

use thiserror::Error;
use writeback_proto::api::DirectoryUserDetail;
use writeback_proto::ids::DirectoryName;
use writeback_proto::operation::UserRef;
use writeback_proto::sync::ObjectAnchor;
use writeback_proto::time::UnixMillis;
use writeback_store::StoreError;

use crate::service::audit::{Actor, AuditAction};
use crate::service::directory_sync;
use crate::service::state::AppState;

/// Longer search text cannot match any attribute AD allows, and is refused rather than scanned for.
pub const MAX_SEARCH_CHARS: usize = 256;

/// Input a caller typed that no directory could hold. The messages are plain enough for every
/// surface to show as they are.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("The directory name is not valid: {0}.")]
    DirectoryName(String),
    #[error("{0}.")]
    UserName(String),
    #[error("`{0}` is longer than {MAX_SEARCH_CHARS} characters.")]
    SearchTooLong(String),
    #[error("`{0}` must not contain control characters.")]
    SearchControlCharacters(String),
    #[error("`limit` must be at least 1.")]
    LimitTooSmall,
    #[error("`limit` must be at most {0}.")]
    LimitTooLarge(u32),
    #[error("{0}")]
    Invalid(String),
}

/// `limit` from a caller: `default` when absent, refused outside 1..=`max`.
pub fn limit(requested: Option<u32>, default: u32, max: u32) -> Result<u32, InputError> {
    match requested.unwrap_or(default) {
        0 => Err(InputError::LimitTooSmall),
        limit if limit > max => Err(InputError::LimitTooLarge(max)),
        limit => Ok(limit),
    }
}

/// A user as a caller named them, in one directory.
#[derive(Debug, Clone)]
pub struct UserTarget {
    pub directory: DirectoryName,
    /// The user as the caller named them: a logon name, a UPN or an anchor.
    pub name: String,
    pub user: UserRef,
}

impl UserTarget {
    pub fn parse(directory: &str, name: String) -> Result<Self, InputError> {
        let directory = directory
            .parse()
            .map_err(|error| InputError::DirectoryName(format!("{error}")))?;
        let user =
            UserRef::logon_name(&name).map_err(|error| InputError::UserName(error.to_string()))?;
        Ok(Self {
            directory,
            name,
            user,
        })
    }

    /// How logs and the audit log name the target: as the caller did, with the anchor when known.
    pub fn describe(&self) -> String {
        match &self.user {
            UserRef::Anchor(anchor) if self.name != anchor.to_string() => {
                format!("{} ({anchor})", self.name)
            }
            other => other.to_string(),
        }
    }
}

/// Search text from a caller: empty is none; too long or with control characters is refused.
pub fn search_text(text: Option<String>, what: &str) -> Result<Option<String>, InputError> {
    match text {
        Some(text) if text.chars().count() > MAX_SEARCH_CHARS => {
            Err(InputError::SearchTooLong(what.into()))
        }
        Some(text) if text.chars().any(char::is_control) => {
            Err(InputError::SearchControlCharacters(what.into()))
        }
        Some(text) if text.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Addresses a synced user by anchor, so the agent writes to whatever DN the user has now. A name
/// the synced copy does not know (not synced yet) is passed on as a logon name for the agent to
/// resolve, under the same guards.
pub async fn resolve_target(
    state: &AppState,
    mut target: UserTarget,
) -> Result<UserTarget, StoreError> {
    if let Ok(anchor) = target.name.parse::<ObjectAnchor>() {
        target.user = UserRef::Anchor(anchor);
        return Ok(target);
    }
    match state
        .store
        .resolve_user(&target.directory, &target.name)
        .await
    {
        Ok(Some(anchor)) => target.user = UserRef::Anchor(anchor),
        Ok(None) | Err(StoreError::NotFound(_)) => {}
        Err(error) => return Err(error),
    }
    Ok(target)
}

/// The one synced user `target` names; `None` when no single user matches. An unknown directory
/// is the store's `NotFound`.
pub async fn synced_user(
    state: &AppState,
    target: &UserTarget,
) -> Result<Option<DirectoryUserDetail>, StoreError> {
    state
        .store
        .user_detail(&target.directory, &target.name)
        .await
}

/// Starts a full sync of `directory` now if an agent syncs it, or at the next agent's connection;
/// `true` when it started now.
pub async fn request_full_sync(
    state: &AppState,
    actor: &Actor,
    directory: &DirectoryName,
) -> Result<bool, StoreError> {
    let started = directory_sync::request_full_sync(state, directory).await?;
    AuditAction::RequestFullSync
        .by(actor, UnixMillis::now())
        .directory(directory)
        .detail(if started { "started" } else { "queued" })
        .record(&state.store)
        .await?;
    tracing::info!(%directory, started, actor = %actor.name, "full directory sync requested");
    Ok(started)
}
