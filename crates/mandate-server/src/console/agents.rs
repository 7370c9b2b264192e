//! The console's agents and principals: who may act, and taking that away.
//! The lists show what `GET /v1/agents` and `GET /v1/principals` show, to
//! the same people (the same functions); revoking an agent or a principal
//! is a confirmation page, then `POST /v1/revocations`' own code with the
//! signed-in principal as the caller.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::Role;
use mandate_store::{Agent, Principal};

use super::missions::revoke_posted;
use super::pages::{html, when};
use super::{ConsoleError, signed_in, signed_in_admin};
use crate::problem::Problem;
use crate::state::AppState;

/// One agent as the console shows it.
pub(crate) struct AgentRow {
    pub name: String,
    pub owner: String,
    pub description: String,
    pub registered: String,
    pub revoked: String,
    /// Its missions not ended and not expired.
    pub live: u64,
}

/// One principal as the console shows it.
pub(crate) struct PrincipalRow {
    pub name: String,
    pub role: &'static str,
    pub created: String,
    pub revoked: String,
    /// Live missions of the agents they own.
    pub live: u64,
    /// Their registered agents (revoked ones included).
    pub agents: usize,
}

#[derive(Template)]
#[template(path = "console/agents.html")]
struct AgentsPage<'a> {
    me: &'a str,
    csrf: &'a str,
    admin: bool,
    agents: Vec<AgentRow>,
}

#[derive(Template)]
#[template(path = "console/principals.html")]
struct PrincipalsPage<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    principals: Vec<PrincipalRow>,
}

#[derive(Template)]
#[template(path = "console/confirm_agent.html")]
struct ConfirmAgent<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    a: AgentRow,
}

#[derive(Template)]
#[template(path = "console/confirm_principal.html")]
struct ConfirmPrincipal<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    p: PrincipalRow,
    /// The admin is revoking themselves.
    myself: bool,
}

/// Live missions per agent: of `owner`'s agents, or of all.
async fn live_counts(
    s: &AppState,
    owner: Option<&mandate_core::PrincipalName>,
) -> Result<HashMap<String, u64>, ConsoleError> {
    Ok(s.0
        .store
        .live_missions_by_agent(owner, s.0.clock.now())
        .await?
        .into_iter()
        .map(|(a, n)| (a.to_string(), n))
        .collect())
}

fn agent_row(a: &Agent, live: &HashMap<String, u64>) -> AgentRow {
    AgentRow {
        live: live.get(a.name.as_str()).copied().unwrap_or(0),
        name: a.name.to_string(),
        owner: a.owner.to_string(),
        description: a.description.clone(),
        registered: when(a.created_at.0),
        revoked: a.revoked_at.map(|t| when(t.0)).unwrap_or_default(),
    }
}

/// `GET /console/agents`: the agents `GET /v1/agents` lists for the
/// signed-in principal (theirs; admins: all), with their live missions.
pub(crate) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let session = signed_in(&s, &headers).await?;
    let p = &session.principal;
    let agents = crate::api::agents_for(&s, p).await?;
    let admin = p.role == Role::Admin;
    let live = live_counts(&s, (!admin).then_some(&p.name)).await?;
    Ok(html(
        StatusCode::OK,
        &AgentsPage {
            me: p.name.as_str(),
            csrf: &session.csrf,
            admin,
            agents: agents.iter().map(|a| agent_row(a, &live)).collect(),
        },
    ))
}

/// `GET /console/agents/{name}/revoke`: the confirmation page, for whom
/// `GET /v1/agents/{name}` shows the agent to (else 404).
pub(crate) async fn confirm_revoke_agent(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let session = signed_in(&s, &headers).await?;
    let a = crate::api::agent_for(&s, &session.principal, &name).await?;
    let live = live_counts(&s, Some(&a.owner)).await?;
    Ok(html(
        StatusCode::OK,
        &ConfirmAgent {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
            admin: session.is_admin(),
            a: agent_row(&a, &live),
        },
    ))
}

/// `POST /console/agents/{name}/revoke` (a form: `csrf`, `reason`): the
/// revocation `POST /v1/revocations` makes with `kind: agent`, by the
/// signed-in principal (its owner or an admin; anyone else: 404); then
/// back to the agents.
pub(crate) async fn revoke_agent(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    revoke_posted(&s, &headers, &body, "agent", name, false).await?;
    Ok(Redirect::to("/console/agents").into_response())
}

async fn principal_rows(
    s: &AppState,
    principals: &[Principal],
) -> Result<Vec<PrincipalRow>, ConsoleError> {
    let agents = s.0.store.agents(None).await?;
    let live = live_counts(s, None).await?;
    Ok(principals
        .iter()
        .map(|p| {
            let theirs = || agents.iter().filter(|a| a.owner == p.name);
            PrincipalRow {
                name: p.name.to_string(),
                role: p.role.as_str(),
                created: when(p.created_at.0),
                revoked: p.revoked_at.map(|t| when(t.0)).unwrap_or_default(),
                live: theirs()
                    .map(|a| live.get(a.name.as_str()).copied().unwrap_or(0))
                    .sum(),
                agents: theirs().count(),
            }
        })
        .collect())
}

/// `GET /console/principals` (admins, as `GET /v1/principals`): every
/// principal, their role, agents and live missions.
pub(crate) async fn principals(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let session = signed_in_admin(&s, &headers).await?;
    let all = crate::api::principals_for(&s, &session.principal).await?;
    Ok(html(
        StatusCode::OK,
        &PrincipalsPage {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
            admin: session.is_admin(),
            principals: principal_rows(&s, &all).await?,
        },
    ))
}

/// `GET /console/principals/{name}/revoke`: the confirmation page
/// (admins).
pub(crate) async fn confirm_revoke_principal(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let session = signed_in_admin(&s, &headers).await?;
    let name: mandate_core::PrincipalName = name.parse().map_err(Problem::from)?;
    let p =
        s.0.store
            .principal(&name)
            .await?
            .ok_or_else(|| Problem::not_found("no such principal"))?;
    let mut rows = principal_rows(&s, std::slice::from_ref(&p)).await?;
    let row = rows.pop().ok_or(ConsoleError::Internal)?;
    Ok(html(
        StatusCode::OK,
        &ConfirmPrincipal {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
            admin: session.is_admin(),
            myself: p.name == session.principal.name,
            p: row,
        },
    ))
}

/// `POST /console/principals/{name}/revoke` (a form: `csrf`, `reason`):
/// the revocation `POST /v1/revocations` makes with `kind: principal`, by
/// the signed-in admin. Members get 403 here, themselves included: a
/// member revokes their own access with the API (`mandate revoke
/// principal NAME`), not with a button next to their session.
pub(crate) async fn revoke_principal(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    revoke_posted(&s, &headers, &body, "principal", name, true).await?;
    // An admin who revoked themselves has no session left: the principals
    // page sends them on to sign-in (where they are refused).
    Ok(Redirect::to("/console/principals").into_response())
}
