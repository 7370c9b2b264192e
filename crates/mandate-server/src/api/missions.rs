use axum::Json;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use mandate_core::wire::{
    CreateMissionRequest, CreatedMission, CredentialResponse, EndMissionRequest, GatewayLimits,
    IntrospectRequest, IntrospectResponse, McpServerLimit, MissionView, RouteLimit,
    StartMissionRequest,
};
use mandate_core::{
    AgentName, CredentialError, EndReason, Mission, MissionBody, MissionId, MissionPolicies,
    MissionSpec, MissionState, OutOfScope, ProofError, Role, SecretToken, TokenKind,
    issue_chained_credential, mission_s256,
};
use mandate_store::{NewMission, Principal};
use serde::Deserialize;

use super::extract::{
    ApiJson, ApiPath, ApiQuery, Caller, MissionCaller, Presented, check_presented, is_json,
    json_object, remember_proof, verify_request_proof,
};
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use super::{
    DEFAULT_MISSION_BUDGET, DEFAULT_MISSION_TTL_SECS, free_text, mission_view, on_large_stack,
};
use crate::problem::Problem;
use crate::state::AppState;

/// Whether `caller` may see and end `mission`: its principal, the owner of
/// its agent, or an admin.
pub(super) async fn may_manage(
    s: &AppState,
    caller: &Caller,
    mission: &Mission,
) -> Result<bool, Problem> {
    may_manage_by(s, &caller.principal, mission).await
}

/// Whether `principal` may see and end `mission` (as [`may_manage`]).
pub(crate) async fn may_manage_by(
    s: &AppState,
    principal: &Principal,
    mission: &Mission,
) -> Result<bool, Problem> {
    if principal.role == Role::Admin || principal.name == mission.body.principal {
        return Ok(true);
    }
    let agent = s.0.store.agent(&mission.body.agent).await?;
    Ok(agent.is_some_and(|a| a.owner == principal.name))
}

