//! The audit writer: group commit without a writer thread. A handler
//! queues its event, and whoever finds the writer free commits everything
//! queued — its own event and those of handlers that arrived meanwhile — in
//! one transaction with one sync, then hands each its result. A handler
//! awaits its event's commit before it answers, so an event is durable
//! before its effect is seen. An event alone is committed by its own
//! handler, with no hand-off to another thread.
//!
//! An allowed call is counted (budget, grant use) in the same transaction
//! as its decision's record: both are durable, or neither is (ADR 0009).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mandate_core::{AuditRecord, AuthorityKey, Cadence, ChainHead, Clock, UnixTime, chain_hash};
use mandate_store::{
    Allowance, AuditSink, CountAsk, PredictedCommit, Prediction, Store, StoreError,
};
use tokio::sync::{mpsc, oneshot};

use crate::checkpoints::{CheckpointFile, CheckpointFileError, read_checkpoint_file};
use crate::error::EnforceError;

/// Most events committed in one group.
const MAX_GROUP: usize = 1_024;
/// Most events waiting; past it, events are refused (fail closed).
const QUEUE: usize = 8_192;
/// Groups one handler commits for others before a task of its own takes
/// over, so no handler waits long on others' events.
const ROUNDS: usize = 2;
/// Groups in a row that must find the log's head where this writer left
/// it before it commits groups on its predictions (a sink that
/// [predicts](AuditSink::predicts)); a prediction that did not hold starts
/// the count again. Another writer appending to the same log (another
/// node) keeps this writer from predicting while it does.
const QUIET_BEFORE_PREDICTING: u32 = 8;
/// Most missions whose last count a writer keeps to predict from; past it,
/// it forgets them all and learns again.
const MAX_KNOWN_COUNTS: usize = 65_536;

/// When checkpoints are signed, and where they go besides the database.
#[derive(Debug, Clone, Default)]
pub struct CheckpointPolicy {
    /// A checkpoint at every multiple of `every` (committed with that
    /// record), and one `secs` after a record at the latest.
    pub cadence: Cadence,
    /// The append-only checkpoint file (see [`crate::read_checkpoint_file`]);
    /// `None` keeps checkpoints in the database only.
    pub file: Option<PathBuf>,
    /// Each new checkpoint is also sent here (the server's witness webhook).
    pub witness: Option<mpsc::UnboundedSender<String>>,
}

/// Why the audit log could not be opened. The writer signs nothing over a
/// log it could not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] CheckpointFileError),
    #[error("cannot append to the checkpoint file `{0}`: {1}")]
    FileWrite(PathBuf, std::io::Error),
    /// The stored log does not agree with its checkpoints.
    #[error(
        "the audit log does not verify, so no checkpoint will be signed over it: {0}. Nothing was changed; see `mandate audit verify --data DIR` and docs/audit.md (tamper evidence)"
    )]
    Broken(String),
}

/// A signed request's single use, claimed in the transaction that records
/// its decision: a signature replayed to another node on the same database
/// finds the claim there and is refused (ADR 0017). One claim per request;
/// `key` is a digest of the signing key and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    /// When the signature stops being fresh anyway; the claim may go then.
    pub expires: UnixTime,
}

/// Writes into a decision's record body what counting its call found;
/// `false` records nothing (the caller decides again). A group made on a
/// prediction settles a copy of the body, so the body can be settled
/// again, with what the store found, if that group was not committed.
pub(crate) type Settle =
    Box<dyn Fn(Allowance, &mut serde_json::Map<String, serde_json::Value>) -> bool + Send>;

enum Entry {
    Body(serde_json::Value),
    Counted {
        count: CountAsk,
        /// The record's body, before it is settled.
        body: serde_json::Map<String, serde_json::Value>,
        settle: Settle,
    },
    /// A retention prune's record, committed with a checkpoint that states
    /// the prune (`pruned_through`): only that signature excuses the
    /// missing prefix later.
    Prune {
        body: serde_json::Value,
        through: u64,
    },
}

/// What the writer did with an event.
#[derive(Debug)]
struct Recorded {
    seq: Option<u64>,
    allowance: Option<Allowance>,
    /// The entry's claim was already taken: nothing of it was done.
    replayed: bool,
}

struct Pending {
    time: u64,
    kind: &'static str,
    entry: Entry,
    claim: Option<Claim>,
    done: oneshot::Sender<Result<Recorded, ()>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Held while a group is committed.
    writer: Mutex<Writer>,
    /// Set (for good) when a commit failed; see [`Writer::broken`].
    broken: Arc<AtomicBool>,
    /// Told of every group committed (metrics), once one is set.
    observer: OnceLock<Arc<dyn CommitObserver>>,
}

/// Told of each group of events the writer commits: how many, and how
/// long the transaction took (its sync included). Called on the
/// committing thread, after the commit: it must be cheap.
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    fn committed(&self, events: usize, took: Duration);
    /// A group was sent whole on the writer's predictions: `held` if it
    /// was committed so, else it was run again as usual (ADR 0033).
    fn predicted(&self, held: bool) {
        let _ = held;
    }
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

/// The periodic checkpoint task, for a clean stop.
#[derive(Debug)]
pub struct AuditWriter {
    shared: Arc<Shared>,
    ticker: tokio::task::JoinHandle<()>,
}

impl AuditWriter {
    /// Refuses new events, commits what is queued, signs a last
    /// checkpoint, and stops.
    pub async fn shutdown(self) {
        self.ticker.abort();
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
        }
        let shared = self.shared;
        let _ = tokio::task::spawn_blocking(move || {
            mandate_store::blocking_section(|| {
                let Some(mut w) = acquire(&shared, true) else {
                    return;
                };
                let rest: Vec<Pending> = shared
                    .queue
                    .lock()
                    .map(|mut q| q.pending.drain(..).collect())
                    .unwrap_or_default();
                if !rest.is_empty() {
                    w.commit(rest);
                }
                if w.head.seq > w.sealed {
                    let target = w.head.clone();
                    w.seal_now(target);
                }
            })
        })
        .await;
    }
}

