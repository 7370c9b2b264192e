//! A replay cache for proof `jti`s within the freshness window.

use std::collections::HashMap;
use std::sync::Mutex;

use mandate_core::{FRESHNESS_WINDOW_SECS, UnixTime};

/// Most entries kept. Past this (after pruning), new proofs are refused:
/// failing closed beats forgetting what was seen.
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    seen: Mutex<HashMap<String, u64>>,
}

/// Whether a `jti` may be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    Fresh,
    Seen,
    Full,
}

impl ReplayCache {
    /// Records `jti`; `Fresh` only the first time within the window.
    pub(crate) fn check(&self, jti: &str, now: UnixTime) -> Replay {
        let Ok(mut seen) = self.seen.lock() else {
            return Replay::Full;
        };
        // A proof is valid for ±window around its iat, so keep 2×window.
        let keep_until = now.0.saturating_add(2 * FRESHNESS_WINDOW_SECS);
        if seen.len() >= MAX_ENTRIES {
            seen.retain(|_, until| *until > now.0);
            if seen.len() >= MAX_ENTRIES {
                return Replay::Full;
            }
        }
        match seen.get(jti) {
            Some(until) if *until > now.0 => Replay::Seen,
            _ => {
                seen.insert(jti.to_owned(), keep_until);
                Replay::Fresh
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_fresh_once_within_the_window() {
        let c = ReplayCache::default();
        assert_eq!(c.check("a", UnixTime(100)), Replay::Fresh);
        assert_eq!(c.check("a", UnixTime(150)), Replay::Seen);
        assert_eq!(c.check("b", UnixTime(150)), Replay::Fresh);
        assert_eq!(
            c.check("a", UnixTime(100 + 2 * FRESHNESS_WINDOW_SECS)),
            Replay::Fresh
        );
    }
}
