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

use super::pages::{Item, html, when};
use super::{ConsoleError, session, signed_in_post};
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
        state: match v.state {
            MissionState::Ready => "ready",
            MissionState::Active => "active",
            MissionState::Ended => "ended",
        }
        .to_owned(),
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
    missions: Vec<Row>,
}

#[derive(Template)]
#[template(path = "console/mission.html")]
struct MissionPage<'a> {
    me: &'a str,
    csrf: &'a str,
    m: Row,
    scope: String,
    boundaries: String,
    escalations: String,
    approvals: Vec<Item>,
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage<'a> {
    me: &'a str,
    csrf: &'a str,
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
    let session = session(&s, &headers)
        .await?
        .ok_or(ConsoleError::SignInRequired)?;
    let mut missions = Vec::new();
    for m in crate::api::missions_for(&s, &session.principal, LIST_LIMIT).await? {
        missions.push(row(&s, &m).await?);
    }
    Ok(html(
        StatusCode::OK,
        &MissionsPage {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
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
    let session = session(&s, &headers)
        .await?
        .ok_or(ConsoleError::SignInRequired)?;
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
    let p = &m.body.policies;
    let page = MissionPage {
        me: session.principal.name.as_str(),
        csrf: &session.csrf,
        scope: p.scope.clone(),
        boundaries: p.boundaries.clone(),
        escalations: p.escalations.clone(),
        m: row(&s, &m).await?,
        approvals,
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
    let session = session(s, headers)
        .await?
        .ok_or(ConsoleError::SignInRequired)?;
    let m = crate::api::mission_for(s, &session.principal, id).await?;
    let page = ConfirmPage {
        me: session.principal.name.as_str(),
        csrf: &session.csrf,
        m: row(s, &m).await?,
        how,
    };
    Ok(html(StatusCode::OK, &page))
}

/// The `csrf` and `reason` fields of a confirmation form.
fn form(body: &[u8]) -> (Option<String>, Option<String>) {
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
    let (token, reason) = form(&body);
    let session = signed_in_post(&s, &headers, token.as_deref())
        .await
        .map_err(|(_, e)| e)?;
    let done = crate::api::revoke_by(
        &s,
        &session.principal,
        RevocationRequest {
            kind: "mission".into(),
            id,
            reason,
        },
    )
    .await?;
    // 303: the browser fetches the mission's page.
    Ok(Redirect::to(&format!("/console/missions/{}", done.id)).into_response())
}
