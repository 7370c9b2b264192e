//! The audit writer's connection on PostgreSQL.
//!
//! [`AuditSink`] is synchronous. The sink owns one `PgConnection` and a
//! current-thread runtime of its own, and each call drives the connection
//! on the thread that makes it: the audit writer's commit runs inside
//! `tokio::task::block_in_place` under a [`blocking_section`], so a
//! group's statements go out and their answers come back on that one
//! thread, with no hand-off to another (each would be a wake-up of a
//! sleeping thread, twice per statement). A call from a thread that must
//! not block (a current-thread runtime's own, an async task) is run on a
//! short-lived thread of its own instead. Dropping the sink rolls back any
//! open transaction and closes the connection.
//!
//! Records appended in a group, and the group's seal, are kept by the
//! handle and written with the group's `COMMIT`, in one multi-row
//! `INSERT` just before it (or before anything that reads them back): a
//! statement and a network round trip per record would
//! otherwise bound a node's throughput. A write that fails fails the
//! commit.
//!
//! Several nodes append to one chain: [`AuditSink::begin`] takes the
//! writers' advisory lock inside its transaction before it reads the head,
//! so groups from different processes follow one another.

use std::cell::Cell;

use mandate_core::{AuditRecord, ChainHead, Clock as _, MissionId, SystemClock, UnixTime};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection as _, Row as _};

use crate::model::Allowance;
use crate::rows::{
    CLAIM, ClaimSweep, Columns as _, SWEEP_CLAIMS, audit_columns, audit_from_row, int, secs,
};
use crate::{AuditSink, CountAsk, StoreError};

thread_local! {
    /// Set while this thread runs a [`blocking_section`].
    static MAY_BLOCK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, telling this crate's synchronous audit sinks that the thread
/// may block on I/O: it is outside any runtime's tasks (inside
/// `tokio::task::block_in_place`, or a thread of its own). The PostgreSQL
/// sink then drives its connection on this thread, with no hand-off to
/// another; elsewhere it hands each call to a short-lived thread.
///
/// Calling a sink inside a `blocking_section` from a thread that runs a
/// runtime's tasks is a bug: the call fails there (tokio refuses to block
/// such a thread, and the panic is the call's error) rather than stall the
/// runtime.
pub fn blocking_section<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            MAY_BLOCK.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MAY_BLOCK.with(|m| m.replace(true)));
    f()
}

/// Runs `f` where it may block on I/O: here, if this thread is in a
/// [`blocking_section`] or outside every runtime, else on a thread of its
/// own (a current-thread runtime's own thread, an async task). A panic in
/// `f` is an error, either way, as it was when the connection had a
/// thread of its own: the audit writer refuses the group, and the sink
/// discards the connection.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R, StoreError> {
    if MAY_BLOCK.with(Cell::get) || tokio::runtime::Handle::try_current().is_err() {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| gone());
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("mandate-audit-pg".into())
            .spawn_scoped(s, f)
            .map_err(|e| StoreError::Backend(format!("cannot start the audit thread: {e}")))?
            .join()
            .map_err(|_| gone())
    })
}

/// The writer's connection, durable on commit: a server (or role, or
/// database) set to `synchronous_commit = off` would acknowledge a commit
/// before it is on disk, so this session turns it back on. Stronger
/// settings (`remote_write`, `remote_apply`) are kept.
async fn connect(options: &PgConnectOptions) -> Result<PgConnection, StoreError> {
    let mut conn = PgConnection::connect_with(options).await?;
    let mode: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut conn)
        .await?;
    if mode == "off" {
        sqlx::raw_sql("SET synchronous_commit = on")
            .execute(&mut conn)
            .await?;
    }
    Ok(conn)
}

/// The PostgreSQL [`AuditSink`]: its connection, and what the open group
/// has appended but not yet written.
pub(crate) struct PgAuditSink {
    /// `None` once a call panicked or could not be run: the connection's
    /// state is unknown, and every call after it fails until the next
    /// group opens on a new connection.
    conn: Option<Conn>,
    /// What a new connection is opened with.
    options: PgConnectOptions,
    lock: i64,
    /// Appended in the open group, not yet written.
    pending: Pending,
}

