//! OpenID AuthZEN Authorization API 1.0 (ADR 0029, docs/authzen.md): the
//! Access Evaluation and Access Evaluations APIs and the PDP metadata, for
//! enforcement points that already speak AuthZEN.
//!
//! Each evaluation is mapped onto the very call `POST /v1/decide` decides
//! (same credential checks, same enforcement pipeline: names, state,
//! policy, grants, budget, approval request, durable record before the
//! answer) and its answer mapped back: `true` only for an `allow`.
//!
//! ```text
//! subject  {type: mandate_mission | mandate_agent, id, properties.credential}
//!            → the credential, checked; `id` must name its mission / agent
//! action   {name, properties}   → the Cedar action; properties → context
//! resource {type, id, properties} → Resource::"{type}/{id}", properties → tags
//! context  → Cedar context (beside the action's properties)
//! ```

use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::Response;
use mandate_core::wire::{
    ApprovalTask, AuthzenAction, AuthzenConfiguration, AuthzenResource, AuthzenSubject,
    DecideResponse, DecisionContext, EvaluationError, EvaluationRequest, EvaluationResponse,
    EvaluationsRequest, EvaluationsResponse, EvaluationsSemantic, MAX_EVALUATIONS,
};
use mandate_core::{Decision, MissionId, ResourceKind, ResourceRef, Trust};
use mandate_enforce::{Call, Who, denial};
use serde_json::{Map, Value};
use tracing::Instrument as _;

use super::decide::enforce;
use super::extract::{
    ApiJson, Caller, Presented, PresentedToken, check_presented, check_presented_with,
};
use super::free_text;
use super::openapi::{Always, JsonBody, Unauthorized};
use crate::metrics::{Door, Stage};
use crate::problem::Problem;
use crate::state::AppState;

/// The request identifier of AuthZEN's HTTPS binding.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Subject types: who an evaluation is about.
const SUBJECT_MISSION: &str = "mandate_mission";
const SUBJECT_AGENT: &str = "mandate_agent";

/// Answers with the request's `X-Request-ID`, whatever the answer (the
/// binding says the PDP MUST when the PEP sent one).
pub(super) async fn echo_request_id(req: Request, next: Next) -> Response {
    let id = req.headers().get(&REQUEST_ID).cloned();
    let mut resp = next.run(req).await;
    if let Some(id) = id {
        resp.headers_mut().insert(REQUEST_ID, id);
    }
    resp
}

/// The PDP metadata of AuthZEN 1.0: its identifier (the issuer) and the
/// endpoints served here (no search APIs).
#[utoipa::path(
    get,
    path = "/.well-known/authzen-configuration",
    operation_id = "authzen_configuration",
    tag = "authzen",
    responses((status = 200, description = "The PDP metadata.", body = AuthzenConfiguration), Always),
)]
pub(super) async fn configuration(State(s): State<AppState>) -> Json<AuthzenConfiguration> {
    let iss = &s.0.issuer;
    Json(AuthzenConfiguration {
        policy_decision_point: iss.clone(),
        access_evaluation_endpoint: format!("{iss}/access/v1/evaluation"),
        access_evaluations_endpoint: format!("{iss}/access/v1/evaluations"),
    })
}

/// AuthZEN Access Evaluation: may the agent whose mission credential the
/// subject carries do `action` on `resource` now? `true` only when Mandate
/// allows it; a denial or an escalation is `false` with its reason in
/// `context` (an escalation's approval request in `context.task`). The
/// caller is an enforcement point authenticated with its API token.
#[utoipa::path(
    post,
    path = "/access/v1/evaluation",
    operation_id = "authzen_evaluation",
    tag = "authzen",
    security(("api_token" = [])),
    params(("X-Request-ID" = Option<String>, Header, description = "Echoed in the answer.")),
    request_body = EvaluationRequest,
    responses(
        (status = 200, description = "The decision (a denial is an answer, not an error).", body = EvaluationResponse,
            headers(("X-Request-ID" = String, description = "The request's, when it sent one."))),
        Always, Unauthorized, JsonBody,
    ),
)]
pub(super) async fn evaluation(
    State(s): State<AppState>,
    headers: HeaderMap,
    token: PresentedToken,
    ApiJson(req): ApiJson<EvaluationRequest>,
) -> Result<Json<EvaluationResponse>, Problem> {
    let EvaluationRequest {
        subject,
        action,
        resource,
        context,
    } = &req;
    let one = One {
        subject,
        action,
        resource,
        context: context.as_ref(),
    };
    Ok(Json(evaluate_alone(&s, &token, &headers, &one).await?))
}

