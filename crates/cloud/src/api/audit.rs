//! The audit log through the API: read with filters, exported as JSON or CSV, and its retention.
//! There is deliberately no way to change or delete an entry.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use writeback_proto::api::{
    AuditEntryView, AuditOutcomeView, AuditPage, AuditSettings, ErrorResponse,
};
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditEntry, AuditEvent, AuditFilter, AuditOutcome};

use super::directory::{limit, query, search_text};
use super::extract::{ApiError, JsonBody, SignedIn};
use crate::AppState;
use crate::audit_retention::{self, AUDIT_SETTINGS};

const DEFAULT_PAGE: u32 = 100;
/// An export may be large, but one answer stays bounded; page with `before` past this.
const MAX_PAGE: u32 = 50_000;
/// Ten years: longer retention is "keep for ever", which is `null`.
const MAX_RETENTION_DAYS: u32 = 3650;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Unix milliseconds or an RFC 3339 time, inclusive.
    pub since: Option<String>,
    /// Unix milliseconds or an RFC 3339 time, exclusive.
    pub until: Option<String>,
    /// Who acted: part of an administrator's email, or of an agent's name.
    pub actor: Option<String>,
    /// Whom it was done to: part of a user name.
    pub target: Option<String>,
    pub directory: Option<String>,
    /// The action, e.g. `reset_password`.
    pub operation: Option<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    /// A result code, e.g. `policy_violation`.
    pub result_code: Option<String>,
    pub request_id: Option<String>,
    /// Only entries older than this id: `next_before` of the previous page.
    pub before: Option<i64>,
    /// At most this many entries (default 100).
    pub limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// The format an audit query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    Json,
    Csv,
}

impl AuditQuery {
    /// The store filter and format this query asks for, or why it is not valid.
    pub fn filter(self) -> Result<(AuditFilter, AuditFormat), ApiError> {
        let outcome = match self.outcome.as_deref() {
            None | Some("") => None,
            Some("success") => Some(AuditOutcome::Success),
            Some("failure") => Some(AuditOutcome::Failure),
            Some(_) => return Err(ApiError::invalid("`outcome` must be success or failure.")),
        };
        let format = match self.format.as_deref() {
            None | Some("" | "json") => AuditFormat::Json,
            Some("csv") => AuditFormat::Csv,
            Some(_) => return Err(ApiError::invalid("`format` must be json or csv.")),
        };
        let filter = AuditFilter {
            since: parse_time(self.since, "since")?,
            until: parse_time(self.until, "until")?,
            actor: search_text(self.actor, "actor")?,
            target: search_text(self.target, "target")?,
            directory: search_text(self.directory, "directory")?,
            action: word(self.operation, "operation")?,
            outcome,
            result_code: word(self.result_code, "result_code")?,
            request_id: word(self.request_id, "request_id")?,
            before_id: self.before,
            limit: limit(self.limit, DEFAULT_PAGE, MAX_PAGE)?,
        };
        Ok((filter, format))
    }
}

/// The entries `filter` selects, newest first.
pub async fn entries(
    state: &AppState,
    filter: &AuditFilter,
) -> Result<Vec<AuditEntryView>, ApiError> {
    Ok(state
        .store
        .audit_entries(filter)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(view)
        .collect())
}

/// `entries` as a downloadable CSV or JSON file.
pub fn export(entries: Vec<AuditEntryView>, format: AuditFormat, limit: u32) -> Response {
    match format {
        AuditFormat::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"writeback-audit.csv\"",
                ),
            ],
            to_csv(&entries),
        )
            .into_response(),
        AuditFormat::Json => Json(AuditPage {
            next_before: next_before(&entries, limit),
            entries,
        })
        .into_response(),
    }
}

/// Where the next page starts: the oldest entry of a full page, none after a short one.
pub fn next_before(entries: &[AuditEntryView], limit: u32) -> Option<i64> {
    (entries.len() == limit as usize)
        .then(|| entries.last().map(|entry| entry.id))
        .flatten()
}

fn parse_time(text: Option<String>, what: &str) -> Result<Option<UnixMillis>, ApiError> {
    let Some(text) = text.filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    if let Ok(millis) = text.parse::<u64>() {
        return Ok(Some(UnixMillis(millis)));
    }
    let time = humantime::parse_rfc3339_weak(&text).map_err(|_| {
        ApiError::invalid(format!(
            "`{what}` must be Unix milliseconds or an RFC 3339 time such as 2026-11-22T08:00:00Z."
        ))
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::invalid(format!("`{what}` is before 1970.")))?;
    Ok(Some(UnixMillis(since_epoch.as_millis() as u64)))
}

fn word(text: Option<String>, what: &str) -> Result<Option<String>, ApiError> {
    match search_text(text, what)? {
        Some(word)
            if !word
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_') =>
        {
            Err(ApiError::invalid(format!(
                "`{what}` must be a code such as reset_password."
            )))
        }
        other => Ok(other),
    }
}

fn view(entry: AuditEntry) -> AuditEntryView {
    let AuditEvent {
        at,
        actor,
        action,
        directory,
        target,
        request_id,
        result_code,
        detail,
        origin,
    } = entry.event;
    AuditEntryView {
        id: entry.id,
        at,
        actor,
        action,
        directory,
        target,
        request_id,
        outcome: if result_code == "success" {
            AuditOutcomeView::Success
        } else {
            AuditOutcomeView::Failure
        },
        result_code,
        detail,
        origin,
    }
}

/// One CSV field (RFC 4180), with a leading `'` on text a spreadsheet would run as a formula.
fn csv_field(text: &str, out: &mut String) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = formula || text.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for character in text.chars() {
        if character == '"' {
            out.push('"');
        }
        out.push(character);
    }
    if quoted {
        out.push('"');
    }
}

