//! Rows to model types, once for every backend: each backend reads its
//! rows through [`Columns`], so a stored value is checked the same way
//! (a name that does not parse, a mission body that no longer hashes to
//! its `s256`: corrupt, refused) whichever database holds it.

use std::str::FromStr as _;

use mandate_core::{
    AuditRecord, EndReason, Mission, MissionBody, MissionId, MissionRef, MissionStatus, Role,
    Thumbprint, UnixTime, mission_s256,
};

use crate::model::{
    Agent, ApiToken, ApprovalRecord, ApprovalStatus, AuditFilter, AuditPage, GrantRecord,
    NewDelegation, Principal, Revocation, RevocationKind, VaultRecord, WebhookDelivery,
};
use crate::{DelegateError, StoreError};

/// A row's columns by name, from any of the database libraries.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    /// A 0/1 integer column (SQLite has no boolean type; PostgreSQL keeps
    /// the same BIGINT column).
    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.int(column)? != 0)
    }
}

/// A row's columns named with a prefix (`prefix` + the name), for a
/// statement that reads two records' columns side by side.
pub(crate) struct Prefixed<'r, R>(pub &'r R, pub &'static str);

impl<R: Columns> Columns for Prefixed<'_, R> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.0.text(&format!("{}{column}", self.1))
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.0.opt_text(&format!("{}{column}", self.1))
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.0.int(&format!("{}{column}", self.1))
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.0.opt_int(&format!("{}{column}", self.1))
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        self.0.bytes(&format!("{}{column}", self.1))
    }
}

pub(crate) fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn time(v: i64) -> UnixTime {
    UnixTime(u64::try_from(v).unwrap_or(0))
}

pub(crate) fn opt_time(v: Option<i64>) -> Option<UnixTime> {
    v.map(time)
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A text column parsed into its type (a name or an id); a value that does
/// not parse is a corrupt row.
pub(crate) fn typed<T>(row: &impl Columns, column: &str, what: &str) -> Result<T, StoreError>
where
    T: TryFrom<String>,
    T::Error: std::fmt::Display,
{
    row.text(column)?.try_into().map_err(|e| corrupt(what, e))
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn principal_from_row(row: &impl Columns) -> Result<Principal, StoreError> {
    Ok(Principal {
        name: typed(row, "name", "principal name")?,
        role: Role::from_str(&row.text("role")?).map_err(|e| corrupt("principal role", e))?,
        created_at: time(row.int("created_at")?),
        revoked_at: opt_time(row.opt_int("revoked_at")?),
    })
}

pub(crate) fn token_from_row(row: &impl Columns) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: typed(row, "id", "token id")?,
        principal: typed(row, "principal", "token principal")?,
        label: row.text("label")?,
        created_at: time(row.int("created_at")?),
        revoked_at: opt_time(row.opt_int("revoked_at")?),
    })
}

pub(crate) fn agent_from_row(row: &impl Columns) -> Result<Agent, StoreError> {
    Ok(Agent {
        name: typed(row, "name", "agent name")?,
        owner: typed(row, "owner", "agent owner")?,
        description: row.text("description")?,
        created_at: time(row.int("created_at")?),
        revoked_at: opt_time(row.opt_int("revoked_at")?),
        attestation: from_json_text(row.opt_text("attestation")?, "agent attestation")?,
    })
}

/// Rebuilds a mission, refusing a row whose body no longer hashes to its
/// `s256` or disagrees with its indexed columns.
pub(crate) fn mission_from_row(row: &impl Columns) -> Result<Mission, StoreError> {
    mission_from_row_with(row, None)
}

/// Mission bodies whose stored text was already parsed and found to hash
/// to their `s256`, by that `s256`: an unchanged text is not parsed and
/// hashed again (a changed one is, and must match).
#[derive(Debug, Default)]
pub(crate) struct CheckedBodies(
    std::sync::Mutex<std::collections::HashMap<String, (String, MissionBody)>>,
);

