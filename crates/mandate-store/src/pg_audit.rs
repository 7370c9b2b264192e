//! The audit writer's connection on PostgreSQL.
//!
//! [`AuditSink`] is synchronous. The sink owns one `tokio-postgres` connection and a
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
use std::time::Duration;

use mandate_core::{AuditRecord, ChainHead, Clock as _, MissionId, SystemClock, UnixTime};
use sqlx::postgres::PgConnectOptions;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use crate::model::Allowance;
use crate::rows::{
    ClaimSweep, Columns as _, SWEEP_CLAIMS, audit_columns, audit_from_row, int, secs,
};
use crate::{AuditSink, CountAsk, PredictedCommit, Prediction, StoreError};

/// How long one call on the audit connection may take before it fails and
/// the connection is dropped: the wait for the writers' lock (another
/// node's group holds it for milliseconds, or for PostgreSQL's idle in
/// transaction timeout of 5 s if that node stopped inside it) and the
/// exchange. Without it a network path that died without a reset would
/// hold the node's audit writer, and every decision waiting on it, until
/// the kernel gave up on the socket (about 15 minutes by default). The
/// next group opens a new connection.
const AUDIT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound of a group's commit, longer: a healthy server may hold a
/// `COMMIT` while a synchronous standby catches up, or a slow disk syncs,
/// and a commit that goes unanswered stops the writer until a restart
/// (its outcome is unknown).
const AUDIT_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `tokio-postgres` tries each address of the host.
const CONNECT_TIMEOUT_PER_ADDRESS: Duration = Duration::from_secs(10);

/// The bound of opening the audit connection: longer than
/// [`CONNECT_TIMEOUT_PER_ADDRESS`], so a host with a second address is
/// tried on it, and it covers the name's lookup, the login and preparing
/// the statements.
const AUDIT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A call that went past its bound.
fn unanswered(bound: Duration) -> StoreError {
    StoreError::Backend(format!(
        "the audit connection did not answer within {} s; it is dropped",
        bound.as_secs()
    ))
}

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

/// How the audit connection reaches the database: as the store's pool
/// does (host or socket, port, user, password, database, options, TLS
/// mode), from the same options.
#[derive(Clone)]
pub(crate) struct AuditTarget(pub(crate) PgConnectOptions);

impl std::fmt::Debug for AuditTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTarget")
            .field("host", &self.0.get_host())
            .field("port", &self.0.get_port())
            .finish_non_exhaustive()
    }
}

impl AuditTarget {
    /// The same target, in `tokio-postgres`' terms. Without a
    /// TLS implementation, as the pool's: `require` and stronger modes fail
    /// to connect rather than go without.
    pub(crate) fn config(&self, application: &str) -> tokio_postgres::Config {
        use sqlx::postgres::PgSslMode;
        use tokio_postgres::config::SslMode;
        let o = &self.0;
        let mut c = tokio_postgres::Config::new();
        match o.get_socket() {
            Some(dir) => c.host_path(dir),
            None => c.host(o.get_host()),
        };
        c.port(o.get_port())
            .user(o.get_username())
            .application_name(application)
            .ssl_mode(match o.get_ssl_mode() {
                PgSslMode::Disable => SslMode::Disable,
                PgSslMode::Allow | PgSslMode::Prefer => SslMode::Prefer,
                PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => {
                    SslMode::Require
                }
            })
            .connect_timeout(CONNECT_TIMEOUT_PER_ADDRESS);
        if let Some(db) = o.get_database() {
            c.dbname(db);
        }
        if let Some(options) = o.get_options() {
            c.options(options);
        }
        // The password the pool uses, wherever it came from (the URL,
        // `PGPASSWORD`, a password file): sqlx has no getter for it but
        // the URL it writes its options back to.
        // Written from a copy with a plain host and user: sqlx writes the
        // URL without encoding them, and panics on a host that is a
        // socket's directory (`PGHOST=/run/postgresql`, a URL without a
        // host). The password was resolved when the options were made.
        let url = sqlx::ConnectOptions::to_url_lossy(&o.clone().host("h").username("u"));
        if let Some(p) = url.password() {
            c.password(percent_encoding::percent_decode_str(p).collect::<Vec<u8>>());
        }
        c
    }

    /// A new client, named `application` in `pg_stat_activity`, its
    /// connection's task spawned on the runtime this runs on (it ends when
    /// the client is dropped, the connection closes, or that runtime
    /// stops).
    pub(crate) async fn client(&self, application: &str) -> Result<Client, StoreError> {
        let (client, connection) = self.config(application).connect(NoTls).await.map_err(db)?;
        let application = application.to_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, application, "a PostgreSQL connection closed");
            }
        });
        Ok(client)
    }
}

/// A `tokio-postgres` error as the store's, with the server's message.
pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Backend(format!(
            "{}: {} ({})",
            d.severity(),
            d.message(),
            d.code().code()
        )),
        None => StoreError::Backend(match std::error::Error::source(&e) {
            Some(why) => format!("{e}: {why}"),
            None => e.to_string(),
        }),
    }
}

impl crate::rows::Columns for tokio_postgres::Row {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.try_get(column).map_err(db)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(db)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.try_get(column).map_err(db)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(db)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        self.try_get(column).map_err(db)
    }
}

/// Awaits `calls` together, each polled first in the order given, and
/// answers every result, or the first error in that order.
/// `tokio-postgres` sends a request when its future is first polled, so
/// the requests go out in this order, one after another, before any
/// answer is awaited (a pipeline: the server runs them in turn, and the
/// batch waits for one round trip instead of one per statement).
///
/// INVARIANT: a call that is done on its first poll with an error was
/// never sent (its parameters could not be encoded, or the connection is
/// closed), and the calls after it are then dropped unsent: a `COMMIT`
/// never follows a write that did not reach the server, nor a count a
/// `BEGIN` that did not. The calls sent before it are still awaited.
async fn pipelined<T, E>(calls: Vec<Boxed<'_, T, E>>) -> Result<Vec<T>, E> {
    pipelined_at(calls).await.map_err(|f| f.error)
}

/// Where a [`pipelined_at`] batch failed.
struct Failed<E> {
    /// The first call (in order) that failed.
    at: usize,
    /// Whether every call was sent.
    all_sent: bool,
    error: E,
}

