//! The PostgreSQL store, for several Mandate nodes sharing one database.
//!
//! Every guarantee of the SQLite store holds across processes:
//! - transactions that read before they write (bootstrap, approvals,
//!   revocations, a mission's end, creations that check liveness) take
//!   one transaction-scoped advisory lock first, the same one the audit
//!   writer takes for its group ([`WRITER_LOCK`]): they serialise as
//!   SQLite's single writer does, across every node, and cannot deadlock
//!   with a group's counts;
//! - single statements that check and change a row at once (a start
//!   token consumed, a vault version bumped) rely on PostgreSQL's row
//!   lock and re-check under READ COMMITTED: of concurrent ones exactly one
//!   matches;
//! - transactions that change an approval, end a mission or revoke
//!   anything also `pg_notify` the other nodes, so the notice is sent iff
//!   the change commits (see [`Change`]).

mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mandate_core::{
    AgentName, ApiTokenId, AuditRecord, ChainHead, EndReason, Mission, MissionId, OsRandom,
    PrincipalName, SecureRandom as _, Thumbprint, TokenHash, UnixTime,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Postgres, Row as _, Transaction};
use tokio::sync::broadcast;

use crate::console::{
    ConsoleSession, StoredPasskey, passkey_from_row, session_from_row, sql as console_sql,
};
use crate::model::{
    Agent, ApiToken, ApprovalFilter, ApprovalRecord, ApprovalStatus, AuditFilter, AuditPage,
    GrantRecord, MissionSnapshot, NewApproval, NewDelegation, NewMission, Principal, Resolution,
    Revocation, RevocationKind, RevocationSummary, VaultRecord, WebhookDelivery,
};
use crate::pg_audit::{AuditTarget, PgAuditSink};
use crate::pg_reads::{ReadStatements, Reads};
use crate::rows::{
    Bind, CLAIM, CheckedBodies, ClaimSweep, Columns, Prefixed, SWEEP_CLAIMS, agent_from_row,
    approval_from_row, audit_find_sql, audit_from_row, audit_mismatch_sql, audit_query_sql,
    cascade_reason, check_start_requirements, corrupt, delegation_refusal, ephemeral_description,
    from_json_text, grant_from_row, int, is_unique_violation, json_text, mission_from_row,
    mission_from_row_with, parent_of, principal_from_row, revocation_from_row, secs, start_refusal,
    token_from_row, typed, vault_from_row, webhook_from_row,
};
use crate::{
    ApprovalError, AuditSink, Change, DelegateError, MemoryDeleted, MemoryEntry, MemoryWriteError,
    NewMemoryEntry, Note, Promotion, StartError, Store, StoreError,
};

/// How long a pooled connection may sit idle before it is pinged on its
/// way out of the pool.
const POOL_PING_AFTER_IDLE: Duration = Duration::from_secs(1);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The notification channel of a store in the default schema; a store in
/// its own schema uses `mandate_changes:<schema>`, so deployments (and
/// tests) in different schemas of one database do not hear each other.
const CHANNEL: &str = "mandate_changes";

/// Changes a store keeps for a slow subscriber before it lags.
const CHANGES_BUFFERED: usize = 1_024;

/// The advisory lock every writing transaction and every audit group takes
/// first (in the default schema; a schema gets its own key, see
/// [`lock_key`]). One writer at a time, as on SQLite.
pub(crate) const WRITER_LOCK: &str = "mandate.writer";
/// How long a session of the store may sit idle inside a transaction
/// before PostgreSQL ends it (see [`PostgresStore::connect`]). Every
/// transaction of the store runs its statements back to back, for
/// milliseconds.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";
/// The session lock of the process that delivers the webhook outbox.
const OUTBOX_LOCK: &str = "mandate.outbox";

/// A connection's name in `pg_stat_activity`: `what`, and the schema
/// unless it is the default one.
fn named(what: &str, schema: Option<&str>) -> String {
    match schema {
        Some(s) => format!("{what} {s}"),
        None => what.to_owned(),
    }
}

/// A fixed 64-bit key for an advisory lock: FNV-1a of its name.
fn lock_key(name: &str, schema: Option<&str>) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = name.bytes().chain(
        schema
            .into_iter()
            .flat_map(|s| std::iter::once(b':').chain(s.bytes())),
    );
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// PostgreSQL implementation of [`Store`]. Cloning shares the pool and the
/// change listener.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// For the audit sink's own connection.
    options: PgConnectOptions,
    /// Key of the writers' advisory lock (see [`WRITER_LOCK`]).
    writer_lock: i64,
    /// The audit connection's name in `pg_stat_activity`.
    audit_name: String,
    /// Key of the outbox deliverer's session lock, and the connection that
    /// holds it once taken.
    outbox_lock: i64,
    outbox: Arc<tokio::sync::Mutex<Option<PgConnection>>>,
    checked: Arc<CheckedBodies>,
    /// When [`Store::claim`] next deletes expired claims.
    claim_sweep: Arc<std::sync::Mutex<ClaimSweep>>,
    changes: Arc<Changes>,
    /// The decision path's reads, on connections of their own.
    reads: Arc<Reads>,
}

/// Written by hand: the connect options hold the database password.
impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("channel", &self.changes.channel)
            .field("origin", &self.changes.origin)
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

/// This store's side of the change notices.
#[derive(Debug)]
struct Changes {
    channel: String,
    /// Random per store instance: a store skips its own notices.
    origin: String,
    sender: broadcast::Sender<Change>,
    /// The listener task, stopped when the last clone of the store goes.
    listener: tokio::task::AbortHandle,
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connects (a pool) to the database at `url`
    /// (`postgres://user@host:port/db`), runs the migrations, and starts
    /// listening for other nodes' changes. Migrations take PostgreSQL's
    /// advisory lock, so several nodes starting together are safe. Runs in
    /// a Tokio runtime, where the listener stays as a task.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid database URL: {e}")))?;
        Self::start(options, None).await
    }

    /// As [`Self::connect`], with every table in `schema` (created if
    /// missing): every connection's `search_path` is set to it. The name
    /// must be lowercase ASCII letters, digits and `_`, starting with a
    /// letter, at most 40 characters.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        let valid = schema.len() <= 40
            && schema.starts_with(|c: char| c.is_ascii_lowercase())
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !schema.starts_with("pg_");
        if !valid {
            return Err(StoreError::Backend(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and `_`"
            )));
        }
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid database URL: {e}")))?;
        let mut conn = PgConnection::connect_with(&options).await?;
        // The name was checked above: it needs no quoting.
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
        match created {
            Ok(_) => {}
            // Two nodes creating it at once: one wins, the other finds it.
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Self::start(options.options([("search_path", schema)]), Some(schema)).await
    }

    async fn start(options: PgConnectOptions, schema: Option<&str>) -> Result<Self, StoreError> {
        // Migrations on a connection of their own, closed afterwards: the
        // migrator's session lock cannot outlive a failed run on a
        // connection the store goes on using.
        let once = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let migrated = MIGRATOR.run(&once).await;
        // A URL may choose the schema itself (`options=-c search_path=…`):
        // its notices and its lock are then that schema's, as with
        // `connect_in_schema`, so deployments sharing a database keep apart.
        let current: Result<Option<String>, sqlx::Error> =
            sqlx::query_scalar("SELECT current_schema()::text")
                .fetch_one(&once)
                .await;
        once.close().await;
        migrated?;
        let current = current?;
        let schema = schema.or_else(|| current.as_deref().filter(|s| *s != "public"));
        // A node that stops while its transaction holds the writers' lock
        // (a frozen or paused process, a network path that died without a
        // reset) must not stop every other node with it: PostgreSQL ends a
        // session idle this long inside a transaction, which releases its
        // locks. That node's next statement then fails, and its audit
        // writer refuses events until a restart, as after any failed commit.
        let options = options.options([(
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        )]);

        // A connection taken from the pool is pinged only after it sat idle
        // for a while: sqlx's default pings every one (a round trip before
        // each statement of the decision path). One that died since serves
        // one failed statement, which fails closed, and is not kept.
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > POOL_PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options.clone())
            .await?;
        let channel = match schema {
            Some(s) => format!("{CHANNEL}:{s}"),
            None => CHANNEL.to_owned(),
        };
        let mut origin = [0u8; 8];
        OsRandom
            .fill(&mut origin)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let origin: String = origin.iter().map(|b| format!("{b:02x}")).collect();
        // The listener has a pool of its own (one connection, kept open),
        // so it never takes a connection from the store's.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options.clone().application_name("mandate-listener"));
        // Listening before `connect` returns: nothing committed after it is
        // missed.
        let listener = listen(&listen_pool, &channel).await?;
        let (sender, _) = broadcast::channel(CHANGES_BUFFERED);
        let relay = Relay {
            listen_pool,
            pool: pool.clone(),
            channel: channel.clone(),
            origin: origin.clone(),
            sender: sender.clone(),
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Backend("the PostgreSQL store needs a Tokio runtime".into())
        })?;
        let task = runtime.spawn(relay.run(listener));
        // Named with the schema, so an operator (and a test) can tell one
        // deployment's connections from another's on a shared server.
        let reads = Arc::new(Reads::new(
            AuditTarget(options.clone()),
            named("mandate-reads", schema),
            read_statements(),
        ));
        Ok(Self {
            pool,
            options,
            writer_lock: lock_key(WRITER_LOCK, schema),
            audit_name: named("mandate-audit", schema),
            outbox_lock: lock_key(OUTBOX_LOCK, schema),
            outbox: Arc::default(),
            checked: Arc::default(),
            claim_sweep: Arc::default(),
            reads,
            changes: Arc::new(Changes {
                channel,
                origin,
                sender,
                listener: task.abort_handle(),
            }),
        })
    }

    /// A transaction that holds the writers' lock (see the module doc).
    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.writer_lock)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Queues `change` for the other nodes; sent when `tx` commits.
    async fn notify(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        change: &Change,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.changes.channel)
            .bind(encode(&self.changes.origin, change))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Rolls `tx` back now, rather than when its connection is next returned
