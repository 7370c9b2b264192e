//! The console's missions: the list, one mission's page, and revoking it
//! or ending it (each after a confirmation page) through the same code as
//! `POST /v1/revocations` and `POST /v1/missions/{id}/end`.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::wire::RevocationRequest;
use mandate_core::{Mission, MissionState};

use super::pages::{Hop, Item, chain, html, when};
use super::{ConsoleError, signed_in, signed_in_post};
use crate::state::AppState;

/// Most missions the list shows (as `GET /v1/missions` by default).
const LIST_LIMIT: u32 = 100;

/// One mission as the console shows it.
pub(crate) struct Row {
    pub id: String,
    pub state: String,
    pub end_reason: String,
    pub goal: String,
    pub principal: String,
    pub agent: String,
    pub used: u64,
    pub budget: u64,
    pub expires: String,
    pub grants: Vec<GrantRow>,
    pub ended: bool,
}

pub(crate) struct GrantRow {
    pub id: String,
    pub scope: &'static str,
    pub covers: String,
    pub created_by: String,
}

async fn row(s: &AppState, m: &Mission) -> Result<Row, ConsoleError> {
    let now = s.0.clock.now();
    let v = crate::api::mission_view(m, now);
    let used = s.0.store.budget_used(&m.body.id).await?;
    let ended = v.state == MissionState::Ended;
    let grants = if ended {
        Vec::new()
    } else {
        s.0.store
            .live_grants(&m.body.id, now)
            .await?
            .into_iter()
            .map(|g| GrantRow {
                id: g.id,
                scope: g.scope.as_str(),
                covers: if g.policy.is_empty() {
                    g.request_digest
                        .map(|d| format!("the call with digest {d}"))
                        .unwrap_or_default()
                } else {
                    g.policy
                },
                created_by: g.created_by,
            })
            .collect()
    };
    Ok(Row {
        state: state_name(v.state).to_owned(),
        end_reason: v
            .end_reason
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        id: v.id,
        goal: v.goal,
        principal: v.principal,
        agent: v.agent,
        used,
        budget: v.budget,
        expires: when(v.expires_at),
        grants,
        ended,
    })
}

#[derive(Template)]
#[template(path = "console/missions.html")]
struct MissionsPage<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    missions: Vec<Row>,
}

/// A mission delegated below the one a page shows, as
/// `GET /v1/missions/{id}/tree` returns it.
pub(crate) struct Delegated {
    pub id: String,
    pub parent: String,
    /// Hops below the page's mission (1: its child).
    pub depth: u32,
    pub agent: String,
    pub state: String,
    pub end_reason: String,
    pub goal: String,
    pub budget: u64,
    pub scope: String,
}

/// An open MCP session of the mission, as
/// `GET /v1/missions/{id}/mcp/sessions` returns it.
pub(crate) struct McpSession {
    pub server: String,
    pub session: String,
    pub opened: String,
    pub last_used: String,
    pub in_flight: u64,
    pub stream_open: bool,
}

#[derive(Template)]
#[template(path = "console/mission.html")]
struct MissionPage<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    m: Row,
    scope: String,
    boundaries: String,
    escalations: String,
    approvals: Vec<Item>,
    chain: Vec<Hop>,
    below: Vec<Delegated>,
    sessions: Vec<McpSession>,
    node: String,
}

fn state_name(s: MissionState) -> &'static str {
    match s {
        MissionState::Ready => "ready",
        MissionState::Active => "active",
        MissionState::Ended => "ended",
    }
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    m: Row,
    /// `end` or `revoke`.
    how: &'static str,
}

/// `GET /console/missions`: the missions `GET /v1/missions` lists for the
/// signed-in principal (admins: all).
pub(crate) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let session = signed_in(&s, &headers).await?;
    let mut missions = Vec::new();
    for m in crate::api::missions_for(&s, &session.principal, LIST_LIMIT).await? {
        missions.push(row(&s, &m).await?);
    }
    Ok(html(
        StatusCode::OK,
        &MissionsPage {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
            admin: session.is_admin(),
            missions,
        },
    ))
}

