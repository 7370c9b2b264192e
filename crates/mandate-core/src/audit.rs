//! The audit chain: every record is hash-chained to the one before it, and
//! checkpoints (sequence number + head hash) are signed by the authority key.
//!
//! ```text
//! hash(n) = base64url(SHA-256(raw(hash(n-1)) ‖ JCS({seq, time, kind, body})))
//! hash(0) = GENESIS (32 zero bytes)
//! ```
//!
//! Editing, deleting or reordering a record breaks the chain at that record.
//! Every commit is sealed (a checkpoint of its last record, signed in the
//! same transaction), so records no checkpoint covers were added, or their
//! seal removed, without the key. Checkpoints that leave the database come
//! at a fixed cadence each one states (`every` N records, at each multiple
//! of N, and `secs` after a record at the latest), so one missing from
//! that cadence is a break too; cutting records off the end is caught up to
//! the last checkpoint kept outside the database (ADR 0012).
//! Verification can start from a signed checkpoint instead of genesis, so
//! old records can be exported and pruned.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::b64;
use crate::credential::{check_authority_header, decode_authority_jws};
use crate::error::{CredentialError, KeyError};
use crate::jwk::Jwks;
use crate::keys::AuthorityKey;

/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "mandate-checkpoint+jwt";

/// The hash before the first record: 32 zero bytes, base64url.
pub const GENESIS: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// One record of the audit log, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// What happened, e.g. `decision`, `mission.created`, `revocation`.
    pub kind: String,
    /// The event: actor chain, mission, action, resource, decision, reasons,
    /// digests. Never a secret, and by default never a request body.
    pub body: serde_json::Value,
    /// The chain hash through this record.
    pub hash: String,
}

/// The part of a record the hash covers, in its canonical form.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time: u64,
    kind: &'a str,
    body: &'a serde_json::Value,
}

/// The chain hash of a record given the previous hash.
pub fn chain_hash(
    prev: &str,
    seq: u64,
    time: u64,
    kind: &str,
    body: &serde_json::Value,
) -> Result<String, ChainError> {
    let prev_raw = b64::decode(prev)
        .filter(|b| b.len() == 32)
        .ok_or_else(|| ChainError::at(seq, "the previous hash is malformed"))?;
    let canonical = serde_jcs::to_vec(&Hashed {
        seq,
        time,
        kind,
        body,
    })
    .map_err(|e| ChainError::at(seq, &format!("cannot canonicalize: {e}")))?;
    let mut h = Sha256::new();
    h.update(&prev_raw);
    h.update(&canonical);
    Ok(b64::encode(&h.finalize()))
}

/// The head of the chain: where the next record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the last record (0 before the first).
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    #[must_use]
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// Chains a new event onto the head and returns its record.
    pub fn append(
        &mut self,
        time: u64,
        kind: &str,
        body: serde_json::Value,
    ) -> Result<AuditRecord, ChainError> {
        let seq = self.seq + 1;
        let hash = chain_hash(&self.hash, seq, time, kind, &body)?;
        self.seq = seq;
        self.hash.clone_from(&hash);
        Ok(AuditRecord {
            seq,
            time,
            kind: kind.to_owned(),
            body,
            hash,
        })
    }
}

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    pub iss: String,
    /// The last record the checkpoint covers.
    pub seq: u64,
    /// The chain hash through `seq`.
    pub head: String,
    pub iat: u64,
    /// The cadence its signer keeps: a checkpoint at every multiple of
    /// `every`. Absent in checkpoints signed before the cadence was fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// …and one at most `secs` seconds after any record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secs: Option<u64>,
    /// Set on the checkpoint of a retention prune: records up to this
    /// sequence number were deleted on purpose. Only a signed statement can
    /// excuse a missing prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<u64>,
}

/// The cadence of checkpoints: one at every multiple of `every` (the record
/// with that sequence number) and one at most `secs` seconds after any
/// record. Each checkpoint states it, so verification can tell a missing
/// checkpoint from one that was never due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub every: u64,
    pub secs: u64,
}

