//! `/v1/audit…`: reading, verifying and exporting the audit log (admin).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::AuditRecord;
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, ApiQuery, Caller};
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use crate::problem::Problem;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Records after this sequence number (0: from the start).
    after: Option<u64>,
    /// At most this many (default 100, at most 1,000).
    limit: Option<u32>,
    /// Only records naming this mission.
    mission: Option<String>,
    /// Only records of this kind (`decision`, `mission.created`, …).
    kind: Option<String>,
    /// Only decisions of this outcome (`allow`, `deny`, `escalate`).
    decision: Option<String>,
    /// Only records naming this principal.
    principal: Option<String>,
    /// Only records naming this agent.
    agent: Option<String>,
    /// Only records of this action.
    action: Option<String>,
    /// Unix seconds, inclusive.
    since: Option<u64>,
    until: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ListPage {
    records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent at the end of the log.
    next_after: Option<u64>,
}

impl ListQuery {
    /// The store's filter (the paging fields aside).
    fn filter(&self) -> mandate_store::AuditFilter {
        let Self {
            after: _,
            limit: _,
            mission,
            kind,
            decision,
            principal,
            agent,
            action,
            since,
            until,
        } = self;
        mandate_store::AuditFilter {
            kind: kind.clone(),
            mission: mission.clone(),
            principal: principal.clone(),
            agent: agent.clone(),
            action: action.clone(),
            decision: decision.clone(),
            since: *since,
            until: *until,
        }
    }
}

/// Audit records in order, filtered (admin).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    security(("api_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "A page of records.", body = ListPage), Always, Unauthorized, Forbidden),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListPage>, Problem> {
    caller.require_admin()?;
    let page = mandate_store::AuditPage::After(q.after.unwrap_or(0));
    let (records, next_after) = query(&s, &q.filter(), page, q.limit).await?;
    Ok(Json(ListPage {
        records,
        next_after,
    }))
}

