//! Mission memory and agent notes (docs/memory.md): the agent's side on
//! [`MissionAgent`], a person's on [`Client`].

use mandate_core::wire::{
    MemoryEntryView, MemoryListView, NoteEntryView, NotesView, PromoteMemoryRequest, PromotedView,
    PutMemoryRequest,
};
use mandate_core::{MemoryKey, MissionId};
use reqwest::Method;
use serde_json::value::RawValue;

use crate::agent::MissionAgent;
use crate::client::{Client, ClientError, decode};

/// A memory key as one path segment: every byte but `A-Z a-z 0-9 - . _ ~`
/// percent-encoded, and the key `promote`, which would name the promotion
/// endpoint, encoded too (`%70romote`). The server decodes it back.
pub(crate) fn key_segment(key: &str) -> Result<String, ClientError> {
    let key = MemoryKey::try_from(key.to_owned()).map_err(|e| ClientError::Local(e.to_string()))?;
    let mut out = String::with_capacity(key.as_str().len() * 3);
    for b in key.as_str().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out == "promote" {
        out.replace_range(0..1, "%70");
    }
    Ok(out)
}

fn mission_segment(id: &str) -> Result<MissionId, ClientError> {
    id.parse()
        .map_err(|e: mandate_core::InputError| ClientError::Local(e.to_string()))
}

impl MissionAgent {
    /// Writes (or overwrites) `key` in this mission's memory: `value` is
    /// kept exactly as given (at most 64 KiB of JSON). `shared` lets
    /// missions delegated below this one read it; `source` says where it
    /// came from (the agent's claim, at most 200 characters).
    pub async fn memory_put(
        &self,
        key: &str,
        value: &RawValue,
        shared: bool,
        source: Option<&str>,
    ) -> Result<MemoryEntryView, ClientError> {
        let path = format!(
            "/v1/missions/{}/memory/{}",
            self.mission_id(),
            key_segment(key)?
        );
        let body = PutMemoryRequest {
            value: value.to_owned(),
            source: source.map(Into::into),
            shared: Some(shared),
        };
        let rb = self.authorize(Method::PUT, &path)?.json(&body);
        self.client().send(rb).await
    }

    /// One entry of this mission's memory.
    pub async fn memory_get(&self, key: &str) -> Result<MemoryEntryView, ClientError> {
        let own = self.mission_id().to_string();
        self.memory_get_of(&own, key).await
    }

    /// One entry of `mission`'s memory: this mission's, or a shared entry
    /// of a mission above it. Reading an entry that carries taint taints
    /// this mission.
    pub async fn memory_get_of(
        &self,
        mission: &str,
        key: &str,
    ) -> Result<MemoryEntryView, ClientError> {
        let path = format!(
            "/v1/missions/{}/memory/{}",
            mission_segment(mission)?,
            key_segment(key)?
        );
        let rb = self.authorize(Method::GET, &path)?;
        self.client().send(rb).await
    }

    /// This mission's memory.
    pub async fn memory_list(&self) -> Result<MemoryListView, ClientError> {
        let own = self.mission_id().to_string();
        self.memory_list_of(&own).await
    }

    /// `mission`'s memory: this mission's, or the shared entries of a
    /// mission above it.
    pub async fn memory_list_of(&self, mission: &str) -> Result<MemoryListView, ClientError> {
        let path = format!("/v1/missions/{}/memory", mission_segment(mission)?);
        let rb = self.authorize(Method::GET, &path)?;
        self.client().send(rb).await
    }

    /// Deletes `key` from this mission's memory.
    pub async fn memory_delete(&self, key: &str) -> Result<(), ClientError> {
        let path = format!(
            "/v1/missions/{}/memory/{}",
            self.mission_id(),
            key_segment(key)?
        );
        let resp = self
            .authorize(Method::DELETE, &path)?
            .send()
            .await
            .map_err(|e| ClientError::Http {
                url: self.client().base().to_owned(),
                source: e,
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            decode::<serde_json::Value>(resp).await.map(|_| ())
        }
    }

    /// The notes of this mission's agent (no values).
    pub async fn notes(&self) -> Result<NotesView, ClientError> {
        let rb = self.authorize(Method::GET, "/v1/mission/notes")?;
        self.client().send(rb).await
    }

    /// One note of this mission's agent, with its value. A note that
    /// carries taint taints this mission.
    pub async fn note(&self, key: &str) -> Result<NoteEntryView, ClientError> {
        let path = format!("/v1/mission/notes/{}", key_segment(key)?);
        let rb = self.authorize(Method::GET, &path)?;
        self.client().send(rb).await
    }
}

impl Client {
    /// A mission's memory, for a principal who may manage it (to review it
    /// before promoting).
    pub async fn mission_memory(&self, mission: &str) -> Result<MemoryListView, ClientError> {
        let path = format!("/v1/missions/{}/memory", mission_segment(mission)?);
        self.send(self.request(Method::GET, &path)).await
    }

    /// Keeps entries of a running mission as its agent's notes, for its
    /// later missions.
    pub async fn promote_memory(
        &self,
        mission: &str,
        keys: &[String],
        reason: Option<&str>,
    ) -> Result<PromotedView, ClientError> {
        let path = format!("/v1/missions/{}/memory/promote", mission_segment(mission)?);
        let body = PromoteMemoryRequest {
            keys: keys.to_vec(),
            reason: reason.map(Into::into),
        };
        self.send(self.request(Method::POST, &path).json(&body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::key_segment;

    #[test]
    fn a_key_is_one_path_segment_that_names_no_endpoint() {
        assert_eq!(key_segment("plain.key_1~").unwrap(), "plain.key_1~");
        assert_eq!(key_segment("a/b c").unwrap(), "a%2Fb%20c");
        assert_eq!(key_segment("\u{0}é").unwrap(), "%00%C3%A9");
        assert_eq!(key_segment("promote").unwrap(), "%70romote");
        assert_eq!(key_segment("promoted").unwrap(), "promoted");
        assert!(key_segment("..").is_err());
        assert!(key_segment("").is_err());
    }
}