impl Default for Cadence {
    fn default() -> Self {
        Self {
            every: 1_000,
            secs: 60,
        }
    }
}

/// Signs a checkpoint of `head` with the authority key, stating `cadence`.
pub fn sign_checkpoint(
    key: &AuthorityKey,
    issuer: &str,
    head: &ChainHead,
    now: u64,
    cadence: Cadence,
) -> Result<String, KeyError> {
    sign_checkpoint_claims(
        key,
        &CheckpointClaims {
            iss: issuer.to_owned(),
            seq: head.seq,
            head: head.hash.clone(),
            iat: now,
            every: Some(cadence.every),
            secs: Some(cadence.secs),
            pruned_through: None,
        },
    )
}

/// Signs a checkpoint saying exactly `claims` (a prune's, say).
pub fn sign_checkpoint_claims(
    key: &AuthorityKey,
    claims: &CheckpointClaims,
) -> Result<String, KeyError> {
    key.sign_jwt(CHECKPOINT_TYP, claims)
}

/// The key id a checkpoint names, unverified (to say which key signed a
/// log when it is not this one).
#[must_use]
pub fn checkpoint_kid(token: &str) -> Option<String> {
    crate::credential::header_kid(token)
}

/// Verifies a checkpoint's signature and, if given, its issuer.
pub fn verify_checkpoint(
    token: &str,
    jwks: &Jwks,
    issuer: Option<&str>,
) -> Result<CheckpointClaims, CredentialError> {
    let kid = check_authority_header(token, CHECKPOINT_TYP)?;
    let claims: CheckpointClaims = decode_authority_jws(token, &kid, jwks)?;
    if let Some(issuer) = issuer
        && claims.iss != issuer
    {
        return Err(CredentialError::WrongIssuer {
            expected: issuer.to_owned(),
            found: claims.iss,
        });
    }
    Ok(claims)
}

/// Where the chain is broken, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain is broken at sequence {seq}: {reason}")]
pub struct ChainError {
    /// The first sequence number that does not verify.
    pub seq: u64,
    pub reason: String,
}

impl ChainError {
    fn at(seq: u64, reason: &str) -> Self {
        Self {
            seq,
            reason: reason.to_owned(),
        }
    }
}

/// The record kind that marks a retention prune. Its body names the last
/// pruned sequence number (`through`).
pub const PRUNED_KIND: &str = "audit.pruned";

/// Where verification of a stored log starts. A log whose first record is
/// not 1 was pruned: it must start right after a signed checkpoint, a
/// signed checkpoint must state that prune (`pruned_through`), and the log
/// must record it (an `audit.pruned` record naming it). Otherwise the
/// missing prefix is tampering, reported at sequence 1.
pub fn chain_start(
    first_seq: Option<u64>,
    records_after: &[AuditRecord],
    checkpoints: &[String],
    jwks: &Jwks,
    issuer: Option<&str>,
) -> Result<ChainHead, ChainError> {
    let Some(first) = first_seq.filter(|f| *f > 1) else {
        return Ok(ChainHead::genesis());
    };
    let through = first - 1;
    let missing =
        |why: &str| ChainError::at(1, &format!("records 1..={through} are missing: {why}"));
    let signed: Vec<CheckpointClaims> = checkpoints
        .iter()
        .filter_map(|t| verify_checkpoint(t, jwks, issuer).ok())
        .collect();
    let base = signed
        .iter()
        .find(|c| c.seq == through)
        .cloned()
        .ok_or_else(|| missing("no signed checkpoint ends there"))?;
    if !signed.iter().any(|c| c.pruned_through == Some(through)) {
        return Err(missing("no signed checkpoint states a prune through there"));
    }
    let recorded = records_after.iter().any(|r| {
        r.kind == PRUNED_KIND
            && r.body.get("through").and_then(serde_json::Value::as_u64) == Some(through)
    });
    if !recorded {
        return Err(missing("the log records no prune through there"));
    }
    Ok(ChainHead {
        seq: base.seq,
        hash: base.head,
    })
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub first: u64,
    pub last: u64,
    pub checkpoints: usize,
    pub head: ChainHead,
}

