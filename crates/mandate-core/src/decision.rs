//! The decision: state checks, then Cedar in three kinds (docs/adr/0003-decision-engine.md).
//!
//! 1. State: the mission is active, not revoked, and has budget left.
//! 2. `boundary` (`forbid`) matches → Deny. Nothing overrides a boundary.
//! 3. `escalate` matches → Escalate, unless a live grant covers the request.
//! 4. `scope` matches → Allow.
//! 5. Nothing matches → out of scope: Escalate (or Allow, if a live grant
//!    covers the request) or Deny, per the mission. A grant turns an
//!    Escalate into an Allow; it never turns a Deny into anything.
//!
//! Any error (a request that cannot be built, a policy that fails to
//! evaluate) → Deny. Policies are compiled before; nothing is parsed here.
//! Only the policies that apply are evaluated: the organisation's, this
//! mission's, and this mission's grants.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::LazyLock;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, Request,
    RestrictedExpression,
};
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::mission::{Mission, OutOfScope};
use crate::policy::{GrantSet, KindedSet, MissionPolicySet, OrgPolicies, PolicyKind};

static AUTHORIZER: LazyLock<Authorizer> = LazyLock::new(Authorizer::new);

/// The three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Decision {
    Allow,
    Deny,
    Escalate,
}

impl Decision {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Escalate => "escalate",
        }
    }
}

/// Stable reason codes.
#[derive(Debug)]
pub struct ReasonCode;

impl ReasonCode {
    pub const SCOPE: &'static str = "scope";
    pub const GRANT: &'static str = "grant";
    pub const BOUNDARY: &'static str = "boundary";
    pub const ESCALATION: &'static str = "escalation";
    pub const OUT_OF_SCOPE: &'static str = "out_of_scope";
    pub const BUDGET_EXHAUSTED: &'static str = "budget_exhausted";
    pub const MISSION_ENDED: &'static str = "mission_ended";
    pub const MISSION_NOT_STARTED: &'static str = "mission_not_started";
    pub const REVOKED: &'static str = "revoked";
    pub const POLICY_ERROR: &'static str = "policy_error";
    pub const INVALID_REQUEST: &'static str = "invalid_request";
    pub const APPROVAL_QUEUE_FULL: &'static str = "approval_queue_full";
    /// The call must be approved on its own (`@trust("approved")` or a
    /// route that requires `approved`); only a single-use grant for this
    /// very call covers it.
    pub const STEP_UP: &'static str = "step_up";
    /// The request is less trusted than the route or action requires.
    pub const INSUFFICIENT_TRUST: &'static str = "insufficient_trust";
    /// The escalate policies that matched name no approver in common.
    pub const NO_APPROVER: &'static str = "no_approver";
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub decision: Decision,
    /// Stable reason code (see [`ReasonCode`]).
    pub code: String,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// The grant that allowed the request, if one did.
    pub grant: Option<String>,
    /// Human-readable detail (errors, for instance).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// On an escalation: who the matching policies name as approvers
    /// (empty: the mission's principal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// On an escalation: only an approval of this very call, used once,
    /// will do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step_up: bool,
    /// For a delegated mission: the ancestor whose policy stopped or
    /// escalated the call (none when the mission's own policy or the
    /// organisation's decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<Hop>,
}

/// A hop of a delegation chain, as a decision names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hop {
    /// 1 for the root mission.
    pub depth: u32,
    pub mission: String,
    pub agent: String,
}

impl Hop {
    fn of(m: &Mission) -> Self {
        Self {
            depth: m.body.depth(),
            mission: m.body.id.to_string(),
            agent: m.body.agent.to_string(),
        }
    }
}

/// An ancestor of the deciding mission, root first, with its compiled
/// policies and its budget count (for `principal.mission.budget_used`).
#[derive(Debug, Clone, Copy)]
pub struct Ancestor<'a> {
    pub mission: &'a Mission,
    pub policies: &'a MissionPolicySet,
    pub budget_used: u64,
}