/// The mission `id` if `principal` may see it, else `not_found` (as
/// `GET /v1/missions/{id}`).
pub(crate) async fn mission_for(
    s: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Mission, Problem> {
    let mission = load(s, id).await?;
    if !may_manage_by(s, principal, &mission).await? {
        return Err(Problem::not_found("no such mission"));
    }
    Ok(mission)
}

/// The missions `principal` delegated (admins: all), newest first: what
/// `GET /v1/missions` lists.
pub(crate) async fn missions_for(
    s: &AppState,
    principal: &Principal,
    limit: u32,
) -> Result<Vec<Mission>, Problem> {
    let only = (principal.role != Role::Admin).then_some(&principal.name);
    Ok(s.0.store.missions(only, limit).await?)
}

async fn load(s: &AppState, id: &str) -> Result<Mission, Problem> {
    let id: MissionId = id.parse()?;
    s.0.store
        .mission(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such mission"))
}

/// Creates a mission for one of the caller's agents (admins: any) and
/// returns it with a one-time `start_token`.
#[utoipa::path(
    post,
    path = "/v1/missions",
    operation_id = "create_mission",
    tag = "missions",
    security(("api_token" = [])),
    request_body = CreateMissionRequest,
    responses(
        (status = 201, description = "Created; `start_token` is shown this once.", body = CreatedMission),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateMissionRequest>,
) -> Result<(StatusCode, Json<CreatedMission>), Problem> {
    let CreateMissionRequest {
        agent,
        goal,
        scope,
        boundaries,
        escalations,
        ttl_seconds,
        budget,
        out_of_scope,
    } = req;
    let agent_name: AgentName = agent.try_into()?;
    let agent =
        s.0.store
            .agent(&agent_name)
            .await?
            .ok_or_else(|| Problem::not_found("no such agent"))?;
    if agent.owner != caller.principal.name && caller.principal.role != Role::Admin {
        return Err(Problem::forbidden(format!(
            "`{agent_name}` is not your agent"
        )));
    }
    if agent.revoked_at.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "revoked",
            format!("agent `{agent_name}` is revoked"),
        ));
    }
    let out_of_scope: OutOfScope = match out_of_scope {
        Some(m) => m.parse()?,
        None => OutOfScope::default(),
    };
    let spec = MissionSpec {
        agent: agent_name,
        goal,
        policies: MissionPolicies {
            scope,
            boundaries,
            escalations,
        },
        ttl_secs: ttl_seconds.unwrap_or(DEFAULT_MISSION_TTL_SECS),
        budget: budget.unwrap_or(DEFAULT_MISSION_BUDGET),
        out_of_scope,
    };
    let rng = s.0.rng.as_ref();
    let now = s.0.clock.now();
    let id = MissionId::generate(rng).map_err(|_| Problem::internal())?;
    let (issuer, principal, limits) = (
        s.0.issuer.clone(),
        caller.principal.name.clone(),
        s.0.mission_limits,
    );
    // Validated against the schema of the organisation's current policies.
    let org = s.org()?;
    let body = on_large_stack(move || {
        let schema = org.loaded.policies.schema();
        MissionBody::new(spec, id, &issuer, principal, now, limits, Some(schema))
    })
    .await??;
    // What the agent's registration requires now is part of the mission.
    let mut body = body;
    if let Some(r) = agent.attestation {
        body.require_attestation(r)?;
    }
    let s256 = mission_s256(&body)?;
    let (start_token, start_token_expires_at) = start_token(&s, now, body.expires_at)?;
    s.0.store
        .create_mission(&NewMission {
            body: body.clone(),
            s256: s256.clone(),
            start_token: start_token.hash(),
            start_token_expires_at,
        })
        .await?;
    tracing::info!(mission = %body.id, principal = %body.principal, agent = %body.agent, "mission created");
    s.audit(
        "mission.created",
        serde_json::json!({
            "mission": body.id.as_str(), "mission_s256": &s256, "principal": body.principal.as_str(),
            "agent": body.agent.as_str(), "goal": &body.goal, "expires_at": body.expires_at,
            "budget": body.budget.requests, "out_of_scope": body.out_of_scope,
            "attestation_required": &body.attestation,
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

/// A one-time start token for a mission that ends at `expires_at`, and
/// when the token expires (never after the mission).
pub(super) fn start_token(
    s: &AppState,
    now: mandate_core::UnixTime,
    expires_at: u64,
) -> Result<(SecretToken, mandate_core::UnixTime), Problem> {
    let token = SecretToken::generate(TokenKind::Start, s.0.rng.as_ref())
        .map_err(|_| Problem::internal())?;
    let until = now
        .plus(s.0.start_token_ttl_secs)
        .min(mandate_core::UnixTime(expires_at));
    Ok((token, until))
}

/// `201`: a mission just stored, ready to start, with its start token
/// (shown this once).
pub(super) fn created(
    body: MissionBody,
    s256: String,
    start_token: &SecretToken,
    start_token_expires_at: mandate_core::UnixTime,
    now: mandate_core::UnixTime,
) -> (StatusCode, Json<CreatedMission>) {
    let mission = Mission {
        body,
        s256,
        status: mandate_core::MissionStatus::Ready,
        attestation: None,
        taint: None,
    };
    (
        StatusCode::CREATED,
        Json(CreatedMission {
            mission: mission_view(&mission, now),
            start_token: start_token.expose().to_owned(),
            start_token_expires_at: start_token_expires_at.0,
        }),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// At most this many (default 100, at most 1,000).
    limit: Option<u32>,
}

/// The missions the caller delegated (admins: all), newest first.
#[utoipa::path(
    get,
    path = "/v1/missions",
    operation_id = "list_missions",
    tag = "missions",
    security(("api_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "The missions.", body = Vec<MissionView>), Always, Unauthorized),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<MissionView>>, Problem> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let now = s.0.clock.now();
    Ok(Json(
        missions_for(&s, &caller.principal, limit)
            .await?
            .iter()
            .map(|m| mission_view(m, now))
            .collect(),
    ))
}

/// One mission, for its principal, its agent's owner, or an admin.
#[utoipa::path(
    get,
    path = "/v1/missions/{id}",
    operation_id = "show_mission",
    tag = "missions",
    security(("api_token" = [])),
    params(("id" = MissionId, Path, description = "The mission's id.")),
    responses(
        (status = 200, description = "The mission.", body = MissionView),
        (status = 405, description = "`GET /v1/missions/start`: `start` is no mission id but the start endpoint, which takes `POST` only.",
            body = Problem, content_type = "application/problem+json"),
        Always, Unauthorized, NotFound,
    ),
)]
pub(super) async fn show(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MissionView>, Problem> {
    let mission = mission_for(&s, &caller.principal, &id).await?;
    Ok(Json(mission_view(&mission, s.0.clock.now())))
}

/// Issues (and records) a credential for `mission` bound to `jkt`.
async fn credential_for(
    s: &AppState,
    mission: &Mission,
    mission_key: &mandate_core::Ed25519Jwk,
) -> Result<CredentialResponse, Problem> {
    let now = s.0.clock.now();
    // A delegated mission's credential names its chain.
    let (chain, links) = super::delegations::chain_of(s, mission).await?;
    let issued = issue_chained_credential(
        &s.0.key,
        mission,
        mission_key,
        now,
        s.0.credential_ttl_secs,
        s.0.rng.as_ref(),
        chain,
        links,
        Some(s.org()?.loaded.policies.digest().to_owned()),
    )
    .map_err(|e| match e {
        mandate_core::KeyError::MissionExpired => CredentialError::MissionEnded.into(),
        other => {
            tracing::error!(error = %other, "credential issuance failed");
            Problem::internal()
        }
    })?;
    let c = &issued.claims;
    s.0.store
        .record_credential(
            &c.jti,
            &c.mission_id,
            &c.cnf.jkt,
            mandate_core::UnixTime(c.iat),
            mandate_core::UnixTime(c.exp),
        )
        .await?;
    tracing::info!(mission = %c.mission_id, jti = %c.jti, exp = c.exp, "mission credential issued");
    s.audit(
        "credential.issued",
        serde_json::json!({
            "mission": c.mission_id.as_str(), "mission_s256": &c.mission_s256, "principal": c.sub.as_str(),
            "agent": c.act.sub.as_str(), "credential": &c.jti, "jkt": c.cnf.jkt.as_str(), "iat": c.iat, "exp": c.exp,
            "depth": mission.body.depth(), "links": &c.links, "policy_s256": &c.policy_s256,
            "attestation": &c.att,
        }),
    )
    .await?;
    Ok(CredentialResponse {
        credential: issued.token,
        expires_at: c.exp,
        mission: mission_view(mission, now),
    })
}

/// The identity disc: the agent presents the start token and proves it
/// holds a fresh mission key; the key is bound and a credential issued.
#[utoipa::path(
    post,
    path = "/v1/missions/start",
    operation_id = "start_mission",
    tag = "missions",
    security(("dpop_proof" = [])),
    request_body = StartMissionRequest,
    responses(
        (status = 201, description = "Started: the mission key is bound and a credential issued.", body = CredentialResponse),
        Always, Unauthorized, Conflict, JsonBody,
    ),
)]
pub(super) async fn start(
    State(s): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiJson(req): ApiJson<StartMissionRequest>,
) -> Result<(StatusCode, Json<CredentialResponse>), Problem> {
    let StartMissionRequest {
        start_token,
        evidence,
    } = req;
    let token = SecretToken::parse(TokenKind::Start, start_token.trim())
        .ok_or(mandate_store::StartError::Unknown)?;
    // No replay cache here: the start token is single use, so a replayed
    // proof finds it consumed (`start_token_used`).
    let proof = verify_request_proof(&s, &headers, &method, uri.path(), Some(token.expose()))?;
    let now = s.0.clock.now();
    // Evidence is checked before the token is consumed: refused evidence
    // leaves the mission ready to start.
    let attestation = attest(&s, &token, &proof.jkt, evidence.as_ref(), now).await?;
    let mission =
        s.0.store
            .start_attested(&token.hash(), &proof.jkt, now, attestation.as_ref())
            .await?;
    tracing::info!(mission = %mission.body.id, jkt = %proof.jkt, attested = attestation.is_some(), "mission started");
    s.audit(
        "mission.started",
        serde_json::json!({
            "mission": mission.body.id.as_str(), "mission_s256": &mission.s256,
            "principal": mission.body.principal.as_str(), "agent": mission.body.agent.as_str(), "jkt": proof.jkt.as_str(),
            "attestation": &mission.attestation,
        }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(credential_for(&s, &mission, &proof.jwk).await?),
    ))
}

/// Checks the evidence presented to start the mission `token` names, for
/// the mission key `jkt`, against what the mission and its agent's
/// registration require. `None`: no evidence, and none required.
async fn attest(
    s: &AppState,
    token: &SecretToken,
    jkt: &mandate_core::Thumbprint,
    evidence: Option<&mandate_core::Evidence>,
    now: mandate_core::UnixTime,
) -> Result<Option<mandate_core::Attestation>, Problem> {
    let pending = s.0.store.startable(&token.hash(), now).await?;
    let mut required = pending.body.attestation.clone();
    if !pending.body.agent.is_ephemeral()
        && let Some(r) =
            s.0.store
                .agent(&pending.body.agent)
                .await?
                .and_then(|a| a.attestation)
        && !required.contains(&r)
    {
        required.push(r);
    }
    let checked = match evidence {
        None if required.is_empty() => return Ok(None),
        None => Err(mandate_core::AttestationError::Required(format!(
            "agent `{}` must present evidence bound to its mission key to start mission `{}`: {}",
            pending.body.agent,
            pending.body.id,
            required
                .iter()
                .map(mandate_core::AttestationRequirement::describe)
                .collect::<Vec<_>>()
                .join("; and ")
        ))),
        Some(evidence) => {
            let anchors = s.0.anchors.get();
            mandate_core::verify_evidence(evidence, &anchors, jkt, now)
                .and_then(|a| required.iter().try_for_each(|r| r.check(&a)).map(|()| a))
        }
    };
    match checked {
        Ok(a) => Ok(Some(a)),
        Err(e) => {
            tracing::warn!(mission = %pending.body.id, agent = %pending.body.agent, code = e.code(), error = %e, "attestation refused");
            // Recorded once per mission and reason: the caller holds the
            // start token and proved a key, but may retry at will.
            if s.first_anonymous_refusal(pending.body.id.as_str(), e.code()) {
                s.audit(
                    "attestation.refused",
                    serde_json::json!({
                        "mission": pending.body.id.as_str(), "mission_s256": &pending.s256,
                        "principal": pending.body.principal.as_str(), "agent": pending.body.agent.as_str(),
                        "jkt": jkt.as_str(), "code": e.code(), "detail": e.to_string(),
                        "evidence": evidence.map(|ev| match ev {
                            mandate_core::Evidence::JwtSvid { .. } => "jwt_svid",
                            mandate_core::Evidence::LaunchStatement { .. } => "launch_statement",
                        }),
                    }),
                )
                .await?;
            }
            Err(e.into())
        }
    }
}

/// A fresh credential for a running mission, by proof of possession of the
/// mission key bound at start.
#[utoipa::path(
    post,
    path = "/v1/missions/{id}/credential",
    operation_id = "refresh_credential",
    tag = "missions",
    security(("dpop_proof" = [])),
    params(("id" = MissionId, Path, description = "The mission's id.")),
    responses(
        (status = 200, description = "A fresh credential.", body = CredentialResponse),
        Always, Unauthorized, NotFound,
    ),
)]
pub(super) async fn refresh(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<CredentialResponse>, Problem> {
    let proof = verify_request_proof(&s, &headers, &method, uri.path(), None)?;
    let mission = load(&s, &id).await?;
    mission.check_active(s.0.clock.now())?;
    if mission.jkt() != Some(&proof.jkt) {
        return Err(ProofError::KeyMismatch.into());
    }
    remember_proof(&s, &proof, &mission, &method, uri.path()).await?;
    Ok(Json(credential_for(&s, &mission, &proof.jwk).await?))
}

/// Ends a mission: by its agent (`Authorization: DPoP` + proof) or by a
/// principal who may manage it (`Authorization: Bearer`).
#[utoipa::path(
    post,
    path = "/v1/missions/{id}/end",
    operation_id = "end_mission",
    tag = "missions",
    security(("api_token" = []), ("mission_credential" = [], "dpop_proof" = [])),
    params(("id" = MissionId, Path, description = "The mission's id.")),
    request_body(content = Option<EndMissionRequest>, description = "Optional; an empty body is no reason."),
    responses(
        (status = 200, description = "Ended (`completed`).", body = MissionView),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn end(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> Result<Json<MissionView>, Problem> {
    let (mut parts, body) = req.into_parts();
    let bytes =
        super::extract::read_body(axum::extract::Request::from_parts(parts.clone(), body), &s)
            .await?;
    let EndMissionRequest { reason } = if bytes.is_empty() || bytes.trim_ascii() == b"null" {
        EndMissionRequest::default()
    } else if is_json(&parts.headers) {
        json_object(&bytes)?
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be `application/json`",
        ));
    };
    let by_agent = parts
        .headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"DPoP "));
    let (mission, by) = if by_agent {
        let caller = MissionCaller::from_request_parts(&mut parts, &s).await?;
        if caller.mission.body.id.as_str() != id {
            return Err(Problem::forbidden(
                "a mission credential can end only its own mission",
            ));
        }
        let by = format!("agent:{}", caller.claims.act.sub);
        (caller.mission, by)
    } else {
        let caller = Caller::from_request_parts(&mut parts, &s).await?;
        let mission = load(&s, &id).await?;
        if !may_manage(&s, &caller, &mission).await? {
            return Err(Problem::not_found("no such mission"));
        }
        (mission, format!("principal:{}", caller.principal.name))
    };
    end_by(&s, &mission, by, reason).await.map(Json)
}

