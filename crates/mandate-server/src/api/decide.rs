//! `POST /v1/decide`: the decision for an external enforcement point.

use axum::Json;
use axum::extract::State;
use mandate_core::wire::{DecideRequest, DecideResponse};
use mandate_core::{
    ApprovalId, CredentialError, Decision, DecisionRequest, ExactGrant, GrantScope, GrantSet,
    Mission, MissionId, Outcome, ReasonCode, ResourceKind, ResourceRef, Trust, UnixTime,
    decide as engine_decide, request_digest, state_check,
};
use mandate_store::{Allowance, NewApproval};

/// Most approval requests one mission may have waiting. Past it, further
/// escalations are denied (`approval_queue_full`) instead of flooding the
/// approver.
const MAX_PENDING_APPROVALS: u32 = 100;

use super::extract::{ApiJson, Caller, Presented, check_presented};
use super::free_text;
use crate::problem::Problem;
use crate::state::AppState;

fn response(o: Outcome, mission: Option<&MissionId>) -> DecideResponse {
    DecideResponse {
        decision: o.decision,
        code: o.code,
        policies: o.policies,
        grant: o.grant,
        approval_id: None,
        approval_url: None,
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
    // INVARIANT: the decision is durable in the audit log before anyone
    // sees it; if it cannot be recorded, no decision is given.
    let mut extra = serde_json::Map::new();
    extra.insert(
        "enforcement_point".into(),
        caller.principal.name.as_str().into(),
    );
    Ok(Json(decide_inner(&s, &caller, &req, extra).await?))
}

/// A decision's audit record.
fn decision_body(
    action: &str,
    resource: &ResourceRef,
    context: &serde_json::Map<String, serde_json::Value>,
    resp: &DecideResponse,
    who: Option<&Who>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, Problem> {
    let context_digest =
        mandate_core::s256(&serde_jcs::to_vec(context).map_err(|_| Problem::internal())?);
    let mut body = serde_json::Map::new();
    body.insert("action".into(), action.into());
    body.insert(
        "resource".into(),
        serde_json::to_value(resource).map_err(|_| Problem::internal())?,
    );
    body.insert("context_digest".into(), context_digest.into());
    set_outcome(&mut body, resp);
    body.extend(extra);
    if let Some(w) = who {
        body.insert("principal".into(), w.principal.clone().into());
        body.insert("agent".into(), w.agent.clone().into());
        body.insert("mission".into(), w.mission.clone().into());
        body.insert("mission_s256".into(), w.mission_s256.clone().into());
        body.insert("credential".into(), w.jti.clone().into());
        body.insert("jkt".into(), w.jkt.clone().into());
    }
    Ok(body)
}

/// The outcome's fields of a decision's audit record.
fn set_outcome(body: &mut serde_json::Map<String, serde_json::Value>, resp: &DecideResponse) {
    body.insert("decision".into(), resp.decision.as_str().into());
    body.insert("code".into(), resp.code.clone().into());
    body.insert("policies".into(), resp.policies.clone().into());
    body.insert("grant".into(), resp.grant.clone().into());
    body.insert("approval_id".into(), resp.approval_id.clone().into());
    body.insert("budget_used".into(), resp.budget_used.into());
}

/// Records a decision in the audit log and waits until it is durable.
pub(crate) async fn record_decision(
    s: &AppState,
    action: &str,
    resource: &ResourceRef,
    context: &serde_json::Map<String, serde_json::Value>,
    resp: &DecideResponse,
    who: Option<&Who>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<u64, Problem> {
    let body = decision_body(action, resource, context, resp, who, extra)?;
    s.audit("decision", serde_json::Value::Object(body)).await
}

/// Records a refusal that came before any decision (a signature, a
/// mapping, a malformed message) of a caller whose credential is authentic:
/// a denial with `code` on `resource`, no action, no policies.
pub(crate) async fn record_refusal(
    s: &AppState,
    resource: &ResourceRef,
    claims: &mandate_core::MissionClaims,
    code: &str,
    detail: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), Problem> {
    let resp = response(
        Outcome::deny(code, detail.chars().take(500).collect::<String>()),
        Some(&claims.mission_id),
    );
    record_decision(
        s,
        "-",
        resource,
        &serde_json::Map::new(),
        &resp,
        Some(&Who::of(claims)),
        extra,
    )
    .await?;
    Ok(())
}

/// The right to forward one request: made only here, only for an Allow
/// whose unit of budget (and grant use) was counted. Whoever forwards must
/// hold one.
#[derive(Debug)]
pub(crate) struct Permit(());

/// Who a decision was about, once the credential's signature checked out.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    principal: String,
    agent: String,
    mission: String,
    mission_s256: String,
    jti: String,
    jkt: String,
}

impl Who {
    pub(crate) fn of(c: &mandate_core::MissionClaims) -> Self {
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
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<DecideResponse, Problem> {
    let DecideRequest {
        credential,
        action,
        resource,
        context,
        justification,
        required_trust,
    } = req;
    let justification = free_text("justification", justification.clone(), 1_000)?;
    // 1. The credential: signature and issuer, then the mission's state,
    //    then time.
    let (claims, mission) = match check_presented(s, credential).await? {
        Presented::Valid { claims, mission } => (claims, *mission),
        Presented::Refused { error, claims } => {
            let resp = refused(&error);
            let who = claims.as_ref().map(Who::of);
            record_decision(s, action, resource, context, &resp, who.as_ref(), extra).await?;
            return Ok(resp);
        }
    };
    let call = Call {
        action,
        resource,
        context,
        justification,
        required: required_trust.unwrap_or(Trust::Signed),
        arguments: None,
    };
    // The enforcement point forwards; here nothing is.
    let (resp, _permit) = decide_and_record(
        s,
        &caller.principal.name.to_string(),
        &mission,
        &call,
        &Who::of(&claims),
        extra,
    )
    .await?;
    Ok(resp)
}

/// One call to decide, after its credential checked out.
pub(crate) struct Call<'a> {
    pub action: &'a str,
    pub resource: &'a ResourceRef,
    pub context: &'a serde_json::Map<String, serde_json::Value>,
    /// The agent's stated reason (already checked as free text).
    pub justification: String,
    pub required: Trust,
    /// The call's arguments, shown to approvers (never in notifications)
    /// when policy sees only some of them (an MCP tool call).
    pub arguments: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// Decides a call of an agent whose credential (and, at the gateway,
/// request signature) checked out — mission state and budget, then policy
/// and grants — and records the decision, durably, before returning it.
/// An allowed call is counted (budget, grant use) in the same transaction
/// as its record; an escalated one opens (or joins) its approval request.
/// Returns a [`Permit`] only for an Allow that was counted and recorded.
pub(crate) async fn decide_and_record(
    s: &AppState,
    by: &str,
    mission: &Mission,
    call: &Call<'_>,
    who: &Who,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(DecideResponse, Option<Permit>), Problem> {
    let (resp, permit) = match decide_call(s, mission, call, who, &extra).await? {
        Decided::Recorded(resp, permit) => (resp, permit),
        Decided::Unrecorded(resp) => {
            record_decision(
                s,
                call.action,
                call.resource,
                call.context,
                &resp,
                Some(who),
                extra,
            )
            .await?;
            (resp, None)
        }
    };
    tracing::info!(
        mission = %mission.body.id,
        by = %by,
        action = %call.action,
        decision = resp.decision.as_str(),
        code = %resp.code,
        "decided"
    );
    Ok((resp, permit))
}

/// A decision, and whether it is in the audit log yet.
enum Decided {
    /// Counted and recorded (an Allow, or what counting turned it into).
    Recorded(DecideResponse, Option<Permit>),
    /// Still to be recorded; no effect on the budget.
    Unrecorded(DecideResponse),
}

/// What an allowed call's record says once counting found `a`; `None`
/// when the grant it relied on is gone (nothing is recorded, the call is
/// decided again).
fn settled(allowed: &DecideResponse, a: Allowance) -> Option<DecideResponse> {
    let deny = |o: Outcome| DecideResponse {
        mission_id: allowed.mission_id.clone(),
        ..response(o, None)
    };
    match a {
        Allowance::Counted(n) => Some(DecideResponse {
            budget_used: Some(n),
            ..allowed.clone()
        }),
        Allowance::BudgetExhausted => Some(deny(Outcome::deny(
            ReasonCode::BUDGET_EXHAUSTED,
            "the mission's request budget is used up",
        ))),
        Allowance::MissionEnded => Some(deny(Outcome::deny(
            ReasonCode::MISSION_ENDED,
            "the mission ended",
        ))),
        Allowance::GrantUnavailable => None,
    }
}

async fn decide_call(
    s: &AppState,
    mission: &Mission,
    call: &Call<'_>,
    who: &Who,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<Decided, Problem> {
    let Call {
        action,
        resource,
        context,
        ref justification,
        required,
        arguments,
    } = *call;
    let now = s.0.clock.now();
    let id = &mission.body.id;
    let deny = |code: &str, detail: String| {
        Ok(Decided::Unrecorded(response(
            Outcome::deny(code, detail),
            Some(id),
        )))
    };
    // A route path that parsers could read differently is refused here too,
    // so a grant's path prefix means what it says.
    if let ResourceKind::Route { path, .. } = &resource.kind
        && let Err(e) = crate::routes::check_path(path)
    {
        return deny(ReasonCode::INVALID_REQUEST, e.to_string());
    }
    // Likewise an MCP resource URI or tool name with more than one reading.
    let unclear = match &resource.kind {
        ResourceKind::McpResource { uri, .. } => !crate::mcp::valid_uri(uri),
        ResourceKind::Tool { tool, .. } => !crate::mcp::valid_name(tool),
        ResourceKind::Prompt { prompt, .. } => !crate::mcp::valid_name(prompt),
        _ => false,
    };
    if unclear {
        return deny(
            ReasonCode::INVALID_REQUEST,
            "the MCP resource, tool or prompt name has more than one reading".into(),
        );
    }
    // 2. Mission state and budget (checked again, authoritatively, when an
    //    allowed call is counted).
    let used = s.0.store.budget_used(id).await?;
    if let Err(o) = state_check(mission, now, used) {
        return Ok(Decided::Unrecorded(response(*o, Some(id))));
    }
    // 3. Policy: the organisation's, this mission's, its live grants. A
    //    grant used up by a concurrent call between deciding and counting
    //    means deciding again without it.
    let org = s.org()?;
    let compiled = match s.mission_policies(mission) {
        Ok(c) => c,
        Err(p) => return deny(ReasonCode::POLICY_ERROR, p.detail),
    };
    for _ in 0..3 {
        let grants = match live_grants(s, id, now).await? {
            Ok(g) => g,
            Err(detail) => return deny(ReasonCode::POLICY_ERROR, detail),
        };
        let outcome = engine_decide(
            &org.loaded.policies,
            &compiled,
            &grants,
            &DecisionRequest {
                mission,
                budget_used: used,
                action,
                resource,
                context,
                trust: Trust::Signed,
                required,
                now,
            },
        );
        let mut resp = response(outcome.clone(), Some(id));
        match outcome.decision {
            Decision::Allow => {}
            Decision::Escalate => {
                let ask = Ask {
                    mission,
                    action,
                    resource,
                    context,
                    outcome: &outcome,
                    justification: justification.clone(),
                    arguments,
                    now,
                };
                return Ok(Decided::Unrecorded(match open_approval(s, &ask).await? {
                    Some(approval) => {
                        resp.approval_url = Some(crate::approvals::poll_url(s, &approval));
                        resp.approval_id = Some(approval);
                        resp
                    }
                    None => response(
                        Outcome::deny(
                            ReasonCode::APPROVAL_QUEUE_FULL,
                            format!(
                                "the mission already has {MAX_PENDING_APPROVALS} requests waiting for approval"
                            ),
                        ),
                        Some(id),
                    ),
                }));
            }
            Decision::Deny => return Ok(Decided::Unrecorded(resp)),
        }
        // 4. An allowed call's budget (and grant use) is counted in the
        //    transaction that records its decision: both durable, or
        //    neither, before anything is forwarded.
        let mut body = decision_body(action, resource, context, &resp, Some(who), extra.clone())?;
        let allowed = resp.clone();
        let settle: crate::audit::Settle = Box::new(move |a| {
            let r = settled(&allowed, a)?;
            set_outcome(&mut body, &r);
            Some(serde_json::Value::Object(body))
        });
        let count = crate::audit::Count {
            mission: id.clone(),
            budget: mission.body.budget.requests,
            grant: outcome
                .grant
                .as_deref()
                .and_then(|g| g.strip_prefix("grant/"))
                .map(str::to_owned),
            now,
        };
        let (a, seq) =
            s.0.audit
                .record_counted("decision", now.0, count, settle)
                .await?;
        if let Some(r) = settled(&resp, a) {
            // Only a counted call whose record is durable is forwarded.
            let permit =
                (matches!(a, Allowance::Counted(_)) && seq.is_some()).then_some(Permit(()));
            return Ok(Decided::Recorded(r, permit));
        }
    }
    deny(
        ReasonCode::POLICY_ERROR,
        "the grants of this mission keep changing; retry".into(),
    )
}

/// What each of `items` would get now, with no context, and with no
/// effect: nothing counted, no approval opened, nothing recorded. For
/// listings (the MCP gateway's `tools/list`), never for enforcement: every
/// call is decided on its own. `Err` denies the whole listing.
pub(crate) async fn preview(
    s: &AppState,
    mission: &Mission,
    required: Trust,
    items: &[(String, ResourceRef)],
) -> Result<Vec<Outcome>, Problem> {
    let now = s.0.clock.now();
    let id = &mission.body.id;
    let used = s.0.store.budget_used(id).await?;
    if let Err(o) = state_check(mission, now, used) {
        return Ok(vec![*o; items.len()]);
    }
    let org = s.org()?;
    let denied = |detail: String| Outcome::deny(ReasonCode::POLICY_ERROR, detail);
    let compiled = match s.mission_policies(mission) {
        Ok(c) => c,
        Err(p) => return Ok(vec![denied(p.detail); items.len()]),
    };
    let grants = match live_grants(s, id, now).await? {
        Ok(g) => g,
        Err(detail) => return Ok(vec![denied(detail); items.len()]),
    };
    let context = serde_json::Map::new();
    Ok(items
        .iter()
        .map(|(action, resource)| {
            engine_decide(
                &org.loaded.policies,
                &compiled,
                &grants,
                &DecisionRequest {
                    mission,
                    budget_used: used,
                    action,
                    resource,
                    context: &context,
                    trust: Trust::Signed,
                    required,
                    now,
                },
            )
        })
        .collect())
}

/// The mission's live grants, compiled; `Err` with a reason if one does
/// not compile (the caller denies).
async fn live_grants(
    s: &AppState,
    id: &MissionId,
    now: UnixTime,
) -> Result<Result<GrantSet, String>, Problem> {
    let records = s.0.store.live_grants(id, now).await?;
    let deciders: Vec<(String, String)> = records
        .iter()
        .map(|g| (g.id.clone(), g.created_by.clone()))
        .collect();
    let mut exact = Vec::new();
    let mut patterns = Vec::new();
    for g in &records {
        match (g.scope, &g.request_digest) {
            (GrantScope::Pattern, _) => patterns.push((g.id.as_str(), g.policy.as_str())),
            (scope, Some(d)) => exact.push(ExactGrant {
                id: g.id.clone(),
                request_digest: d.clone(),
                once: scope == GrantScope::Once,
            }),
            (_, None) => return Ok(Err(format!("grant `{}` names no call", g.id))),
        }
    }
    Ok(GrantSet::compile(patterns)
        .map(|set| set.with_exact(exact).with_deciders(deciders))
        .map_err(|d| d.to_string()))
}

/// An escalated call, as the approver will see it.
struct Ask<'a> {
    mission: &'a Mission,
    action: &'a str,
    resource: &'a ResourceRef,
    context: &'a serde_json::Map<String, serde_json::Value>,
    outcome: &'a Outcome,
    justification: String,
    arguments: Option<&'a serde_json::Map<String, serde_json::Value>>,
    now: UnixTime,
}

/// One line saying what the call does, for approvers.
fn summary(ask: &Ask<'_>) -> String {
    let target = match &ask.resource.kind {
        ResourceKind::Resource { id } => format!("`{id}`"),
        ResourceKind::Route { route, path } => format!("route `{route}` path `{path}`"),
        ResourceKind::Tool { server, tool } => format!("tool `{tool}` of MCP server `{server}`"),
        ResourceKind::McpResource { server, uri } => {
            format!("resource `{uri}` of MCP server `{server}`")
        }
        ResourceKind::Prompt { server, prompt } => {
            format!("prompt `{prompt}` of MCP server `{server}`")
        }
    };
    let mut line = format!(
        "agent `{}` wants to `{}` {target}",
        ask.mission.body.agent, ask.action
    );
    if !ask.context.is_empty() {
        line.push_str(" with ");
        line.push_str(&serde_json::Value::Object(ask.context.clone()).to_string());
    }
    // One printable line, bounded.
    let mut out: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if line.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Records the escalated request (or joins the identical pending one);
/// `None` when the mission's approval queue is full. A new request is
/// durable in the audit log before anyone hears of it.
async fn open_approval(s: &AppState, ask: &Ask<'_>) -> Result<Option<String>, Problem> {
    let mission = &ask.mission.body.id;
    let canonical = |v: &serde_json::Value| -> Result<Vec<u8>, Problem> {
        serde_jcs::to_vec(v).map_err(|_| Problem::internal())
    };
    let resource_json = serde_json::to_value(ask.resource).map_err(|_| Problem::internal())?;
    let mut shown = ask.context.clone();
    if let Some(args) = ask.arguments {
        // What the approver decides on: the whole call, bounded.
        let text = serde_json::Value::Object(args.clone()).to_string();
        let value = if text.len() <= 8 * 1024 {
            serde_json::Value::Object(args.clone())
        } else {
            serde_json::json!({ "truncated": true, "bytes": text.len() })
        };
        shown.insert("mcp_arguments".into(), value);
    }
    let context_json = serde_json::Value::Object(shown);
    let request_digest =
        request_digest(ask.action, ask.resource, ask.context).map_err(|_| Problem::internal())?;
    let context = canonical(&context_json)?;
    let approval = NewApproval {
        id: ApprovalId::generate(s.0.rng.as_ref())
            .map_err(|_| Problem::internal())?
            .to_string(),
        mission: mission.clone(),
        request_digest: request_digest.clone(),
        action: ask.action.to_owned(),
        resource: resource_json.to_string(),
        context_digest: mandate_core::s256(&context),
        context: String::from_utf8(context).map_err(|_| Problem::internal())?,
        reason_code: ask.outcome.code.clone(),
        policies: serde_json::to_string(&ask.outcome.policies).map_err(|_| Problem::internal())?,
        justification: ask.justification.clone(),
        summary: summary(ask),
        approvers: ask.outcome.approvers.clone(),
        step_up: ask.outcome.step_up,
        created_at: ask.now,
        expires_at: ask
            .now
            .plus(s.0.approval_ttl_secs)
            .min(ask.mission.expires_at()),
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
    if !joined {
        s.audit(
            "approval.requested",
            serde_json::json!({
                "approval": &id,
                "mission": mission.as_str(),
                "mission_s256": &ask.mission.s256,
                "principal": ask.mission.body.principal.as_str(),
                "agent": ask.mission.body.agent.as_str(),
                "action": ask.action,
                "resource": resource_json,
                "request_digest": request_digest,
                "code": &ask.outcome.code,
                "policies": &ask.outcome.policies,
                "approvers": &approval.approvers,
                "step_up": approval.step_up,
                "justification": &approval.justification,
                "expires_at": approval.expires_at.0,
            }),
        )
        .await?;
        if let Some(r) = s.0.store.approval(&id).await? {
            crate::approvals::announce(s, "approval.requested", &r).await;
        }
    }
    Ok(Some(id))
}
