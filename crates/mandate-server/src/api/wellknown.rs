use axum::Json;
use axum::extract::State;
use mandate_core::wire::Configuration;
use mandate_core::{CREDENTIAL_TYP, Jwks};

use crate::state::AppState;

pub(super) async fn healthz(
    State(s): State<AppState>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let mut v = serde_json::json!({ "status": "ok" });
    let mut status = axum::http::StatusCode::OK;
    if !s.0.enforcer.audit_log().healthy() {
        // Every decision is refused: a restart reads the log's head again.
        status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        v["status"] = "failing".into();
        v["audit"] = "an audit commit failed; every decision is refused until a restart".into();
    }
    if !s.0.durable {
        v["durable"] = false.into();
        v["warning"] = "unsafe non-durable benchmark mode: a crash loses answered decisions".into();
    }
    if !s.0.mcp_servers.is_empty() {
        // Open MCP sessions and requests in flight through them.
        let (sessions, in_flight) = s.0.mcp.counts();
        v["mcp"] = serde_json::json!({ "sessions": sessions, "in_flight": in_flight });
    }
    (status, Json(v))
}

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
        credential_signing_alg_values_supported: vec!["EdDSA".into()],
        dpop_signing_alg_values_supported: vec!["EdDSA".into()],
        mission_key_types_supported: vec!["Ed25519".into()],
        credential_ttl_seconds: s.0.credential_ttl_secs,
    })
}

pub(super) async fn jwks(State(s): State<AppState>) -> Json<Jwks> {
    Json(s.0.jwks.clone())
}
