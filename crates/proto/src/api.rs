//! Bodies of the admin REST API, shared by the cloud (server) and the CLI (client).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{AgentId, DirectoryName, RequestId};
use crate::result::{OutcomeWarning, ResultCode};
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

/// An administrator without an authenticator asks to enrol one: the password again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentRequest {
    pub email: String,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// The key proposed for an administrator's authenticator, and the challenge to answer with its
/// first code. No session exists until that code is sent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentChallenge {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub challenge: SecretString,
    /// The `otpauth://` address an authenticator app reads from a QR code.
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub otpauth_uri: SecretString,
    /// The same key in base32, for typing into the app by hand.
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub key: SecretString,
    pub expires_at: UnixMillis,
}

/// The first code from the new authenticator, for an enrolment challenge.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswerRequest {
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password)]
    pub challenge: SecretString,
    pub totp_code: String,
}

/// What clearing a user's self-service methods removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodsCleared {
    pub removed: u64,
}

/// An administrator of this cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdministratorSummary {
    pub email: String,
    /// A disabled administrator is refused everywhere and has no sessions.
    pub enabled: bool,
    /// Whether an authenticator is enrolled.
    pub second_factor: bool,
    pub created_at: UnixMillis,
    /// Sessions open now.
    pub sessions: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdministratorList {
    pub administrators: Vec<AdministratorSummary>,
}

/// What a change to an administrator did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdministratorChange {
    pub email: String,
    /// Whether anything changed (disabling a disabled administrator does not).
    pub changed: bool,
    /// Sessions ended by the change.
    #[serde(default)]
    pub sessions_ended: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// 1 to 256 UTF-16 code units, as AD accepts.
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 256)]
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
    /// 1 to 256 UTF-16 code units.
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 256)]
    pub current_password: SecretString,
    /// 1 to 256 UTF-16 code units, as AD accepts.
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 256)]
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
    /// What part of a success had no effect in the directory, each said in plain language.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<WarningView>,
}

/// One [`OutcomeWarning`], with its plain-language explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarningView {
    pub code: OutcomeWarning,
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
    /// The cloud node the agent is connected to.
    pub node: Option<String>,
    pub registered_at: UnixMillis,
    pub last_connected_at: Option<UnixMillis>,
    /// The last heartbeat recorded: a connected agent's is at most 10 s old (it sends one every
    /// 500 ms; whether it is connected is `connected`).
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
    /// Connected agents that have not said they cannot use the directory.
    pub agents_healthy: u64,
    /// How many healthy agents the directory should have; fewer is "degraded".
    pub agents_minimum: u64,
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
    /// Where an operation's time went, hop by hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<OperationTrace>,
}

/// A node of the cloud, as the node answering sees it: itself, and every other node of its
/// cluster heard from in the last two seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudNode {
    pub name: String,
    /// The node that answered.
    pub this_node: bool,
    /// Agents connected to it.
    pub agents: u64,
    /// Operations sent through its agents that have not been answered yet, as far as the node
    /// answering knows.
    pub requests_in_flight: u64,
}

/// An operation the cloud is waiting on now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationInFlight {
    pub request_id: RequestId,
    /// `reset_password`, `change_password`, `unlock` or `verify_password`.
    pub operation: String,
    pub user: String,
    /// The agent that has it (or had it, when lost).
    pub agent_id: AgentId,
    pub sent_at: UnixMillis,
    pub stage: InFlightStage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InFlightStage {
    /// Sent to the agent, which is looking the user up and checking the password.
    WithAgent,
    /// The agent said it is writing the password now.
    Writing,
    /// The agent's connection was lost before it answered; another takes it over.
    AgentLost,
}

impl InFlightStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WithAgent => "with_agent",
            Self::Writing => "writing",
            Self::AgentLost => "agent_lost",
        }
    }
}

/// Where one operation's time went, from the moment the cloud took it to the directory's answer:
/// the hops in order, which add up to `total_us`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationTrace {
    pub hops: Vec<TraceHop>,
    pub total_us: u64,
    /// The DC that answered, by host; none when no agent did the work.
    pub domain_controller: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceHop {
    /// `cloud` (checks and the user's lookup), `relay` (sealing, the WebSocket both ways),
    /// `agent_lookup`, `agent_checks`, `agent_write`.
    pub hop: String,
    pub micros: u64,
}

