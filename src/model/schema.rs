//! OpenAPI schemas of the model types that serialize by hand (as strings),
//! so the API document says what their JSON looks like.

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use super::{EventKind, Mac, Timestamp};

fn string(description: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .examples([serde_json::Value::from(example)])
}

impl utoipa::PartialSchema for Mac {
    fn schema() -> RefOr<Schema> {
        string(
            "A MAC address, lowercase and colon-separated (aa-bb-… and bare hex are accepted as input)",
            "52:54:00:12:34:56",
        )
        .into()
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        string("RFC 3339, UTC, milliseconds", "2025-01-31T12:00:00.000Z")
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

impl utoipa::PartialSchema for EventKind {
    fn schema() -> RefOr<Schema> {
        string("What happened", "dhcp.ack")
            .enum_values(Some(EventKind::ALL.iter().map(|k| k.as_str())))
            .into()
    }
}

// Named as the types (utoipa's default name: the type's, without its path).
impl utoipa::ToSchema for Mac {}
impl utoipa::ToSchema for Timestamp {}
impl utoipa::ToSchema for EventKind {}