impl CheckedBodies {
    /// Remembered at most; past it the memory starts over.
    const MAX: usize = 4_096;

    fn get(&self, s256: &str, text: &str) -> Option<MissionBody> {
        let m = self.0.lock().ok()?;
        m.get(s256)
            .filter(|(t, _)| t == text)
            .map(|(_, b)| b.clone())
    }

    fn put(&self, s256: String, text: String, body: MissionBody) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= Self::MAX {
                m.clear();
            }
            m.insert(s256, (text, body));
        }
    }
}

pub(crate) fn mission_from_row_with(
    row: &impl Columns,
    checked: Option<&CheckedBodies>,
) -> Result<Mission, StoreError> {
    let id = row.text("id")?;
    let body_text = row.text("body")?;
    let s256 = row.text("s256")?;
    let body = match checked.and_then(|c| c.get(&s256, &body_text)) {
        Some(body) => body,
        None => {
            let body: MissionBody = serde_json::from_str(&body_text)
                .map_err(|e| corrupt(&format!("mission `{id}` body"), e))?;
            let computed = mission_s256(&body).map_err(|e| corrupt("mission body", e))?;
            if computed != s256 {
                return Err(StoreError::Corrupt(format!(
                    "mission `{id}` does not match its mission_s256"
                )));
            }
            if let Some(c) = checked {
                c.put(s256.clone(), body_text, body.clone());
            }
            body
        }
    };
    if body.id.as_str() != id
        || body.principal.as_str() != row.text("principal")?
        || body.agent.as_str() != row.text("agent")?
        || i64::try_from(body.expires_at).ok() != Some(row.int("expires_at")?)
    {
        return Err(StoreError::Corrupt(format!(
            "mission `{id}` does not match its mission_s256"
        )));
    }
    let jkt = row
        .opt_text("jkt")?
        .map(|s| Thumbprint::from_stored(s).ok_or_else(|| corrupt("mission jkt", &id)))
        .transpose()?;
    let state = row.text("state")?;
    let status = match state.as_str() {
        "ready" => MissionStatus::Ready,
        "active" => MissionStatus::Active {
            jkt: jkt.ok_or_else(|| corrupt("active mission without a key", &id))?,
            started_at: time(row.opt_int("started_at")?.unwrap_or(0)),
        },
        "ended" => MissionStatus::Ended {
            reason: EndReason::from_str(&row.opt_text("end_reason")?.unwrap_or_default())
                .map_err(|()| corrupt("mission end reason", &id))?,
            at: time(row.opt_int("ended_at")?.unwrap_or(0)),
            jkt,
            started_at: row.opt_int("started_at")?.map(time),
        },
        other => return Err(corrupt("mission state", other)),
    };
    let attestation = from_json_text(row.opt_text("attestation")?, "mission attestation")?;
    let taint = from_json_text(row.opt_text("taint")?, "mission taint")?;
    Ok(Mission {
        body,
        s256,
        status,
        attestation,
        taint,
    })
}

/// Why a start token cannot start its mission at `now` (the mission's row
/// as read), or `None` if it could.
pub(crate) fn start_refusal(
    row: &impl Columns,
    now: UnixTime,
) -> Result<Option<crate::StartError>, StoreError> {
    use crate::StartError;
    let state = row.text("state")?;
    Ok(if row.opt_int("start_token_used_at")?.is_some() {
        Some(StartError::Used)
    } else if state == "ended" || row.int("expires_at")? <= secs(now) {
        Some(StartError::MissionEnded)
    } else if row.int("start_token_expires_at")? <= secs(now) {
        Some(StartError::Expired)
    } else if state != "ready" {
        Some(StartError::Unknown)
    } else {
        None
    })
}

