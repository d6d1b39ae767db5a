//! The admin REST API. Every writeback answers synchronously with the directory's own result.

mod administrators;
mod agents;
mod audit;
mod directory;
mod document;
mod extract;
mod self_service;
mod sessions;
mod writeback;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::state::AppState;
use extract::ApiError;

/// Describes the API: everything under `/api/v1`, generated from the handlers' annotations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Writeback admin API",
        description = "Administer Writeback: reset, change and unlock passwords in the on-premises directory with its own synchronous verdict; read the synced users and groups; manage agents; read the audit log and health. Sign in with POST /api/v1/sessions and send the token as `Authorization: Bearer`. Bodies are JSON; errors are `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerSecurity),
    tags(
        (name = "sessions", description = "Administrator sign-in, always with an authenticator code; enrolment of the authenticator."),
        (name = "administrators", description = "Listing, disabling, enabling and deleting administrators, and ending their sessions."),
        (name = "writeback", description = "Password resets, changes and unlocks, answered with the directory's own result."),
        (name = "directory", description = "The synced copy of each directory's users and groups."),
        (name = "health", description = "Each directory's health."),
        (name = "agents", description = "Registering and revoking on-premises agents."),
        (name = "audit", description = "The append-only audit log and its retention."),
        (name = "settings", description = "The self-service policy.")
    )
)]
struct ApiDocument;

#[derive(Debug)]
struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The documented API routes, with their description.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDocument::openapi())
        .routes(routes!(sessions::sign_in))
        .routes(routes!(sessions::begin_enrolment))
        .routes(routes!(sessions::answer_challenge))
        .routes(routes!(sessions::sign_out))
        .routes(routes!(administrators::list_administrators))
        .routes(routes!(administrators::delete_administrator))
        .routes(routes!(administrators::disable_administrator))
        .routes(routes!(administrators::enable_administrator))
        .routes(routes!(administrators::end_administrator_sessions))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::operations_in_flight))
        .routes(routes!(agents::nodes))
        .routes(routes!(agents::revoke_agent))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::audit_settings, audit::update_audit_settings))
        .routes(routes!(
            self_service::self_service_settings,
            self_service::update_self_service_settings
        ))
        .routes(routes!(self_service::clear_self_service_methods))
        .routes(routes!(directory::list_directories))
        .routes(routes!(directory::directory_health))
        .routes(routes!(agents::create_registration_token))
        .routes(routes!(writeback::reset_password))
        .routes(routes!(writeback::change_password))
        .routes(routes!(writeback::unlock))
        .routes(routes!(directory::list_users))
        .routes(routes!(directory::show_user))
        .routes(routes!(directory::list_groups))
        .routes(routes!(directory::sync_status))
        .routes(routes!(directory::request_full_sync))
}

/// The OpenAPI document of the admin API, as served at `/api/v1/openapi.json` and committed as
/// `docs/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The API's routes and its OpenAPI document, for the router to serve.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = api_routes().split_for_parts();
    document::describe_shared_answers(&mut document);
    (router, document)
}

/// Every `/api` route no handler claims.
pub async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such endpoint.").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI fails when the API changes and `docs/openapi.json` does not follow. To accept the
    /// change: `WRITEBACK_UPDATE_OPENAPI=1 cargo test -p writeback-cloud openapi`.
    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let generated = format!("{}\n", openapi_document().to_pretty_json().unwrap());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        if std::env::var_os("WRITEBACK_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not what the code describes; run \
             `WRITEBACK_UPDATE_OPENAPI=1 cargo test -p writeback-cloud openapi` and commit it"
        );
    }

    #[test]
    fn every_operation_but_sign_in_needs_a_session() {
        let document = openapi_document();
        let mut operations = 0;
        for (path, item) in &document.paths.paths {
            for (method, operation) in [
                ("get", &item.get),
                ("post", &item.post),
                ("put", &item.put),
                ("delete", &item.delete),
            ] {
                let Some(operation) = operation else { continue };
                operations += 1;
                let secured = operation
                    .security
                    .as_ref()
                    .is_some_and(|security| !security.is_empty());
                let is_sign_in = path.starts_with("/api/v1/sessions")
                    && path != "/api/v1/sessions/current"
                    && method == "post";
                assert_eq!(secured, !is_sign_in, "{method} {path}");
            }
        }
        assert_eq!(operations, 30);
        let schemas = &document.components.as_ref().unwrap().schemas;
        for name in [
            "ResultCode",
            "OperationResponse",
            "UnixMillis",
            "DirectoryName",
            "ErrorResponse",
        ] {
            assert!(schemas.contains_key(name), "{name} is described");
        }
    }
}
