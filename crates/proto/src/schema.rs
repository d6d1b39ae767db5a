//! OpenAPI schemas of the types that serialize by hand (identifiers as text, times as numbers):
//! the cloud's OpenAPI document describes them from here, so the document and the wire format
//! live side by side. Every other API type derives its schema.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::{AgentId, DirectoryName, RequestId};
use crate::sync::{DirSyncCookie, ObjectAnchor};
use crate::time::UnixMillis;

fn text(description: &str, pattern: Option<&str>, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .examples([example])
        .into()
}

macro_rules! schema {
    ($type:ty, $schema:expr) => {
        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $type {}
    };
}

const HEX_32: &str = "^[0-9a-f]{32}$";

schema!(
    RequestId,
    text(
        "Names one operation end to end; also what the audit log records it under.",
        Some(HEX_32),
        "5b0c3f7e9a2d4c1b8e6f0a9d7c3b2e1f"
    )
);
schema!(
    AgentId,
    text(
        "Names one registered agent.",
        Some(HEX_32),
        "0f3a6c9e2b5d8f1a4c7e0b3d6f9a2c5e"
    )
);
schema!(
    DirectoryName,
    text(
        "A directory (AD domain) as the cloud knows it.",
        Some("^[a-z0-9][a-z0-9-]{0,62}$"),
        "corp"
    )
);
schema!(
    ObjectAnchor,
    text(
        "The object's objectGUID, which survives renames and moves.",
        Some("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
        "289fd784-910b-475e-bec1-632a48fc7292"
    )
);
schema!(
    DirSyncCookie,
    text(
        "The domain controller's opaque DirSync state, base64.",
        None,
        "TVNEUwMAAAA="
    )
);
schema!(
    UnixMillis,
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .description(Some("Milliseconds since 1970-01-01T00:00:00Z."))
        .examples([1_795_000_000_000_u64])
        .into()
);
