//! Delegation: a running mission delegates part of itself to a sub-agent
//! (ADR 0019). Two steps, both proved by the parent's mission key:
//!
//! 1. `POST /v1/mission/delegations/proposal`: the authority checks the
//!    request against the parent (only narrowing) and returns the child's
//!    body, its hash and the link claims to sign. Nothing is stored.
//! 2. `POST /v1/mission/delegations`: the parent commits that body with
//!    the link signed by its mission key. The authority checks the body is
//!    the one it would delegate now, the link binds it and was signed by
//!    the parent's bound key, then stores child and link and carves the
//!    child's budget out of the parent's, in one transaction, and returns
//!    the child's one-time start token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_core::wire::{
    ChainView, CommitDelegation, CreatedMission, DelegateRequest, DelegationProposal, MissionView,
};
use mandate_core::{
    AgentName, ChainHop, ChildSpec, DelegationError, LinkClaims, LinkParty, Mission, MissionBody,
    MissionId, MissionPolicies, MissionSpec, OutOfScope, PROPOSAL_TTL_SECS, UnixTime, link_digest,
    mission_s256, sign_proposal, verify_link, verify_proposal,
};
use mandate_store::{NewDelegation, NewMission};

use super::extract::{ApiJson, ApiPath, Caller, MissionCaller};
use super::missions::{created, may_manage_by, start_token};
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use super::{DEFAULT_MISSION_TTL_SECS, mission_view, on_large_stack};
use crate::problem::Problem;
use crate::state::AppState;

/// The parent as a link names it.
fn party(m: &Mission) -> LinkParty {
    LinkParty {
        mission_id: m.body.id.clone(),
        mission_s256: m.s256.clone(),
        agent: m.body.agent.clone(),
    }
}

/// The parent's ancestors, root first, read from the store and checked
/// against the hashes its body names.
pub(crate) async fn ancestors_of(s: &AppState, m: &Mission) -> Result<Vec<Mission>, Problem> {
    let mut out = Vec::with_capacity(m.body.ancestors.len());
    for r in &m.body.ancestors {
        let a =
            s.0.store
                .mission(&r.id)
                .await?
                .filter(|a| a.s256 == r.s256)
                .ok_or_else(|| {
                    tracing::error!(mission = %m.body.id, ancestor = %r.id, "an ancestor is missing or changed");
                    Problem::internal()
                })?;
        out.push(a);
    }
    Ok(out)
}

/// Builds (or rebuilds, to check a committed proposal) the child body the
/// authority would delegate for `parent` now.
async fn child_body(
    s: &AppState,
    parent: &Mission,
    child: ChildSpec,
    id: MissionId,
    now: UnixTime,
    attestation: Vec<mandate_core::AttestationRequirement>,
) -> Result<MissionBody, Problem> {
    let agent = &child.spec.agent;
    // What the child's agent must prove to start it: what its registration
    // requires, then what the delegating hop adds.
    let mut required = Vec::new();
    if !child.ephemeral {
        // A registered agent of the same principal, live.
        let found = s.0.store.agent(agent).await?;
        match found {
            Some(a) if a.owner == parent.body.principal && a.revoked_at.is_none() => {
                required.extend(a.attestation);
            }
            Some(a) if a.owner != parent.body.principal => {
                return Err(Problem::forbidden(format!(
                    "`{agent}` is an agent of another principal"
                )));
            }
            Some(_) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "revoked",
                    format!("agent `{agent}` is revoked"),
                ));
            }
            None => {
                return Err(Problem::not_found(format!(
                    "no agent `{agent}` (register it with `mandate agent register`)"
                )));
            }
        }
    }
    let chain_agents: Vec<AgentName> = ancestors_of(s, parent)
        .await?
        .into_iter()
        .map(|a| a.body.agent)
        .collect();
    let used = s.0.store.budget_used(&parent.body.id).await?;
    let left = parent.body.budget.requests.saturating_sub(used);
    let org = s.org()?;
    let (parent, limits) = (parent.clone(), s.0.mission_limits);
    let body = on_large_stack(move || {
        MissionBody::delegated(
            child,
            id,
            &parent,
            &chain_agents,
            left,
            now,
            limits,
            Some(org.loaded.policies.schema()),
        )
    })
    .await??;
    let mut body = body;
    for r in required.into_iter().chain(attestation) {
        // One this authority could never satisfy would strand the child
        // and the budget carved out for it.
        s.0.attestation
            .check_requirement(&r)
            .map_err(|m| Problem::bad_request("invalid_request", format!("attestation: {m}")))?;
        body.require_attestation(r)?;
    }
    Ok(body)
}