impl std::fmt::Debug for PgAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditSink")
            .field("open", &self.conn.is_some())
            .field("pending", &self.pending)
            .finish()
    }
}

/// The connection and the runtime its socket is registered with, which
/// the calling thread drives for the length of each call.
struct Conn {
    rt: tokio::runtime::Runtime,
    worker: Worker,
}

impl Conn {
    fn open(options: PgConnectOptions, lock: i64) -> Result<Self, StoreError> {
        off_runtime(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    StoreError::Backend(format!("cannot start the audit connection's runtime: {e}"))
                })?;
            let conn = rt.block_on(connect(&options))?;
            Ok(Self {
                rt,
                worker: Worker {
                    conn,
                    options,
                    lock,
                    next: None,
                    tx: TxState::None,
                    sweep: ClaimSweep::default(),
                },
            })
        })?
    }

    /// Drops the connection without a word to the server (which rolls back
    /// whatever it left open, and releases the writers' lock with it), and
    /// its runtime without waiting: allowed anywhere, an async task too.
    fn discard(self) {
        let Self { rt, worker } = self;
        drop(worker);
        rt.shutdown_background();
    }
}

/// What a group has appended and sealed but not yet written.
#[derive(Debug, Default)]
struct Pending {
    records: Vec<AuditRecord>,
    seal: Option<(u64, String)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.seal.is_none()
    }
}

fn gone() -> StoreError {
    StoreError::Backend("the audit connection was lost to a failed call".into())
}

impl PgAuditSink {
    /// Connects; returns once connected (or failed).
    pub(crate) fn open(options: PgConnectOptions, lock: i64) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Some(Conn::open(options.clone(), lock)?),
            options,
            lock,
            pending: Pending::default(),
        })
    }

    /// Runs `call` on the connection, on this thread where it may block
    /// (see [`off_runtime`]). A call that panics, or that could not be run,
    /// takes the connection with it: every later call fails until the
    /// next [`AuditSink::begin`].
    fn run<T: Send>(
        &mut self,
        call: impl AsyncFnOnce(&mut Worker) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let conn = self.conn.as_mut().ok_or_else(gone)?;
        match off_runtime(|| conn.rt.block_on(call(&mut conn.worker))) {
            Ok(v) => v,
            Err(e) => {
                if let Some(conn) = self.conn.take() {
                    conn.discard();
                }
                Err(e)
            }
        }
    }

    /// Writes what is pending before a call that reads it back.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.run(async move |w: &mut Worker| {
            let v = w.write(pending).await;
            w.watch(v)
        })
    }
}

impl Drop for PgAuditSink {
    fn drop(&mut self) {
        // Rolls back what is open and says goodbye, where blocking is
        // allowed; a connection that could not get there is discarded.
        let mut slot = self.conn.take();
        let _ = off_runtime(|| {
            if let Some(Conn { rt, worker }) = slot.take() {
                rt.block_on(worker.close());
                drop(rt);
            }
        });
        if let Some(conn) = slot {
            conn.discard();
        }
    }
}

impl AuditSink for PgAuditSink {
    fn head(&mut self) -> Result<ChainHead, StoreError> {
        self.flush()?;
        self.run(async |w: &mut Worker| w.head().await)
    }

    fn begin(&mut self) -> Result<ChainHead, StoreError> {
        self.pending = Pending::default();
        // A connection discarded by a failed call is replaced here, where
        // nothing is open (as `Worker::begin` replaces one that was lost),
        // never in the middle of a group.
        if self.conn.is_none() {
            self.conn = Some(Conn::open(self.options.clone(), self.lock)?);
        }
        self.run(async |w: &mut Worker| w.begin().await)
    }

    fn count(
        &mut self,
        id: &MissionId,
        budget: u64,
        grant: Option<&str>,
        now: UnixTime,
    ) -> Result<Allowance, StoreError> {
        self.run(async |w: &mut Worker| {
            let v = w.count(id, budget, grant, now).await;
            w.watch(v)
        })
    }