/// Ends `mission` (`completed`) for `by` (`principal:NAME` or
/// `agent:NAME`), whoever asks (the API, the console), once the caller's
/// right to has been checked: the same store change and audit record.
pub(crate) async fn end_by(
    s: &AppState,
    mission: &Mission,
    by: String,
    reason: Option<String>,
) -> Result<MissionView, Problem> {
    let id = mission.body.id.as_str();
    let now = s.0.clock.now();
    if mission.state_at(now).0 == MissionState::Ended {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "mission_ended",
            format!("mission `{id}` has already ended"),
        ));
    }
    let reason = free_text("reason", reason, 200)?;
    let by = if reason.is_empty() {
        by
    } else {
        format!("{by} ({reason})")
    };
    let (ended, forgotten) =
        s.0.store
            .end_mission_forgetting(&mission.body.id, EndReason::Completed, &by, now)
            .await?;
    tracing::info!(mission = %ended.body.id, by = %by, "mission ended");
    s.audit(
        "mission.ended",
        serde_json::json!({ "mission": ended.body.id.as_str(), "mission_s256": &ended.s256, "by": &by, "reason": "completed" }),
    )
    .await?;
    super::memory::record_deleted(s, &forgotten, "mission ended").await?;
    Ok(mission_view(&ended, now))
}