impl Outcome {
    fn new(decision: Decision, code: &str, policies: Vec<String>) -> Self {
        Self {
            decision,
            code: code.to_owned(),
            policies,
            grant: None,
            detail: String::new(),
            approvers: Vec::new(),
            step_up: false,
            hop: None,
        }
    }

    /// A denial with a reason code and no policy.
    #[must_use]
    pub fn deny(code: &str, detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            ..Self::new(Decision::Deny, code, Vec::new())
        }
    }
}

/// How much the request is trusted, from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Trust {
    /// Signed by the mission key.
    Signed,
    /// The mission is bound to verified attestation evidence.
    Attested,
    /// A human approved this very call.
    Approved,
}

impl Trust {
    /// What a request signed by `mission`'s key is trusted with before any
    /// approval: `attested` when the mission was started with verified
    /// evidence, `signed` otherwise.
    #[must_use]
    pub fn of(mission: &Mission) -> Self {
        if mission.attestation.is_some() {
            Self::Attested
        } else {
            Self::Signed
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signed => "signed",
            Self::Attested => "attested",
            Self::Approved => "approved",
        }
    }
}

/// What kind of thing a request acts on (its Cedar entity type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ResourceKind {
    /// A generic resource: `Resource::"{id}"`.
    Resource { id: String },
    /// A gateway route: `Route::"{route}{path}"` with `route` and `path`.
    Route { route: String, path: String },
    /// An MCP tool: `Tool::"{server}/{tool}"` with `server` and `tool`.
    Tool { server: String, tool: String },
    /// An MCP resource: `McpResource::"{server}/{uri}"` with `server` and
    /// `uri`.
    McpResource { server: String, uri: String },
    /// An MCP prompt: `Prompt::"{server}/{prompt}"` with `server` and
    /// `prompt`.
    Prompt { server: String, prompt: String },
    /// An MCP server as a whole (its log level, its resource templates):
    /// `McpServer::"{server}"` with `server`.
    McpServer { server: String },
}

/// The resource of a request, with its attributes (Cedar entity tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TaggedResource")]
pub struct ResourceRef {
    #[serde(flatten)]
    pub kind: ResourceKind,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A [`ResourceRef`] as read, before its `type` is known to be a name:
/// serde takes an internally tagged enum's tag also as the variant's
/// index, so `"type": 0` would be read as `Resource`.
#[derive(Deserialize)]
struct TaggedResource {
    #[serde(flatten)]
    kind: ResourceKind,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// The raw `type`, seen again only to check it is a string.
    #[serde(flatten)]
    raw: BTreeMap<String, serde_json::Value>,
}

impl TryFrom<TaggedResource> for ResourceRef {
    type Error = &'static str;

    fn try_from(t: TaggedResource) -> Result<Self, &'static str> {
        if !t.raw.get("type").is_some_and(serde_json::Value::is_string) {
            return Err("the resource `type` must be a string");
        }
        Ok(Self {
            kind: t.kind,
            tags: t.tags,
        })
    }
}

/// The resource entity types, one per [`ResourceKind`].
const RESOURCE_TYPES: [&str; 6] = [
    "Resource",
    "Route",
    "Tool",
    "McpResource",
    "Prompt",
    "McpServer",
];

