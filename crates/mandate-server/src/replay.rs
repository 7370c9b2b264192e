//! A replay cache for proof `jti`s within the freshness window.

use std::collections::HashMap;
use std::sync::Mutex;

use mandate_core::{FRESHNESS_WINDOW_SECS, Thumbprint, UnixTime};

/// Most entries kept. Past this (after pruning), new proofs are refused:
/// failing closed beats forgetting what was seen. Entries are only added
/// for proofs by keys bound to a mission, after the request was authorized,
/// so filling the cache takes live mission keys.
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    /// (key thumbprint, jti) → last second at which the proof is still fresh.
    seen: Mutex<HashMap<(String, String), u64>>,
}

/// Whether a proof may be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    Fresh,
    Seen,
    Full,
}

impl ReplayCache {
    /// Records the proof `(jkt, jti)` made at `iat`; `Fresh` only the first
    /// time. An entry lives exactly as long as the proof could still pass
    /// the freshness check (`|iat - now| ≤ window`).
    pub(crate) fn check(
        &self,
        jkt: &Thumbprint,
        jti: &str,
        iat: UnixTime,
        now: UnixTime,
    ) -> Replay {
        let Ok(mut seen) = self.seen.lock() else {
            return Replay::Full;
        };
        let fresh_until = iat.0.saturating_add(FRESHNESS_WINDOW_SECS);
        let key = (jkt.as_str().to_owned(), jti.to_owned());
        if let Some(until) = seen.get(&key)
            && *until >= now.0
        {
            return Replay::Seen;
        }
        if seen.len() >= MAX_ENTRIES {
            seen.retain(|_, until| *until >= now.0);
            if seen.len() >= MAX_ENTRIES {
                return Replay::Full;
            }
        }
        seen.insert(key, fresh_until);
        Replay::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_fresh_once_for_as_long_as_it_could_be_accepted() {
        let c = ReplayCache::default();
        let k =
            Thumbprint::from_stored("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into()).unwrap();
        let iat = UnixTime(1_000);
        assert_eq!(c.check(&k, "a", iat, UnixTime(1_000)), Replay::Fresh);
        assert_eq!(c.check(&k, "a", iat, UnixTime(1_030)), Replay::Seen);
        // The last second at which the proof passes the freshness check.
        assert_eq!(
            c.check(&k, "a", iat, UnixTime(1_000 + FRESHNESS_WINDOW_SECS)),
            Replay::Seen
        );
        assert_eq!(c.check(&k, "b", iat, UnixTime(1_030)), Replay::Fresh);
        // A proof made at iat + 60 (accepted until iat + 120) stays seen to the end.
        let late = UnixTime(1_000 + FRESHNESS_WINDOW_SECS);
        assert_eq!(c.check(&k, "c", late, UnixTime(1_000)), Replay::Fresh);
        assert_eq!(
            c.check(&k, "c", late, UnixTime(1_000 + 2 * FRESHNESS_WINDOW_SECS)),
            Replay::Seen
        );
    }
}