/// Verifies records in sequence order, starting after `start` (genesis, or
/// a signed checkpoint from which older records were pruned), against the
/// signed `checkpoints` (and their issuer, if given). Names the first
/// sequence number that fails.
///
/// Besides each record's hash and each checkpoint's head:
/// - every record is covered by a signed checkpoint: each commit is sealed
///   (the head's seal), so records after the last checkpoint were added, or
///   their seal removed, by someone without the authority key;
/// - no multiple of the stated `every` passes without a checkpoint (judged,
///   between two checkpoints, by the larger cadence of the two, so a change
///   of cadence is not taken for a removal).
pub fn verify_chain<I>(
    start: ChainHead,
    records: I,
    checkpoints: &[String],
    jwks: &Jwks,
    issuer: Option<&str>,
) -> Result<ChainReport, ChainError>
where
    I: IntoIterator<Item = AuditRecord>,
{
    let mut marks = Vec::with_capacity(checkpoints.len());
    for token in checkpoints {
        let c = verify_checkpoint(token, jwks, issuer)
            .map_err(|e| ChainError::at(0, &format!("a checkpoint does not verify: {e}")))?;
        marks.push(c);
    }
    marks.sort_by_key(|c| c.seq);
    let mut head = start.clone();
    let first = start.seq + 1;
    for r in records {
        let expected = head.seq + 1;
        if r.seq != expected {
            return Err(ChainError::at(
                expected.min(r.seq),
                &format!(
                    "expected sequence {expected}, found {} (a record was deleted or moved)",
                    r.seq
                ),
            ));
        }
        let hash = chain_hash(&head.hash, r.seq, r.time, &r.kind, &r.body)?;
        if hash != r.hash {
            return Err(ChainError::at(
                r.seq,
                "the record does not match its hash (edited or reordered)",
            ));
        }
        if marks.iter().any(|m| m.seq == r.seq && m.head != hash) {
            return Err(ChainError::at(
                r.seq,
                "the chain does not match the signed checkpoint",
            ));
        }
        head = ChainHead { seq: r.seq, hash };
    }
    // A signed checkpoint beyond the end means records were cut off.
    if let Some(m) = marks.iter().find(|m| m.seq > head.seq) {
        return Err(ChainError::at(
            head.seq + 1,
            &format!(
                "the log ends at {} but a signed checkpoint covers {} (truncated)",
                head.seq, m.seq
            ),
        ));
    }
    check_cadence(&start, &head, &marks)?;
    let covered = marks
        .iter()
        .filter(|m| m.seq > start.seq && m.seq <= head.seq)
        .count();
    Ok(ChainReport {
        first,
        last: head.seq,
        checkpoints: covered,
        head,
    })
}

