//! The audit log as a download: a CSV file or a JSON page, for the API and the console alike.

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use writeback_proto::api::{AuditEntryView, AuditPage};

use crate::service::audit_log::{AuditFormat, next_before, to_csv};

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