/// One page of `GET /v1/audit` (the caller checked the admin role): the
/// records that match from where `page` says, at most `limit` (default
/// 100, at most 1,000), and the cursor of the next page in the same
/// direction (the last record's sequence number) unless this one is the
/// last.
pub(crate) async fn query(
    s: &AppState,
    filter: &mandate_store::AuditFilter,
    page: mandate_store::AuditPage,
    limit: Option<u32>,
) -> Result<(Vec<AuditRecord>, Option<u64>), Problem> {
    let limit = limit.unwrap_or(100).clamp(1, 1_000);
    // Answered by the store's indexes (ADR 0018): one page costs about the
    // same whatever the size of the log.
    let mut records = s.0.store.audit_query(filter, page, limit).await?;
    let next = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    // The index found them; the chained body decides. A filter column
    // changed in the database cannot add a record that does not match (and
    // `verify` reports the change).
    records.retain(|r| filter.matches(r));
    Ok((records, next))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct VerifyReport {
    ok: bool,
    first: u64,
    last: u64,
    checkpoints: usize,
}

/// Verifies the whole chain against the signed checkpoints; `409
/// audit_chain_broken` names the first sequence number that fails.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    operation_id = "verify_audit",
    tag = "audit",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The chain verifies.", body = VerifyReport),
        Always, Unauthorized, Forbidden, Conflict,
    ),
)]
pub(super) async fn verify(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<VerifyReport>, Problem> {
    caller.require_admin()?;
    match verify_live(&s).await? {
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

/// The stored log against its checkpoints, those in the checkpoint file
/// included, and the time cadence as of now (`GET /v1/audit/verify`).
pub(crate) async fn verify_live(
    s: &AppState,
) -> Result<Result<mandate_core::ChainReport, mandate_core::ChainError>, Problem> {
    let kept = mandate_enforce::read_checkpoint_file(&s.0.checkpoint_file, &s.0.jwks)
        .map_err(|e| Problem::new(StatusCode::CONFLICT, "audit_chain_broken", e.to_string()))?
        .into_iter()
        .map(|c| c.token)
        .collect::<Vec<_>>();
    Ok(mandate_enforce::verify_stored(s.0.store.as_ref(), &s.0.jwks, None, &kept).await?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointsQuery {
    /// Checkpoints after this sequence number; without it, from the
    /// genesis checkpoint.
    after: Option<u64>,
    /// At most this many (default 1,000, at most 10,000).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CheckpointEntry {
    seq: u64,
    /// The signed checkpoint (a JWS, `typ` `mandate-checkpoint+jwt`);
    /// verify it against `/.well-known/jwks.json`.
    checkpoint: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CheckpointsPage {
    checkpoints: Vec<CheckpointEntry>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<u64>,
}

/// The signed checkpoints after `after` (from the first, the genesis one,
/// without it; at most `limit`, default 1,000),
/// for monitors that keep their own copy: any principal may read them (they
/// say how many records there are and commit to their hashes, nothing
/// more).
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoints",
    operation_id = "list_checkpoints",
    tag = "audit",
    security(("api_token" = [])),
    params(CheckpointsQuery),
    responses((status = 200, description = "A page of signed checkpoints.", body = CheckpointsPage), Always, Unauthorized),
)]
pub(super) async fn checkpoints(
    State(s): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<CheckpointsQuery>,
) -> Result<Json<CheckpointsPage>, Problem> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(1_000).clamp(1, 10_000) as usize;
    let mut out: Vec<CheckpointEntry> = Vec::new();
    for token in s.0.store.checkpoints().await? {
        // Only what this authority signed; the database is not trusted.
        let Ok(c) = mandate_core::verify_checkpoint(&token, &s.0.jwks, None) else {
            continue;
        };
        // Without `after`, the list starts with the genesis checkpoint.
        if c.seq > after || (q.after.is_none() && c.seq == 0) {
            out.push(CheckpointEntry {
                seq: c.seq,
                checkpoint: token,
            });
        }
    }
    // Last, the seal of the head (each commit's checkpoint).
    if let Some(seal) = s.0.store.head_seal().await?
        && let Ok(c) = mandate_core::verify_checkpoint(&seal, &s.0.jwks, None)
        && c.seq > after
        && !out.iter().any(|e| e.seq == c.seq)
    {
        out.push(CheckpointEntry {
            seq: c.seq,
            checkpoint: seal,
        });
    }
    out.sort_by_key(|c| c.seq);
    let next_after = (out.len() > limit).then(|| out[limit - 1].seq);
    out.truncate(limit);
    Ok(Json(CheckpointsPage {
        checkpoints: out,
        next_after,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PruneRequest {
    /// The last sequence number to delete; must be a signed checkpoint.
    through: u64,
}

/// Retention: deletes records up to a signed checkpoint, after the operator
/// exported them. The prune is recorded in the log first, so verification
/// can tell it from tampering and start from that checkpoint.
#[utoipa::path(
    post,
    path = "/v1/audit/prune",
    operation_id = "prune_audit",
    tag = "audit",
    security(("api_token" = [])),
    request_body = PruneRequest,
    responses(
        (status = 200, description = "Pruned.", body = PruneReport),
        Always, Unauthorized, Forbidden, Conflict, JsonBody,
    ),
)]
pub(super) async fn prune(
    State(s): State<AppState>,
    caller: Caller,
    super::extract::ApiJson(req): super::extract::ApiJson<PruneRequest>,
) -> Result<Json<PruneReport>, Problem> {
    caller.require_admin()?;
    let PruneRequest { through } = req;
    let checkpointed =
        s.0.store
            .checkpoints()
            .await?
            .iter()
            .filter_map(|t| mandate_core::verify_checkpoint(t, &s.0.jwks, None).ok())
            .any(|c| c.seq == through);
    if !checkpointed {
        return Err(Problem::bad_request(
            "invalid_request",
            format!("{through} is not a signed checkpoint; prune only through one"),
        ));
    }
    // The log must verify before anything is deleted.
    if let Err(e) = verify_live(&s).await? {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "audit_chain_broken",
            e.to_string(),
        ));
    }
    // The prune is recorded with a checkpoint that states it: only that
    // signature excuses the missing prefix later.
    s.0.enforcer
        .audit_log()
        .record_prune(
            s.0.clock.now().0,
            through,
            serde_json::json!({ "through": through, "by": caller.principal.name.as_str() }),
        )
        .await?;
    let deleted = s.0.store.prune_audit(through).await?;
    tracing::warn!(through, deleted, by = %caller.principal.name, "audit log pruned");
    Ok(Json(PruneReport { through, deleted }))
}

/// What a prune deleted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct PruneReport {
    /// The last sequence number deleted.
    through: u64,
    /// How many records were deleted.
    deleted: u64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    /// Records after this sequence number (0: from the start).
    after: Option<u64>,
    /// At most this many (default 10,000, at most 100,000).
    limit: Option<u32>,
}

/// JSON Lines from `after`, at most `limit` (default 10,000) records; to
/// resume, pass the last `seq` received as `after`.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    operation_id = "export_audit",
    tag = "audit",
    security(("api_token" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "One `AuditRecord` per line.", content_type = "application/x-ndjson", body = String),
        Always, Unauthorized, Forbidden,
    ),
)]
pub(super) async fn export(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Explanation {
    pub(crate) seq: u64,
    pub(crate) kind: String,
    /// The provenance, in plain language, one sentence per line.
    pub(crate) story: Vec<String>,
    pub(crate) record: AuditRecord,
    /// The records the story links to: mission creation, credential issue.
    pub(crate) related: Vec<AuditRecord>,
}

/// What a mission's start record says of the code that held its key.
fn attestation_story(started: &AuditRecord) -> String {
    let a = started.body.get("attestation").filter(|a| !a.is_null());
    let Some(a) = a else {
        return format!(
            "Its agent started the mission in #{} ({}) without attestation evidence: nothing vouches for what code held the mission key.",
            started.seq,
            when(started.time)
        );
    };
    let t = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    let what = match t("method").as_str() {
        "jwt_svid" => format!("a SPIFFE JWT-SVID of workload `{}`", t("subject")),
        _ => {
            let env = a
                .get("environment")
                .and_then(|e| e.as_object())
                .map(|e| {
                    e.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|e| !e.is_empty())
                .map(|e| format!(" in environment {{{e}}}"))
                .unwrap_or_default();
            format!(
                "a launch statement by launcher `{}`: code `{}` with digest {}{env}",
                t("launcher"),
                t("subject"),
                t("code_digest")
            )
        }
    };
    format!(
        "Its agent started the mission in #{} ({}) attested by {what}, bound to its mission key {} (evidence digest {}).",
        started.seq,
        when(started.time),
        started
            .body
            .get("jkt")
            .and_then(|v| v.as_str())
            .unwrap_or("?"),
        t("evidence_s256")
    )
}

/// A time as people read it (RFC 3339, UTC).
fn when(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("t={t}"))
}

/// A record's body for people: the Unix times in it (`expires_at`,
/// `exp`, …) as RFC 3339. The record itself keeps the numbers.
fn readable_times(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let is_time = k.ends_with("_at") || matches!(k.as_str(), "exp" | "iat");
                    let v = match v.as_u64() {
                        Some(t) if is_time => Value::String(when(t)),
                        _ => readable_times(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(readable_times).collect()),
        other => other.clone(),
    }
}

/// The provenance of one record: who delegated, which mission and goal,
/// which credential and key, which policies decided, which grant or
/// approval.
#[utoipa::path(
    get,
    path = "/v1/audit/{seq}/explain",
    operation_id = "explain_audit_record",
    tag = "audit",
    security(("api_token" = [])),
    params(("seq" = u64, Path, description = "The record's sequence number.")),
    responses(
        (status = 200, description = "The record's provenance.", body = Explanation),
        Always, Unauthorized, Forbidden, NotFound,
    ),
)]
pub(super) async fn explain(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(seq): ApiPath<u64>,
) -> Result<Json<Explanation>, Problem> {
    caller.require_admin()?;
    Ok(Json(explanation(&s, seq).await?))
}

