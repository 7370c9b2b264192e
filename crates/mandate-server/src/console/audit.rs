//! The console's audit explorer: the filtered list `GET /v1/audit` gives,
//! one record's explanation as `GET /v1/audit/{seq}/explain` gives it, and
//! the chain's status as `GET /v1/audit/verify` reports it. Like those
//! endpoints, for admins only (ADR 0032).

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::pages::{html, when};
use super::{ConsoleError, Session, session};
use crate::problem::Problem;
use crate::state::AppState;

/// Records per page (as `GET /v1/audit` by default).
const PAGE: u32 = 100;

/// The filter form's fields, as given (shown back in the form).
#[derive(Default)]
pub(crate) struct Form {
    pub mission: String,
    pub agent: String,
    pub action: String,
    pub decision: String,
    pub since: String,
    pub until: String,
}

pub(crate) struct Row {
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub decision: String,
    pub mission: String,
    pub agent: String,
    pub action: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage<'a> {
    me: &'a str,
    csrf: &'a str,
    f: Form,
    rows: Vec<Row>,
    /// The query string of the next page, if any.
    next: String,
    chain_ok: bool,
    chain: String,
}

#[derive(Template)]
#[template(path = "console/audit_record.html")]
struct RecordPage<'a> {
    me: &'a str,
    csrf: &'a str,
    seq: u64,
    kind: String,
    time: String,
    story: Vec<String>,
    body: String,
    related: Vec<Row>,
}

/// The signed-in admin's session; others get what the API gives them: 403.
async fn admin(s: &AppState, headers: &HeaderMap) -> Result<Session, ConsoleError> {
    let session = session(s, headers)
        .await?
        .ok_or(ConsoleError::SignInRequired)?;
    if session.principal.role != mandate_core::Role::Admin {
        return Err(Problem::forbidden("the audit log needs the admin role").into());
    }
    Ok(session)
}

/// A time from the form: Unix seconds, RFC 3339, or a `datetime-local`
/// value (`YYYY-MM-DDTHH:MM[:SS]`, read as UTC).
fn parse_time(field: &str, v: &str) -> Result<Option<u64>, ConsoleError> {
    use time::format_description::well_known::Rfc3339;
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = v.parse::<u64>() {
        return Ok(Some(n));
    }
    let with_seconds = if v.len() == 16 {
        format!("{v}:00Z")
    } else {
        format!("{v}Z")
    };
    time::OffsetDateTime::parse(v, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&with_seconds, &Rfc3339))
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
        .map(Some)
        .ok_or_else(|| {
            ConsoleError::BadRequest(format!(
                "`{field}` must be a date and time (UTC) such as 2026-01-31T09:00"
            ))
        })
}

fn text(b: &serde_json::Value, k: &str) -> String {
    b.get(k)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn row(r: &mandate_core::AuditRecord) -> Row {
    Row {
        seq: r.seq,
        time: when(r.time),
        kind: r.kind.clone(),
        decision: text(&r.body, "decision"),
        mission: text(&r.body, "mission"),
        agent: text(&r.body, "agent"),
        action: text(&r.body, "action"),
    }
}

/// `GET /console/audit?mission=&agent=&action=&decision=&since=&until=&after=`:
/// one page of the records `GET /v1/audit` lists for the same filter.
pub(crate) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ConsoleError> {
    let session = admin(&s, &headers).await?;
    let mut f = Form::default();
    let mut after = None;
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        let v = v.trim().to_owned();
        match &*k {
            "mission" => f.mission = v,
            "agent" => f.agent = v,
            "action" => f.action = v,
            "decision" => f.decision = v,
            "since" => f.since = v,
            "until" => f.until = v,
            "after" if !v.is_empty() => {
                after = Some(v.parse::<u64>().map_err(|_| {
                    ConsoleError::BadRequest("`after` must be a sequence number".into())
                })?);
            }
            _ => {}
        }
    }
    if !matches!(f.decision.as_str(), "" | "allow" | "deny" | "escalate") {
        return Err(ConsoleError::BadRequest(
            "`decision` must be allow, deny or escalate".into(),
        ));
    }
    let some = |v: &String| (!v.is_empty()).then(|| v.clone());
    let filter = mandate_store::AuditFilter {
        mission: some(&f.mission),
        agent: some(&f.agent),
        action: some(&f.action),
        decision: some(&f.decision),
        since: parse_time("since", &f.since)?,
        until: parse_time("until", &f.until)?,
        ..Default::default()
    };
    let (records, next_after) = crate::api::audit_query(&s, &filter, after, Some(PAGE)).await?;
    let next = next_after
        .map(|n| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("mission", &f.mission),
                ("agent", &f.agent),
                ("action", &f.action),
                ("decision", &f.decision),
                ("since", &f.since),
                ("until", &f.until),
            ] {
                if !v.is_empty() {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("after", &n.to_string());
            q.finish()
        })
        .unwrap_or_default();
    // The full verification `GET /v1/audit/verify` runs (ADR 0032).
    let (chain_ok, chain) = match crate::api::audit_verify(&s).await {
        Ok(Ok(r)) => (
            true,
            format!(
                "The chain verifies: records {} to {} against {} signed checkpoints.",
                r.first, r.last, r.checkpoints
            ),
        ),
        Ok(Err(e)) => (false, format!("The chain does NOT verify: {e}.")),
        Err(p) => (false, format!("The chain does NOT verify: {}.", p.detail)),
    };
    Ok(html(
        StatusCode::OK,
        &AuditPage {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
            rows: records.iter().map(row).collect(),
            f,
            next,
            chain_ok,
            chain,
        },
    ))
}

/// `GET /console/audit/{seq}`: the explanation `GET /v1/audit/{seq}/explain`
/// gives (404 for an unknown record).
pub(crate) async fn show(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Result<Response, ConsoleError> {
    let session = admin(&s, &headers).await?;
    let seq = seq
        .parse::<u64>()
        .map_err(|_| Problem::not_found(format!("audit record {seq} not found")))?;
    let e = crate::api::audit_explanation(&s, seq).await?;
    let body = serde_json::to_string_pretty(&e.record.body).unwrap_or_default();
    let page = RecordPage {
        me: session.principal.name.as_str(),
        csrf: &session.csrf,
        seq: e.seq,
        kind: e.kind,
        time: when(e.record.time),
        story: e.story,
        body,
        related: e.related.iter().map(row).collect(),
    };
    Ok(html(StatusCode::OK, &page))
}