/// [`pipelined`], saying which call failed first, and whether every call
/// was sent.
async fn pipelined_at<T, E>(mut calls: Vec<Boxed<'_, T, E>>) -> Result<Vec<T>, Failed<E>> {
    use std::task::Poll;
    let mut done: Vec<Option<Result<T, E>>> = calls.iter().map(|_| None).collect();
    let mut sent = 0;
    let mut stopped = false;
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (i, (call, slot)) in calls.iter_mut().zip(done.iter_mut()).enumerate() {
            if slot.is_some() {
                continue;
            }
            let first = i >= sent;
            if first {
                if stopped {
                    break;
                }
                sent = i + 1;
            }
            match call.as_mut().poll(cx) {
                Poll::Ready(v) => {
                    stopped |= first && v.is_err();
                    *slot = Some(v);
                }
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    let all_sent = !stopped;
    let mut out = Vec::with_capacity(done.len());
    for (at, v) in done.into_iter().enumerate() {
        let Some(v) = v else { continue };
        out.push(v.map_err(|error| Failed {
            at,
            all_sent,
            error,
        })?);
    }
    Ok(out)
}

/// The PostgreSQL [`AuditSink`]: its connection, and what the open group
/// has appended but not yet written.
pub(crate) struct PgAuditSink {
    /// `None` once a call panicked or could not be run: the connection's
    /// state is unknown, and every call after it fails until the next
    /// group opens on a new connection.
    conn: Option<Conn>,
    /// What a new connection is opened with, and named.
    target: AuditTarget,
    name: String,
    lock: i64,
    /// Appended in the open group, not yet written.
    pending: Pending,
    /// When the connection last answered a call.
    answered: Option<std::time::Instant>,
}

impl std::fmt::Debug for PgAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditSink")
            .field("open", &self.conn.is_some())
            .field("pending", &self.pending)
            .finish()
    }
}

/// The connection and the runtime its socket is registered with (and its
/// `tokio-postgres` connection task spawned on), which the calling thread
/// drives for the length of each call.
struct Conn {
    rt: tokio::runtime::Runtime,
    worker: Worker,
}

impl Conn {
    fn open(target: AuditTarget, lock: i64, name: String) -> Result<Self, StoreError> {
        off_runtime(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    StoreError::Backend(format!("cannot start the audit connection's runtime: {e}"))
                })?;
            let connected = rt
                .block_on(async {
                    tokio::time::timeout(AUDIT_CONNECT_TIMEOUT, connect(&target, &name)).await
                })
                .map_err(|_| unanswered(AUDIT_CONNECT_TIMEOUT))
                .and_then(|c| c);
            let (client, st) = match connected {
                Ok(c) => c,
                Err(e) => {
                    // Without waiting for a name's lookup still under way
                    // on the runtime's blocking thread.
                    rt.shutdown_background();
                    return Err(e);
                }
            };
            Ok(Self {
                rt,
                worker: Worker {
                    client,
                    st,
                    target,
                    name,
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
    /// Connects, as `name` in `pg_stat_activity`; returns once connected
    /// (or failed).
    pub(crate) fn open(target: AuditTarget, lock: i64, name: String) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Some(Conn::open(target.clone(), lock, name.clone())?),
            target,
            name,
            lock,
            pending: Pending::default(),
            answered: Some(std::time::Instant::now()),
        })
    }

    /// Runs `call` on the connection, on this thread where it may block
    /// (see [`off_runtime`]), for at most [`AUDIT_CALL_TIMEOUT`].
    fn run<T: Send>(
        &mut self,
        call: impl AsyncFnOnce(&mut Worker) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        self.run_within(AUDIT_CALL_TIMEOUT, call)
    }

    /// [`Self::run`] for at most `bound`. A call that panics, that could
    /// not be run, or that went past its bound takes the connection with
    /// it: every later call fails until the next [`AuditSink::begin`].
    fn run_within<T: Send>(
        &mut self,
        bound: Duration,
        call: impl AsyncFnOnce(&mut Worker) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let conn = self.conn.as_mut().ok_or_else(gone)?;
        let bounded = off_runtime(|| {
            conn.rt
                .block_on(async { tokio::time::timeout(bound, call(&mut conn.worker)).await })
        })
        .and_then(|answered| answered.map_err(|_| unanswered(bound)));
        match bounded {
            Ok(v) => {
                if v.is_ok() {
                    self.answered = Some(std::time::Instant::now());
                }
                v
            }
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
            let v = w.write(&pending).await;
            w.watch(v)
        })
    }

    /// Opens a group (see [`Worker::open`]), replacing first a connection
    /// that a failed call discarded: here nothing is open (as
    /// `Worker::open` replaces one that was lost), never in the middle of
    /// a group.
    fn open_group(&mut self, first: First<'_>) -> Result<(ChainHead, Opened), StoreError> {
        self.pending = Pending::default();
        if self.conn.is_none() {
            self.conn = Some(Conn::open(
                self.target.clone(),
                self.lock,
                self.name.clone(),
            )?);
        }
        self.run(async |w: &mut Worker| w.open(first).await)
    }
}