/// Decides `one`, the request's only evaluation, with the API token
/// resolved and, when the subject carries a credential, that credential
/// checked, the token's read and the mission's made together (one round
/// trip on PostgreSQL, as on `/v1/decide`). A token that is not live is
/// refused (`401`) whatever the credential.
async fn evaluate_alone(
    s: &AppState,
    token: &PresentedToken,
    headers: &HeaderMap,
    one: &One<'_>,
) -> Result<EvaluationResponse, Problem> {
    async {
        let credential = one
            .subject
            .properties
            .as_ref()
            .and_then(|p| p.credential.as_deref());
        let (caller, checked) = match credential {
            None => (token.resolve(s).await?, None),
            Some(credential) => {
                let at = Instant::now();
                let checked = check_presented_with(s, token, credential)
                    .instrument(tracing::debug_span!("verify"))
                    .await;
                s.0.metrics
                    .stage(Door::Authzen, Stage::Verify, at.elapsed());
                let (caller, presented) = checked?;
                (caller, Some(presented))
            }
        };
        evaluate(s, &Asked::new(&caller, headers), one, checked).await
    }
    .instrument(tracing::debug_span!("authzen_request"))
    .await
}

/// AuthZEN Access Evaluations: several evaluations in one request, each
/// decided and recorded on its own, in order, with the top-level
/// `subject`, `action`, `resource` and `context` as defaults.
/// `options.evaluations_semantic` stops after the first `false`
/// (`deny_on_first_deny`) or `true` (`permit_on_first_permit`); an
/// evaluation that fails is `false` with `context.error`.
#[utoipa::path(
    post,
    path = "/access/v1/evaluations",
    operation_id = "authzen_evaluations",
    tag = "authzen",
    security(("api_token" = [])),
    params(("X-Request-ID" = Option<String>, Header, description = "Echoed in the answer.")),
    request_body = EvaluationsRequest,
    responses(
        (status = 200, description = "The decisions, in the order asked.", body = EvaluationsResponse,
            headers(("X-Request-ID" = String, description = "The request's, when it sent one."))),
        Always, Unauthorized, JsonBody,
    ),
)]
pub(super) async fn evaluations(
    State(s): State<AppState>,
    headers: HeaderMap,
    token: PresentedToken,
    ApiJson(req): ApiJson<EvaluationsRequest>,
) -> Result<Json<EvaluationsResponse>, Problem> {
    let EvaluationsRequest {
        subject,
        action,
        resource,
        context,
        evaluations,
        options,
    } = &req;
    let semantic = options
        .as_ref()
        .and_then(|o| o.evaluations_semantic)
        .unwrap_or_default();
    let items = evaluations.as_deref().unwrap_or_default();
    if items.is_empty() {
        // No evaluations: the request is one evaluation (the
        // specification's backwards-compatible reading).
        let lacks = |field: &str| {
            Problem::bad_request(
                "invalid_json",
                format!("the body lacks the field `{field}`"),
            )
        };
        let one = One {
            subject: subject.as_ref().ok_or_else(|| lacks("subject"))?,
            action: action.as_ref().ok_or_else(|| lacks("action"))?,
            resource: resource.as_ref().ok_or_else(|| lacks("resource"))?,
            context: context.as_ref(),
        };
        let r = evaluate_alone(&s, &token, &headers, &one).await?;
        return Ok(Json(EvaluationsResponse {
            decision: Some(r.decision),
            context: r.context,
            evaluations: None,
        }));
    }
    // Several evaluations, each with its own credential: the token once.
    let asked = Asked::new(&token.resolve(&s).await?, &headers);
    let span = tracing::debug_span!("authzen_request");
    if items.len() > MAX_EVALUATIONS {
        return Err(Problem::bad_request(
            "invalid_request",
            format!("at most {MAX_EVALUATIONS} evaluations in one request"),
        ));
    }
    // Every evaluation complete before any is decided: a malformed batch
    // has no effect at all.
    let lacks = |i: usize, field: &str| {
        Problem::bad_request(
            "invalid_json",
            format!("`evaluations[{i}]` lacks the field `{field}` and the body gives no default"),
        )
    };
    let mut ones = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        ones.push(One {
            subject: item
                .subject
                .as_ref()
                .or(subject.as_ref())
                .ok_or_else(|| lacks(i, "subject"))?,
            action: item
                .action
                .as_ref()
                .or(action.as_ref())
                .ok_or_else(|| lacks(i, "action"))?,
            resource: item
                .resource
                .as_ref()
                .or(resource.as_ref())
                .ok_or_else(|| lacks(i, "resource"))?,
            context: item.context.as_ref().or(context.as_ref()),
        });
    }
    let mut out = Vec::with_capacity(ones.len());
    async {
        for one in &ones {
            // Fail closed: an evaluation that could not be decided is
            // `false`, and says why.
            let r = evaluate(&s, &asked, one, None)
                .await
                .unwrap_or_else(|p| failed(&p));
            let stop = match semantic {
                EvaluationsSemantic::ExecuteAll => false,
                EvaluationsSemantic::DenyOnFirstDeny => !r.decision,
                EvaluationsSemantic::PermitOnFirstPermit => r.decision,
            };
            out.push(r);
            if stop {
                break;
            }
        }
    }
    .instrument(span)
    .await;
    Ok(Json(EvaluationsResponse {
        decision: None,
        context: None,
        evaluations: Some(out),
    }))
}

