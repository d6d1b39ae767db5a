//! Reading the audit log: the filters a caller may ask for, validated, and the entries as views
//! and as CSV. There is deliberately no way to change or delete an entry.

use serde::Deserialize;
use writeback_proto::api::{AuditEntryView, AuditOutcomeView};
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditEntry, AuditEvent, AuditFilter, AuditOutcome, StoreError};

use crate::service::directory::{InputError, limit, search_text};
use crate::service::state::AppState;

const DEFAULT_PAGE: u32 = 100;
/// An export may be large, but one answer stays bounded; page with `before` past this.
const MAX_PAGE: u32 = 50_000;

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
    pub fn filter(self) -> Result<(AuditFilter, AuditFormat), InputError> {
        let outcome = match self.outcome.as_deref() {
            None | Some("") => None,
            Some("success") => Some(AuditOutcome::Success),
            Some("failure") => Some(AuditOutcome::Failure),
            Some(_) => {
                return Err(InputError::Invalid(
                    "`outcome` must be success or failure.".into(),
                ));
            }
        };
        let format = match self.format.as_deref() {
            None | Some("" | "json") => AuditFormat::Json,
            Some("csv") => AuditFormat::Csv,
            Some(_) => return Err(InputError::Invalid("`format` must be json or csv.".into())),
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
) -> Result<Vec<AuditEntryView>, StoreError> {
    Ok(state
        .store
        .audit_entries(filter)
        .await?
        .into_iter()
        .map(view)
        .collect())
}

/// Where the next page starts: the oldest entry of a full page, none after a short one.
pub fn next_before(entries: &[AuditEntryView], limit: u32) -> Option<i64> {
    (entries.len() == limit as usize)
        .then(|| entries.last().map(|entry| entry.id))
        .flatten()
}

fn parse_time(text: Option<String>, what: &str) -> Result<Option<UnixMillis>, InputError> {
    let Some(text) = text.filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    if let Ok(millis) = text.parse::<u64>() {
        return Ok(Some(UnixMillis(millis)));
    }
    let time = humantime::parse_rfc3339_weak(&text).map_err(|_| {
        InputError::Invalid(format!(
            "`{what}` must be Unix milliseconds or an RFC 3339 time such as 2026-11-22T08:00:00Z."
        ))
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| InputError::Invalid(format!("`{what}` is before 1970.")))?;
    Ok(Some(UnixMillis(since_epoch.as_millis() as u64)))
}

fn word(text: Option<String>, what: &str) -> Result<Option<String>, InputError> {
    match search_text(text, what)? {
        Some(word)
            if !word
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_') =>
        {
            Err(InputError::Invalid(format!(
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
        assert!(error.to_string().contains("RFC 3339"));
    }
}
