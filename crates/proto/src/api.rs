//! Bodies of the admin REST API, shared by the cloud (server) and the CLI (client).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{AgentId, DirectoryName, RequestId};
use crate::result::ResultCode;
use crate::sync::{ObjectAnchor, SyncCursor, SyncedGroup, SyncedUser};
use crate::time::UnixMillis;

/// The header that lets a client retry an operation safely: the same key is the same request id,
/// and the agent applies a request id at most once.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub email: String,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// The code from the administrator's authenticator app; required once one is enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_code: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInResponse {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub token: SecretString,
    pub expires_at: UnixMillis,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
    /// Require a change at next sign-in (`pwdLastSet = 0`).
    #[serde(default)]
    pub must_change: bool,
    /// Clear a lockout in the same directory modify.
    #[serde(default)]
    pub unlock: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// The synchronous answer to a reset, change or unlock: the directory's own answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationResponse {
    pub request_id: RequestId,
    pub result: ResultCode,
    /// Plain-language explanation of `result` for the person who asked.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSummary {
    pub agent_id: AgentId,
    pub directory: DirectoryName,
    pub name: String,
    pub version: String,
    pub connected: bool,
    pub registered_at: UnixMillis,
    pub last_connected_at: Option<UnixMillis>,
    pub last_heartbeat_at: Option<UnixMillis>,
    pub last_error: Option<String>,
    /// The address the agent last connected from.
    pub address: Option<String>,
    /// Operations sent to the agent that it has not answered yet.
    pub requests_in_flight: u64,
    /// Whether the agent says it can use its directory; `None` when it is not connected or has not
    /// said yet.
    pub directory_reachable: Option<bool>,
    pub revoked_at: Option<UnixMillis>,
}

/// Answer to registering a new agent: the one-time token to give `writeback-agent register`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationTokenResponse {
    pub directory: DirectoryName,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub token: SecretString,
    pub expires_at: UnixMillis,
}

/// The one state the cloud computes for a directory, from its agents and recent failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    /// A connected agent is older than the cloud supports.
    AgentOutdated,
    /// Agents are registered but none is connected: writeback answers "agent unavailable".
    NoAgentConnected,
    /// Agents are connected but none can use the directory.
    DirectoryUnreachable,
    /// No agent was ever registered (or every one was revoked).
    NotConfigured,
    /// Working, with recent failures.
    Degraded,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::AgentOutdated => "agent_outdated",
            Self::NoAgentConnected => "no_agent_connected",
            Self::DirectoryUnreachable => "directory_unreachable",
            Self::NotConfigured => "not_configured",
            Self::Degraded => "degraded",
        }
    }

    /// Whether a writeback can be attempted at all.
    pub fn accepts_writeback(self) -> bool {
        matches!(self, Self::Healthy | Self::AgentOutdated | Self::Degraded)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryHealth {
    pub directory: DirectoryName,
    pub state: HealthState,
    /// One plain sentence: what is wrong and what to do.
    pub summary: String,
    pub agents_registered: u64,
    pub agents_connected: u64,
    /// Writebacks that failed for want of an agent or the directory in the recent window.
    pub recent_failures: u64,
}

/// One audit log entry as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntryView {
    pub id: i64,
    pub at: UnixMillis,
    pub actor: String,
    pub action: String,
    pub directory: Option<String>,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub outcome: AuditOutcomeView,
    pub result_code: String,
    pub detail: Option<String>,
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcomeView {
    Success,
    Failure,
}

/// A page of the audit log, newest first. Pass `next_before` as `before` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    pub next_before: Option<i64>,
}

/// How long the audit log keeps entries. `None` keeps them for ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    pub retention_days: Option<u32>,
}

/// Body of every 4xx/5xx answer that is not an [`OperationResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthenticated`, `invalid_request`.
    pub code: String,
    pub message: String,
}

/// A synced user as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryUser {
    pub user: SyncedUser,
    pub last_synced_at: UnixMillis,
}

/// One user with its groups, direct and through nesting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryUserDetail {
    pub user: SyncedUser,
    pub last_synced_at: UnixMillis,
    pub direct_groups: Vec<GroupRef>,
    /// Groups the user belongs to only through another group.
    pub nested_groups: Vec<GroupRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    pub anchor: ObjectAnchor,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryGroup {
    pub group: SyncedGroup,
    pub last_synced_at: UnixMillis,
    pub direct_members: u64,
}

/// Where sync of one directory stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncStatus {
    pub directory: DirectoryName,
    pub cursor: Option<SyncCursor>,
    /// An administrator asked for a full sync that has not started yet.
    pub full_sync_requested: bool,
    pub last_full_sync_started_at: Option<UnixMillis>,
    pub last_full_sync_completed_at: Option<UnixMillis>,
    /// When a batch last changed anything.
    pub last_change_at: Option<UnixMillis>,
    /// When the agent last confirmed the cursor, changes or not.
    pub cursor_updated_at: Option<UnixMillis>,
    pub cursor_age_ms: Option<u64>,
    pub users: u64,
    pub groups: u64,
    /// Objects that could not be synced since the last full sync began.
    pub error_count: u64,
    pub recent_errors: Vec<SyncErrorView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncErrorView {
    pub at: UnixMillis,
    pub object: String,
    pub message: String,
}

/// The answer to a full sync request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FullSyncResponse {
    /// A connected agent was told to start now; otherwise the next agent to connect starts it.
    pub started: bool,
}
