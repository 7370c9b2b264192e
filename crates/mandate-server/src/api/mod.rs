//! The HTTP API. Handlers parse wire types into domain types, call the
//! store, and render views; errors become problems (see `problem.rs`).

mod agents;
mod approvals;
mod audit;
mod authzen;
mod decide;
mod delegations;
mod extract;
mod gateway;
mod mcp;
mod memory;
mod missions;
mod openapi;
mod policies;
mod principals;
mod revocations;
mod scrape;
mod taint;
mod vault;
mod wellknown;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::any;
use axum::{Extension, Router};
use mandate_core::wire::{AgentView, MissionView, PrincipalView, TokenView};
use mandate_core::{Mission, MissionStatus, UnixTime};
use mandate_store::{Agent, ApiToken, Principal};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::state::AppState;

pub(crate) use agents::{agent_for, agents_for};
pub(crate) use approvals::subject as approval_subject;
pub(crate) use approvals::{
    approvals_for, approve_by, decidable as decidable_by, deny_by, grant_for as check_grant,
};
pub(crate) use audit::{
    explanation as audit_explanation, query as audit_query, verify_live as audit_verify,
};
pub(crate) use delegations::{ancestors_of, tree_for};
pub(crate) use extract::require_admin;
pub(crate) use mcp::sessions_of as mcp_sessions_of;
pub(crate) use missions::{end_by as end_mission_by, mission_for, missions_for};
pub(crate) use principals::principals_for;
pub(crate) use revocations::revoke_by;

/// Largest request body the API accepts.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Default mission lifetime and budget when a request leaves them out.
const DEFAULT_MISSION_TTL_SECS: u64 = 3_600;
const DEFAULT_MISSION_BUDGET: u64 = 1_000;

/// The routes of the authority API, each with its entry in the OpenAPI
/// document: `routes!` registers a handler with axum and its
/// `#[utoipa::path]` with the document in one step.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(openapi::document))
        .routes(routes!(wellknown::healthz))
        .routes(routes!(scrape::metrics))
        .routes(routes!(wellknown::configuration))
        .routes(routes!(wellknown::jwks))
        .routes(routes!(principals::whoami))
        .routes(routes!(principals::create, principals::list))
        .routes(routes!(principals::create_token, principals::list_tokens))
        .routes(routes!(principals::enroll))
        .routes(routes!(agents::register, agents::list))
        .routes(routes!(agents::show))
        .routes(routes!(agents::set_attestation))
        .routes(routes!(missions::create, missions::list))
        .routes(routes!(missions::start))
        .routes(routes!(missions::show))
        .routes(routes!(missions::refresh))
        .routes(routes!(missions::end))
        .routes(routes!(taint::clear))
        .routes(routes!(missions::current))
        .routes(routes!(missions::limits))
        .routes(routes!(missions::introspect))
        .routes(routes!(memory::put, memory::get, memory::delete))
        .routes(routes!(memory::list))
        .routes(routes!(memory::promote))
        .routes(routes!(memory::notes))
        .routes(routes!(memory::note))
        .routes(routes!(mcp::list_sessions))
        .routes(routes!(mcp::end_mission_session))
        .routes(routes!(delegations::propose))
        .routes(routes!(delegations::commit))
        .routes(routes!(delegations::chain))
        .routes(routes!(delegations::tree))
        .routes(routes!(revocations::revoke))
        .routes(routes!(decide::decide))
        .merge(
            // AuthZEN's binding echoes the request's `X-Request-ID`.
            OpenApiRouter::new()
                .routes(routes!(authzen::configuration))
                .routes(routes!(authzen::evaluation))
                .routes(routes!(authzen::evaluations))
                .route_layer(axum::middleware::from_fn(authzen::echo_request_id)),
        )
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::show))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::deny))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::checkpoints))
        .routes(routes!(audit::export))
        .routes(routes!(audit::prune))
        .routes(routes!(audit::explain))
        .routes(routes!(vault::list))
        .routes(routes!(vault::put, vault::delete))
        .routes(routes!(policies::list))
        .routes(routes!(policies::reload))
}

