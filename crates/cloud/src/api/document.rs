//! What every operation of the API may answer besides its own results, added to the generated
//! document in one place so that no handler's annotation can forget it: the answers of the
//! extractors every JSON route shares (415, 413, 408, 400), the session check (401), an internal
//! failure (500), and the exact rules of the parameters whose types cannot state them. The API conformance test
//! (`every_api_answer_matches_the_published_openapi_document`) holds the document to this.

use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{AnyOf, KnownFormat, Object, OneOf, Schema, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use writeback_proto::operation::MAX_USER_NAME_CHARS;

/// No control character (Unicode category Cc), as the server's name checks say.
const NO_CONTROL_CHARACTERS: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorResponse")))
                .build(),
        )
        .build()
        .into()
}

/// Adds the shared answers and parameter rules to every operation of `document`.
pub fn describe_shared_answers(document: &mut OpenApi) {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            shared_answers(operation);
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter {
                    parameter_rules(parameter);
                }
            }
        }
    }
}

fn shared_answers(operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    };
    if operation.request_body.is_some() {
        add(
            "415",
            "The body is not JSON: send it with `Content-Type: application/json`.",
        );
        add("413", "The body is larger than the API accepts.");
        add("408", "The body did not arrive in time.");
        add("400", "The request is not valid.");
    }
    if operation
        .security
        .as_ref()
        .is_some_and(|security| !security.is_empty())
    {
        add("401", "Not signed in, or the session expired.");
    }
    add("500", "Writeback failed inside; the cloud's log says why.");
    // A writeback's 404 and 500 are the directory's or the agent's answer (no such user, an
    // internal error there), or the cloud's (no such directory, an internal error here), each
    // in its own shape.
    let writeback = operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|tag| tag == "writeback"));
    if !writeback {
        return;
    }
    for status in ["404", "500"] {
        let Some(RefOr::T(answer)) = operation.responses.responses.get_mut(status) else {
            continue;
        };
        for content in answer.content.values_mut() {
            let RefOr::T(content) = content else {
                continue;
            };
            let mut either = OneOf::new();
            either
                .items
                .push(Ref::from_schema_name("OperationResponse").into());
            either
                .items
                .push(Ref::from_schema_name("ErrorResponse").into());
            content.schema = Some(Schema::OneOf(either).into());
        }
    }
}

fn text(pattern: &str) -> Object {
    let mut text = Object::with_type(Type::String);
    text.pattern = Some(pattern.to_owned());
    text
}

/// The parameters whose rules the handlers' types cannot state: a user in a path (1 to 256
/// characters, none a control character), the idempotency key (32 hexadecimal digits), and the
/// audit log's times (Unix milliseconds, an RFC 3339 time, or empty for none).
fn parameter_rules(parameter: &mut Parameter) {
    let schema = match (&parameter.parameter_in, parameter.name.as_str()) {
        (ParameterIn::Path, "user") => {
            let mut name = text(NO_CONTROL_CHARACTERS);
            name.min_length = Some(1);
            name.max_length = Some(MAX_USER_NAME_CHARS);
            Schema::Object(name)
        }
        (ParameterIn::Header, "Idempotency-Key") => Schema::Object(text("^[0-9A-Fa-f]{32}$")),
        (ParameterIn::Query, "since" | "until") => {
            let mut date_time = Object::with_type(Type::String);
            date_time.format = Some(SchemaFormat::KnownFormat(KnownFormat::DateTime));
            let mut either = AnyOf::new();
            either
                .items
                .push(Schema::Object(text("^[0-9]{0,15}$")).into());
            either.items.push(Schema::Object(date_time).into());
            Schema::AnyOf(either)
        }
        _ => return,
    };
    parameter.schema = Some(schema.into());
}
