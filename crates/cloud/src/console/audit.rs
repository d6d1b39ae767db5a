//! Console pages for the audit log (filter, page, export) and the settings (audit retention and
//! the self-service policy).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use writeback_proto::api::{
    AuditEntryView, AuditOutcomeView, AuditQuery, AuditSettings, OperationTrace, SelfServiceScope,
    SelfServiceSettings, VerificationMethod,
};

use writeback_proto::time::UnixMillis;

use super::pages::{
    AuditFilterFields, AuditLogPage, AuditRow, ErrorPage, Notice, RunningRow, SelfServiceFields,
    SettingsPage, format_time, path_segment, render,
};
use super::session::{ConsoleForm, ConsoleSession, SESSION_COOKIE};
use crate::service::audit_log::{entries, filter, next_before};
use crate::service::audit_retention;
use crate::service::self_service::settings as self_service;
use crate::service::state::AppState;
use crate::web::audit_export::export as export_entries;
use crate::web::browser_form::form_fields;
use crate::web::failure::HttpFailure as ApiError;

const STRENGTHS: &[(u8, &str)] = &[
    (0, "Any password the directory accepts"),
    (1, "Weak"),
    (2, "Fair"),
    (3, "Strong"),
    (4, "Very strong"),
];

const PAGE_SIZE: u32 = 100;
/// One export holds at most this many entries, as through the API.
const EXPORT_LIMIT: u32 = 50_000;

/// Every operation the audit log records, for the filter's list.
const OPERATIONS: &[&str] = &[
    "reset_password",
    "change_password",
    "unlock",
    "sign_in",
    "enrol_second_factor",
    "reset_second_factor",
    "create_administrator",
    "create_registration_token",
    "register_agent",
    "revoke_agent",
    "update_settings",
    "request_full_sync",
    "expiry_reminder",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilterQuery {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    operation: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
    format: Option<String>,
}

impl AuditFilterQuery {
    fn fields(&self) -> AuditFilterFields {
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        AuditFilterFields {
            since: text(&self.since),
            until: text(&self.until),
            actor: text(&self.actor),
            target: text(&self.target),
            operation: text(&self.operation),
            outcome: text(&self.outcome),
        }
    }

    /// The filters (not the page) as `&name=value` pairs, for links that keep them.
    fn link_query(&self) -> String {
        let fields = self.fields();
        [
            ("since", fields.since),
            ("until", fields.until),
            ("actor", fields.actor),
            ("target", fields.target),
            ("operation", fields.operation),
            ("outcome", fields.outcome),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("&{name}={}", path_segment(&value)))
        .collect()
    }

    fn api_query(self, limit: u32) -> AuditQuery {
        AuditQuery {
            since: self.since.map(|time| browser_time(&time)),
            until: self.until.map(|time| browser_time(&time)),
            actor: self.actor,
            target: self.target,
            operation: self.operation,
            outcome: self.outcome,
            before: self.before,
            limit: Some(limit),
            format: self.format,
            ..AuditQuery::default()
        }
    }
}

/// A `datetime-local` field sends `2026-11-22T10:00` with no zone; the form labels it UTC.
fn browser_time(text: &str) -> String {
    match text.len() {
        16 if text.as_bytes().get(10) == Some(&b'T') => format!("{text}:00Z"),
        19 if text.as_bytes().get(10) == Some(&b'T') => format!("{text}Z"),
        _ => text.to_owned(),
    }
}

fn audit_row(entry: AuditEntryView) -> AuditRow {
    AuditRow {
        at: format_time(Some(entry.at)),
        actor: entry.actor,
        action: entry.action,
        directory: entry.directory.unwrap_or_default(),
        target: entry.target.unwrap_or_default(),
        tone: match entry.outcome {
            AuditOutcomeView::Success => "good",
            AuditOutcomeView::Failure => "bad",
        },
        result_code: entry.result_code,
        origin: entry.origin.unwrap_or_default(),
        detail: entry.detail.unwrap_or_default(),
        request_id: entry.request_id.unwrap_or_default(),
        trace: entry
            .trace
            .as_ref()
            .map(OperationTrace::describe)
            .unwrap_or_default(),
    }
}

pub async fn audit_log(
    State(state): State<AppState>,
    session: ConsoleSession,
    query: Result<Query<AuditFilterQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ErrorPage::from(ApiError::invalid("The audit filter is not valid."))
            .into_response();
    };
    let now = UnixMillis::now();
    let mut page = AuditLogPage {
        layout: session.layout("audit"),
        running: state
            .relay
            .operations_in_flight(now)
            .into_iter()
            .map(|operation| RunningRow {
                request_id: operation.request_id.to_string(),
                operation: operation.operation,
                user: operation.user,
                agent_id: operation.agent_id.to_string(),
                sent_at: format_time(Some(operation.sent_at)),
                stage: operation.stage.as_str(),
            })
            .collect(),
        filters: query.fields(),
        operations: OPERATIONS,
        entries: Vec::new(),
        next_before: None,
        export_query: query.link_query(),
        error: None,
    };
    let selected = async {
        let (filter, _) = filter(query.api_query(PAGE_SIZE))?;
        entries(&state, &filter).await.map_err(ApiError::internal)
    }
    .await;
    match selected {
        Ok(selected) => {
            page.next_before = next_before(&selected, PAGE_SIZE);
            page.entries = selected.into_iter().map(audit_row).collect();
            render(StatusCode::OK, &page)
        }
        Err(error) => {
            let status = error.status;
            page.error = Some(error.message);
            render(status, &page)
        }
    }
}