/// Proposes a child mission: what the authority would delegate for the
/// calling mission, and the link claims its mission key must sign.
/// Nothing is stored.
#[utoipa::path(
    post,
    path = "/v1/mission/delegations/proposal",
    operation_id = "propose_delegation",
    tag = "delegation",
    security(("mission_credential" = [], "dpop_proof" = [])),
    request_body = DelegateRequest,
    responses(
        (status = 200, description = "The child's body and the link claims to sign.", body = DelegationProposal),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn propose(
    State(s): State<AppState>,
    caller: MissionCaller,
    ApiJson(req): ApiJson<DelegateRequest>,
) -> Result<Json<DelegationProposal>, Problem> {
    let DelegateRequest {
        agent,
        ephemeral,
        goal,
        scope,
        boundaries,
        escalations,
        ttl_seconds,
        budget,
        out_of_scope,
        attestation,
    } = req;
    let now = s.0.clock.now();
    let parent = &caller.mission;
    let id = MissionId::generate(s.0.rng.as_ref()).map_err(|_| Problem::internal())?;
    let (agent, is_ephemeral) = match (agent, ephemeral) {
        (Some(a), None) => {
            let a: AgentName = a.try_into()?;
            if a.is_ephemeral() {
                return Err(DelegationError::EphemeralTarget(a).into());
            }
            (a, false)
        }
        (None, Some(label)) => (AgentName::ephemeral(label.trim(), &id)?, true),
        _ => {
            return Err(Problem::bad_request(
                "invalid_request",
                "name exactly one of `agent` (a registered agent) and `ephemeral` (a label)",
            ));
        }
    };
    let left = parent.body.expires_at.saturating_sub(now.0);
    let spec = MissionSpec {
        agent,
        goal,
        policies: MissionPolicies {
            scope,
            boundaries,
            escalations,
        },
        ttl_secs: ttl_seconds.unwrap_or_else(|| left.min(DEFAULT_MISSION_TTL_SECS)),
        budget,
        out_of_scope: match out_of_scope {
            Some(m) => m.parse()?,
            None => OutOfScope::default(),
        },
    };
    let child = ChildSpec {
        spec,
        ephemeral: is_ephemeral,
    };
    let body = child_body(
        &s,
        parent,
        child,
        id,
        now,
        attestation.into_iter().collect(),
    )
    .await?;
    let s256 = mission_s256(&body)?;
    let link = LinkClaims::for_child(&party(parent), &caller.claims.cnf.jkt, &body, &s256);
    let proposal =
        sign_proposal(&s.0.key, &s.0.issuer, &parent.body.id, &s256, now).map_err(|e| {
            tracing::error!(error = %e, "cannot sign a proposal");
            Problem::internal()
        })?;
    Ok(Json(DelegationProposal {
        mission: body,
        mission_s256: s256,
        link,
        proposal,
    }))
}

/// Commits a proposed child mission with the link the calling mission's
/// key signed; returns the child with its one-time start token.
#[utoipa::path(
    post,
    path = "/v1/mission/delegations",
    operation_id = "delegate",
    tag = "delegation",
    security(("mission_credential" = [], "dpop_proof" = [])),
    request_body = CommitDelegation,
    responses(
        (status = 201, description = "Delegated; `start_token` is shown this once.", body = CreatedMission),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn commit(
    State(s): State<AppState>,
    caller: MissionCaller,
    ApiJson(req): ApiJson<CommitDelegation>,
) -> Result<(StatusCode, Json<CreatedMission>), Problem> {
    let CommitDelegation {
        mission: body,
        link,
        proposal,
    } = req;
    let now = s.0.clock.now();
    let parent = &caller.mission;
    let bad = |m: &str| Problem::from(DelegationError::BadProposal(m.to_owned()));
    // Cheap checks first, the policies' compilation last. The proposal:
    // signed by this authority, recent, for this parent and this very body
    // (so its id and time are the ones the authority chose).
    let s256 = mission_s256(&body)?;
    let proposed = verify_proposal(&proposal, &s.0.key.jwks(), &s.0.issuer, now)?;
    if proposed.parent != parent.body.id {
        return Err(bad("it was proposed for another mission"));
    }
    if proposed.mission_s256 != s256 {
        return Err(bad("the body is not the one proposed"));
    }
    if body.parent().map(|p| &p.id) != Some(&parent.body.id) {
        return Err(bad("it is not a child of the calling mission"));
    }
    // The link: signed by the key bound to the parent (the one that proved
    // this request), binding exactly this parent and child.
    let (claims, signer) = verify_link(&link)?;
    if signer != caller.claims.cnf.jkt {
        return Err(DelegationError::BadLink(
            "it is not signed by the parent's mission key".into(),
        )
        .into());
    }
    let expected = LinkClaims::for_child(&party(parent), &caller.claims.cnf.jkt, &body, &s256);
    if !claims.binds_same(&expected) {
        return Err(
            DelegationError::BadLink("it does not bind this parent and child".into()).into(),
        );
    }
    if claims.iat.saturating_add(PROPOSAL_TTL_SECS) < now.0
        || claims.iat > now.0.saturating_add(mandate_core::FRESHNESS_WINDOW_SECS)
    {
        return Err(DelegationError::BadLink("it was not signed recently".into()).into());
    }
    // And still what this authority would delegate for the parent as it is
    // now (its budget left, its state, the agent's).
    let ephemeral = body.agent.is_ephemeral();
    if ephemeral && !body.agent.as_str().ends_with(&format!("@{}", body.id)) {
        return Err(bad("an ephemeral sub-agent is named after its own mission"));
    }
    let spec = MissionSpec {
        agent: body.agent.clone(),
        goal: body.goal.clone(),
        policies: body.policies.clone(),
        ttl_secs: body.expires_at.saturating_sub(body.created_at),
        budget: body.budget.requests,
        out_of_scope: body.out_of_scope,
    };
    let rebuilt = child_body(
        &s,
        parent,
        ChildSpec { spec, ephemeral },
        body.id.clone(),
        UnixTime(body.created_at),
        body.attestation.clone(),
    )
    .await?;
    if rebuilt != body {
        return Err(bad("it differs from what this authority would delegate"));
    }
    let (start_token, start_token_expires_at) = start_token(&s, now, body.expires_at)?;
    let Some(parent_jkt) = parent.jkt().cloned() else {
        return Err(Problem::internal());
    };
    s.0.store
        .delegate(&NewDelegation {
            mission: NewMission {
                body: body.clone(),
                s256: s256.clone(),
                start_token: start_token.hash(),
                start_token_expires_at,
            },
            parent_jkt,
            parent_budget: parent.body.budget.requests,
            link: link.trim().to_owned(),
            now,
        })
        .await?;
    tracing::info!(mission = %body.id, parent = %parent.body.id, agent = %body.agent, depth = body.depth(), "mission delegated");
    s.audit(
        "mission.delegated",
        serde_json::json!({
            "mission": body.id.as_str(), "mission_s256": &s256,
            "parent": parent.body.id.as_str(), "parent_s256": &parent.s256,
            "principal": body.principal.as_str(), "agent": body.agent.as_str(),
            "by": parent.body.agent.as_str(), "depth": body.depth(), "ephemeral": ephemeral,
            "goal": &body.goal, "expires_at": body.expires_at, "budget": body.budget.requests,
            "out_of_scope": body.out_of_scope, "attestation_required": &body.attestation,
            "link": link_digest(&link), "signed_by": caller.claims.cnf.jkt.as_str(),
        }),
    )
    .await?;
    Ok(created(
        body,
        s256,
        &start_token,
        start_token_expires_at,
        now,
    ))
}

/// The links of a delegated mission's chain, root first: link *i* was
/// signed by hop *i* to delegate hop *i + 1*, the last one delegated
/// `mission`.
pub(crate) async fn links_of(s: &AppState, mission: &Mission) -> Result<Vec<String>, Problem> {
    let mut out = Vec::with_capacity(mission.body.ancestors.len());
    let children = mission
        .body
        .ancestors
        .iter()
        .skip(1)
        .map(|r| &r.id)
        .chain(mission.body.parent().map(|_| &mission.body.id));
    for child in children {
        let link = s.0.store.delegation_link(child).await?.ok_or_else(|| {
            tracing::error!(mission = %child, "a delegated mission has no link");
            Problem::internal()
        })?;
        out.push(link);
    }
    Ok(out)
}

/// The hops a delegated mission's credential names: each ancestor with the
/// key bound to it, and the digest of each link.
pub(crate) async fn chain_of(
    s: &AppState,
    mission: &Mission,
) -> Result<(Vec<ChainHop>, Vec<String>), Problem> {
    let mut hops = Vec::with_capacity(mission.body.ancestors.len());
    for a in ancestors_of(s, mission).await? {
        let Some(jkt) = a.jkt().cloned() else {
            tracing::error!(mission = %mission.body.id, ancestor = %a.body.id, "an ancestor was never started");
            return Err(Problem::internal());
        };
        hops.push(ChainHop {
            mission_id: a.body.id.clone(),
            mission_s256: a.s256.clone(),
            agent: a.body.agent.clone(),
            jkt,
        });
    }
    let digests = links_of(s, mission)
        .await?
        .iter()
        .map(|l| link_digest(l))
        .collect();
    Ok((hops, digests))
}

/// The calling mission's delegation links, to present with its credential
/// (`mandate credential verify --chain` checks them offline).
#[utoipa::path(
    get,
    path = "/v1/mission/chain",
    operation_id = "current_chain",
    tag = "delegation",
    security(("mission_credential" = [], "dpop_proof" = [])),
    responses((status = 200, description = "The links, root first.", body = ChainView), Always, Unauthorized),
)]
pub(super) async fn chain(
    State(s): State<AppState>,
    caller: MissionCaller,
) -> Result<Json<ChainView>, Problem> {
    Ok(Json(ChainView {
        links: links_of(&s, &caller.mission).await?,
    }))
}

