//! Reading the audit log: the filters a caller may ask for, validated, and the entries as views
//! and as CSV. There is deliberately no way to change or delete an entry.

use writeback_proto::api::{AuditEntryView, AuditOutcomeView, AuditQuery};
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditEntry, AuditEvent, AuditFilter, AuditOutcome, StoreError};

use crate::service::directory::{InputError, limit, search_text};
use crate::service::state::AppState;

const DEFAULT_PAGE: u32 = 100;
/// An export may be large, but one answer stays bounded; page with `before` past this.
const MAX_PAGE: u32 = 50_000;

/// The format an audit query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    Json,
    Csv,
}

/// The store filter and format `query` asks for, or why it is not valid.
pub fn filter(query: AuditQuery) -> Result<(AuditFilter, AuditFormat), InputError> {
    let outcome = match query.outcome.as_deref() {
        None | Some("") => None,
        Some("success") => Some(AuditOutcome::Success),
        Some("failure") => Some(AuditOutcome::Failure),
        Some(_) => {
            return Err(InputError::Invalid(
                "`outcome` must be success or failure.".into(),
            ));
        }
    };
    let format = match query.format.as_deref() {
        None | Some("" | "json") => AuditFormat::Json,
        Some("csv") => AuditFormat::Csv,
        Some(_) => return Err(InputError::Invalid("`format` must be json or csv.".into())),
    };
    let filter = AuditFilter {
        since: parse_time(query.since, "since")?,
        until: parse_time(query.until, "until")?,
        actor: search_text(query.actor, "actor")?,
        target: search_text(query.target, "target")?,
        directory: search_text(query.directory, "directory")?,
        action: word(query.operation, "operation")?,
        outcome,
        result_code: word(query.result_code, "result_code")?,
        request_id: word(query.request_id, "request_id")?,
        before_id: query.before,
        limit: limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?,
    };
    Ok((filter, format))
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
    let millis = if text.len() <= 15 && text.bytes().all(|byte| byte.is_ascii_digit()) {
        text.parse::<u64>().ok()
    } else {
        rfc3339_millis(&text)
    };
    millis.map(|millis| Some(UnixMillis(millis))).ok_or_else(|| {
        InputError::Invalid(format!(
            "`{what}` must be Unix milliseconds (up to 15 digits) or an RFC 3339 time such as 2026-11-22T08:00:00Z."
        ))
    })
}

/// An RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z` or `±HH:MM`, `T` and `Z` in
/// either case) as Unix milliseconds; a time before 1970 is 1970, before every entry.
fn rfc3339_millis(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|(index, separator)| bytes.get(*index) != Some(separator))
        || !matches!(bytes.get(10), Some(b'T' | b't'))
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &bytes[19..];
    let mut fraction_millis = 0;
    if let Some((b'.', after)) = rest.split_first() {
        let digits = after
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        for (place, digit) in after[..digits.min(3)].iter().enumerate() {
            fraction_millis += i64::from(digit - b'0') * [100, 10, 1][place];
        }
        rest = &after[digits..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |tens: &u8, ones: &u8| -> Option<i64> {
                (tens.is_ascii_digit() && ones.is_ascii_digit())
                    .then(|| i64::from(tens - b'0') * 10 + i64::from(ones - b'0'))
            };
            let (hours, minutes) = (two(h1, h2)?, two(m1, m2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(u64::try_from(seconds * 1000 + fraction_millis).unwrap_or(0))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
        trace,
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
        // Written by this cloud; an entry it cannot read shows no trace rather than failing.
        trace: trace.and_then(|text| serde_json::from_str(&text).ok()),
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
            trace: None,
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
        let at = |text: &str| parse_time(Some(text.into()), "until").ok().flatten();
        assert_eq!(
            at("2026-11-22T08:00:00Z"),
            Some(UnixMillis(1_795_334_400_000))
        );
        assert_eq!(
            at("2026-11-22t09:30:00.250+01:30"),
            Some(UnixMillis(1_795_334_400_250))
        );
        assert_eq!(
            at("2024-02-29T00:00:00Z"),
            Some(UnixMillis(1_709_164_800_000))
        );
        assert_eq!(at("1960-01-01T00:00:00Z"), Some(UnixMillis(0)));
        for refused in [
            "2023-02-29T00:00:00Z",
            "2026-11-22 08:00:00Z",
            "2026-11-22T08:00:00",
            "2026-11-22T24:00:00Z",
            "2026-11-22T08:00:00.Z",
            "2026-11-22T08:00:00+1:00",
            "1234567890123456",
            "+1500",
        ] {
            assert_eq!(at(refused), None, "{refused}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_rfc3339_time_reads_back_as_its_milliseconds(millis in 0u64..253_402_300_799_000) {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
            let text = humantime::format_rfc3339_millis(time).to_string();
            proptest::prop_assert_eq!(rfc3339_millis(&text), Some(millis));
        }

        #[test]
        fn any_text_is_a_time_or_a_refusal(text in "\\PC{0,40}") {
            let _ = parse_time(Some(text), "since");
        }
    }
}
