//! The console's pages: one askama template each (under `templates/console`), filled with text
//! that is already formatted, so templates hold no logic beyond loops and conditions.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use writeback_proto::time::UnixMillis;

use crate::web::failure::HttpFailure as ApiError;
pub use crate::web::pages::{Notice, render};

/// What signed-in pages share: the navigation, who is signed in, the sign-out form's token.
#[derive(Debug, Clone)]
pub struct Layout {
    pub email: String,
    pub csrf: String,
    pub section: &'static str,
}

const SECTIONS: &[(&str, &str, &str)] = &[
    ("overview", "/console", "Overview"),
    ("users", "/console/users", "Users"),
    ("groups", "/console/groups", "Groups"),
    ("agents", "/console/agents", "Agents"),
    (
        "administrators",
        "/console/administrators",
        "Administrators",
    ),
    ("audit", "/console/audit", "Audit log"),
    ("settings", "/console/settings", "Settings"),
];

impl Layout {
    pub fn sections(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        SECTIONS
    }

    pub fn is_current(&self, section: &str) -> bool {
        self.section == section
    }
}

/// `2026-11-22 10:15:03 UTC`, or `never`.
pub fn format_time(time: Option<UnixMillis>) -> String {
    time.map_or("never".into(), |time| {
        humantime::format_rfc3339_seconds(time.to_system_time())
            .to_string()
            .replace('T', " ")
            .replace('Z', " UTC")
    })
}

/// `text` as one URL path segment: everything but unreserved characters percent-encoded, so a
/// user name with `/`, `?` or `#` stays one segment.
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[derive(Debug, Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    pub layout: Option<Layout>,
    pub status: u16,
    pub title: String,
    pub message: String,
}

impl ErrorPage {
    pub fn new(status: StatusCode, title: &str, message: &str) -> Self {
        Self {
            layout: None,
            status: status.as_u16(),
            title: title.into(),
            message: message.into(),
        }
    }
}

impl From<ApiError> for ErrorPage {
    fn from(error: ApiError) -> Self {
        let title = match error.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "That request is not valid",
            status if status.is_server_error() => "Something went wrong",
            _ => "That did not work",
        };
        Self::new(error.status, title, &error.message)
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        render(status, &self)
    }
}

