//! `/v1/audit…`: reading, verifying and exporting the audit log (admin).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::{AuditRecord, ChainHead, verify_chain};
use serde::{Deserialize, Serialize};

use super::extract::Caller;
use crate::problem::Problem;
use crate::state::AppState;

/// Records read per store call.
const PAGE: u32 = 5_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Records after this sequence number (0: from the start).
    after: Option<u64>,
    limit: Option<u32>,
    mission: Option<String>,
    kind: Option<String>,
    decision: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct ListPage {
    records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent at the end of the log.
    next_after: Option<u64>,
}

fn matches(r: &AuditRecord, q: &ListQuery) -> bool {
    let field = |k: &str| r.body.get(k).and_then(|v| v.as_str());
    q.kind.as_deref().is_none_or(|k| r.kind == k)
        && q.mission
            .as_deref()
            .is_none_or(|m| field("mission") == Some(m))
        && q.decision
            .as_deref()
            .is_none_or(|d| field("decision") == Some(d))
}

pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage>, Problem> {
    caller.require_admin()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000) as usize;
    let mut after = q.after.unwrap_or(0);
    let mut out = Vec::new();
    loop {
        let page = s.0.store.audit_records(after, PAGE).await?;
        let Some(last) = page.last().map(|r| r.seq) else {
            return Ok(Json(ListPage {
                records: out,
                next_after: None,
            }));
        };
        for r in page {
            let seq = r.seq;
            if matches(&r, &q) {
                out.push(r);
                if out.len() == limit {
                    return Ok(Json(ListPage {
                        records: out,
                        next_after: Some(seq),
                    }));
                }
            }
        }
        after = last;
    }
}

#[derive(Debug, Serialize)]
pub(super) struct VerifyReport {
    ok: bool,
    first: u64,
    last: u64,
    checkpoints: usize,
}

/// Verifies the whole chain against the signed checkpoints; `409
/// audit_chain_broken` names the first sequence number that fails.
pub(super) async fn verify(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<VerifyReport>, Problem> {
    caller.require_admin()?;
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = s.0.store.audit_records(after, PAGE).await?;
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        records.extend(page);
        after = last;
    }
    let checkpoints = s.0.store.checkpoints().await?;
    match verify_chain(
        ChainHead::genesis(),
        records,
        &checkpoints,
        &s.0.jwks,
        Some(&s.0.issuer),
    ) {
        Ok(r) => Ok(Json(VerifyReport {
            ok: true,
            first: r.first,
            last: r.last,
            checkpoints: r.checkpoints,
        })),
        Err(e) => Err(Problem::new(
            StatusCode::CONFLICT,
            "audit_chain_broken",
            e.to_string(),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// JSON Lines from `after`, at most `limit` (default 10,000) records; to
/// resume, pass the last `seq` received as `after`.
pub(super) async fn export(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let records =
        s.0.store
            .audit_records(
                q.after.unwrap_or(0),
                q.limit.unwrap_or(10_000).clamp(1, 100_000),
            )
            .await?;
    let mut body = String::new();
    for r in &records {
        body.push_str(&serde_json::to_string(r).map_err(|_| Problem::internal())?);
        body.push('\n');
    }
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
