use axum::Json;
use axum::extract::State;
use mandate_core::wire::{RevocationRequest, RevocationResponse};
use mandate_core::{
    AgentName, ApiTokenId, EndReason, MissionId, MissionStatus, PrincipalName, Role,
};
use mandate_store::{Principal, Revocation, RevocationKind, RevocationSummary};

use super::extract::{ApiJson, Caller};
use super::free_text;
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use crate::problem::Problem;
use crate::state::AppState;

/// Revokes a mission, an agent, a principal or an API token, effective on
/// the very next request: every check reads the store. Revoking an agent or
/// a principal ends all their missions.
///
/// Admins revoke anything. Members revoke their own missions (as principal
/// or agent owner), their own agents, their own tokens, and themselves.
#[utoipa::path(
    post,
    path = "/v1/revocations",
    operation_id = "revoke",
    tag = "revocations",
    security(("api_token" = [])),
    request_body = RevocationRequest,
    responses(
        (status = 200, description = "What the revocation ended.", body = RevocationResponse),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RevocationRequest>,
) -> Result<Json<RevocationResponse>, Problem> {
    revoke_by(&s, &caller.principal, req).await.map(Json)
}

/// A revocation by `principal`, whoever asks for it (the API, the
/// console): the same checks, the same store change and audit record.
pub(crate) async fn revoke_by(
    s: &AppState,
    principal: &Principal,
    req: RevocationRequest,
) -> Result<RevocationResponse, Problem> {
    let RevocationRequest { kind, id, reason } = req;
    let kind = RevocationKind::parse(&kind).ok_or_else(|| {
        Problem::bad_request(
            "invalid_request",
            "`kind` must be `mission`, `agent`, `principal` or `token`",
        )
    })?;
    let reason = free_text("reason", reason, 500)?;
    let me = &principal.name;
    let admin = principal.role == Role::Admin;
    let not_found = || Problem::not_found(format!("no such {}", kind.as_str()));
    // Normalize the target and check the caller may revoke it. Members get
    // `not_found` for what is not theirs, as for reads.
    let target = match kind {
        RevocationKind::Mission => {
            let mid: MissionId = id.parse()?;
            let m = s.0.store.mission(&mid).await?.ok_or_else(not_found)?;
            if !super::missions::may_manage_by(s, principal, &m).await? {
                return Err(not_found());
            }
            mid.to_string()
        }
        RevocationKind::Agent => {
            let name: AgentName = id.parse()?;
            let a = s.0.store.agent(&name).await?.ok_or_else(not_found)?;
            if !(admin || &a.owner == me) {
                return Err(not_found());
            }
            name.to_string()
        }
        RevocationKind::Principal => {
            let name: PrincipalName = id.parse()?;
            if !(admin || &name == me) {
                return Err(Problem::forbidden("members can revoke only themselves"));
            }
            name.to_string()
        }
        RevocationKind::Token => {
            let tid: ApiTokenId = id.parse()?;
            if !admin && !s.0.store.api_tokens(me).await?.iter().any(|t| t.id == tid) {
                return Err(not_found());
            }
            tid.to_string()
        }
    };
    let rev = Revocation {
        kind,
        target: target.clone(),
        reason,
        revoked_by: me.clone(),
        at: s.0.clock.now(),
    };
    let summary = if kind == RevocationKind::Token {
        let t = s.0.store.revoke_api_token(&target.parse()?, &rev).await?;
        RevocationSummary {
            tokens: u64::from(t.revoked_at == Some(rev.at)),
            ..RevocationSummary::default()
        }
    } else {
        s.0.store.revoke(&rev).await?
    };
    tracing::warn!(
        kind = kind.as_str(),
        target = %target,
        by = %me,
        missions = summary.missions.len(),
        agents = summary.agents.len(),
        "revoked"
    );
    s.audit(
        "revocation",
        serde_json::json!({
            "kind": kind.as_str(), "target": &target, "by": me.as_str(), "reason": &rev.reason,
            "missions": summary.missions.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "agents": summary.agents.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "principals": summary.principals.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "tokens": summary.tokens,
        }),
    )
    .await?;
    super::memory::record_deleted(s, &summary.memory, "revoked").await?;
    ended_by_revocation(s, &summary.missions, me, kind, &target).await;
    Ok(RevocationResponse {
        kind: kind.as_str().to_owned(),
        id: target,
        missions: summary.missions.iter().map(ToString::to_string).collect(),
        agents: summary.agents.iter().map(ToString::to_string).collect(),
        principals: summary.principals.iter().map(ToString::to_string).collect(),
        tokens: summary.tokens,
    })
}

/// A record of its own for each mission the revocation ended, naming it,
/// so the mission's history (`mandate audit list --mission M`) says how it
/// ended, as when its owner ends it or a denied approval does. Only the
/// missions it revoked: one already past its expiry is ended `expired` by
/// the same change, and says so. Written together (the audit writer
/// commits them in one group); the revocation and its own record are
/// durable already, so a record that cannot be written is logged, not
/// answered as a failed revocation.
async fn ended_by_revocation(
    s: &AppState,
    missions: &[MissionId],
    by: &PrincipalName,
    kind: RevocationKind,
    target: &str,
) {
    let records = missions.iter().map(|m| async move {
        let mission = s.0.store.mission(m).await.map_err(Problem::from)?;
        let Some(mission) = mission.filter(|m| {
            matches!(
                m.status,
                MissionStatus::Ended {
                    reason: EndReason::Revoked,
                    ..
                }
            )
        }) else {
            return Ok::<(), Problem>(());
        };
        s.audit(
            "mission.ended",
            serde_json::json!({
                "mission": m.as_str(),
                "mission_s256": mission.s256,
                "by": by.as_str(),
                "reason": "revoked",
                "revocation": { "kind": kind.as_str(), "target": target },
            }),
        )
        .await
        .map(|_| ())
    });
    for (m, written) in missions
        .iter()
        .zip(futures_util::future::join_all(records).await)
    {
        if let Err(e) = written {
            tracing::error!(mission = %m, error = %e.detail, "cannot record that the revocation ended this mission");
        }
    }
}
