//! Mission memory and agent notes on SQLite (see `crate::memory`). Every
//! write takes the write lock up front (`BEGIN IMMEDIATE`), so a check and
//! the change it guards are one step, ordered with the transactions that
//! end missions.

use mandate_core::{AgentName, MemoryKey, MissionId, UnixTime};
use sqlx::{Row as _, Sqlite, Transaction};

use super::SqliteStore;
use crate::StoreError;
use crate::memory::{
    MemoryDeleted, MemoryEntry, MemoryWriteError, NewMemoryEntry, Note, Promotion, check_totals,
    entry_from_row, note_from_row, tally,
};
use crate::rows::{corrupt, int, secs};

/// Deletes the memory of `missions`, inside the transaction that ends
/// them. Returns what it deleted, per mission.
pub(super) async fn forget(
    tx: &mut Transaction<'static, Sqlite>,
    missions: &[MissionId],
) -> Result<Vec<MemoryDeleted>, StoreError> {
    if missions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = missions.iter().map(MissionId::as_str).collect();
    let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Backend(e.to_string()))?;
    let deleted: Vec<String> = sqlx::query_scalar(
        "DELETE FROM memory_entries WHERE mission_id IN (SELECT value FROM json_each(?1)) \
         RETURNING mission_id",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    tally(deleted)
}