/// A mission and every mission delegated below it, parents first, for its
/// principal, its agent's owner, or an admin.
#[utoipa::path(
    get,
    path = "/v1/missions/{id}/tree",
    operation_id = "mission_tree",
    tag = "delegation",
    security(("api_token" = [])),
    params(("id" = MissionId, Path, description = "The mission's id.")),
    responses((status = 200, description = "The subtree, parents before children.", body = Vec<MissionView>), Always, Unauthorized, NotFound),
)]
pub(super) async fn tree(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<MissionView>>, Problem> {
    let tree = tree_for(&s, &caller.principal, &id).await?;
    let now = s.0.clock.now();
    Ok(Json(tree.iter().map(|m| mission_view(m, now)).collect()))
}

/// The mission `id` and every mission delegated below it, parents first,
/// if `principal` may manage it (its principal, its agent's owner, an
/// admin), else `not_found`: what `GET /v1/missions/{id}/tree` answers.
pub(crate) async fn tree_for(
    s: &AppState,
    principal: &mandate_store::Principal,
    id: &str,
) -> Result<Vec<Mission>, Problem> {
    let id: MissionId = id.parse()?;
    let tree = s.0.store.mission_tree(&id).await?;
    let Some(root) = tree.first() else {
        return Err(Problem::not_found("no such mission"));
    };
    if !may_manage_by(s, principal, root).await? {
        return Err(Problem::not_found("no such mission"));
    }
    Ok(tree)
}
