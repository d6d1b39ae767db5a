//! The audit log's rows: every action is one [`AuditAction`], and [`AuditEntry::record`] is the
//! only place a row is written.

use writeback_proto::api::OperationTrace;
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::operation::OperationKind;
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditEvent, Store, StoreError};

/// The audit log's "from where" for set-up commands run on the cloud's own host.
pub const LOCAL_ORIGIN: &str = "local command";

/// What the audit log records as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Operation(OperationKind),
    SignIn,
    EnrolSecondFactor,
    ResetSecondFactor,
    CreateAdministrator,
    EnableAdministrator,
    DisableAdministrator,
    DeleteAdministrator,
    EndAdministratorSessions,
    UpdateSettings,
    CreateRegistrationToken,
    RegisterAgent,
    RevokeAgent,
    RequestFullSync,
    ClearSelfServiceMethods,
    SelfServiceIdentify,
    SelfServiceSendCode,
    SelfServiceVerify,
    SelfServiceBlocked,
    SelfServiceRegister,
    SelfServiceRemove,
    SelfServiceConfirm,
    ExpiryReminder,
}

impl AuditAction {
    /// The stable name stored in the log and shown in the console, the API and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operation(kind) => kind.as_str(),
            Self::SignIn => "sign_in",
            Self::EnrolSecondFactor => "enrol_second_factor",
            Self::ResetSecondFactor => "reset_second_factor",
            Self::CreateAdministrator => "create_administrator",
            Self::EnableAdministrator => "enable_administrator",
            Self::DisableAdministrator => "disable_administrator",
            Self::DeleteAdministrator => "delete_administrator",
            Self::EndAdministratorSessions => "end_administrator_sessions",
            Self::UpdateSettings => "update_settings",
            Self::CreateRegistrationToken => "create_registration_token",
            Self::RegisterAgent => "register_agent",
            Self::RevokeAgent => "revoke_agent",
            Self::RequestFullSync => "request_full_sync",
            Self::ClearSelfServiceMethods => "clear_self_service_methods",
            Self::SelfServiceIdentify => "self_service_identify",
            Self::SelfServiceSendCode => "self_service_send_code",
            Self::SelfServiceVerify => "self_service_verify",
            Self::SelfServiceBlocked => "self_service_blocked",
            Self::SelfServiceRegister => "self_service_register",
            Self::SelfServiceRemove => "self_service_remove",
            Self::SelfServiceConfirm => "self_service_confirm",
            Self::ExpiryReminder => "expiry_reminder",
        }
    }

    /// A row for this action by `actor` at `at`, succeeded unless [`AuditEntry::result`] says
    /// otherwise.
    pub fn by(self, actor: &Actor, at: UnixMillis) -> AuditEntry {
        AuditEntry {
            event: AuditEvent {
                at,
                actor: actor.name.clone(),
                action: self.as_str().into(),
                directory: None,
                target: None,
                request_id: None,
                result_code: "success".into(),
                detail: None,
                origin: actor.origin.clone(),
                trace: None,
            },
        }
    }
}

/// Who acted, as the audit log records them: an administrator's email, `self-service: <name>`,
/// `agent:<name>` or a set-up command, and the client address they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub origin: Option<String>,
}

impl Actor {
    pub fn new(name: impl Into<String>, origin: Option<String>) -> Self {
        Self {
            name: name.into(),
            origin,
        }
    }

    /// A set-up command run on the cloud's own host.
    pub fn local_command(command: &str) -> Self {
        Self::new(command, Some(LOCAL_ORIGIN.into()))
    }

    /// The person at the portal, named by the account they act as (or the name they typed).
    pub fn self_service(name: &str, origin: Option<String>) -> Self {
        Self::new(format!("self-service: {name}"), origin)
    }
}

/// One row of the audit log, built from an [`AuditAction`].
#[derive(Debug, Clone)]
#[must_use = "an audit entry is written only by `record`"]
pub struct AuditEntry {
    event: AuditEvent,
}

impl AuditEntry {
    pub fn directory(mut self, directory: &DirectoryName) -> Self {
        self.event.directory = Some(directory.to_string());
        self
    }

    /// For a directory named by text the caller already holds (as the portal's accounts do).
    pub fn directory_named(mut self, directory: Option<&str>) -> Self {
        self.event.directory = directory.map(str::to_owned);
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.event.target = Some(target.into());
        self
    }

    pub fn request(mut self, request_id: RequestId) -> Self {
        self.event.request_id = Some(request_id.to_string());
        self
    }

    /// `success`, a result code, or the error code of a refusal.
    pub fn result(mut self, code: impl Into<String>) -> Self {
        self.event.result_code = code.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.event.detail = Some(detail.into());
        self
    }

    pub fn maybe_detail(mut self, detail: Option<String>) -> Self {
        self.event.detail = detail;
        self
    }

    /// Where an operation's time went.
    pub fn trace(mut self, trace: &OperationTrace) -> Self {
        self.event.trace = serde_json::to_string(trace).ok();
        self
    }

    pub async fn record(self, store: &Store) -> Result<(), StoreError> {
        store.append_audit(&self.event).await
    }
}
