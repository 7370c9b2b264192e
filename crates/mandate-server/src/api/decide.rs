//! `POST /v1/decide`: the decision for an external enforcement point.

use axum::Json;
use axum::extract::State;
use mandate_core::wire::{DecideRequest, DecideResponse};
use mandate_core::{
    ApprovalId, CredentialError, Decision, DecisionRequest, GrantSet, MissionId, Outcome,
    ReasonCode, Trust, UnixTime, decide as engine_decide, state_check,
};
use mandate_store::{Allowance, NewApproval};

/// Most approval requests one mission may have waiting. Past it, further
/// escalations are denied (`approval_queue_full`) instead of flooding the
/// approver.
const MAX_PENDING_APPROVALS: u32 = 100;

use super::extract::{ApiJson, Caller, Presented, check_presented};
use crate::problem::Problem;
use crate::state::AppState;

fn response(o: Outcome, mission: Option<&MissionId>) -> DecideResponse {
    DecideResponse {
        decision: o.decision,
        code: o.code,
        policies: o.policies,
        grant: o.grant,
        approval_id: None,
        mission_id: mission.map(ToString::to_string),
        budget_used: None,
        detail: o.detail,
    }
}

fn refused(e: &CredentialError) -> DecideResponse {
    response(Outcome::deny(e.code(), e.to_string()), None)
}

/// Decides whether the agent holding `credential` may do `action` on
/// `resource` now. The caller is an enforcement point authenticated with an
/// API token; the decision comes back as data (HTTP 200), with a stable
/// reason code for every denial. Any error on the way denies.
pub(super) async fn decide(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DecideRequest>,
) -> Result<Json<DecideResponse>, Problem> {
    let (resp, who) = decide_inner(&s, &caller, &req).await?;
    // INVARIANT: the decision is durable in the audit log before anyone
    // sees it; if it cannot be recorded, no decision is given.
    let context_digest =
        mandate_core::s256(&serde_jcs::to_vec(&req.context).map_err(|_| Problem::internal())?);
    let mut body = serde_json::json!({
        "enforcement_point": caller.principal.name.as_str(),
        "action": &req.action,
        "resource": &req.resource,
        "context_digest": context_digest,
        "decision": resp.decision.as_str(),
        "code": &resp.code,
        "policies": &resp.policies,
        "grant": &resp.grant,
        "approval_id": &resp.approval_id,
        "budget_used": resp.budget_used,
    });
    if let (Some(w), Some(obj)) = (who, body.as_object_mut()) {
        obj.insert("principal".into(), w.principal.into());
        obj.insert("agent".into(), w.agent.into());
        obj.insert("mission".into(), w.mission.into());
        obj.insert("mission_s256".into(), w.mission_s256.into());
        obj.insert("credential".into(), w.jti.into());
        obj.insert("jkt".into(), w.jkt.into());
    }
    s.audit("decision", body).await?;
    Ok(Json(resp))
}

/// Who a decision was about, once the credential's signature checked out.
struct Who {
    principal: String,
    agent: String,
    mission: String,
    mission_s256: String,
    jti: String,
    jkt: String,
}

impl Who {
    fn of(c: &mandate_core::MissionClaims) -> Self {
        Self {
            principal: c.sub.to_string(),
            agent: c.act.sub.to_string(),
            mission: c.mission_id.to_string(),
            mission_s256: c.mission_s256.clone(),
            jti: c.jti.clone(),
            jkt: c.cnf.jkt.to_string(),
        }
    }
}

