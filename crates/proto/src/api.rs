//! Bodies of the admin REST API, shared by the cloud (server) and the CLI (client).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, DirectoryName, RequestId};
use crate::result::ResultCode;
use crate::time::UnixMillis;

/// The header that lets a client retry an operation safely: the same key is the same request id,
/// and the agent applies a request id at most once.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub email: String,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub password: SecretString,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInResponse {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub token: SecretString,
    pub expires_at: UnixMillis,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub new_password: SecretString,
    /// Require a change at next sign-in (`pwdLastSet = 0`).
    #[serde(default)]
    pub must_change: bool,
    /// Clear a lockout in the same directory modify.
    #[serde(default)]
    pub unlock: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub current_password: SecretString,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub new_password: SecretString,
}

/// The synchronous answer to a reset, change or unlock: the directory's own answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationResponse {
    pub request_id: RequestId,
    pub result: ResultCode,
    /// Plain-language explanation of `result` for the person who asked.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Body of every 4xx/5xx answer that is not an [`OperationResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthenticated`, `invalid_request`.
    pub code: String,
    pub message: String,
}
