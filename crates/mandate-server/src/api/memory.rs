//! Mission memory and agent notes (docs/memory.md).
//!
//! An agent keeps entries under its running mission
//! (`/v1/missions/{id}/memory/{key}`); they are deleted when the mission
//! ends, is revoked or expires. Who reads them: the mission's own agent; a
//! mission delegated below it, only the entries marked `shared`, read-only;
//! and a principal who may manage the mission, to review them. Anyone else
//! is told there is no such mission. A person may promote entries into the
//! agent's notes, which its later missions read (`/v1/mission/notes`).
//!
//! Reading content that carries taint taints the reader's mission with it
//! before the content is returned: an entry written under taint, or a note
//! promoted from one, carries the taint of the mission that wrote it.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::{StatusCode, header, request::Parts};
use mandate_core::wire::{
    MemoryEntryView, MemoryListView, NoteEntryView, NoteView, NotesView, PromoteMemoryRequest,
    PromotedView, PutMemoryRequest,
};
use mandate_core::{
    MAX_MEMORY_SOURCE_CHARS, MAX_PROMOTED_KEYS, MemoryKey, MemoryValue, Mission, MissionId,
    MissionState, Taint, memory_via, note_via,
};
use mandate_store::{MemoryDeleted, MemoryEntry, NewMemoryEntry, Note, Promotion};
use serde_json::value::RawValue;

use super::extract::{ApiJson, ApiPath, Caller, MissionCaller};
use super::free_text;
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use crate::problem::Problem;
use crate::state::AppState;

/// How often the memory of expired missions is deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

fn no_mission() -> Problem {
    Problem::not_found("no such mission")
}

fn no_entry() -> Problem {
    Problem::not_found("no such memory entry")
}

fn key(key: String) -> Result<MemoryKey, Problem> {
    MemoryKey::try_from(key).map_err(Problem::from)
}

fn labels(t: Option<&Taint>) -> Vec<String> {
    t.map(|t| t.labels.iter().cloned().collect())
        .unwrap_or_default()
}

fn raw(json: &str) -> Result<Box<RawValue>, Problem> {
    RawValue::from_string(json.to_owned()).map_err(|_| {
        tracing::error!("a stored memory value is not JSON");
        Problem::internal()
    })
}

fn entry_view(e: &MemoryEntry) -> Result<MemoryEntryView, Problem> {
    Ok(MemoryEntryView {
        key: e.key.as_str().to_owned(),
        value: raw(&e.value)?,
        value_s256: e.value_s256.clone(),
        bytes: e.bytes,
        source: e.source.clone(),
        shared: e.shared,
        taint: e.taint.clone(),
        created_at: e.created_at.0,
        updated_at: e.updated_at.0,
    })
}

fn note_view(n: &Note) -> NoteView {
    NoteView {
        key: n.key.as_str().to_owned(),
        value_s256: n.value_s256.clone(),
        bytes: n.bytes,
        source: n.source.clone(),
        taint: n.taint.clone(),
        promoted_from: n.promoted_from.to_string(),
        promoted_by: n.promoted_by.to_string(),
        promoted_at: n.promoted_at.0,
        written_at: n.written_at.0,
    }
}

/// Who reads a mission's memory, and the mission whose memory it is.
enum Reader {
    /// The mission's own agent.
    Own(MissionCaller),
    /// The agent of a mission delegated below it: shared entries only.
    Below(MissionCaller, Box<Mission>),
    /// A principal who may manage the mission.
    Person(Box<Mission>),
}

impl Reader {
    fn target(&self) -> &Mission {
        match self {
            Self::Own(c) => &c.mission,
            Self::Below(_, m) | Self::Person(m) => m,
        }
    }

    /// The reading mission, which reading tainted content taints.
    fn mission(&self) -> Option<&MissionCaller> {
        match self {
            Self::Own(c) | Self::Below(c, _) => Some(c),
            Self::Person(_) => None,
        }
    }

    fn sees(&self, e: &MemoryEntry) -> bool {
        !matches!(self, Self::Below(..)) || e.shared
    }
}

/// Whether the request carries a mission credential (`Authorization:
/// DPoP …`) rather than an API token.
fn by_mission(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"DPoP "))
}

