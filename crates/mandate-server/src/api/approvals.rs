//! `/v1/approvals…`: what escalated calls wait for, and the humans who
//! decide them.
//!
//! Only principals (API tokens) decide, and only those entitled: the
//! approvers the escalating policy named, or else the mission's principal.
//! An agent, which holds only a mission credential, can read its own
//! mission's requests (to wait on them) and never decide one.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use mandate_core::wire::{ApprovalView, ApproveRequest, DenyRequest};
use mandate_core::{GrantId, GrantScope, ResourceRef, Role, pattern_policy};
use mandate_store::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, NewGrant, Principal, Resolution,
};
use serde::Deserialize;

use super::extract::{ApiJson, Caller, MissionCaller};
use super::free_text;
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use crate::approval_notices::{announce, view};
use crate::problem::Problem;
use crate::state::AppState;

/// Longest a long-poll waits.
const MAX_WAIT_SECS: u64 = 60;
/// Most requests one list returns.
const MAX_LIST: u32 = 500;

/// Who reads an approval: a principal, or the agent of its mission.
pub(super) enum Reader {
    Principal(Caller),
    Agent(Box<MissionCaller>),
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let dpop = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("DPoP "));
        if dpop {
            Ok(Self::Agent(Box::new(
                MissionCaller::from_request_parts(parts, state).await?,
            )))
        } else {
            Ok(Self::Principal(
                Caller::from_request_parts(parts, state).await?,
            ))
        }
    }
}

/// Whether a principal may see a request: admins, the mission's
/// principal, and its approvers.
pub(crate) fn may_see(p: &Principal, r: &ApprovalRecord) -> bool {
    p.role == Role::Admin || r.principal == p.name || r.may_be_decided_by(&p.name)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// `pending` (default), `approved`, `denied`, `expired` or `all`.
    status: Option<String>,
    /// Only this mission's requests.
    #[param(value_type = Option<mandate_core::MissionId>)]
    mission: Option<String>,
    /// Only requests the caller may decide (default: true).
    mine: Option<bool>,
    /// At most this many (default 100, at most 500).
    limit: Option<u32>,
}

/// `GET /v1/approvals`: by default, the pending requests the caller may
/// decide ("what waits for me").
#[utoipa::path(
    get,
    path = "/v1/approvals",
    operation_id = "list_approvals",
    tag = "approvals",
    security(("api_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "The approval requests.", body = Vec<ApprovalView>), Always, Unauthorized),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ApprovalView>>, Problem> {
    let status = match q.status.as_deref().unwrap_or("pending") {
        "all" => None,
        other => Some(ApprovalStatus::parse(other).ok_or_else(|| {
            Problem::bad_request(
                "invalid_request",
                format!("unknown status `{other}` (pending, approved, denied, expired or all)"),
            )
        })?),
    };
    let mission = q
        .mission
        .map(mandate_core::MissionId::try_from)
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let mine = q.mine.unwrap_or(true);
    let records = approvals_for(&s, &caller.principal, status, mission, mine, limit).await?;
    let out = records.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(out))
}