/// Whether `att` meets every requirement of the mission being started: its
/// body's (`body`) and its agent's registration (`agent_attestation`), as
/// the starting transaction reads them.
pub(crate) fn check_start_requirements(
    row: &impl Columns,
    att: &mandate_core::Attestation,
) -> Result<(), crate::StartError> {
    let body: serde_json::Value =
        serde_json::from_str(&row.text("body")?).map_err(|e| corrupt("mission body", e))?;
    let mut required: Vec<mandate_core::AttestationRequirement> = match body.get("attestation") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| corrupt("mission attestation requirement", e))?,
        None => Vec::new(),
    };
    required.extend(from_json_text(
        row.opt_text("agent_attestation")?,
        "agent attestation",
    )?);
    for r in &required {
        r.check(att)
            .map_err(|e| crate::StartError::AttestationMismatch(e.to_string()))?;
    }
    Ok(())
}

/// A value stored as JSON text in a nullable column (an attestation, its
/// requirement, a taint).
pub(crate) fn json_text<T: serde::Serialize>(v: Option<&T>) -> Result<Option<String>, StoreError> {
    v.map(|v| serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
}

/// The value [`json_text`] stored, read back; text that does not parse is
/// a corrupt `what`.
pub(crate) fn from_json_text<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &str,
) -> Result<Option<T>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(what, e)))
        .transpose()
}

/// The end reason of a mission ended because an ancestor ended: revoked
/// under a revoked ancestor, otherwise completed (the work it was part of
/// is over).
pub(crate) fn cascade_reason(ancestor: EndReason) -> &'static str {
    match ancestor {
        EndReason::Revoked => "revoked",
        EndReason::Completed | EndReason::Expired => "completed",
    }
}

/// The description an ephemeral sub-agent is recorded with.
pub(crate) fn ephemeral_description(parent: &MissionId) -> String {
    format!("ephemeral sub-agent of mission {parent}")
}

/// The parent a child mission's body names (its last ancestor).
pub(crate) fn parent_of(d: &NewDelegation) -> Result<&MissionRef, StoreError> {
    d.mission.body.parent().ok_or_else(|| {
        StoreError::Backend(format!(
            "mission `{}` names no parent: only a child mission is delegated",
            d.mission.body.id
        ))
    })
}

/// Why a delegation's carve-out matched no parent: `parent` is the parent's
/// row as the refusing transaction reads it (`state`, `expires_at`, `jkt`,
/// `s256`, `principal`, `requests_used`), if there is one.
pub(crate) fn delegation_refusal(
    parent: Option<&impl Columns>,
    d: &NewDelegation,
    parent_ref: &MissionRef,
) -> Result<DelegateError, StoreError> {
    let Some(row) = parent else {
        return Ok(StoreError::NotFound(format!("parent mission `{}`", parent_ref.id)).into());
    };
    let child = &d.mission.body;
    let expires_at = row.int("expires_at")?;
    if row.text("state")? != "active" || expires_at <= secs(d.now) {
        return Ok(DelegateError::ParentNotActive);
    }
    if row.opt_text("jkt")?.as_deref() != Some(d.parent_jkt.as_str()) {
        return Ok(DelegateError::KeyMismatch);
    }
    // The child's body must name the parent as stored, share its principal
    // and end no later: the store does not rely on its caller for that.
    if row.text("s256")? != parent_ref.s256
        || row.text("principal")? != child.principal.as_str()
        || expires_at < int(child.expires_at)
    {
        return Ok(StoreError::Conflict(format!(
            "mission `{}` does not narrow its parent `{}` as stored",
            child.id, parent_ref.id
        ))
        .into());
    }
    let used = u64::try_from(row.int("requests_used")?).unwrap_or(0);
    Ok(DelegateError::BudgetWidens {
        left: d.parent_budget.saturating_sub(used),
        asked: child.budget.requests,
    })
}