/// Authenticates the reader of mission `id`'s memory. Anyone who may not
/// read it is told there is no such mission.
async fn reader(s: &AppState, parts: &mut Parts, id: &str) -> Result<Reader, Problem> {
    let id: MissionId = id.parse()?;
    if by_mission(parts) {
        let caller = MissionCaller::from_request_parts(parts, s).await?;
        if caller.mission.body.id == id {
            return Ok(Reader::Own(caller));
        }
        if !caller.mission.body.ancestors.iter().any(|a| a.id == id) {
            return Err(no_mission());
        }
        let target = s.0.store.mission(&id).await?.ok_or_else(no_mission)?;
        return Ok(Reader::Below(caller, Box::new(target)));
    }
    let caller = Caller::from_request_parts(parts, s).await?;
    let target = s.0.store.mission(&id).await?.ok_or_else(no_mission)?;
    if !super::missions::may_manage(s, &caller, &target).await? {
        return Err(no_mission());
    }
    Ok(Reader::Person(Box::new(target)))
}

/// The mission's own agent, for a write. A mission below it learns its
/// ancestors' memory is read-only; anyone else, that there is no such
/// mission.
fn own(caller: &MissionCaller, id: &str) -> Result<(), Problem> {
    if caller.mission.body.id.as_str() == id {
        return Ok(());
    }
    if caller
        .mission
        .body
        .ancestors
        .iter()
        .any(|a| a.id.as_str() == id)
    {
        return Err(Problem::forbidden(
            "the memory of a mission above yours is read-only to you",
        ));
    }
    Err(no_mission())
}

/// Taints the reading mission with what `content` carries, before the
/// content is returned (fail closed: if it cannot be recorded, nothing is
/// returned), as any untrusted content does (`mission.tainted`). Returns
/// whether it added a label.
async fn taint_reader(
    s: &AppState,
    reader: &Mission,
    content: Option<&Taint>,
    via: &str,
) -> Result<bool, Problem> {
    super::taint::mark(s, reader, &labels(content), via).await
}

/// Records that reading `e` tainted `reader`.
async fn record_tainting_read(
    s: &AppState,
    reader: &MissionCaller,
    e: &MemoryEntry,
    via: &str,
) -> Result<(), Problem> {
    let m = &reader.mission;
    s.audit(
        "memory.read",
        serde_json::json!({
            "mission": m.body.id.as_str(), "mission_s256": &m.s256,
            "principal": m.body.principal.as_str(), "agent": m.body.agent.as_str(),
            "of_mission": e.mission.as_str(), "key": e.key.as_str(), "value_s256": &e.value_s256,
            "taint": labels(e.taint.as_ref()), "via": via,
        }),
    )
    .await?;
    Ok(())
}