/// The requests a principal sees: with `mine`, those it may decide;
/// else those it may see (all, for an admin). The one place these rules
/// live: `GET /v1/approvals` and the console's inbox both ask here.
pub(crate) async fn approvals_for(
    s: &AppState,
    principal: &Principal,
    status: Option<ApprovalStatus>,
    mission: Option<mandate_core::MissionId>,
    mine: bool,
    limit: u32,
) -> Result<Vec<ApprovalRecord>, Problem> {
    let me = principal.name.to_string();
    let admin = principal.role == Role::Admin;
    Ok(s.0
        .store
        .approvals(&ApprovalFilter {
            status,
            mission,
            decider: mine.then(|| me.clone()),
            viewer: (!mine && !admin).then_some(me),
            limit,
        })
        .await?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ShowQuery {
    /// Wait up to this many seconds (at most 60) for a pending request to
    /// be decided.
    wait: Option<u64>,
}

/// `GET /v1/approvals/{id}[?wait=N]`: one request; with `wait`, a
/// long-poll that returns as soon as the request is decided or expires.
#[utoipa::path(
    get,
    path = "/v1/approvals/{id}",
    operation_id = "show_approval",
    tag = "approvals",
    security(("api_token" = []), ("mission_credential" = [], "dpop_proof" = [])),
    params(("id" = String, Path, description = "The approval request's id (`apr_…`)."), ShowQuery),
    responses((status = 200, description = "The request.", body = ApprovalView), Always, Unauthorized, NotFound),
)]
pub(super) async fn show(
    State(s): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<ApprovalView>, Problem> {
    let not_found = || Problem::not_found("no such approval request");
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before the first read, so a decision in between wakes us.
    let mut changed = s.0.approvals_changed.subscribe();
    loop {
        let r = s.0.store.approval(&id).await?.ok_or_else(not_found)?;
        let visible = match &reader {
            Reader::Principal(c) => may_see(&c.principal, &r),
            Reader::Agent(a) => a.mission.body.id == r.mission,
        };
        if !visible {
            // Do not confirm that someone else's request exists.
            return Err(not_found());
        }
        let expired = r.status == ApprovalStatus::Pending && r.expires_at <= s.0.clock.now();
        if r.status != ApprovalStatus::Pending || expired {
            let mut v = view(&r)?;
            if expired {
                // The sweeper has not marked it yet; it is expired all the same.
                v.status = ApprovalStatus::Expired.as_str().to_owned();
            }
            return Ok(Json(v));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Json(view(&r)?));
        }
        // Sleep until this request changes (or the deadline). A lagging
        // receiver re-reads: it may have missed this one.
        let woke = tokio::time::timeout(deadline - now, async {
            loop {
                match changed.recv().await {
                    Ok(changed_id)
                        if changed_id == id || changed_id == crate::changes::EVERY_APPROVAL =>
                    {
                        return true;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                }
            }
        })
        .await;
        if !matches!(woke, Ok(true)) {
            return Ok(Json(view(&r)?));
        }
    }
}

/// Loads a request the caller is entitled to decide, still pending.
pub(crate) async fn decidable(
    s: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<ApprovalRecord, Problem> {
    let r =
        s.0.store
            .approval(id)
            .await?
            .filter(|r| may_see(principal, r))
            .ok_or_else(|| Problem::not_found("no such approval request"))?;
    if !r.may_be_decided_by(&principal.name) {
        let who = if r.approvers.is_empty() {
            format!("the mission's principal, `{}`", r.principal)
        } else {
            r.approvers.join(", ")
        };
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "not_an_approver",
            format!("only {who} may decide this request"),
        ));
    }
    if r.status != ApprovalStatus::Pending && r.status != ApprovalStatus::Expired {
        return Err(mandate_store::ApprovalError::AlreadyDecided(r.status.as_str()).into());
    }
    let now = s.0.clock.now();
    // A decision on an ended mission's request would apply to nothing:
    // refused before it is recorded (the store checks again as it applies
    // one, for a mission that ends in between).
    let live =
        s.0.store
            .mission(&r.mission)
            .await?
            .is_some_and(|m| m.state_at(now).0 == mandate_core::MissionState::Active);
    if let Some(e) = r.lapsed(live, now) {
        return Err(e.into());
    }
    Ok(r)
}