/// Who asks, for the audit record.
struct Asked {
    enforcement_point: String,
    /// The PEP's `X-Request-ID`, when it is printable ASCII of at most
    /// 200 characters (recorded, so its logs and the audit log meet).
    request_id: Option<String>,
}

impl Asked {
    fn new(caller: &Caller, headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .map(str::to_owned);
        Self {
            enforcement_point: caller.principal.name.to_string(),
            request_id,
        }
    }

    fn extra(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        extra.insert(
            "enforcement_point".into(),
            self.enforcement_point.clone().into(),
        );
        extra.insert("front_door".into(), "authzen".into());
        if let Some(id) = &self.request_id {
            extra.insert("request_id".into(), id.clone().into());
        }
        extra
    }
}

/// One evaluation, its defaults applied.
struct One<'a> {
    subject: &'a AuthzenSubject,
    action: &'a AuthzenAction,
    resource: &'a AuthzenResource,
    context: Option<&'a Map<String, Value>>,
}

/// An evaluation's resource and context as Mandate decides them, or why
/// they cannot be (then `resource` has no tags).
struct Mapped {
    resource: ResourceRef,
    context: Map<String, Value>,
    refusal: Option<&'static str>,
}

/// `Resource::"{type}/{id}"` with the properties as tags; the context with
/// the action's properties.
fn map(one: &One<'_>) -> Mapped {
    let AuthzenResource {
        type_,
        id,
        properties,
    } = one.resource;
    let mut refusal = None;
    // INVARIANT: one reading per name: a `/` in the type would let
    // `{a/b, c}` and `{a, b/c}` be the same resource to a policy or a
    // grant's prefix.
    if type_.is_empty() || type_.contains('/') {
        refusal = Some("the resource `type` must be non-empty and contain no `/`");
    }
    let mut tags = std::collections::BTreeMap::new();
    for (k, v) in properties.iter().flatten() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null | Value::Array(_) | Value::Object(_) => {
                refusal = refusal.or(Some(
                    "a resource property is not a string, number or boolean (Mandate decides on Cedar tags)",
                ));
                continue;
            }
        };
        tags.insert(k.clone(), text);
    }
    let mut context = one.context.cloned().unwrap_or_default();
    for (k, v) in one.action.properties.iter().flatten() {
        if context.insert(k.clone(), v.clone()).is_some() {
            refusal = refusal.or(Some(
                "an attribute is set both by `action.properties` and by `context`",
            ));
        }
    }
    if refusal.is_some() {
        tags.clear();
    }
    Mapped {
        resource: ResourceRef {
            kind: ResourceKind::Resource {
                id: format!("{type_}/{id}"),
            },
            tags,
        },
        context,
        refusal,
    }
}