impl Drop for PgAuditSink {
    fn drop(&mut self) {
        // Rolls back what is open and says goodbye, where blocking is
        // allowed; a connection that could not get there is discarded.
        let mut slot = self.conn.take();
        let _ = off_runtime(|| {
            if let Some(Conn { rt, worker }) = slot.take() {
                // Bounded as every call is; past it the connection is
                // dropped unclosed (the server rolls back what was open).
                let _ = rt.block_on(async {
                    tokio::time::timeout(AUDIT_CALL_TIMEOUT, worker.close()).await
                });
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
        self.open_group(First::Nothing).map(|(head, _)| head)
    }

    fn begin_counting(
        &mut self,
        asks: &[CountAsk],
    ) -> Result<(ChainHead, Vec<Allowance>), StoreError> {
        match self.open_group(First::Count(asks))? {
            (head, Opened::Counted(counted)) => Ok((head, counted)),
            (head, _) => Ok((head, Vec::new())),
        }
    }

    fn begin_claiming(
        &mut self,
        claims: &[(&str, UnixTime)],
    ) -> Result<(ChainHead, Vec<bool>), StoreError> {
        match self.open_group(First::Claim(claims, &[]))? {
            (head, Opened::Claimed(taken, _)) => Ok((head, taken)),
            (head, _) => Ok((head, Vec::new())),
        }
    }

    fn begin_claiming_counting(
        &mut self,
        claims: &[(&str, UnixTime)],
        asks: &[CountAsk],
    ) -> Result<crate::ClaimsOpened, StoreError> {
        if asks.iter().any(|a| a.grant.is_some()) {
            return Err(StoreError::Backend(
                "a count through a grant is not made before the claims are known".into(),
            ));
        }
        match self.open_group(First::Claim(claims, asks))? {
            (head, Opened::Claimed(taken, counted)) => Ok((head, taken, counted)),
            (head, _) => Ok((head, Vec::new(), None)),
        }
    }

    fn undo_counts(&mut self) -> Result<(), StoreError> {
        self.run(async |w: &mut Worker| {
            if w.tx != TxState::Open {
                return Err(StoreError::Backend("no audit group is open".into()));
            }
            let v = w
                .client
                .batch_execute("ROLLBACK TO SAVEPOINT counts")
                .await
                .map_err(db);
            w.watch(v)
        })
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
        self.run_within(AUDIT_COMMIT_TIMEOUT, async move |w: &mut Worker| {
            w.write_and_commit(&pending).await
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
            let v = w.claim_all(&[(key, expires)]).await.map(|t| t[0]);
            w.watch(v)
        })
    }

    fn claim_all(&mut self, claims: &[(&str, UnixTime)]) -> Result<Vec<bool>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        self.run(async |w: &mut Worker| {
            let v = w.claim_all(claims).await;
            w.watch(v)
        })
    }

    fn predicts(&self) -> bool {
        true
    }

    fn commit_predicted(&mut self, group: Prediction<'_>) -> Result<PredictedCommit, StoreError> {
        self.pending = Pending::default();
        // Only on a connection that answered a moment ago: one that sat
        // idle may have been closed under it (a server restarted, an idle
        // timeout) without a word, and a batch lost with its `COMMIT`
        // has an unknown outcome, where the usual opening connects again.
        if self.conn.is_none() || self.answered.is_none_or(|t| t.elapsed() > FRESH) {
            return Ok(PredictedCommit::NotSent);
        }
        self.run_within(AUDIT_COMMIT_TIMEOUT, async move |w: &mut Worker| {
            w.commit_predicted(group).await
        })
    }
}

/// What a group's opening exchange does besides `BEGIN`, the lock and the
/// head.
#[derive(Debug, Clone, Copy)]
enum First<'a> {
    Nothing,
    Count(&'a [CountAsk]),
    /// The claims, then (after a savepoint) the counts of these asks, as
    /// if every claim were taken (none through a grant), if any.
    Claim(&'a [(&'a str, UnixTime)], &'a [CountAsk]),
}

/// What came back of [`First`].
#[derive(Debug)]
enum Opened {
    Nothing,
    Counted(Vec<Allowance>),
    Claimed(Vec<bool>, Option<Vec<Allowance>>),
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

const NOT_COUNTED: &str = "SELECT state, expires_at FROM missions WHERE id = $1";

const HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

/// Every claim in one statement (`$1` keys, `$2` their expiry, `$3` now):
/// the keys it inserted (or took over from an expired claim) come back;
/// the others were replays.
const CLAIM_ALL: &str = "INSERT INTO claims (key, expires) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
     ON CONFLICT (key) DO UPDATE SET expires = excluded.expires WHERE claims.expires <= $3 \
     RETURNING key";

/// A group's records, with their filter columns (ADR 0018).
const APPEND: &str = "INSERT INTO audit_events \
     (seq, time, kind, body, hash, mission, principal, agent, action, decision) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])";

/// How recently the audit connection must have answered for a group to
/// be sent on predictions over it.
const FRESH: Duration = Duration::from_secs(1);

/// What `mandate_expect` (migration 0014) raises when a prediction of the
/// writer's did not hold.
const NOT_AS_PREDICTED: &str = "MDP01";

/// A group made on predictions, but for the counts of its earlier rounds,
/// in one statement: the head is the one predicted (`$1`, `$2`; sequence
/// number 0 for an empty log), every claim (`$3`, `$4`; now `$5`) is
/// taken, each mission of the last round (`$6`, `$7`, `$8`) is counted to
/// its predicted count (`$9`); only then are the records (`$10`–`$19`,
/// as [`APPEND`]) and the seal (`$20`, `$21`) written. A prediction that
/// did not hold raises [`NOT_AS_PREDICTED`], and nothing of the statement
/// is kept. Its snapshot is taken after the writers' lock (an earlier
/// statement), as the usual opening's statements' are; its sub-statements
/// run on that one snapshot, so the head is read before the records are
/// added.
const PREDICTED: &str = "WITH head AS (SELECT mandate_expect(COALESCE(\
       (SELECT seq = $1 AND hash = $2 FROM audit_events ORDER BY seq DESC LIMIT 1), \
       $1::bigint = 0), 'the head') AS ok), \
     taken AS (INSERT INTO claims (key, expires) SELECT * FROM UNNEST($3::text[], $4::bigint[]) \
       ON CONFLICT (key) DO UPDATE SET expires = excluded.expires WHERE claims.expires <= $5 \
       RETURNING key), \
     counted AS (UPDATE missions m SET requests_used = m.requests_used + 1 \
       FROM UNNEST($6::text[], $7::bigint[], $8::bigint[]) AS a(id, budget, now) \
       WHERE m.id = a.id AND m.state = 'active' AND m.expires_at > a.now \
         AND m.requests_used < a.budget \
       RETURNING m.id, m.requests_used), \
     held AS (SELECT (SELECT ok FROM head) \
       AND mandate_expect((SELECT count(*) FROM taken) = cardinality($3::text[]), 'the claims') \
       AND mandate_expect((SELECT count(*) FROM counted c \
         JOIN UNNEST($6::text[], $9::bigint[]) AS e(id, n) \
         ON c.id = e.id AND c.requests_used = e.n) = cardinality($6::text[]), 'the counts') \
       AS ok), \
     appended AS (INSERT INTO audit_events \
       (seq, time, kind, body, hash, mission, principal, agent, action, decision) \
       SELECT r.* FROM UNNEST($10::bigint[], $11::bigint[], $12::text[], $13::text[], \
         $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[]) AS r, \
       held WHERE held.ok) \
     INSERT INTO audit_seal (id, seq, token) SELECT 1, $20, $21 FROM held WHERE held.ok \
     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, token = excluded.token";

/// The seal's one row, replaced by each commit (`VALUES` between the two).
const SEAL: &str = "INSERT INTO audit_seal (id, seq, token)";
const SEAL_REPLACES: &str =
    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, token = excluded.token";

/// The writer's statements, prepared once per connection, so each later
/// use is one message and no round trip of its own to prepare it.
struct Statements {
    head: Statement,
    count_one: Statement,
    use_grant: Statement,
    count_round: Statement,
    not_counted: Statement,
    claim_all: Statement,
    sweep: Statement,
    append: Statement,
    /// [`APPEND`] and the seal in one statement (the seal's row refers to
    /// no other, so the data-modifying CTE's snapshot does not matter).
    append_sealed: Statement,
    seal: Statement,
    checkpoint: Statement,
    head_seal: Statement,
    records: Statement,
    /// [`PREDICTED`].
    predicted: Statement,
    /// [`COUNT_ROUND`], raising unless each mission (`$1`) was counted to
    /// its predicted count (`$4`): a predicted group's earlier rounds.
    expect_counts: Statement,
}

/// The writer's connection, durable on commit: a server (or role, or
/// database) set to `synchronous_commit = off` would acknowledge a commit
/// before it is on disk, so this session turns it back on. Stronger
/// settings (`remote_write`, `remote_apply`) are kept. Its connection
/// task is spawned on the runtime this runs on, and lives until the
/// client is dropped.
async fn connect(target: &AuditTarget, name: &str) -> Result<(Client, Statements), StoreError> {
    let client = target.client(name).await?;
    let mode: String = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    if mode == "off" {
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(db)?;
    }
    let texts = [
        HEAD.to_owned(),
        COUNT_ONE.to_owned(),
        USE_GRANT.to_owned(),
        COUNT_ROUND.to_owned(),
        NOT_COUNTED.to_owned(),
        CLAIM_ALL.to_owned(),
        SWEEP_CLAIMS.to_owned(),
        APPEND.to_owned(),
        format!("WITH appended AS ({APPEND}) {SEAL} VALUES (1, $11, $12) {SEAL_REPLACES}"),
        format!("{SEAL} VALUES (1, $1, $2) {SEAL_REPLACES}"),
        "INSERT INTO audit_checkpoints (seq, token) VALUES ($1, $2) \
         ON CONFLICT (seq) DO UPDATE SET token = excluded.token"
            .to_owned(),
        "SELECT token FROM audit_seal WHERE id = 1".to_owned(),
        "SELECT seq, time, kind, body, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
            .to_owned(),
        PREDICTED.to_owned(),
        format!(
            "WITH counted AS ({COUNT_ROUND}) SELECT mandate_expect(\
             (SELECT count(*) FROM counted c JOIN UNNEST($1::text[], $4::bigint[]) AS e(id, n) \
             ON c.id = e.id AND c.requests_used = e.n) = cardinality($1::text[]), 'the counts')"
        ),
    ];
    let mut prepared = pipelined(
        texts
            .iter()
            .map(|t| {
                // The sweep's `$1 - 60` would be taken for an `integer`.
                let types: &[Type] = if *t == SWEEP_CLAIMS {
                    &[Type::INT8]
                } else {
                    &[]
                };
                Box::pin(client.prepare_typed(t, types))
                    as Boxed<'_, Statement, tokio_postgres::Error>
            })
            .collect(),
    )
    .await
    .map_err(db)?
    .into_iter();
    let mut next = || {
        prepared
            .next()
            .ok_or_else(|| StoreError::Backend("a statement was not prepared".into()))
    };
    let st = Statements {
        head: next()?,
        count_one: next()?,
        use_grant: next()?,
        count_round: next()?,
        not_counted: next()?,
        claim_all: next()?,
        sweep: next()?,
        append: next()?,
        append_sealed: next()?,
        seal: next()?,
        checkpoint: next()?,
        head_seal: next()?,
        records: next()?,
        predicted: next()?,
        expect_counts: next()?,
    };
    Ok((client, st))
}

/// A call for [`pipelined`].
type Boxed<'a, T, E> = std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;
type Call<'a, T> = Boxed<'a, T, StoreError>;

/// A statement's parameter, owned by its call.
type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

fn param<'a>(v: impl ToSql + Sync + Send + 'a) -> Param<'a> {
    Box::new(v)
}