/// The grant an approval creates, as the approver narrowed it.
pub(crate) fn grant_for(
    s: &AppState,
    r: &ApprovalRecord,
    req: &ApproveRequest,
) -> Result<NewGrant, Problem> {
    let bad = |m: String| Problem::bad_request("invalid_request", m);
    let scope = req.scope.unwrap_or(GrantScope::Once);
    if r.step_up && scope != GrantScope::Once {
        return Err(Problem::bad_request(
            "step_up_requires_once",
            "this call must be approved on its own every time: only `once` may be granted",
        ));
    }
    let now = s.0.clock.now();
    let (policy, digest, max_uses) = match scope {
        GrantScope::Once => {
            if req.max_uses.is_some() || req.expires_in_secs.is_some() {
                return Err(bad(
                    "`once` is one use of this call; max uses and expiry apply to `mission` and `pattern`".into(),
                ));
            }
            (String::new(), Some(r.request_digest.clone()), Some(1))
        }
        GrantScope::Mission => (String::new(), Some(r.request_digest.clone()), req.max_uses),
        GrantScope::Pattern => {
            let resource: ResourceRef =
                serde_json::from_str(&r.resource).map_err(|_| Problem::internal())?;
            let prefix = req.resource_prefix.as_deref().unwrap_or("");
            if prefix.is_empty() {
                return Err(bad(
                    "a pattern needs a resource prefix (`resource_prefix`): say what it covers"
                        .into(),
                ));
            }
            if prefix.chars().any(char::is_control) || prefix.len() > 1_000 {
                return Err(bad(
                    "the resource prefix must be printable and at most 1,000 bytes".into(),
                ));
            }
            let policy = pattern_policy(&r.action, &resource, prefix).map_err(bad)?;
            // It must compile as a grant, or it would break every decision
            // of the mission.
            mandate_core::GrantSet::compile([("check", policy.as_str())]).map_err(|d| {
                bad(format!(
                    "the pattern does not make a valid grant: {}",
                    d.message
                ))
            })?;
            (policy, None, req.max_uses)
        }
    };
    if scope != GrantScope::Pattern && req.resource_prefix.is_some() {
        return Err(bad(
            "a resource prefix applies to `pattern` grants only".into()
        ));
    }
    if max_uses == Some(0) {
        return Err(bad("max uses must be at least 1".into()));
    }
    let expires_at = match req.expires_in_secs {
        Some(0) => return Err(bad("the expiry must be at least 1 second".into())),
        Some(secs) => Some(now.plus(secs)),
        None => None,
    };
    Ok(NewGrant {
        id: GrantId::generate(s.0.rng.as_ref())
            .map_err(|_| Problem::internal())?
            .to_string(),
        scope,
        policy,
        request_digest: digest,
        max_uses,
        expires_at,
    })
}

/// What every audit record about an approval request names.
pub(crate) fn subject(r: &ApprovalRecord) -> serde_json::Value {
    serde_json::json!({
        "approval": r.id,
        "mission": r.mission.as_str(),
        "mission_s256": r.mission_s256,
        "principal": r.principal.as_str(),
        "agent": r.agent.as_str(),
        "action": r.action,
        "resource": serde_json::from_str::<serde_json::Value>(&r.resource).unwrap_or_default(),
        "request_digest": r.request_digest,
    })
}

/// Records that a decided approval could not be applied (the mission
/// ended meanwhile, say), so the log never claims a grant that does not
/// exist without saying so.
async fn not_applied(s: &AppState, r: &ApprovalRecord, e: &Problem) {
    let mut body = subject(r);
    if let Some(o) = body.as_object_mut() {
        o.insert("code".into(), e.code.into());
        o.insert("detail".into(), e.detail.clone().into());
    }
    let _ = s.audit("approval.not_applied", body).await;
}

/// Records a decision about `r` (durably), then stores it. If storing
/// fails, records that too (`approval.not_applied`) and refuses.
async fn record_then_resolve(
    s: &AppState,
    r: &ApprovalRecord,
    kind: &'static str,
    by: &str,
    reason: &str,
    extra: serde_json::Map<String, serde_json::Value>,
    resolution: &Resolution,
) -> Result<(ApprovalRecord, Vec<mandate_store::MemoryDeleted>), Problem> {
    let mut body = subject(r);
    if let Some(o) = body.as_object_mut() {
        o.insert("by".into(), by.into());
        o.insert("reason".into(), reason.into());
        o.extend(extra);
    }
    s.audit(kind, body).await?;
    match s
        .0
        .store
        .resolve_approval_forgetting(&r.id, by, reason, resolution, s.0.clock.now())
        .await
    {
        Ok(d) => Ok(d),
        Err(e) => {
            let p = Problem::from(e);
            not_applied(s, r, &p).await;
            Err(p)
        }
    }
}