pub(crate) fn revocation_from_row(row: &impl Columns) -> Result<Revocation, StoreError> {
    let kind = row.text("kind")?;
    Ok(Revocation {
        kind: RevocationKind::parse(&kind).ok_or_else(|| corrupt("revocation kind", &kind))?,
        target: row.text("target")?,
        reason: row.text("reason")?,
        revoked_by: typed(row, "revoked_by", "revoked_by")?,
        at: time(row.int("at")?),
    })
}

pub(crate) fn audit_from_row(r: &impl Columns) -> Result<AuditRecord, StoreError> {
    let body = r.text("body")?;
    Ok(AuditRecord {
        seq: u64::try_from(r.int("seq")?).unwrap_or(0),
        time: u64::try_from(r.int("time")?).unwrap_or(0),
        kind: r.text("kind")?,
        // A body that no longer parses is still returned (as a string), so
        // verification names its sequence number.
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        hash: r.text("hash")?,
    })
}

/// An approval with its mission's principal (`m_principal`), agent
/// (`m_agent`), goal (`m_goal`) and hash (`m_s256`).
pub(crate) fn approval_from_row(r: &impl Columns) -> Result<ApprovalRecord, StoreError> {
    let list = |col: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&r.text(col)?).map_err(|e| corrupt(col, e))
    };
    Ok(ApprovalRecord {
        id: r.text("id")?,
        mission: typed(r, "mission_id", "approval mission")?,
        mission_s256: r.text("m_s256")?,
        principal: typed(r, "m_principal", "mission principal")?,
        agent: typed(r, "m_agent", "mission agent")?,
        goal: r.opt_text("m_goal")?.unwrap_or_default(),
        request_digest: r.text("request_digest")?,
        action: r.text("action")?,
        resource: r.text("resource")?,
        context: r.text("context")?,
        context_digest: r.text("context_digest")?,
        reason_code: r.text("reason_code")?,
        policies: list("policies")?,
        justification: r.text("justification")?,
        summary: r.text("summary")?,
        approvers: list("approvers")?,
        step_up: r.flag("step_up")?,
        status: ApprovalStatus::parse(&r.text("status")?)
            .ok_or_else(|| corrupt("approval status", "unknown"))?,
        created_at: time(r.int("created_at")?),
        expires_at: time(r.int("expires_at")?),
        hits: u64::try_from(r.int("hits")?).unwrap_or(0),
        decided_by: r.opt_text("decided_by")?,
        decided_at: opt_time(r.opt_int("decided_at")?),
        decision_reason: r.opt_text("decision_reason")?,
        grant: r.opt_text("grant_id")?,
        ended_mission: r.flag("ended_mission")?,
        taint: from_json_text(r.opt_text("taint")?, "approval taint")?,
    })
}

pub(crate) fn vault_from_row(r: &impl Columns) -> Result<VaultRecord, StoreError> {
    Ok(VaultRecord {
        principal: typed(r, "principal", "vault principal")?,
        route: r.text("route")?,
        kind: r.text("kind")?,
        version: u64::try_from(r.int("version")?).unwrap_or(0),
        nonce: r.bytes("nonce")?,
        ciphertext: r.bytes("ciphertext")?,
        updated_at: time(r.int("updated_at")?),
        updated_by: r.text("updated_by")?,
    })
}

/// A live grant (`id`, `policy`, `scope`, `request_digest`, `created_by`).
pub(crate) fn grant_from_row(r: &impl Columns) -> Result<GrantRecord, StoreError> {
    Ok(GrantRecord {
        id: r.text("id")?,
        scope: r
            .text("scope")?
            .parse()
            .map_err(|e: String| corrupt("grant scope", e))?,
        policy: r.text("policy")?,
        request_digest: r.opt_text("request_digest")?,
        created_by: r.text("created_by")?,
    })
}