/// The coverage and cadence rules of [`verify_chain`], over the checkpoints
/// in `start..=head` (sorted by sequence number).
fn check_cadence(
    start: &ChainHead,
    head: &ChainHead,
    marks: &[CheckpointClaims],
) -> Result<(), ChainError> {
    let within: Vec<&CheckpointClaims> = marks
        .iter()
        .filter(|m| m.seq >= start.seq && m.seq <= head.seq)
        .collect();
    let sealed = within.last().map_or(start.seq, |m| m.seq);
    if sealed < head.seq {
        return Err(ChainError::at(
            sealed.max(start.seq) + 1,
            &format!(
                "records {}..={} are not covered by a signed checkpoint (each commit is sealed: they were added, or their seal removed, without the authority key)",
                sealed.max(start.seq) + 1,
                head.seq
            ),
        ));
    }
    // No multiple of the cadence lies strictly between two checkpoints.
    let mut prev: (u64, Option<u64>) = (
        start.seq,
        within
            .iter()
            .find(|m| m.seq == start.seq)
            .and_then(|m| m.every),
    );
    for m in within.iter().filter(|m| m.seq > start.seq) {
        let every = match (prev.1, m.every) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(every) = every.filter(|e| *e > 0) {
            let due = (prev.0 / every + 1) * every;
            if due < m.seq {
                return Err(ChainError::at(
                    due,
                    &format!(
                        "no signed checkpoint at {due}, where one is due every {every} records (one was removed)"
                    ),
                ));
            }
        }
        prev = (m.seq, m.every);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::random::OsRandom;

    const ISS: &str = "https://mandate.example";

    fn log(n: u64) -> (Vec<AuditRecord>, ChainHead) {
        let mut head = ChainHead::genesis();
        let records = (1..=n)
            .map(|i| {
                head.append(1_000 + i, "decision", json!({ "mission": "msn_x", "i": i }))
                    .unwrap()
            })
            .collect();
        (records, head)
    }

    #[test]
    fn an_intact_chain_verifies_with_its_checkpoints() {
        let key = AuthorityKey::generate(&OsRandom).unwrap();
        let (records, head) = log(10);
        let mid = ChainHead {
            seq: 5,
            hash: records[4].hash.clone(),
        };
        let cps = vec![
            sign_checkpoint(&key, ISS, &mid, 1, Cadence::default()).unwrap(),
            sign_checkpoint(&key, ISS, &head, 2, Cadence::default()).unwrap(),
        ];
        let report =
            verify_chain(ChainHead::genesis(), records, &cps, &key.jwks(), Some(ISS)).unwrap();
        assert_eq!((report.first, report.last, report.checkpoints), (1, 10, 2));
    }

    #[test]
    fn edits_deletions_reorders_and_truncation_name_the_sequence() {
        let key = AuthorityKey::generate(&OsRandom).unwrap();
        let (records, head) = log(10);
        let cps = vec![sign_checkpoint(&key, ISS, &head, 2, Cadence::default()).unwrap()];
        let verify = |r: Vec<AuditRecord>| {
            verify_chain(ChainHead::genesis(), r, &cps, &key.jwks(), Some(ISS))
        };

        let mut edited = records.clone();
        edited[3].body = json!({ "mission": "msn_x", "i": 999 });
        assert_eq!(verify(edited).unwrap_err().seq, 4);

        let mut deleted = records.clone();
        deleted.remove(6);
        assert_eq!(verify(deleted).unwrap_err().seq, 7);

        let mut reordered = records.clone();
        reordered.swap(2, 3);
        assert_eq!(verify(reordered).unwrap_err().seq, 3);

        let truncated = records[..8].to_vec();
        let err = verify(truncated).unwrap_err();
        assert_eq!(err.seq, 9);
        assert!(err.reason.contains("truncated"));

        // Re-hashing a forged record (no key needed) still fails at the checkpoint.
        let mut forged = ChainHead::genesis();
        let rewritten: Vec<AuditRecord> = records
            .iter()
            .map(|r| {
                let body = if r.seq == 2 {
                    json!({ "forged": true })
                } else {
                    r.body.clone()
                };
                forged.append(r.time, &r.kind, body).unwrap()
            })
            .collect();
        assert_eq!(verify(rewritten).unwrap_err().seq, 10);
    }

    #[test]
    fn verification_can_start_from_a_checkpoint_after_pruning() {
        let key = AuthorityKey::generate(&OsRandom).unwrap();
        let (records, head) = log(10);
        let mid = ChainHead {
            seq: 6,
            hash: records[5].hash.clone(),
        };
        let cps = vec![
            sign_checkpoint(&key, ISS, &mid, 1, Cadence::default()).unwrap(),
            sign_checkpoint(&key, ISS, &head, 2, Cadence::default()).unwrap(),
        ];
        let kept = records[6..].to_vec();
        let report = verify_chain(mid, kept, &cps, &key.jwks(), Some(ISS)).unwrap();
        assert_eq!((report.first, report.last), (7, 10));
        // A checkpoint signed by another key is refused.
        let other = AuthorityKey::generate(&OsRandom).unwrap();
        let bad = vec![sign_checkpoint(&other, ISS, &head, 3, Cadence::default()).unwrap()];
        assert!(
            verify_chain(ChainHead::genesis(), records, &bad, &key.jwks(), Some(ISS),).is_err()
        );
    }

    fn head_at(records: &[AuditRecord], seq: u64) -> ChainHead {
        ChainHead {
            seq,
            hash: records[usize::try_from(seq).unwrap() - 1].hash.clone(),
        }
    }

    #[test]
    fn a_checkpoint_missing_from_the_cadence_is_a_break() {
        let key = AuthorityKey::generate(&OsRandom).unwrap();
        let (records, _) = log(10);
        let at = |seq, every| {
            let c = Cadence { every, secs: 60 };
            sign_checkpoint(&key, ISS, &head_at(&records, seq), 1, c).unwrap()
        };
        let verify = |cps: &[String], n: usize| {
            verify_chain(
                ChainHead::genesis(),
                records[..n].to_vec(),
                cps,
                &key.jwks(),
                Some(ISS),
            )
        };
        // Every 4th record sealed, and the head (each commit's seal) at 10.
        assert!(verify(&[at(4, 4), at(8, 4), at(10, 4)], 10).is_ok());
        // A removed checkpoint, in the middle.
        let err = verify(&[at(4, 4), at(10, 4)], 10).unwrap_err();
        assert_eq!(err.seq, 8);
        assert!(err.reason.contains("every 4 records"), "{err}");
        // A cadence raised after a restart is not taken for a removal.
        assert!(verify(&[at(4, 4), at(10, 1_000)], 10).is_ok());
        // Records after the last checkpoint: added, or their seal removed.
        let err = verify(&[at(4, 4), at(8, 4)], 10).unwrap_err();
        assert_eq!(err.seq, 9);
        assert!(
            err.reason.contains("records 9..=10 are not covered"),
            "{err}"
        );
        // No checkpoint at all over a log with records.
        let err = verify(&[], 3).unwrap_err();
        assert_eq!(err.seq, 1);
        assert!(
            err.reason.contains("not covered by a signed checkpoint"),
            "{err}"
        );
    }

    #[test]
    fn only_a_signed_prune_excuses_a_missing_prefix() {
        let key = AuthorityKey::generate(&OsRandom).unwrap();
        let mut head = ChainHead::genesis();
        let mut records: Vec<AuditRecord> = (1..=4)
            .map(|i| head.append(i, "decision", json!({ "i": i })).unwrap())
            .collect();
        records.push(
            head.append(5, PRUNED_KIND, json!({ "through": 4 }))
                .unwrap(),
        );
        let base = head_at(&records, 4);
        let plain = sign_checkpoint(&key, ISS, &base, 1, Cadence::default()).unwrap();
        let sealed = sign_checkpoint(&key, ISS, &head, 2, Cadence::default()).unwrap();
        let prune = sign_checkpoint_claims(
            &key,
            &CheckpointClaims {
                iss: ISS.into(),
                seq: head.seq,
                head: head.hash.clone(),
                iat: 2,
                every: Some(1_000),
                secs: Some(60),
                pruned_through: Some(4),
            },
        )
        .unwrap();
        let kept = records[4..].to_vec();
        let start = |cps: &[String]| chain_start(Some(5), &kept, cps, &key.jwks(), Some(ISS));
        // The `audit.pruned` record alone is anyone's to write.
        let err = start(&[plain.clone(), sealed]).unwrap_err();
        assert!(
            err.reason.contains("no signed checkpoint states a prune"),
            "{err}"
        );
        let from = start(&[plain.clone(), prune.clone()]).unwrap();
        assert!(verify_chain(from, kept, &[plain, prune], &key.jwks(), Some(ISS)).is_ok());
    }
}
