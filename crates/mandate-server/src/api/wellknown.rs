use axum::Json;
use axum::extract::State;
use mandate_core::wire::Configuration;
use mandate_core::{CREDENTIAL_TYP, Jwks};
use serde::Serialize;

use super::openapi::{Always, Edge};
use crate::problem::Problem;
use crate::state::AppState;

/// `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// `ok`, or `failing` once an audit commit failed.
    status: &'static str,
    /// Why it is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    audit: Option<&'static str>,
    /// `false` in the unsafe non-durable benchmark mode (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    durable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'static str>,
    /// With MCP servers configured: open sessions and requests in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp: Option<McpCounts>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct McpCounts {
    sessions: usize,
    in_flight: usize,
}

/// Whether the authority can decide: `503` once an audit commit failed
/// (every decision is then refused until a restart).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health",
    tag = "meta",
    responses(
        (status = 200, description = "Up.", body = Health),
        (status = 503, description = "An audit commit failed (`Health`), or too many connections (`Problem`).",
            content((Health = "application/json"), (Problem = "application/problem+json"))),
        Edge,
    ),
)]
pub(super) async fn healthz(State(s): State<AppState>) -> (axum::http::StatusCode, Json<Health>) {
    let mut h = Health {
        status: "ok",
        audit: None,
        durable: None,
        warning: None,
        mcp: None,
    };
    let mut status = axum::http::StatusCode::OK;
    if !s.0.enforcer.audit_log().healthy() {
        // Every decision is refused: a restart reads the log's head again.
        status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        h.status = "failing";
        h.audit = Some("an audit commit failed; every decision is refused until a restart");
    }
    if !s.0.durable {
        h.durable = Some(false);
        h.warning = Some("unsafe non-durable benchmark mode: a crash loses answered decisions");
    }
    if !s.gateways().mcp_servers.is_empty() {
        let (sessions, in_flight) = s.0.mcp.counts();
        h.mcp = Some(McpCounts {
            sessions,
            in_flight,
        });
    }
    (status, Json(h))
}

/// The authority's metadata: issuer, endpoints, algorithms.
#[utoipa::path(
    get,
    path = "/.well-known/mandate-configuration",
    operation_id = "configuration",
    tag = "meta",
    responses((status = 200, description = "The authority's metadata.", body = Configuration), Always),
)]
pub(super) async fn configuration(State(s): State<AppState>) -> Json<Configuration> {
    let iss = &s.0.issuer;
    Json(Configuration {
        issuer: iss.clone(),
        jwks_uri: format!("{iss}/.well-known/jwks.json"),
        missions_endpoint: format!("{iss}/v1/missions"),
        mission_start_endpoint: format!("{iss}/v1/missions/start"),
        revocation_endpoint: format!("{iss}/v1/revocations"),
        introspection_endpoint: format!("{iss}/v1/credentials/introspect"),
        credential_typ: CREDENTIAL_TYP.into(),
        credential_signing_alg_values_supported: vec![s.0.key.alg_name().as_str().into()],
        dpop_signing_alg_values_supported: vec!["EdDSA".into()],
        mission_key_types_supported: vec!["Ed25519".into()],
        credential_ttl_seconds: s.0.credential_ttl_secs,
        decision_endpoint: format!("{iss}/v1/decide"),
        approvals_endpoint: format!("{iss}/v1/approvals"),
        delegation_proposal_endpoint: format!("{iss}/v1/mission/delegations/proposal"),
        delegation_endpoint: format!("{iss}/v1/mission/delegations"),
        audit_endpoint: format!("{iss}/v1/audit"),
        metrics_endpoint: format!("{iss}/metrics"),
        gateway_base: format!("{iss}/gw/"),
        mcp_base: format!("{iss}/mcp/"),
        openapi: format!("{iss}/openapi.json"),
        request_signatures: Some(mandate_core::wire::RequestSignatureRequirements {
            alg: "ed25519".into(),
            components: ["@method", "@authority", "@path", "signature-key"]
                .map(String::from)
                .to_vec(),
            with_query: vec!["@query".into()],
            with_body: vec!["content-digest".into(), "content-type".into()],
            signature_key_scheme: "jwt".into(),
            max_age_seconds: mandate_core::FRESHNESS_WINDOW_SECS,
        }),
        attestation: Some(mandate_core::wire::AttestationParameters {
            audience: s.0.anchors.get().audience.clone(),
            key_audience_prefix: mandate_core::KEY_AUDIENCE_PREFIX.into(),
            evidence_types_supported: vec!["jwt_svid".into(), "launch_statement".into()],
            launch_predicate_type: mandate_core::LAUNCH_PREDICATE_TYPE.into(),
            trust_domains: s.0.attestation.trust_domains.keys().cloned().collect(),
            launchers: s.0.attestation.launchers.keys().cloned().collect(),
        }),
    })
}

/// The authority's public keys (Ed25519, `kid` = RFC 7638 thumbprint).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "meta",
    responses((status = 200, description = "The JWKS.", body = Jwks), Always),
)]
pub(super) async fn jwks(State(s): State<AppState>) -> Json<Jwks> {
    Json(s.0.jwks.clone())
}