impl ResourceRef {
    /// The Cedar entity type's name.
    fn type_str(&self) -> &'static str {
        match &self.kind {
            ResourceKind::Resource { .. } => "Resource",
            ResourceKind::Route { .. } => "Route",
            ResourceKind::Tool { .. } => "Tool",
            ResourceKind::McpResource { .. } => "McpResource",
            ResourceKind::Prompt { .. } => "Prompt",
            ResourceKind::McpServer { .. } => "McpServer",
        }
    }

    fn uid(&self) -> Result<EntityUid, String> {
        let id = match &self.kind {
            ResourceKind::Resource { id } => id.clone(),
            ResourceKind::Route { route, path } => format!("{route}{path}"),
            ResourceKind::Tool { server, tool } => format!("{server}/{tool}"),
            ResourceKind::McpResource { server, uri } => format!("{server}/{uri}"),
            ResourceKind::Prompt { server, prompt } => format!("{server}/{prompt}"),
            ResourceKind::McpServer { server } => server.clone(),
        };
        Ok(EntityUid::from_type_name_and_id(
            type_name(self.type_str())?,
            EntityId::new(id),
        ))
    }

    fn entity(&self) -> Result<Entity, String> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let attrs: Vec<(String, RestrictedExpression)> = match &self.kind {
            ResourceKind::Resource { id } => vec![("id".into(), s(id))],
            ResourceKind::Route { route, path } => {
                vec![("route".into(), s(route)), ("path".into(), s(path))]
            }
            ResourceKind::Tool { server, tool } => {
                vec![("server".into(), s(server)), ("tool".into(), s(tool))]
            }
            ResourceKind::McpResource { server, uri } => {
                vec![("server".into(), s(server)), ("uri".into(), s(uri))]
            }
            ResourceKind::Prompt { server, prompt } => {
                vec![("server".into(), s(server)), ("prompt".into(), s(prompt))]
            }
            ResourceKind::McpServer { server } => vec![("server".into(), s(server))],
        };
        let tags = self.tags.iter().map(|(k, v)| (k.clone(), s(v)));
        Entity::new_with_tags(self.uid()?, attrs, [], tags).map_err(|e| e.to_string())
    }
}

/// One request to decide.
#[derive(Debug, Clone)]
pub struct DecisionRequest<'a> {
    pub mission: &'a Mission,
    /// Allowed requests already counted against the mission's budget.
    pub budget_used: u64,
    pub action: &'a str,
    pub resource: &'a ResourceRef,
    /// Request attributes for policy (`context.*`). `trust` and `time` are
    /// Mandate's and may not be set here.
    pub context: &'a serde_json::Map<String, serde_json::Value>,
    pub trust: Trust,
    /// The least trust the enforcement point requires (a route's level).
    /// `Approved` makes every call a step-up.
    pub required: Trust,
    pub now: UnixTime,
}