/// Records a refused attempt to decide approval request `id` (who tried,
/// which request, why), then answers the refusal.
///
/// Who tried: a principal by API token, or an agent whose live mission
/// credential comes with a proof of its mission key (as when an agent tries
/// to approve its own escalation). Those are recorded every time: they are
/// accountable. An attempt nobody can be held to (no token, a bad one, a
/// credential without its key's proof) is recorded once per request and
/// kind of attempt, and only on a request that exists, so it cannot be a
/// way to fill the log.
async fn refused(
    s: &AppState,
    attempt: &'static str,
    id: &str,
    caller: Option<&Caller>,
    headers: &axum::http::HeaderMap,
    p: Problem,
) -> Problem {
    // Nothing can be recorded while the log refuses records.
    if p.code == "audit_unavailable" {
        return p;
    }
    let valid_id = id.parse::<mandate_core::ApprovalId>().is_ok();
    let request = if valid_id {
        s.0.store.approval(id).await.ok().flatten()
    } else {
        None
    };
    let agent = match caller {
        Some(_) => None,
        None => presented_agent(s, headers, attempt, id).await,
    };
    let known = caller.is_some() || agent.is_some();
    if !known && (request.is_none() || !s.first_anonymous_refusal(id, attempt)) {
        return p;
    }
    let mut body = request.as_ref().map_or_else(
        || serde_json::json!({ "approval": if valid_id { id } else { "(not an approval id)" } }),
        subject,
    );
    if let Some(o) = body.as_object_mut() {
        o.insert("attempt".into(), attempt.into());
        o.insert("code".into(), p.code.into());
        o.insert("detail".into(), p.detail.clone().into());
        match (caller, &agent) {
            (Some(c), _) => {
                o.insert("by".into(), c.principal.name.as_str().into());
            }
            (None, Some(claims)) => {
                o.insert(
                    "by_agent".into(),
                    serde_json::json!({
                        "agent": claims.act.sub.as_str(),
                        "mission": claims.mission_id.as_str(),
                        "principal": claims.sub.as_str(),
                        "credential": claims.jti,
                    }),
                );
            }
            (None, None) => {
                // Unidentified: recorded once for this request.
                o.insert("by".into(), serde_json::Value::Null);
            }
        }
    }
    tracing::warn!(approval = %id, attempt, code = p.code, "approval attempt refused");
    if let Err(e) = s.audit("approval.refused", body).await {
        return e;
    }
    p
}

/// An attempt to decide approval request `id` (`kind`: `approve` or
/// `deny`): `act` runs once the caller and the body are known, and any
/// refusal, theirs or its own, is recorded by [`refused`].
async fn attempt<R>(
    s: &AppState,
    kind: &'static str,
    id: &str,
    headers: &axum::http::HeaderMap,
    caller: Result<Caller, Problem>,
    req: Result<ApiJson<R>, Problem>,
    act: impl AsyncFnOnce(&Caller, R) -> Result<Json<ApprovalView>, Problem>,
) -> Result<Json<ApprovalView>, Problem> {
    let out = match (&caller, req) {
        (Ok(c), Ok(ApiJson(req))) => act(c, req).await,
        (Err(p), _) => Err(p.clone()),
        (_, Err(p)) => Err(p),
    };
    match out {
        Ok(v) => Ok(v),
        Err(p) => Err(refused(s, kind, id, caller.as_ref().ok(), headers, p).await),
    }
}

/// The agent behind a presented mission credential, if it is live (its
/// mission active, the credential unexpired and unrevoked) and the request
/// carries a `DPoP` proof of the mission key bound into it.
async fn presented_agent(
    s: &AppState,
    headers: &axum::http::HeaderMap,
    attempt: &str,
    id: &str,
) -> Option<mandate_core::MissionClaims> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("DPoP "))?
        .trim();
    let claims = match super::extract::check_presented(s, token).await.ok()? {
        super::extract::Presented::Valid { claims, .. } => claims,
        super::extract::Presented::Refused { .. } => return None,
    };
    let path = format!("/v1/approvals/{id}/{attempt}");
    let proof = super::extract::verify_request_proof(
        s,
        headers,
        &axum::http::Method::POST,
        &path,
        Some(token),
    )
    .ok()?;
    (proof.jkt == claims.cnf.jkt).then_some(claims)
}