/// The taint of `mission` if it is active and unexpired at `now`.
async fn active_taint(
    tx: &mut Transaction<'static, Sqlite>,
    mission: &MissionId,
    now: UnixTime,
) -> Result<Option<String>, MemoryWriteError> {
    let row = sqlx::query("SELECT state, expires_at, taint FROM missions WHERE id = ?1")
        .bind(mission.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    match row {
        Some(r)
            if r.try_get::<String, _>("state")? == "active"
                && r.try_get::<i64, _>("expires_at")? > secs(now) =>
        {
            Ok(r.try_get("taint")?)
        }
        _ => Err(MemoryWriteError::MissionNotActive),
    }
}

impl SqliteStore {
    pub(super) async fn put_memory(
        &self,
        e: &NewMemoryEntry,
    ) -> Result<MemoryEntry, MemoryWriteError> {
        let mut tx = self.write_tx().await?;
        // INVARIANT: the mission is active when its entry lands, in the
        // transaction that writes it, so no entry outlives the end of its
        // mission (which deletes them under the same lock).
        let taint = active_taint(&mut tx, &e.mission, e.now).await?;
        let row = sqlx::query(
            "INSERT INTO memory_entries (mission_id, key, value, bytes, value_s256, shared, source, \
             taint, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
             ON CONFLICT (mission_id, key) DO UPDATE SET value = excluded.value, \
             bytes = excluded.bytes, value_s256 = excluded.value_s256, shared = excluded.shared, \
             source = excluded.source, taint = excluded.taint, updated_at = excluded.updated_at \
             RETURNING *",
        )
        .bind(e.mission.as_str())
        .bind(e.key.as_str().as_bytes())
        .bind(e.value.json())
        .bind(int(e.value.bytes()))
        .bind(e.value.s256())
        .bind(i64::from(e.shared))
        .bind(&e.source)
        .bind(taint)
        .bind(secs(e.now))
        .fetch_one(&mut *tx)
        .await?;
        let (n, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM memory_entries WHERE mission_id = ?1",
        )
        .bind(e.mission.as_str())
        .fetch_one(&mut *tx)
        .await?;
        // Past a limit, the transaction is dropped: nothing changed.
        check_totals("the mission", n, bytes)?;
        let entry = entry_from_row(&row)?;
        tx.commit().await?;
        Ok(entry)
    }

    pub(super) async fn memory_entry(
        &self,
        mission: &MissionId,
        key: &MemoryKey,
    ) -> Result<Option<MemoryEntry>, StoreError> {
        sqlx::query("SELECT * FROM memory_entries WHERE mission_id = ?1 AND key = ?2")
            .bind(mission.as_str())
            .bind(key.as_str().as_bytes())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(entry_from_row)
            .transpose()
    }

    pub(super) async fn memory_entries(
        &self,
        mission: &MissionId,
    ) -> Result<Vec<MemoryEntry>, StoreError> {
        sqlx::query("SELECT * FROM memory_entries WHERE mission_id = ?1 ORDER BY key")
            .bind(mission.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(entry_from_row)
            .collect()
    }

    pub(super) async fn delete_memory(
        &self,
        mission: &MissionId,
        key: &MemoryKey,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("DELETE FROM memory_entries WHERE mission_id = ?1 AND key = ?2")
            .bind(mission.as_str())
            .bind(key.as_str().as_bytes())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(super) async fn promote(
        &self,
        p: &Promotion,
    ) -> Result<(AgentName, Vec<Note>), MemoryWriteError> {
        let mut tx = self.write_tx().await?;
        active_taint(&mut tx, &p.mission, p.now).await?;
        let agent: String = sqlx::query_scalar("SELECT agent FROM missions WHERE id = ?1")
            .bind(p.mission.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let agent = AgentName::try_from(agent).map_err(|e| corrupt("agent name", e))?;
        if agent.is_ephemeral() {
            return Err(MemoryWriteError::EphemeralAgent);
        }
        let mut notes = Vec::with_capacity(p.keys.len());
        for (i, key) in p.keys.iter().enumerate() {
            // `WHERE` before `ON CONFLICT`: SQLite's upsert after a SELECT.
            let row = sqlx::query(
                "INSERT INTO agent_notes (agent, key, value, bytes, value_s256, source, taint, \
                 written_at, promoted_from, promoted_by, promoted_at, reason) \
                 SELECT ?1, key, value, bytes, value_s256, source, taint, updated_at, mission_id, \
                 ?2, ?3, ?4 FROM memory_entries WHERE mission_id = ?5 AND key = ?6 \
                 ON CONFLICT (agent, key) DO UPDATE SET value = excluded.value, \
                 bytes = excluded.bytes, value_s256 = excluded.value_s256, \
                 source = excluded.source, taint = excluded.taint, \
                 written_at = excluded.written_at, promoted_from = excluded.promoted_from, \
                 promoted_by = excluded.promoted_by, promoted_at = excluded.promoted_at, \
                 reason = excluded.reason \
                 RETURNING *",
            )
            .bind(agent.as_str())
            .bind(p.by.as_str())
            .bind(secs(p.now))
            .bind(&p.reason)
            .bind(p.mission.as_str())
            .bind(key.as_str().as_bytes())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(MemoryWriteError::NoSuchEntry(i))?;
            notes.push(note_from_row(&row)?);
        }
        let (n, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM agent_notes WHERE agent = ?1",
        )
        .bind(agent.as_str())
        .fetch_one(&mut *tx)
        .await?;
        check_totals(&format!("agent `{agent}`"), n, bytes)?;
        tx.commit().await?;
        Ok((agent, notes))
    }

    pub(super) async fn agent_notes(&self, agent: &AgentName) -> Result<Vec<Note>, StoreError> {
        sqlx::query("SELECT * FROM agent_notes WHERE agent = ?1 ORDER BY key")
            .bind(agent.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(note_from_row)
            .collect()
    }

    pub(super) async fn agent_note(
        &self,
        agent: &AgentName,
        key: &MemoryKey,
    ) -> Result<Option<Note>, StoreError> {
        sqlx::query("SELECT * FROM agent_notes WHERE agent = ?1 AND key = ?2")
            .bind(agent.as_str())
            .bind(key.as_str().as_bytes())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(note_from_row)
            .transpose()
    }

    pub(super) async fn sweep_memory(
        &self,
        now: UnixTime,
    ) -> Result<Vec<MemoryDeleted>, StoreError> {
        let mut tx = self.write_tx().await?;
        // From the entries (few) to their missions (by primary key), not
        // the other way round.
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM memory_entries WHERE mission_id IN ( \
                 SELECT DISTINCT e.mission_id FROM memory_entries e \
                 JOIN missions m ON m.id = e.mission_id \
                 WHERE m.expires_at <= ?1 OR m.state = 'ended') \
             RETURNING mission_id",
        )
        .bind(secs(now))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        tally(deleted)
    }
}
