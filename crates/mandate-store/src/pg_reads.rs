//! The decision path's reads on PostgreSQL: a mission's snapshot, and an
//! API token's principal with it, on `tokio-postgres` connections that
//! every request shares (ADR 0033, third amendment).
//!
//! Through the sqlx pool, each of these reads took a connection from the
//! pool and, once done, sqlx pinged the connection before handing it back:
//! a second round trip, and a second wake-up of PostgreSQL's process and
//! of one of Mandate's threads, for every request. A `tokio-postgres`
//! client is shared instead: requests made at the same time go out on its
//! connection one after another (pipelined), and nothing is sent but the
//! statement. Each read is still made on every request, at the database:
//! nothing is cached, so a revocation is seen by the next read on any
//! node.
//!
//! A connection that fails, or on which a read waits longer than
//! [`READ_TIMEOUT`] for its answer, is dropped and the read fails (the
//! caller denies); the next read on it opens a new one. Its statements are prepared
//! when it opens, so a schema changed under a running node (a migration
//! by a newer node) fails its reads until the connection is replaced,
//! which the first failure does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row, Statement};

use crate::StoreError;
use crate::pg_audit::{AuditTarget, db};

/// How many connections the reads share. Two: PostgreSQL runs one
/// connection's statements in turn, so two can run at once, and a stuck
/// connection holds up only half of the reads until it times out.
const CONNECTIONS: usize = 2;

/// How long a read may wait for its connection (another read may be
/// opening it), and then for its answer: a server that stops answering
/// (a dead network path, a lock held by a migration) fails the read, and
/// the request is refused, instead of holding it and every read queued
/// behind it.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn timed_out() -> StoreError {
    StoreError::Backend(format!(
        "a read on PostgreSQL took longer than {} s",
        READ_TIMEOUT.as_secs()
    ))
}

/// The reads' statements, each built once: `$1` the mission's id, `$2`
/// now, and for [`Reads::token_and_snapshot`] `$3` the token's hash.
pub(crate) struct ReadStatements {
    pub(crate) snapshot: String,
    pub(crate) token_and_snapshot: String,
}

/// One shared connection and its prepared statements.
struct Conn {
    client: Client,
    snapshot: Statement,
    token_and_snapshot: Statement,
}

pub(crate) struct Reads {
    target: AuditTarget,
    /// What `pg_stat_activity` shows for these connections.
    application: String,
    texts: ReadStatements,
    slots: [tokio::sync::Mutex<Option<Arc<Conn>>>; CONNECTIONS],
    next: AtomicUsize,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Which of the statements a read runs.
#[derive(Clone, Copy)]
enum Which {
    Snapshot,
    TokenAndSnapshot,
}

impl Reads {
    /// Opens no connection yet: the first read does.
    pub(crate) fn new(target: AuditTarget, application: String, texts: ReadStatements) -> Self {
        Self {
            target,
            application,
            texts,
            slots: Default::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// The mission's snapshot row (`None`: no such mission).
    pub(crate) async fn snapshot(&self, id: &str, now: i64) -> Result<Option<Row>, StoreError> {
        let rows = self.query(Which::Snapshot, &[&id, &now]).await?;
        Ok(rows.into_iter().next())
    }

    /// The token's principal beside the mission's snapshot, one row.
    pub(crate) async fn token_and_snapshot(
        &self,
        id: &str,
        now: i64,
        hash: &str,
    ) -> Result<Row, StoreError> {
        let rows = self
            .query(Which::TokenAndSnapshot, &[&id, &now, &hash])
            .await?;
        let mut rows = rows.into_iter();
        match (rows.next(), rows.next()) {
            (Some(r), None) => Ok(r),
            _ => Err(StoreError::Backend(
                "the token and mission read answered other than one row".into(),
            )),
        }
    }

    async fn query(
        &self,
        which: Which,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % CONNECTIONS];
        // Waiting for the slot (another read may be opening its
        // connection) and opening one count against the same bound.
        let conn = tokio::time::timeout(READ_TIMEOUT, async {
            let mut held = slot.lock().await;
            match held.as_ref().filter(|c| !c.client.is_closed()) {
                Some(c) => Ok::<_, StoreError>(Arc::clone(c)),
                None => {
                    *held = None;
                    let c = Arc::new(self.connect().await?);
                    *held = Some(Arc::clone(&c));
                    Ok(c)
                }
            }
        })
        .await
        .map_err(|_| timed_out())??;
        let statement = match which {
            Which::Snapshot => &conn.snapshot,
            Which::TokenAndSnapshot => &conn.token_and_snapshot,
        };
        let failed =
            match tokio::time::timeout(READ_TIMEOUT, conn.client.query(statement, params)).await {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(e)) => db(e),
                Err(_) => timed_out(),
            };
        // Whatever failed (the connection, a statement the schema no
        // longer matches, a server that stopped answering), the next read
        // on this slot starts afresh; the reads queued behind a stuck one
        // time out in turn.
        if let Ok(mut held) = tokio::time::timeout(READ_TIMEOUT, slot.lock()).await
            && held.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn))
        {
            *held = None;
        }
        Err(failed)
    }

    /// A new connection ([`AuditTarget::client`]: when it closes or its
    /// runtime stops, the next read opens another), with both statements
    /// prepared.
    async fn connect(&self) -> Result<Conn, StoreError> {
        let client = self.target.client(&self.application).await?;
        let snapshot = client
            .prepare_typed(&self.texts.snapshot, &[Type::TEXT, Type::INT8])
            .await
            .map_err(db)?;
        let token_and_snapshot = client
            .prepare_typed(
                &self.texts.token_and_snapshot,
                &[Type::TEXT, Type::INT8, Type::TEXT],
            )
            .await
            .map_err(db)?;
        Ok(Conn {
            client,
            snapshot,
            token_and_snapshot,
        })
    }
}
