//! The embedded SQLite store: one file in the data dir, WAL journal,
//! `synchronous = FULL`, foreign keys on.

mod memory;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mandate_core::{
    AgentName, ApiTokenId, AuditRecord, ChainHead, EndReason, Mission, MissionId, PrincipalName,
    Thumbprint, TokenHash, UnixTime,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};

use crate::console::{
    ConsoleSession, StoredPasskey, passkey_from_row, session_from_row, sql as console_sql,
};
use crate::direct::{Readers, SqliteAuditSink, WritersWaiting};
use crate::model::{
    Agent, ApiToken, ApprovalFilter, ApprovalRecord, ApprovalStatus, AuditFilter, AuditPage,
    GrantRecord, MissionSnapshot, NewApproval, NewDelegation, NewMission, Principal, Resolution,
    Revocation, RevocationKind, RevocationSummary, VaultRecord, WebhookDelivery,
};
use crate::rows::{
    Bind, CLAIM, CheckedBodies, ClaimSweep, Columns, SWEEP_CLAIMS, agent_from_row,
    approval_from_row, audit_find_sql, audit_from_row, audit_mismatch_sql, audit_query_sql,
    cascade_reason, check_start_requirements, corrupt, delegation_refusal, ephemeral_description,
    from_json_text, grant_from_row, int, is_unique_violation, json_text, mission_from_row,
    mission_from_row_with, parent_of, principal_from_row, revocation_from_row, secs, start_refusal,
    token_from_row, typed, vault_from_row, webhook_from_row,
};
use crate::{
    ApprovalError, AuditSink, Change, DelegateError, MemoryDeleted, MemoryEntry, MemoryWriteError,
    NewMemoryEntry, Note, Promotion, StartError, Store, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Connections for the decision path's point reads (see `direct`).
    readers: Arc<Readers>,
    checked: Arc<CheckedBodies>,
    /// When [`Store::claim`] next deletes expired claims.
    claim_sweep: Arc<std::sync::Mutex<ClaimSweep>>,
    /// Writes through the pool waiting for the write lock; the audit sink
    /// lets them go first (see `direct::WritersWaiting`).
    waiting: WritersWaiting,
    path: PathBuf,
    durable: bool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, true).await
    }

    /// As [`Self::open`]; `durable = false` turns off `fsync`
    /// (`synchronous = OFF`): a crash may lose what was acknowledged. For
    /// benchmarks only.
    pub async fn open_with(path: &Path, durable: bool) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Off
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let readers = Arc::new(Readers::open(path, 4)?);
        Ok(Self {
            pool,
            readers,
            checked: Arc::default(),
            claim_sweep: Arc::default(),
            waiting: WritersWaiting::default(),
            path: path.to_path_buf(),
            durable,
        })
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock up front, so two writers never
        // deadlock upgrading a read lock.
        let _first = self.waiting.enter();
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

impl Columns for SqliteRow {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.try_get(column)?)
    }
}

