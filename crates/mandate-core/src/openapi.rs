//! OpenAPI schemas (feature `openapi`) for the wire types whose serde form
//! the derive cannot describe exactly: internally tagged enums that refuse
//! unknown fields, flattened into a struct. Each variant is a closed
//! object, as serde reads and writes it.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};

use crate::decision::ResourceRef;
use crate::vault::VaultSecret;

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A closed object whose `tag` member is `value`, with string `fields`
/// (all required) and `extra` optional members.
fn variant(
    tag: &str,
    value: &str,
    description: &str,
    fields: &[&str],
    extra: &[(&str, RefOr<Schema>)],
) -> ObjectBuilder {
    let mut o = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property(tag, string().enum_values(Some([value])))
        .required(tag)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for f in fields {
        o = o.property(*f, string()).required(*f);
    }
    for (name, schema) in extra {
        o = o.property(*name, schema.clone());
    }
    o
}

impl utoipa::PartialSchema for ResourceRef {
    fn schema() -> RefOr<Schema> {
        let tags: RefOr<Schema> = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("The resource's attributes (Cedar entity tags)."))
            .additional_properties(Some(AdditionalProperties::RefOr(string().into())))
            .into();
        let extra = [("tags", tags)];
        OneOfBuilder::new()
            .description(Some(
                "The resource of a request: its Cedar entity type (`type`), the members that \
                 make its id, and its attributes (`tags`).",
            ))
            .item(variant(
                "type",
                "Resource",
                "A generic resource: `Resource::\"{id}\"`.",
                &["id"],
                &extra,
            ))
            .item(variant(
                "type",
                "Route",
                "A gateway route: `Route::\"{route}{path}\"`.",
                &["route", "path"],
                &extra,
            ))
            .item(variant(
                "type",
                "Tool",
                "An MCP tool: `Tool::\"{server}/{tool}\"`.",
                &["server", "tool"],
                &extra,
            ))
            .item(variant(
                "type",
                "McpResource",
                "An MCP resource: `McpResource::\"{server}/{uri}\"`.",
                &["server", "uri"],
                &extra,
            ))
            .item(variant(
                "type",
                "Prompt",
                "An MCP prompt: `Prompt::\"{server}/{prompt}\"`.",
                &["server", "prompt"],
                &extra,
            ))
            .item(variant(
                "type",
                "McpServer",
                "An MCP server as a whole: `McpServer::\"{server}\"`.",
                &["server"],
                &extra,
            ))
            .into()
    }
}

impl utoipa::ToSchema for ResourceRef {}

impl utoipa::PartialSchema for VaultSecret {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some("How a vaulted secret is presented to the upstream."))
            .item(variant(
                "kind",
                "basic",
                "`Authorization: Basic base64(username:password)`.",
                &["username", "password"],
                &[],
            ))
            .item(variant(
                "kind",
                "bearer",
                "`Authorization: Bearer <token>`.",
                &["token"],
                &[],
            ))
            .item(variant(
                "kind",
                "header",
                "`<name>: <value>` (e.g. an API key header).",
                &["name", "value"],
                &[],
            ))
            .into()
    }
}

impl utoipa::ToSchema for VaultSecret {}