/// `POST /v1/approvals/{id}/approve`: creates the grant the approver chose.
/// Every refused attempt is recorded ([`refused`]).
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/approve",
    operation_id = "approve",
    tag = "approvals",
    security(("api_token" = [])),
    params(("id" = String, Path, description = "The approval request's id (`apr_…`).")),
    request_body = ApproveRequest,
    responses(
        (status = 200, description = "Approved; the grant is made.", body = ApprovalView),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn approve(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    caller: Result<Caller, Problem>,
    Path(id): Path<String>,
    req: Result<ApiJson<ApproveRequest>, Problem>,
) -> Result<Json<ApprovalView>, Problem> {
    let act = async |c: &Caller, r| approve_as(&s, c, &id, r).await;
    attempt(&s, "approve", &id, &headers, caller, req, act).await
}

async fn approve_as(
    s: &AppState,
    caller: &Caller,
    id: &str,
    req: ApproveRequest,
) -> Result<Json<ApprovalView>, Problem> {
    approve_by(s, &caller.principal, id, req, serde_json::Map::new())
        .await
        .map(Json)
}

/// Approves as `principal` (by API token, or in the console with a
/// passkey assertion, which `evidence` carries into the audit record).
pub(crate) async fn approve_by(
    s: &AppState,
    principal: &Principal,
    id: &str,
    req: ApproveRequest,
    evidence: serde_json::Map<String, serde_json::Value>,
) -> Result<ApprovalView, Problem> {
    let _one_at_a_time = s.0.approvals_lock.lock().await;
    let r = decidable(s, principal, id).await?;
    let grant = grant_for(s, &r, &req)?;
    let reason = free_text("reason", req.reason.clone(), 500)?;
    let by = principal.name.to_string();
    // INVARIANT: the approval is durable in the audit log before the grant
    // exists.
    let mut extra = evidence;
    extra.insert("grant".into(), grant.id.clone().into());
    extra.insert("scope".into(), grant.scope.as_str().into());
    extra.insert("max_uses".into(), grant.max_uses.into());
    extra.insert("expires_at".into(), grant.expires_at.map(|t| t.0).into());
    extra.insert("resource_prefix".into(), req.resource_prefix.clone().into());
    extra.insert("step_up".into(), r.step_up.into());
    if !grant.policy.is_empty() {
        extra.insert("policy".into(), grant.policy.clone().into());
    }
    let (decided, _) = record_then_resolve(
        s,
        &r,
        "approval.approved",
        &by,
        &reason,
        extra,
        &Resolution::Approve(grant),
    )
    .await?;
    tracing::info!(approval = %id, by = %by, grant = ?decided.grant, "approved");
    announce(s, "approval.approved", &decided).await;
    view(&decided)
}

/// `POST /v1/approvals/{id}/deny`: refuses, and optionally ends the mission.
/// Every refused attempt is recorded ([`refused`]).
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/deny",
    operation_id = "deny",
    tag = "approvals",
    security(("api_token" = [])),
    params(("id" = String, Path, description = "The approval request's id (`apr_…`).")),
    request_body = DenyRequest,
    responses(
        (status = 200, description = "Denied.", body = ApprovalView),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn deny(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    caller: Result<Caller, Problem>,
    Path(id): Path<String>,
    req: Result<ApiJson<DenyRequest>, Problem>,
) -> Result<Json<ApprovalView>, Problem> {
    let act = async |c: &Caller, r| deny_as(&s, c, &id, r).await;
    attempt(&s, "deny", &id, &headers, caller, req, act).await
}

async fn deny_as(
    s: &AppState,
    caller: &Caller,
    id: &str,
    req: DenyRequest,
) -> Result<Json<ApprovalView>, Problem> {
    deny_by(s, &caller.principal, id, req, "api")
        .await
        .map(Json)
}

/// Denies as `principal`; `via` (`api` or `console`) goes in the record.
pub(crate) async fn deny_by(
    s: &AppState,
    principal: &Principal,
    id: &str,
    req: DenyRequest,
    via: &'static str,
) -> Result<ApprovalView, Problem> {
    let _one_at_a_time = s.0.approvals_lock.lock().await;
    let r = decidable(s, principal, id).await?;
    let reason = free_text("reason", req.reason.clone(), 500)?;
    let by = principal.name.to_string();
    let mut extra = serde_json::Map::new();
    if via != "api" {
        extra.insert("via".into(), via.into());
    }
    extra.insert("end_mission".into(), req.end_mission.into());
    let (decided, forgotten) = record_then_resolve(
        s,
        &r,
        "approval.denied",
        &by,
        &reason,
        extra,
        &Resolution::Deny {
            end_mission: req.end_mission,
        },
    )
    .await?;
    if req.end_mission {
        s.audit(
            "mission.ended",
            serde_json::json!({
                "mission": r.mission.as_str(),
                "mission_s256": r.mission_s256,
                "by": &by,
                "reason": "revoked",
                "approval": r.id,
            }),
        )
        .await?;
        super::memory::record_deleted(s, &forgotten, "revoked").await?;
    }
    tracing::info!(approval = %id, by = %by, end_mission = req.end_mission, "denied");
    announce(s, "approval.denied", &decided).await;
    view(&decided)
}