pub fn to_csv(entries: &[AuditEntryView]) -> String {
    let mut out = String::from(
        "id,time,actor,operation,directory,target,request_id,outcome,result_code,detail,origin\r\n",
    );
    for entry in entries {
        let time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.at.0),
        )
        .to_string();
        let outcome = match entry.outcome {
            AuditOutcomeView::Success => "success",
            AuditOutcomeView::Failure => "failure",
        };
        let fields = [
            entry.id.to_string(),
            time,
            entry.actor.clone(),
            entry.action.clone(),
            entry.directory.clone().unwrap_or_default(),
            entry.target.clone().unwrap_or_default(),
            entry.request_id.clone().unwrap_or_default(),
            outcome.to_owned(),
            entry.result_code.clone(),
            entry.detail.clone().unwrap_or_default(),
            entry.origin.clone().unwrap_or_default(),
        ];
        for (index, field) in fields.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            csv_field(field, &mut out);
        }
        out.push_str("\r\n");
    }
    out
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery), responses((status = 200, description = "Entries, newest first (JSON), or the same as a CSV file with `format=csv`.", content((AuditPage = "application/json"), (String = "text/csv"))), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn list_audit(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    request: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (filter, format) = query(request)?.filter()?;
    let entries = entries(&state, &filter).await?;
    Ok(export(entries, format, filter.limit))
}

#[utoipa::path(get, path = "/api/v1/settings/audit", tag = "audit", security(("bearer" = [])), responses((status = 200, description = "The retention setting.", body = AuditSettings), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn audit_settings(
    State(state): State<AppState>,
    _signed_in: SignedIn,
) -> Result<Json<AuditSettings>, ApiError> {
    audit_retention::settings(&state.store)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

#[utoipa::path(put, path = "/api/v1/settings/audit", tag = "audit", security(("bearer" = [])), request_body = AuditSettings, responses((status = 200, description = "Stored and applied.", body = AuditSettings), (status = 400, description = "The request is not valid.", body = ErrorResponse), (status = 401, description = "Not signed in, or the session expired.", body = ErrorResponse)))]
pub async fn update_audit_settings(
    State(state): State<AppState>,
    signed_in: SignedIn,
    JsonBody(settings): JsonBody<AuditSettings>,
) -> Result<Json<AuditSettings>, ApiError> {
    apply_audit_settings(&state, &signed_in, settings)
        .await
        .map(Json)
}

/// Stores new retention settings for `signed_in`, audits the change and applies it at once.
pub async fn apply_audit_settings(
    state: &AppState,
    signed_in: &SignedIn,
    settings: AuditSettings,
) -> Result<AuditSettings, ApiError> {
    if let Some(days) = settings.retention_days
        && !(1..=MAX_RETENTION_DAYS).contains(&days)
    {
        return Err(ApiError::invalid(format!(
            "`retention_days` must be between 1 and {MAX_RETENTION_DAYS}, or null to keep entries for ever."
        )));
    }
    let now = UnixMillis::now();
    let before = audit_retention::settings(&state.store)
        .await
        .map_err(ApiError::internal)?;
    let value = serde_json::to_string(&settings).map_err(ApiError::internal)?;
    state
        .store
        .put_setting(AUDIT_SETTINGS, &value, now)
        .await
        .map_err(ApiError::internal)?;
    let describe =
        |days: Option<u32>| days.map_or("for ever".to_owned(), |days| format!("{days} days"));
    state
        .store
        .append_audit(&AuditEvent {
            at: now,
            actor: signed_in.administrator.email.clone(),
            action: "update_settings".into(),
            directory: None,
            target: Some(AUDIT_SETTINGS.into()),
            request_id: None,
            result_code: "success".into(),
            detail: Some(format!(
                "audit retention: {} -> {}",
                describe(before.retention_days),
                describe(settings.retention_days)
            )),
            origin: signed_in.origin.clone(),
        })
        .await
        .map_err(ApiError::internal)?;
    audit_retention::prune(&state.store, now)
        .await
        .map_err(ApiError::internal)?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_defuses_formulas() {
        let entry = AuditEntryView {
            id: 7,
            at: UnixMillis(1_700_000_000_000),
            actor: "admin@corp.test".into(),
            action: "reset_password".into(),
            directory: Some("corp".into()),
            target: Some("=HYPERLINK(\"x\")".into()),
            request_id: None,
            outcome: AuditOutcomeView::Failure,
            result_code: "policy_violation".into(),
            detail: Some("too short, \"really\"\nsecond line".into()),
            origin: Some("127.0.0.1".into()),
        };
        let csv = to_csv(&[entry]);
        let row = csv.lines().nth(1).unwrap();
        assert!(row.starts_with("7,2023-11-14T22:13:20.000Z,admin@corp.test,reset_password,corp,"));
        assert!(csv.contains(r#""'=HYPERLINK(""x"")""#), "{csv}");
        assert!(
            csv.contains("\"too short, \"\"really\"\"\nsecond line\""),
            "{csv}"
        );
        assert!(csv.ends_with(",127.0.0.1\r\n"));
    }

    #[test]
    fn times_are_millis_or_rfc3339() {
        assert_eq!(
            parse_time(Some("1500".into()), "since").unwrap(),
            Some(UnixMillis(1500))
        );
        assert_eq!(
            parse_time(Some("1970-01-01T00:00:02Z".into()), "since").unwrap(),
            Some(UnixMillis(2000))
        );
        assert_eq!(parse_time(Some(String::new()), "since").unwrap(), None);
        let error = parse_time(Some("yesterday".into()), "since").unwrap_err();
        assert!(error.message.contains("RFC 3339"));
    }
}
