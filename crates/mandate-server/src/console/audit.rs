//! The console's audit explorer: the filtered list `GET /v1/audit` gives,
//! newest first; one record's explanation as `GET /v1/audit/{seq}/explain`
//! gives it; and the chain's status as `GET /v1/audit/verify` reports it,
//! from a verification at most a minute old. Like those endpoints, for
//! admins only (ADR 0032).

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::pages::{html, when};
use super::{ConsoleError, signed_in_admin};
use crate::problem::Problem;
use crate::state::AppState;

/// Records per page (as `GET /v1/audit` by default).
const PAGE: u32 = 100;

/// How long a verification of the chain is shown before the page runs
/// another. A full verification reads the whole log (seconds for a large
/// one), so it is not repeated for every page an admin opens.
const CHAIN_STATUS_SECS: u64 = 60;

/// The outcome of one verification of the whole chain.
#[derive(Clone, Debug)]
pub(crate) struct ChainStatus {
    pub ok: bool,
    pub text: String,
    pub checked_at: mandate_core::UnixTime,
}

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
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    f: Form,
    rows: Vec<Row>,
    /// The query string of the page of older records, if any.
    next: String,
    chain_ok: bool,
    chain: String,
    chain_checked: String,
}

#[derive(Template)]
#[template(path = "console/audit_record.html")]
struct RecordPage<'a> {
    me: &'a str,
    csrf: &'a str,
    /// The signed-in principal is an admin (the nav shows the audit log).
    admin: bool,
    seq: u64,
    kind: String,
    time: String,
    story: Vec<String>,
    body: String,
    related: Vec<Row>,
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

/// The chain's status: the last verification if it is recent, else a new
/// one (`force`: a new one anyway). One runs at a time; a page that asks
/// meanwhile waits for it and shows its outcome.
async fn chain_status(s: &AppState, force: bool) -> Result<ChainStatus, ConsoleError> {
    let mut last = super::console(s)?.chain.lock().await;
    let now = s.0.clock.now();
    if let Some(st) = last.as_ref()
        && !force
        && now.0.saturating_sub(st.checked_at.0) < CHAIN_STATUS_SECS
    {
        return Ok(st.clone());
    }
    // The full verification `GET /v1/audit/verify` runs (ADR 0032).
    let (ok, text) = match crate::api::audit_verify(s).await {
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
    let st = ChainStatus {
        ok,
        text,
        checked_at: s.0.clock.now(),
    };
    *last = Some(st.clone());
    Ok(st)
}

/// `GET /console/audit?mission=&agent=&action=&decision=&since=&until=&before=&verify=now`:
/// one page of the records `GET /v1/audit` lists for the same filter,
/// newest first (`before`: older than that record), and the chain's status
/// (`verify=now`: verified again now).
pub(crate) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ConsoleError> {
    let session = signed_in_admin(&s, &headers).await?;
    let mut f = Form::default();
    let mut before = None;
    let mut force = false;
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        let v = v.trim().to_owned();
        match &*k {
            "mission" => f.mission = v,
            "agent" => f.agent = v,
            "action" => f.action = v,
            "decision" => f.decision = v,
            "since" => f.since = v,
            "until" => f.until = v,
            "before" if !v.is_empty() => {
                before = Some(v.parse::<u64>().map_err(|_| {
                    ConsoleError::BadRequest("`before` must be a sequence number".into())
                })?);
            }
            "verify" => force = v == "now",
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
    let page = mandate_store::AuditPage::Before(before);
    let (records, older) = crate::api::audit_query(&s, &filter, page, Some(PAGE)).await?;
    let next = older
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
            q.append_pair("before", &n.to_string());
            q.finish()
        })
        .unwrap_or_default();
    let chain = chain_status(&s, force).await?;
    Ok(html(
        StatusCode::OK,
        &AuditPage {
            me: session.principal.name.as_str(),
            csrf: &session.csrf,
            admin: session.is_admin(),
            rows: records.iter().map(row).collect(),
            f,
            next,
            chain_ok: chain.ok,
            chain: chain.text,
            chain_checked: when(chain.checked_at.0),
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
    let session = signed_in_admin(&s, &headers).await?;
    let seq = seq
        .parse::<u64>()
        .map_err(|_| Problem::not_found(format!("audit record {seq} not found")))?;
    let e = crate::api::audit_explanation(&s, seq).await?;
    let body = serde_json::to_string_pretty(&e.record.body).unwrap_or_default();
    let page = RecordPage {
        me: session.principal.name.as_str(),
        csrf: &session.csrf,
        admin: session.is_admin(),
        seq: e.seq,
        kind: e.kind,
        time: when(e.record.time),
        story: e.story,
        body,
        related: e.related.iter().map(row).collect(),
    };
    Ok(html(StatusCode::OK, &page))
}