/// The calling agent's own mission.
#[utoipa::path(
    get,
    path = "/v1/mission",
    operation_id = "current_mission",
    tag = "missions",
    security(("mission_credential" = [], "dpop_proof" = [])),
    responses((status = 200, description = "The caller's mission.", body = MissionView), Always, Unauthorized),
)]
pub(super) async fn current(State(s): State<AppState>, caller: MissionCaller) -> Json<MissionView> {
    Json(mission_view(&caller.mission, s.0.clock.now()))
}

/// What the gateways serve the calling mission's agent, with each route's
/// body limit and each MCP server's message limit, so a client signing on
/// its behalf refuses an oversize request before anything is signed or
/// sent. Names and limits only: no upstream, no rule, no policy.
#[utoipa::path(
    get,
    path = "/v1/mission/limits",
    operation_id = "current_limits",
    tag = "missions",
    security(("mission_credential" = [], "dpop_proof" = [])),
    responses((status = 200, description = "The routes and MCP servers, by name, with their limits.", body = GatewayLimits), Always, Unauthorized),
)]
pub(super) async fn limits(
    State(s): State<AppState>,
    _caller: MissionCaller,
) -> Json<GatewayLimits> {
    // Read once: a reload meanwhile changes the next answer, not this one.
    let gateways = s.gateways();
    let size = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let mut routes: Vec<RouteLimit> = gateways
        .routes
        .values()
        .map(|r| RouteLimit {
            name: r.name().to_owned(),
            max_body_bytes: size(r.max_body_bytes()),
        })
        .collect();
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut mcp_servers: Vec<McpServerLimit> = gateways
        .mcp_servers
        .values()
        .map(|m| McpServerLimit {
            name: m.name().to_owned(),
            max_message_bytes: size(m.max_message_bytes()),
        })
        .collect();
    mcp_servers.sort_by(|a, b| a.name.cmp(&b.name));
    Json(GatewayLimits {
        routes,
        mcp_servers,
    })
}

/// For relying parties: is this credential usable right now (signature,
/// expiry, and the live state of its mission)?
#[utoipa::path(
    post,
    path = "/v1/credentials/introspect",
    operation_id = "introspect",
    tag = "missions",
    request_body = IntrospectRequest,
    responses(
        (status = 200, description = "Whether the credential is usable now, and if not why.", body = IntrospectResponse),
        Always, JsonBody,
    ),
)]
pub(super) async fn introspect(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<IntrospectRequest>,
) -> Result<Json<IntrospectResponse>, Problem> {
    let now = s.0.clock.now();
    let inactive = |e: CredentialError| {
        Json(IntrospectResponse {
            active: false,
            code: Some(e.code().to_owned()),
            detail: Some(e.to_string()),
            claims: None,
            mission_state: None,
        })
    };
    let (claims, mission) = match check_presented(&s, &req.credential).await? {
        Presented::Valid { claims, mission } => (claims, *mission),
        Presented::Refused { error, .. } => return Ok(inactive(error)),
    };
    Ok(Json(IntrospectResponse {
        active: true,
        code: None,
        detail: None,
        mission_state: Some(mission.mission().state_at(now).0),
        claims: Some(claims),
    }))
}