/// The entity type names Mandate builds requests from, parsed once.
static TYPE_NAMES: LazyLock<Vec<(&'static str, Result<EntityTypeName, String>)>> =
    LazyLock::new(|| {
        ["User", "Mission", "Agent", "Action"]
            .into_iter()
            .chain(RESOURCE_TYPES)
            .map(|s| {
                let parsed = s
                    .parse()
                    .map_err(|e: cedar_policy::ParseErrors| e.to_string());
                (s, parsed)
            })
            .collect()
    });

fn type_name(s: &str) -> Result<EntityTypeName, String> {
    match TYPE_NAMES.iter().find(|(name, _)| *name == s) {
        Some((_, parsed)) => parsed.clone(),
        None => s
            .parse()
            .map_err(|e: cedar_policy::ParseErrors| e.to_string()),
    }
}

/// A declared action, prepared once when the organisation's policies load:
/// its uid and the resource types for which a request carrying only
/// Mandate's own context (`trust`, `time`) was checked against the schema
/// then. Request validation looks at types only (the principal's and the
/// resource's entity types, the context's attribute types), which are the
/// same for every such request, so these need no schema check per call;
/// any other request is checked against the schema when it is built.
#[derive(Debug, Clone)]
pub(crate) struct ActionShape {
    uid: EntityUid,
    bare_context_ok: Vec<&'static str>,
}

impl ActionShape {
    pub(crate) fn new(schema: &cedar_policy::Schema, action: EntityUid) -> Self {
        let bare_context_ok = RESOURCE_TYPES
            .into_iter()
            .filter(|ty| {
                let request = bare_context(Trust::Signed, UnixTime(0)).and_then(|context| {
                    Request::new(
                        uid("Agent", "")?,
                        action.clone(),
                        uid(ty, "")?,
                        context,
                        Some(schema),
                    )
                    .map_err(|e| e.to_string())
                });
                request.is_ok()
            })
            .collect();
        Self {
            uid: action,
            bare_context_ok,
        }
    }
}

/// The context Mandate sets on every request: the trust level and the
/// time, typed directly (no JSON to interpret).
fn bare_context(trust: Trust, now: UnixTime) -> Result<Context, String> {
    Context::from_pairs([
        (
            "trust".to_owned(),
            RestrictedExpression::new_string(trust.as_str().to_owned()),
        ),
        (
            "time".to_owned(),
            RestrictedExpression::new_long(i64::try_from(now.0).unwrap_or(i64::MAX)),
        ),
    ])
    .map_err(|e| e.to_string())
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    Ok(EntityUid::from_type_name_and_id(
        type_name(ty)?,
        EntityId::new(id),
    ))
}

/// State checks that come before any policy: the mission is active and has
/// budget left. Credential and key checks come before this, where the
/// credential is presented.
pub fn state_check(mission: &Mission, now: UnixTime, budget_used: u64) -> Result<(), Box<Outcome>> {
    // The codes are the credential refusal codes: `mission_not_started`,
    // `revoked`, `mission_ended`.
    mission
        .check_active(now)
        .map_err(|e| Box::new(Outcome::deny(e.code(), e.to_string())))?;
    if budget_used >= mission.body.budget.requests {
        return Err(Box::new(Outcome::deny(
            ReasonCode::BUDGET_EXHAUSTED,
            "the mission's request budget is used up",
        )));
    }
    Ok(())
}

/// The `Mission` and `Agent` entities of one hop.
fn hop_entities(
    m: &Mission,
    user: &EntityUid,
    budget_used: u64,
) -> Result<(EntityUid, [Entity; 2]), String> {
    let body = &m.body;
    let mission = uid("Mission", body.id.as_str())?;
    let agent = uid("Agent", body.agent.as_str())?;
    let started_at = match &m.status {
        crate::mission::MissionStatus::Active { started_at, .. } => started_at.0,
        _ => body.created_at,
    };
    let long = |v: u64| RestrictedExpression::new_long(i64::try_from(v).unwrap_or(i64::MAX));
    let mission_entity = Entity::new(
        mission.clone(),
        [
            (
                "principal".to_owned(),
                RestrictedExpression::new_entity_uid(user.clone()),
            ),
            (
                "goal".to_owned(),
                RestrictedExpression::new_string(body.goal.clone()),
            ),
            ("tags".to_owned(), RestrictedExpression::new_set([])),
            (
                "attested".to_owned(),
                RestrictedExpression::new_bool(m.attestation.is_some()),
            ),
            ("budget".to_owned(), long(body.budget.requests)),
            ("budget_used".to_owned(), long(budget_used)),
            ("started_at".to_owned(), long(started_at)),
            ("expires_at".to_owned(), long(body.expires_at)),
        ]
        .into_iter()
        .chain(m.attestation.as_ref().and_then(|a| {
            a.workload().map(|w| {
                (
                    "workload".to_owned(),
                    RestrictedExpression::new_string(w.to_owned()),
                )
            })
        }))
        .chain(m.attestation.as_ref().and_then(|a| {
            a.code_digest.as_ref().map(|d| {
                (
                    "code_digest".to_owned(),
                    RestrictedExpression::new_string(d.clone()),
                )
            })
        }))
        .chain([
            (
                "tainted".to_owned(),
                RestrictedExpression::new_bool(m.taint.is_some()),
            ),
            (
                "taint".to_owned(),
                RestrictedExpression::new_set(
                    m.taint
                        .iter()
                        .flat_map(|t| t.labels.iter())
                        .map(|l| RestrictedExpression::new_string(l.clone())),
                ),
            ),
        ])
        .chain(
            m.taint
                .as_ref()
                .map(|t| ("tainted_at".to_owned(), long(t.since))),
        )
        .collect(),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;
    let agent_entity = Entity::new(
        agent.clone(),
        [(
            "mission".to_owned(),
            RestrictedExpression::new_entity_uid(mission),
        )]
        .into_iter()
        .collect(),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;
    Ok((agent, [mission_entity, agent_entity]))
}

/// The request (the deciding mission's agent as principal), one request
/// per ancestor (its agent as principal: "would this hop be allowed the
/// call"), and the entities all of them read.
type Built = (Request, Vec<Request>, Entities);

fn build(
    org: &OrgPolicies,
    req: &DecisionRequest<'_>,
    ancestors: &[Ancestor<'_>],
) -> Result<Built, String> {
    // Only declared actions: an unknown one would match no group and could
    // slip past a boundary written over a group.
    let Some(shape) = org.actions.get(req.action) else {
        return Err(format!("unknown action `{}`", req.action));
    };
    let user = uid("User", req.mission.body.principal.as_str())?;
    let (agent, [mission_entity, agent_entity]) =
        hop_entities(req.mission, &user, req.budget_used)?;
    let resource = req.resource.entity()?;
    let resource_uid = req.resource.uid()?;
    let mut all = vec![
        Entity::new_no_attrs(user.clone(), HashSet::new()),
        mission_entity,
        agent_entity,
        resource,
    ];
    let mut hop_agents = Vec::with_capacity(ancestors.len());
    for a in ancestors {
        if a.mission.body.principal != req.mission.body.principal {
            return Err("an ancestor belongs to another principal".into());
        }
        let (hop_agent, entities) = hop_entities(a.mission, &user, a.budget_used)?;
        hop_agents.push(hop_agent);
        all.extend(entities);
    }
    // The schema's action entities carry the action groups; a condition
    // may read any action's, not only the request's own.
    let entities = org
        .action_entities
        .clone()
        .add_entities(all, None)
        .map_err(|e| e.to_string())?;
    if let Some(k) = req
        .context
        .iter()
        .find(|(_, v)| !exact_json(v))
        .map(|(k, _)| k)
    {
        return Err(format!(
            "`{k}` holds an integer beyond ±2^53, which JSON cannot carry exactly"
        ));
    }
    if req.context.contains_key("trust") || req.context.contains_key("time") {
        return Err("`trust` and `time` are set by Mandate, not by the request".into());
    }
    // Typed by the action's declared context, and the request checked
    // against what the action applies to.
    let action = shape.uid.clone();
    let schema = org.schema();
    let (context, checked) = if req.context.is_empty() {
        // Only what Mandate sets: a string and a long. Its shape was
        // checked against the schema at load for this action and resource
        // type; otherwise it is checked with the request below.
        let checked = shape.bare_context_ok.contains(&req.resource.type_str());
        (bare_context(req.trust, req.now)?, checked)
    } else {
        let mut ctx = req.context.clone();
        ctx.insert("trust".into(), req.trust.as_str().into());
        ctx.insert("time".into(), req.now.0.into());
        let context =
            Context::from_json_value(serde_json::Value::Object(ctx), Some((schema, &action)))
                .map_err(|e| e.to_string())?;
        (context, false)
    };
    let schema = (!checked).then_some(schema);
    // Every hop's principal is an `Agent`, so one schema check covers them
    // all; the hops' requests are built unchecked after it.
    let hops = hop_agents
        .into_iter()
        .map(|a| {
            Request::new(
                a,
                action.clone(),
                resource_uid.clone(),
                context.clone(),
                None,
            )
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let request =
        Request::new(agent, action, resource_uid, context, schema).map_err(|e| e.to_string())?;
    Ok((request, hops, entities))
}

/// What matched, by kind.
#[derive(Default)]
struct Matched {
    boundary: Vec<String>,
    escalate: Vec<String>,
    scope: Vec<String>,
    grant: Vec<String>,
    /// A grant for exactly this call (policy id) and whether it is single-use.
    exact: Option<(String, bool)>,
    /// Whether only a single-use approval of this very call will do.
    step_up: bool,
    /// Approvers named by the matching escalate policies.
    approvers: Vec<String>,
}

/// Decides a request. State checks ([`state_check`]) must have passed.
#[must_use]
pub fn decide(
    org: &OrgPolicies,
    mission: &MissionPolicySet,
    grants: &GrantSet,
    req: &DecisionRequest<'_>,
) -> Outcome {
    decide_chain(org, &[], mission, grants, req)
}

/// Decides a request of a delegated mission: the conjunction of the
/// mission's own decision and what each ancestor (root first) would decide
/// for the same call, as that ancestor's agent, under its own policies and
/// the organisation's. A boundary at any hop denies; an escalation at any
/// hop escalates; a hop whose scope does not cover the call makes it out
/// of scope, decided by that hop's `out_of_scope` (so a parent that says
/// `deny` cannot be talked past by its child). Only the deciding mission's
/// grants count: a person's approval for this child is the one way past a
/// parent's scope, never past a boundary. State checks must have passed
/// for the mission; ancestors end with their descendants (the store's
/// invariant), so a live mission has live ancestors.
#[must_use]
pub fn decide_chain(
    org: &OrgPolicies,
    ancestors: &[Ancestor<'_>],
    mission: &MissionPolicySet,
    grants: &GrantSet,
    req: &DecisionRequest<'_>,
) -> Outcome {
    let (request, hop_requests, entities) = match build(org, req, ancestors) {
        Ok(built) => built,
        Err(e) => return Outcome::deny(ReasonCode::INVALID_REQUEST, e),
    };
    let mut m = Matched::default();
    if req.trust < req.required && req.required != Trust::Approved {
        return Outcome::deny(
            ReasonCode::INSUFFICIENT_TRUST,
            format!(
                "this needs trust `{}`; the request has `{}`{}",
                req.required.as_str(),
                req.trust.as_str(),
                if req.required == Trust::Attested {
                    " (the mission was not started with attestation evidence: see `mandate launch`, or `mission start --evidence`)"
                } else {
                    ""
                }
            ),
        );
    }
    for set in [&org.policies, &mission.0, &grants.0] {
        if set.is_empty() {
            continue;
        }
        if let Err(outcome) = evaluate(set, &request, &entities, &mut m) {
            return *outcome;
        }
        if !m.boundary.is_empty() {
            // A boundary matched: nothing can override it.
            break;
        }
    }
    // The ancestors, each as its own agent: the organisation's policies
    // that depend on who acts, and the ancestor's own.
    let mut first_hop: Option<Hop> = None;
    let mut ancestor_out_of_scope = false;
    // A mission out of its own scope that does not negotiate is denied
    // whatever its ancestors say: their escalations do not make it
    // negotiable.
    let negotiable = !m.escalate.is_empty()
        || !m.scope.is_empty()
        || req.mission.body.out_of_scope == OutOfScope::Escalate;
    // A principal's own mission (no ancestors), the common case, skips
    // all of this.
    if !ancestors.is_empty() && m.boundary.is_empty() && negotiable {
        // Org scope policies that answer alike for every hop and matched
        // for the mission match for each ancestor too.
        let org_scope_for_all = m.scope.iter().any(|id| {
            let pid = PolicyId::new(id);
            org.policies.kind(&pid) == Some(PolicyKind::Scope) && org.per_hop.kind(&pid).is_none()
        });
        for (a, hop_request) in ancestors.iter().zip(&hop_requests) {
            let mut h = Matched::default();
            for set in [&org.per_hop, &a.policies.0] {
                if set.is_empty() {
                    continue;
                }
                if let Err(mut outcome) = evaluate(set, hop_request, &entities, &mut h) {
                    outcome.hop = Some(Hop::of(a.mission));
                    return *outcome;
                }
            }
            if !h.boundary.is_empty() {
                h.boundary.sort();
                h.boundary.dedup();
                return Outcome {
                    hop: Some(Hop::of(a.mission)),
                    detail: format!(
                        "a boundary of ancestor mission `{}` (agent `{}`, depth {}) forbids it",
                        a.mission.body.id,
                        a.mission.body.agent,
                        a.mission.body.depth()
                    ),
                    ..Outcome::new(Decision::Deny, ReasonCode::BOUNDARY, h.boundary)
                };
            }
            let in_scope = org_scope_for_all || !h.scope.is_empty();
            if !in_scope && h.escalate.is_empty() {
                if a.mission.body.out_of_scope == OutOfScope::Deny {
                    return Outcome {
                        hop: Some(Hop::of(a.mission)),
                        detail: format!(
                            "outside the scope of ancestor mission `{}` (agent `{}`, depth {}), whose out_of_scope is `deny`",
                            a.mission.body.id,
                            a.mission.body.agent,
                            a.mission.body.depth()
                        ),
                        ..Outcome::new(Decision::Deny, ReasonCode::OUT_OF_SCOPE, Vec::new())
                    };
                }
                ancestor_out_of_scope = true;
            }
            if (!in_scope || !h.escalate.is_empty()) && first_hop.is_none() {
                first_hop = Some(Hop::of(a.mission));
            }
            m.escalate.append(&mut h.escalate);
        }
    }
    // Who may approve. The organisation's escalate policies that name
    // approvers decide (a decider must be named by each of them); if none
    // does, the mission's principal. A mission's own `@approvers` can only
    // narrow that, never add anyone.
    let principal = req.mission.body.principal.to_string();
    let mut org_named: Option<BTreeSet<String>> = None;
    let mut mission_named: Vec<BTreeSet<String>> = Vec::new();
    for id in &m.escalate {
        let pid = PolicyId::new(id);
        let (terms, from_org) = match org.policies.escalations.get(&pid) {
            Some(t) => (Some(t), true),
            None => (
                mission.0.escalations.get(&pid).or_else(|| {
                    ancestors
                        .iter()
                        .find_map(|a| a.policies.0.escalations.get(&pid))
                }),
                false,
            ),
        };
        let Some(t) = terms else { continue };
        m.step_up |= t.step_up;
        if t.approvers.is_empty() {
            continue;
        }
        let named: BTreeSet<String> = t.approvers.iter().cloned().collect();
        if from_org {
            org_named = Some(match org_named {
                None => named,
                Some(e) => e.intersection(&named).cloned().collect(),
            });
        } else {
            mission_named.push(named);
        }
    }
    let mut entitled = org_named.unwrap_or_else(|| BTreeSet::from([principal]));
    for named in mission_named {
        entitled = entitled.intersection(&named).cloned().collect();
    }
    // A grant covers only what its decider could have approved.
    m.grant.retain(|g| grants.decided_by_one_of(g, &entitled));
    if m.boundary.is_empty() && !grants.1.is_empty() {
        // Exact grants: this very call, by digest.
        match crate::grant::request_digest(req.action, req.resource, req.context) {
            Ok(d) => {
                for g in grants.1.iter().filter(|g| g.request_digest == d) {
                    let id = format!("grant/{}", g.id);
                    if !grants.decided_by_one_of(&id, &entitled) {
                        continue;
                    }
                    if m.exact.as_ref().is_none_or(|(_, once)| !once && g.once) {
                        // Prefer a single-use grant: it satisfies a step-up.
                        m.exact = Some((id, g.once));
                    }
                }
            }
            Err(e) => return Outcome::deny(ReasonCode::INVALID_REQUEST, e),
        }
    }
    m.approvers = entitled.into_iter().collect();
    m.step_up |= req.required == Trust::Approved;
    let mut mode = req.mission.body.out_of_scope;
    if ancestor_out_of_scope {
        // An ancestor's scope does not cover the call (and it negotiates):
        // the call is out of scope for the chain, whatever the mission's
        // own scope says; the mission's own mode applies only where the
        // mission itself is out of scope.
        if !m.scope.is_empty() {
            mode = OutOfScope::Escalate;
        }
        m.scope.clear();
    }
    let mut decided = outcome(m, mode);
    if decided.decision != Decision::Allow || decided.grant.is_some() {
        decided.hop = first_hop;
    }
    decided
}

fn evaluate(
    set: &KindedSet,
    request: &Request,
    entities: &Entities,
    m: &mut Matched,
) -> Result<(), Box<Outcome>> {
    let resp = AUTHORIZER.is_authorized(request, &set.set, entities);
    let diagnostics = resp.diagnostics();
    let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
    if !errors.is_empty() {
        // INVARIANT: an error in any policy denies, whatever else matched.
        let ids = diagnostics
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                    p.policy_id().to_string()
                }
            })
            .collect();
        return Err(Box::new(Outcome {
            policies: ids,
            ..Outcome::deny(ReasonCode::POLICY_ERROR, errors.join("; "))
        }));
    }
    for id in diagnostics.reason() {
        let target = match set.kind(id) {
            Some(PolicyKind::Boundary) => &mut m.boundary,
            Some(PolicyKind::Escalate) => &mut m.escalate,
            Some(PolicyKind::Scope) => &mut m.scope,
            Some(PolicyKind::Grant) => &mut m.grant,
            None => {
                return Err(Box::new(Outcome::deny(
                    ReasonCode::POLICY_ERROR,
                    format!("policy `{id}` has no kind"),
                )));
            }
        };
        target.push(id_string(id));
    }
    Ok(())
}

fn id_string(id: &PolicyId) -> String {
    id.to_string()
}

fn outcome(mut m: Matched, out_of_scope: OutOfScope) -> Outcome {
    for v in [
        &mut m.boundary,
        &mut m.escalate,
        &mut m.scope,
        &mut m.grant,
        &mut m.approvers,
    ] {
        v.sort();
        v.dedup();
    }
    if !m.boundary.is_empty() {
        return Outcome::new(Decision::Deny, ReasonCode::BOUNDARY, m.boundary);
    }
    let allowed_by = |g: String, mut also: Vec<String>| {
        let mut policies = vec![g.clone()];
        policies.append(&mut also);
        Outcome {
            grant: Some(g),
            ..Outcome::new(Decision::Allow, ReasonCode::GRANT, policies)
        }
    };
    let escalate = |code: &str, policies: Vec<String>, m: &Matched| {
        if m.approvers.is_empty() {
            // The policies that ask name no approver in common: nobody
            // could approve, so asking would only wait.
            return Outcome {
                detail: "the policies that ask for approval name no approver in common".into(),
                ..Outcome::new(Decision::Deny, ReasonCode::NO_APPROVER, policies)
            };
        }
        Outcome {
            approvers: m.approvers.clone(),
            step_up: m.step_up,
            ..Outcome::new(Decision::Escalate, code, policies)
        }
    };
    let negotiable =
        !m.escalate.is_empty() || !m.scope.is_empty() || out_of_scope == OutOfScope::Escalate;
    if m.step_up && negotiable {
        // Only an approval of this very call, used once, will do; scope
        // and broader grants do not count.
        if let Some((g, true)) = m.exact.clone() {
            return allowed_by(g, m.escalate);
        }
        return escalate(ReasonCode::STEP_UP, m.escalate.clone(), &m);
    }
    // A grant covers what would otherwise need asking: exact first.
    let grant = m
        .exact
        .clone()
        .map(|(g, _)| g)
        .or_else(|| m.grant.first().cloned());
    if !m.escalate.is_empty() {
        if let Some(g) = grant {
            return allowed_by(g, m.escalate);
        }
        return escalate(ReasonCode::ESCALATION, m.escalate.clone(), &m);
    }
    if !m.scope.is_empty() {
        return Outcome::new(Decision::Allow, ReasonCode::SCOPE, m.scope);
    }
    // Out of scope. Grants turn an Escalate into an Allow, never a Deny:
    // where the mission says out of scope is not negotiable, it is not.
    match (out_of_scope, grant) {
        (OutOfScope::Escalate, Some(g)) => allowed_by(g, Vec::new()),
        (OutOfScope::Escalate, None) => escalate(ReasonCode::OUT_OF_SCOPE, Vec::new(), &m),
        (OutOfScope::Deny, _) => Outcome::new(Decision::Deny, ReasonCode::OUT_OF_SCOPE, Vec::new()),
    }
}

/// Whether every integer in `v` is within ±(2^53 − 1), so that its JSON
/// (and RFC 8785) form is exact and two different calls never share a
/// request digest.
fn exact_json(v: &serde_json::Value) -> bool {
    const MAX: u64 = (1 << 53) - 1;
    match v {
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u <= MAX,
            (None, Some(i)) => i.unsigned_abs() <= MAX,
            (None, None) => true,
        },
        serde_json::Value::Array(a) => a.iter().all(exact_json),
        serde_json::Value::Object(o) => o.values().all(exact_json),
        _ => true,
    }
}
