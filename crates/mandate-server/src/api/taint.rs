//! Taint (ADR 0021): marking a mission that read untrusted content, and a
//! person clearing it.

use axum::Json;
use axum::extract::State;
use mandate_core::wire::{ClearTaintRequest, MissionView};
use mandate_core::{Mission, MissionId, Taint};

use super::extract::{ApiJson, ApiPath, Caller};
use super::openapi::{Always, JsonBody, NotFound, Unauthorized};
use super::{free_text, mission_view};
use crate::problem::Problem;
use crate::state::AppState;

/// Marks `mission` as having read content labelled `labels` through `via`,
/// before that content reaches the agent: should the mark fail, the answer
/// is not delivered (the caller returns the error instead). Returns
/// whether it added a label.
pub(crate) async fn mark(
    s: &AppState,
    mission: &Mission,
    labels: &[String],
    via: &str,
) -> Result<bool, Problem> {
    if labels.is_empty() {
        return Ok(false);
    }
    // The mission as loaded for this call may be out of date — a person
    // may have cleared its taint while the answer was on its way — so when
    // it says there is nothing to add, the stored taint decides (a point
    // read; the write below happens only when a label is added).
    if !Taint::adds(mission.taint.as_ref(), labels) {
        let stored = s.0.store.mission(&mission.body.id).await?;
        if stored.is_some_and(|m| !Taint::adds(m.taint.as_ref(), labels)) {
            return Ok(false);
        }
    }
    let now = s.0.clock.now();
    if let Some(t) =
        s.0.store
            .mark_taint(&mission.body.id, labels, via, now)
            .await?
    {
        // Decisions below this mission see it tainted from now on.
        s.0.enforcer.forget_ancestor(&mission.s256);
        tracing::info!(mission = %mission.body.id, labels = ?labels, via, "mission tainted");
        s.audit(
            "mission.tainted",
            serde_json::json!({
                "mission": mission.body.id.as_str(), "mission_s256": &mission.s256,
                "principal": mission.body.principal.as_str(), "agent": mission.body.agent.as_str(),
                "labels": labels, "via": via, "taint": t,
            }),
        )
        .await?;
        return Ok(true);
    }
    Ok(false)
}

/// Clears a mission's taint: a person who may manage the mission says they
/// reviewed what it read. Recorded with what was cleared and why.
#[utoipa::path(
    post,
    path = "/v1/missions/{id}/taint/clear",
    operation_id = "clear_taint",
    tag = "missions",
    security(("api_token" = [])),
    params(("id" = MissionId, Path, description = "The mission's id.")),
    request_body = ClearTaintRequest,
    responses(
        (status = 200, description = "Cleared: the mission as it now is.", body = MissionView),
        Always, Unauthorized, NotFound, JsonBody,
    ),
)]
pub(super) async fn clear(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ClearTaintRequest>,
) -> Result<Json<MissionView>, Problem> {
    let id: MissionId = id.parse()?;
    let mission =
        s.0.store
            .mission(&id)
            .await?
            .ok_or_else(|| Problem::not_found("no such mission"))?;
    if !super::missions::may_manage(&s, &caller, &mission).await? {
        return Err(Problem::not_found("no such mission"));
    }
    let reason = free_text("reason", Some(req.reason), 200)?;
    if reason.is_empty() {
        return Err(Problem::bad_request(
            "invalid_request",
            "say what was reviewed (`reason`)",
        ));
    }
    let cleared = s.0.store.clear_taint(&id).await?;
    s.0.enforcer.forget_ancestor(&mission.s256);
    tracing::info!(mission = %id, by = %caller.principal.name, "mission taint cleared");
    s.audit(
        "taint.cleared",
        serde_json::json!({
            "mission": id.as_str(), "mission_s256": &mission.s256,
            "by": caller.principal.name.as_str(), "reason": reason, "cleared": cleared,
        }),
    )
    .await?;
    let now = s.0.clock.now();
    let mission =
        s.0.store
            .mission(&id)
            .await?
            .ok_or_else(|| Problem::not_found("no such mission"))?;
    Ok(Json(mission_view(&mission, now)))
}
