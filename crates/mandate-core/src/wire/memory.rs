//! Mission memory and agent notes (docs/memory.md).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::taint::Taint;

/// `PUT /v1/missions/{id}/memory/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutMemoryRequest {
    /// Any JSON value, at most 64 KiB of JSON text; kept and returned
    /// exactly as sent.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub value: Box<RawValue>,
    /// Where the agent got it, in its own words (at most 200 characters,
    /// one line): its claim, shown as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Whether missions delegated below this one may read it (default
    /// `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

/// One memory entry with its provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryEntryView {
    /// The key, as the agent sent it (any UTF-8, 1 to 256 bytes).
    pub key: String,
    /// The value, exactly as the agent sent it.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub value: Box<RawValue>,
    /// base64url(SHA-256) of the value's JSON text.
    pub value_s256: String,
    /// Bytes of the value's JSON text.
    pub bytes: u64,
    /// The agent's stated source (empty if none).
    pub source: String,
    pub shared: bool,
    /// What untrusted content the mission had read when the entry was
    /// last written; `null` if none.
    pub taint: Option<Taint>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// `GET /v1/missions/{id}/memory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryListView {
    pub mission: String,
    /// By key (bytewise); to a mission delegated below, only the shared
    /// entries.
    pub entries: Vec<MemoryEntryView>,
}

/// `POST /v1/missions/{id}/memory/promote`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromoteMemoryRequest {
    /// The entries to keep as the agent's notes (1 to 256 distinct keys).
    pub keys: Vec<String>,
    /// Why (at most 500 characters, one line); recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A note of an agent: an entry a person promoted from one of its
/// missions, with its provenance (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoteView {
    pub key: String,
    pub value_s256: String,
    pub bytes: u64,
    /// The source the agent stated when it wrote the entry.
    pub source: String,
    /// What untrusted content the mission had read when it wrote the
    /// entry; reading the note taints the reading mission with it.
    pub taint: Option<Taint>,
    /// The mission the entry was written in.
    pub promoted_from: String,
    /// The principal who promoted it.
    pub promoted_by: String,
    pub promoted_at: u64,
    /// When the entry was written.
    pub written_at: u64,
}

/// `GET /v1/mission/notes/{key}`: a note with its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoteEntryView {
    pub key: String,
    /// The value, exactly as the agent wrote it.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub value: Box<RawValue>,
    pub value_s256: String,
    pub bytes: u64,
    pub source: String,
    pub taint: Option<Taint>,
    pub promoted_from: String,
    pub promoted_by: String,
    pub promoted_at: u64,
    pub written_at: u64,
}

/// `GET /v1/mission/notes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotesView {
    /// The calling mission's agent.
    pub agent: String,
    /// By key (bytewise); empty for an ephemeral sub-agent.
    pub notes: Vec<NoteView>,
}

/// What a promotion did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromotedView {
    pub mission: String,
    /// Whose notes they now are.
    pub agent: String,
    /// The notes written (a note of the same key was replaced).
    pub notes: Vec<NoteView>,
}