/// Writes (or overwrites) an entry of the caller's own running mission,
/// stamped with the mission's taint.
#[utoipa::path(
    put,
    path = "/v1/missions/{id}/memory/{key}",
    operation_id = "put_memory",
    tag = "memory",
    security(("mission_credential" = [], "dpop_proof" = [])),
    params(
        ("id" = MissionId, Path, description = "The caller's own mission."),
        ("key" = String, Path, description = "1 to 256 bytes of UTF-8, percent-encoded; not `.` or `..`. The key `promote` must be sent encoded (`%70romote`)."),
    ),
    request_body = PutMemoryRequest,
    responses(
        (status = 200, description = "Stored, with its provenance.", body = MemoryEntryView),
        (status = 413, description = "`memory_limit`: the value is over 64 KiB, or the mission would keep more than 256 entries or 1 MiB of values; nothing changed. (`payload_too_large`: a body over 256 KiB.)",
            body = Problem, content_type = "application/problem+json"),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn put(
    State(s): State<AppState>,
    caller: MissionCaller,
    ApiPath((id, k)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<PutMemoryRequest>,
) -> Result<Json<MemoryEntryView>, Problem> {
    own(&caller, &id)?;
    let PutMemoryRequest {
        value,
        source,
        shared,
    } = req;
    let k = key(k)?;
    let value = MemoryValue::new(value)?;
    let source = free_text("source", source, MAX_MEMORY_SOURCE_CHARS)?;
    let m = &caller.mission;
    let e =
        s.0.store
            .memory_put(&NewMemoryEntry {
                mission: m.body.id.clone(),
                key: k,
                value,
                shared: shared.unwrap_or(false),
                source,
                now: s.0.clock.now(),
            })
            .await?;
    s.audit(
        "memory.written",
        serde_json::json!({
            "mission": m.body.id.as_str(), "mission_s256": &m.s256,
            "principal": m.body.principal.as_str(), "agent": m.body.agent.as_str(),
            "key": e.key.as_str(), "value_s256": &e.value_s256, "bytes": e.bytes,
            "shared": e.shared, "source": &e.source, "taint": labels(e.taint.as_ref()),
        }),
    )
    .await?;
    Ok(Json(entry_view(&e)?))
}

/// One entry: to the mission's own agent; to a mission delegated below it
/// if the entry is shared; or to a principal who may manage the mission.
/// Reading an entry that carries taint taints the reading mission.
#[utoipa::path(
    get,
    path = "/v1/missions/{id}/memory/{key}",
    operation_id = "get_memory",
    tag = "memory",
    security(("api_token" = []), ("mission_credential" = [], "dpop_proof" = [])),
    params(
        ("id" = MissionId, Path, description = "The mission whose memory it is."),
        ("key" = String, Path, description = "The key, percent-encoded."),
    ),
    responses(
        (status = 200, description = "The entry, with its provenance.", body = MemoryEntryView),
        Always, Unauthorized, NotFound,
    ),
)]
pub(super) async fn get(
    State(s): State<AppState>,
    ApiPath((id, k)): ApiPath<(String, String)>,
    req: Request,
) -> Result<Json<MemoryEntryView>, Problem> {
    let (mut parts, _) = req.into_parts();
    let reader = reader(&s, &mut parts, &id).await?;
    let k = key(k)?;
    let now = s.0.clock.now();
    let target = reader.target();
    // A mission's memory ends with it (the sweep deletes it soon after
    // its expiry; until then it is not served).
    if target.state_at(now).0 != MissionState::Active {
        return Err(no_entry());
    }
    let e =
        s.0.store
            .memory_get(&target.body.id, &k)
            .await?
            .filter(|e| reader.sees(e))
            .ok_or_else(no_entry)?;
    if let Some(c) = reader.mission() {
        let via = memory_via(&e.key, &e.mission);
        if taint_reader(&s, &c.mission, e.taint.as_ref(), &via).await? {
            record_tainting_read(&s, c, &e, &via).await?;
        }
    }
    Ok(Json(entry_view(&e)?))
}

/// A mission's entries, by key: all of them to its own agent or a
/// principal who may manage it; the shared ones to a mission delegated
/// below it. Empty once the mission has ended. Reading entries that carry
/// taint taints the reading mission.
#[utoipa::path(
    get,
    path = "/v1/missions/{id}/memory",
    operation_id = "list_memory",
    tag = "memory",
    security(("api_token" = []), ("mission_credential" = [], "dpop_proof" = [])),
    params(("id" = MissionId, Path, description = "The mission whose memory it is.")),
    responses(
        (status = 200, description = "The entries, with their provenance.", body = MemoryListView),
        Always, Unauthorized, NotFound,
    ),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> Result<Json<MemoryListView>, Problem> {
    let (mut parts, _) = req.into_parts();
    let reader = reader(&s, &mut parts, &id).await?;
    let now = s.0.clock.now();
    let target = reader.target();
    let entries: Vec<MemoryEntry> = if target.state_at(now).0 == MissionState::Active {
        s.0.store
            .memory_list(&target.body.id)
            .await?
            .into_iter()
            .filter(|e| reader.sees(e))
            .collect()
    } else {
        Vec::new()
    };
    if let Some(c) = reader.mission() {
        // The reader as it becomes: one mark per label it gains.
        let mut reading = c.mission.clone();
        for e in &entries {
            let via = memory_via(&e.key, &e.mission);
            if taint_reader(&s, &reading, e.taint.as_ref(), &via).await? {
                record_tainting_read(&s, c, e, &via).await?;
                let gained = labels(e.taint.as_ref());
                reading.taint = Some(Taint::merged(reading.taint.as_ref(), &gained, &via, now.0));
            }
        }
    }
    Ok(Json(MemoryListView {
        mission: target.body.id.to_string(),
        entries: entries.iter().map(entry_view).collect::<Result<_, _>>()?,
    }))
}