#[derive(Debug, Template)]
#[template(path = "console/sign_in.html")]
pub struct SignInPage {
    pub layout: Option<Layout>,
    pub csrf: String,
    pub email: String,
    pub error: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/second_factor.html")]
pub struct SecondFactorPage {
    pub layout: Option<Layout>,
    pub csrf: String,
    pub email: String,
    pub error: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/enrol.html")]
pub struct EnrolPage {
    pub layout: Option<Layout>,
    pub csrf: String,
    pub email: String,
    pub manual_key: String,
    pub qr_data_uri: String,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct HealthRow {
    pub directory: String,
    pub state: &'static str,
    pub label: &'static str,
    pub tone: &'static str,
    pub summary: String,
    pub agents_connected: u64,
    pub agents_registered: u64,
    pub agents_healthy: u64,
    pub agents_minimum: u64,
    pub recent_failures: u64,
}

#[derive(Debug, Template)]
#[template(path = "console/overview.html")]
pub struct OverviewPage {
    pub layout: Option<Layout>,
    pub directories: Vec<HealthRow>,
    pub expiring: Vec<ExpiringRow>,
}

/// A password expiring soon, and the reminders its owner got.
#[derive(Debug)]
pub struct ExpiringRow {
    pub href: String,
    pub directory: String,
    pub logon_name: String,
    pub expires: String,
    pub left: String,
    pub reminded: String,
}

#[derive(Debug)]
pub struct UserRow {
    pub href: String,
    pub logon_name: String,
    pub display_name: String,
    pub user_principal_name: String,
    pub badges: Vec<(&'static str, &'static str)>,
    pub synced: String,
}

#[derive(Debug, Template)]
#[template(path = "console/users.html")]
pub struct UsersPage {
    pub layout: Option<Layout>,
    pub directories: Vec<String>,
    pub directory: String,
    pub q: String,
    pub group: String,
    pub users: Vec<UserRow>,
    pub limit: usize,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct OperationOutcome {
    pub tone: &'static str,
    pub result_code: &'static str,
    pub message: String,
    pub request_id: String,
    /// What part of a success had no effect: code and words.
    pub warnings: Vec<(&'static str, String)>,
}

#[derive(Debug, Template)]
#[template(path = "console/user.html")]
pub struct UserPage {
    pub layout: Option<Layout>,
    pub csrf: String,
    pub directory: String,
    pub href: String,
    pub display_name: String,
    pub logon_name: String,
    pub user_principal_name: String,
    pub mail: String,
    pub distinguished_name: String,
    pub anchor: String,
    pub badges: Vec<(&'static str, &'static str)>,
    pub locked_out: bool,
    pub password_last_set: String,
    pub synced: String,
    /// Group names, and whether the membership is only through another group.
    pub groups: Vec<(String, bool)>,
    pub outcome: Option<OperationOutcome>,
    /// The request ids the reset and unlock forms send.
    pub reset_request_id: String,
    pub unlock_request_id: String,
}

#[derive(Debug)]
pub struct GroupRow {
    pub name: String,
    pub members_href: String,
    pub direct_members: u64,
    pub distinguished_name: String,
    pub synced: String,
}

#[derive(Debug, Template)]
#[template(path = "console/groups.html")]
pub struct GroupsPage {
    pub layout: Option<Layout>,
    pub directories: Vec<String>,
    pub directory: String,
    pub q: String,
    pub groups: Vec<GroupRow>,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct AgentRow {
    pub agent_id: String,
    pub directory: String,
    pub name: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub tone: &'static str,
    pub version: String,
    pub address: String,
    pub node: String,
    pub last_heartbeat: String,
    pub requests_in_flight: u64,
    pub last_error: String,
    pub revoked: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/agents.html")]
pub struct AgentsPage {
    pub layout: Option<Layout>,
    pub csrf: String,
    pub agents: Vec<AgentRow>,
    /// Shown when there is more than one: the cloud's nodes and their agents.
    pub nodes: Vec<writeback_proto::api::CloudNode>,
    pub directories: Vec<String>,
    pub default_directory: String,
    pub token_minutes: u64,
    pub notice: Option<Notice>,
}

/// An administrator as the administrators page lists them.
#[derive(Debug, Clone)]
pub struct AdministratorRow {
    pub email: String,
    pub enabled: bool,
    pub second_factor: bool,
    pub sessions: u64,
    pub last_active: String,
    pub is_you: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/administrators.html")]
pub struct AdministratorsPage {
    pub layout: Option<Layout>,
    pub csrf: String,
    pub administrators: Vec<AdministratorRow>,
    pub notice: Option<Notice>,
}

#[derive(Debug, Template)]
#[template(path = "console/registration_token.html")]
pub struct RegistrationTokenPage {
    pub layout: Option<Layout>,
    pub directory: String,
    pub token: String,
    pub expires: String,
    pub cloud_url: String,
    pub fingerprint: String,
}

/// The audit filters as the form shows them back.
#[derive(Debug, Default)]
pub struct AuditFilterFields {
    pub since: String,
    pub until: String,
    pub actor: String,
    pub target: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Debug)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub directory: String,
    pub target: String,
    pub tone: &'static str,
    pub result_code: String,
    pub origin: String,
    pub detail: String,
    pub request_id: String,
    /// Where the operation's time went, in one line; empty for other entries.
    pub trace: String,
}

#[derive(Debug, Template)]
#[template(path = "console/audit.html")]
pub struct AuditLogPage {
    pub layout: Option<Layout>,
    /// Operations running now, before they have an entry.
    pub running: Vec<RunningRow>,
    pub filters: AuditFilterFields,
    pub operations: &'static [&'static str],
    pub entries: Vec<AuditRow>,
    pub next_before: Option<i64>,
    /// The filters as `&name=value` pairs, for the export and paging links.
    pub export_query: String,
    pub error: Option<String>,
}

/// One operation running now, as the audit page shows it above the log.
#[derive(Debug)]
pub struct RunningRow {
    pub request_id: String,
    pub operation: String,
    pub user: String,
    pub agent_id: String,
    pub sent_at: String,
    pub stage: &'static str,
}

/// The self-service settings as the form shows them.
#[derive(Debug)]
pub struct SelfServiceFields {
    pub scope: &'static str,
    pub group: String,
    pub email: bool,
    pub authenticator_app: bool,
    pub security_questions: bool,
    pub sms: bool,
    pub methods_required: u8,
    /// One per line.
    pub questions: String,
    pub questions_asked: u8,
    pub unlock_without_reset: bool,
    pub writeback_enabled: bool,
    /// One per line.
    pub banned_words: String,
    pub minimum_strength: u8,
    pub helpdesk: String,
    pub reconfirm_days: u32,
    pub notify_user_on_reset: bool,
    pub notify_admins_on_admin_reset: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/settings.html")]
pub struct SettingsPage {
    pub layout: Option<Layout>,
    pub csrf: String,
    pub retention_days: Option<u32>,
    pub retention_days_text: String,
    pub self_service: SelfServiceFields,
    pub strengths: &'static [(u8, &'static str)],
    pub notice: Option<Notice>,
}

/// A refused form, in the console's own page.
pub fn refused(status: StatusCode, title: &str, message: &str) -> Response {
    ErrorPage::new(status, title, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_keep_reserved_characters_inside() {
        assert_eq!(path_segment("jdoe"), "jdoe");
        assert_eq!(path_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(path_segment("zoë"), "zo%C3%AB");
    }

    #[test]
    fn markup_in_data_is_escaped() {
        let page = ErrorPage::new(
            StatusCode::NOT_FOUND,
            "<script>alert(1)</script>",
            "\"><img src=x>",
        );
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x>"), "{html}");
        assert!(html.contains("&#60;script&#62;"), "{html}");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(
            format_time(Some(UnixMillis(1_700_000_000_000))),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(format_time(None), "never");
    }
}