    fn count_all(&mut self, asks: &[CountAsk]) -> Result<Vec<Allowance>, StoreError> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        self.run(async |w: &mut Worker| {
            let v = w.count_all(asks).await;
            w.watch(v)
        })
    }

    fn append(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        self.pending.records.push(record.clone());
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        self.run(async move |w: &mut Worker| {
            let v = w.write(pending).await;
            // A failed write leaves the transaction failed: the commit
            // then rolls back and fails.
            let _ = w.watch(v);
            w.commit().await
        })
    }

    fn rollback(&mut self) {
        self.pending = Pending::default();
        let _ = self.run(async |w: &mut Worker| {
            w.rollback().await;
            Ok(())
        });
    }

    fn add_checkpoint(&mut self, seq: u64, token: &str) -> Result<(), StoreError> {
        self.run(async |w: &mut Worker| {
            let v = w.add_checkpoint(seq, token).await;
            w.watch(v)
        })
    }

    fn records(&mut self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.flush()?;
        self.run(async |w: &mut Worker| {
            let v = w.records(after, limit).await;
            w.watch(v)
        })
    }

    fn seal_head(&mut self, seq: u64, token: &str) -> Result<(), StoreError> {
        self.pending.seal = Some((seq, token.to_owned()));
        Ok(())
    }

    fn head_seal(&mut self) -> Result<Option<String>, StoreError> {
        self.flush()?;
        self.run(async |w: &mut Worker| {
            let v = w.head_seal().await;
            w.watch(v)
        })
    }

    fn claim(&mut self, key: &str, expires: UnixTime) -> Result<bool, StoreError> {
        self.run(async |w: &mut Worker| {
            let v = w.claim(key, expires).await;
            w.watch(v)
        })
    }

    fn claim_all(&mut self, claims: &[(&str, UnixTime)]) -> Result<Vec<bool>, StoreError> {
        self.run(async |w: &mut Worker| {
            let v = w.claim_all(claims).await;
            w.watch(v)
        })
    }
}

/// Where the connection's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    None,
    Open,
    /// A statement failed inside it: PostgreSQL has aborted it, and a
    /// `COMMIT` would quietly roll back, so commit must fail instead.
    Failed,
}

/// One unit of a mission's budget, only while the mission is active, has
/// not expired and has budget left; the count after it.
const COUNT_ONE: &str = "UPDATE missions SET requests_used = requests_used + 1 \
     WHERE id = $1 AND state = 'active' AND expires_at > $3 AND requests_used < $2 \
     RETURNING requests_used";

/// One use of a grant, only while it is live.
const USE_GRANT: &str = "UPDATE grants SET uses = uses + 1 \
     WHERE id = $1 AND mission_id = $2 AND revoked_at IS NULL \
       AND (expires_at IS NULL OR expires_at > $3) \
       AND (max_uses IS NULL OR uses < max_uses)";

/// [`COUNT_ONE`] for several missions at once, each named once (`$1`
/// ids, `$2` their budgets, `$3` their times): the rows counted come back
/// with their counts.
const COUNT_ROUND: &str = "UPDATE missions m SET requests_used = m.requests_used + 1 \
     FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS a(id, budget, now) \
     WHERE m.id = a.id AND m.state = 'active' AND m.expires_at > a.now \
       AND m.requests_used < a.budget \
     RETURNING m.id, m.requests_used";

const HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

/// The seal's one row, replaced by each commit (`VALUES` between the two).
const SEAL: &str = "INSERT INTO audit_seal (id, seq, token)";
const SEAL_REPLACES: &str =
    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, token = excluded.token";

/// The connection and the state of its transaction.
struct Worker {
    conn: PgConnection,
    options: PgConnectOptions,
    lock: i64,
    /// The sequence number the open transaction's next record must have.
    next: Option<u64>,
    tx: TxState,
    sweep: ClaimSweep,
}

impl Worker {
    /// Marks the open transaction failed if `v` is an error.
    fn watch<T>(&mut self, v: Result<T, StoreError>) -> Result<T, StoreError> {
        if v.is_err() && self.tx == TxState::Open {
            self.tx = TxState::Failed;
        }
        v
    }

