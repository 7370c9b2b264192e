//! `POST /v1/decide`: the decision for an external enforcement point, and
//! the glue every front door shares around the enforcement pipeline
//! (`mandate_enforce`): the approval URL, which is HTTP's.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use mandate_core::wire::{DecideRequest, DecideResponse};
use mandate_core::{Decision, Mission, Outcome, ResourceRef, Trust};
use mandate_enforce::{Call, Permit, Who, denial};
use mandate_store::MissionSnapshot;
use tracing::Instrument as _;

use super::extract::{ApiJson, Presented, PresentedToken, check_presented_with};
use super::free_text;
use super::openapi::{Always, JsonBody, Unauthorized};
use crate::metrics::{Door, Stage};
use crate::problem::Problem;
use crate::state::AppState;

/// Decides whether the agent holding `credential` may do `action` on
/// `resource` now. The caller is an enforcement point authenticated with an
/// API token; the decision comes back as data (HTTP 200), with a stable
/// reason code for every denial. Any error on the way denies.
#[utoipa::path(
    post,
    path = "/v1/decide",
    operation_id = "decide",
    tag = "decisions",
    security(("api_token" = [])),
    request_body = DecideRequest,
    responses(
        (status = 200, description = "The decision, with its reason code (a denial is an answer, not an error).", body = DecideResponse),
        Always, Unauthorized, JsonBody,
    ),
)]
pub(super) async fn decide(
    State(s): State<AppState>,
    token: PresentedToken,
    ApiJson(req): ApiJson<DecideRequest>,
) -> Result<Json<DecideResponse>, Problem> {
    let span = tracing::debug_span!("decide_request");
    Ok(Json(decide_inner(&s, &token, &req).instrument(span).await?))
}

async fn decide_inner(
    s: &AppState,
    token: &PresentedToken,
    req: &DecideRequest,
) -> Result<DecideResponse, Problem> {
    // 1. The credential: signature and issuer, then the mission's state,
    //    then time, with the mission read beside the API token (one round
    //    trip on PostgreSQL, ADR 0033). Nothing is acted on before the
    //    token resolves to a principal, and the credential's check writes
    //    nothing.
    let at = Instant::now();
    let (caller, presented) = check_presented_with(s, token, &req.credential)
        .instrument(tracing::debug_span!("verify"))
        .await?;
    s.0.metrics.stage(Door::Decide, Stage::Verify, at.elapsed());
    // INVARIANT: the decision is durable in the audit log before anyone
    // sees it; if it cannot be recorded, no decision is given.
    let mut extra = serde_json::Map::new();
    extra.insert(
        "enforcement_point".into(),
        caller.principal.name.as_str().into(),
    );
    let DecideRequest {
        credential: _,
        action,
        resource,
        context,
        justification,
        required_trust,
    } = req;
    let justification = free_text("justification", justification.clone(), 1_000)?;
    let (claims, mission) = match presented {
        Presented::Valid { claims, mission } => (claims, *mission),
        Presented::Refused { error, claims } => {
            let resp = denial(error.code(), error.to_string(), None);
            let who = claims.as_ref().map(Who::of);
            s.0.enforcer
                .record_decision(action, resource, context, &resp, who.as_ref(), extra)
                .await?;
            s.0.metrics
                .decision(Door::Decide, resp.decision, &resp.code);
            return Ok(resp);
        }
    };
    let call = Call {
        action,
        resource,
        context,
        justification,
        required: required_trust.unwrap_or(Trust::Signed),
        attestation: None,
        arguments: None,
        // The enforcement point answers for the request's freshness; this
        // call is authenticated by its API token, not a mission signature.
        claim: None,
    };
    // The enforcement point forwards; here nothing is.
    let (resp, _permit) = enforce(
        s,
        Door::Decide,
        &caller.principal.name.to_string(),
        &mission,
        &call,
        &Who::of(&claims),
        extra,
        (),
    )
    .await?;
    Ok(resp)
}

/// Runs a call through the enforcement pipeline (decided, counted and
/// durably recorded there) and completes its answer for HTTP: an
/// escalation gets the URL to wait on (a new approval request is announced
/// by [`crate::approval_notices::spawn_announcer`]). `request` comes back inside
/// the [`Permit`] only for an Allow. Counted in the metrics under `door`:
/// the decision, its stages, and a refusal for an error on the way.
#[expect(
    clippy::too_many_arguments,
    reason = "the call, its front door, who made it and what would be forwarded"
)]
pub(crate) async fn enforce<T>(
    s: &AppState,
    door: Door,
    by: &str,
    mission: &MissionSnapshot,
    call: &Call<'_>,
    who: &Who,
    extra: serde_json::Map<String, serde_json::Value>,
    request: T,
) -> Result<(DecideResponse, Option<Permit<T>>), Problem> {
    let metrics = &s.0.metrics;
    let decided = match s
        .0
        .enforcer
        .decide(by, mission, call, who, extra, request)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            // Refused all the same (a replayed signature is recorded as
            // such; nothing else on this path is).
            let p = Problem::from(e);
            metrics.decision(door, Decision::Deny, p.code);
            return Err(p);
        }
    };
    metrics.decision(door, decided.response.decision, &decided.response.code);
    metrics.stage(door, Stage::Decide, decided.timings.decide);
    metrics.stage(door, Stage::Record, decided.timings.record);
    let mut resp = decided.response;
    if let Some(approval) = &resp.approval_id {
        resp.approval_url = Some(crate::approval_notices::poll_url(s, approval));
    }
    Ok((resp, decided.permit))
}

/// What each of `items` would get now, with no effect (see
/// [`mandate_enforce::Enforcer::preview`]).
pub(crate) async fn preview(
    s: &AppState,
    mission: &Mission,
    required: Trust,
    items: &[(String, ResourceRef)],
) -> Result<Vec<Outcome>, Problem> {
    Ok(s.0.enforcer.preview(mission, required, items).await?)
}

/// Records a refusal that came before any decision, of a caller whose
/// credential is authentic (see
/// [`mandate_enforce::Enforcer::record_refusal`]).
pub(crate) async fn record_refusal(
    s: &AppState,
    door: Door,
    resource: &ResourceRef,
    claims: &mandate_core::MissionClaims,
    code: &str,
    detail: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), Problem> {
    s.0.enforcer
        .record_refusal(resource, claims, code, detail, extra)
        .await?;
    s.0.metrics.decision(door, Decision::Deny, code);
    Ok(())
}