/// to the pool (the writers' lock is released at once), and returns `r`.
async fn undo<T, E>(tx: Transaction<'static, Postgres>, r: Result<T, E>) -> Result<T, E> {
    // A failed rollback means a broken connection, which the pool drops.
    let _ = tx.rollback().await;
    r
}

/// `<origin> <kind>[ <argument>]`.
fn encode(origin: &str, change: &Change) -> String {
    match change {
        Change::Approval(id) => format!("{origin} approval {id}"),
        Change::Mission(id) => format!("{origin} mission {id}"),
        Change::Revoked => format!("{origin} revoked"),
        Change::Policies => format!("{origin} policies"),
        Change::Lost => format!("{origin} lost"),
    }
}

/// The change in a payload, unless it is this store's own (`origin`) or
/// not understood (ignored: a newer node may send kinds this one does not
/// know).
fn decode(payload: &str, origin: &str) -> Option<Change> {
    let mut parts = payload.splitn(3, ' ');
    let from = parts.next()?;
    if from == origin {
        return None;
    }
    let kind = parts.next()?;
    let arg = parts.next();
    match (kind, arg) {
        ("approval", Some(id)) if !id.is_empty() => Some(Change::Approval(id.to_owned())),
        ("mission", Some(id)) => MissionId::try_from(id.to_owned()).ok().map(Change::Mission),
        ("revoked", None) => Some(Change::Revoked),
        ("policies", None) => Some(Change::Policies),
        ("lost", None) => Some(Change::Lost),
        _ => None,
    }
}

async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// How often the listener's connection is checked: a notice of its own
/// must come back within this long, or the connection is taken as lost
/// (a connection that died silently, with no error, would otherwise miss
/// every notice).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The listener task's parts.
struct Relay {
    /// The listener's own pool (one connection).
    listen_pool: PgPool,
    /// The store's pool, to send heartbeats.
    pool: PgPool,
    channel: String,
    origin: String,
    sender: broadcast::Sender<Change>,
}

impl Relay {
    /// Receives notices and broadcasts the changes; on a lost connection,
    /// reconnects (backing off up to 5 s) and then broadcasts
    /// [`Change::Lost`], so subscribers re-read what a missed notice may
    /// have changed.
    async fn run(self, mut listener: PgListener) {
        let mut beats = 0u64;
        loop {
            self.receive(&mut listener, &mut beats).await;
            drop(listener);
            let mut backoff = Duration::from_millis(50);
            listener = loop {
                tokio::time::sleep(backoff).await;
                match listen(&self.listen_pool, &self.channel).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!("cannot listen for other nodes' changes yet: {e}");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            };
            let _ = self.sender.send(Change::Lost);
        }
    }

    /// Relays notices until the connection is lost.
    async fn receive(&self, listener: &mut PgListener, beats: &mut u64) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The heartbeat sent and not yet received back.
        let mut waiting: Option<String> = None;
        loop {
            tokio::select! {
                // Cancel-safe: a notice is never half read when the tick wins.
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => {
                        if waiting.as_deref() == Some(n.payload()) {
                            waiting = None;
                        } else if let Some(change) = decode(n.payload(), &self.origin) {
                            // No subscriber is not an error.
                            let _ = self.sender.send(change);
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("lost the connection that receives other nodes' changes");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("lost the connection that receives other nodes' changes: {e}");
                        return;
                    }
                },
                _ = tick.tick() => {
                    if waiting.is_some() {
                        tracing::warn!(
                            "the connection that receives other nodes' changes stopped answering"
                        );
                        return;
                    }
                    *beats += 1;
                    let beat = format!("{} heartbeat {beats}", self.origin);
                    let sent = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(&self.channel)
                        .bind(&beat)
                        .execute(&self.pool)
                        .await;
                    // Unsent (the database is away): checked at the next tick.
                    if sent.is_ok() {
                        waiting = Some(beat);
                    }
                }
            }
        }
    }
}

impl Columns for PgRow {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(column)?)
    }
}

/// A mission's live grants, aggregated in `id` order beside its row, with
/// the same conditions as `live_grants` (`$2` is now): the columns, then
/// the join, for a statement that reads the mission as `m`.
const SNAPSHOT_GRANTS: &str = "g.ids AS grant_ids, g.policies AS grant_policies, \
     g.scopes AS grant_scopes, g.digests AS grant_digests, g.creators AS grant_creators";
const SNAPSHOT_JOIN: &str = "LEFT JOIN LATERAL ( \
       SELECT array_agg(id ORDER BY id) AS ids, array_agg(policy ORDER BY id) AS policies, \
         array_agg(scope ORDER BY id) AS scopes, \
         array_agg(request_digest ORDER BY id) AS digests, \
         array_agg(created_by ORDER BY id) AS creators \
       FROM grants WHERE mission_id = m.id AND m.state = 'active' AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2) \
         AND (max_uses IS NULL OR uses < max_uses)) g ON true";

/// The decision path's two reads ([`crate::pg_reads`]): a mission's
/// snapshot (`$1` its id, `$2` now), and the same beside an API token's
/// principal (`$3` the token's hash), in one row, each side `NULL` where
/// nothing matches; the mission is joined only to a live token. The
/// token's columns are prefixed, as `principal_by_token` reads them.
fn read_statements() -> ReadStatements {
    ReadStatements {
        snapshot: format!(
            "SELECT m.*, {SNAPSHOT_GRANTS} FROM missions m {SNAPSHOT_JOIN} WHERE m.id = $1"
        ),
        token_and_snapshot: format!(
            "SELECT p.name AS caller_name, p.role AS caller_role, \
               p.created_at AS caller_created_at, p.revoked_at AS caller_revoked_at, \
               t.id AS caller_token_id, m.*, {SNAPSHOT_GRANTS} \
             FROM (SELECT 1) one \
             LEFT JOIN (api_tokens t JOIN principals p ON p.name = t.principal) \
               ON t.hash = $3 AND t.revoked_at IS NULL AND p.revoked_at IS NULL \
             LEFT JOIN missions m ON m.id = $1 AND t.id IS NOT NULL {SNAPSHOT_JOIN}"
        ),
    }
}

