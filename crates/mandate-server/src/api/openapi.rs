//! The OpenAPI document of the authority API, served at `GET
//! /openapi.json`.
//!
//! It is generated from the code: every handler of the API carries a
//! `#[utoipa::path]` annotation and is routed through
//! [`utoipa_axum::router::OpenApiRouter`] (see [`super::api_routes`]), so a
//! route and its entry in the document are made in one place and cannot
//! drift. The wire types derive their schemas in `mandate-core` (feature
//! `openapi`). The two proxies, `/gw/{route}/…` and `/mcp/{server}`, are
//! not in it: their requests are signed per RFC 9421 and their answers are
//! an upstream's (ADR 0015).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

use crate::problem::Problem;

/// The media type of every refusal.
pub(super) const PROBLEM_JSON: &str = "application/problem+json";

/// The document's frame: what the annotations do not say.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Mandate authority API",
        description = "The HTTP API of a Mandate authority: principals, agents, missions and \
their credentials, decisions, approvals, revocations, the vault, policies and the audit log. \
Every refusal is `application/problem+json` (RFC 9457) with a stable `code` (see \
`docs/api.md`). The gateway (`/gw/{route}/…`) and the MCP gateway (`/mcp/{server}`) are \
served beside this API but are not part of this document: their requests carry RFC 9421 \
signatures by a mission key and their answers are an upstream's (see `docs/gateway.md` and \
`docs/mcp.md`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&SecuritySchemes),
)]
pub(super) struct ApiDoc;

/// The three ways a caller authenticates.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("mdt_…")
                    .description(Some(
                        "A principal's API token: `Authorization: Bearer mdt_…`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "mission_credential",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "An agent's mission credential: `Authorization: DPoP <credential>` (RFC 9449), \
                 always together with a `DPoP` proof by the mission key bound into it.",
            ))),
        );
        components.add_security_scheme(
            "dpop_proof",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "DPoP",
                "A `DPoP` proof (RFC 9449) signed by the mission key, for this method and URL.",
            ))),
        );
    }
}

/// One refusal: a problem document, and on `401` the `WWW-Authenticate`
/// challenge [`Problem`] adds.
fn problem_response(status: u16, description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content);
    if status == 401 {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some("`Bearer, DPoP algs=\"EdDSA\"`"))
                .build(),
        );
    }
    response.build().into()
}

/// Sets of refusals for `responses(…)` of `#[utoipa::path]`: each names
/// the statuses it adds, all answered as [`Problem`]s.
macro_rules! problems {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal,)+ })+) => {
        $(
            $(#[$doc])*
            pub(super) struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                    [$(($status, $description)),+]
                        .into_iter()
                        .map(|(status, d)| (status.to_string(), problem_response(status, d)))
                        .collect()
                }
            }
        )+
    };
}

problems! {
    /// What any request may get, whatever its route: a malformed request
    /// (framing, query, path or body), a head or target too large, an
    /// internal error, or a server that cannot answer now (the audit log
    /// refusing records, connection caps).
    Always {
        400 => "The request is malformed or invalid (see `code`).",
        414 => "The request target is too long.",
        431 => "The request head is too large.",
        500 => "An internal error; see the server log.",
        503 => "Unavailable now: the audit log refuses records, or too many connections.",
    }
    /// [`Always`] without `503`, for `/healthz`, whose `503` says more.
    Edge {
        400 => "The request is malformed or invalid (see `code`).",
        414 => "The request target is too long.",
        431 => "The request head is too large.",
        500 => "An internal error; see the server log.",
    }
    /// A credential is required and was missing or refused.
    Unauthorized {
        401 => "No valid credential (see `code`).",
    }
    /// The caller may not do this.
    Forbidden {
        403 => "The caller may not do this (e.g. it needs the admin role).",
    }
    /// The object named is not there, or not visible to the caller.
    NotFound {
        404 => "Not found, or not visible to the caller.",
    }
    /// The object's state does not allow it.
    Conflict {
        409 => "Conflicts with the current state (see `code`).",
    }
    /// A JSON body that is late, too large, or not JSON.
    JsonBody {
        408 => "The body did not arrive in time (`body_timeout`).",
        413 => "The body is too large.",
        415 => "The body is not `application/json`.",
    }
    /// A policy set that does not validate.
    Unprocessable {
        422 => "The policy set does not validate; `errors` lists every problem.",
    }
}

/// The document, as built by [`super::router`] from the routes it serves.
#[derive(Clone)]
pub(super) struct Document(pub(super) Arc<OpenApi>);

impl Document {
    /// The document as JSON, each unsigned integer with its range:
    /// utoipa names the Rust type in `format` (as `u-int32`, `u-int64`, …)
    /// and leaves the range open, while serde refuses what does not fit.
    /// The range says it in plain JSON Schema.
    fn render(&self) -> Result<String, serde_json::Error> {
        let mut doc = serde_json::to_value(&*self.0)?;
        bound_unsigned(&mut doc);
        serde_json::to_string(&doc)
    }
}

fn bound_unsigned(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            let format = o.get("format").and_then(serde_json::Value::as_str);
            let max = match format.map(|f| f.replace('-', "")).as_deref() {
                Some("uint8") => Some(u64::from(u8::MAX)),
                Some("uint16") => Some(u64::from(u16::MAX)),
                Some("uint32") => Some(u64::from(u32::MAX)),
                Some("uint64") => Some(u64::MAX),
                _ => None,
            };
            if let Some(max) = max {
                o.remove("format");
                o.insert("minimum".into(), 0.into());
                o.insert("maximum".into(), max.into());
            }
            o.values_mut().for_each(bound_unsigned);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(bound_unsigned),
        _ => {}
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object),
        Always,
    ),
)]
pub(super) async fn document(Extension(doc): Extension<Document>) -> Response {
    match doc.render() {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize the OpenAPI document");
            Problem::internal().into_response()
        }
    }
}