async fn insert_token(
    tx: &mut Transaction<'static, Sqlite>,
    t: &ApiToken,
    hash: &TokenHash,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_tokens (id, principal, hash, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .bind(t.id.as_str())
        .bind(t.principal.as_str())
        .bind(hash.as_str())
        .bind(&t.label)
        .bind(secs(t.created_at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_revocation(
    tx: &mut Transaction<'static, Sqlite>,
    rev: &Revocation,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO revocations (kind, target, reason, revoked_by, at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .bind(rev.kind.as_str())
        .bind(&rev.target)
        .bind(&rev.reason)
        .bind(rev.revoked_by.as_str())
        .bind(secs(rev.at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts a mission, ready to start with its start token; `parent` for a
/// delegated child.
async fn insert_mission(
    tx: &mut Transaction<'static, Sqlite>,
    m: &NewMission,
    parent: Option<&MissionId>,
) -> Result<(), StoreError> {
    let body = serde_jcs::to_string(&m.body)
        .map_err(|e| StoreError::Backend(format!("cannot encode mission: {e}")))?;
    sqlx::query(
        "INSERT INTO missions (id, principal, agent, body, s256, created_at, expires_at, state, \
         start_token_hash, start_token_expires_at, parent_id, root_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'ready', ?8, ?9, ?10, ?11)",
    )
    .bind(m.body.id.as_str())
    .bind(m.body.principal.as_str())
    .bind(m.body.agent.as_str())
    .bind(body)
    .bind(&m.s256)
    .bind(int(m.body.created_at))
    .bind(int(m.body.expires_at))
    .bind(m.start_token.as_str())
    .bind(secs(m.start_token_expires_at))
    .bind(parent.map(MissionId::as_str))
    .bind(m.body.ancestors.first().map(|r| r.id.as_str()))
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("mission `{}` exists already", m.body.id))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// Ends every live mission matched by `sql` (which binds `?1` = now and
/// `?2` = the target), recording TTL-expired ones as expired.
async fn end_missions(
    tx: &mut Transaction<'static, Sqlite>,
    sql: &'static str,
    now: UnixTime,
    target: &str,
    by: &str,
) -> Result<Vec<MissionId>, StoreError> {
    let rows = sqlx::query(sql)
        .bind(secs(now))
        .bind(target)
        .bind(by)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>("id")
                .map_err(StoreError::from)
                .and_then(|s| MissionId::try_from(s).map_err(|e| corrupt("mission id", e)))
        })
        .collect()
}

/// Ends every mission delegated below `roots` (at any depth) that has not
/// ended, with `reason` (or as expired, at its expiry, if its TTL ran out
/// first), each recorded as ended by the root it descends from. Returns
/// their ids.
///
/// INVARIANT: every path that ends a mission calls this with it, in the
/// same transaction, so a live mission always has live ancestors.
async fn end_descendants(
    tx: &mut Transaction<'static, Sqlite>,
    roots: &[MissionId],
    reason: EndReason,
    now: UnixTime,
) -> Result<Vec<MissionId>, StoreError> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let roots: Vec<&str> = roots.iter().map(MissionId::as_str).collect();
    let roots = serde_json::to_string(&roots).map_err(|e| StoreError::Backend(e.to_string()))?;
    let rows = sqlx::query(
        "WITH RECURSIVE below(id, root) AS ( \
             SELECT id, parent_id FROM missions WHERE parent_id IN (SELECT value FROM json_each(?1)) \
             UNION \
             SELECT m.id, b.root FROM missions m JOIN below b ON m.parent_id = b.id) \
         UPDATE missions SET state = 'ended', \
             end_reason = CASE WHEN expires_at <= ?2 THEN 'expired' ELSE ?3 END, \
             ended_at = MIN(expires_at, ?2), \
             ended_by = 'ancestor ' || (SELECT root FROM below WHERE below.id = missions.id LIMIT 1) || ' ended' \
         WHERE id IN (SELECT id FROM below) AND state != 'ended' RETURNING id",
    )
    .bind(roots)
    .bind(secs(now))
    .bind(cascade_reason(reason))
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>("id")
                .map_err(StoreError::from)
                .and_then(|s| MissionId::try_from(s).map_err(|e| corrupt("mission id", e)))
        })
        .collect()
}

const END_MISSION_BY_ID: &str = "UPDATE missions SET state = 'ended', \
     end_reason = CASE WHEN expires_at <= ?1 THEN 'expired' ELSE 'revoked' END, \
     ended_at = MIN(expires_at, ?1), ended_by = ?3 \
     WHERE id = ?2 AND state != 'ended' RETURNING id";
const END_MISSIONS_OF_AGENT: &str = "UPDATE missions SET state = 'ended', \
     end_reason = CASE WHEN expires_at <= ?1 THEN 'expired' ELSE 'revoked' END, \
     ended_at = MIN(expires_at, ?1), ended_by = ?3 \
     WHERE agent = ?2 AND state != 'ended' RETURNING id";
const END_MISSIONS_OF_PRINCIPAL: &str = "UPDATE missions SET state = 'ended', \
     end_reason = CASE WHEN expires_at <= ?1 THEN 'expired' ELSE 'revoked' END, \
     ended_at = MIN(expires_at, ?1), ended_by = ?3 \
     WHERE (principal = ?2 OR agent IN (SELECT name FROM agents WHERE owner = ?2)) \
       AND state != 'ended' RETURNING id";

/// Approvals with their mission's principal, agent, goal and hash.
macro_rules! approval_select {
    () => {
        "SELECT a.*, m.principal AS m_principal, m.agent AS m_agent, \
         json_extract(m.body, '$.goal') AS m_goal, m.s256 AS m_s256 \
         FROM approvals a JOIN missions m ON m.id = a.mission_id"
    };
}
const APPROVAL_BY_ID: &str = concat!(approval_select!(), " WHERE a.id = ?1");

#[async_trait]
impl Store for SqliteStore {
    async fn bootstrap_admin(
        &self,
        admin: &Principal,
        token: &ApiToken,
        hash: &TokenHash,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO principals (name, role, created_at) VALUES (?1, ?2, ?3)")
            .bind(admin.name.as_str())
            .bind(admin.role.as_str())
            .bind(secs(admin.created_at))
            .execute(&mut *tx)
            .await?;
        insert_token(&mut tx, token, hash).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn create_principal(&self, p: &Principal) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO principals (name, role, created_at) VALUES (?1, ?2, ?3)")
            .bind(p.name.as_str())
            .bind(p.role.as_str())
            .bind(secs(p.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("principal `{}` already exists", p.name))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn principal(&self, name: &PrincipalName) -> Result<Option<Principal>, StoreError> {
        sqlx::query("SELECT * FROM principals WHERE name = ?1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(principal_from_row)
            .transpose()
    }

    async fn principals(&self) -> Result<Vec<Principal>, StoreError> {
        sqlx::query("SELECT * FROM principals ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(principal_from_row)
            .collect()
    }

    async fn create_api_token(&self, token: &ApiToken, hash: &TokenHash) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let live: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM principals WHERE name = ?1 AND revoked_at IS NULL")
                .bind(token.principal.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if live.is_none() {
            return Err(StoreError::NotFound(format!(
                "principal `{}`",
                token.principal
            )));
        }
        insert_token(&mut tx, token, hash).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn principal_by_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(Principal, ApiTokenId)>, StoreError> {
        // Read on every API call (`/v1/decide` included): a point read on
        // a direct connection, like the decision path's (ADR 0009).
        self.readers.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.*, t.id AS token_id FROM api_tokens t JOIN principals p ON p.name = t.principal \
                 WHERE t.hash = ?1 AND t.revoked_at IS NULL AND p.revoked_at IS NULL",
            )?;
            let mut rows = stmt.query([hash.as_str()])?;
            rows.next()?
                .map(|r| {
                    Ok((
                        principal_from_row(r)?,
                        ApiTokenId::try_from(r.text("token_id")?)
                            .map_err(|e| corrupt("token id", e))?,
                    ))
                })
                .transpose()
        })
    }

    async fn api_tokens(&self, principal: &PrincipalName) -> Result<Vec<ApiToken>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens WHERE principal = ?1 ORDER BY created_at, id")
            .bind(principal.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_api_token(
        &self,
        id: &ApiTokenId,
        rev: &Revocation,
    ) -> Result<ApiToken, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL")
            .bind(secs(rev.at))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = ?1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("token `{id}`")))?;
        insert_revocation(&mut tx, rev).await?;
        tx.commit().await?;
        token_from_row(&row)
    }

    async fn create_agent(&self, a: &Agent) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let live: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM principals WHERE name = ?1 AND revoked_at IS NULL")
                .bind(a.owner.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if live.is_none() {
            return Err(StoreError::NotFound(format!("principal `{}`", a.owner)));
        }
        sqlx::query(
            "INSERT INTO agents (name, owner, description, created_at, attestation) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(a.name.as_str())
        .bind(a.owner.as_str())
        .bind(&a.description)
        .bind(secs(a.created_at))
        .bind(json_text(a.attestation.as_ref())?)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("agent `{}` already exists", a.name))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(())
    }

    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        sqlx::query("SELECT * FROM agents WHERE name = ?1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(agent_from_row)
            .transpose()
    }

    async fn set_agent_attestation(
        &self,
        name: &AgentName,
        requirement: Option<&mandate_core::AttestationRequirement>,
    ) -> Result<Agent, StoreError> {
        let row = sqlx::query(
            "UPDATE agents SET attestation = ?2 WHERE name = ?1 AND ephemeral_of IS NULL RETURNING *",
        )
        .bind(name.as_str())
        .bind(json_text(requirement)?)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("agent `{name}`")))?;
        agent_from_row(&row)
    }

    async fn agents(&self, owner: Option<&PrincipalName>) -> Result<Vec<Agent>, StoreError> {
        sqlx::query(
            "SELECT * FROM agents WHERE ephemeral_of IS NULL AND (?1 IS NULL OR owner = ?1) \
             ORDER BY name",
        )
        .bind(owner.map(PrincipalName::as_str))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(agent_from_row)
        .collect()
    }

    async fn live_missions_by_agent(
        &self,
        owner: Option<&PrincipalName>,
        now: UnixTime,
    ) -> Result<Vec<(AgentName, u64)>, StoreError> {
        sqlx::query(
            "SELECT m.agent AS agent, COUNT(*) AS live FROM missions m \
             JOIN agents a ON a.name = m.agent \
             WHERE a.ephemeral_of IS NULL AND (?1 IS NULL OR a.owner = ?1) \
               AND m.state <> 'ended' AND m.expires_at > ?2 \
             GROUP BY m.agent ORDER BY m.agent",
        )
        .bind(owner.map(PrincipalName::as_str))
        .bind(secs(now))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                typed(r, "agent", "agent name")?,
                u64::try_from(r.int("live")?).unwrap_or(0),
            ))
        })
        .collect()
    }

    async fn create_mission(&self, m: &NewMission) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        // The agent and principal must still be live when the mission lands;
        // an ephemeral sub-agent exists for its one mission only.
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM agents a JOIN principals p ON p.name = ?2 \
             WHERE a.name = ?1 AND a.revoked_at IS NULL AND a.ephemeral_of IS NULL \
               AND p.revoked_at IS NULL",
        )
        .bind(m.body.agent.as_str())
        .bind(m.body.principal.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            return Err(StoreError::NotFound(format!(
                "live agent `{}`",
                m.body.agent
            )));
        }
        insert_mission(&mut tx, m, None).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mission(&self, id: &MissionId) -> Result<Option<Mission>, StoreError> {
        self.readers.with(|c| {
            let mut stmt = c.prepare_cached("SELECT * FROM missions WHERE id = ?1")?;
            let mut rows = stmt.query([id.as_str()])?;
            rows.next()?
                .map(|r| mission_from_row_with(r, Some(&self.checked)))
                .transpose()
        })
    }

    async fn missions(
        &self,
        principal: Option<&PrincipalName>,
        limit: u32,
    ) -> Result<Vec<Mission>, StoreError> {
        sqlx::query("SELECT * FROM missions WHERE ?1 IS NULL OR principal = ?1 ORDER BY created_at DESC, id LIMIT ?2")
            .bind(principal.map(PrincipalName::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(mission_from_row)
            .collect()
    }

    async fn start_attested(
        &self,
        token: &TokenHash,
        jkt: &Thumbprint,
        now: UnixTime,
        attestation: Option<&mandate_core::Attestation>,
    ) -> Result<Mission, StartError> {
        // INVARIANT: one UPDATE both checks and consumes the token, so of
        // concurrent starts exactly one matches the row. Without evidence
        // it matches only a mission that neither its body nor its agent's
        // registration requires evidence of; the unique index on
        // `attestation_s256` lets one piece of evidence start one mission.
        // With evidence, what the mission and its agent require now is
        // checked again in the same transaction: a requirement changed
        // since the handler checked the evidence still holds.
        // SQLite: the write lock, taken up front, orders this with any
        // change to the agent's requirement.
        let mut tx = self.write_tx().await?;
        if let Some(att) = attestation
            && let Some(row) = sqlx::query(
                "SELECT m.body, a.attestation AS agent_attestation FROM missions m \
                 JOIN agents a ON a.name = m.agent WHERE m.start_token_hash = ?1",
            )
            .bind(token.as_str())
            .fetch_optional(&mut *tx)
            .await?
        {
            check_start_requirements(&row, att)?;
        }
        let started = sqlx::query(
            "UPDATE missions SET state = 'active', jkt = ?2, started_at = ?3, start_token_used_at = ?3, \
               attestation = ?4, attestation_s256 = ?5, \
               taint = COALESCE(taint, (SELECT p.taint FROM missions p WHERE p.id = missions.parent_id)) \
             WHERE start_token_hash = ?1 AND start_token_used_at IS NULL AND state = 'ready' \
               AND start_token_expires_at > ?3 AND expires_at > ?3 \
               AND (?4 IS NOT NULL OR (json_extract(body, '$.attestation') IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.name = missions.agent AND a.attestation IS NOT NULL))) \
             RETURNING *",
        )
        .bind(token.as_str())
        .bind(jkt.as_str())
        .bind(secs(now))
        .bind(json_text(attestation)?)
        .bind(attestation.map(|a| a.evidence_s256.as_str()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StartError::AttestationReplayed
            } else {
                e.into()
            }
        })?;
        if let Some(row) = started {
            tx.commit().await?;
            return Ok(mission_from_row(&row)?);
        }
        let row = sqlx::query("SELECT * FROM missions WHERE start_token_hash = ?1")
            .bind(token.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StartError::Unknown)?;
        Err(match start_refusal(&row, now)? {
            Some(refusal) => refusal,
            None if attestation.is_none() => StartError::AttestationRequired,
            None => StartError::Unknown,
        })
    }

    async fn mark_taint(
        &self,
        mission: &MissionId,
        labels: &[String],
        via: &str,
        at: UnixTime,
    ) -> Result<Option<mandate_core::Taint>, StoreError> {
        // Read, merge and write in one transaction: two answers read at
        // once both leave their label.
        let mut tx = self.write_tx().await?;
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT taint FROM missions WHERE id = ?1")
                .bind(mission.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("mission `{mission}`")));
        };
        let current: Option<mandate_core::Taint> = from_json_text(current, "mission taint")?;
        if !mandate_core::Taint::adds(current.as_ref(), labels) {
            return Ok(None);
        }
        let next = mandate_core::Taint::merged(current.as_ref(), labels, via, at.0);
        sqlx::query("UPDATE missions SET taint = ?2 WHERE id = ?1")
            .bind(mission.as_str())
            .bind(json_text(Some(&next))?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(next))
    }

    async fn clear_taint(
        &self,
        mission: &MissionId,
    ) -> Result<Option<mandate_core::Taint>, StoreError> {
        let mut tx = self.write_tx().await?;
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT taint FROM missions WHERE id = ?1")
                .bind(mission.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("mission `{mission}`")));
        };
        sqlx::query("UPDATE missions SET taint = NULL WHERE id = ?1")
            .bind(mission.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        from_json_text(current, "mission taint")
    }

    async fn startable(&self, token: &TokenHash, now: UnixTime) -> Result<Mission, StartError> {
        let row = sqlx::query("SELECT * FROM missions WHERE start_token_hash = ?1")
            .bind(token.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StartError::Unknown)?;
        match start_refusal(&row, now)? {
            Some(refusal) => Err(refusal),
            None => Ok(mission_from_row(&row)?),
        }
    }

    async fn delegate(&self, d: &NewDelegation) -> Result<(), DelegateError> {
        let child = &d.mission.body;
        let parent = parent_of(d)?;
        let mut tx = self.write_tx().await?;
        // INVARIANT: one UPDATE checks the parent and carves the child's
        // budget out of what it has left, so delegations (racing or not)
        // never take more than the parent has.
        let carved: Option<i64> = sqlx::query_scalar(
            "UPDATE missions SET requests_used = requests_used + ?2 \
             WHERE id = ?1 AND state = 'active' AND expires_at > ?3 AND jkt = ?4 \
               AND requests_used + ?2 <= ?5 AND s256 = ?6 AND principal = ?7 AND expires_at >= ?8 \
             RETURNING requests_used",
        )
        .bind(parent.id.as_str())
        .bind(int(child.budget.requests))
        .bind(secs(d.now))
        .bind(d.parent_jkt.as_str())
        .bind(int(d.parent_budget))
        .bind(&parent.s256)
        .bind(child.principal.as_str())
        .bind(int(child.expires_at))
        .fetch_optional(&mut *tx)
        .await?;
        if carved.is_none() {
            let row = sqlx::query("SELECT * FROM missions WHERE id = ?1")
                .bind(parent.id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            return Err(delegation_refusal(row.as_ref(), d, parent)?);
        }
        if child.agent.is_ephemeral() {
            // Recorded for this one mission; never listed, never the agent
            // of another mission.
            let live: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM principals WHERE name = ?1 AND revoked_at IS NULL",
            )
            .bind(child.principal.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Err(DelegateError::NoSuchAgent(child.agent.to_string()));
            }
            sqlx::query(
                "INSERT INTO agents (name, owner, description, created_at, ephemeral_of) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(child.agent.as_str())
            .bind(child.principal.as_str())
            .bind(ephemeral_description(&parent.id))
            .bind(secs(d.now))
            .bind(child.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("agent `{}` already exists", child.agent))
                } else {
                    e.into()
                }
            })?;
        } else {
            let live: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM agents a JOIN principals p ON p.name = a.owner \
                 WHERE a.name = ?1 AND a.owner = ?2 AND a.revoked_at IS NULL \
                   AND a.ephemeral_of IS NULL AND p.revoked_at IS NULL",
            )
            .bind(child.agent.as_str())
            .bind(child.principal.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Err(DelegateError::NoSuchAgent(child.agent.to_string()));
            }
        }
        insert_mission(&mut tx, &d.mission, Some(&parent.id)).await?;
        sqlx::query(
            "INSERT INTO delegation_links (child_id, parent_id, link, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(child.id.as_str())
        .bind(parent.id.as_str())
        .bind(&d.link)
        .bind(secs(d.now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delegation_link(&self, child: &MissionId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT link FROM delegation_links WHERE child_id = ?1")
                .bind(child.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn mission_tree(&self, root: &MissionId) -> Result<Vec<Mission>, StoreError> {
        sqlx::query(
            "WITH RECURSIVE tree(id, depth) AS ( \
                 SELECT id, 0 FROM missions WHERE id = ?1 \
                 UNION ALL \
                 SELECT m.id, t.depth + 1 FROM missions m JOIN tree t ON m.parent_id = t.id) \
             SELECT m.* FROM tree t JOIN missions m ON m.id = t.id \
             ORDER BY t.depth, m.created_at, m.id",
        )
        .bind(root.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| mission_from_row_with(r, Some(&self.checked)))
        .collect()
    }

    async fn end_mission_forgetting(
        &self,
        id: &MissionId,
        reason: EndReason,
        by: &str,
        now: UnixTime,
    ) -> Result<(Mission, Vec<MemoryDeleted>), StoreError> {
        // One transaction: the mission and every mission below it end
        // together.
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE missions SET state = 'ended', end_reason = ?2, ended_at = ?3, ended_by = ?4 \
             WHERE id = ?1 AND state != 'ended' RETURNING *",
        )
        .bind(id.as_str())
        .bind(reason.as_str())
        .bind(secs(now))
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM missions WHERE id = ?1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(format!("mission `{id}` has already ended")),
                None => StoreError::NotFound(format!("mission `{id}`")),
            });
        };
        let ended = mission_from_row(&row)?;
        let mut all = end_descendants(&mut tx, std::slice::from_ref(id), reason, now).await?;
        all.push(id.clone());
        let forgotten = memory::forget(&mut tx, &all).await?;
        tx.commit().await?;
        Ok((ended, forgotten))
    }

    async fn record_credential(
        &self,
        jti: &str,
        mission: &MissionId,
        jkt: &Thumbprint,
        iat: UnixTime,
        exp: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO credentials (jti, mission_id, jkt, iat, exp) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(jti)
        .bind(mission.as_str())
        .bind(jkt.as_str())
        .bind(secs(iat))
        .bind(secs(exp))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn budget_used(&self, id: &MissionId) -> Result<u64, StoreError> {
        let used: Option<i64> = self.readers.with(|c| {
            let mut stmt = c.prepare_cached("SELECT requests_used FROM missions WHERE id = ?1")?;
            let mut rows = stmt.query([id.as_str()])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })?;
        used.map(|u| u64::try_from(u).unwrap_or(0))
            .ok_or_else(|| StoreError::NotFound(format!("mission `{id}`")))
    }

    async fn mission_snapshot(
        &self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Option<MissionSnapshot>, StoreError> {
        // The mission's row (with its count) and its grants, on one reader.
        self.readers.with(|c| {
            let mut stmt = c.prepare_cached("SELECT * FROM missions WHERE id = ?1")?;
            let mut rows = stmt.query([id.as_str()])?;
            let Some(r) = rows.next()? else {
                return Ok(None);
            };
            let mission = mission_from_row_with(r, Some(&self.checked))?;
            let budget_used = u64::try_from(r.int("requests_used")?).unwrap_or(0);
            Ok(Some(MissionSnapshot::new(
                mission,
                budget_used,
                live_grants_on(c, id, now)?,
            )))
        })
    }

    async fn live_grants(
        &self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        self.readers.with(|c| live_grants_on(c, id, now))
    }

    async fn open_approval(
        &self,
        a: &NewApproval,
        max_pending: u32,
    ) -> Result<Option<(String, bool)>, StoreError> {
        let mut tx = self.write_tx().await?;
        let existing: Option<String> = sqlx::query_scalar(
            "UPDATE approvals SET hits = hits + 1 \
             WHERE mission_id = ?1 AND request_digest = ?2 AND status = 'pending' AND expires_at > ?3 RETURNING id",
        )
        .bind(a.mission.as_str())
        .bind(&a.request_digest)
        .bind(secs(a.created_at))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            tx.commit().await?;
            return Ok(Some((id, true)));
        }
        let pending: i64 = sqlx::query_scalar(
            // The cap holds for a whole delegation tree: a mission cannot
            // multiply it by delegating children.
            "WITH root AS (SELECT COALESCE(root_id, id) AS id FROM missions WHERE id = ?1) \
             SELECT COUNT(*) FROM approvals \
             WHERE status = 'pending' AND expires_at > ?2 \
               AND mission_id IN (SELECT id FROM root \
                                  UNION ALL SELECT m.id FROM missions m JOIN root ON m.root_id = root.id)",
        )
        .bind(a.mission.as_str())
        .bind(secs(a.created_at))
        .fetch_one(&mut *tx)
        .await?;
        if pending >= i64::from(max_pending) {
            return Ok(None);
        }
        // A pending one past its expiry no longer blocks a new request.
        sqlx::query(
            "UPDATE approvals SET status = 'expired' \
             WHERE mission_id = ?1 AND request_digest = ?2 AND status = 'pending'",
        )
        .bind(a.mission.as_str())
        .bind(&a.request_digest)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO approvals (id, mission_id, request_digest, action, resource, context, \
             context_digest, reason_code, policies, status, created_at, expires_at, \
             justification, summary, approvers, step_up, taint) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )
        .bind(&a.id)
        .bind(a.mission.as_str())
        .bind(&a.request_digest)
        .bind(&a.action)
        .bind(&a.resource)
        .bind(&a.context)
        .bind(&a.context_digest)
        .bind(&a.reason_code)
        .bind(&a.policies)
        .bind(secs(a.created_at))
        .bind(secs(a.expires_at))
        .bind(&a.justification)
        .bind(&a.summary)
        .bind(serde_json::to_string(&a.approvers).map_err(|e| corrupt("approvers", e))?)
        .bind(a.step_up)
        .bind(json_text(a.taint.as_ref())?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((a.id.clone(), false)))
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let row = sqlx::query(APPROVAL_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn approvals(&self, f: &ApprovalFilter) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            approval_select!(),
            " WHERE (?1 IS NULL OR a.status = ?1) \
             AND (?2 IS NULL OR a.mission_id = ?2) \
             AND (?4 IS NULL \
                  OR EXISTS (SELECT 1 FROM json_each(a.approvers) WHERE value = ?4) \
                  OR (a.approvers = '[]' AND m.principal = ?4)) \
             AND (?5 IS NULL OR m.principal = ?5 \
                  OR EXISTS (SELECT 1 FROM json_each(a.approvers) WHERE value = ?5)) \
             ORDER BY a.created_at DESC, a.id LIMIT ?3"
        ))
        .bind(f.status.map(ApprovalStatus::as_str))
        .bind(f.mission.as_ref().map(MissionId::as_str))
        .bind(i64::from(f.limit))
        .bind(f.decider.as_deref())
        .bind(f.viewer.as_deref())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    async fn pending_approvals(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn resolve_approval_forgetting(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        resolution: &Resolution,
        now: UnixTime,
    ) -> Result<(ApprovalRecord, Vec<MemoryDeleted>), ApprovalError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(APPROVAL_BY_ID)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = row.as_ref().map(approval_from_row).transpose()? else {
            return Err(ApprovalError::NotFound(id.to_owned()));
        };
        if current.status != ApprovalStatus::Pending && current.status != ApprovalStatus::Expired {
            return Err(ApprovalError::AlreadyDecided(current.status.as_str()));
        }
        let active: bool = sqlx::query_scalar(
            "SELECT state = 'active' AND expires_at > ?2 FROM missions WHERE id = ?1",
        )
        .bind(current.mission.as_str())
        .bind(secs(now))
        .fetch_one(&mut *tx)
        .await?;
        if let Some(e) = current.lapsed(active, now) {
            return Err(e);
        }
        let (status, grant, end) = match resolution {
            Resolution::Approve(g) => ("approved", Some(g), false),
            Resolution::Deny { end_mission } => ("denied", None, *end_mission),
        };
        let updated = sqlx::query(
            "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4, \
             decision_reason = ?5, grant_id = ?6, ended_mission = ?7 \
             WHERE id = ?1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status)
        .bind(by)
        .bind(secs(now))
        .bind(reason)
        .bind(grant.map(|g| g.id.as_str()))
        .bind(end)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(ApprovalError::AlreadyDecided("decided"));
        }
        if let Some(g) = grant {
            sqlx::query(
                "INSERT INTO grants (id, mission_id, policy, created_at, expires_at, max_uses, \
                 scope, request_digest, approval_id, created_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .bind(&g.id)
            .bind(current.mission.as_str())
            .bind(&g.policy)
            .bind(secs(now))
            .bind(g.expires_at.map(secs))
            .bind(g.max_uses.map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
            .bind(g.scope.as_str())
            .bind(&g.request_digest)
            .bind(id)
            .bind(by)
            .execute(&mut *tx)
            .await?;
        }
        let mut forgotten = Vec::new();
        if end {
            // Its other pending requests expire with it (the expiry sweep
            // records and announces them); the missions below it end too.
            let mut ended = end_missions(
                &mut tx,
                END_MISSION_BY_ID,
                now,
                current.mission.as_str(),
                by,
            )
            .await?;
            let below = end_descendants(&mut tx, &ended, EndReason::Revoked, now).await?;
            ended.extend(below);
            forgotten = memory::forget(&mut tx, &ended).await?;
        }
        let row = sqlx::query(APPROVAL_BY_ID)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let decided = approval_from_row(&row)?;
        tx.commit().await?;
        Ok((decided, forgotten))
    }

    async fn expire_approvals(&self, now: UnixTime) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE approvals SET status = 'expired', decided_at = ?1 \
             WHERE status = 'pending' AND (expires_at <= ?1 OR mission_id IN \
               (SELECT id FROM missions WHERE state != 'active' OR expires_at <= ?1)) \
             RETURNING id",
        )
        .bind(secs(now))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let row = sqlx::query(APPROVAL_BY_ID)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            out.push(approval_from_row(&row)?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn memory_put(&self, e: &NewMemoryEntry) -> Result<MemoryEntry, MemoryWriteError> {
        self.put_memory(e).await
    }

    async fn memory_get(
        &self,
        mission: &MissionId,
        key: &mandate_core::MemoryKey,
    ) -> Result<Option<MemoryEntry>, StoreError> {
        self.memory_entry(mission, key).await
    }

    async fn memory_list(&self, mission: &MissionId) -> Result<Vec<MemoryEntry>, StoreError> {
        self.memory_entries(mission).await
    }

    async fn memory_delete(
        &self,
        mission: &MissionId,
        key: &mandate_core::MemoryKey,
    ) -> Result<bool, StoreError> {
        self.delete_memory(mission, key).await
    }

    async fn promote_notes(
        &self,
        p: &Promotion,
    ) -> Result<(AgentName, Vec<Note>), MemoryWriteError> {
        self.promote(p).await
    }

    async fn notes(&self, agent: &AgentName) -> Result<Vec<Note>, StoreError> {
        self.agent_notes(agent).await
    }

    async fn note(
        &self,
        agent: &AgentName,
        key: &mandate_core::MemoryKey,
    ) -> Result<Option<Note>, StoreError> {
        self.agent_note(agent, key).await
    }

    async fn sweep_expired_memory(&self, now: UnixTime) -> Result<Vec<MemoryDeleted>, StoreError> {
        self.sweep_memory(now).await
    }

    async fn put_vault_secret(
        &self,
        rec: &VaultRecord,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let v = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        let changed = match expected_version {
            None => sqlx::query(
                "INSERT INTO vault_secrets (principal, route, kind, version, nonce, ciphertext, \
                 updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (principal, route) DO NOTHING",
            ),
            Some(_) => sqlx::query(
                "UPDATE vault_secrets SET kind = ?3, version = ?4, nonce = ?5, ciphertext = ?6, \
                 updated_at = ?7, updated_by = ?8 \
                 WHERE principal = ?1 AND route = ?2 AND version = ?9",
            ),
        }
        .bind(rec.principal.as_str())
        .bind(&rec.route)
        .bind(&rec.kind)
        .bind(v(rec.version))
        .bind(&rec.nonce)
        .bind(&rec.ciphertext)
        .bind(secs(rec.updated_at))
        .bind(&rec.updated_by)
        .bind(expected_version.map(v))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "the secret of `{}` for `{}` changed meanwhile; retry",
                rec.principal, rec.route
            )))
        }
    }

    async fn vault_secret(
        &self,
        principal: &PrincipalName,
        route: &str,
    ) -> Result<Option<VaultRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM vault_secrets WHERE principal = ?1 AND route = ?2")
            .bind(principal.as_str())
            .bind(route)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(vault_from_row).transpose()
    }

    async fn vault_secrets(&self) -> Result<Vec<VaultRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM vault_secrets ORDER BY route, principal")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(vault_from_row).collect()
    }

    async fn delete_vault_secret(
        &self,
        principal: &PrincipalName,
        route: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM vault_secrets WHERE principal = ?1 AND route = ?2")
            .bind(principal.as_str())
            .bind(route)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn enqueue_webhook(
        &self,
        event: &str,
        payload: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO webhook_outbox (event, payload, created_ms, next_attempt_ms) \
             VALUES (?1, ?2, ?3, ?3)",
        )
        .bind(event)
        .bind(payload)
        .bind(ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending_webhooks(&self, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event, payload, attempts, next_attempt_ms FROM webhook_outbox \
             WHERE state = 'pending' ORDER BY id LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn webhook_attempted(
        &self,
        id: i64,
        delivered: bool,
        retry_at_ms: Option<u64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let state = match (delivered, retry_at_ms) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, state = ?2, \
             next_attempt_ms = COALESCE(?3, next_attempt_ms), last_error = ?4 WHERE id = ?1",
        )
        .bind(id)
        .bind(state)
        .bind(retry_at_ms.map(|m| i64::try_from(m).unwrap_or(i64::MAX)))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.readers.with(crate::direct::audit_head)
    }

    fn audit_sink(&self) -> Result<Box<dyn AuditSink>, StoreError> {
        Ok(Box::new(SqliteAuditSink::open(
            &self.path,
            self.durable,
            self.waiting.clone(),
        )?))
    }

    async fn audit_records(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM audit_events WHERE seq = ?1")
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(audit_from_row).transpose()
    }

    async fn audit_query(
        &self,
        filter: &AuditFilter,
        page: AuditPage,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let (sql, binds) = audit_query_sql(filter, page, limit, |n| format!("?{n}"), true);
        let rows = bound(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_columns_mismatch(&self, through: u64) -> Result<Option<u64>, StoreError> {
        let sql = audit_mismatch_sql("?1", |c| {
            format!(
                "CASE WHEN json_valid(body) AND json_type(body, '$.{c}') = 'text' THEN json_extract(body, '$.{c}') END"
            )
        });
        let seq: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(through).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await?;
        Ok(seq.map(|s| u64::try_from(s).unwrap_or(0)))
    }

    async fn audit_find(
        &self,
        kind: &str,
        mission: Option<&str>,
        field: &str,
        value: &str,
    ) -> Result<Option<AuditRecord>, StoreError> {
        // Bodies are stored as RFC 8785 JSON, so a string field appears
        // exactly as `"field":"value"`; the match is confirmed on the parsed
        // body below.
        let (sql, binds) =
            audit_find_sql(kind, mission, field, value, |n| format!("?{n}"), "instr")?;
        let rows = bound(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.pool)
            .await?;
        for r in &rows {
            let rec = audit_from_row(r)?;
            if rec.body.get(field).and_then(|v| v.as_str()) == Some(value) {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    async fn add_checkpoint(&self, seq: u64, token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, token) VALUES (?1, ?2) \
             ON CONFLICT (seq) DO UPDATE SET token = excluded.token",
        )
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_audit(&self, through: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit_events WHERE seq <= ?1")
            .bind(i64::try_from(through).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn claim(&self, key: &str, expires: UnixTime, now: UnixTime) -> Result<bool, StoreError> {
        let _first = self.waiting.enter();
        let sweep = self.claim_sweep.lock().is_ok_and(|mut s| s.due(now));
        if sweep {
            sqlx::query(SWEEP_CLAIMS)
                .bind(secs(now))
                .execute(&self.pool)
                .await?;
        }
        let n = sqlx::query(CLAIM)
            .bind(key)
            .bind(secs(expires))
            .bind(secs(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn head_seal(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT token FROM audit_seal WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT token FROM audit_checkpoints ORDER BY seq")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn revoke(&self, rev: &Revocation) -> Result<RevocationSummary, StoreError> {
        let mut tx = self.write_tx().await?;
        let by = format!("revocation by {}", rev.revoked_by);
        let mut summary = RevocationSummary::default();
        let exists = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(rev.target.clone());
        match rev.kind {
            RevocationKind::Mission => {
                if exists("SELECT 1 FROM missions WHERE id = ?1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!("mission `{}`", rev.target)));
                }
                summary.missions =
                    end_missions(&mut tx, END_MISSION_BY_ID, rev.at, &rev.target, &by).await?;
            }
            RevocationKind::Agent => {
                if exists("SELECT 1 FROM agents WHERE name = ?1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!("agent `{}`", rev.target)));
                }
                let n = sqlx::query(
                    "UPDATE agents SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
                )
                .bind(secs(rev.at))
                .bind(&rev.target)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    summary.agents.push(
                        rev.target
                            .clone()
                            .try_into()
                            .map_err(|e| corrupt("agent name", e))?,
                    );
                }
                summary.missions =
                    end_missions(&mut tx, END_MISSIONS_OF_AGENT, rev.at, &rev.target, &by).await?;
            }
            RevocationKind::Principal => {
                if exists("SELECT 1 FROM principals WHERE name = ?1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!("principal `{}`", rev.target)));
                }
                // Missions first: the agents' owner link is what finds them.
                summary.missions =
                    end_missions(&mut tx, END_MISSIONS_OF_PRINCIPAL, rev.at, &rev.target, &by)
                        .await?;
                let n = sqlx::query(
                    "UPDATE principals SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
                )
                .bind(secs(rev.at))
                .bind(&rev.target)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    summary.principals.push(
                        rev.target
                            .clone()
                            .try_into()
                            .map_err(|e| corrupt("principal name", e))?,
                    );
                }
                summary.tokens = sqlx::query("UPDATE api_tokens SET revoked_at = ?1 WHERE principal = ?2 AND revoked_at IS NULL")
                    .bind(secs(rev.at))
                    .bind(&rev.target)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let agents = sqlx::query(
                    "UPDATE agents SET revoked_at = ?1 WHERE owner = ?2 AND revoked_at IS NULL RETURNING name",
                )
                .bind(secs(rev.at))
                .bind(&rev.target)
                .fetch_all(&mut *tx)
                .await?;
                for a in &agents {
                    let name: String = a.try_get("name")?;
                    summary
                        .agents
                        .push(AgentName::try_from(name).map_err(|e| corrupt("agent name", e))?);
                }
            }
            RevocationKind::Token => {
                return Err(StoreError::Conflict(
                    "tokens are revoked with revoke_api_token".into(),
                ));
            }
        }
        // The missions delegated below those it ended end with them.
        let below = end_descendants(&mut tx, &summary.missions, EndReason::Revoked, rev.at).await?;
        summary.missions.extend(below);
        summary.memory = memory::forget(&mut tx, &summary.missions).await?;
        insert_revocation(&mut tx, rev).await?;
        tx.commit().await?;
        summary.missions.sort();
        summary.agents.sort();
        Ok(summary)
    }

    async fn add_passkey(&self, p: &StoredPasskey) -> Result<(), StoreError> {
        let r = sqlx::query(console_sql::ADD_PASSKEY)
            .bind(&p.cred_id)
            .bind(p.principal.as_str())
            .bind(&p.passkey)
            .bind(secs(p.created_at))
            .execute(&self.pool)
            .await;
        match r {
            Ok(done) if done.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(StoreError::NotFound(format!("principal `{}`", p.principal))),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
                "this passkey is registered already".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn passkeys(&self, principal: &PrincipalName) -> Result<Vec<StoredPasskey>, StoreError> {
        sqlx::query(console_sql::PASSKEYS)
            .bind(principal.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(passkey_from_row)
            .collect()
    }

    async fn passkey(&self, cred_id: &str) -> Result<Option<StoredPasskey>, StoreError> {
        sqlx::query(console_sql::PASSKEY)
            .bind(cred_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(passkey_from_row)
            .transpose()
    }

    async fn update_passkey(&self, cred_id: &str, passkey: &str) -> Result<(), StoreError> {
        sqlx::query(console_sql::UPDATE_PASSKEY)
            .bind(cred_id)
            .bind(passkey)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn add_enrollment(
        &self,
        hash: &str,
        principal: &PrincipalName,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(console_sql::ADD_ENROLLMENT)
            .bind(hash)
            .bind(principal.as_str())
            .bind(secs(expires_at))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("principal `{principal}`")))
        }
    }

    async fn take_enrollment(
        &self,
        hash: &str,
        now: UnixTime,
    ) -> Result<Option<PrincipalName>, StoreError> {
        let row = sqlx::query(console_sql::TAKE_ENROLLMENT)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        if row.int("expires_at")? <= secs(now) {
            return Ok(None);
        }
        typed(&row, "principal", "enrollment principal").map(Some)
    }

    async fn add_console_session(&self, hash: &str, s: &ConsoleSession) -> Result<(), StoreError> {
        sqlx::query(console_sql::ADD_SESSION)
            .bind(hash)
            .bind(s.principal.as_str())
            .bind(&s.csrf)
            .bind(secs(s.created_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn console_session(&self, hash: &str) -> Result<Option<ConsoleSession>, StoreError> {
        sqlx::query(console_sql::SESSION)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn touch_console_session(&self, hash: &str, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query(console_sql::TOUCH_SESSION)
            .bind(hash)
            .bind(secs(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_console_session(&self, hash: &str) -> Result<(), StoreError> {
        sqlx::query(console_sql::DELETE_SESSION)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sweep_console(
        &self,
        created_before: UnixTime,
        idle_before: UnixTime,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(console_sql::SWEEP_SESSIONS)
            .bind(secs(created_before))
            .bind(secs(idle_before))
            .execute(&self.pool)
            .await?;
        sqlx::query(console_sql::SWEEP_ENROLLMENTS)
            .bind(secs(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    async fn announce(&self, _change: &Change) -> Result<(), StoreError> {
        Ok(())
    }

    async fn outbox_turn(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn revocations(&self, limit: u32) -> Result<Vec<Revocation>, StoreError> {
        sqlx::query("SELECT * FROM revocations ORDER BY seq DESC LIMIT ?1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(revocation_from_row)
            .collect()
    }
}

/// Binds an audit query's values in order.
fn bound<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t),
            Bind::Int(i) => q.bind(i),
        };
    }
    q
}

/// A mission's live grants at `now`, in `id` order.
fn live_grants_on(
    c: &rusqlite::Connection,
    id: &MissionId,
    now: UnixTime,
) -> Result<Vec<GrantRecord>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT g.id, g.policy, g.scope, g.request_digest, g.created_by FROM grants g \
         JOIN missions m ON m.id = g.mission_id \
         WHERE g.mission_id = ?1 AND m.state = 'active' AND g.revoked_at IS NULL \
           AND (g.expires_at IS NULL OR g.expires_at > ?2) \
           AND (g.max_uses IS NULL OR g.uses < g.max_uses) ORDER BY g.id",
    )?;
    let mut rows = stmt.query(rusqlite::params![id.as_str(), secs(now)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(grant_from_row(r)?);
    }
    Ok(out)
}