    async fn head(&mut self) -> Result<ChainHead, StoreError> {
        let row = sqlx::query(HEAD).fetch_optional(&mut self.conn).await?;
        Ok(match row {
            None => ChainHead::genesis(),
            Some(r) => ChainHead {
                seq: u64::try_from(r.int("seq")?).unwrap_or(0),
                hash: r.text("hash")?,
            },
        })
    }

    async fn begin(&mut self) -> Result<ChainHead, StoreError> {
        if self.tx != TxState::None {
            return Err(StoreError::Conflict(
                "an audit group is already open on this connection".into(),
            ));
        }
        // INVARIANT: the lock is taken before the head is read (each
        // statement of the batch reads its own snapshot in READ COMMITTED,
        // which the transaction names whatever the server's default is),
        // so the head stays the head until this transaction ends, whichever
        // node appends next. The three in one round trip (the key is a
        // number).
        let head = match self.lock_and_head().await {
            Ok(h) => h,
            Err(_) => {
                // Nothing is in flight: whatever began is rolled back, and a
                // connection lost since the last group is replaced, once.
                if sqlx::raw_sql("ROLLBACK")
                    .execute(&mut self.conn)
                    .await
                    .is_err()
                {
                    self.conn = connect(&self.options).await?;
                }
                match self.lock_and_head().await {
                    Ok(h) => h,
                    Err(e) => {
                        self.tx = TxState::Open;
                        self.rollback().await;
                        return Err(e);
                    }
                }
            }
        };
        self.tx = TxState::Open;
        self.next = Some(head.seq + 1);
        Ok(head)
    }