/// What one pipelined call answered.
enum Answer {
    Done,
    Rows(Vec<tokio_postgres::Row>),
}

fn rows<'a>(c: &'a Client, st: &'a Statement, params: Vec<Param<'a>>) -> Call<'a, Answer> {
    Box::pin(async move {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        c.query(st, &refs).await.map(Answer::Rows).map_err(db)
    })
}

/// A statement whose answer is only whether it ran, with the driver's
/// error (its SQLSTATE kept).
fn sent<'a>(
    c: &'a Client,
    st: &'a Statement,
    params: Vec<Param<'a>>,
) -> Boxed<'a, (), tokio_postgres::Error> {
    Box::pin(async move {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        c.execute(st, &refs).await.map(|_| ())
    })
}

fn exec<'a>(c: &'a Client, st: &'a Statement, params: Vec<Param<'a>>) -> Call<'a, Answer> {
    let call = sent(c, st, params);
    Box::pin(async move { call.await.map(|()| Answer::Done).map_err(db) })
}

fn batch<'a>(c: &'a Client, sql: String) -> Call<'a, Answer> {
    Box::pin(async move {
        c.batch_execute(&sql)
            .await
            .map(|()| Answer::Done)
            .map_err(db)
    })
}

impl Answer {
    fn rows(self) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        match self {
            Answer::Rows(r) => Ok(r),
            _ => Err(StoreError::Backend("a statement answered no rows".into())),
        }
    }
}