async fn decide_inner(
    s: &AppState,
    caller: &Caller,
    req: &DecideRequest,
) -> Result<(DecideResponse, Option<Who>), Problem> {
    let DecideRequest {
        credential,
        action,
        resource,
        context,
    } = req;
    let now = s.0.clock.now();
    // 1. The credential: signature and issuer, then the mission's state,
    //    then time.
    let (claims, mission) = match check_presented(s, credential).await? {
        Presented::Valid { claims, mission } => (claims, *mission),
        Presented::Refused { error, claims } => {
            return Ok((refused(&error), claims.as_ref().map(Who::of)));
        }
    };
    let who = Who::of(&claims);
    let id = &mission.body.id;
    // 2. Mission state and budget.
    let used = s.0.store.budget_used(id).await?;
    if let Err(o) = state_check(&mission, now, used) {
        return Ok((response(o, Some(id)), Some(who)));
    }
    // 3. Policy: the organisation's, this mission's, its live grants.
    let org = s.org()?;
    let compiled = match s.mission_policies(&mission) {
        Ok(c) => c,
        Err(p) => {
            return Ok((
                response(Outcome::deny(ReasonCode::POLICY_ERROR, p.detail), Some(id)),
                Some(who),
            ));
        }
    };
    let grant_records = s.0.store.live_grants(id, now).await?;
    let grants = match GrantSet::compile(
        grant_records
            .iter()
            .map(|g| (g.id.as_str(), g.policy.as_str())),
    ) {
        Ok(g) => g,
        Err(d) => {
            return Ok((
                response(
                    Outcome::deny(ReasonCode::POLICY_ERROR, d.to_string()),
                    Some(id),
                ),
                Some(who),
            ));
        }
    };
    let outcome = engine_decide(
        &org.loaded.policies,
        &compiled,
        &grants,
        &DecisionRequest {
            mission: &mission,
            budget_used: used,
            action,
            resource,
            context,
            trust: Trust::Signed,
            required: Trust::Signed,
            now,
        },
    );
    let mut resp = response(outcome.clone(), Some(id));
    match outcome.decision {
        Decision::Allow => {
            // 4. Budget (and the grant's uses) are counted per allowed
            //    call, atomically; if either ran out meanwhile, deny.
            let grant = outcome
                .grant
                .as_deref()
                .and_then(|g| g.strip_prefix("grant/"));
            match s
                .0
                .store
                .consume_allowance(id, mission.body.budget.requests, grant, now)
                .await?
            {
                Allowance::Counted(n) => resp.budget_used = Some(n),
                Allowance::BudgetExhausted => {
                    resp = response(
                        Outcome::deny(
                            ReasonCode::BUDGET_EXHAUSTED,
                            "the mission's request budget is used up",
                        ),
                        Some(id),
                    );
                }
                Allowance::GrantUnavailable => {
                    resp = response(
                        Outcome::deny(
                            ReasonCode::POLICY_ERROR,
                            "the grant that allowed this is no longer live",
                        ),
                        Some(id),
                    );
                }
            }
        }
        Decision::Escalate => {
            match open_approval(
                s,
                id,
                action,
                resource,
                context,
                &outcome,
                now,
                mission.expires_at(),
            )
            .await?
            {
                Some(approval) => resp.approval_id = Some(approval),
                None => {
                    resp = response(
                        Outcome::deny(
                            ReasonCode::APPROVAL_QUEUE_FULL,
                            format!(
                                "the mission already has {MAX_PENDING_APPROVALS} requests waiting for approval"
                            ),
                        ),
                        Some(id),
                    );
                }
            }
        }
        Decision::Deny => {}
    }
    tracing::info!(
        mission = %id,
        by = %caller.principal.name,
        action = %action,
        decision = resp.decision.as_str(),
        code = %resp.code,
        "decided"
    );
    Ok((resp, Some(who)))
}

/// Records the escalated request (or joins the identical pending one);
/// `None` when the mission's approval queue is full.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of one request"
)]
async fn open_approval(
    s: &AppState,
    mission: &MissionId,
    action: &str,
    resource: &mandate_core::ResourceRef,
    context: &serde_json::Map<String, serde_json::Value>,
    outcome: &Outcome,
    now: UnixTime,
    mission_end: UnixTime,
) -> Result<Option<String>, Problem> {
    let digest = |v: &serde_json::Value| -> Result<String, Problem> {
        let bytes = serde_jcs::to_vec(v).map_err(|_| Problem::internal())?;
        Ok(mandate_core::s256(&bytes))
    };
    let resource_json = serde_json::to_value(resource).map_err(|_| Problem::internal())?;
    let context_json = serde_json::Value::Object(context.clone());
    let request_digest = digest(
        &serde_json::json!({ "action": action, "resource": resource_json, "context": context_json }),
    )?;
    let approval = NewApproval {
        id: ApprovalId::generate(s.0.rng.as_ref())
            .map_err(|_| Problem::internal())?
            .to_string(),
        mission: mission.clone(),
        request_digest,
        action: action.to_owned(),
        resource: resource_json.to_string(),
        context: String::from_utf8(
            serde_jcs::to_vec(&context_json).map_err(|_| Problem::internal())?,
        )
        .map_err(|_| Problem::internal())?,
        context_digest: digest(&context_json)?,
        reason_code: outcome.code.clone(),
        policies: serde_json::to_string(&outcome.policies).map_err(|_| Problem::internal())?,
        created_at: now,
        expires_at: now.plus(s.0.approval_ttl_secs).min(mission_end),
    };
    let Some((id, joined)) =
        s.0.store
            .open_approval(&approval, MAX_PENDING_APPROVALS)
            .await?
    else {
        tracing::warn!(mission = %mission, "approval queue full; escalation denied");
        return Ok(None);
    };
    tracing::info!(mission = %mission, approval = %id, joined, "approval requested");
    Ok(Some(id))
}