pub(crate) fn webhook_from_row(r: &impl Columns) -> Result<WebhookDelivery, StoreError> {
    Ok(WebhookDelivery {
        id: r.int("id")?,
        event: r.text("event")?,
        payload: r.text("payload")?,
        attempts: u32::try_from(r.int("attempts")?).unwrap_or(u32::MAX),
        next_attempt_ms: u64::try_from(r.int("next_attempt_ms")?).unwrap_or(0),
    })
}

/// Records a replay claim unless a live one holds the key (SQLite and
/// PostgreSQL alike; `$1` key, `$2` expires, `$3` now). No unique violation
/// can happen, so a refused claim leaves a PostgreSQL transaction usable.
pub(crate) const CLAIM: &str = "INSERT INTO claims (key, expires) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET expires = excluded.expires WHERE claims.expires <= $3";

/// Deletes replay claims (`$1` now) expired for a freshness window
/// (60 s) already: each node judges expiry by its own clock, so a node
/// whose clock runs ahead must not delete a claim that a node whose clock
/// runs behind still relies on (it would accept the replay).
pub(crate) const SWEEP_CLAIMS: &str = "DELETE FROM claims WHERE expires <= $1 - 60";

/// When an audit sink deletes expired replay claims: with the first claim,
/// then after a minute or after 1,024 claims, whichever comes first.
#[derive(Debug, Default)]
pub(crate) struct ClaimSweep {
    calls: u32,
    last: u64,
}

impl ClaimSweep {
    const EVERY_CALLS: u32 = 1_024;
    const EVERY_SECS: u64 = 60;

    /// Whether to sweep with this claim, made at `now`.
    pub(crate) fn due(&mut self, now: UnixTime) -> bool {
        self.calls = self.calls.saturating_add(1);
        if self.last == 0
            || self.calls >= Self::EVERY_CALLS
            || now.0 >= self.last.saturating_add(Self::EVERY_SECS)
        {
            self.calls = 0;
            self.last = now.0.max(1);
            true
        } else {
            false
        }
    }
}

/// The fields of a record body that are kept beside it as columns, so the
/// audit log's filters are answered by indexes (migration 0008). Each is
/// the body's string field of that name, or `NULL` when the body has none
/// (or it is not a string), exactly as [`AuditFilter::matches`] reads it.
/// The body stays the chained text; these columns are derived from it and
/// are not covered by the hash chain (verification reads only the body).
pub(crate) const AUDIT_COLUMNS: [&str; 5] = ["mission", "principal", "agent", "action", "decision"];

/// [`AUDIT_COLUMNS`] of one body, in that order.
pub(crate) fn audit_columns(body: &serde_json::Value) -> [Option<&str>; 5] {
    AUDIT_COLUMNS.map(|k| body.get(k).and_then(|v| v.as_str()))
}

