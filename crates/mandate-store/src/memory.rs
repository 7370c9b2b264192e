//! Mission memory and agent notes, as stored (docs/memory.md): the types
//! both backends return and the checks they share.
//!
//! A mission's entries live in `memory_entries` while it runs; every
//! transaction that ends a mission deletes them (rows, not flags), and
//! [`Store::sweep_expired_memory`](crate::Store::sweep_expired_memory)
//! deletes those of missions past their expiry. A person's promotion
//! copies entries into the agent's `agent_notes`, which outlive missions.

use mandate_core::{
    AgentName, MAX_MEMORY_BYTES, MAX_MEMORY_ENTRIES, MemoryKey, MemoryValue, MissionId,
    PrincipalName, Taint, UnixTime,
};

use crate::StoreError;
use crate::rows::{Columns, corrupt, time, typed};

/// An entry to write (or overwrite) in a running mission's memory.
#[derive(Debug, Clone)]
pub struct NewMemoryEntry {
    pub mission: MissionId,
    pub key: MemoryKey,
    pub value: MemoryValue,
    pub shared: bool,
    /// The agent's stated source (checked free text).
    pub source: String,
    pub now: UnixTime,
}

/// An entry of a mission's memory, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryEntry {
    pub mission: MissionId,
    pub key: MemoryKey,
    /// The value's JSON text, as the agent sent it.
    pub value: String,
    pub value_s256: String,
    pub bytes: u64,
    pub shared: bool,
    pub source: String,
    /// The mission's taint when the entry was last written, as the
    /// writing transaction read it.
    pub taint: Option<Taint>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// A promotion: a person keeps some of a running mission's entries as its
/// agent's notes.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub mission: MissionId,
    /// Distinct keys.
    pub keys: Vec<MemoryKey>,
    pub by: PrincipalName,
    pub reason: String,
    pub now: UnixTime,
}

/// A note of an agent: an entry promoted from one of its missions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub agent: AgentName,
    pub key: MemoryKey,
    /// The value's JSON text, as the agent wrote it.
    pub value: String,
    pub value_s256: String,
    pub bytes: u64,
    pub source: String,
    /// The writing mission's taint when the entry was written.
    pub taint: Option<Taint>,
    /// When the entry was last written in its mission.
    pub written_at: UnixTime,
    pub promoted_from: MissionId,
    pub promoted_by: PrincipalName,
    pub promoted_at: UnixTime,
    pub reason: String,
}

/// The entries of one mission deleted because it ended or expired.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoryDeleted {
    pub mission: MissionId,
    pub entries: u64,
}

/// Why an entry could not be written or promoted. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryWriteError {
    /// The mission has ended, expired or not started.
    #[error("the mission is not active")]
    MissionNotActive,
    /// The write would pass a limit: [`MAX_MEMORY_ENTRIES`] entries or
    /// [`MAX_MEMORY_BYTES`] bytes of values, per mission (memory) or per
    /// agent (notes).
    #[error("{0}")]
    Limit(String),
    /// `keys[i]` of a promotion names no entry of the mission.
    #[error("`keys[{0}]` names no entry of the mission")]
    NoSuchEntry(usize),
    /// The mission's agent is an ephemeral sub-agent, which keeps no notes.
    #[error("an ephemeral sub-agent keeps no notes")]
    EphemeralAgent,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for MemoryWriteError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Refuses totals past the limits (`whose`: "the mission" or "agent `a`").
pub(crate) fn check_totals(whose: &str, entries: i64, bytes: i64) -> Result<(), MemoryWriteError> {
    let entries = u64::try_from(entries).unwrap_or(u64::MAX);
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    if entries > MAX_MEMORY_ENTRIES {
        return Err(MemoryWriteError::Limit(format!(
            "{whose} would keep {entries} entries; at most {MAX_MEMORY_ENTRIES} are kept"
        )));
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(MemoryWriteError::Limit(format!(
            "{whose} would keep {bytes} bytes of values; at most {MAX_MEMORY_BYTES} are kept"
        )));
    }
    Ok(())
}

/// A stored key: its UTF-8 bytes.
pub(crate) fn key_from_row(row: &impl Columns) -> Result<MemoryKey, StoreError> {
    let bytes = row.bytes("key")?;
    let text = String::from_utf8(bytes).map_err(|e| corrupt("memory key", e))?;
    MemoryKey::try_from(text).map_err(|e| corrupt("memory key", e))
}

fn taint_from_row(row: &impl Columns) -> Result<Option<Taint>, StoreError> {
    crate::rows::from_json_text(row.opt_text("taint")?, "memory taint")
}

fn count(row: &impl Columns, column: &str) -> Result<u64, StoreError> {
    u64::try_from(row.int(column)?).map_err(|e| corrupt(column, e))
}

/// A stored value, checked against its digest: a value changed behind the
/// store's back is refused, not served.
fn checked_value(row: &impl Columns) -> Result<(String, String), StoreError> {
    let value = row.text("value")?;
    let s256 = row.text("value_s256")?;
    if mandate_core::s256(value.as_bytes()) != s256 {
        return Err(corrupt("memory value", "it does not match its digest"));
    }
    Ok((value, s256))
}

pub(crate) fn entry_from_row(row: &impl Columns) -> Result<MemoryEntry, StoreError> {
    let (value, value_s256) = checked_value(row)?;
    Ok(MemoryEntry {
        mission: typed(row, "mission_id", "mission id")?,
        key: key_from_row(row)?,
        value,
        value_s256,
        bytes: count(row, "bytes")?,
        shared: row.flag("shared")?,
        source: row.text("source")?,
        taint: taint_from_row(row)?,
        created_at: time(row.int("created_at")?),
        updated_at: time(row.int("updated_at")?),
    })
}

pub(crate) fn note_from_row(row: &impl Columns) -> Result<Note, StoreError> {
    let (value, value_s256) = checked_value(row)?;
    Ok(Note {
        agent: typed(row, "agent", "agent name")?,
        key: key_from_row(row)?,
        value,
        value_s256,
        bytes: count(row, "bytes")?,
        source: row.text("source")?,
        taint: taint_from_row(row)?,
        written_at: time(row.int("written_at")?),
        promoted_from: typed(row, "promoted_from", "mission id")?,
        promoted_by: typed(row, "promoted_by", "principal name")?,
        promoted_at: time(row.int("promoted_at")?),
        reason: row.text("reason")?,
    })
}

/// Deleted rows' mission ids, counted per mission, in order.
pub(crate) fn tally(
    ids: impl IntoIterator<Item = String>,
) -> Result<Vec<MemoryDeleted>, StoreError> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(id, entries)| {
            Ok(MemoryDeleted {
                mission: MissionId::try_from(id).map_err(|e| corrupt("mission id", e))?,
                entries,
            })
        })
        .collect()
}