/// A handle to the audit log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl AuditLog {
    /// Opens the writer on the store's current head, after verifying the
    /// stored log from the last checkpoint kept outside the database (the
    /// checkpoint file), or from its start if there is none: it never signs
    /// a checkpoint over records it has not checked. Records a crash left
    /// after the last checkpoint are sealed now; an empty log gets a
    /// checkpoint of its genesis, so a log with records and no checkpoint
    /// is always a break.
    pub async fn spawn(
        store: Arc<dyn Store>,
        key: Arc<AuthorityKey>,
        issuer: String,
        clock: Arc<dyn Clock>,
        policy: CheckpointPolicy,
    ) -> Result<(Self, AuditWriter), AuditOpenError> {
        let mut sink = store.audit_sink()?;
        let head = sink.head()?;
        let jwks = key.jwks();
        let kept = match &policy.file {
            Some(path) => read_checkpoint_file(path, &jwks)?,
            None => Vec::new(),
        };
        let mut stored = store.checkpoints().await?;
        stored.extend(store.head_seal().await?);
        let verified = verify_on_open(store.as_ref(), &jwks, &head, &kept, &stored).await?;
        let mut file = match &policy.file {
            Some(path) => Some(
                CheckpointFile::open(path)
                    .map_err(|e| AuditOpenError::FileWrite(path.clone(), e))?,
            ),
            None => None,
        };
        // The file and the database each get the checkpoints only the other
        // has (a crash between the two writes, or a file started late).
        let in_file: std::collections::HashSet<u64> = kept.iter().map(|c| c.claims.seq).collect();
        if let Some(f) = &mut file {
            if kept.is_empty() && head.seq > 0 {
                tracing::warn!(
                    file = %f.path().display(),
                    "the checkpoint file is missing or empty; the whole log was verified and the file starts again from the database's checkpoints"
                );
            }
            for c in &verified.checkpoints {
                if !in_file.contains(&c.seq) {
                    f.append(&c.token)
                        .map_err(|e| AuditOpenError::FileWrite(f.path().to_owned(), e))?;
                }
            }
        }
        let in_db: std::collections::HashSet<u64> = verified
            .checkpoints
            .iter()
            .filter(|c| c.in_db)
            .map(|c| c.seq)
            .collect();
        for c in &kept {
            if !in_db.contains(&c.claims.seq) && c.claims.seq <= head.seq {
                sink.add_checkpoint(c.claims.seq, &c.token)?;
            }
        }
        let sealed = verified.sealed;
        let cadence = policy.cadence;
        let predicts = sink.predicts();
        let mut writer = Writer {
            sink,
            jwks,
            key,
            issuer,
            clock,
            cadence,
            file,
            witness: policy.witness,
            sealed: sealed.as_ref().map_or(0, |h| h.seq),
            vouched: head.clone(),
            head,
            broken: Arc::new(AtomicBool::new(false)),
            predicts,
            quiet: 0,
            counts: HashMap::new(),
        };
        // Every record is covered (the log verified), but the last cadence
        // checkpoint may be older than the head's seal: one now, so the
        // file and the witness hold the head. An empty log gets one of its
        // genesis.
        if sealed.is_none_or(|s| s.seq < writer.head.seq) {
            let target = writer.head.clone();
            if !writer.seal_now(target) {
                return Err(AuditOpenError::Broken(
                    "the log could not be sealed (see the error above)".into(),
                ));
            }
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            broken: Arc::clone(&writer.broken),
            writer: Mutex::new(writer),
            observer: OnceLock::new(),
        });
        // Checkpoints after a quiet spell.
        let ticker = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(cadence.secs.max(1)));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let shared = Arc::clone(&shared);
                    let _ = tokio::task::spawn_blocking(move || {
                        mandate_store::blocking_section(|| {
                            if let Some(mut w) = acquire(&shared, true)
                                && w.follow()
                                && w.head.seq > w.sealed
                            {
                                let target = w.head.clone();
                                w.seal_now(target);
                            }
                            // Events queued while this held the writer are
                            // committed now, not with the next event.
                            drain(&shared);
                        })
                    })
                    .await;
                }
            })
        };
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            AuditWriter { shared, ticker },
        ))
    }

    async fn submit(
        &self,
        time: u64,
        kind: &'static str,
        entry: Entry,
        claim: Option<Claim>,
    ) -> Result<Recorded, EnforceError> {
        let (done, wait) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock().map_err(|_| audit_down())?;
            if q.closed || q.pending.len() >= QUEUE {
                return Err(audit_down());
            }
            q.pending.push_back(Pending {
                time,
                kind,
                entry,
                claim,
                done,
            });
        }
        drain(&self.shared);
        let r = wait
            .await
            .map_err(|_| audit_down())?
            .map_err(|()| audit_down())?;
        if r.replayed {
            return Err(EnforceError::Replayed);
        }
        Ok(r)
    }

    /// Sets who is told of every group committed from now on (the
    /// server's metrics). Only the first call counts.
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.shared.observer.set(observer);
    }

    /// Whether the log still takes events: `false` once a commit failed
    /// (every event is then refused until a restart).
    pub fn healthy(&self) -> bool {
        !self.shared.broken.load(Ordering::Acquire)
    }

    /// Records an event and waits until it is durable. Returns its sequence
    /// number. Any failure is an error the caller must not answer past.
    pub async fn record(
        &self,
        kind: &'static str,
        time: u64,
        body: serde_json::Value,
    ) -> Result<u64, EnforceError> {
        self.record_claimed(kind, time, body, None).await
    }

    /// As [`Self::record`], claiming a signed request's single use in the
    /// same transaction: [`EnforceError::Replayed`], with nothing recorded,
    /// if the claim was taken before.
    pub(crate) async fn record_claimed(
        &self,
        kind: &'static str,
        time: u64,
        body: serde_json::Value,
        claim: Option<Claim>,
    ) -> Result<u64, EnforceError> {
        self.submit(time, kind, Entry::Body(body), claim)
            .await?
            .seq
            .ok_or_else(audit_down)
    }

    /// Records a retention prune through `through` with a checkpoint that
    /// states it (`pruned_through`), in one transaction, and waits until
    /// both are durable.
    pub async fn record_prune(
        &self,
        time: u64,
        through: u64,
        body: serde_json::Value,
    ) -> Result<u64, EnforceError> {
        self.submit(
            time,
            mandate_core::PRUNED_KIND,
            Entry::Prune { body, through },
            None,
        )
        .await?
        .seq
        .ok_or_else(audit_down)
    }

    /// Counts an allowed call and records its decision (`body`, settled
    /// by `settle` with what counting found), in one transaction; waits
    /// until both are durable. Returns what counting found and the
    /// record's sequence
    /// number (`None` if `settle` recorded nothing). A `claim` is taken
    /// first, in the same transaction ([`EnforceError::Replayed`], with
    /// nothing counted or recorded, if it was taken before); it stays taken
    /// even when `settle` records nothing.
    pub(crate) async fn record_counted(
        &self,
        kind: &'static str,
        time: u64,
        count: CountAsk,
        body: serde_json::Map<String, serde_json::Value>,
        settle: Settle,
        claim: Option<Claim>,
    ) -> Result<(Allowance, Option<u64>), EnforceError> {
        let entry = Entry::Counted {
            count,
            body,
            settle,
        };
        let r = self.submit(time, kind, entry, claim).await?;
        Ok((r.allowance.ok_or_else(audit_down)?, r.seq))
    }
}

/// Commits what is queued if the writer is free; if it is not, whoever
/// holds it commits the queue before letting go.
///
/// INVARIANT: every queued event is committed. An event is queued before
/// its handler tries the writer; a holder looks at the queue again after
/// letting go, and commits (or hands over to a task) while it is not empty.
fn drain(shared: &Arc<Shared>) {
    loop {
        for _ in 0..ROUNDS {
            let Some(mut w) = acquire(shared, false) else {
                return;
            };
            let group: Vec<Pending> = match shared.queue.lock() {
                Ok(mut q) => {
                    let n = q.pending.len().min(MAX_GROUP);
                    q.pending.drain(..n).collect()
                }
                Err(_) => return,
            };
            if !group.is_empty() {
                let (events, started) = (group.len(), Instant::now());
                let mut predicted = None;
                blocking(|| predicted = w.commit(group));
                if let Some(o) = shared.observer.get() {
                    o.committed(events, started.elapsed());
                    if let Some(held) = predicted {
                        o.predicted(held);
                    }
                }
            }
            drop(w);
            if shared.queue.lock().map_or(true, |q| q.pending.is_empty()) {
                return;
            }
        }
        // Others' events are left: a task of their own takes over (outside
        // a runtime, this caller goes on).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(shared);
            rt.spawn(async move { drain(&shared) });
            return;
        }
    }
}