/// Decides one evaluation; a refusal before the pipeline (the subject, its
/// credential, the mapping) is a recorded `false`. `Err` is an error on
/// the way (the store, the audit log): never a `true`. `checked` is the
/// credential's check when it was made already (with the API token's
/// read, in `evaluate_alone`); else it is made here.
async fn evaluate(
    s: &AppState,
    asked: &Asked,
    one: &One<'_>,
    checked: Option<Presented>,
) -> Result<EvaluationResponse, Problem> {
    let mapped = map(one);
    let action = one.action.name.as_str();
    let refuse = |code: &str, detail: String, who: Option<Who>, mission: Option<&MissionId>| {
        let resp = denial(code, detail, mission);
        let extra = asked.extra();
        let (resource, context) = (&mapped.resource, &mapped.context);
        async move {
            s.0.enforcer
                .record_decision(action, resource, context, &resp, who.as_ref(), extra)
                .await?;
            s.0.metrics
                .decision(Door::Authzen, resp.decision, &resp.code);
            Ok::<_, Problem>(answer(s, resp).await)
        }
    };
    // 1. The subject: what kind, and its credential.
    let AuthzenSubject {
        type_,
        id: subject_id,
        properties,
    } = one.subject;
    let by_agent = match type_.as_str() {
        SUBJECT_MISSION => false,
        SUBJECT_AGENT => true,
        _ => {
            return refuse(
                "invalid_request",
                format!("the subject `type` must be `{SUBJECT_MISSION}` or `{SUBJECT_AGENT}`"),
                None,
                None,
            )
            .await;
        }
    };
    let props = properties.clone().unwrap_or_default();
    let Some(credential) = props.credential.as_deref() else {
        return refuse(
            "bad_credential",
            "the subject carries no mission credential (`properties.credential`)".into(),
            None,
            None,
        )
        .await;
    };
    let presented = match checked {
        Some(p) => p,
        None => {
            let at = Instant::now();
            let presented = check_presented(s, credential)
                .instrument(tracing::debug_span!("verify"))
                .await;
            s.0.metrics
                .stage(Door::Authzen, Stage::Verify, at.elapsed());
            presented?
        }
    };
    let (claims, mission) = match presented {
        Presented::Valid { claims, mission } => (claims, *mission),
        Presented::Refused { error, claims } => {
            let who = claims.as_ref().map(Who::of);
            let mission = claims.as_ref().map(|c| c.mission_id.clone());
            return refuse(error.code(), error.to_string(), who, mission.as_ref()).await;
        }
    };
    let who = Who::of(&claims);
    // 2. The subject is the credential's: its mission, or its agent.
    let named = if by_agent {
        claims.act.sub.as_str()
    } else {
        claims.mission_id.as_str()
    };
    if named != subject_id {
        return refuse(
            "mission_mismatch",
            format!(
                "the subject `id` is not the {} of the credential it carries",
                if by_agent { "agent" } else { "mission" }
            ),
            Some(who),
            Some(&claims.mission_id),
        )
        .await;
    }
    // 3. The resource and context as Mandate decides them.
    if let Some(why) = mapped.refusal {
        return refuse(
            "invalid_request",
            why.into(),
            Some(who),
            Some(&claims.mission_id),
        )
        .await;
    }
    let justification = match free_text("justification", props.justification.clone(), 1_000) {
        Ok(j) => j,
        Err(p) => {
            return refuse(
                "invalid_request",
                p.detail,
                Some(who),
                Some(&claims.mission_id),
            )
            .await;
        }
    };
    // 4. The same call `/v1/decide` makes.
    let call = Call {
        action,
        resource: &mapped.resource,
        context: &mapped.context,
        justification,
        required: Trust::Signed,
        attestation: None,
        arguments: None,
        // The enforcement point answers for the request's freshness, as
        // for `/v1/decide`.
        claim: None,
    };
    let (resp, _permit) = enforce(
        s,
        Door::Authzen,
        &asked.enforcement_point,
        &mission,
        &call,
        &who,
        asked.extra(),
        (),
    )
    .await?;
    Ok(answer(s, resp).await)
}

/// A decision in AuthZEN's terms: `true` for an allow, and nothing else.
async fn answer(s: &AppState, resp: DecideResponse) -> EvaluationResponse {
    let DecideResponse {
        decision,
        code,
        policies,
        grant: _,
        approval_id,
        approval_url,
        mission_id,
        budget_used: _,
        detail,
        hop,
    } = resp;
    match decision {
        Decision::Allow => EvaluationResponse {
            decision: true,
            context: None,
        },
        Decision::Deny | Decision::Escalate => {
            let task = match approval_id {
                Some(id) => Some(task(s, id, approval_url).await),
                None => None,
            };
            EvaluationResponse {
                decision: false,
                context: Some(DecisionContext {
                    reason: code,
                    detail,
                    policies,
                    mission_id,
                    hop,
                    task,
                    error: None,
                }),
            }
        }
    }
}

