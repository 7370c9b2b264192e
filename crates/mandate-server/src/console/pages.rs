//! The console's pages, its live feed, deny and sign-out.

use std::convert::Infallible;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::wire::DenyRequest;
use mandate_store::ApprovalRecord;

use super::{ConsoleError, JsonError, Session, console, session, signed_in, signed_in_post};
use crate::state::AppState;

const SCRIPT: &str = include_str!("../../static/console.js");
const STYLE: &str = include_str!("../../static/console.css");
const ICON: &str = include_str!("../../static/console-icon.svg");

/// One approval request as the inbox shows it.
pub(crate) struct Item {
    pub id: String,
    pub status: String,
    pub summary: String,
    pub action: String,
    pub resource: String,
    pub arguments: String,
    pub justification: String,
    pub goal: String,
    pub mission: String,
    pub agent: String,
    pub principal: String,
    pub policies: String,
    pub deciders: String,
    pub reason_code: String,
    pub expires: String,
    pub step_up: bool,
    /// Who delegated to whom down to the requesting agent: the person,
    /// then each mission's agent, root first.
    pub chain: Vec<Hop>,
}

/// One hop of a delegation chain: the person who delegated the root
/// mission (no mission), or an agent and the mission it holds.
pub(crate) struct Hop {
    pub who: String,
    pub mission: String,
}

/// The chain of `m`: its principal, then the agent of each ancestor (root
/// first, read and checked against the hashes its body names, as a
/// delegation does), then its own agent.
pub(crate) async fn chain(
    s: &AppState,
    m: &mandate_core::Mission,
) -> Result<Vec<Hop>, ConsoleError> {
    let mut hops = vec![Hop {
        who: m.body.principal.to_string(),
        mission: String::new(),
    }];
    for a in crate::api::ancestors_of(s, m).await? {
        hops.push(Hop {
            who: a.body.agent.to_string(),
            mission: a.body.id.to_string(),
        });
    }
    hops.push(Hop {
        who: m.body.agent.to_string(),
        mission: m.body.id.to_string(),
    });
    Ok(hops)
}

pub(crate) fn when(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

impl Item {
    /// The summary split at its backticks, in order: `(true, x)` for what
    /// it quotes as code, so a page shows it as code rather than as
    /// backticks.
    pub(crate) fn summary_parts(&self) -> Vec<(bool, &str)> {
        self.summary
            .split('`')
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(i, t)| (i % 2 == 1, t))
            .collect()
    }

    pub(crate) fn of(r: &ApprovalRecord) -> Result<Self, ConsoleError> {
        let v = crate::approval_notices::view(r)?;
        let pretty = |v: &serde_json::Value| {
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        };
        Ok(Self {
            id: v.id,
            status: v.status,
            summary: v.summary,
            action: v.action,
            resource: serde_json::to_value(&v.resource)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            arguments: pretty(&serde_json::Value::Object(v.context)),
            justification: v.justification,
            goal: v.goal,
            mission: v.mission_id,
            agent: v.agent,
            // The mission's principal decides when no policy names
            // approvers; say so.
            deciders: if v.approvers == [v.principal.as_str()] {
                format!("{} (the mission's principal)", v.principal)
            } else {
                v.approvers.join(", ")
            },
            principal: v.principal,
            policies: v.policies.join(", "),
            reason_code: v.reason_code,
            expires: when(v.expires_at),
            step_up: v.step_up,
            chain: Vec::new(),
        })
    }

    /// The request as the inbox shows it, with its mission's delegation
    /// chain.
    pub(crate) async fn load(s: &AppState, r: &ApprovalRecord) -> Result<Self, ConsoleError> {
        let mut item = Self::of(r)?;
        let m =
            s.0.store
                .mission(&r.mission)
                .await?
                .ok_or_else(|| {
                    tracing::error!(approval = %r.id, mission = %r.mission, "an approval's mission is missing");
                    ConsoleError::Internal
                })?;
        item.chain = chain(s, &m).await?;
        Ok(item)
    }
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignInPage {}

#[derive(Template)]
#[template(path = "console/enroll.html")]
struct EnrollPage<'a> {
    token: &'a str,
}

#[derive(Template)]
#[template(path = "console/inbox.html")]
struct InboxPage<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    approvals: Vec<Item>,
}

#[derive(Template)]
#[template(path = "console/item.html")]
struct ItemFragment<'a> {
    a: &'a Item,
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    code: &'a str,
    detail: String,
}

pub(crate) fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: cannot render a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub(crate) fn error_page(e: &ConsoleError) -> Response {
    if *e == ConsoleError::SignInRequired {
        return Redirect::to("/console/signin").into_response();
    }
    html(
        e.status(),
        &ErrorPage {
            code: e.code(),
            detail: e.to_string(),
        },
    )
}

