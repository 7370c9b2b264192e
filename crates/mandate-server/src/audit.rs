//! The audit writer: one task owns the chain head, takes events from every
//! handler, and commits them in groups (one transaction, one sync, for all
//! events waiting). A handler awaits its event's commit before it answers,
//! so an event is durable before its effect is seen.

use std::sync::Arc;
use std::time::Duration;

use mandate_core::{AuditRecord, AuthorityKey, ChainHead, Clock, sign_checkpoint};
use mandate_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::problem::Problem;

/// Most events committed in one group.
const MAX_GROUP: usize = 1_024;
/// Events waiting for the writer before handlers wait for room.
const QUEUE: usize = 8_192;

/// When checkpoints are signed.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// After this many records…
    pub every: u64,
    /// …or this many seconds, whichever comes first (if anything was written).
    pub secs: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every: 1_000,
            secs: 60,
        }
    }
}

struct Pending {
    time: u64,
    kind: &'static str,
    body: serde_json::Value,
    done: oneshot::Sender<Result<u64, ()>>,
}

/// The running writer task, for a clean stop.
#[derive(Debug)]
pub struct AuditWriter {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl AuditWriter {
    /// Commits what is queued, signs a last checkpoint, and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

/// A handle to the audit writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer on the store's current head.
    pub async fn spawn(
        store: Arc<dyn Store>,
        key: Arc<AuthorityKey>,
        issuer: String,
        clock: Arc<dyn Clock>,
        policy: CheckpointPolicy,
    ) -> Result<(Self, AuditWriter), mandate_store::StoreError> {
        let head = store.audit_head().await?;
        let last_checkpoint = store
            .checkpoints()
            .await?
            .last()
            .and_then(|t| mandate_core::verify_checkpoint(t, &key.jwks(), None).ok())
            .map_or(0, |c| c.seq);
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut writer = Writer {
            store,
            key,
            issuer,
            clock,
            policy,
            last_checkpoint,
            head,
        };
        // Seal records a crash left after the last checkpoint.
        if writer.head.seq > writer.last_checkpoint {
            writer.checkpoint().await;
        }
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(writer.run(rx, stopped));
        Ok((Self { tx }, AuditWriter { stop, handle }))
    }

    /// Records an event and waits until it is durable. Returns its sequence
    /// number. Any failure is an error the caller must not answer past.
    pub async fn record(
        &self,
        kind: &'static str,
        time: u64,
        body: serde_json::Value,
    ) -> Result<u64, Problem> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending {
                time,
                kind,
                body,
                done,
            })
            .await
            .map_err(|_| audit_down())?;
        wait.await
            .map_err(|_| audit_down())?
            .map_err(|()| audit_down())
    }
}

fn audit_down() -> Problem {
    tracing::error!("the audit log could not record an event; refusing to proceed");
    Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the audit log could not record this; nothing was done",
    )
}

struct Writer {
    store: Arc<dyn Store>,
    key: Arc<AuthorityKey>,
    issuer: String,
    clock: Arc<dyn Clock>,
    policy: CheckpointPolicy,
    head: ChainHead,
    last_checkpoint: u64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, mut stopped: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.policy.secs.max(1)));
        loop {
            tokio::select! {
                _ = &mut stopped => {
                    let mut rest = Vec::new();
                    while let Ok(p) = rx.try_recv() {
                        rest.push(p);
                    }
                    if !rest.is_empty() {
                        self.commit(rest).await;
                    }
                    break;
                }
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(p) => group.push(p),
                            Err(_) => break,
                        }
                    }
                    self.commit(group).await;
                    if self.head.seq >= self.last_checkpoint + self.policy.every {
                        self.checkpoint().await;
                    }
                }
                _ = tick.tick() => {
                    if self.head.seq > self.last_checkpoint {
                        self.checkpoint().await;
                    }
                }
            }
        }
        // Stopping: seal what was written.
        if self.head.seq > self.last_checkpoint {
            self.checkpoint().await;
        }
    }

    async fn commit(&mut self, group: Vec<Pending>) {
        let mut chained = Vec::with_capacity(group.len());
        // Events that cannot be chained fail alone.
        for p in group {
            if let Err(e) = self.head.clone().append(p.time, p.kind, p.body.clone()) {
                tracing::error!(error = %e, "cannot chain an audit event");
                let _ = p.done.send(Err(()));
            } else {
                chained.push(p);
            }
        }
        // Another writer (`mandate init` on the data dir) may have appended
        // meanwhile: then re-read the head and chain the group again, once.
        for attempt in 0..2 {
            let mut head = self.head.clone();
            let records: Result<Vec<AuditRecord>, _> = chained
                .iter()
                .map(|p| head.append(p.time, p.kind, p.body.clone()))
                .collect();
            let Ok(records) = records else { break };
            match self.store.append_audit(&records).await {
                Ok(()) => {
                    self.head = head;
                    for (p, r) in chained.into_iter().zip(&records) {
                        let _ = p.done.send(Ok(r.seq));
                    }
                    return;
                }
                Err(e) => {
                    // Re-read the head: the store is the truth.
                    match self.store.audit_head().await {
                        Ok(h) => self.head = h,
                        Err(_) => break,
                    }
                    if attempt == 0 && matches!(e, mandate_store::StoreError::Conflict(_)) {
                        tracing::warn!(error = %e, "the audit log moved under this writer; chaining again");
                        continue;
                    }
                    tracing::error!(error = %e, "audit commit failed");
                    break;
                }
            }
        }
        for p in chained {
            let _ = p.done.send(Err(()));
        }
    }

    async fn checkpoint(&mut self) {
        let now = self.clock.now().0;
        match sign_checkpoint(&self.key, &self.issuer, &self.head, now) {
            Ok(token) => match self.store.add_checkpoint(self.head.seq, &token).await {
                Ok(()) => self.last_checkpoint = self.head.seq,
                Err(e) => tracing::error!(error = %e, "cannot store an audit checkpoint"),
            },
            Err(e) => tracing::error!(error = %e, "cannot sign an audit checkpoint"),
        }
    }
}

/// Verifies the stored log: from genesis, or from the signed checkpoint a
/// recorded prune left (see `mandate_core::chain_start`). The outer error is
/// the store's; the inner, the chain's.
///
/// The server passes no issuer: the authority key is the trust anchor, and
/// a changed `public_url` must not make older checkpoints look forged.
pub async fn verify_stored(
    store: &dyn Store,
    jwks: &mandate_core::Jwks,
    issuer: Option<&str>,
) -> Result<Result<mandate_core::ChainReport, mandate_core::ChainError>, mandate_store::StoreError>
{
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_records(after, 5_000).await?;
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        records.extend(page);
        after = last;
    }
    let checkpoints = store.checkpoints().await?;
    let first = records.first().map(|r| r.seq);
    Ok(
        mandate_core::chain_start(first, &records, &checkpoints, jwks, issuer).and_then(|start| {
            mandate_core::verify_chain(start, records, &checkpoints, jwks, issuer)
        }),
    )
}