/// The approval request an escalation opened or joined, as a task handle.
async fn task(s: &AppState, id: String, url: Option<String>) -> ApprovalTask {
    let status_endpoint = url.unwrap_or_else(|| crate::approval_notices::poll_url(s, &id));
    // Its state and expiry, read back; without them it is still the
    // request to wait on.
    let record = match s.0.store.approval(&id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, approval = %id, "cannot read an approval request back");
            None
        }
    };
    ApprovalTask {
        status: record
            .as_ref()
            .map_or("pending", |r| r.status.as_str())
            .to_owned(),
        expires_at: record.as_ref().and_then(|r| rfc3339(r.expires_at.0)),
        id,
        status_endpoint,
    }
}

fn rfc3339(t: u64) -> Option<String> {
    let t = i64::try_from(t).ok()?;
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// An evaluation of a batch that failed: `false`, with the problem it
/// would have been alone.
fn failed(p: &Problem) -> EvaluationResponse {
    EvaluationResponse {
        decision: false,
        context: Some(DecisionContext {
            reason: p.code.to_owned(),
            detail: String::new(),
            policies: Vec::new(),
            mission_id: None,
            hop: None,
            task: None,
            error: Some(EvaluationError {
                status: p.status,
                code: p.code.to_owned(),
                message: p.detail.clone(),
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{One, map};
    use mandate_core::ResourceKind;
    use mandate_core::wire::{AuthzenAction, AuthzenResource, AuthzenSubject};
    use serde_json::json;

    fn one_of(
        resource: serde_json::Value,
        action: serde_json::Value,
        ctx: serde_json::Value,
    ) -> super::Mapped {
        let subject: AuthzenSubject =
            serde_json::from_value(json!({"type": "mandate_mission", "id": "m"})).unwrap();
        let action: AuthzenAction = serde_json::from_value(action).unwrap();
        let resource: AuthzenResource = serde_json::from_value(resource).unwrap();
        let context = ctx.as_object().cloned();
        map(&One {
            subject: &subject,
            action: &action,
            resource: &resource,
            context: context.as_ref(),
        })
    }

    #[test]
    fn resources_become_typed_ids_with_tags_and_action_properties_join_the_context() {
        let m = one_of(
            json!({"type": "todo", "id": "7240", "properties": {"ownerID": "rick", "n": 3, "ok": true}}),
            json!({"name": "can_update_todo", "properties": {"amount": 5}}),
            json!({"region": "eu"}),
        );
        assert_eq!(m.refusal, None);
        assert_eq!(
            m.resource.kind,
            ResourceKind::Resource {
                id: "todo/7240".into()
            }
        );
        assert_eq!(m.resource.tags["ownerID"], "rick");
        assert_eq!(m.resource.tags["n"], "3");
        assert_eq!(m.resource.tags["ok"], "true");
        assert_eq!(
            m.context,
            *json!({"region": "eu", "amount": 5}).as_object().unwrap()
        );
    }

    #[test]
    fn what_has_more_than_one_reading_is_refused() {
        for (resource, action, ctx) in [
            // `{a/b, c}` would be `{a, b/c}`.
            (
                json!({"type": "a/b", "id": "c"}),
                json!({"name": "read"}),
                json!({}),
            ),
            (
                json!({"type": "", "id": "c"}),
                json!({"name": "read"}),
                json!({}),
            ),
            // A tag is a string.
            (
                json!({"type": "doc", "id": "c", "properties": {"o": {"x": 1}}}),
                json!({"name": "read"}),
                json!({}),
            ),
            // Which `amount`?
            (
                json!({"type": "doc", "id": "c"}),
                json!({"name": "read", "properties": {"amount": 1}}),
                json!({"amount": 2}),
            ),
        ] {
            let m = one_of(resource.clone(), action, ctx);
            assert!(m.refusal.is_some(), "{resource}");
            assert!(m.resource.tags.is_empty());
        }
    }
}