fn head_of(rows: &[tokio_postgres::Row]) -> Result<ChainHead, StoreError> {
    Ok(match rows.first() {
        None => ChainHead::genesis(),
        Some(r) => ChainHead {
            seq: u64::try_from(r.int("seq")?).unwrap_or(0),
            hash: r.text("hash")?,
        },
    })
}

/// The connection and the state of its transaction.
struct Worker {
    client: Client,
    st: Statements,
    target: AuditTarget,
    name: String,
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
        let rows = self.client.query(&self.st.head, &[]).await.map_err(db)?;
        head_of(&rows)
    }

    /// Opens the group's transaction, takes the writers' lock, reads the
    /// head, and does `first`, all in one exchange.
    async fn open(&mut self, first: First<'_>) -> Result<(ChainHead, Opened), StoreError> {
        if self.tx != TxState::None {
            return Err(StoreError::Conflict(
                "an audit group is already open on this connection".into(),
            ));
        }
        let opened = match self.opening(first).await {
            Ok(v) => v,
            Err(_) => {
                // Nothing is in flight: whatever began is rolled back, and a
                // connection lost since the last group is replaced, once.
                if self.client.batch_execute("ROLLBACK").await.is_err() {
                    let (client, st) = connect(&self.target, &self.name).await?;
                    self.client = client;
                    self.st = st;
                }
                match self.opening(first).await {
                    Ok(v) => v,
                    Err(e) => {
                        self.tx = TxState::Open;
                        self.rollback().await;
                        return Err(e);
                    }
                }
            }
        };
        self.tx = TxState::Open;
        self.next = Some(opened.0.seq + 1);
        Ok(opened)
    }

    /// The opening exchange. INVARIANT: the lock is taken before the head
    /// is read (each statement reads its own snapshot in READ COMMITTED,
    /// which the transaction names whatever the server's default is), so
    /// the head stays the head until this transaction ends, whichever node
    /// appends next; the counts and claims follow in the same transaction.
    /// The statements are sent together and run in turn; a failed one
    /// aborts the transaction, so those after it fail too.
    async fn opening(&mut self, first: First<'_>) -> Result<(ChainHead, Opened), StoreError> {
        // Counts through a grant are made one by one, with savepoints,
        // after the opening (a grant's use and its budget unit are kept or
        // undone together).
        let one_by_one =
            matches!(first, First::Count(asks) if asks.iter().any(|a| a.grant.is_some()));
        let c = &self.client;
        let mut calls: Vec<Call<'_, Answer>> = vec![
            // The key is a number: it needs no quoting.
            batch(
                c,
                format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
                    self.lock
                ),
            ),
            rows(c, &self.st.head, Vec::new()),
        ];
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut keys: Vec<&str> = Vec::new();
        let mut swept = false;
        match first {
            First::Count(asks) if !one_by_one => {
                rounds = count_rounds(asks);
                for round in &rounds {
                    calls.push(count_round(c, &self.st.count_round, asks, round));
                }
            }
            First::Claim(claims, asks) => {
                let now = SystemClock.now();
                if self.sweep.due(now) {
                    swept = true;
                    calls.push(exec(c, &self.st.sweep, vec![param(secs(now))]));
                }
                let expires: Vec<i64> = claims.iter().map(|&(_, e)| secs(e)).collect();
                keys = claims.iter().map(|&(k, _)| k).collect();
                let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
                calls.push(rows(
                    c,
                    &self.st.claim_all,
                    vec![param(owned), param(expires), param(secs(now))],
                ));
                // The counts as if every claim were taken, undone to the
                // savepoint by the writer if one was not.
                if !asks.is_empty() {
                    calls.push(batch(c, "SAVEPOINT counts".to_owned()));
                    rounds = count_rounds(asks);
                    for round in &rounds {
                        calls.push(count_round(c, &self.st.count_round, asks, round));
                    }
                }
            }
            _ => {}
        }
        let mut answers = pipelined(calls).await?.into_iter();
        let mut answer = || {
            answers
                .next()
                .ok_or_else(|| StoreError::Backend("a statement went unanswered".into()))
        };
        answer()?;
        let head = head_of(&answer()?.rows()?)?;
        let opened = match first {
            First::Count(asks) if one_by_one => {
                let mut out = Vec::with_capacity(asks.len());
                for a in asks {
                    out.push(
                        self.count(&a.mission, a.budget, a.grant.as_deref(), a.now)
                            .await?,
                    );
                }
                Opened::Counted(out)
            }
            First::Count(asks) => {
                let mut counted = Vec::with_capacity(rounds.len());
                for _ in &rounds {
                    counted.push(answer()?.rows()?);
                }
                Opened::Counted(self.counted(asks, &rounds, counted).await?)
            }
            First::Claim(_, asks) => {
                if swept {
                    answer()?;
                }
                let taken: std::collections::HashSet<String> = answer()?
                    .rows()?
                    .iter()
                    .map(|r| r.text("key"))
                    .collect::<Result<_, _>>()?;
                let taken = keys.iter().map(|k| taken.contains(*k)).collect();
                if asks.is_empty() {
                    Opened::Claimed(taken, None)
                } else {
                    answer()?;
                    let mut counted = Vec::with_capacity(rounds.len());
                    for _ in &rounds {
                        counted.push(answer()?.rows()?);
                    }
                    Opened::Claimed(taken, Some(self.counted(asks, &rounds, counted).await?))
                }
            }
            First::Nothing => Opened::Nothing,
        };
        Ok((head, opened))
    }

    async fn count_budget(
        &mut self,
        id: &MissionId,
        budget: u64,
        now: UnixTime,
    ) -> Result<Option<u64>, StoreError> {
        let row = self
            .client
            .query_opt(
                &self.st.count_one,
                &[&id.as_str(), &int(budget), &secs(now)],
            )
            .await
            .map_err(db)?;
        row.map(|r| Ok(u64::try_from(r.int("requests_used")?).unwrap_or(0)))
            .transpose()
    }

    /// Why a mission's budget could not be counted.
    async fn not_counted(
        &mut self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Allowance, StoreError> {
        let row = self
            .client
            .query_opt(&self.st.not_counted, &[&id.as_str()])
            .await
            .map_err(db)?;
        Ok(match row {
            Some(r) if r.text("state")? == "active" && r.int("expires_at")? > secs(now) => {
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
        self.client
            .batch_execute("SAVEPOINT allowance")
            .await
            .map_err(db)?;
        let uses = self
            .client
            .execute(&self.st.use_grant, &[&g, &id.as_str(), &secs(now)])
            .await
            .map_err(db)?;
        if uses == 0 {
            self.client
                .batch_execute("RELEASE SAVEPOINT allowance")
                .await
                .map_err(db)?;
            return Ok(Allowance::GrantUnavailable);
        }
        if let Some(n) = self.count_budget(id, budget, now).await? {
            self.client
                .batch_execute("RELEASE SAVEPOINT allowance")
                .await
                .map_err(db)?;
            return Ok(Allowance::Counted(n));
        }
        self.client
            .batch_execute("ROLLBACK TO SAVEPOINT allowance; RELEASE SAVEPOINT allowance")
            .await
            .map_err(db)?;
        self.not_counted(id, now).await
    }

    /// Counts `asks` in order, as [`Self::count`] on each in turn would.
    /// Without grants, in rounds of one statement each ([`count_rounds`]),
    /// sent together; an ask that allows through a grant has each ask
    /// counted in turn.
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
        let rounds = count_rounds(asks);
        let c = &self.client;
        let calls: Vec<Call<'_, Answer>> = rounds
            .iter()
            .map(|round| count_round(c, &self.st.count_round, asks, round))
            .collect();
        let counted = pipelined(calls)
            .await?
            .into_iter()
            .map(Answer::rows)
            .collect::<Result<Vec<_>, _>>()?;
        self.counted(asks, &rounds, counted).await
    }

    /// Each ask's allowance from its round's rows: counted, or (its
    /// mission's row not updated) why not.
    async fn counted(
        &mut self,
        asks: &[CountAsk],
        rounds: &[Vec<usize>],
        counted: Vec<Vec<tokio_postgres::Row>>,
    ) -> Result<Vec<Allowance>, StoreError> {
        let mut out: Vec<Option<Allowance>> = vec![None; asks.len()];
        for (round, rows) in rounds.iter().zip(counted) {
            let counted: std::collections::HashMap<String, i64> = rows
                .iter()
                .map(|r| Ok((r.text("id")?, r.int("requests_used")?)))
                .collect::<Result<_, StoreError>>()?;
            for &i in round {
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

    /// The statement that writes `pending` (see [`write_params`]).
    fn write_call(&self, params: Option<(Write, Vec<Param<'static>>)>) -> Option<Call<'_, Answer>> {
        params.map(|(what, params)| {
            let st = match what {
                Write::Seal => &self.st.seal,
                Write::Records => &self.st.append,
                Write::Sealed => &self.st.append_sealed,
            };
            exec(&self.client, st, params)
        })
    }

    /// Appends the group's records and stores its seal, in one statement.
    async fn write(&mut self, pending: &Pending) -> Result<(), StoreError> {
        let Some(call) = self.write_call(write_params(self.next, pending)?) else {
            return Ok(());
        };
        call.await?;
        self.next = self.next.map(|n| n + pending.records.len() as u64);
        Ok(())
    }

    /// Writes what is pending and commits, sent together: one exchange.
    /// A failed write aborts the transaction, and PostgreSQL answers the
    /// `COMMIT` after it by rolling back: the write's error fails the
    /// commit. With nothing to write, a `SELECT 1` goes before the
    /// `COMMIT` for the same reason: it fails in a transaction that a
    /// statement this sink did not see fail has aborted.
    async fn write_and_commit(&mut self, pending: &Pending) -> Result<(), StoreError> {
        match self.tx {
            TxState::None => {
                self.next = None;
                return Err(StoreError::Conflict("no audit group is open".into()));
            }
            TxState::Failed => {
                self.next = None;
                self.rollback().await;
                return Err(StoreError::Backend(
                    "the audit group failed and was rolled back".into(),
                ));
            }
            TxState::Open => {}
        }
        let written = match write_params(self.next, pending) {
            Ok(w) => self.write_call(w),
            Err(e) => {
                self.next = None;
                self.tx = TxState::Failed;
                self.rollback().await;
                return Err(e);
            }
        };
        // `synchronous_commit` is at least `on` (see `connect`): durable
        // on return.
        let first = written.unwrap_or_else(|| batch(&self.client, "SELECT 1".to_owned()));
        let commit = batch(&self.client, "COMMIT".to_owned());
        let done = pipelined(vec![first, commit]).await;
        self.next = None;
        self.tx = TxState::None;
        if done.is_err() {
            // Whatever is left of the transaction (the `COMMIT` may not
            // have been sent) is undone; after a `COMMIT` that rolled
            // back, this is a no-op.
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        done.map(|_| ())
    }

    /// Sends `group` whole, with its commit, in one exchange: `BEGIN` and
    /// the writers' lock; the claim sweep when due; the counts' guards of
    /// every round but the last; the group's statement ([`PREDICTED`]:
    /// the guards of the head, the claims and the last round, then the
    /// records with their seal); `COMMIT`. A guard that finds its
    /// prediction wrong raises
    /// [`NOT_AS_PREDICTED`], which aborts the transaction, and the
    /// `COMMIT` after it rolls back. [`PredictedCommit::NotKept`] when
    /// nothing was kept for sure: a statement before the `COMMIT` was
    /// refused by the server (an aborted transaction never commits; a
    /// session the server ended first answers its first statement with
    /// the `FATAL` error), or the batch stopped before the `COMMIT` was
    /// sent. Any other failure leaves the outcome unknown.
    async fn commit_predicted(
        &mut self,
        group: Prediction<'_>,
    ) -> Result<PredictedCommit, StoreError> {
        if self.tx != TxState::None {
            return Ok(PredictedCommit::NotSent);
        }
        let Prediction {
            head,
            claims,
            asks,
            counts,
            records,
            seal,
        } = group;
        let pending = Pending {
            records,
            seal: Some(seal),
        };
        let mut written = match write_params(Some(head.seq + 1), &pending) {
            Ok(Some((Write::Sealed, params))) => params,
            _ => return Ok(PredictedCommit::NotSent),
        };
        let now = SystemClock.now();
        // A lock waited for past the call's bound is given up before the
        // `COMMIT` (SQLSTATE 55P03: nothing kept); waiting on, the batch
        // would go past its bound with its `COMMIT` sent, and the outcome
        // would be unknown.
        let begin = format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {}; \
             SELECT pg_advisory_xact_lock({})",
            AUDIT_CALL_TIMEOUT.as_millis(),
            self.lock
        );
        // Each round's asks, as the count statements take them: the last
        // round goes with the group's statement, the earlier ones before.
        let mut rounds: Vec<[Param<'static>; 4]> = count_rounds(asks)
            .into_iter()
            .map(|round| {
                let mut ids = Vec::with_capacity(round.len());
                let mut budgets = Vec::with_capacity(round.len());
                let mut nows = Vec::with_capacity(round.len());
                let mut expected = Vec::with_capacity(round.len());
                for i in round {
                    let (a, n) = (&asks[i], counts.get(i).copied().unwrap_or(0));
                    ids.push(a.mission.as_str().to_owned());
                    budgets.push(int(a.budget));
                    nows.push(secs(a.now));
                    expected.push(int(n));
                }
                [param(ids), param(budgets), param(nows), param(expected)]
            })
            .collect();
        let last_round = rounds.pop().unwrap_or_else(|| {
            [
                param(Vec::<String>::new()),
                param(Vec::<i64>::new()),
                param(Vec::<i64>::new()),
                param(Vec::<i64>::new()),
            ]
        });
        let (keys, expires): (Vec<String>, Vec<i64>) =
            claims.iter().map(|&(k, e)| (k.to_owned(), secs(e))).unzip();
        let mut params = vec![
            param(int(head.seq)),
            param(head.hash.clone()),
            param(keys),
            param(expires),
            param(secs(now)),
        ];
        params.extend(last_round);
        params.append(&mut written);
        let c = &self.client;
        let mut calls: Vec<Boxed<'_, (), tokio_postgres::Error>> =
            vec![Box::pin(c.batch_execute(&begin))];
        if !claims.is_empty() && self.sweep.due(now) {
            calls.push(sent(c, &self.st.sweep, vec![param(secs(now))]));
        }
        for round in rounds {
            calls.push(sent(c, &self.st.expect_counts, round.into()));
        }
        calls.push(sent(c, &self.st.predicted, params));
        let last = calls.len();
        calls.push(Box::pin(c.batch_execute("COMMIT")));
        let failed = match pipelined_at(calls).await {
            Ok(_) => return Ok(PredictedCommit::Committed),
            Err(f) => f,
        };
        let refused = failed.at < last && failed.error.as_db_error().is_some();
        if !(refused && failed.all_sent) {
            // Undoes whatever is left open (on a lost connection, the
            // next group connects again). A `COMMIT` that was sent after
            // a refused statement was answered by rolling back: nothing
            // is left then.
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        if !failed.all_sent || refused {
            if failed.error.code().map(SqlState::code) == Some(NOT_AS_PREDICTED) {
                tracing::debug!(error = %db(failed.error), "an audit group was not as predicted");
            } else {
                tracing::warn!(error = %db(failed.error), "an audit group made on predictions was refused before its commit");
            }
            return Ok(PredictedCommit::NotKept);
        }
        Err(db(failed.error))
    }

    async fn rollback(&mut self) {
        self.next = None;
        if self.tx != TxState::None {
            let _ = self.client.batch_execute("ROLLBACK").await;
            self.tx = TxState::None;
        }
    }

    async fn add_checkpoint(&mut self, seq: u64, token: &str) -> Result<(), StoreError> {
        self.client
            .execute(&self.st.checkpoint, &[&int(seq), &token])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn head_seal(&mut self) -> Result<Option<String>, StoreError> {
        self.client
            .query_opt(&self.st.head_seal, &[])
            .await
            .map_err(db)?
            .map(|r| r.text("token"))
            .transpose()
    }

    async fn records(&mut self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.client
            .query(&self.st.records, &[&int(after), &i64::from(limit)])
            .await
            .map_err(db)?
            .iter()
            .map(audit_from_row)
            .collect()
    }

    /// Every claim in one statement, after the sweep when one is due.
    async fn claim_all(&mut self, claims: &[(&str, UnixTime)]) -> Result<Vec<bool>, StoreError> {
        let now = SystemClock.now();
        if self.sweep.due(now) {
            self.client
                .execute(&self.st.sweep, &[&secs(now)])
                .await
                .map_err(db)?;
        }
        let (keys, expires): (Vec<&str>, Vec<i64>) =
            claims.iter().map(|&(k, e)| (k, secs(e))).unzip();
        // INVARIANT: the keys are distinct (one row is never affected
        // twice) and ON CONFLICT never raises, so the group goes on.
        let taken: std::collections::HashSet<String> = self
            .client
            .query(&self.st.claim_all, &[&keys, &expires, &secs(now)])
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.text("key"))
            .collect::<Result<_, _>>()?;
        Ok(keys.iter().map(|k| taken.contains(*k)).collect())
    }

    async fn close(mut self) {
        self.rollback().await;
    }
}

/// Which statement writes what is pending.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// The seal alone.
    Seal,
    Records,
    /// The records and the seal, in one statement.
    Sealed,
}

/// What writes `pending` (its records following `next`): the group's
/// records and its seal in one statement, or the seal alone. `None` if
/// nothing is pending.
fn write_params(
    next: Option<u64>,
    pending: &Pending,
) -> Result<Option<(Write, Vec<Param<'static>>)>, StoreError> {
    let Pending { records, seal } = pending;
    if records.is_empty() {
        return Ok(seal
            .as_ref()
            .map(|(seq, token)| (Write::Seal, vec![param(int(*seq)), param(token.clone())])));
    }
    let first =
        next.ok_or_else(|| StoreError::Conflict("audit append without an open group".into()))?;
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
    for (r, next) in records.iter().zip(first..) {
        if r.seq != next {
            return Err(StoreError::Conflict(format!(
                "audit append at {} but the log's next record is {next}",
                r.seq
            )));
        }
        for (column, value) in columns.iter_mut().zip(audit_columns(&r.body)) {
            column.push(value.map(str::to_owned));
        }
        seqs.push(int(r.seq));
        times.push(int(r.time));
        bodies.push(
            serde_jcs::to_string(&r.body)
                .map_err(|e| StoreError::Backend(format!("cannot encode audit body: {e}")))?,
        );
        kinds.push(r.kind.clone());
        hashes.push(r.hash.clone());
    }
    let [mission, principal, agent, action, decision] = columns;
    let mut params: Vec<Param<'static>> = vec![
        param(seqs),
        param(times),
        param(kinds),
        param(bodies),
        param(hashes),
        param(mission),
        param(principal),
        param(agent),
        param(action),
        param(decision),
    ];
    Ok(Some(match seal {
        None => (Write::Records, params),
        Some((seq, token)) => {
            params.push(param(int(*seq)));
            params.push(param(token.clone()));
            (Write::Sealed, params)
        }
    }))
}

/// The [`COUNT_ROUND`] statement of one round of `asks`.
fn count_round<'a>(
    c: &'a Client,
    st: &'a Statement,
    asks: &[CountAsk],
    round: &[usize],
) -> Call<'a, Answer> {
    let ids: Vec<String> = round
        .iter()
        .map(|&i| asks[i].mission.as_str().to_owned())
        .collect();
    let budgets: Vec<i64> = round.iter().map(|&i| int(asks[i].budget)).collect();
    let nows: Vec<i64> = round.iter().map(|&i| secs(asks[i].now)).collect();
    rows(c, st, vec![param(ids), param(budgets), param(nows)])
}

/// `asks` in rounds of one statement each: the first ask of each mission,
/// then the second of each mission that has two, and so on, so each
/// mission's asks are counted in their order (asks of different missions
/// touch different rows, so their order does not matter).
fn count_rounds(asks: &[CountAsk]) -> Vec<Vec<usize>> {
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
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        std::env::var("MANDATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// The audit connection reaches the database as the pool does: its
    /// password (percent-encoded in the URL), user, database, TLS mode
    /// and options, from URLs that `tokio-postgres` itself would refuse.
    #[test]
    fn the_audit_connection_is_configured_as_the_pool_is() {
        use tokio_postgres::config::{Host, SslMode};
        let options: PgConnectOptions =
            "postgres://mandate:p%40ss%2Fw0rd@db.internal:6543/mandate?sslmode=allow&statement-cache-capacity=10"
                .parse()
                .unwrap();
        let c = AuditTarget(options.options([("search_path", "tenant_a")])).config("mandate-audit");
        assert_eq!(c.get_password(), Some(&b"p@ss/w0rd"[..]));
        assert_eq!(c.get_user(), Some("mandate"));
        assert_eq!(c.get_dbname(), Some("mandate"));
        assert_eq!(c.get_hosts(), [Host::Tcp("db.internal".into())]);
        assert_eq!(c.get_ports(), [6543]);
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);
        assert!(c.get_options().unwrap().contains("search_path=tenant_a"));
        let strict: PgConnectOptions = "postgres://u@h/d?sslmode=verify-full".parse().unwrap();
        assert_eq!(
            AuditTarget(strict).config("mandate-audit").get_ssl_mode(),
            SslMode::Require
        );
        // A socket's directory as the host (as `PGHOST` or sqlx's default
        // for a URL without one gives it), and a user with a colon.
        let c = AuditTarget(
            PgConnectOptions::new_without_pgpass()
                .host("/run/postgresql")
                .username("svc:mandate")
                .password("p@ss"),
        )
        .config("mandate-audit");
        assert_eq!(c.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(c.get_user(), Some("svc:mandate"));
        assert!(matches!(c.get_hosts(), [Host::Unix(p)] if p.as_os_str() == "/run/postgresql"));
        let c = AuditTarget(
            PgConnectOptions::new_without_pgpass()
                .host("/run/postgresql")
                .username("svc:mandate"),
        )
        .config("mandate-audit");
        if std::env::var_os("PGPASSWORD").is_none() {
            assert_eq!(c.get_password(), None);
        }
        let socket: PgConnectOptions = "postgres://u@%2Frun%2Fpostgresql/d".parse().unwrap();
        assert!(matches!(
            AuditTarget(socket).config("mandate-audit").get_hosts(),
            [Host::Unix(p)] if p.as_os_str() == "/run/postgresql"
        ));
    }

    /// A call that fails before it is sent (here: a parameter missing) stops
    /// the batch there: the `COMMIT` queued after it is never sent, so
    /// what the transaction did before it is not kept.
    #[tokio::test]
    async fn a_call_that_cannot_be_sent_stops_the_pipeline_before_the_commit() {
        let target = AuditTarget(url().parse().unwrap());
        let (client, connection) = target.config("mandate-audit").connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("CREATE TEMP TABLE pipeline_probe (n bigint)")
            .await
            .unwrap();
        let insert = client
            .prepare("INSERT INTO pipeline_probe VALUES ($1)")
            .await
            .unwrap();
        let done = pipelined(vec![
            batch(&client, "BEGIN".into()),
            exec(&client, &insert, vec![param(1_i64)]),
            exec(&client, &insert, Vec::new()),
            batch(&client, "COMMIT".into()),
        ])
        .await;
        let Err(e) = done else {
            panic!("the batch succeeded")
        };
        assert!(e.to_string().contains("parameters"), "{e}");
        client.batch_execute("ROLLBACK").await.unwrap();
        let n: i64 = client
            .query_one("SELECT count(*) FROM pipeline_probe", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "the insert before the failed call was committed");

        // Sent and answered in order: every answer, the same batch whole.
        let done = pipelined(vec![
            batch(&client, "BEGIN".into()),
            exec(&client, &insert, vec![param(1_i64)]),
            exec(&client, &insert, vec![param(2_i64)]),
            batch(&client, "COMMIT".into()),
        ])
        .await
        .unwrap();
        assert_eq!(done.len(), 4);
        let n: i64 = client
            .query_one("SELECT sum(n)::bigint FROM pipeline_probe", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 3);
    }
}