/// A value bound to an audit query.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// The SQL of [`Store::audit_query`](crate::Store::audit_query) for both
/// backends: `placeholder(n)` spells the n-th parameter (`?n` or `$n`).
/// Each equality filter is a column with an index that ends in `seq`, so
/// the rows come in `seq` order from the index and the `LIMIT` stops the
/// walk; `agent` with `action` has an index of its own.
///
/// With several filters, one leads (the first of mission, agent, principal,
/// action, decision, kind: the most selective first) and the others are
/// checked on the rows its index yields. `demote` spells a comparison that
/// the database must not answer with an index (SQLite's unary `+`: without
/// statistics SQLite may otherwise walk the `decision` index for
/// `mission=&decision=`); PostgreSQL chooses from its statistics. `since`
/// and `until` are checked on the rows (a time range alone walks the log
/// in `seq` order from `after`).
///
/// INVARIANT: the SQL holds only fixed column names, operators and
/// placeholders; every value the caller gave is bound, never spliced (the
/// backends pass it to `sqlx::AssertSqlSafe` on that ground).
pub(crate) fn audit_query_sql(
    f: &AuditFilter,
    page: AuditPage,
    limit: u32,
    placeholder: impl Fn(usize) -> String,
    demote: bool,
) -> (String, Vec<Bind>) {
    // Each index ends in `seq`, so either direction walks one index range.
    let (bound, from, order) = match page {
        AuditPage::After(after) => (">", after, "ASC"),
        AuditPage::Before(before) => ("<", before.unwrap_or(u64::MAX), "DESC"),
    };
    let mut sql =
        format!("SELECT seq, time, kind, body, hash FROM audit_events WHERE seq {bound} ");
    let mut binds = vec![Bind::Int(int(from))];
    sql.push_str(&placeholder(1));
    // In order of selectivity: the first one present leads.
    let text = [
        ("mission", &f.mission),
        ("agent", &f.agent),
        ("principal", &f.principal),
        ("action", &f.action),
        ("decision", &f.decision),
        ("kind", &f.kind),
    ];
    let lead = text.iter().find(|(_, v)| v.is_some()).map(|(c, _)| *c);
    for (column, value) in text {
        if let Some(v) = value {
            // `agent` leading takes `action` with it: (agent, action, seq).
            let indexed = Some(column) == lead || (column == "action" && lead == Some("agent"));
            let prefix = if demote && !indexed { "+" } else { "" };
            binds.push(Bind::Text(v.clone()));
            sql.push_str(&format!(
                " AND {prefix}{column} = {}",
                placeholder(binds.len())
            ));
        }
    }
    for (op, value) in [(">=", f.since), ("<=", f.until)] {
        if let Some(t) = value {
            binds.push(Bind::Int(int(t)));
            sql.push_str(&format!(" AND time {op} {}", placeholder(binds.len())));
        }
    }
    binds.push(Bind::Int(i64::from(limit)));
    sql.push_str(&format!(
        " ORDER BY seq {order} LIMIT {}",
        placeholder(binds.len())
    ));
    (sql, binds)
}

/// The SQL of [`Store::audit_find`](crate::Store::audit_find): the first
/// records of `kind` whose canonical body contains `"field":"value"` (the
/// caller confirms the match on the parsed body). Within a mission, it
/// walks the small index of the log's records other than decisions.
pub(crate) fn audit_find_sql(
    kind: &str,
    mission: Option<&str>,
    field: &str,
    value: &str,
    placeholder: impl Fn(usize) -> String,
    contains: &str,
) -> Result<(String, Vec<Bind>), StoreError> {
    let quote = |v: &str| serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()));
    let needle = format!("{}:{}", quote(field)?, quote(value)?);
    let mut binds = vec![Bind::Text(kind.to_owned()), Bind::Text(needle)];
    let mut sql = format!(
        "SELECT seq, time, kind, body, hash FROM audit_events WHERE kind = {} AND {contains}(body, {}) > 0",
        placeholder(1),
        placeholder(2)
    );
    if let Some(m) = mission {
        binds.push(Bind::Text(m.to_owned()));
        sql.push_str(&format!(" AND mission = {}", placeholder(3)));
        if kind != "decision" {
            // Spelled out so both databases may use the partial index.
            sql.push_str(" AND kind <> 'decision'");
        }
    }
    sql.push_str(" ORDER BY seq LIMIT 16");
    Ok((sql, binds))
}

/// The SQL of [`Store::audit_columns_mismatch`](crate::Store::audit_columns_mismatch):
/// `derived(field)` is the backend's expression for the body's string field
/// (NULL when absent or not a string); `?1`/`$1` is `through`.
pub(crate) fn audit_mismatch_sql(placeholder: &str, derived: impl Fn(&str) -> String) -> String {
    let differs: Vec<String> = AUDIT_COLUMNS
        .iter()
        .map(|c| format!("{c} IS DISTINCT FROM ({})", derived(c)))
        .collect();
    format!(
        "SELECT seq FROM audit_events WHERE seq <= {placeholder} AND ({}) ORDER BY seq LIMIT 1",
        differs.join(" OR ")
    )
}