/// A mission's snapshot from a row holding the mission's columns and
/// [`SNAPSHOT_GRANTS`].
fn snapshot_from_row(
    r: &tokio_postgres::Row,
    id: &MissionId,
    checked: &CheckedBodies,
) -> Result<MissionSnapshot, StoreError> {
    let mission = mission_from_row_with(r, Some(checked))?;
    let budget_used = u64::try_from(r.int("requests_used")?).unwrap_or(0);
    let column = |name: &str| -> Result<Vec<Option<String>>, StoreError> {
        Ok(r.try_get::<_, Option<Vec<Option<String>>>>(name)
            .map_err(crate::pg_audit::db)?
            .unwrap_or_default())
    };
    let ids = column("grant_ids")?;
    let policies = column("grant_policies")?;
    let scopes = column("grant_scopes")?;
    let digests = column("grant_digests")?;
    let creators = column("grant_creators")?;
    let n = ids.len();
    if [&policies, &scopes, &digests, &creators]
        .iter()
        .any(|c| c.len() != n)
    {
        return Err(StoreError::Corrupt(format!(
            "mission `{id}`: its grants' columns differ in length"
        )));
    }
    let grants = ids
        .into_iter()
        .zip(policies)
        .zip(scopes)
        .zip(digests)
        .zip(creators)
        .map(|((((id, policy), scope), request_digest), created_by)| {
            let need = |v: Option<String>, what: &str| {
                v.ok_or_else(|| StoreError::Corrupt(format!("a grant without its {what}")))
            };
            Ok(GrantRecord {
                id: need(id, "id")?,
                scope: need(scope, "scope")?
                    .parse()
                    .map_err(|e: String| corrupt("grant scope", e))?,
                policy: need(policy, "policy")?,
                request_digest,
                created_by: need(created_by, "creator")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(MissionSnapshot::new(mission, budget_used, grants))
}

async fn insert_token(
    tx: &mut Transaction<'static, Postgres>,
    t: &ApiToken,
    hash: &TokenHash,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_tokens (id, principal, hash, label, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(t.id.as_str())
        .bind(t.principal.as_str())
        .bind(hash.as_str())
        .bind(&t.label)
        .bind(secs(t.created_at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_revocation(
    tx: &mut Transaction<'static, Postgres>,
    rev: &Revocation,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO revocations (kind, target, reason, revoked_by, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(rev.kind.as_str())
        .bind(&rev.target)
        .bind(&rev.reason)
        .bind(rev.revoked_by.as_str())
        .bind(secs(rev.at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts a mission, ready to start with its start token; `parent` for a
/// delegated child.
async fn insert_mission(
    tx: &mut Transaction<'static, Postgres>,
    m: &NewMission,
    parent: Option<&MissionId>,
) -> Result<(), StoreError> {
    let body = serde_jcs::to_string(&m.body)
        .map_err(|e| StoreError::Backend(format!("cannot encode mission: {e}")))?;
    sqlx::query(
        "INSERT INTO missions (id, principal, agent, body, s256, created_at, expires_at, state, \
         start_token_hash, start_token_expires_at, parent_id, root_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'ready', $8, $9, $10, $11)",
    )
    .bind(m.body.id.as_str())
    .bind(m.body.principal.as_str())
    .bind(m.body.agent.as_str())
    .bind(body)
    .bind(&m.s256)
    .bind(int(m.body.created_at))
    .bind(int(m.body.expires_at))
    .bind(m.start_token.as_str())
    .bind(secs(m.start_token_expires_at))
    .bind(parent.map(MissionId::as_str))
    .bind(m.body.ancestors.first().map(|r| r.id.as_str()))
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("mission `{}` exists already", m.body.id))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// Ends every live mission matched by `sql` (which binds `$1` = now,
/// `$2` = the target and `$3` = who), recording TTL-expired ones as expired.
async fn end_missions(
    tx: &mut Transaction<'static, Postgres>,
    sql: &'static str,
    now: UnixTime,
    target: &str,
    by: &str,
) -> Result<Vec<MissionId>, StoreError> {
    let rows = sqlx::query(sql)
        .bind(secs(now))
        .bind(target)
        .bind(by)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>("id")
                .map_err(StoreError::from)
                .and_then(|s| MissionId::try_from(s).map_err(|e| corrupt("mission id", e)))
        })
        .collect()
}

/// Ends every mission delegated below `roots` (at any depth) that has not
/// ended, with `reason` (or as expired, at its expiry, if its TTL ran out
/// first), each recorded as ended by the root it descends from. Returns
/// their ids.
///
/// INVARIANT: every path that ends a mission calls this with it, in the
/// same transaction, so a live mission always has live ancestors.
async fn end_descendants(
    tx: &mut Transaction<'static, Postgres>,
    roots: &[MissionId],
    reason: EndReason,
    now: UnixTime,
) -> Result<Vec<MissionId>, StoreError> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let roots: Vec<&str> = roots.iter().map(MissionId::as_str).collect();
    let rows = sqlx::query(
        "WITH RECURSIVE below(id, root) AS ( \
             SELECT id, parent_id FROM missions WHERE parent_id = ANY($1::TEXT[]) \
             UNION \
             SELECT m.id, b.root FROM missions m JOIN below b ON m.parent_id = b.id) \
         UPDATE missions m SET state = 'ended', \
             end_reason = CASE WHEN m.expires_at <= $2 THEN 'expired' ELSE $3 END, \
             ended_at = LEAST(m.expires_at, $2), \
             ended_by = 'ancestor ' || b.root || ' ended' \
         FROM (SELECT DISTINCT ON (id) id, root FROM below ORDER BY id, root) b \
         WHERE m.id = b.id AND m.state != 'ended' RETURNING m.id",
    )
    .bind(roots)
    .bind(secs(now))
    .bind(cascade_reason(reason))
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>("id")
                .map_err(StoreError::from)
                .and_then(|s| MissionId::try_from(s).map_err(|e| corrupt("mission id", e)))
        })
        .collect()
}

const END_MISSION_BY_ID: &str = "UPDATE missions SET state = 'ended', \
     end_reason = CASE WHEN expires_at <= $1 THEN 'expired' ELSE 'revoked' END, \
     ended_at = LEAST(expires_at, $1), ended_by = $3 \
     WHERE id = $2 AND state != 'ended' RETURNING id";
const END_MISSIONS_OF_AGENT: &str = "UPDATE missions SET state = 'ended', \
     end_reason = CASE WHEN expires_at <= $1 THEN 'expired' ELSE 'revoked' END, \
     ended_at = LEAST(expires_at, $1), ended_by = $3 \
     WHERE agent = $2 AND state != 'ended' RETURNING id";
const END_MISSIONS_OF_PRINCIPAL: &str = "UPDATE missions SET state = 'ended', \
     end_reason = CASE WHEN expires_at <= $1 THEN 'expired' ELSE 'revoked' END, \
     ended_at = LEAST(expires_at, $1), ended_by = $3 \
     WHERE (principal = $2 OR agent IN (SELECT name FROM agents WHERE owner = $2)) \
       AND state != 'ended' RETURNING id";

/// Approvals with their mission's principal, agent, goal and hash.
macro_rules! approval_select {
    () => {
        "SELECT a.*, m.principal AS m_principal, m.agent AS m_agent, \
         (m.body::json ->> 'goal') AS m_goal, m.s256 AS m_s256 \
         FROM approvals a JOIN missions m ON m.id = a.mission_id"
    };
}
const APPROVAL_BY_ID: &str = concat!(approval_select!(), " WHERE a.id = $1");

#[async_trait]
impl Store for PostgresStore {
    async fn bootstrap_admin(
        &self,
        admin: &Principal,
        token: &ApiToken,
        hash: &TokenHash,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return undo(tx, Ok(false)).await;
        }
        sqlx::query("INSERT INTO principals (name, role, created_at) VALUES ($1, $2, $3)")
            .bind(admin.name.as_str())
            .bind(admin.role.as_str())
            .bind(secs(admin.created_at))
            .execute(&mut *tx)
            .await?;
        insert_token(&mut tx, token, hash).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn create_principal(&self, p: &Principal) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO principals (name, role, created_at) VALUES ($1, $2, $3)")
            .bind(p.name.as_str())
            .bind(p.role.as_str())
            .bind(secs(p.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("principal `{}` already exists", p.name))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn principal(&self, name: &PrincipalName) -> Result<Option<Principal>, StoreError> {
        sqlx::query("SELECT * FROM principals WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(principal_from_row)
            .transpose()
    }

    async fn principals(&self) -> Result<Vec<Principal>, StoreError> {
        sqlx::query("SELECT * FROM principals ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(principal_from_row)
            .collect()
    }

    async fn create_api_token(&self, token: &ApiToken, hash: &TokenHash) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT 1::BIGINT FROM principals WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(token.principal.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            let e = StoreError::NotFound(format!("principal `{}`", token.principal));
            return undo(tx, Err(e)).await;
        }
        insert_token(&mut tx, token, hash).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn principal_by_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(Principal, ApiTokenId)>, StoreError> {
        let row = sqlx::query(
            "SELECT p.*, t.id AS token_id FROM api_tokens t JOIN principals p ON p.name = t.principal \
             WHERE t.hash = $1 AND t.revoked_at IS NULL AND p.revoked_at IS NULL",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                principal_from_row(&r)?,
                ApiTokenId::try_from(r.text("token_id")?).map_err(|e| corrupt("token id", e))?,
            ))
        })
        .transpose()
    }

    async fn api_tokens(&self, principal: &PrincipalName) -> Result<Vec<ApiToken>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens WHERE principal = $1 ORDER BY created_at, id")
            .bind(principal.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_api_token(
        &self,
        id: &ApiTokenId,
        rev: &Revocation,
    ) -> Result<ApiToken, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(secs(rev.at))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("token `{id}`")))?;
        insert_revocation(&mut tx, rev).await?;
        self.notify(&mut tx, &Change::Revoked).await?;
        tx.commit().await?;
        token_from_row(&row)
    }

    async fn create_agent(&self, a: &Agent) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT 1::BIGINT FROM principals WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(a.owner.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            let e = StoreError::NotFound(format!("principal `{}`", a.owner));
            return undo(tx, Err(e)).await;
        }
        let inserted = sqlx::query(
            "INSERT INTO agents (name, owner, description, created_at, attestation) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(a.name.as_str())
        .bind(a.owner.as_str())
        .bind(&a.description)
        .bind(secs(a.created_at))
        .bind(json_text(a.attestation.as_ref())?)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            let e = if is_unique_violation(&e) {
                StoreError::Conflict(format!("agent `{}` already exists", a.name))
            } else {
                e.into()
            };
            return undo(tx, Err(e)).await;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        sqlx::query("SELECT * FROM agents WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(agent_from_row)
            .transpose()
    }

    async fn set_agent_attestation(
        &self,
        name: &AgentName,
        requirement: Option<&mandate_core::AttestationRequirement>,
    ) -> Result<Agent, StoreError> {
        let row = sqlx::query(
            "UPDATE agents SET attestation = $2 WHERE name = $1 AND ephemeral_of IS NULL RETURNING *",
        )
        .bind(name.as_str())
        .bind(json_text(requirement)?)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("agent `{name}`")))?;
        agent_from_row(&row)
    }

    async fn agents(&self, owner: Option<&PrincipalName>) -> Result<Vec<Agent>, StoreError> {
        sqlx::query(
            "SELECT * FROM agents WHERE ephemeral_of IS NULL AND ($1::TEXT IS NULL OR owner = $1) \
             ORDER BY name",
        )
        .bind(owner.map(PrincipalName::as_str))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(agent_from_row)
        .collect()
    }

    async fn live_missions_by_agent(
        &self,
        owner: Option<&PrincipalName>,
        now: UnixTime,
    ) -> Result<Vec<(AgentName, u64)>, StoreError> {
        sqlx::query(
            "SELECT m.agent AS agent, COUNT(*) AS live FROM missions m \
             JOIN agents a ON a.name = m.agent \
             WHERE a.ephemeral_of IS NULL AND ($1::TEXT IS NULL OR a.owner = $1) \
               AND m.state <> 'ended' AND m.expires_at > $2 \
             GROUP BY m.agent ORDER BY m.agent",
        )
        .bind(owner.map(PrincipalName::as_str))
        .bind(secs(now))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                typed(r, "agent", "agent name")?,
                u64::try_from(r.int("live")?).unwrap_or(0),
            ))
        })
        .collect()
    }

    async fn create_mission(&self, m: &NewMission) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        // The agent and principal must still be live when the mission lands;
        // an ephemeral sub-agent exists for its one mission only.
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT 1::BIGINT FROM agents a JOIN principals p ON p.name = $2 \
             WHERE a.name = $1 AND a.revoked_at IS NULL AND a.ephemeral_of IS NULL \
               AND p.revoked_at IS NULL",
        )
        .bind(m.body.agent.as_str())
        .bind(m.body.principal.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            let e = StoreError::NotFound(format!("live agent `{}`", m.body.agent));
            return undo(tx, Err(e)).await;
        }
        insert_mission(&mut tx, m, None).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mission(&self, id: &MissionId) -> Result<Option<Mission>, StoreError> {
        sqlx::query("SELECT * FROM missions WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| mission_from_row_with(&r, Some(&self.checked)))
            .transpose()
    }

    async fn missions(
        &self,
        principal: Option<&PrincipalName>,
        limit: u32,
    ) -> Result<Vec<Mission>, StoreError> {
        sqlx::query("SELECT * FROM missions WHERE $1::TEXT IS NULL OR principal = $1 ORDER BY created_at DESC, id LIMIT $2")
            .bind(principal.map(PrincipalName::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(mission_from_row)
            .collect()
    }

    async fn start_attested(
        &self,
        token: &TokenHash,
        jkt: &Thumbprint,
        now: UnixTime,
        attestation: Option<&mandate_core::Attestation>,
    ) -> Result<Mission, StartError> {
        // INVARIANT: one UPDATE both checks and consumes the token, so of
        // concurrent starts exactly one matches the row. Without evidence
        // it matches only a mission that neither its body nor its agent's
        // registration requires evidence of; the unique index on
        // `attestation_s256` lets one piece of evidence start one mission.
        // With evidence, what the mission and its agent require now is
        // checked again in the same transaction: a requirement changed
        // since the handler checked the evidence still holds.
        // PostgreSQL: the agent's row is share-locked until this commits, so
        // a change to its requirement waits, or was committed before.
        let mut tx = self.pool.begin().await?;
        if let Some(att) = attestation
            && let Some(row) = sqlx::query(
                "SELECT m.body, a.attestation AS agent_attestation FROM missions m \
                 JOIN agents a ON a.name = m.agent WHERE m.start_token_hash = $1 FOR SHARE OF a",
            )
            .bind(token.as_str())
            .fetch_optional(&mut *tx)
            .await?
        {
            check_start_requirements(&row, att)?;
        }
        let started = sqlx::query(
            "UPDATE missions SET state = 'active', jkt = $2, started_at = $3, start_token_used_at = $3, \
               attestation = $4, attestation_s256 = $5, \
               taint = COALESCE(taint, (SELECT p.taint FROM missions p WHERE p.id = missions.parent_id)) \
             WHERE start_token_hash = $1 AND start_token_used_at IS NULL AND state = 'ready' \
               AND start_token_expires_at > $3 AND expires_at > $3 \
               AND ($4 IS NOT NULL OR ((body::jsonb -> 'attestation') IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.name = missions.agent AND a.attestation IS NOT NULL))) \
             RETURNING *",
        )
        .bind(token.as_str())
        .bind(jkt.as_str())
        .bind(secs(now))
        .bind(json_text(attestation)?)
        .bind(attestation.map(|a| a.evidence_s256.as_str()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StartError::AttestationReplayed
            } else {
                e.into()
            }
        })?;
        if let Some(row) = started {
            tx.commit().await?;
            return Ok(mission_from_row(&row)?);
        }
        let row = sqlx::query("SELECT * FROM missions WHERE start_token_hash = $1")
            .bind(token.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StartError::Unknown)?;
        Err(match start_refusal(&row, now)? {
            Some(refusal) => refusal,
            None if attestation.is_none() => StartError::AttestationRequired,
            None => StartError::Unknown,
        })
    }

    async fn mark_taint(
        &self,
        mission: &MissionId,
        labels: &[String],
        via: &str,
        at: UnixTime,
    ) -> Result<Option<mandate_core::Taint>, StoreError> {
        // Read, merge and write in one transaction: two answers read at
        // once both leave their label.
        let mut tx = self.pool.begin().await?;
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT taint FROM missions WHERE id = $1 FOR UPDATE")
                .bind(mission.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("mission `{mission}`")));
        };
        let current: Option<mandate_core::Taint> = from_json_text(current, "mission taint")?;
        if !mandate_core::Taint::adds(current.as_ref(), labels) {
            return Ok(None);
        }
        let next = mandate_core::Taint::merged(current.as_ref(), labels, via, at.0);
        sqlx::query("UPDATE missions SET taint = $2 WHERE id = $1")
            .bind(mission.as_str())
            .bind(json_text(Some(&next))?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(next))
    }

    async fn clear_taint(
        &self,
        mission: &MissionId,
    ) -> Result<Option<mandate_core::Taint>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT taint FROM missions WHERE id = $1 FOR UPDATE")
                .bind(mission.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("mission `{mission}`")));
        };
        sqlx::query("UPDATE missions SET taint = NULL WHERE id = $1")
            .bind(mission.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        from_json_text(current, "mission taint")
    }

    async fn startable(&self, token: &TokenHash, now: UnixTime) -> Result<Mission, StartError> {
        let row = sqlx::query("SELECT * FROM missions WHERE start_token_hash = $1")
            .bind(token.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StartError::Unknown)?;
        match start_refusal(&row, now)? {
            Some(refusal) => Err(refusal),
            None => Ok(mission_from_row(&row)?),
        }
    }

    async fn delegate(&self, d: &NewDelegation) -> Result<(), DelegateError> {
        let child = &d.mission.body;
        let parent = parent_of(d)?;
        // The writers' lock orders this with the audit groups' counts of the
        // parent's budget and with every other delegation, on every node.
        let mut tx = self.write_tx().await?;
        // INVARIANT: one UPDATE checks the parent and carves the child's
        // budget out of what it has left, so delegations (racing or not)
        // never take more than the parent has.
        let carved: Option<i64> = sqlx::query_scalar(
            "UPDATE missions SET requests_used = requests_used + $2 \
             WHERE id = $1 AND state = 'active' AND expires_at > $3 AND jkt = $4 \
               AND requests_used + $2 <= $5 AND s256 = $6 AND principal = $7 AND expires_at >= $8 \
             RETURNING requests_used",
        )
        .bind(parent.id.as_str())
        .bind(int(child.budget.requests))
        .bind(secs(d.now))
        .bind(d.parent_jkt.as_str())
        .bind(int(d.parent_budget))
        .bind(&parent.s256)
        .bind(child.principal.as_str())
        .bind(int(child.expires_at))
        .fetch_optional(&mut *tx)
        .await?;
        if carved.is_none() {
            let row = sqlx::query("SELECT * FROM missions WHERE id = $1")
                .bind(parent.id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let e = delegation_refusal(row.as_ref(), d, parent)?;
            return undo(tx, Err(e)).await;
        }
        if child.agent.is_ephemeral() {
            // Recorded for this one mission; never listed, never the agent
            // of another mission.
            let live: Option<i64> = sqlx::query_scalar(
                "SELECT 1::BIGINT FROM principals WHERE name = $1 AND revoked_at IS NULL",
            )
            .bind(child.principal.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                let e = DelegateError::NoSuchAgent(child.agent.to_string());
                return undo(tx, Err(e)).await;
            }
            let inserted = sqlx::query(
                "INSERT INTO agents (name, owner, description, created_at, ephemeral_of) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(child.agent.as_str())
            .bind(child.principal.as_str())
            .bind(ephemeral_description(&parent.id))
            .bind(secs(d.now))
            .bind(child.id.as_str())
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                let e = if is_unique_violation(&e) {
                    StoreError::Conflict(format!("agent `{}` already exists", child.agent))
                } else {
                    e.into()
                };
                return undo(tx, Err(e.into())).await;
            }
        } else {
            let live: Option<i64> = sqlx::query_scalar(
                "SELECT 1::BIGINT FROM agents a JOIN principals p ON p.name = a.owner \
                 WHERE a.name = $1 AND a.owner = $2 AND a.revoked_at IS NULL \
                   AND a.ephemeral_of IS NULL AND p.revoked_at IS NULL",
            )
            .bind(child.agent.as_str())
            .bind(child.principal.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                let e = DelegateError::NoSuchAgent(child.agent.to_string());
                return undo(tx, Err(e)).await;
            }
        }
        insert_mission(&mut tx, &d.mission, Some(&parent.id)).await?;
        sqlx::query(
            "INSERT INTO delegation_links (child_id, parent_id, link, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(child.id.as_str())
        .bind(parent.id.as_str())
        .bind(&d.link)
        .bind(secs(d.now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delegation_link(&self, child: &MissionId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT link FROM delegation_links WHERE child_id = $1")
                .bind(child.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn mission_tree(&self, root: &MissionId) -> Result<Vec<Mission>, StoreError> {
        sqlx::query(
            "WITH RECURSIVE tree(id, depth) AS ( \
                 SELECT id, 0 FROM missions WHERE id = $1 \
                 UNION ALL \
                 SELECT m.id, t.depth + 1 FROM missions m JOIN tree t ON m.parent_id = t.id) \
             SELECT m.* FROM tree t JOIN missions m ON m.id = t.id \
             ORDER BY t.depth, m.created_at, m.id",
        )
        .bind(root.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| mission_from_row_with(r, Some(&self.checked)))
        .collect()
    }

    async fn end_mission_forgetting(
        &self,
        id: &MissionId,
        reason: EndReason,
        by: &str,
        now: UnixTime,
    ) -> Result<(Mission, Vec<MemoryDeleted>), StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE missions SET state = 'ended', end_reason = $2, ended_at = $3, ended_by = $4 \
             WHERE id = $1 AND state != 'ended' RETURNING *",
        )
        .bind(id.as_str())
        .bind(reason.as_str())
        .bind(secs(now))
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(r) => {
                let ended = mission_from_row(&r)?;
                let below = end_descendants(&mut tx, std::slice::from_ref(id), reason, now).await?;
                for m in std::iter::once(id).chain(&below) {
                    self.notify(&mut tx, &Change::Mission(m.clone())).await?;
                }
                let all: Vec<MissionId> = std::iter::once(id.clone()).chain(below).collect();
                let forgotten = memory::forget(&mut tx, &all).await?;
                tx.commit().await?;
                Ok((ended, forgotten))
            }
            None => {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT 1::BIGINT FROM missions WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                let e = match exists {
                    Some(_) => StoreError::Conflict(format!("mission `{id}` has already ended")),
                    None => StoreError::NotFound(format!("mission `{id}`")),
                };
                undo(tx, Err(e)).await
            }
        }
    }

    async fn record_credential(
        &self,
        jti: &str,
        mission: &MissionId,
        jkt: &Thumbprint,
        iat: UnixTime,
        exp: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO credentials (jti, mission_id, jkt, iat, exp) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(jti)
        .bind(mission.as_str())
        .bind(jkt.as_str())
        .bind(secs(iat))
        .bind(secs(exp))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mission_snapshot(
        &self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Option<MissionSnapshot>, StoreError> {
        // One statement for what three point reads give elsewhere, on the
        // shared read connections (`pg_reads`).
        let Some(r) = self.reads.snapshot(id.as_str(), secs(now)).await? else {
            return Ok(None);
        };
        snapshot_from_row(&r, id, &self.checked).map(Some)
    }

    async fn token_and_snapshot(
        &self,
        hash: &TokenHash,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<(Option<(Principal, ApiTokenId)>, Option<MissionSnapshot>), StoreError> {
        // Both reads in one statement and one row ([`read_statements`]).
        let r = self
            .reads
            .token_and_snapshot(id.as_str(), secs(now), hash.as_str())
            .await?;
        // A token that is not live answers nothing of the mission.
        let Some(token) = r.opt_text("caller_token_id")? else {
            return Ok((None, None));
        };
        let caller = (
            principal_from_row(&Prefixed(&r, "caller_"))?,
            ApiTokenId::try_from(token).map_err(|e| corrupt("token id", e))?,
        );
        let snapshot = match r.opt_text("id")? {
            None => None,
            Some(_) => Some(snapshot_from_row(&r, id, &self.checked)?),
        };
        Ok((Some(caller), snapshot))
    }

    async fn budget_used(&self, id: &MissionId) -> Result<u64, StoreError> {
        let used: Option<i64> =
            sqlx::query_scalar("SELECT requests_used FROM missions WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        used.map(|u| u64::try_from(u).unwrap_or(0))
            .ok_or_else(|| StoreError::NotFound(format!("mission `{id}`")))
    }

    async fn live_grants(
        &self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        sqlx::query(
            "SELECT g.id, g.policy, g.scope, g.request_digest, g.created_by FROM grants g \
             JOIN missions m ON m.id = g.mission_id \
             WHERE g.mission_id = $1 AND m.state = 'active' AND g.revoked_at IS NULL \
               AND (g.expires_at IS NULL OR g.expires_at > $2) \
               AND (g.max_uses IS NULL OR g.uses < g.max_uses) ORDER BY g.id",
        )
        .bind(id.as_str())
        .bind(secs(now))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(grant_from_row)
        .collect()
    }

    async fn open_approval(
        &self,
        a: &NewApproval,
        max_pending: u32,
    ) -> Result<Option<(String, bool)>, StoreError> {
        let mut tx = self.write_tx().await?;
        let existing: Option<String> = sqlx::query_scalar(
            "UPDATE approvals SET hits = hits + 1 \
             WHERE mission_id = $1 AND request_digest = $2 AND status = 'pending' AND expires_at > $3 RETURNING id",
        )
        .bind(a.mission.as_str())
        .bind(&a.request_digest)
        .bind(secs(a.created_at))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            self.notify(&mut tx, &Change::Approval(id.clone())).await?;
            tx.commit().await?;
            return Ok(Some((id, true)));
        }
        let pending: i64 = sqlx::query_scalar(
            // The cap holds for a whole delegation tree: a mission cannot
            // multiply it by delegating children.
            "WITH root AS (SELECT COALESCE(root_id, id) AS id FROM missions WHERE id = $1) \
             SELECT COUNT(*) FROM approvals \
             WHERE status = 'pending' AND expires_at > $2 \
               AND mission_id IN (SELECT id FROM root \
                                  UNION ALL SELECT m.id FROM missions m JOIN root ON m.root_id = root.id)",
        )
        .bind(a.mission.as_str())
        .bind(secs(a.created_at))
        .fetch_one(&mut *tx)
        .await?;
        if pending >= i64::from(max_pending) {
            return undo(tx, Ok(None)).await;
        }
        // A pending one past its expiry no longer blocks a new request.
        let stale: Vec<String> = sqlx::query_scalar(
            "UPDATE approvals SET status = 'expired' \
             WHERE mission_id = $1 AND request_digest = $2 AND status = 'pending' RETURNING id",
        )
        .bind(a.mission.as_str())
        .bind(&a.request_digest)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO approvals (id, mission_id, request_digest, action, resource, context, \
             context_digest, reason_code, policies, status, created_at, expires_at, \
             justification, summary, approvers, step_up, taint) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&a.id)
        .bind(a.mission.as_str())
        .bind(&a.request_digest)
        .bind(&a.action)
        .bind(&a.resource)
        .bind(&a.context)
        .bind(&a.context_digest)
        .bind(&a.reason_code)
        .bind(&a.policies)
        .bind(secs(a.created_at))
        .bind(secs(a.expires_at))
        .bind(&a.justification)
        .bind(&a.summary)
        .bind(serde_json::to_string(&a.approvers).map_err(|e| corrupt("approvers", e))?)
        .bind(i64::from(a.step_up))
        .bind(json_text(a.taint.as_ref())?)
        .execute(&mut *tx)
        .await?;
        for id in stale.iter().chain(std::iter::once(&a.id)) {
            self.notify(&mut tx, &Change::Approval(id.clone())).await?;
        }
        tx.commit().await?;
        Ok(Some((a.id.clone(), false)))
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let row = sqlx::query(APPROVAL_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn approvals(&self, f: &ApprovalFilter) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            approval_select!(),
            " WHERE ($1::TEXT IS NULL OR a.status = $1) \
             AND ($2::TEXT IS NULL OR a.mission_id = $2) \
             AND ($4::TEXT IS NULL \
                  OR EXISTS (SELECT 1 FROM json_array_elements_text(a.approvers::json) v WHERE v = $4) \
                  OR (a.approvers = '[]' AND m.principal = $4)) \
             AND ($5::TEXT IS NULL OR m.principal = $5 \
                  OR EXISTS (SELECT 1 FROM json_array_elements_text(a.approvers::json) v WHERE v = $5)) \
             ORDER BY a.created_at DESC, a.id LIMIT $3"
        ))
        .bind(f.status.map(ApprovalStatus::as_str))
        .bind(f.mission.as_ref().map(MissionId::as_str))
        .bind(i64::from(f.limit))
        .bind(f.decider.as_deref())
        .bind(f.viewer.as_deref())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    async fn pending_approvals(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn resolve_approval_forgetting(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        resolution: &Resolution,
        now: UnixTime,
    ) -> Result<(ApprovalRecord, Vec<MemoryDeleted>), ApprovalError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(APPROVAL_BY_ID)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = row.as_ref().map(approval_from_row).transpose()? else {
            return undo(tx, Err(ApprovalError::NotFound(id.to_owned()))).await;
        };
        if current.status != ApprovalStatus::Pending && current.status != ApprovalStatus::Expired {
            let e = ApprovalError::AlreadyDecided(current.status.as_str());
            return undo(tx, Err(e)).await;
        }
        let active: bool = sqlx::query_scalar(
            "SELECT state = 'active' AND expires_at > $2 FROM missions WHERE id = $1",
        )
        .bind(current.mission.as_str())
        .bind(secs(now))
        .fetch_one(&mut *tx)
        .await?;
        if let Some(e) = current.lapsed(active, now) {
            return undo(tx, Err(e)).await;
        }
        let (status, grant, end) = match resolution {
            Resolution::Approve(g) => ("approved", Some(g), false),
            Resolution::Deny { end_mission } => ("denied", None, *end_mission),
        };
        let updated = sqlx::query(
            "UPDATE approvals SET status = $2, decided_by = $3, decided_at = $4, \
             decision_reason = $5, grant_id = $6, ended_mission = $7 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status)
        .bind(by)
        .bind(secs(now))
        .bind(reason)
        .bind(grant.map(|g| g.id.as_str()))
        .bind(i64::from(end))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return undo(tx, Err(ApprovalError::AlreadyDecided("decided"))).await;
        }
        if let Some(g) = grant {
            sqlx::query(
                "INSERT INTO grants (id, mission_id, policy, created_at, expires_at, max_uses, \
                 scope, request_digest, approval_id, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&g.id)
            .bind(current.mission.as_str())
            .bind(&g.policy)
            .bind(secs(now))
            .bind(g.expires_at.map(secs))
            .bind(g.max_uses.map(int))
            .bind(g.scope.as_str())
            .bind(&g.request_digest)
            .bind(id)
            .bind(by)
            .execute(&mut *tx)
            .await?;
        }
        let mut forgotten = Vec::new();
        if end {
            // Its other pending requests expire with it (the expiry sweep
            // records and announces them); the missions below it end too.
            let mut ended = end_missions(
                &mut tx,
                END_MISSION_BY_ID,
                now,
                current.mission.as_str(),
                by,
            )
            .await?;
            let below = end_descendants(&mut tx, &ended, EndReason::Revoked, now).await?;
            for m in std::iter::once(&current.mission).chain(&below) {
                self.notify(&mut tx, &Change::Mission(m.clone())).await?;
            }
            ended.extend(below);
            forgotten = memory::forget(&mut tx, &ended).await?;
        }
        let row = sqlx::query(APPROVAL_BY_ID)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let decided = approval_from_row(&row)?;
        self.notify(&mut tx, &Change::Approval(id.to_owned()))
            .await?;
        tx.commit().await?;
        Ok((decided, forgotten))
    }

    async fn expire_approvals(&self, now: UnixTime) -> Result<Vec<ApprovalRecord>, StoreError> {
        // Every node sweeps every second, and most sweeps find nothing:
        // they find that out without the writers' lock, which every
        // node's audit groups wait for (and which a node frozen while it
        // waited would hold, once granted, until PostgreSQL ends its idle
        // transaction). What is due is expired under the lock, checked
        // again there.
        macro_rules! due {
            () => {
                "status = 'pending' AND (expires_at <= $1 OR mission_id IN \
                 (SELECT id FROM missions WHERE state != 'active' OR expires_at <= $1))"
            };
        }
        let any: bool = sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM approvals WHERE ",
            due!(),
            ")"
        ))
        .bind(secs(now))
        .fetch_one(&self.pool)
        .await?;
        if !any {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        let ids: Vec<String> = sqlx::query_scalar(concat!(
            "UPDATE approvals SET status = 'expired', decided_at = $1 WHERE ",
            due!(),
            " RETURNING id"
        ))
        .bind(secs(now))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let row = sqlx::query(APPROVAL_BY_ID)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            out.push(approval_from_row(&row)?);
            self.notify(&mut tx, &Change::Approval(id.clone())).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn memory_put(&self, e: &NewMemoryEntry) -> Result<MemoryEntry, MemoryWriteError> {
        self.put_memory(e).await
    }

    async fn memory_get(
        &self,
        mission: &MissionId,
        key: &mandate_core::MemoryKey,
    ) -> Result<Option<MemoryEntry>, StoreError> {
        self.memory_entry(mission, key).await
    }

    async fn memory_list(&self, mission: &MissionId) -> Result<Vec<MemoryEntry>, StoreError> {
        self.memory_entries(mission).await
    }

    async fn memory_delete(
        &self,
        mission: &MissionId,
        key: &mandate_core::MemoryKey,
    ) -> Result<bool, StoreError> {
        self.delete_memory(mission, key).await
    }

    async fn promote_notes(
        &self,
        p: &Promotion,
    ) -> Result<(AgentName, Vec<Note>), MemoryWriteError> {
        self.promote(p).await
    }

    async fn notes(&self, agent: &AgentName) -> Result<Vec<Note>, StoreError> {
        self.agent_notes(agent).await
    }

    async fn note(
        &self,
        agent: &AgentName,
        key: &mandate_core::MemoryKey,
    ) -> Result<Option<Note>, StoreError> {
        self.agent_note(agent, key).await
    }

    async fn sweep_expired_memory(&self, now: UnixTime) -> Result<Vec<MemoryDeleted>, StoreError> {
        self.sweep_memory(now).await
    }

    async fn put_vault_secret(
        &self,
        rec: &VaultRecord,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let changed = match expected_version {
            None => sqlx::query(
                "INSERT INTO vault_secrets (principal, route, kind, version, nonce, ciphertext, \
                 updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (principal, route) DO NOTHING",
            )
            .bind(rec.principal.as_str())
            .bind(&rec.route)
            .bind(&rec.kind)
            .bind(int(rec.version))
            .bind(&rec.nonce)
            .bind(&rec.ciphertext)
            .bind(secs(rec.updated_at))
            .bind(&rec.updated_by),
            Some(expected) => sqlx::query(
                "UPDATE vault_secrets SET kind = $3, version = $4, nonce = $5, ciphertext = $6, \
                 updated_at = $7, updated_by = $8 \
                 WHERE principal = $1 AND route = $2 AND version = $9",
            )
            .bind(rec.principal.as_str())
            .bind(&rec.route)
            .bind(&rec.kind)
            .bind(int(rec.version))
            .bind(&rec.nonce)
            .bind(&rec.ciphertext)
            .bind(secs(rec.updated_at))
            .bind(&rec.updated_by)
            .bind(int(expected)),
        }
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "the secret of `{}` for `{}` changed meanwhile; retry",
                rec.principal, rec.route
            )))
        }
    }

    async fn vault_secret(
        &self,
        principal: &PrincipalName,
        route: &str,
    ) -> Result<Option<VaultRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM vault_secrets WHERE principal = $1 AND route = $2")
            .bind(principal.as_str())
            .bind(route)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(vault_from_row).transpose()
    }

    async fn vault_secrets(&self) -> Result<Vec<VaultRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM vault_secrets ORDER BY route, principal")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(vault_from_row).collect()
    }

    async fn delete_vault_secret(
        &self,
        principal: &PrincipalName,
        route: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM vault_secrets WHERE principal = $1 AND route = $2")
            .bind(principal.as_str())
            .bind(route)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn enqueue_webhook(
        &self,
        event: &str,
        payload: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_outbox (event, payload, created_ms, next_attempt_ms) \
             VALUES ($1, $2, $3, $3)",
        )
        .bind(event)
        .bind(payload)
        .bind(int(now_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending_webhooks(&self, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
        sqlx::query(
            "SELECT id, event, payload, attempts, next_attempt_ms FROM webhook_outbox \
             WHERE state = 'pending' ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(webhook_from_row)
        .collect()
    }

    async fn webhook_attempted(
        &self,
        id: i64,
        delivered: bool,
        retry_at_ms: Option<u64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let state = match (delivered, retry_at_ms) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, state = $2, \
             next_attempt_ms = COALESCE($3, next_attempt_ms), last_error = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(retry_at_ms.map(int))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => ChainHead::genesis(),
            Some(r) => ChainHead {
                seq: u64::try_from(r.int("seq")?).unwrap_or(0),
                hash: r.text("hash")?,
            },
        })
    }

    fn audit_sink(&self) -> Result<Box<dyn AuditSink>, StoreError> {
        Ok(Box::new(PgAuditSink::open(
            AuditTarget(self.options.clone()),
            self.writer_lock,
            self.audit_name.clone(),
        )?))
    }

    async fn audit_records(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(int(after_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM audit_events WHERE seq = $1")
            .bind(int(seq))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(audit_from_row).transpose()
    }

    async fn audit_query(
        &self,
        filter: &AuditFilter,
        page: AuditPage,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let (sql, binds) = audit_query_sql(filter, page, limit, |n| format!("${n}"), false);
        let rows = bound(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_columns_mismatch(&self, through: u64) -> Result<Option<u64>, StoreError> {
        let sql = audit_mismatch_sql("$1", |c| {
            format!(
                "CASE WHEN jsonb_typeof(body::jsonb) = 'object' AND jsonb_typeof(body::jsonb -> '{c}') = 'string' THEN body::jsonb ->> '{c}' END"
            )
        });
        let seq: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(through).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await?;
        Ok(seq.map(|s| u64::try_from(s).unwrap_or(0)))
    }

    async fn audit_find(
        &self,
        kind: &str,
        mission: Option<&str>,
        field: &str,
        value: &str,
    ) -> Result<Option<AuditRecord>, StoreError> {
        // Bodies are stored as RFC 8785 JSON, so a string field appears
        // exactly as `"field":"value"`; the match is confirmed on the parsed
        // body below.
        let (sql, binds) =
            audit_find_sql(kind, mission, field, value, |n| format!("${n}"), "strpos")?;
        let rows = bound(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.pool)
            .await?;
        for r in &rows {
            let rec = audit_from_row(r)?;
            if rec.body.get(field).and_then(|v| v.as_str()) == Some(value) {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    async fn add_checkpoint(&self, seq: u64, token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, token) VALUES ($1, $2) \
             ON CONFLICT (seq) DO UPDATE SET token = excluded.token",
        )
        .bind(int(seq))
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_audit(&self, through: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
            .bind(int(through))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn claim(&self, key: &str, expires: UnixTime, now: UnixTime) -> Result<bool, StoreError> {
        let sweep = self.claim_sweep.lock().is_ok_and(|mut s| s.due(now));
        if sweep {
            sqlx::query(SWEEP_CLAIMS)
                .bind(secs(now))
                .execute(&self.pool)
                .await?;
        }
        // INVARIANT: ON CONFLICT, never a unique violation.
        let n = sqlx::query(CLAIM)
            .bind(key)
            .bind(secs(expires))
            .bind(secs(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn head_seal(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT token FROM audit_seal WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT token FROM audit_checkpoints ORDER BY seq")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn revoke(&self, rev: &Revocation) -> Result<RevocationSummary, StoreError> {
        let mut tx = self.write_tx().await?;
        let by = format!("revocation by {}", rev.revoked_by);
        let mut summary = RevocationSummary::default();
        let exists = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(rev.target.clone());
        match rev.kind {
            RevocationKind::Mission => {
                if exists("SELECT 1::BIGINT FROM missions WHERE id = $1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    let e = StoreError::NotFound(format!("mission `{}`", rev.target));
                    return undo(tx, Err(e)).await;
                }
                summary.missions =
                    end_missions(&mut tx, END_MISSION_BY_ID, rev.at, &rev.target, &by).await?;
            }
            RevocationKind::Agent => {
                if exists("SELECT 1::BIGINT FROM agents WHERE name = $1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    let e = StoreError::NotFound(format!("agent `{}`", rev.target));
                    return undo(tx, Err(e)).await;
                }
                let n = sqlx::query(
                    "UPDATE agents SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
                )
                .bind(secs(rev.at))
                .bind(&rev.target)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    summary.agents.push(
                        rev.target
                            .clone()
                            .try_into()
                            .map_err(|e| corrupt("agent name", e))?,
                    );
                }
                summary.missions =
                    end_missions(&mut tx, END_MISSIONS_OF_AGENT, rev.at, &rev.target, &by).await?;
            }
            RevocationKind::Principal => {
                if exists("SELECT 1::BIGINT FROM principals WHERE name = $1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    let e = StoreError::NotFound(format!("principal `{}`", rev.target));
                    return undo(tx, Err(e)).await;
                }
                // Missions first: the agents' owner link is what finds them.
                summary.missions =
                    end_missions(&mut tx, END_MISSIONS_OF_PRINCIPAL, rev.at, &rev.target, &by)
                        .await?;
                let n = sqlx::query(
                    "UPDATE principals SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
                )
                .bind(secs(rev.at))
                .bind(&rev.target)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    summary.principals.push(
                        rev.target
                            .clone()
                            .try_into()
                            .map_err(|e| corrupt("principal name", e))?,
                    );
                }
                summary.tokens = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE principal = $2 AND revoked_at IS NULL")
                    .bind(secs(rev.at))
                    .bind(&rev.target)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let agents = sqlx::query(
                    "UPDATE agents SET revoked_at = $1 WHERE owner = $2 AND revoked_at IS NULL RETURNING name",
                )
                .bind(secs(rev.at))
                .bind(&rev.target)
                .fetch_all(&mut *tx)
                .await?;
                for a in &agents {
                    let name: String = a.try_get("name")?;
                    summary
                        .agents
                        .push(AgentName::try_from(name).map_err(|e| corrupt("agent name", e))?);
                }
            }
            RevocationKind::Token => {
                let e = StoreError::Conflict("tokens are revoked with revoke_api_token".into());
                return undo(tx, Err(e)).await;
            }
        }
        // The missions delegated below those it ended end with them.
        let below = end_descendants(&mut tx, &summary.missions, EndReason::Revoked, rev.at).await?;
        summary.missions.extend(below);
        summary.memory = memory::forget(&mut tx, &summary.missions).await?;
        insert_revocation(&mut tx, rev).await?;
        self.notify(&mut tx, &Change::Revoked).await?;
        tx.commit().await?;
        summary.missions.sort();
        summary.agents.sort();
        Ok(summary)
    }

    async fn revocations(&self, limit: u32) -> Result<Vec<Revocation>, StoreError> {
        sqlx::query("SELECT * FROM revocations ORDER BY seq DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(revocation_from_row)
            .collect()
    }

    async fn add_passkey(&self, p: &StoredPasskey) -> Result<(), StoreError> {
        let r = sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::ADD_PASSKEY,
        )))
        .bind(&p.cred_id)
        .bind(p.principal.as_str())
        .bind(&p.passkey)
        .bind(secs(p.created_at))
        .execute(&self.pool)
        .await;
        match r {
            Ok(done) if done.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(StoreError::NotFound(format!("principal `{}`", p.principal))),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
                "this passkey is registered already".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn passkeys(&self, principal: &PrincipalName) -> Result<Vec<StoredPasskey>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(console_sql::PASSKEYS)))
            .bind(principal.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(passkey_from_row)
            .collect()
    }

    async fn passkey(&self, cred_id: &str) -> Result<Option<StoredPasskey>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(console_sql::PASSKEY)))
            .bind(cred_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(passkey_from_row)
            .transpose()
    }

    async fn update_passkey(&self, cred_id: &str, passkey: &str) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::UPDATE_PASSKEY,
        )))
        .bind(cred_id)
        .bind(passkey)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn add_enrollment(
        &self,
        hash: &str,
        principal: &PrincipalName,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::ADD_ENROLLMENT,
        )))
        .bind(hash)
        .bind(principal.as_str())
        .bind(secs(expires_at))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("principal `{principal}`")))
        }
    }

    async fn take_enrollment(
        &self,
        hash: &str,
        now: UnixTime,
    ) -> Result<Option<PrincipalName>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::TAKE_ENROLLMENT,
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.int("expires_at")? <= secs(now) {
            return Ok(None);
        }
        typed(&row, "principal", "enrollment principal").map(Some)
    }

    async fn add_console_session(&self, hash: &str, s: &ConsoleSession) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::ADD_SESSION,
        )))
        .bind(hash)
        .bind(s.principal.as_str())
        .bind(&s.csrf)
        .bind(secs(s.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn console_session(&self, hash: &str) -> Result<Option<ConsoleSession>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(console_sql::SESSION)))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn touch_console_session(&self, hash: &str, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::TOUCH_SESSION,
        )))
        .bind(hash)
        .bind(secs(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_console_session(&self, hash: &str) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::DELETE_SESSION,
        )))
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sweep_console(
        &self,
        created_before: UnixTime,
        idle_before: UnixTime,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::SWEEP_SESSIONS,
        )))
        .bind(secs(created_before))
        .bind(secs(idle_before))
        .execute(&self.pool)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(console_sql::pg(
            console_sql::SWEEP_ENROLLMENTS,
        )))
        .bind(secs(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.sender.subscribe())
    }

    async fn announce(&self, change: &Change) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.changes.channel)
            .bind(encode(&self.changes.origin, change))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn outbox_turn(&self) -> Result<bool, StoreError> {
        let mut held = self.outbox.lock().await;
        // Still holding it: the lock lives as long as its connection.
        if let Some(conn) = held.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return Ok(true);
            }
            *held = None;
        }
        let mut conn =
            PgConnection::connect_with(&self.options.clone().application_name("mandate-outbox"))
                .await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.outbox_lock)
            .fetch_one(&mut conn)
            .await?;
        if taken {
            *held = Some(conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(taken)
    }
}