/// The writer, waiting for it or not (`None` if another holds it). A
/// writer left poisoned by a panic mid-commit is taken back: its open
/// transaction is rolled back (the group's handlers were refused when
/// their channels dropped) and its head was not moved.
///
/// INVARIANT: whoever takes the writer with `wait` calls [`drain`] after
/// letting go (shutdown instead closes the queue first and commits all of
/// it), so nothing queued meanwhile waits for a later event.
fn acquire(shared: &Shared, wait: bool) -> Option<std::sync::MutexGuard<'_, Writer>> {
    let taken = if wait {
        shared
            .writer
            .lock()
            .map_err(std::sync::TryLockError::Poisoned)
    } else {
        shared.writer.try_lock()
    };
    match taken {
        Ok(w) => Some(w),
        Err(std::sync::TryLockError::WouldBlock) => None,
        Err(std::sync::TryLockError::Poisoned(p)) => {
            tracing::error!("an audit commit panicked; its group was refused and rolled back");
            let mut w = p.into_inner();
            w.sink.rollback();
            shared.writer.clear_poison();
            Some(w)
        }
    }
}

/// Runs a commit (it waits for the disk) without holding up the runtime's
/// other tasks. On a multi-threaded runtime the commit runs on this thread,
/// which hands its tasks to another worker meanwhile, and the store's sink
/// is told it may block here ([`mandate_store::blocking_section`]).
fn blocking(f: impl FnOnce()) {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| mandate_store::blocking_section(f));
        }
        _ => f(),
    }
}

fn audit_down() -> EnforceError {
    tracing::error!("the audit log could not record an event; refusing to proceed");
    EnforceError::AuditUnavailable
}

#[derive(Debug)]
struct Writer {
    sink: Box<dyn AuditSink>,
    key: Arc<AuthorityKey>,
    issuer: String,
    clock: Arc<dyn Clock>,
    jwks: mandate_core::Jwks,
    cadence: Cadence,
    file: Option<CheckpointFile>,
    witness: Option<mpsc::UnboundedSender<String>>,
    head: ChainHead,
    /// The last checkpoint's sequence number.
    sealed: u64,
    /// How far the stored log was read back (or verified on open) and
    /// found as this writer wrote it.
    vouched: ChainHead,
    /// Set when a commit failed: what it wrote may still be in the WAL, so
    /// this writer's head can no longer be trusted. Every later event is
    /// refused until a restart reads the head again.
    broken: Arc<AtomicBool>,
    /// Whether the sink can commit a group on predictions.
    predicts: bool,
    /// Groups in a row that found the head where this writer left it
    /// (see [`QUIET_BEFORE_PREDICTING`]).
    quiet: u32,
    /// Each mission's budget count as this writer last committed it, while
    /// no other writer has appended since: what it predicts from.
    counts: HashMap<mandate_core::MissionId, u64>,
}

/// What became of a group made on predictions.
enum Predicted {
    /// Not made (nothing sent): the group is run as usual.
    NotMade,
    /// Committed; each entry's outcome.
    Held(Vec<Recorded>),
    /// Nothing of it was kept: the group is run as usual.
    Missed,
    /// Whether it was committed is not known: the writer is broken.
    Unknown,
}

/// Per entry of a group: `None` (no claim), `Some(None)` (a key already
/// in the group: a replay), or `Some(Some(i))` (the `i`th key).
type ClaimSlot = Option<Option<usize>>;

/// The distinct claims of `group`'s entries, and each entry's slot.
fn claim_keys(group: &[Pending]) -> (Vec<(&str, UnixTime)>, Vec<ClaimSlot>) {
    let mut keys: Vec<(&str, UnixTime)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let slots = group
        .iter()
        .map(|p| {
            p.claim.as_ref().map(|c| {
                seen.insert(c.key.as_str()).then(|| {
                    keys.push((c.key.as_str(), c.expires));
                    keys.len() - 1
                })
            })
        })
        .collect();
    (keys, slots)
}

/// For each entry, whether it may go on: `true` for an entry without a
/// claim, else whether its claim was taken now (`taken`, per key).
fn claimed_of(
    slots: &[ClaimSlot],
    keys: &[(&str, UnixTime)],
    taken: &[bool],
) -> Result<Vec<bool>, StoreError> {
    if taken.len() != keys.len() {
        return Err(StoreError::Backend(
            "the store answered a different number of claims".into(),
        ));
    }
    Ok(slots
        .iter()
        .map(|slot| match slot {
            None => true,
            Some(None) => false,
            Some(Some(i)) => taken[*i],
        })
        .collect())
}

/// What `group`'s allowed calls that may go on (`fresh`) ask to count, in
/// order, judged at `now` or later.
fn asks_of(group: &[Pending], fresh: &[bool], now: UnixTime) -> Vec<CountAsk> {
    group
        .iter()
        .zip(fresh)
        .filter_map(|(p, fresh)| match &p.entry {
            Entry::Counted { count, .. } if *fresh => Some(CountAsk {
                now: count.now.max(now),
                ..count.clone()
            }),
            _ => None,
        })
        .collect()
}

impl Writer {
    /// Commits a group in one transaction. A plain event that cannot be
    /// chained fails alone; any other failure fails the whole group, and
    /// nothing of it (no record, no count) is kept. Made on predictions
    /// where the sink can and the writer has been alone on the log
    /// ([`Self::commit_predicted`]): `Some(held)` then.
    fn commit(&mut self, group: Vec<Pending>) -> Option<bool> {
        let now = self.clock.now();
        let mut predicted = None;
        if self.predicts
            && self.quiet >= QUIET_BEFORE_PREDICTING
            && !self.broken.load(Ordering::Acquire)
        {
            match self.commit_predicted(&group, now) {
                Predicted::NotMade => {}
                Predicted::Held(outcomes) => {
                    for (p, r) in group.into_iter().zip(outcomes) {
                        let _ = p.done.send(Ok(r));
                    }
                    return Some(true);
                }
                Predicted::Missed => {
                    tracing::debug!("an audit group was not as predicted; running it as usual");
                    self.quiet = 0;
                    predicted = Some(false);
                }
                Predicted::Unknown => {
                    for p in group {
                        let _ = p.done.send(Err(()));
                    }
                    return None;
                }
            }
        }
        self.commit_opened(group, now);
        predicted
    }