/// `GET /console`: to the inbox when signed in, else to sign-in.
pub(crate) async fn root(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Redirect, ConsoleError> {
    Ok(match session(&s, &headers).await? {
        Some(_) => Redirect::to("/console/inbox"),
        None => Redirect::to("/console/signin"),
    })
}

pub(crate) async fn signin(State(s): State<AppState>) -> Result<Response, ConsoleError> {
    console(&s)?;
    Ok(html(StatusCode::OK, &SignInPage {}))
}

/// `GET /console/enroll/{token}`: the page only; the link is used when
/// its button is pressed (a link preview does not spend it).
pub(crate) async fn enroll(
    State(s): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ConsoleError> {
    console(&s)?;
    if token.len() > 100
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConsoleError::EnrollmentInvalid);
    }
    Ok(html(StatusCode::OK, &EnrollPage { token: &token }))
}

/// The pending requests this principal may see, by the same rules (and
/// the same code) as `GET /v1/approvals`.
async fn waiting(s: &AppState, session: &Session) -> Result<Vec<Item>, ConsoleError> {
    let records = crate::api::approvals_for(
        s,
        &session.principal,
        Some(mandate_store::ApprovalStatus::Pending),
        None,
        true,
        100,
    )
    .await?;
    let mut items = Vec::with_capacity(records.len());
    for r in &records {
        items.push(Item::load(s, r).await?);
    }
    Ok(items)
}

pub(crate) async fn inbox(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let session = signed_in(&s, &headers).await?;
    let approvals = waiting(&s, &session).await?;
    Ok(html(
        StatusCode::OK,
        &InboxPage {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
            admin: session.is_admin(),
            approvals,
        },
    ))
}

/// `GET /console/events`: server-sent events, one `approval` event (its
/// id, status and the item's HTML) whenever a request this principal may
/// decide is opened or changes; `refresh` when changes may have been missed.
pub(crate) async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    let first = signed_in(&s, &headers).await?;
    let rx = s.0.approvals_changed.subscribe();
    let stream = futures_util::stream::unfold(
        (s, headers, first.principal, rx),
        |(s, headers, principal, mut rx)| async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let ev = match rx.recv().await {
                    Ok(id) if id == crate::changes::EVERY_APPROVAL => {
                        Event::default().event("refresh").data("{}")
                    }
                    Ok(id) => {
                        let Ok(Some(r)) = s.0.store.approval(&id).await else {
                            continue;
                        };
                        // What the inbox holds: requests this principal
                        // may decide (not all it may see: an admin's).
                        if !r.may_be_decided_by(&principal.name) {
                            continue;
                        }
                        let Ok(item) = Item::load(&s, &r).await else {
                            continue;
                        };
                        let Ok(fragment) = (ItemFragment { a: &item }).render() else {
                            continue;
                        };
                        Event::default().event("approval").data(
                        serde_json::json!({ "id": item.id, "status": item.status, "html": fragment }).to_string(),
                    )
                    }
                    Err(RecvError::Lagged(_)) => Event::default().event("refresh").data("{}"),
                    Err(RecvError::Closed) => return None,
                };
                // A session that ended (signed out, expired, revoked) hears
                // nothing more.
                if !matches!(session(&s, &headers).await, Ok(Some(_))) {
                    return None;
                }
                return Some((Ok::<_, Infallible>(ev), (s, headers, principal, rx)));
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `POST /console/approvals/{id}/deny` (JSON `{"reason": …}`): the same
/// decision as `POST /v1/approvals/{id}/deny`.
pub(crate) async fn deny(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, JsonError> {
    let session = match signed_in_post(&s, &headers, None).await {
        Ok(x) => x,
        Err((who, e)) => {
            return Err(super::passkeys::refused(&s, "deny", &id, who.as_ref(), e)
                .await
                .into());
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        reason: String,
    }
    let b: Body = serde_json::from_slice(&body)
        .map_err(|_| ConsoleError::BadRequest("expected {\"reason\": \"…\"}".into()))?;
    let req = DenyRequest {
        reason: (!b.reason.is_empty()).then_some(b.reason),
        end_mission: false,
    };
    match crate::api::deny_by(&s, &session.principal, &id, req, "console").await {
        Ok(v) => {
            Ok(axum::Json(serde_json::json!({ "id": v.id, "status": v.status })).into_response())
        }
        Err(p) => {
            let e = ConsoleError::from(p);
            Err(super::passkeys::refused(&s, "deny", &id, Some(&session), e)
                .await
                .into())
        }
    }
}

/// `POST /console/signout` (a form with the CSRF token): ends the session.
pub(crate) async fn signout(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    let session = signed_in_post(&s, &headers, token.as_deref())
        .await
        .map_err(|(_, e)| e)?;
    s.0.store.delete_console_session(&session.hash).await?;
    let c = console(&s)?;
    let secure = if c.secure { "; Secure" } else { "" };
    let clear = HeaderValue::from_str(&format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0{secure}",
        c.cookie_name()
    ))
    .map_err(|_| ConsoleError::Internal)?;
    let mut resp = Redirect::to("/console/signin").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, clear);
    Ok(resp)
}

pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// The pages' icon (without one, browsers ask for `/favicon.ico` on every
/// page and log its 404).
pub(crate) async fn icon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        ICON,
    )
        .into_response()
}

pub(crate) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}