/// The filtered log as a CSV or JSON download (`format=csv|json`).
pub async fn export(
    State(state): State<AppState>,
    _session: ConsoleSession,
    query: Result<Query<AuditFilterQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ErrorPage::from(ApiError::invalid("The audit filter is not valid."))
            .into_response();
    };
    let exported = async {
        let (filter, format) = filter(query.api_query(EXPORT_LIMIT))?;
        let selected = entries(&state, &filter).await.map_err(ApiError::internal)?;
        Ok::<_, ApiError>(export_entries(selected, format, filter.limit))
    }
    .await;
    match exported {
        Ok(mut response) => {
            if !response
                .headers()
                .contains_key(axum::http::header::CONTENT_DISPOSITION)
            {
                response.headers_mut().insert(
                    axum::http::header::CONTENT_DISPOSITION,
                    axum::http::HeaderValue::from_static(
                        "attachment; filename=\"writeback-audit.json\"",
                    ),
                );
            }
            response
        }
        Err(error) => ErrorPage::from(error).into_response(),
    }
}

/// The settings page; `shown` replaces the stored self-service settings in the form, so that a
/// refused form comes back as it was sent.
async fn settings_page(
    state: &AppState,
    session: &ConsoleSession,
    status: StatusCode,
    notice: Option<Notice>,
    shown: Option<SelfServiceSettings>,
) -> Response {
    let loaded = async {
        Ok::<_, writeback_store::StoreError>((
            audit_retention::settings(&state.store).await?,
            self_service::stored_settings(&state.store).await?,
        ))
    };
    let (settings, self_service) = match loaded.await {
        Ok((settings, stored)) => (settings, shown.unwrap_or(stored)),
        Err(error) => return ErrorPage::from(ApiError::internal(error)).into_response(),
    };
    render(
        status,
        &SettingsPage {
            layout: session.layout("settings"),
            csrf: session.csrf.clone(),
            retention_days: settings.retention_days,
            retention_days_text: settings
                .retention_days
                .map_or(String::new(), |days| days.to_string()),
            self_service: self_service_fields(&self_service),
            strengths: STRENGTHS,
            notice,
        },
    )
}

fn self_service_fields(settings: &SelfServiceSettings) -> SelfServiceFields {
    let (scope, group) = match &settings.scope {
        SelfServiceScope::Nobody => ("nobody", String::new()),
        SelfServiceScope::Group { group } => ("group", group.clone()),
        SelfServiceScope::Everyone => ("everyone", String::new()),
    };
    let offers = |method| settings.methods.contains(&method);
    SelfServiceFields {
        scope,
        group,
        email: offers(VerificationMethod::Email),
        authenticator_app: offers(VerificationMethod::AuthenticatorApp),
        security_questions: offers(VerificationMethod::SecurityQuestions),
        sms: offers(VerificationMethod::Sms),
        methods_required: settings.methods_required,
        questions: settings.security_questions.join("\n"),
        questions_asked: settings.questions_asked,
        unlock_without_reset: settings.unlock_without_reset,
        writeback_enabled: settings.writeback_enabled,
        banned_words: settings.banned_words.join("\n"),
        minimum_strength: settings.minimum_strength,
        helpdesk: settings.helpdesk.clone(),
        reconfirm_days: settings.reconfirm_days,
        notify_user_on_reset: settings.notify_user_on_reset,
        notify_admins_on_admin_reset: settings.notify_admins_on_admin_reset,
    }
}

/// The self-service form. Checkboxes are present only when ticked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfServiceForm {
    csrf: String,
    scope: String,
    group: String,
    method_email: Option<String>,
    method_authenticator_app: Option<String>,
    method_security_questions: Option<String>,
    method_sms: Option<String>,
    methods_required: String,
    security_questions: String,
    questions_asked: String,
    unlock_without_reset: Option<String>,
    writeback_enabled: Option<String>,
    banned_words: String,
    minimum_strength: String,
    helpdesk: String,
    reconfirm_days: String,
    notify_user_on_reset: Option<String>,
    notify_admins_on_admin_reset: Option<String>,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => SelfServiceForm);

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