/// Binds an audit query's values in order.
fn bound<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t),
            Bind::Int(i) => q.bind(i),
        };
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_a_store_skips_its_own() {
        let id = MissionId::try_from("msn_0123456789abcdef".to_owned());
        let mut changes = vec![
            Change::Approval("apr_1".into()),
            Change::Revoked,
            Change::Policies,
            Change::Lost,
        ];
        if let Ok(id) = id {
            changes.push(Change::Mission(id));
        }
        for c in changes {
            let p = encode("aaaa", &c);
            assert_eq!(decode(&p, "bbbb"), Some(c.clone()));
            assert_eq!(decode(&p, "aaaa"), None);
        }
        for unknown in [
            "",
            "x",
            "x grants g",
            "x revoked extra",
            "x approval",
            "x mission !",
        ] {
            assert_eq!(decode(unknown, "y"), None, "{unknown}");
        }
    }

    #[test]
    fn lock_keys_are_fixed_and_per_schema() {
        assert_eq!(lock_key(WRITER_LOCK, None), lock_key(WRITER_LOCK, None));
        assert_ne!(
            lock_key(WRITER_LOCK, None),
            lock_key(WRITER_LOCK, Some("a"))
        );
        assert_ne!(
            lock_key(WRITER_LOCK, Some("a")),
            lock_key(WRITER_LOCK, Some("b"))
        );
    }
}