    /// Opens the group's transaction, takes the writers' lock and reads the
    /// head: one batch of three statements.
    async fn lock_and_head(&mut self) -> Result<ChainHead, StoreError> {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({}); {HEAD}",
            self.lock
        )))
        .fetch_all(&mut self.conn)
        .await?;
        // The lock's row has one void column; the head's has two.
        Ok(match rows.iter().find(|r| r.len() == 2) {
            None => ChainHead::genesis(),
            Some(r) => ChainHead {
                seq: u64::try_from(r.int("seq")?).unwrap_or(0),
                hash: r.text("hash")?,
            },
        })
    }

    async fn count_budget(
        &mut self,
        id: &MissionId,
        budget: u64,
        now: UnixTime,
    ) -> Result<Option<u64>, StoreError> {
        let used: Option<i64> = sqlx::query_scalar(COUNT_ONE)
            .bind(id.as_str())
            .bind(int(budget))
            .bind(secs(now))
            .fetch_optional(&mut self.conn)
            .await?;
        Ok(used.map(|n| u64::try_from(n).unwrap_or(0)))
    }

    /// Why a mission's budget could not be counted.
    async fn not_counted(
        &mut self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Allowance, StoreError> {
        let row = sqlx::query("SELECT state, expires_at FROM missions WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut self.conn)
            .await?;
        Ok(match row {
            Some(r)
                if r.try_get::<String, _>(0)? == "active"
                    && r.try_get::<i64, _>(1)? > secs(now) =>
            {
                Allowance::BudgetExhausted
            }
            _ => Allowance::MissionEnded,
        })
    }

    async fn count(
        &mut self,
        id: &MissionId,
        budget: u64,
        grant: Option<&str>,
        now: UnixTime,
    ) -> Result<Allowance, StoreError> {
        // INVARIANT: each check and its increment are one statement (a
        // concurrent writer's update is waited for and the condition
        // re-checked), and a grant's use and the budget unit are kept or
        // undone together.
        let Some(g) = grant else {
            return match self.count_budget(id, budget, now).await? {
                Some(n) => Ok(Allowance::Counted(n)),
                None => self.not_counted(id, now).await,
            };
        };
        sqlx::raw_sql("SAVEPOINT allowance")
            .execute(&mut self.conn)
            .await?;
        let uses = sqlx::query(USE_GRANT)
            .bind(g)
            .bind(id.as_str())
            .bind(secs(now))
            .execute(&mut self.conn)
            .await?
            .rows_affected();
        if uses == 0 {
            sqlx::raw_sql("RELEASE SAVEPOINT allowance")
                .execute(&mut self.conn)
                .await?;
            return Ok(Allowance::GrantUnavailable);
        }
        if let Some(n) = self.count_budget(id, budget, now).await? {
            sqlx::raw_sql("RELEASE SAVEPOINT allowance")
                .execute(&mut self.conn)
                .await?;
            return Ok(Allowance::Counted(n));
        }
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT allowance; RELEASE SAVEPOINT allowance")
            .execute(&mut self.conn)
            .await?;
        self.not_counted(id, now).await
    }

    /// Counts `asks` in order, as [`Self::count`] on each in turn would.
    /// Without grants, in rounds of one statement: the first ask of each
    /// mission, then the second of each mission that has two, and so on,
    /// so each mission's asks are counted in their order (asks of
    /// different missions touch different rows, so their order does not
    /// matter). An ask that allows through a grant has each ask counted in
    /// turn (a grant's use and its budget unit are kept or undone
    /// together).
    async fn count_all(&mut self, asks: &[CountAsk]) -> Result<Vec<Allowance>, StoreError> {
        if asks.iter().any(|a| a.grant.is_some()) {
            let mut out = Vec::with_capacity(asks.len());
            for a in asks {
                out.push(
                    self.count(&a.mission, a.budget, a.grant.as_deref(), a.now)
                        .await?,
                );
            }
            return Ok(out);
        }
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, a) in asks.iter().enumerate() {
            let r = seen.entry(a.mission.as_str()).or_insert(0);
            if rounds.len() == *r {
                rounds.push(Vec::new());
            }
            rounds[*r].push(i);
            *r += 1;
        }
        let mut out: Vec<Option<Allowance>> = vec![None; asks.len()];
        for round in rounds {
            let ids: Vec<&str> = round.iter().map(|&i| asks[i].mission.as_str()).collect();
            let budgets: Vec<i64> = round.iter().map(|&i| int(asks[i].budget)).collect();
            let nows: Vec<i64> = round.iter().map(|&i| secs(asks[i].now)).collect();
            let counted: std::collections::HashMap<String, i64> = sqlx::query(COUNT_ROUND)
                .bind(&ids)
                .bind(&budgets)
                .bind(&nows)
                .fetch_all(&mut self.conn)
                .await?
                .iter()
                .map(|r| Ok((r.text("id")?, r.int("requests_used")?)))
                .collect::<Result<_, StoreError>>()?;
            for i in round {
                let a = &asks[i];
                out[i] = Some(match counted.get(a.mission.as_str()) {
                    Some(&n) => Allowance::Counted(u64::try_from(n).unwrap_or(0)),
                    None => self.not_counted(&a.mission, a.now).await?,
                });
            }
        }
        out.into_iter()
            .map(|a| a.ok_or_else(|| StoreError::Backend("an ask was not counted".into())))
            .collect()
    }

    /// Appends the group's records and stores its seal, in one statement.
    async fn write(&mut self, pending: Pending) -> Result<(), StoreError> {
        let Pending { records, seal } = pending;
        if records.is_empty() {
            if let Some((seq, token)) = seal {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{SEAL} VALUES (1, $1, $2) {SEAL_REPLACES}"
                )))
                .bind(int(seq))
                .bind(token)
                .execute(&mut self.conn)
                .await?;
            }
            return Ok(());
        }
        let mut next = self
            .next
            .ok_or_else(|| StoreError::Conflict("audit append without an open group".into()))?;
        let n = records.len();
        let (mut seqs, mut times, mut kinds, mut bodies, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        // The filter columns (ADR 0018), from each body.
        let mut columns: [Vec<Option<String>>; 5] = Default::default();
        for r in records {
            if r.seq != next {
                return Err(StoreError::Conflict(format!(
                    "audit append at {} but the log's next record is {next}",
                    r.seq
                )));
            }
            next += 1;
            for (column, value) in columns.iter_mut().zip(audit_columns(&r.body)) {
                column.push(value.map(str::to_owned));
            }
            seqs.push(int(r.seq));
            times.push(int(r.time));
            bodies.push(
                serde_jcs::to_string(&r.body)
                    .map_err(|e| StoreError::Backend(format!("cannot encode audit body: {e}")))?,
            );
            kinds.push(r.kind);
            hashes.push(r.hash);
        }
        let [mission, principal, agent, action, decision] = columns;
        const APPEND: &str = "INSERT INTO audit_events \
             (seq, time, kind, body, hash, mission, principal, agent, action, decision) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])";
        // With a seal, both in one statement (the seal's row refers to no
        // other, so the data-modifying CTE's snapshot does not matter).
        let sql = match &seal {
            None => APPEND.to_owned(),
            Some(_) => {
                format!("WITH appended AS ({APPEND}) {SEAL} VALUES (1, $11, $12) {SEAL_REPLACES}")
            }
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(seqs)
            .bind(times)
            .bind(kinds)
            .bind(bodies)
            .bind(hashes)
            .bind(mission)
            .bind(principal)
            .bind(agent)
            .bind(action)
            .bind(decision);
        if let Some((seq, token)) = seal {
            q = q.bind(int(seq)).bind(token);
        }
        q.execute(&mut self.conn).await?;
        self.next = Some(next);
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        self.next = None;
        match self.tx {
            TxState::None => Err(StoreError::Conflict("no audit group is open".into())),
            TxState::Failed => {
                self.rollback().await;
                Err(StoreError::Backend(
                    "the audit group failed and was rolled back".into(),
                ))
            }
            TxState::Open => {
                // `synchronous_commit` is at least `on` (see `connect`):
                // durable on return.
                let done = sqlx::raw_sql("COMMIT").execute(&mut self.conn).await;
                self.tx = TxState::None;
                done.map(|_| ()).map_err(StoreError::from)
            }
        }
    }

    async fn rollback(&mut self) {
        self.next = None;
        if self.tx != TxState::None {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await;
            self.tx = TxState::None;
        }
    }

    async fn add_checkpoint(&mut self, seq: u64, token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, token) VALUES ($1, $2) \
             ON CONFLICT (seq) DO UPDATE SET token = excluded.token",
        )
        .bind(int(seq))
        .bind(token)
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    async fn head_seal(&mut self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT token FROM audit_seal WHERE id = 1")
                .fetch_optional(&mut self.conn)
                .await?,
        )
    }

    async fn records(&mut self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, time, kind, body, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(int(after))
        .bind(i64::from(limit))
        .fetch_all(&mut self.conn)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn claim(&mut self, key: &str, expires: UnixTime) -> Result<bool, StoreError> {
        let now = SystemClock.now();
        if self.sweep.due(now) {
            sqlx::query(SWEEP_CLAIMS)
                .bind(secs(now))
                .execute(&mut self.conn)
                .await?;
        }
        // INVARIANT: ON CONFLICT, never a unique violation, which would
        // abort the group's transaction.
        let n = sqlx::query(CLAIM)
            .bind(key)
            .bind(secs(expires))
            .bind(secs(now))
            .execute(&mut self.conn)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Every claim in one statement: the keys it inserted (or took over
    /// from an expired claim) come back; the others were replays.
    async fn claim_all(&mut self, claims: &[(&str, UnixTime)]) -> Result<Vec<bool>, StoreError> {
        let now = SystemClock.now();
        if self.sweep.due(now) {
            sqlx::query(SWEEP_CLAIMS)
                .bind(secs(now))
                .execute(&mut self.conn)
                .await?;
        }
        let (keys, expires): (Vec<&str>, Vec<i64>) =
            claims.iter().map(|&(k, e)| (k, secs(e))).unzip();
        // INVARIANT: the keys are distinct (one row is never affected
        // twice) and ON CONFLICT never raises, so the group goes on.
        let taken: std::collections::HashSet<String> = sqlx::query_scalar(
            "INSERT INTO claims (key, expires) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
             ON CONFLICT (key) DO UPDATE SET expires = excluded.expires WHERE claims.expires <= $3 \
             RETURNING key",
        )
        .bind(&keys)
        .bind(&expires)
        .bind(secs(now))
        .fetch_all(&mut self.conn)
        .await?
        .into_iter()
        .collect();
        Ok(keys.iter().map(|k| taken.contains(*k)).collect())
    }

    async fn close(mut self) {
        self.rollback().await;
        let _ = self.conn.close().await;
    }
}