impl OperationTrace {
    /// One line for people: each hop in milliseconds, the DC, and the total.
    pub fn describe(&self) -> String {
        let milliseconds = |micros: u64| format!("{:.1} ms", micros as f64 / 1000.0);
        let hops: Vec<String> = self
            .hops
            .iter()
            .map(|hop| format!("{} {}", hop.hop, milliseconds(hop.micros)))
            .collect();
        let at = self
            .domain_controller
            .as_ref()
            .map(|host| format!(" at {host}"))
            .unwrap_or_default();
        format!("{}{at} = {}", hops.join(" + "), milliseconds(self.total_us))
    }
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

/// Filters of the audit log, as the API takes them and `writeback audit` sends them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Unix milliseconds or an RFC 3339 time, inclusive.
    pub since: Option<String>,
    /// Unix milliseconds or an RFC 3339 time, exclusive.
    pub until: Option<String>,
    /// Who acted: part of an administrator's email, or of an agent's name.
    #[param(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub actor: Option<String>,
    /// Whom it was done to: part of a user name.
    #[param(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub target: Option<String>,
    #[param(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub directory: Option<String>,
    /// The action, e.g. `reset_password`.
    #[param(max_length = 256, pattern = "^[A-Za-z0-9_]*$")]
    pub operation: Option<String>,
    /// `success` or `failure`.
    #[param(pattern = "^(success|failure)?$")]
    pub outcome: Option<String>,
    /// A result code, e.g. `policy_violation`.
    #[param(max_length = 256, pattern = "^[A-Za-z0-9_]*$")]
    pub result_code: Option<String>,
    #[param(max_length = 256, pattern = "^[A-Za-z0-9_]*$")]
    pub request_id: Option<String>,
    /// Only entries older than this id: `next_before` of the previous page.
    pub before: Option<i64>,
    /// At most this many entries (default 100).
    #[param(minimum = 1, maximum = 50000)]
    pub limit: Option<u32>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)?$")]
    pub format: Option<String>,
}

/// How long the audit log keeps entries. `None` keeps them for ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// 1 to 3650 days.
    #[serde(
        default,
        deserialize_with = "crate::encoding::whole_number::optional::deserialize"
    )]
    #[schema(minimum = 1, maximum = 3650)]
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

/// Who may reset their own password through the self-service portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "scope", rename_all = "snake_case", deny_unknown_fields)]
pub enum SelfServiceScope {
    Nobody,
    /// Members of this group (by name or anchor), directly or through nested groups.
    Group {
        group: String,
    },
    Everyone,
}

/// A way for users to prove who they are before a self-service reset or unlock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMethod {
    /// A one-time code sent to a verified email address.
    Email,
    /// A code from an authenticator app (TOTP).
    AuthenticatorApp,
    /// Answers to questions the administrator chose.
    SecurityQuestions,
    /// A one-time code sent by text message through the configured provider.
    Sms,
}

impl VerificationMethod {
    pub const ALL: [Self; 4] = [
        Self::Email,
        Self::AuthenticatorApp,
        Self::SecurityQuestions,
        Self::Sms,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::AuthenticatorApp => "authenticator_app",
            Self::SecurityQuestions => "security_questions",
            Self::Sms => "sms",
        }
    }

    /// The method `name` (as [`Self::as_str`] writes it) names, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|method| method.as_str() == name)
    }
}

/// The self-service policy, one per cloud, edited by administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfServiceSettings {
    pub scope: SelfServiceScope,
    /// The methods users may register and verify with, each once.
    #[schema(min_items = 1)]
    pub methods: Vec<VerificationMethod>,
    /// How many different methods a user must pass: 1 or 2.
    #[serde(deserialize_with = "crate::encoding::whole_number::deserialize")]
    #[schema(minimum = 1, maximum = 2)]
    pub methods_required: u8,
    /// The questions users answer when registering security questions: at most 20, none
    /// empty, each at most 200 characters.
    #[schema(max_items = 20)]
    pub security_questions: Vec<String>,
    /// How many of them are asked at a reset: 3 to 5.
    #[serde(deserialize_with = "crate::encoding::whole_number::deserialize")]
    #[schema(minimum = 3, maximum = 5)]
    pub questions_asked: u8,
    /// Whether users may unlock their account without resetting the password.
    pub unlock_without_reset: bool,
    /// Whether self-service resets are written back to the directory; off, users are told to
    /// contact the helpdesk.
    pub writeback_enabled: bool,
    /// Words no new password may contain, besides the built-in list of common passwords: at
    /// most 1000, none empty, each at most 64 characters.
    #[schema(max_items = 1000)]
    pub banned_words: Vec<String>,
    /// The least strength a new password must have, 0 (any) to 4 (very strong).
    #[serde(deserialize_with = "crate::encoding::whole_number::deserialize")]
    #[schema(minimum = 0, maximum = 4)]
    pub minimum_strength: u8,
    /// What users read when they cannot help themselves: a sentence, or an https link.
    #[schema(max_length = 500)]
    pub helpdesk: String,
    /// Users confirm their registered methods again after this many days; 0 never asks.
    #[serde(deserialize_with = "crate::encoding::whole_number::deserialize")]
    pub reconfirm_days: u32,
    /// Email users when their password is reset or changed.
    pub notify_user_on_reset: bool,
    /// Email every administrator when an administrator resets another user's password.
    pub notify_admins_on_admin_reset: bool,
}

impl Default for SelfServiceSettings {
    /// Off until an administrator turns it on; sensible choices for everything else.
    fn default() -> Self {
        Self {
            scope: SelfServiceScope::Nobody,
            methods: vec![
                VerificationMethod::Email,
                VerificationMethod::AuthenticatorApp,
            ],
            methods_required: 1,
            security_questions: Vec::new(),
            questions_asked: 3,
            unlock_without_reset: true,
            writeback_enabled: true,
            banned_words: Vec::new(),
            minimum_strength: 2,
            helpdesk: String::new(),
            reconfirm_days: 180,
            notify_user_on_reset: true,
            notify_admins_on_admin_reset: true,
        }
    }
}