impl SelfServiceForm {
    /// The settings the form describes, or what is not a number where one is needed.
    fn settings(self) -> Result<SelfServiceSettings, String> {
        let number = |text: &str, what: &str| {
            text.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} must be a whole number."))
        };
        let small = |text: &str, what: &str| {
            number(text, what)
                .and_then(|value| u8::try_from(value).map_err(|_| format!("{what} is too large.")))
        };
        let scope = match self.scope.as_str() {
            "nobody" => SelfServiceScope::Nobody,
            "group" => SelfServiceScope::Group {
                group: self.group.trim().to_owned(),
            },
            "everyone" => SelfServiceScope::Everyone,
            _ => return Err("Choose who may use self-service.".into()),
        };
        let methods = [
            (self.method_email.is_some(), VerificationMethod::Email),
            (
                self.method_authenticator_app.is_some(),
                VerificationMethod::AuthenticatorApp,
            ),
            (
                self.method_security_questions.is_some(),
                VerificationMethod::SecurityQuestions,
            ),
            (self.method_sms.is_some(), VerificationMethod::Sms),
        ]
        .into_iter()
        .filter_map(|(chosen, method)| chosen.then_some(method))
        .collect();
        Ok(SelfServiceSettings {
            scope,
            methods,
            methods_required: small(&self.methods_required, "Methods required")?,
            security_questions: lines(&self.security_questions),
            questions_asked: small(&self.questions_asked, "Questions asked")?,
            unlock_without_reset: self.unlock_without_reset.is_some(),
            writeback_enabled: self.writeback_enabled.is_some(),
            banned_words: lines(&self.banned_words),
            minimum_strength: small(&self.minimum_strength, "Minimum strength")?,
            helpdesk: self.helpdesk.trim().to_owned(),
            reconfirm_days: number(&self.reconfirm_days, "Days before confirming again")?,
            notify_user_on_reset: self.notify_user_on_reset.is_some(),
            notify_admins_on_admin_reset: self.notify_admins_on_admin_reset.is_some(),
        })
    }
}

pub async fn update_self_service(
    State(state): State<AppState>,
    session: ConsoleSession,
    form: ConsoleForm<SelfServiceForm>,
) -> Response {
    let refused = |message: String| Notice::bad(format!("Nothing was changed: {message}"));
    let settings = match form.fields.settings() {
        Ok(settings) => settings,
        Err(message) => {
            return settings_page(
                &state,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(refused(message)),
                None,
            )
            .await;
        }
    };
    match self_service::apply(&state, &session.signed_in.actor(), settings.clone())
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => {
            let notice = Notice::good("Saved: the self-service settings apply from now on.");
            settings_page(&state, &session, StatusCode::OK, Some(notice), None).await
        }
        Err(error) => {
            let status = if error.status == StatusCode::BAD_REQUEST {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                error.status
            };
            settings_page(
                &state,
                &session,
                status,
                Some(refused(error.message)),
                Some(settings),
            )
            .await
        }
    }
}

pub async fn settings(State(state): State<AppState>, session: ConsoleSession) -> Response {
    settings_page(&state, &session, StatusCode::OK, None, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionForm {
    csrf: String,
    keep: String,
    retention_days: Option<String>,
}

form_fields!(crate::console::pages::refused, SESSION_COOKIE => RetentionForm);

pub async fn update_retention(
    State(state): State<AppState>,
    session: ConsoleSession,
    form: ConsoleForm<RetentionForm>,
) -> Response {
    let fields = form.fields;
    let retention_days = match fields.keep.as_str() {
        "forever" => None,
        "days" => match fields
            .retention_days
            .as_deref()
            .map(str::trim)
            .map(str::parse::<u32>)
        {
            Some(Ok(days)) => Some(days),
            _ => {
                let notice =
                    Notice::bad("Nothing was changed: give the number of days to keep entries.");
                return settings_page(
                    &state,
                    &session,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(notice),
                    None,
                )
                .await;
            }
        },
        _ => {
            let notice = Notice::bad("Nothing was changed: choose how long to keep entries.");
            return settings_page(
                &state,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(notice),
                None,
            )
            .await;
        }
    };
    match audit_retention::apply(
        &state,
        &session.signed_in.actor(),
        AuditSettings { retention_days },
    )
    .await
    .map_err(ApiError::from)
    {
        Ok(applied) => {
            let text = match applied.retention_days {
                Some(days) => format!("Saved: audit entries are kept for {days} days."),
                None => "Saved: every audit entry is kept.".into(),
            };
            settings_page(
                &state,
                &session,
                StatusCode::OK,
                Some(Notice::good(text)),
                None,
            )
            .await
        }
        Err(error) => {
            let status = error.status;
            settings_page(
                &state,
                &session,
                status,
                Some(Notice::bad(format!(
                    "Nothing was changed: {}",
                    error.message
                ))),
                None,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_times_are_read_as_utc() {
        assert_eq!(browser_time("2026-11-22T10:00"), "2026-11-22T10:00:00Z");
        assert_eq!(browser_time("2026-11-22T10:00:05"), "2026-11-22T10:00:05Z");
        assert_eq!(browser_time("1700000000000"), "1700000000000");
    }

    #[test]
    fn links_keep_the_filters_but_not_the_page() {
        let query = AuditFilterQuery {
            actor: Some("a&b@example.test".into()),
            outcome: Some("failure".into()),
            before: Some(7),
            ..AuditFilterQuery::default()
        };
        assert_eq!(
            query.link_query(),
            "&actor=a%26b%40example.test&outcome=failure"
        );
    }
}
