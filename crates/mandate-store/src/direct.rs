//! Connections to the SQLite file outside the sqlx pool, used
//! synchronously on the decision path (ADR 0009):
//! - a few readers for the point reads every decision makes (its mission,
//!   the budget count, the live grants);
//! - the audit writer's own connection ([`SqliteAuditSink`]), where a group
//!   of decisions is counted and recorded in one transaction.
//!
//! A point read on SQLite takes microseconds; a round trip through the
//! pool's worker thread cost tens of microseconds more, in thread wake-ups.
//! Both libraries link the same `libsqlite3-sys`, so the file's locks are
//! kept by one SQLite library in the process.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mandate_core::{AuditRecord, ChainHead, Clock as _, MissionId, SystemClock, UnixTime};
use rusqlite::{Connection, OpenFlags, params};

use crate::model::Allowance;
use crate::rows::{CLAIM, ClaimSweep, Columns, SWEEP_CLAIMS, audit_columns, int, secs};
use crate::{AuditSink, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get(column)?)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.get(column)?)
    }
}

/// Opens a connection on the file the pool created (and put in WAL mode,
/// which persists).
pub(crate) fn open(path: &Path, durable: bool, read_only: bool) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)?;
    } else {
        // The audit writer walks eight indexes per record (ADR 0018): on a
        // large log their upper levels no longer fit SQLite's default 2 MB
        // page cache, and every append would read them again.
        conn.pragma_update(None, "cache_size", -65_536)?;
    }
    Ok(conn)
}