const MAX_QUESTIONS: usize = 20;
const MAX_QUESTION_CHARS: usize = 200;
const MAX_BANNED_WORDS: usize = 1000;
const MAX_BANNED_WORD_CHARS: usize = 64;
const MAX_HELPDESK_CHARS: usize = 500;

impl SelfServiceSettings {
    /// Everything wrong with these settings, each as a sentence; empty when they are valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let SelfServiceScope::Group { group } = &self.scope
            && group.trim().is_empty()
        {
            problems.push("Name the group whose members may use self-service.".to_owned());
        }
        let mut distinct = self.methods.clone();
        distinct.sort_by_key(|method| method.as_str());
        distinct.dedup();
        if distinct.len() != self.methods.len() {
            problems.push("Each verification method may be listed once.".to_owned());
        }
        if self.methods.is_empty() {
            problems.push("Choose at least one verification method.".to_owned());
        }
        if !(1..=2).contains(&self.methods_required) {
            problems.push("Users must pass 1 or 2 verification methods.".to_owned());
        } else if usize::from(self.methods_required) > self.methods.len() {
            problems.push(format!(
                "{} methods are required but only {} are available.",
                self.methods_required,
                self.methods.len()
            ));
        }
        if !(3..=5).contains(&self.questions_asked) {
            problems.push("Ask 3 to 5 security questions.".to_owned());
        }
        if self
            .methods
            .contains(&VerificationMethod::SecurityQuestions)
            && self.security_questions.len() < usize::from(self.questions_asked)
        {
            problems.push(format!(
                "Security questions are a method, so write at least {} questions.",
                self.questions_asked
            ));
        }
        if self.security_questions.len() > MAX_QUESTIONS
            || self.security_questions.iter().any(|question| {
                question.trim().is_empty() || question.chars().count() > MAX_QUESTION_CHARS
            })
        {
            problems.push(format!(
                "Write at most {MAX_QUESTIONS} security questions, none empty or longer than {MAX_QUESTION_CHARS} characters."
            ));
        }
        if self.banned_words.len() > MAX_BANNED_WORDS
            || self
                .banned_words
                .iter()
                .any(|word| word.trim().is_empty() || word.chars().count() > MAX_BANNED_WORD_CHARS)
        {
            problems.push(format!(
                "List at most {MAX_BANNED_WORDS} banned words, none empty or longer than {MAX_BANNED_WORD_CHARS} characters."
            ));
        }
        if self.minimum_strength > 4 {
            problems.push("The minimum strength is 0 to 4.".to_owned());
        }
        if self.helpdesk.chars().count() > MAX_HELPDESK_CHARS {
            problems.push(format!(
                "The helpdesk text is longer than {MAX_HELPDESK_CHARS} characters."
            ));
        }
        let looks_like_link = self.helpdesk.contains("://");
        if looks_like_link && !self.helpdesk.trim().starts_with("https://") {
            problems.push("A helpdesk link must start with https://.".to_owned());
        }
        if self
            .security_questions
            .iter()
            .chain(&self.banned_words)
            .chain(std::iter::once(&self.helpdesk))
            .any(|text| text.chars().any(char::is_control))
        {
            problems.push("Texts must not contain control characters.".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_self_service_settings_are_valid_and_off() {
        let settings = SelfServiceSettings::default();
        assert_eq!(settings.problems(), Vec::<String>::new());
        assert_eq!(settings.scope, SelfServiceScope::Nobody);
    }

    #[test]
    fn self_service_settings_problems_name_each_mistake() {
        let settings = SelfServiceSettings {
            scope: SelfServiceScope::Group { group: " ".into() },
            methods: vec![VerificationMethod::SecurityQuestions],
            methods_required: 2,
            security_questions: vec!["Your first pet?".into()],
            questions_asked: 3,
            minimum_strength: 5,
            helpdesk: "http://help.example.test".into(),
            banned_words: vec![String::new()],
            ..SelfServiceSettings::default()
        };
        let problems = settings.problems().join(" ");
        for expected in [
            "Name the group",
            "2 methods are required but only 1",
            "at least 3 questions",
            "0 to 4",
            "https://",
            "banned words",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
    }

    #[test]
    fn self_service_settings_have_a_stable_wire_form() {
        let settings = SelfServiceSettings {
            scope: SelfServiceScope::Group {
                group: "Staff".into(),
            },
            ..SelfServiceSettings::default()
        };
        let json = serde_json::to_value(&settings).unwrap();
        assert_eq!(
            json["scope"],
            serde_json::json!({"scope": "group", "group": "Staff"})
        );
        assert_eq!(
            json["methods"],
            serde_json::json!(["email", "authenticator_app"])
        );
        let back: SelfServiceSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, settings);
    }
}
