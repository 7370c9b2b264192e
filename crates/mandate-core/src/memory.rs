//! Mission-scoped memory: what an agent keeps while its mission runs,
//! gone when the mission ends; and an agent's notes, the entries a person
//! promoted from one of its missions for its later ones (docs/memory.md).
//!
//! Keys and values are the agent's own bytes: stored and returned as sent,
//! never interpreted. A key is any UTF-8 of 1 to 256 bytes, control
//! characters, quotes and SQL or Cedar text included; where a key is shown
//! to people it is quoted and escaped ([`MemoryKey::quoted`]).

use serde_json::value::RawValue;

use crate::ids::{AgentName, MissionId};

/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest value, in bytes of JSON text as sent.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Entries a mission may keep.
pub const MAX_ENTRIES: u64 = 256;
/// Bytes of values a mission may keep, all entries together.
pub const MAX_MISSION_BYTES: u64 = 1024 * 1024;
/// The longest `source` (characters, one line).
pub const MAX_SOURCE_CHARS: usize = 200;
/// Keys one promotion may name.
pub const MAX_PROMOTED_KEYS: usize = 256;

/// Why a key or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "a memory key is 1 to {max} bytes of UTF-8, and not `.` or `..` (no URL path can carry those)",
        max = MAX_KEY_BYTES
    )]
    BadKey,
    #[error("a memory value is at most {max} bytes of JSON", max = MAX_VALUE_BYTES)]
    ValueTooLarge,
}

impl MemoryError {
    /// Stable problem code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadKey => "invalid_request",
            Self::ValueTooLarge => "memory_limit",
        }
    }
}

/// A memory key, as the agent chose it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemoryKey(String);

impl TryFrom<String> for MemoryKey {
    type Error = MemoryError;

    fn try_from(key: String) -> Result<Self, MemoryError> {
        // `.` and `..` are dot-segments: every URL parser removes them from
        // a path (RFC 3986 §5.2.4), percent-encoded or not (WHATWG URL).
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key == "." || key == ".." {
            return Err(MemoryError::BadKey);
        }
        Ok(Self(key))
    }
}

impl MemoryKey {
    /// The key, as sent. May hold control characters: never print it as
    /// it is (use [`Self::quoted`]).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a JSON string literal: quoted, with quotes, backslashes
    /// and control characters escaped. For people and logs.
    #[must_use]
    pub fn quoted(&self) -> String {
        quoted(&self.0)
    }
}

impl std::fmt::Debug for MemoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.quoted())
    }
}

/// `s` as a JSON string literal, quoted, with quotes, backslashes, every
/// control character (C0 and C1) and the bidirectional formatting
/// characters escaped (`\u…`): safe to print, still valid JSON.
#[must_use]
pub fn quoted(s: &str) -> String {
    let json = serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".to_owned());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A value to keep: JSON text, as sent, within [`MAX_VALUE_BYTES`], with
/// its digest.
#[derive(Debug, Clone)]
pub struct MemoryValue {
    json: Box<RawValue>,
    s256: String,
}

impl MemoryValue {
    /// Checks the size and digests the text.
    pub fn new(json: Box<RawValue>) -> Result<Self, MemoryError> {
        if json.get().len() > MAX_VALUE_BYTES {
            return Err(MemoryError::ValueTooLarge);
        }
        let s256 = crate::s256(json.get().as_bytes());
        Ok(Self { json, s256 })
    }

    /// The JSON text, as sent.
    #[must_use]
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// base64url(SHA-256) of the JSON text.
    #[must_use]
    pub fn s256(&self) -> &str {
        &self.s256
    }

    /// Bytes of JSON text.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.json.get().len() as u64
    }
}

/// Where a taint came from when a mission read another mission's entry
/// (a taint source's `via`).
#[must_use]
pub fn memory_via(key: &MemoryKey, mission: &MissionId) -> String {
    format!("memory {} of mission {mission}", key.quoted())
}

/// Where a taint came from when a mission read one of its agent's notes.
#[must_use]
pub fn note_via(key: &MemoryKey, agent: &AgentName) -> String {
    format!("note {} of agent {agent}", key.quoted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_any_utf8_of_1_to_256_bytes_but_dot_segments() {
        for ok in [
            "a",
            "'; DROP TABLE memory_entries; --",
            "permit(principal, action, resource);",
            "tab\there\nnewline\u{0}nul\u{1b}[31m",
            "a/b?c#d%2F",
            "...",
            "promote",
            &"é".repeat(128),
        ] {
            let k = MemoryKey::try_from(ok.to_owned()).unwrap();
            assert_eq!(k.as_str(), ok);
        }
        for bad in [String::new(), ".".into(), "..".into(), "x".repeat(257)] {
            assert_eq!(MemoryKey::try_from(bad), Err(MemoryError::BadKey));
        }
        // 256 bytes, though fewer characters.
        assert!(MemoryKey::try_from("é".repeat(129)).is_err());
    }

    #[test]
    fn a_key_shown_to_people_is_quoted_and_escaped() {
        let k = MemoryKey::try_from("a\"\n\u{1b}[2J\u{9b}1m\u{202e}".to_owned()).unwrap();
        assert_eq!(k.quoted(), r#""a\"\n\u001b[2J\u009b1m\u202e""#);
        let back: String = serde_json::from_str(&k.quoted()).unwrap();
        assert_eq!(back, k.as_str());
        assert!(!format!("{k:?}").chars().any(char::is_control));
        let m: MissionId = "msn_0123456789abcdef0123456789abcdef".parse().unwrap();
        assert!(!memory_via(&k, &m).chars().any(char::is_control));
    }

    #[test]
    fn values_are_kept_as_sent_and_bounded() {
        let raw =
            RawValue::from_string("{\"b\": 1,  \"a\": 12345678901234567890123}".into()).unwrap();
        let v = MemoryValue::new(raw).unwrap();
        assert_eq!(v.json(), "{\"b\": 1,  \"a\": 12345678901234567890123}");
        assert_eq!(v.s256(), crate::s256(v.json().as_bytes()));
        let big = format!("\"{}\"", "x".repeat(MAX_VALUE_BYTES - 2));
        assert!(MemoryValue::new(RawValue::from_string(big.clone()).unwrap()).is_ok());
        let bigger = format!("\"{}\"", "x".repeat(MAX_VALUE_BYTES - 1));
        assert_eq!(
            MemoryValue::new(RawValue::from_string(bigger).unwrap()).unwrap_err(),
            MemoryError::ValueTooLarge
        );
    }
}