/// All routes of the authority.
pub fn router(state: AppState) -> Router {
    let (api, document) = api_routes().split_for_parts();
    api.fallback(|| async { Problem::no_such_endpoint() })
        .layer(Extension(openapi::Document(Arc::new(document))))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(
            extract::plain_rejections_as_problems,
        ))
        // The gateway reads bodies itself, within each route's limit.
        .route("/gw/{*rest}", any(gateway::handle))
        // So does the MCP gateway, within each server's message limit.
        .route("/mcp/{*rest}", any(mcp::handle))
        .merge(crate::console::router())
        // After every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        // Last, so it wraps every route and both fallbacks: nothing is
        // routed before the framing checks.
        .layer(axum::middleware::from_fn(
            crate::edge::framing::strict_framing,
        ))
        .with_state(state)
}

#[cfg(feature = "unsafe-bench-forwarding-only")]
pub use gateway::serve_forwarding_only;
pub(crate) use mcp::McpSessions;
pub(crate) use scrape::unauthenticated_router as metrics_router;

/// Starts the task that deletes the memory of expired missions.
pub(crate) fn spawn_memory_sweeper(state: AppState) {
    memory::spawn_sweeper(state);
}

/// Starts the task that closes the MCP sessions of ended missions.
pub(crate) fn spawn_mcp_reaper(state: AppState) {
    mcp::spawn_reaper(state);
}

/// Ends the MCP sessions of servers a reload changed or removed, once
/// nothing is in flight on them.
pub(crate) async fn retire_mcp_sessions(state: &AppState) {
    mcp::retire(state).await;
}

/// Runs `f` on a thread of its own with a large stack. Cedar's parser
/// recurses on the shape of its input; mission policies are bounded in size
/// and nesting before parsing, and this keeps a pathological case that
/// slips past those bounds from overflowing a shared runtime thread.
pub(crate) async fn on_large_stack<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    const STACK_BYTES: usize = 256 << 20;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("mandate-policy-parse".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start a policy parsing thread");
            Problem::internal()
        })?;
    rx.await.map_err(|_| Problem::internal())
}

/// Free text from a caller (labels, descriptions, reasons): at most `max`
/// characters and no control characters, so it cannot forge log lines or
/// terminal output.
pub(crate) fn free_text(field: &str, value: Option<String>, max: usize) -> Result<String, Problem> {
    let value = value.unwrap_or_default().trim().to_owned();
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "invalid_request",
            format!("the {field} must be at most {max} printable characters on one line"),
        ));
    }
    Ok(value)
}

fn principal_view(p: &Principal) -> PrincipalView {
    PrincipalView {
        name: p.name.to_string(),
        role: p.role.to_string(),
        created_at: p.created_at.0,
        revoked_at: p.revoked_at.map(|t| t.0),
    }
}

fn token_view(t: &ApiToken) -> TokenView {
    TokenView {
        id: t.id.to_string(),
        principal: t.principal.to_string(),
        label: t.label.clone(),
        created_at: t.created_at.0,
        revoked_at: t.revoked_at.map(|t| t.0),
    }
}

fn agent_view(a: &Agent) -> AgentView {
    AgentView {
        name: a.name.to_string(),
        owner: a.owner.to_string(),
        description: a.description.clone(),
        created_at: a.created_at.0,
        revoked_at: a.revoked_at.map(|t| t.0),
        attestation: a.attestation.clone(),
    }
}

pub(crate) fn mission_view(m: &Mission, now: UnixTime) -> MissionView {
    let (state, ended) = m.state_at(now);
    let started_at = match &m.status {
        MissionStatus::Active { started_at, .. } => Some(started_at.0),
        MissionStatus::Ended { started_at, .. } => started_at.map(|t| t.0),
        MissionStatus::Ready => None,
    };
    MissionView {
        id: m.body.id.to_string(),
        principal: m.body.principal.to_string(),
        agent: m.body.agent.to_string(),
        goal: m.body.goal.clone(),
        policies: m.body.policies.clone(),
        budget: m.body.budget.requests,
        out_of_scope: m.body.out_of_scope,
        created_at: m.body.created_at,
        expires_at: m.body.expires_at,
        mission_s256: m.s256.clone(),
        state,
        started_at,
        ended_at: ended.map(|(_, at)| at.0),
        end_reason: ended.map(|(r, _)| r),
        jkt: m.jkt().map(ToString::to_string),
        attestation_required: m.body.attestation.clone(),
        attestation: m.attestation.clone(),
        taint: m.taint.clone(),
        parent: m.body.parent().map(|p| p.id.to_string()),
        depth: m.body.depth(),
    }
}