/// `GET /console/missions/{id}`: one mission, for whom
/// `GET /v1/missions/{id}` shows it to (else 404).
pub(crate) async fn show(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let session = signed_in(&s, &headers).await?;
    let m = crate::api::mission_for(&s, &session.principal, &id).await?;
    let approvals = crate::api::approvals_for(
        &s,
        &session.principal,
        Some(mandate_store::ApprovalStatus::Pending),
        Some(m.body.id.clone()),
        false,
        100,
    )
    .await?
    .iter()
    .map(Item::of)
    .collect::<Result<Vec<_>, _>>()?;
    // Below it: the API's tree, which checks again who may see it.
    let now = s.0.clock.now();
    let depth = m.body.depth();
    let below = crate::api::tree_for(&s, &session.principal, &id)
        .await?
        .iter()
        .skip(1)
        .map(|d| {
            let v = crate::api::mission_view(d, now);
            Delegated {
                id: v.id,
                parent: v.parent.unwrap_or_default(),
                depth: v.depth.saturating_sub(depth),
                agent: v.agent,
                state: state_name(v.state).to_owned(),
                end_reason: v
                    .end_reason
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default(),
                goal: v.goal,
                budget: v.budget,
                scope: v.policies.scope,
            }
        })
        .collect();
    let open = crate::api::mcp_sessions_of(&s, &m);
    let sessions = open
        .sessions
        .into_iter()
        .map(|x| McpSession {
            server: x.server,
            session: x.session,
            opened: when(x.opened_at),
            last_used: when(x.last_used),
            in_flight: x.in_flight,
            stream_open: x.stream_open,
        })
        .collect();
    let p = &m.body.policies;
    let page = MissionPage {
        me: session.principal.name.as_str(),
        csrf: &session.csrf,
        admin: session.is_admin(),
        scope: p.scope.clone(),
        boundaries: p.boundaries.clone(),
        escalations: p.escalations.clone(),
        chain: chain(&s, &m).await?,
        m: row(&s, &m).await?,
        approvals,
        below,
        sessions,
        node: open.node,
    };
    Ok(html(StatusCode::OK, &page))
}

/// `GET /console/missions/{id}/revoke`: the confirmation page.
pub(crate) async fn confirm_revoke(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    confirm(&s, &headers, &id, "revoke").await
}

/// `GET /console/missions/{id}/end`: the confirmation page.
pub(crate) async fn confirm_end(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    confirm(&s, &headers, &id, "end").await
}

async fn confirm(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    how: &'static str,
) -> Result<Response, ConsoleError> {
    let session = signed_in(s, headers).await?;
    let m = crate::api::mission_for(s, &session.principal, id).await?;
    let page = ConfirmPage {
        me: session.principal.name.as_str(),
        csrf: &session.csrf,
        admin: session.is_admin(),
        m: row(s, &m).await?,
        how,
    };
    Ok(html(StatusCode::OK, &page))
}

/// The `csrf` and `reason` fields of a confirmation form.
pub(super) fn form(body: &[u8]) -> (Option<String>, Option<String>) {
    let mut token = None;
    let mut reason = None;
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "csrf" => token = Some(v.into_owned()),
            "reason" if !v.trim().is_empty() => reason = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    (token, reason)
}

/// `POST /console/missions/{id}/end` (a form: `csrf`, `reason`): ends the
/// mission (`completed`) as `POST /v1/missions/{id}/end` does for a
/// principal who may manage it; then back to the mission's page.
pub(crate) async fn end(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (token, reason) = form(&body);
    let session = signed_in_post(&s, &headers, token.as_deref())
        .await
        .map_err(|(_, e)| e)?;
    let m = crate::api::mission_for(&s, &session.principal, &id).await?;
    let by = format!("principal:{}", session.principal.name);
    let done = crate::api::end_mission_by(&s, &m, by, reason).await?;
    Ok(Redirect::to(&format!("/console/missions/{}", done.id)).into_response())
}

/// `POST /console/missions/{id}/revoke` (a form: `csrf`, `reason`): the
/// revocation `POST /v1/revocations` makes, by the signed-in principal;
/// then back to the mission's page.
pub(crate) async fn revoke(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let done = revoke_posted(&s, &headers, &body, "mission", id, false).await?;
    // 303: the browser fetches the mission's page.
    Ok(Redirect::to(&format!("/console/missions/{}", done.id)).into_response())
}

/// A revocation posted from a confirmation page (a form: `csrf`,
/// `reason`): `POST /v1/revocations`' own code, with the signed-in
/// principal as the caller and `kind` and `id` from the route. With
/// `admin_only`, anyone but an admin is refused (403) before it runs.
pub(crate) async fn revoke_posted(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    kind: &str,
    id: String,
    admin_only: bool,
) -> Result<mandate_core::wire::RevocationResponse, ConsoleError> {
    let (token, reason) = form(body);
    let session = signed_in_post(s, headers, token.as_deref())
        .await
        .map_err(|(_, e)| e)?;
    if admin_only {
        crate::api::require_admin(&session.principal)?;
    }
    Ok(crate::api::revoke_by(
        s,
        &session.principal,
        RevocationRequest {
            kind: kind.into(),
            id,
            reason,
        },
    )
    .await?)
}