/// Deletes an entry of the caller's own mission.
#[utoipa::path(
    delete,
    path = "/v1/missions/{id}/memory/{key}",
    operation_id = "delete_memory",
    tag = "memory",
    security(("mission_credential" = [], "dpop_proof" = [])),
    params(
        ("id" = MissionId, Path, description = "The caller's own mission."),
        ("key" = String, Path, description = "The key, percent-encoded."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        Always, Unauthorized, Forbidden, NotFound,
    ),
)]
pub(super) async fn delete(
    State(s): State<AppState>,
    caller: MissionCaller,
    ApiPath((id, k)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    own(&caller, &id)?;
    let k = key(k)?;
    let m = &caller.mission;
    if !s.0.store.memory_delete(&m.body.id, &k).await? {
        return Err(no_entry());
    }
    s.audit(
        "memory.deleted",
        serde_json::json!({
            "mission": m.body.id.as_str(), "mission_s256": &m.s256,
            "principal": m.body.principal.as_str(), "agent": m.body.agent.as_str(),
            "key": k.as_str(), "count": 1, "why": "deleted",
        }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A person keeps entries of a running mission as its agent's notes, for
/// its later missions: an API token of a principal who may manage the
/// mission (a mission credential is refused: promotion is a person's act).
/// All or none.
#[utoipa::path(
    post,
    path = "/v1/missions/{id}/memory/promote",
    operation_id = "promote_memory",
    tag = "memory",
    security(("api_token" = [])),
    params(("id" = MissionId, Path, description = "The mission whose entries to promote.")),
    request_body = PromoteMemoryRequest,
    responses(
        (status = 200, description = "The notes written.", body = PromotedView),
        (status = 413, description = "`memory_limit`: the agent would keep more than 256 notes or 1 MiB of values; nothing changed.",
            body = Problem, content_type = "application/problem+json"),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn promote(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> Result<Json<PromotedView>, Problem> {
    let (mut parts, body) = req.into_parts();
    if by_mission(&parts) {
        return Err(Problem::forbidden(
            "promotion is a person's act: use a principal's API token, not a mission credential",
        ));
    }
    let caller = Caller::from_request_parts(&mut parts, &s).await?;
    let ApiJson(PromoteMemoryRequest { keys, reason }) =
        <ApiJson<PromoteMemoryRequest> as axum::extract::FromRequest<AppState>>::from_request(
            Request::from_parts(parts, body),
            &s,
        )
        .await?;
    let mission: MissionId = id.parse()?;
    let mission = s.0.store.mission(&mission).await?.ok_or_else(no_mission)?;
    if !super::missions::may_manage(&s, &caller, &mission).await? {
        return Err(no_mission());
    }
    if keys.is_empty() || keys.len() > MAX_PROMOTED_KEYS {
        return Err(Problem::bad_request(
            "invalid_request",
            format!("`keys` must name 1 to {MAX_PROMOTED_KEYS} entries"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut parsed = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        let k = MemoryKey::try_from(k)
            .map_err(|e| Problem::bad_request("invalid_request", format!("`keys[{i}]`: {e}")))?;
        if !seen.insert(k.clone()) {
            return Err(Problem::bad_request(
                "invalid_request",
                format!("`keys[{i}]` names an entry named before"),
            ));
        }
        parsed.push(k);
    }
    let reason = free_text("reason", reason, 500)?;
    let now = s.0.clock.now();
    if mission.state_at(now).0 != MissionState::Active {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "mission_ended",
            format!(
                "mission `{}` is not running: its memory ends with it, so promote while it runs",
                mission.body.id
            ),
        ));
    }
    let by = caller.principal.name.clone();
    let (agent, notes) =
        s.0.store
            .promote_notes(&Promotion {
                mission: mission.body.id.clone(),
                keys: parsed,
                by: by.clone(),
                reason: reason.clone(),
                now,
            })
            .await?;
    s.audit(
        "memory.promoted",
        serde_json::json!({
            "mission": mission.body.id.as_str(), "mission_s256": &mission.s256,
            "principal": mission.body.principal.as_str(), "agent": agent.as_str(),
            "by": by.as_str(), "reason": &reason,
            "notes": notes.iter().map(|n| serde_json::json!({
                "key": n.key.as_str(), "value_s256": &n.value_s256, "bytes": n.bytes,
                "taint": labels(n.taint.as_ref()),
            })).collect::<Vec<_>>(),
        }),
    )
    .await?;
    Ok(Json(PromotedView {
        mission: mission.body.id.to_string(),
        agent: agent.to_string(),
        notes: notes.iter().map(note_view).collect(),
    }))
}

/// The notes of the calling mission's agent: keys and provenance, no
/// values (an ephemeral sub-agent has none).
#[utoipa::path(
    get,
    path = "/v1/mission/notes",
    operation_id = "list_notes",
    tag = "memory",
    security(("mission_credential" = [], "dpop_proof" = [])),
    responses(
        (status = 200, description = "The agent's notes.", body = NotesView),
        Always, Unauthorized,
    ),
)]
pub(super) async fn notes(
    State(s): State<AppState>,
    caller: MissionCaller,
) -> Result<Json<NotesView>, Problem> {
    let agent = &caller.mission.body.agent;
    let notes = if agent.is_ephemeral() {
        Vec::new()
    } else {
        s.0.store.notes(agent).await?
    };
    Ok(Json(NotesView {
        agent: agent.to_string(),
        notes: notes.iter().map(note_view).collect(),
    }))
}

/// One note of the calling mission's agent, with its value. A note that
/// carries taint taints the calling mission.
#[utoipa::path(
    get,
    path = "/v1/mission/notes/{key}",
    operation_id = "get_note",
    tag = "memory",
    security(("mission_credential" = [], "dpop_proof" = [])),
    params(("key" = String, Path, description = "The key, percent-encoded.")),
    responses(
        (status = 200, description = "The note and its value.", body = NoteEntryView),
        Always, Unauthorized, NotFound,
    ),
)]
pub(super) async fn note(
    State(s): State<AppState>,
    caller: MissionCaller,
    ApiPath(k): ApiPath<String>,
) -> Result<Json<NoteEntryView>, Problem> {
    let k = key(k)?;
    let m = &caller.mission;
    let agent = &m.body.agent;
    let no_note = || Problem::not_found("no such note");
    if agent.is_ephemeral() {
        return Err(no_note());
    }
    let n = s.0.store.note(agent, &k).await?.ok_or_else(no_note)?;
    let via = note_via(&n.key, agent);
    if taint_reader(&s, m, n.taint.as_ref(), &via).await? {
        s.audit(
            "note.read",
            serde_json::json!({
                "mission": m.body.id.as_str(), "mission_s256": &m.s256,
                "principal": m.body.principal.as_str(), "agent": agent.as_str(),
                "key": n.key.as_str(), "value_s256": &n.value_s256,
                "promoted_from": n.promoted_from.as_str(), "taint": labels(n.taint.as_ref()),
                "via": &via,
            }),
        )
        .await?;
    }
    Ok(Json(NoteEntryView {
        key: n.key.as_str().to_owned(),
        value: raw(&n.value)?,
        value_s256: n.value_s256.clone(),
        bytes: n.bytes,
        source: n.source.clone(),
        taint: n.taint.clone(),
        promoted_from: n.promoted_from.to_string(),
        promoted_by: n.promoted_by.to_string(),
        promoted_at: n.promoted_at.0,
        written_at: n.written_at.0,
    }))
}

/// Records the memory deleted with missions that ended (`why`: `mission
/// ended`, `revoked`, `expired`): one `memory.deleted` per mission that
/// had any.
pub(crate) async fn record_deleted(
    s: &AppState,
    deleted: &[MemoryDeleted],
    why: &str,
) -> Result<(), Problem> {
    for d in deleted {
        tracing::info!(mission = %d.mission, entries = d.entries, why, "mission memory deleted");
        s.audit(
            "memory.deleted",
            serde_json::json!({ "mission": d.mission.as_str(), "count": d.entries, "why": why }),
        )
        .await?;
    }
    Ok(())
}

/// Starts the task that deletes the memory of expired missions, every
/// [`SWEEP_EVERY`] (and once at start).
pub(crate) fn spawn_sweeper(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            let now = state.0.clock.now();
            match state.0.store.sweep_expired_memory(now).await {
                Ok(deleted) => {
                    if let Err(e) = record_deleted(&state, &deleted, "expired").await {
                        tracing::error!(code = e.code, "cannot record deleted mission memory");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot delete expired missions' memory"),
            }
        }
    });
}
