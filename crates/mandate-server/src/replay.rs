//! A replay cache for proof `jti`s within the freshness window.

use std::collections::HashMap;
use std::sync::Mutex;

use mandate_core::{FRESHNESS_WINDOW_SECS, Thumbprint, UnixTime};

/// Most entries kept. Past this (after pruning), new proofs are refused:
/// failing closed beats forgetting what was seen. Entries are only added
/// for proofs by keys bound to a mission, after the request was authorized,
/// so filling the cache takes live mission keys.
const MAX_ENTRIES: usize = 200_000;
/// Most entries one key may hold, so one busy (or hostile) mission key
/// cannot fill the cache for every other mission.
const MAX_PER_KEY: usize = 20_000;

#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    /// (key thumbprint, jti) → last second at which the proof is still
    /// fresh, and whether a replay of it was seen.
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    entries: HashMap<(String, String), (u64, bool)>,
    /// Live entries per key thumbprint.
    per_key: HashMap<String, usize>,
}

impl Seen {
    /// Drops entries no longer fresh at `now`, and recounts.
    fn prune(&mut self, now: u64) {
        self.entries.retain(|_, (until, _)| *until >= now);
        self.per_key.clear();
        for (jkt, _) in self.entries.keys() {
            *self.per_key.entry(jkt.clone()).or_default() += 1;
        }
    }
}

/// Whether a proof may be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    Fresh,
    /// Used before; `first` on its first replay only, so whoever replays a
    /// captured request is recorded once per request, not once per try.
    Seen {
        first: bool,
    },
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
        if let Some((until, replayed)) = seen.entries.get_mut(&key)
            && *until >= now.0
        {
            let first = !*replayed;
            *replayed = true;
            return Replay::Seen { first };
        }
        let of_key = |s: &Seen| s.per_key.get(jkt.as_str()).copied().unwrap_or(0);
        if seen.entries.len() >= MAX_ENTRIES || of_key(&seen) >= MAX_PER_KEY {
            seen.prune(now.0);
            if seen.entries.len() >= MAX_ENTRIES || of_key(&seen) >= MAX_PER_KEY {
                return Replay::Full;
            }
        }
        if seen.entries.insert(key, (fresh_until, false)).is_none() {
            *seen.per_key.entry(jkt.as_str().to_owned()).or_default() += 1;
        }
        Replay::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_cannot_fill_the_cache_for_the_others() {
        let c = ReplayCache::default();
        let busy =
            Thumbprint::from_stored("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into()).unwrap();
        let other =
            Thumbprint::from_stored("9GcINWUVO0FtooSQkXxGrOTmiKW1WhWulP805YU2glM".into()).unwrap();
        let now = UnixTime(1_000);
        for i in 0..MAX_PER_KEY {
            assert_eq!(c.check(&busy, &i.to_string(), now, now), Replay::Fresh);
        }
        assert_eq!(c.check(&busy, "one-more", now, now), Replay::Full);
        assert_eq!(c.check(&other, "x", now, now), Replay::Fresh);
        // Once its entries are stale, the busy key may go on.
        let later = UnixTime(1_000 + FRESHNESS_WINDOW_SECS + 1);
        assert_eq!(c.check(&busy, "one-more", later, later), Replay::Fresh);
    }

    #[test]
    fn a_proof_is_fresh_once_for_as_long_as_it_could_be_accepted() {
        let c = ReplayCache::default();
        let k =
            Thumbprint::from_stored("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into()).unwrap();
        let iat = UnixTime(1_000);
        assert_eq!(c.check(&k, "a", iat, UnixTime(1_000)), Replay::Fresh);
        assert_eq!(
            c.check(&k, "a", iat, UnixTime(1_030)),
            Replay::Seen { first: true }
        );
        // The last second at which the proof passes the freshness check.
        assert_eq!(
            c.check(&k, "a", iat, UnixTime(1_000 + FRESHNESS_WINDOW_SECS)),
            Replay::Seen { first: false }
        );
        assert_eq!(c.check(&k, "b", iat, UnixTime(1_030)), Replay::Fresh);
        // A proof made at iat + 60 (accepted until iat + 120) stays seen to the end.
        let late = UnixTime(1_000 + FRESHNESS_WINDOW_SECS);
        assert_eq!(c.check(&k, "c", late, UnixTime(1_000)), Replay::Fresh);
        assert_eq!(
            c.check(&k, "c", late, UnixTime(1_000 + 2 * FRESHNESS_WINDOW_SECS)),
            Replay::Seen { first: true }
        );
    }
}