/// Read connections, used in place (each read is one indexed lookup).
#[derive(Debug)]
pub(crate) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    pub(crate) fn open(path: &Path, n: usize) -> Result<Self, StoreError> {
        Ok(Self {
            conns: (0..n.max(1))
                .map(|_| open(path, true, true).map(Mutex::new))
                .collect::<Result<_, _>>()?,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on a free connection, or waits for one.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        for c in &self.conns {
            if let Ok(conn) = c.try_lock() {
                return f(&conn);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let conn = self.conns[i]
            .lock()
            .map_err(|_| StoreError::Backend("a read connection was poisoned".into()))?;
        f(&conn)
    }
}

/// The last record's sequence number and hash (genesis if empty).
pub(crate) fn audit_head(conn: &Connection) -> Result<ChainHead, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")?;
    let mut rows = stmt.query([])?;
    Ok(match rows.next()? {
        None => ChainHead::genesis(),
        Some(r) => ChainHead {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            hash: r.get(1)?,
        },
    })
}

/// One unit of a mission's budget, only while the mission is active, has
/// not expired and has budget left; the count after it.
const COUNT_ONE: &str = "UPDATE missions SET requests_used = requests_used + 1 \
     WHERE id = ?1 AND state = 'active' AND expires_at > ?3 AND requests_used < ?2 \
     RETURNING requests_used";

/// One use of a grant, only while it is live.
const USE_GRANT: &str = "UPDATE grants SET uses = uses + 1 \
     WHERE id = ?1 AND mission_id = ?2 AND revoked_at IS NULL \
       AND (expires_at IS NULL OR expires_at > ?3) \
       AND (max_uses IS NULL OR uses < max_uses)";

/// Writes through the pool that are waiting for the write lock. Under
/// gateway load the audit sink commits group after group, and SQLite's
/// busy handler (which sleeps and polls) would let a revocation or an
/// approval wait long, or time out; the sink stands aside while one waits.
#[derive(Debug, Clone, Default)]
pub(crate) struct WritersWaiting(Arc<AtomicUsize>);

/// One waiting writer, until dropped.
#[derive(Debug)]
pub(crate) struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WritersWaiting {
    /// Marks a writer as waiting until the returned guard drops (hold it
    /// until the write lock is taken).
    pub(crate) fn enter(&self) -> Waiting {
        self.0.fetch_add(1, Ordering::AcqRel);
        Waiting(Arc::clone(&self.0))
    }

    /// Waits, at most `limit`, until no writer is waiting.
    fn stand_aside(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.0.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// The audit writer's connection. Used by one holder at a time (whoever
/// holds the server's audit writer).
#[derive(Debug)]
pub(crate) struct SqliteAuditSink {
    conn: Connection,
    waiting: WritersWaiting,
    /// The sequence number the open transaction's next record must have.
    next: Option<u64>,
    sweep: ClaimSweep,
}

impl SqliteAuditSink {
    pub(crate) fn open(
        path: &Path,
        durable: bool,
        waiting: WritersWaiting,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            conn: open(path, durable, false)?,
            waiting,
            next: None,
            sweep: ClaimSweep::default(),
        })
    }

    fn count_budget(
        &self,
        id: &MissionId,
        budget: u64,
        now: UnixTime,
    ) -> Result<Option<u64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(COUNT_ONE)?;
        let mut rows = stmt.query(params![id.as_str(), int(budget), secs(now)])?;
        Ok(match rows.next()? {
            Some(r) => Some(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
            None => None,
        })
    }

    /// Why a mission's budget could not be counted.
    fn not_counted(&self, id: &MissionId, now: UnixTime) -> Result<Allowance, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, expires_at FROM missions WHERE id = ?1")?;
        let mut rows = stmt.query(params![id.as_str()])?;
        Ok(match rows.next()? {
            Some(r) if r.get::<_, String>(0)? == "active" && r.get::<_, i64>(1)? > secs(now) => {
                Allowance::BudgetExhausted
            }
            _ => Allowance::MissionEnded,
        })
    }
}

impl AuditSink for SqliteAuditSink {
    fn head(&mut self) -> Result<ChainHead, StoreError> {
        audit_head(&self.conn)
    }

    fn begin(&mut self) -> Result<ChainHead, StoreError> {
        // Another write waiting for the lock goes first (bounded: the
        // audit log must not stall behind a stuck one).
        self.waiting.stand_aside(Duration::from_millis(250));
        // IMMEDIATE takes the write lock up front: the head read next stays
        // the head until this transaction ends.
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match audit_head(&self.conn) {
            Ok(h) => {
                self.next = Some(h.seq + 1);
                Ok(h)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn count(
        &mut self,
        id: &MissionId,
        budget: u64,
        grant: Option<&str>,
        now: UnixTime,
    ) -> Result<Allowance, StoreError> {
        // INVARIANT: each check and its increment are one statement, and a
        // grant's use and the budget unit are kept or undone together.
        let Some(g) = grant else {
            return match self.count_budget(id, budget, now)? {
                Some(n) => Ok(Allowance::Counted(n)),
                None => self.not_counted(id, now),
            };
        };
        self.conn.execute_batch("SAVEPOINT allowance")?;
        let uses =
            self.conn
                .prepare_cached(USE_GRANT)?
                .execute(params![g, id.as_str(), secs(now)])?;
        if uses == 0 {
            self.conn.execute_batch("RELEASE allowance")?;
            return Ok(Allowance::GrantUnavailable);
        }
        if let Some(n) = self.count_budget(id, budget, now)? {
            self.conn.execute_batch("RELEASE allowance")?;
            return Ok(Allowance::Counted(n));
        }
        self.conn
            .execute_batch("ROLLBACK TO allowance; RELEASE allowance")?;
        self.not_counted(id, now)
    }

    fn append(&mut self, r: &AuditRecord) -> Result<(), StoreError> {
        let Some(next) = self.next.filter(|n| *n == r.seq) else {
            return Err(StoreError::Conflict(format!(
                "audit append at {} but the log's next record is {:?}",
                r.seq, self.next
            )));
        };
        let body = serde_jcs::to_string(&r.body)
            .map_err(|e| StoreError::Backend(format!("cannot encode audit body: {e}")))?;
        let [mission, principal, agent, action, decision] = audit_columns(&r.body);
        self.conn
            .prepare_cached(
                "INSERT INTO audit_events (seq, time, kind, body, hash, mission, principal, agent, action, decision) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![int(r.seq), int(r.time), r.kind, body, r.hash, mission, principal, agent, action, decision])?;
        self.next = Some(next + 1);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.next = None;
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    fn rollback(&mut self) {
        self.next = None;
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn add_checkpoint(&mut self, seq: u64, token: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                // A row already at `seq` (put there by whoever can write the
                // database) must not stop the log: the signed one replaces it.
                "INSERT INTO audit_checkpoints (seq, token) VALUES (?1, ?2) \
                 ON CONFLICT (seq) DO UPDATE SET token = excluded.token",
            )?
            .execute(params![int(seq), token])?;
        Ok(())
    }

    fn seal_head(&mut self, seq: u64, token: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit_seal (id, seq, token) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, token = excluded.token",
            )?
            .execute(params![int(seq), token])?;
        Ok(())
    }

    fn head_seal(&mut self) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT token FROM audit_seal WHERE id = 1")?;
        let mut rows = stmt.query([])?;
        Ok(match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    fn claim(&mut self, key: &str, expires: UnixTime) -> Result<bool, StoreError> {
        let now = SystemClock.now();
        if self.sweep.due(now) {
            self.conn
                .prepare_cached(SWEEP_CLAIMS)?
                .execute(params![secs(now)])?;
        }
        let n = self
            .conn
            .prepare_cached(CLAIM)?
            .execute(params![key, secs(expires), secs(now)])?;
        Ok(n == 1)
    }

    fn records(&mut self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time, kind, body, hash FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![int(after), i64::from(limit)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let body: String = r.get(3)?;
            out.push(AuditRecord {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                time: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                kind: r.get(2)?,
                // A body that no longer parses is kept as a string, so the
                // check names its sequence number.
                body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
                hash: r.get(4)?,
            });
        }
        Ok(out)
    }
}