/// What `GET /v1/audit/{seq}/explain` answers (the caller checked the
/// admin role).
pub(crate) async fn explanation(s: &AppState, seq: u64) -> Result<Explanation, Problem> {
    let record =
        s.0.store
            .audit_record(seq)
            .await?
            .ok_or_else(|| Problem::not_found(format!("audit record {seq} not found")))?;
    let b = &record.body;
    let f = |k: &str| b.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    let mut story = Vec::new();
    let mut related = Vec::new();
    // The records a story links to belong to the record's own mission: the
    // lookups stay within it, on an index of its records other than
    // decisions (ADR 0018).
    let mission = b.get("mission").and_then(|v| v.as_str());
    match record.kind.as_str() {
        "decision" => {
            let resource = b
                .get("resource")
                .map(ToString::to_string)
                .unwrap_or_default();
            if let (Some(method), Some(path)) = (
                b.get("method").and_then(|v| v.as_str()),
                b.get("path").and_then(|v| v.as_str()),
            ) {
                let what = match f("action").as_str() {
                    "-" => String::new(),
                    a => format!(": action `{a}` on {resource}"),
                };
                story.push(format!(
                    "#{seq} ({}): agent `{}` called `{method} {path}` through the gateway (route `{}`){what}.",
                    when(record.time),
                    f("agent"),
                    f("route"),
                ));
            } else {
                story.push(format!(
                    "#{seq} ({}): enforcement point `{}` asked whether agent `{}` may `{}` on {resource}.",
                    when(record.time),
                    f("enforcement_point"),
                    f("agent"),
                    f("action")
                ));
            }
        }
        "vault.used" => story.push(format!(
            "#{seq} ({}): impersonation of `{}` on `{}` by agent `{}` for mission {} (vaulted secret version {}).",
            when(record.time),
            f("principal"),
            f("route"),
            f("agent"),
            f("mission"),
            b.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0)
        )),
        other => story.push(format!(
            "#{seq} ({}): {other}: {}.",
            when(record.time),
            readable_times(&record.body)
        )),
    }
    if record.kind == "approval.approved" && b.get("passkey").is_some() {
        // Signed in the console: re-verified now, against the passkey
        // registered under the credential id (ADR 0032).
        story.push(
            match crate::console::verify_stored_assertion(s, b).await {
                Ok(cred) => format!(
                    "Signed in the console: approved by {} with passkey {cred}, signature verifies (the assertion's challenge commits to this approval request, its request digest and the `{}` grant).",
                    f("by"),
                    f("scope")
                ),
                Err(why) => format!(
                    "WARNING: approved by {} in the console, but the passkey assertion does not verify: {why}.",
                    f("by")
                ),
            },
        );
    }
    if let Some(mission) = b.get("mission").and_then(|v| v.as_str()) {
        // A delegated mission: each hop up to the root, with its link.
        let mut current = mission.to_owned();
        let mut depth_guard = 0;
        while let Some(d) =
            s.0.store
                .audit_find("mission.delegated", Some(&current), "mission", &current)
                .await?
        {
            let c = &d.body;
            let g = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
            let n = |k: &str| c.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            if current == mission {
                story.push(format!(
                    "The agent acted for principal `{}` under mission {mission}, \"{}\" (depth {}), which agent `{}` delegated to `{}` from its own mission {} in #{} ({}); it ends at {}.",
                    g("principal"),
                    g("goal"),
                    n("depth"),
                    g("by"),
                    g("agent"),
                    g("parent"),
                    d.seq,
                    when(d.time),
                    when(n("expires_at"))
                ));
                story.push(
                    if c.get("mission_s256") == b.get("mission_s256") || b.get("mission_s256").is_none() {
                        format!("The mission body hash {} is the one delegated.", g("mission_s256"))
                    } else {
                        format!(
                            "WARNING: the mission body hash {} differs from the one delegated ({}).",
                            f("mission_s256"),
                            g("mission_s256")
                        )
                    },
                );
            } else {
                story.push(format!(
                    "Mission {current}, \"{}\" (depth {}), was itself delegated by agent `{}` to `{}` from mission {} in #{} ({}).",
                    g("goal"),
                    n("depth"),
                    g("by"),
                    g("agent"),
                    g("parent"),
                    d.seq,
                    when(d.time)
                ));
            }
            story.push(format!(
                "  Link {} (depth {}) was signed by the mission key {} of `{}`.",
                g("link"),
                n("depth"),
                g("signed_by"),
                g("by")
            ));
            current = g("parent");
            related.push(d);
            depth_guard += 1;
            if depth_guard > 16 {
                break;
            }
        }
        if let Some(created) =
            s.0.store
                .audit_find("mission.created", Some(&current), "mission", &current)
                .await?
        {
            let c = &created.body;
            let g = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
            if current == mission {
                story.push(format!(
                    "The agent acted for principal `{}` under mission {mission}, \"{}\", which `{}` delegated to `{}` in #{} ({}); it ends at {}.",
                    g("principal"),
                    g("goal"),
                    g("principal"),
                    g("agent"),
                    created.seq,
                    when(created.time),
                    when(c.get("expires_at").and_then(serde_json::Value::as_u64).unwrap_or(0))
                ));
                let same = c.get("mission_s256") == b.get("mission_s256")
                    || b.get("mission_s256").is_none();
                story.push(if same {
                    format!(
                        "The mission body hash {} is the one delegated.",
                        g("mission_s256")
                    )
                } else {
                    format!(
                        "WARNING: the mission body hash {} differs from the one delegated ({}).",
                        f("mission_s256"),
                        g("mission_s256")
                    )
                });
            } else {
                story.push(format!(
                    "The chain starts at mission {current}, \"{}\", which `{}` delegated to `{}` in #{} ({}).",
                    g("goal"),
                    g("principal"),
                    g("agent"),
                    created.seq,
                    when(created.time)
                ));
            }
            related.push(created);
        } else {
            story.push(format!(
                "Mission {current}: its creation is not in the log (pruned?)."
            ));
        }
    }
    let jti = b
        .get("credential")
        .and_then(|v| v.as_str())
        .filter(|_| record.kind != "credential.issued");
    if let Some(jti) = jti
        && let Some(issued) =
            s.0.store
                .audit_find("credential.issued", mission, "credential", jti)
                .await?
    {
        let c = &issued.body;
        story.push(format!(
            "It presented credential {jti}, issued in #{} ({}), bound to mission key {}.",
            issued.seq,
            when(issued.time),
            c.get("jkt").and_then(|v| v.as_str()).unwrap_or("?")
        ));
        related.push(issued);
    }
    if let Some(m) = mission
        && record.kind != "mission.started"
        && let Some(started) =
            s.0.store
                .audit_find("mission.started", mission, "mission", m)
                .await?
    {
        story.push(attestation_story(&started));
        related.push(started);
    }
    if record.kind == "decision" {
        let policies: Vec<String> = b
            .get("policies")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let code = f("code");
        let by = if !policies.is_empty() {
            format!(", determined by policies {}", policies.join(", "))
        } else if code == "out_of_scope" {
            ": no policy matched, so the call was out of the mission's scope".to_owned()
        } else {
            ", before any policy was consulted".to_owned()
        };
        story.push(format!("Decision: {} ({code}){by}.", f("decision")));
        story.push(match b.get("taint").filter(|t| !t.is_null()) {
            None => "The mission had read no content labelled untrusted when this was decided.".to_owned(),
            Some(t) => {
                let sources: Vec<String> = t
                    .get("sources")
                    .and_then(|s| s.as_array())
                    .map(|a| {
                        a.iter()
                            .map(|s| {
                                let g = |k: &str| s.get(k).map(|v| v.to_string().trim_matches('"').to_owned()).unwrap_or_default();
                                format!(
                                    "{} ({} at {})",
                                    g("label"),
                                    g("via"),
                                    when(s.get("at").and_then(serde_json::Value::as_u64).unwrap_or(0))
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "The mission was tainted when this was decided: it had read untrusted content since {}: {}.",
                    when(t.get("since").and_then(serde_json::Value::as_u64).unwrap_or(0)),
                    sources.join(", ")
                )
            }
        });
        if let Some(hop) = b.get("hop") {
            let h = |k: &str| {
                hop.get(k)
                    .map(|v| v.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default()
            };
            story.push(format!(
                "It was decided by the policy of ancestor mission {} (agent `{}`, depth {}): every hop of a chain must allow a call.",
                h("mission"),
                h("agent"),
                h("depth")
            ));
        } else if f("decision") == "allow"
            && b.get("chain")
                .is_some_and(|c| c.as_array().is_some_and(|a| !a.is_empty()))
        {
            story.push(
                "Every ancestor in the chain would have allowed it as well (each hop's policy was evaluated)."
                    .to_owned(),
            );
        }
        if let Some(g) = b.get("grant").and_then(|v| v.as_str()) {
            let id = g.strip_prefix("grant/").unwrap_or(g);
            match s
                .0
                .store
                .audit_find("approval.approved", mission, "grant", id)
                .await?
            {
                Some(a) => {
                    story.push(approved_story(&a, "It was allowed under"));
                    related.push(a);
                }
                None => story.push(format!(
                    "It was allowed under grant {id}, whose approval is not in the log (pruned?)."
                )),
            }
        }
        if let Some(a) = b.get("approval_id").and_then(|v| v.as_str()) {
            story.push(format!(
                "It asked for approval: request {a}{}.",
                match b.get("code").and_then(|v| v.as_str()) {
                    Some("step_up") => ", which must approve this very call",
                    _ => "",
                }
            ));
            for kind in ["approval.approved", "approval.denied", "approval.expired"] {
                if let Some(d) = s.0.store.audit_find(kind, mission, "approval", a).await? {
                    story.push(match kind {
                        "approval.approved" => approved_story(&d, "It was then approved:"),
                        "approval.denied" => format!(
                            "It was then denied by `{}` in #{} ({}){}{}.",
                            text(&d.body, "by"),
                            d.seq,
                            when(d.time),
                            reason_part(&d.body),
                            if d.body.get("end_mission") == Some(&serde_json::Value::Bool(true)) {
                                ", ending the mission"
                            } else {
                                ""
                            }
                        ),
                        _ => format!(
                            "Nobody decided it; it expired in #{} ({}).",
                            d.seq,
                            when(d.time)
                        ),
                    });
                    related.push(d);
                }
            }
        }
    }
    if record.kind.starts_with("approval.") && record.kind != "approval.requested" {
        if let Some(a) = b.get("approval").and_then(|v| v.as_str())
            && let Some(r) =
                s.0.store
                    .audit_find("approval.requested", mission, "approval", a)
                    .await?
        {
            story.push(format!(
                "The request was opened in #{} ({}): the agent's stated reason was \"{}\".",
                r.seq,
                when(r.time),
                text(&r.body, "justification")
            ));
            related.push(r);
        }
        if record.kind == "approval.approved" {
            story.push(approved_story(&record, "Approval:"));
        }
    }
    Ok(Explanation {
        seq,
        kind: record.kind.clone(),
        story,
        record,
        related,
    })
}

fn text<'a>(b: &'a serde_json::Value, k: &str) -> &'a str {
    b.get(k).and_then(|v| v.as_str()).unwrap_or("?")
}

fn reason_part(b: &serde_json::Value) -> String {
    match b.get("reason").and_then(|v| v.as_str()) {
        Some(r) if !r.is_empty() => format!(", saying \"{r}\""),
        _ => String::new(),
    }
}

/// "… grant G (scope), approved by P in #N (time) for approval A, saying …".
fn approved_story(a: &AuditRecord, lead: &str) -> String {
    let b = &a.body;
    let terms = match text(b, "scope") {
        "once" => "this call, once".to_owned(),
        "mission" => "this exact call for the rest of the mission".to_owned(),
        "pattern" => format!(
            "`{}` on resources under `{}` for the rest of the mission",
            text(b, "action"),
            b.get("resource_prefix")
                .and_then(|v| v.as_str())
                .unwrap_or("")
        ),
        other => other.to_owned(),
    };
    format!(
        "{lead} grant {} ({terms}), approved by `{}` in #{} ({}) for approval request {}{}.",
        text(b, "grant"),
        text(b, "by"),
        a.seq,
        when(a.time),
        text(b, "approval"),
        reason_part(b)
    )
}