    /// Commits `group` in one exchange with the store, on what this writer
    /// predicts of it (ADR 0033, sixth amendment): the log's head is the
    /// one it left, every claim is fresh, and each allowed call's count is
    /// one more than the last this writer committed for its mission. The
    /// store checks each prediction under the writers' lock and keeps
    /// nothing unless all held. Not made for a group that needs the
    /// store's answers before its records can be written: one with a
    /// signature twice, a count through a grant, a mission whose count this
    /// writer does not know or whose budget it would use up, a prune, or a
    /// checkpoint due within it.
    fn commit_predicted(&mut self, group: &[Pending], now: UnixTime) -> Predicted {
        let (keys, slots) = claim_keys(group);
        if slots.iter().any(|s| matches!(s, Some(None))) {
            return Predicted::NotMade;
        }
        let asks = asks_of(group, &vec![true; group.len()], now);
        let mut counts = Vec::with_capacity(asks.len());
        let mut after: HashMap<&mandate_core::MissionId, u64> = HashMap::new();
        for a in &asks {
            let last = after
                .get(&a.mission)
                .or_else(|| self.counts.get(&a.mission))
                .copied();
            match last {
                Some(n) if a.grant.is_none() && n < a.budget => {
                    after.insert(&a.mission, n + 1);
                    counts.push(n + 1);
                }
                _ => return Predicted::NotMade,
            }
        }
        let mut head = self.head.clone();
        let mut records = Vec::with_capacity(group.len());
        let mut outcomes = Vec::with_capacity(group.len());
        let mut counted = counts.iter();
        for p in group {
            let (body, allowance) = match &p.entry {
                Entry::Body(b) => (b.clone(), None),
                Entry::Prune { .. } => return Predicted::NotMade,
                Entry::Counted { body, settle, .. } => {
                    let Some(a) = counted.next().map(|n| Allowance::Counted(*n)) else {
                        return Predicted::NotMade;
                    };
                    let mut body = body.clone();
                    if !settle(a, &mut body) {
                        return Predicted::NotMade;
                    }
                    (serde_json::Value::Object(body), Some(a))
                }
            };
            let Ok(record) = head.append(p.time, p.kind, body) else {
                return Predicted::NotMade;
            };
            if self.cadence.every > 0 && record.seq % self.cadence.every == 0 {
                return Predicted::NotMade;
            }
            outcomes.push(Recorded {
                seq: Some(record.seq),
                allowance,
                replayed: false,
            });
            records.push(record);
        }
        let Some(token) = self.sign(&head, None) else {
            return Predicted::NotMade;
        };
        let sent = self.sink.commit_predicted(Prediction {
            head: &self.head,
            claims: &keys,
            asks: &asks,
            counts: &counts,
            records,
            seal: (head.seq, token),
        });
        match sent {
            Ok(PredictedCommit::Committed) => {}
            Ok(PredictedCommit::NotKept) => return Predicted::Missed,
            Ok(PredictedCommit::NotSent) => return Predicted::NotMade,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "audit commit failed; refusing every event until a restart"
                );
                self.broken.store(true, Ordering::Release);
                return Predicted::Unknown;
            }
        }
        for (mission, n) in after {
            self.learn(mission.clone(), Allowance::Counted(n));
        }
        self.vouched = head.clone();
        self.head = head;
        Predicted::Held(outcomes)
    }

    /// Keeps what a committed count found for `mission`, to predict its
    /// next count from.
    fn learn(&mut self, mission: mandate_core::MissionId, found: Allowance) {
        if !self.predicts {
            return;
        }
        match found {
            Allowance::Counted(n) => {
                if self.counts.len() >= MAX_KNOWN_COUNTS && !self.counts.contains_key(&mission) {
                    self.counts.clear();
                }
                self.counts.insert(mission, n);
            }
            _ => {
                self.counts.remove(&mission);
            }
        }
    }

    /// [`Self::commit`] as usual: the group's transaction opens first, and
    /// its records are written once the store has answered.
    fn commit_opened(&mut self, group: Vec<Pending>, now: UnixTime) {
        if self.broken.load(Ordering::Acquire) {
            for p in group {
                let _ = p.done.send(Err(()));
            }
            return;
        }
        // The group opens with its first work in the same exchange: a
        // signed request is used once, across every writer on this
        // database, so a group with claims takes them first, together,
        // before anything of their entries is done; a group without counts
        // its allowed calls at once. Expiry is judged at the commit, not
        // when the call was decided.
        let (keys, slots) = claim_keys(&group);
        // Every allowed call's count, as if every entry were fresh.
        let every = vec![true; group.len()];
        let asks = asks_of(&group, &every, now);
        let opened = if keys.is_empty() {
            // Nothing to claim: every entry goes on.
            self.sink
                .begin_counting(&asks)
                .map(|(h, counted)| (h, every, Some((asks.len(), counted))))
        } else {
            // The allowed calls are counted in the same exchange as the
            // claims, as if every call were fresh (none through a grant:
            // a grant's use is counted after): those counts stand only if
            // every call they count was. If one was a replay, they are
            // undone and the fresh calls counted below.
            let early: &[CountAsk] = if asks.iter().any(|a| a.grant.is_some()) {
                &[]
            } else {
                &asks
            };
            self.sink
                .begin_claiming_counting(&keys, early)
                .and_then(|(h, taken, counted)| {
                    let claimed = claimed_of(&slots, &keys, &taken)?;
                    // Every counted call fresh: the fresh calls' asks are
                    // all of `asks` (a subsequence of the same length).
                    let counted = match counted {
                        Some(c) if asks_of(&group, &claimed, now).len() == asks.len() => {
                            Some((asks.len(), c))
                        }
                        Some(_) => {
                            self.sink.undo_counts()?;
                            None
                        }
                        None => None,
                    };
                    Ok((h, claimed, counted))
                })
        };
        let (stored, claimed, counted_early) = match opened {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "audit commit failed");
                self.sink.rollback();
                for p in group {
                    let _ = p.done.send(Err(()));
                }
                return;
            }
        };
        if stored != self.head {
            if stored.seq <= self.head.seq {
                // Records this writer committed are gone or changed.
                tracing::error!(
                    writer = self.head.seq,
                    stored = stored.seq,
                    "the audit log was cut or rewritten in the database under this writer; refusing every event until a restart verifies it"
                );
                self.stop(group);
                return;
            }
            // Another writer (another node, `mandate init` on the data dir)
            // appended meanwhile.
            if !self.take_on(stored) {
                self.stop(group);
                return;
            }
        } else {
            self.quiet = self.quiet.saturating_add(1);
        }
        let mut sealed = Vec::new();
        let mut learned = Vec::new();
        let mut head = self.head.clone();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut failed = false;
        // The group's allowed calls are counted together, in order.
        let (wanted, counted) = match counted_early {
            Some(c) => c,
            None => {
                let asks = asks_of(&group, &claimed, now);
                let counted = if asks.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.sink.count_all(&asks)
                };
                (
                    asks.len(),
                    counted.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot count allowed calls");
                        failed = true;
                        Vec::new()
                    }),
                )
            }
        };
        if !failed && counted.len() != wanted {
            tracing::error!("the store answered a different number of counts");
            failed = true;
        }
        let mut counted = counted.into_iter();
        for (p, fresh) in group.into_iter().zip(claimed) {
            if failed {
                outcomes.push((p.done, None));
                continue;
            }
            if !fresh {
                outcomes.push((
                    p.done,
                    Some(Recorded {
                        seq: None,
                        allowance: None,
                        replayed: true,
                    }),
                ));
                continue;
            }
            let mut prune = None;
            let (body, allowance) = match p.entry {
                Entry::Body(b) => (Some(b), None),
                Entry::Prune { body, through } => {
                    prune = Some(through);
                    (Some(body), None)
                }
                Entry::Counted {
                    count,
                    mut body,
                    settle,
                } => match counted.next() {
                    Some(a) => {
                        learned.push((count.mission, a));
                        let kept = settle(a, &mut body);
                        (kept.then_some(serde_json::Value::Object(body)), Some(a))
                    }
                    None => {
                        tracing::error!("an allowed call was not counted");
                        failed = true;
                        outcomes.push((p.done, None));
                        continue;
                    }
                },
            };
            let Some(body) = body else {
                if matches!(allowance, Some(Allowance::Counted(_))) {
                    // A count is never kept without its record.
                    tracing::error!("an allowed call was counted but not recorded");
                    failed = true;
                    outcomes.push((p.done, None));
                } else {
                    outcomes.push((
                        p.done,
                        Some(Recorded {
                            seq: None,
                            allowance,
                            replayed: false,
                        }),
                    ));
                }
                continue;
            };
            let record = match head.append(p.time, p.kind, body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot chain an audit event");
                    // A count without its record must not be kept.
                    failed |= allowance.is_some();
                    outcomes.push((p.done, None));
                    continue;
                }
            };
            if let Err(e) = self.sink.append(&record) {
                tracing::error!(error = %e, "cannot append an audit event");
                failed = true;
                outcomes.push((p.done, None));
                continue;
            }
            // A checkpoint due at this record (or stating a prune) is
            // committed with it.
            if prune.is_some() || self.cadence.every > 0 && record.seq % self.cadence.every == 0 {
                let at = ChainHead {
                    seq: record.seq,
                    hash: record.hash.clone(),
                };
                match self
                    .sign(&at, prune)
                    .and_then(|token| self.store_checkpoint(at.seq, &token).then_some(token))
                {
                    Some(token) => sealed.push((at.seq, token)),
                    None => {
                        failed = true;
                        outcomes.push((p.done, None));
                        continue;
                    }
                }
            }
            outcomes.push((
                p.done,
                Some(Recorded {
                    seq: Some(record.seq),
                    allowance,
                    replayed: false,
                }),
            ));
        }
        // The group's head is sealed in its own transaction: no committed
        // record is ever outside a signed checkpoint.
        if !failed && head.seq > self.head.seq {
            let signed = match sealed.last() {
                Some((seq, token)) if *seq == head.seq => Some(token.clone()),
                _ => self.sign(&head, None),
            };
            failed = match signed {
                Some(token) => match self.sink.seal_head(head.seq, &token) {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot store the audit log's seal; refusing every event");
                        self.broken.store(true, Ordering::Release);
                        true
                    }
                },
                None => true,
            };
        }
        if !failed && let Err(e) = self.sink.commit() {
            tracing::error!(
                error = %e,
                "audit commit failed; refusing every event until a restart"
            );
            self.broken.store(true, Ordering::Release);
            failed = true;
        }
        if failed {
            self.sink.rollback();
            for (done, _) in outcomes {
                let _ = done.send(Err(()));
            }
            return;
        }
        // What this writer appended in its own write transaction (the head
        // was checked on `begin`) is vouched for without reading it back.
        self.vouched = head.clone();
        self.head = head;
        for (mission, a) in learned {
            self.learn(mission, a);
        }
        // The records are durable; a checkpoint file that cannot take their
        // checkpoint refuses what comes next, not these.
        self.publish(sealed);
        for (done, r) in outcomes {
            let _ = done.send(r.ok_or(()));
        }
    }

    /// Reads back the stored records after `vouched` through `target` and
    /// checks that they chain to `target`'s hash: nothing is signed that the
    /// database does not hold exactly as written.
    fn read_back(&mut self, target: &ChainHead) -> Result<(), String> {
        let mut at = self.vouched.clone();
        while at.seq < target.seq {
            let page = self
                .sink
                .records(at.seq, 1_000)
                .map_err(|e| format!("cannot read the log back: {e}"))?;
            if page.is_empty() {
                return Err(format!("records after {} are missing", at.seq));
            }
            for r in page {
                if r.seq > target.seq {
                    break;
                }
                if r.seq != at.seq + 1 {
                    return Err(format!("record {} is missing", at.seq + 1));
                }
                let hash = chain_hash(&at.hash, r.seq, r.time, &r.kind, &r.body)
                    .map_err(|e| e.to_string())?;
                if hash != r.hash {
                    return Err(format!("record {} was changed", r.seq));
                }
                at = ChainHead { seq: r.seq, hash };
            }
        }
        if at != *target {
            return Err(format!(
                "the stored chain through {} does not end where this writer's does",
                target.seq
            ));
        }
        self.vouched = at;
        Ok(())
    }

    /// Stops the log: `group` and every later event are refused, and what
    /// the open transaction holds is undone.
    fn stop(&mut self, group: Vec<Pending>) {
        self.broken.store(true, Ordering::Release);
        self.sink.rollback();
        for p in group {
            let _ = p.done.send(Err(()));
        }
    }

    /// Takes on what other writers (other nodes on the database) sealed
    /// after this writer's head, so a periodic checkpoint covers their
    /// records too, even if they stopped. Reads the head and its seal in a
    /// write transaction, so they belong together. `false` if the writer
    /// must not sign now.
    fn follow(&mut self) -> bool {
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        let stored = match self.sink.begin() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit log's head; no checkpoint this time");
                return false;
            }
        };
        let ok = stored.seq <= self.head.seq || self.take_on(stored);
        self.sink.rollback();
        ok
    }

    /// Chains after records another writer committed past this writer's
    /// head. Each commit is sealed, so what it wrote carries a checkpoint
    /// signed with the authority key at its head; records without one were
    /// written without the key, and then this writer stops (`false`):
    /// every event is refused until a restart verifies the log.
    fn take_on(&mut self, stored: ChainHead) -> bool {
        if let Err(why) = self.adopt(&stored) {
            tracing::error!(
                writer = self.head.seq,
                stored = stored.seq,
                "records were added to the audit log without the authority key ({why}); refusing every event until a restart verifies the log"
            );
            self.broken.store(true, Ordering::Release);
            return false;
        }
        tracing::debug!(
            from = self.head.seq,
            to = stored.seq,
            "another writer sealed records in the audit log; chaining after them"
        );
        // It may have counted too: nothing is predicted until this writer
        // has been alone on the log for a while, and from counts it makes.
        self.quiet = 0;
        self.counts.clear();
        self.head = stored;
        true
    }

    /// Takes on a head another writer committed: it must be sealed by a
    /// checkpoint signed with the authority key, and chain from this
    /// writer's head.
    fn adopt(&mut self, stored: &ChainHead) -> Result<(), String> {
        let token = self
            .sink
            .head_seal()
            .map_err(|e| format!("cannot read the seal: {e}"))?
            .ok_or("no seal")?;
        let c = mandate_core::verify_checkpoint(&token, &self.jwks, None)
            .map_err(|e| format!("the seal does not verify: {e}"))?;
        if c.seq != stored.seq || c.head != stored.hash {
            return Err(format!(
                "the seal covers {}, not the head {}",
                c.seq, stored.seq
            ));
        }
        self.read_back(stored)
    }

    /// Signs a checkpoint of `target` once the stored log reads back as
    /// written. `None` leaves the writer refusing every event until a
    /// restart.
    fn sign_over(&mut self, target: &ChainHead) -> Option<String> {
        if let Err(why) = self.read_back(target) {
            tracing::error!(
                seq = target.seq,
                "the audit log was changed in the database ({why}); no checkpoint is signed over it, and every event is refused until a restart verifies the log"
            );
            self.broken.store(true, Ordering::Release);
            return None;
        }
        self.sign(target, None)
    }

    /// Signs a checkpoint of `target` (stating a prune, if given), which this
    /// writer appended itself or has read back. `None` leaves the writer
    /// refusing every event until a restart.
    fn sign(&mut self, target: &ChainHead, pruned_through: Option<u64>) -> Option<String> {
        let claims = mandate_core::CheckpointClaims {
            iss: self.issuer.clone(),
            seq: target.seq,
            head: target.hash.clone(),
            iat: self.clock.now().0,
            every: Some(self.cadence.every),
            secs: Some(self.cadence.secs),
            pruned_through,
        };
        match mandate_core::sign_checkpoint_claims(&self.key, &claims) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an audit checkpoint; refusing every event");
                self.broken.store(true, Ordering::Release);
                None
            }
        }
    }

    /// Stores a checkpoint (inside the open transaction, if any).
    fn store_checkpoint(&mut self, seq: u64, token: &str) -> bool {
        if let Err(e) = self.sink.add_checkpoint(seq, token) {
            tracing::error!(error = %e, "cannot store an audit checkpoint; refusing every event");
            self.broken.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// Sends committed checkpoints out of the database: to the checkpoint
    /// file (synced) and to the witness.
    fn publish(&mut self, sealed: Vec<(u64, String)>) -> bool {
        for (seq, token) in sealed {
            if let Some(f) = &mut self.file
                && let Err(e) = f.append(&token)
            {
                tracing::error!(
                    error = %e,
                    file = %f.path().display(),
                    "cannot append to the checkpoint file; refusing every event until a restart"
                );
                self.broken.store(true, Ordering::Release);
                return false;
            }
            if let Some(w) = &self.witness {
                let _ = w.send(token);
            }
            self.sealed = seq;
        }
        true
    }

    /// Seals `target` outside a group: at the start, after a quiet spell,
    /// at the stop.
    fn seal_now(&mut self, target: ChainHead) -> bool {
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        match self.sign_over(&target) {
            Some(token) if self.store_checkpoint(target.seq, &token) => {
                self.publish(vec![(target.seq, token)])
            }
            _ => false,
        }
    }
}

/// A checkpoint found consistent with the stored log on open.
struct OpenCheckpoint {
    seq: u64,
    token: String,
    in_db: bool,
}

/// What opening verified.
struct Opened {
    /// Every checkpoint from the database and the file, in order.
    checkpoints: Vec<OpenCheckpoint>,
    /// The latest checkpoint within the log.
    sealed: Option<ChainHead>,
}

/// Verifies the stored log before the writer signs anything over it: from
/// the last checkpoint kept in the file (which the database must agree
/// with), or, with no such checkpoint, the whole log from its start.
async fn verify_on_open(
    store: &dyn Store,
    jwks: &mandate_core::Jwks,
    head: &ChainHead,
    kept: &[crate::checkpoints::KeptCheckpoint],
    stored: &[String],
) -> Result<Opened, AuditOpenError> {
    let broken = |why: String| AuditOpenError::Broken(why);
    let mut all: Vec<(mandate_core::CheckpointClaims, OpenCheckpoint)> = Vec::new();
    for token in stored {
        let c = mandate_core::verify_checkpoint(token, jwks, None)
            .map_err(|e| broken(format!("a checkpoint in the database does not verify: {e}")))?;
        all.push((
            c.clone(),
            OpenCheckpoint {
                seq: c.seq,
                token: token.clone(),
                in_db: true,
            },
        ));
    }
    for k in kept {
        if !all
            .iter()
            .any(|(c, _)| c.seq == k.claims.seq && c.head == k.claims.head)
        {
            all.push((
                k.claims.clone(),
                OpenCheckpoint {
                    seq: k.claims.seq,
                    token: k.token.clone(),
                    in_db: false,
                },
            ));
        }
    }
    all.sort_by_key(|(c, _)| c.seq);
    let tokens: Vec<String> = all.iter().map(|(_, o)| o.token.clone()).collect();
    let start = match kept.last() {
        Some(anchor) => {
            let a = &anchor.claims;
            if a.seq > head.seq {
                return Err(broken(format!(
                    "the log ends at record {} but the checkpoint file holds a checkpoint of record {} (records were removed)",
                    head.seq, a.seq
                )));
            }
            // Records before the anchor are bound by its hash; they may be
            // missing only through a prune a checkpoint states.
            let first = store.audit_records(0, 1).await?.first().map(|r| r.seq);
            if let Some(f) = first.filter(|f| *f > 1) {
                let through = f - 1;
                let stated = all.iter().any(|(c, _)| c.pruned_through == Some(through))
                    && all.iter().any(|(c, _)| c.seq == through);
                if !stated {
                    return Err(broken(format!(
                        "records 1..={through} are missing and no signed checkpoint states a prune through there"
                    )));
                }
            }
            if a.seq > 0 {
                match store.audit_record(a.seq).await? {
                    Some(r) => {
                        // The anchor record itself, recomputed from its
                        // content and the hash before it.
                        let prev = if a.seq == 1 {
                            Some(mandate_core::GENESIS.to_owned())
                        } else {
                            match store.audit_record(a.seq - 1).await? {
                                Some(p) => Some(p.hash),
                                None => all
                                    .iter()
                                    .find(|(c, _)| c.seq == a.seq - 1)
                                    .map(|(c, _)| c.head.clone()),
                            }
                        };
                        let recomputed = prev
                            .map(|p| mandate_core::chain_hash(&p, r.seq, r.time, &r.kind, &r.body));
                        if r.hash != a.head || !matches!(recomputed, Some(Ok(h)) if h == a.head) {
                            return Err(broken(format!(
                                "record {} does not match its checkpoint in the checkpoint file (the log was rewritten)",
                                a.seq
                            )));
                        }
                    }
                    None if first.is_some_and(|f| f <= a.seq) => {
                        return Err(broken(format!(
                            "record {} is missing (the checkpoint file holds its checkpoint)",
                            a.seq
                        )));
                    }
                    // Pruned through it (checked above).
                    None => {}
                }
            }
            Some(ChainHead {
                seq: a.seq,
                hash: a.head.clone(),
            })
        }
        None => None,
    };
    let records = read_all(store, start.as_ref().map_or(0, |s| s.seq)).await?;
    let start = match start {
        Some(s) => s,
        None => {
            let first = records.first().map(|r| r.seq);
            mandate_core::chain_start(first, &records, &tokens, jwks, None)
                .map_err(|e| broken(e.to_string()))?
        }
    };
    mandate_core::verify_chain(start, records, &tokens, jwks, None)
        .map_err(|e| broken(e.to_string()))?;
    let sealed = all
        .iter()
        .rev()
        .find(|(c, _)| c.seq <= head.seq)
        .map(|(c, _)| ChainHead {
            seq: c.seq,
            hash: c.head.clone(),
        });
    Ok(Opened {
        checkpoints: all.into_iter().map(|(_, o)| o).collect(),
        sealed,
    })
}

/// Every stored record after `after`, in order.
async fn read_all(store: &dyn Store, mut after: u64) -> Result<Vec<AuditRecord>, StoreError> {
    let mut records = Vec::new();
    loop {
        let page = store.audit_records(after, 5_000).await?;
        let Some(last) = page.last().map(|r| r.seq) else {
            return Ok(records);
        };
        records.extend(page);
        after = last;
    }
}

/// Verifies the stored log: from genesis, or from the signed checkpoint a
/// recorded prune left (see `mandate_core::chain_start`), against the
/// checkpoints in the database, the head's seal, and `kept` (checkpoints
/// kept elsewhere: the checkpoint file, a monitor's copy). The outer error
/// is the store's; the inner, the chain's.
///
/// The server passes no issuer: the authority key is the trust anchor, and
/// a changed `public_url` must not make older checkpoints look forged.
pub async fn verify_stored(
    store: &dyn Store,
    jwks: &mandate_core::Jwks,
    issuer: Option<&str>,
    kept: &[String],
) -> Result<Result<mandate_core::ChainReport, mandate_core::ChainError>, StoreError> {
    // A live log grows while it is read. Each commit replaces the head's
    // seal in its own transaction, so the seal read after the records
    // covers all of them (unless some were added without the key); the
    // records up to it are read, newer ones are left for the next time.
    let mut checkpoints = store.checkpoints().await?;
    let mut records = read_all(store, 0).await?;
    let read = records.last().map_or(0, |r| r.seq);
    if let Some(seal) = store.head_seal().await? {
        if let Ok(c) = mandate_core::verify_checkpoint(&seal, jwks, issuer)
            && c.seq > read
        {
            let mut after = read;
            while after < c.seq {
                let page = store.audit_records(after, 5_000).await?;
                let Some(last) = page.last().map(|r| r.seq) else {
                    break;
                };
                records.extend(page.into_iter().filter(|r| r.seq <= c.seq));
                after = last;
            }
        }
        checkpoints.push(seal);
    }
    // Checkpoints signed since the first reading, within what was read.
    let end = records.last().map_or(0, |r| r.seq);
    for t in store.checkpoints().await? {
        if !checkpoints.contains(&t)
            && mandate_core::verify_checkpoint(&t, jwks, issuer).map_or(true, |c| c.seq <= end)
        {
            checkpoints.push(t);
        }
    }
    checkpoints.extend(kept.iter().cloned());
    let first = records.first().map(|r| r.seq);
    let verdict = mandate_core::chain_start(first, &records, &checkpoints, jwks, issuer)
        .and_then(|start| mandate_core::verify_chain(start, records, &checkpoints, jwks, issuer));
    // The filter columns beside each body (ADR 0018) are not chained: one
    // changed behind the log's back would hide a record from a filtered
    // list, so it is a break too.
    if let Ok(report) = &verdict
        && let Some(seq) = store.audit_columns_mismatch(report.last).await?
    {
        return Ok(Err(mandate_core::ChainError {
            seq,
            reason: "the record's filter columns (mission, principal, agent, action, decision) do not match its body: they were changed behind the log's back, and filtered lists would misreport it".into(),
        }));
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;
    use mandate_core::{OsRandom, SystemClock};
    use mandate_store::SqliteStore;

    async fn log(dir: &std::path::Path, secs: u64) -> (Arc<dyn Store>, AuditLog, AuditWriter) {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("mandate.db")).await.unwrap());
        let key = Arc::new(AuthorityKey::generate(&OsRandom).unwrap());
        let (log, writer) = AuditLog::spawn(
            Arc::clone(&store),
            key,
            "urn:test".into(),
            Arc::new(SystemClock),
            CheckpointPolicy {
                cadence: Cadence { every: 1_000, secs },
                ..CheckpointPolicy::default()
            },
        )
        .await
        .unwrap();
        (store, log, writer)
    }

    /// A checkpoint signed on a quiet tick holds the writer; an event
    /// queued meanwhile is committed then, not left for the next event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_queued_during_a_checkpoint_are_not_stranded() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log, writer) = log(dir.path(), 1).await;
        let until = std::time::Instant::now() + Duration::from_millis(3_500);
        let mut n = 0u64;
        while std::time::Instant::now() < until {
            let seq = tokio::time::timeout(
                Duration::from_secs(2),
                log.record("test.event", 1, serde_json::json!({ "n": n })),
            )
            .await
            .expect("an event waited past a checkpoint")
            .unwrap();
            n += 1;
            assert_eq!(seq, n);
        }
        writer.shutdown().await;
        assert!(!store.checkpoints().await.unwrap().is_empty());
    }

    /// The store's sink, except that its commits fail once told to: a disk
    /// failure, which cannot be produced for real here. If `predicting`, it
    /// takes groups made on predictions as PostgreSQL's does, each
    /// prediction checked in the group's transaction before anything is
    /// kept (only of the head: these tests count nothing), and they fail
    /// with an unknown outcome once told to (a connection lost after its
    /// `COMMIT` went out).
    #[derive(Debug)]
    struct FailingCommits {
        inner: Box<dyn AuditSink>,
        fail: Arc<AtomicBool>,
        predicting: bool,
    }

    impl AuditSink for FailingCommits {
        fn head(&mut self) -> Result<ChainHead, mandate_store::StoreError> {
            self.inner.head()
        }
        fn begin(&mut self) -> Result<ChainHead, mandate_store::StoreError> {
            self.inner.begin()
        }
        fn count(
            &mut self,
            id: &mandate_core::MissionId,
            budget: u64,
            grant: Option<&str>,
            now: UnixTime,
        ) -> Result<Allowance, mandate_store::StoreError> {
            self.inner.count(id, budget, grant, now)
        }
        fn append(
            &mut self,
            r: &mandate_core::AuditRecord,
        ) -> Result<(), mandate_store::StoreError> {
            self.inner.append(r)
        }
        fn commit(&mut self) -> Result<(), mandate_store::StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(mandate_store::StoreError::Backend("disk I/O error".into()));
            }
            self.inner.commit()
        }
        fn rollback(&mut self) {
            self.inner.rollback();
        }
        fn add_checkpoint(
            &mut self,
            seq: u64,
            token: &str,
        ) -> Result<(), mandate_store::StoreError> {
            self.inner.add_checkpoint(seq, token)
        }
        fn records(
            &mut self,
            after: u64,
            limit: u32,
        ) -> Result<Vec<mandate_core::AuditRecord>, mandate_store::StoreError> {
            self.inner.records(after, limit)
        }
        fn seal_head(&mut self, seq: u64, token: &str) -> Result<(), mandate_store::StoreError> {
            self.inner.seal_head(seq, token)
        }
        fn head_seal(&mut self) -> Result<Option<String>, mandate_store::StoreError> {
            self.inner.head_seal()
        }
        fn claim(
            &mut self,
            key: &str,
            expires: UnixTime,
        ) -> Result<bool, mandate_store::StoreError> {
            self.inner.claim(key, expires)
        }
        fn predicts(&self) -> bool {
            self.predicting
        }
        fn commit_predicted(
            &mut self,
            group: Prediction<'_>,
        ) -> Result<PredictedCommit, mandate_store::StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(mandate_store::StoreError::Backend(
                    "the connection was lost after the COMMIT was sent".into(),
                ));
            }
            assert!(group.claims.is_empty() && group.asks.is_empty());
            if self.inner.begin()? != *group.head {
                self.inner.rollback();
                return Ok(PredictedCommit::NotKept);
            }
            for r in &group.records {
                self.inner.append(r)?;
            }
            self.inner.seal_head(group.seal.0, &group.seal.1)?;
            self.inner.commit()?;
            Ok(PredictedCommit::Committed)
        }
    }

    /// A log whose writer commits on `sink`, its head read from it; its
    /// own `broken` flag.
    fn hand_built(mut sink: Box<dyn AuditSink>, key: Arc<AuthorityKey>) -> AuditLog {
        let head = sink.head().unwrap();
        let broken = Arc::new(AtomicBool::new(false));
        let predicts = sink.predicts();
        let writer = Writer {
            sink,
            jwks: key.jwks(),
            key,
            issuer: "urn:test".into(),
            clock: Arc::new(SystemClock),
            cadence: Cadence::default(),
            file: None,
            witness: None,
            vouched: head.clone(),
            head,
            sealed: 0,
            broken: Arc::clone(&broken),
            predicts,
            quiet: 0,
            counts: HashMap::new(),
        };
        AuditLog {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                writer: Mutex::new(writer),
                broken,
                observer: OnceLock::new(),
            }),
        }
    }

    /// After a failed commit nothing of its group is kept, every later
    /// event is refused (not chained on a head that may be wrong), and the
    /// log says it is unhealthy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_refuses_everything_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("mandate.db"))
                .await
                .unwrap(),
        );
        let fail = Arc::new(AtomicBool::new(false));
        let sink: Box<dyn AuditSink> = Box::new(FailingCommits {
            inner: store.audit_sink().unwrap(),
            fail: Arc::clone(&fail),
            predicting: false,
        });
        let key = Arc::new(AuthorityKey::generate(&OsRandom).unwrap());
        let log = hand_built(sink, key);
        assert_eq!(
            log.record("test.event", 1, serde_json::json!({}))
                .await
                .unwrap(),
            1
        );
        assert!(log.healthy());
        fail.store(true, Ordering::SeqCst);
        assert!(
            log.record("test.event", 1, serde_json::json!({}))
                .await
                .is_err()
        );
        assert!(!log.healthy());
        // The disk is back, but the writer stays refused until a restart.
        fail.store(false, Ordering::SeqCst);
        assert!(
            log.record("test.event", 1, serde_json::json!({}))
                .await
                .is_err()
        );
        assert_eq!(store.audit_records(0, 100).await.unwrap().len(), 1);
    }

    /// Groups and events committed, as a [`CommitObserver`] is told.
    #[derive(Debug, Default)]
    struct Seen(Mutex<(usize, usize)>);

    impl CommitObserver for Seen {
        fn committed(&self, events: usize, _took: Duration) {
            let mut s = self.0.lock().unwrap();
            s.0 += 1;
            s.1 += events;
        }
    }

    /// Groups sent on predictions: held, missed.
    #[derive(Debug, Default)]
    struct Predictions(Mutex<(usize, usize)>);

    impl CommitObserver for Predictions {
        fn committed(&self, _events: usize, _took: Duration) {}
        fn predicted(&self, held: bool) {
            let mut s = self.0.lock().unwrap();
            if held {
                s.0 += 1;
            } else {
                s.1 += 1;
            }
        }
    }

    /// A writer whose sink can take groups made on predictions sends them
    /// so only once 8 groups in a row found the log as it left it. A group
    /// that another writer's records make miss is run as usual, after
    /// them (one chain, which verifies), and the writer waits for 8 quiet
    /// groups again. A group whose outcome is unknown breaks the writer, as
    /// a failed commit does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_predicts_only_when_alone_and_runs_a_missed_group_as_usual() {
        let dir = tempfile::tempdir().unwrap();
        let (store, other, other_writer) = log(dir.path(), 60).await;
        let key = Arc::clone(&other.shared.writer.lock().unwrap().key);
        let fail = Arc::new(AtomicBool::new(false));
        let log = hand_built(
            Box::new(FailingCommits {
                inner: store.audit_sink().unwrap(),
                fail: Arc::clone(&fail),
                predicting: true,
            }),
            Arc::clone(&key),
        );
        let seen = Arc::new(Predictions::default());
        log.observe_commits(Arc::clone(&seen) as Arc<dyn CommitObserver>);
        let predicted = || *seen.0.lock().unwrap();
        let event = |n: u64| log.record("test.event", 1, serde_json::json!({ "n": n }));
        for n in 1..=8 {
            assert_eq!(event(n).await.unwrap(), n);
        }
        assert_eq!(predicted(), (0, 0), "not before 8 quiet groups");
        for n in 9..=12 {
            assert_eq!(event(n).await.unwrap(), n);
        }
        assert_eq!(predicted(), (4, 0));
        // Another writer (another node) appends: the next group misses,
        // then runs as usual after its record.
        assert_eq!(
            other
                .record("test.event", 1, serde_json::json!({ "other": true }))
                .await
                .unwrap(),
            13
        );
        assert_eq!(event(14).await.unwrap(), 14);
        assert_eq!(predicted(), (4, 1));
        for n in 15..=22 {
            assert_eq!(event(n).await.unwrap(), n);
        }
        assert_eq!(predicted(), (4, 1), "8 quiet groups again first");
        assert_eq!(event(23).await.unwrap(), 23);
        assert_eq!(predicted(), (5, 1));
        let verdict = verify_stored(store.as_ref(), &key.jwks(), None, &[])
            .await
            .unwrap();
        assert_eq!(verdict.unwrap().last, 23);
        // An unknown outcome: refused, and so is everything after.
        fail.store(true, Ordering::SeqCst);
        assert!(event(24).await.is_err());
        assert!(!log.healthy());
        fail.store(false, Ordering::SeqCst);
        assert!(event(24).await.is_err());
        assert_eq!(store.audit_head().await.unwrap().seq, 23);
        other_writer.shutdown().await;
    }

    /// Concurrent events each get their own place in the chain, and the
    /// stored log verifies; the commit observer sees every event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_events_form_one_verifiable_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log, writer) = log(dir.path(), 60).await;
        let seen = Arc::new(Seen::default());
        log.observe_commits(Arc::clone(&seen) as Arc<dyn CommitObserver>);
        let mut tasks = Vec::new();
        for t in 0..16 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    let body = serde_json::json!({ "task": t, "i": i });
                    seqs.push(log.record("test.event", 1, body).await.unwrap());
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=800).collect::<Vec<u64>>());
        // The observer is told after a group's events are answered, while
        // the writer is still held; shutdown takes the writer, so by then
        // every group was reported.
        writer.shutdown().await;
        // Every event was in a group the observer was told of.
        let (groups, events) = *seen.0.lock().unwrap();
        assert_eq!(events, 800);
        assert!((1..=800).contains(&groups), "{groups} groups");
        // After shutdown, events are refused rather than left waiting.
        assert!(
            log.record("test.event", 1, serde_json::json!({}))
                .await
                .is_err()
        );
        let key_jwks = store.checkpoints().await.unwrap();
        assert!(!key_jwks.is_empty());
        let records = store.audit_records(0, 10_000).await.unwrap();
        assert_eq!(records.len(), 800);
    }
}
