//! Console pages for the audit log (filter, page, export) and the settings.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use writeback_proto::api::{AuditEntryView, AuditOutcomeView, AuditSettings};

use super::pages::{
    AuditFilterFields, AuditLogPage, AuditRow, ErrorPage, Layout, Notice, SettingsPage,
    format_time, path_segment, render,
};
use super::session::{ConsoleForm, ConsoleFormFields, ConsoleSession, SESSION_COOKIE};
use crate::AppState;
use crate::api::ApiError;
use crate::api::audit::{AuditQuery, apply_audit_settings, entries, export as export_entries};
use crate::audit_retention;

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
];

fn layout(session: &ConsoleSession, section: &'static str) -> Option<Layout> {
    Some(Layout {
        email: session.signed_in.administrator.email.clone(),
        csrf: session.csrf.clone(),
        section,
    })
}

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
    let mut page = AuditLogPage {
        layout: layout(&session, "audit"),
        filters: query.fields(),
        operations: OPERATIONS,
        entries: Vec::new(),
        next_before: None,
        export_query: query.link_query(),
        error: None,
    };
    let selected = async {
        let (filter, _) = query.api_query(PAGE_SIZE).filter()?;
        entries(&state, &filter).await
    }
    .await;
    match selected {
        Ok(selected) => {
            page.next_before = (selected.len() == PAGE_SIZE as usize)
                .then(|| selected.last().map(|entry| entry.id))
                .flatten();
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
        let (filter, format) = query.api_query(EXPORT_LIMIT).filter()?;
        let selected = entries(&state, &filter).await?;
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

async fn settings_page(
    state: &AppState,
    session: &ConsoleSession,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    let settings = match audit_retention::settings(&state.store).await {
        Ok(settings) => settings,
        Err(error) => return ErrorPage::from(ApiError::internal(error)).into_response(),
    };
    render(
        status,
        &SettingsPage {
            layout: layout(session, "settings"),
            csrf: session.csrf.clone(),
            retention_days: settings.retention_days,
            retention_days_text: settings
                .retention_days
                .map_or(String::new(), |days| days.to_string()),
            notice,
        },
    )
}

pub async fn settings(State(state): State<AppState>, session: ConsoleSession) -> Response {
    settings_page(&state, &session, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionForm {
    csrf: String,
    keep: String,
    retention_days: Option<String>,
}

impl ConsoleFormFields for RetentionForm {
    const COOKIE: &'static str = SESSION_COOKIE;
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

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
            )
            .await;
        }
    };
    match apply_audit_settings(&state, &session.signed_in, AuditSettings { retention_days }).await {
        Ok(applied) => {
            let text = match applied.retention_days {
                Some(days) => format!("Saved: audit entries are kept for {days} days."),
                None => "Saved: every audit entry is kept.".into(),
            };
            settings_page(&state, &session, StatusCode::OK, Some(Notice::good(text))).await
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
