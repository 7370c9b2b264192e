//! Taint: a mission has read content nobody vouches for (ADR 0021).
//!
//! Routes, MCP servers and tools are labelled as sources of untrusted
//! content (`taint = ["calendar"]`). When an answer from one reaches the
//! agent, its mission is marked with the label, the source and the time.
//! Policy sees it on every hop's `Mission` entity (`tainted`, `taint`,
//! `tainted_at`); taint only grows within a mission, except when a person
//! clears it, which is audited.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Sources kept per mission (the first of each label, then the latest).
pub const MAX_TAINT_SOURCES: usize = 32;

/// What untrusted content a mission has read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Taint {
    /// The labels of what was read, e.g. `calendar`, `email`, `web`.
    pub labels: BTreeSet<String>,
    /// When the mission first read untrusted content (Unix seconds).
    pub since: u64,
    /// Where it came from, oldest first.
    pub sources: Vec<TaintSource>,
}

/// One read of untrusted content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaintSource {
    pub label: String,
    /// What answered: `route calendar GET /events/42`, `mcp web tool fetch`,
    /// `mission msn_… (parent)`, `note KEY of agent A`.
    pub via: String,
    pub at: u64,
}

impl Taint {
    /// Whether reading `labels` would add anything.
    #[must_use]
    pub fn adds(current: Option<&Self>, labels: &[String]) -> bool {
        labels
            .iter()
            .any(|l| current.is_none_or(|t| !t.labels.contains(l)))
    }

    /// `current` after reading content labelled `labels` through `via` at
    /// `at`. Labels never go away; the sources list keeps the first read of
    /// each label.
    #[must_use]
    pub fn merged(current: Option<&Self>, labels: &[String], via: &str, at: u64) -> Self {
        let mut t = current.cloned().unwrap_or(Self {
            labels: BTreeSet::new(),
            since: at,
            sources: Vec::new(),
        });
        for l in labels {
            if t.labels.insert(l.clone()) && t.sources.len() < MAX_TAINT_SOURCES {
                t.sources.push(TaintSource {
                    label: l.clone(),
                    via: via.to_owned(),
                    at,
                });
            }
        }
        t
    }

    /// `a` and `b` together (a child of a tainted parent, a note read).
    #[must_use]
    pub fn union(a: Option<&Self>, b: &Self) -> Self {
        let mut t = a.cloned().unwrap_or_else(|| Self {
            labels: BTreeSet::new(),
            since: b.since,
            sources: Vec::new(),
        });
        t.since = t.since.min(b.since);
        for s in &b.sources {
            if !t.labels.contains(&s.label) && t.sources.len() < MAX_TAINT_SOURCES {
                t.sources.push(s.clone());
            }
        }
        t.labels.extend(b.labels.iter().cloned());
        t
    }

    /// One line for people: `calendar (route calendar GET /events/42 at
    /// 1796…)`.
    #[must_use]
    pub fn describe(&self) -> String {
        self.sources
            .iter()
            .map(|s| format!("{} ({} at {})", s.label, s.via, s.at))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `label` may name a kind of untrusted content: 1 to 64 of
/// `a-z`, `0-9`, `_`, `-`, `.`.
#[must_use]
pub fn valid_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taint_only_grows_and_keeps_the_first_source_of_each_label() {
        let t = Taint::merged(None, &["calendar".into()], "route calendar GET /e/1", 10);
        assert_eq!(t.since, 10);
        assert!(!Taint::adds(Some(&t), &["calendar".into()]));
        assert!(Taint::adds(Some(&t), &["web".into()]));
        let t2 = Taint::merged(
            Some(&t),
            &["calendar".into(), "web".into()],
            "mcp web tool fetch",
            20,
        );
        assert_eq!(t2.since, 10);
        assert_eq!(t2.labels.len(), 2);
        assert_eq!(t2.sources.len(), 2);
        assert_eq!(t2.sources[0].via, "route calendar GET /e/1");
        let child = Taint::union(None, &t2);
        assert_eq!(child, t2);
        assert!(valid_label("untrusted_content"));
        assert!(!valid_label("Calendar"));
        assert!(!valid_label(""));
    }
}
