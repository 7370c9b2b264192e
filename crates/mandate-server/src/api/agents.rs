use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_core::wire::{AgentView, RegisterAgentRequest, SetAttestationRequest};
use mandate_core::{AgentName, AttestationRequirement, PrincipalName, Role};
use mandate_store::{Agent, Principal};

use super::extract::{ApiJson, ApiPath, Caller};
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use super::{agent_view, free_text};
use crate::problem::Problem;
use crate::state::AppState;

const MAX_DESCRIPTION_CHARS: usize = 1_000;

/// Registers an agent. It gets no permission of any kind: only missions
/// delegated to it, while they run, give it authority.
#[utoipa::path(
    post,
    path = "/v1/agents",
    operation_id = "register_agent",
    tag = "agents",
    security(("api_token" = [])),
    request_body = RegisterAgentRequest,
    responses(
        (status = 201, description = "Registered.", body = AgentView),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn register(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterAgentRequest>,
) -> Result<(StatusCode, Json<AgentView>), Problem> {
    let RegisterAgentRequest {
        name,
        owner,
        description,
        attestation,
    } = req;
    let name: AgentName = name.try_into()?;
    if name.is_ephemeral() {
        return Err(Problem::bad_request(
            "invalid_request",
            "`label@mission` names an ephemeral sub-agent, which is never registered",
        ));
    }
    let owner: PrincipalName = match owner {
        Some(o) => o.try_into()?,
        None => caller.principal.name.clone(),
    };
    if owner != caller.principal.name && caller.principal.role != Role::Admin {
        return Err(Problem::forbidden(
            "members register agents for themselves only",
        ));
    }
    let description = free_text("description", description, MAX_DESCRIPTION_CHARS)?;
    if let Some(r) = &attestation {
        check_requirement(&s, r)?;
    }
    let agent = Agent {
        name,
        owner,
        description,
        created_at: s.0.clock.now(),
        revoked_at: None,
        attestation,
    };
    s.0.store.create_agent(&agent).await?;
    tracing::info!(agent = %agent.name, owner = %agent.owner, "agent registered");
    s.audit(
        "agent.registered",
        serde_json::json!({ "agent": agent.name.as_str(), "owner": agent.owner.as_str(), "by": caller.principal.name.as_str(), "attestation": &agent.attestation }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(agent_view(&agent))))
}

/// Refuses a requirement no evidence could ever satisfy here: malformed,
/// or naming a trust domain without a bundle or a launcher this authority
/// does not know (every mission of the agent would be refused).
fn check_requirement(s: &AppState, r: &AttestationRequirement) -> Result<(), Problem> {
    s.0.attestation
        .check_requirement(r)
        .map_err(|m| Problem::bad_request("invalid_request", format!("attestation: {m}")))
}

/// Replaces an agent's attestation requirement (`null`: none), by its
/// owner or an admin. Missions already created keep what they require;
/// from now on no mission of the agent starts without what this one says.
#[utoipa::path(
    put,
    path = "/v1/agents/{name}/attestation",
    operation_id = "set_agent_attestation",
    tag = "agents",
    security(("api_token" = [])),
    params(("name" = AgentName, Path, description = "The agent's name.")),
    request_body = SetAttestationRequest,
    responses(
        (status = 200, description = "The agent as it now is.", body = AgentView),
        Always, Unauthorized, Forbidden, NotFound, JsonBody,
    ),
)]
pub(super) async fn set_attestation(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SetAttestationRequest>,
) -> Result<Json<AgentView>, Problem> {
    let name: AgentName = name.try_into()?;
    let agent =
        s.0.store
            .agent(&name)
            .await?
            .filter(|a| !a.name.is_ephemeral())
            .ok_or_else(|| Problem::not_found("no such agent"))?;
    if agent.owner != caller.principal.name && caller.principal.role != Role::Admin {
        return Err(Problem::not_found("no such agent"));
    }
    if let Some(r) = &req.attestation {
        check_requirement(&s, r)?;
    }
    let agent =
        s.0.store
            .set_agent_attestation(&name, req.attestation.as_ref())
            .await?;
    tracing::info!(agent = %agent.name, "agent attestation requirement set");
    s.audit(
        "agent.attestation_set",
        serde_json::json!({ "agent": agent.name.as_str(), "by": caller.principal.name.as_str(), "attestation": &agent.attestation }),
    )
    .await?;
    Ok(Json(agent_view(&agent)))
}

/// The caller's agents (admins: all).
#[utoipa::path(
    get,
    path = "/v1/agents",
    operation_id = "list_agents",
    tag = "agents",
    security(("api_token" = [])),
    responses((status = 200, description = "The agents.", body = Vec<AgentView>), Always, Unauthorized),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AgentView>>, Problem> {
    Ok(Json(
        agents_for(&s, &caller.principal)
            .await?
            .iter()
            .map(agent_view)
            .collect(),
    ))
}

/// The agents `principal` owns (admins: all), by name: what
/// `GET /v1/agents` lists.
pub(crate) async fn agents_for(s: &AppState, principal: &Principal) -> Result<Vec<Agent>, Problem> {
    let owner = (principal.role != Role::Admin).then_some(&principal.name);
    Ok(s.0.store.agents(owner).await?)
}

/// The agent `name` if `principal` owns it (admins: any), else
/// `not_found`: what `GET /v1/agents/{name}` shows.
pub(crate) async fn agent_for(
    s: &AppState,
    principal: &Principal,
    name: &str,
) -> Result<Agent, Problem> {
    let name: AgentName = name.parse()?;
    let agent =
        s.0.store
            .agent(&name)
            .await?
            .ok_or_else(|| Problem::not_found("no such agent"))?;
    if agent.owner != principal.name && principal.role != Role::Admin {
        return Err(Problem::not_found("no such agent"));
    }
    Ok(agent)
}

/// One agent, if the caller owns it (admins: any).
#[utoipa::path(
    get,
    path = "/v1/agents/{name}",
    operation_id = "show_agent",
    tag = "agents",
    security(("api_token" = [])),
    params(("name" = AgentName, Path, description = "The agent's name.")),
    responses((status = 200, description = "The agent.", body = AgentView), Always, Unauthorized, NotFound),
)]
pub(super) async fn show(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AgentView>, Problem> {
    Ok(Json(agent_view(
        &agent_for(&s, &caller.principal, &name).await?,
    )))
}
