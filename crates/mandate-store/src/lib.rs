//! Storage for Mandate: one [`Store`] trait, with an embedded SQLite
//! implementation ([`SqliteStore`], one node, the default) and a
//! PostgreSQL one ([`PostgresStore`], for several nodes sharing one
//! database). The shared test suite in `tests/` runs against both.

mod console;
mod direct;
mod error;
mod memory;
mod model;
mod pg_audit;
mod pg_reads;
mod postgres;
mod rows;
mod sqlite;

pub use console::{ConsoleSession, StoredPasskey};
pub use error::{ApprovalError, DelegateError, StartError, StoreError};
pub use memory::{MemoryDeleted, MemoryEntry, MemoryWriteError, NewMemoryEntry, Note, Promotion};
pub use model::{
    Agent, Allowance, ApiToken, ApprovalFilter, ApprovalRecord, ApprovalStatus, AuditFilter,
    AuditPage, GrantRecord, MissionSnapshot, NewApproval, NewDelegation, NewGrant, NewMission,
    Principal, Resolution, Revocation, RevocationKind, RevocationSummary, VaultRecord,
    WebhookDelivery,
};
pub use pg_audit::blocking_section;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use mandate_core::{
    AgentName, ApiTokenId, AuditRecord, ChainHead, EndReason, Mission, MissionId, PrincipalName,
    Thumbprint, TokenHash, UnixTime,
};

/// A change committed by another process sharing the database, as
/// [`Store::subscribe`] delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An approval request was opened, joined, decided or expired.
    Approval(String),
    /// A mission ended (or was ended by a decision).
    Mission(MissionId),
    /// Something was revoked: a mission, an agent, a principal or a token.
    Revoked,
    /// The policies were reloaded.
    Policies,
    /// Notices may have been missed (the connection that receives them was
    /// lost and is back, or a receiver lagged): re-read everything cached.
    Lost,
}

/// Everything Mandate keeps. Implementations must make each method atomic:
/// a failed call changes nothing.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    // --- principals and their API tokens ---

    /// Creates the first admin and its token, only if no principal exists.
    /// Returns `false` (and changes nothing) if the store is already set up.
    async fn bootstrap_admin(
        &self,
        admin: &Principal,
        token: &ApiToken,
        hash: &TokenHash,
    ) -> Result<bool, StoreError>;
    async fn create_principal(&self, p: &Principal) -> Result<(), StoreError>;
    async fn principal(&self, name: &PrincipalName) -> Result<Option<Principal>, StoreError>;
    async fn principals(&self) -> Result<Vec<Principal>, StoreError>;
    async fn create_api_token(&self, token: &ApiToken, hash: &TokenHash) -> Result<(), StoreError>;
    /// The principal behind a live token of a live principal.
    async fn principal_by_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(Principal, ApiTokenId)>, StoreError>;
    async fn api_tokens(&self, principal: &PrincipalName) -> Result<Vec<ApiToken>, StoreError>;
    async fn revoke_api_token(
        &self,
        id: &ApiTokenId,
        rev: &Revocation,
    ) -> Result<ApiToken, StoreError>;

    // --- agents ---

    async fn create_agent(&self, a: &Agent) -> Result<(), StoreError>;
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError>;
    /// Replaces a registered agent's attestation requirement (`None`: no
    /// requirement). Returns the agent as it now is.
    async fn set_agent_attestation(
        &self,
        name: &AgentName,
        requirement: Option<&mandate_core::AttestationRequirement>,
    ) -> Result<Agent, StoreError>;
    /// All agents, or those of one owner.
    async fn agents(&self, owner: Option<&PrincipalName>) -> Result<Vec<Agent>, StoreError>;
    /// How many live missions (not ended, not past their expiry at `now`)
    /// each registered agent has: all agents', or one owner's. Agents with
    /// none are left out.
    async fn live_missions_by_agent(
        &self,
        owner: Option<&PrincipalName>,
        now: UnixTime,
    ) -> Result<Vec<(AgentName, u64)>, StoreError>;

    // --- missions ---

    async fn create_mission(&self, m: &NewMission) -> Result<(), StoreError>;
    async fn mission(&self, id: &MissionId) -> Result<Option<Mission>, StoreError>;
    /// Missions, newest first, optionally only those delegated by one principal.
    async fn missions(
        &self,
        principal: Option<&PrincipalName>,
        limit: u32,
    ) -> Result<Vec<Mission>, StoreError>;
    /// Consumes a start token and binds the mission key, atomically: of many
    /// concurrent starts with one token, exactly one succeeds.
    async fn start_mission(
        &self,
        token: &TokenHash,
        jkt: &Thumbprint,
        now: UnixTime,
    ) -> Result<Mission, StartError> {
        self.start_attested(token, jkt, now, None).await
    }
    /// As [`Self::start_mission`], recording the evidence the mission was
    /// started with. Without evidence, a mission whose body or agent
    /// requires attestation does not start
    /// ([`StartError::AttestationRequired`]); evidence that already
    /// started a mission starts no other ([`StartError::AttestationReplayed`]).
    async fn start_attested(
        &self,
        token: &TokenHash,
        jkt: &Thumbprint,
        now: UnixTime,
        attestation: Option<&mandate_core::Attestation>,
    ) -> Result<Mission, StartError>;
    /// Marks `mission` as having read content labelled `labels`, through
    /// `via`, at `at`. Returns the mission's taint when this added a label,
    /// `None` when it had them all already (nothing written).
    async fn mark_taint(
        &self,
        mission: &MissionId,
        labels: &[String],
        via: &str,
        at: UnixTime,
    ) -> Result<Option<mandate_core::Taint>, StoreError>;
    /// Clears a mission's taint (a person reviewed what it read). Returns
    /// the taint it had.
    async fn clear_taint(
        &self,
        mission: &MissionId,
    ) -> Result<Option<mandate_core::Taint>, StoreError>;
    /// The mission `token` would start at `now`, or why it would not.
    /// Changes nothing: the start itself re-checks everything.
    async fn startable(&self, token: &TokenHash, now: UnixTime) -> Result<Mission, StartError>;
    /// Stores a child mission delegated by a running parent, with the link
    /// its parent signed, atomically: the parent must be active, unexpired
    /// at `now` and still bound to `parent_jkt`; the child's budget is
    /// carved out of what the parent has left (the parent's count grows by
    /// it, so of racing delegations only those that fit succeed); the
    /// child's agent must be a live agent of the same principal, or, for
    /// an ephemeral sub-agent (`label@mission`), is recorded as one (never
    /// listed among the registered agents). The child's body must name the
    /// parent as stored (its `s256`), share its principal and end no later
    /// (else a [`StoreError::Conflict`]).
    async fn delegate(&self, d: &NewDelegation) -> Result<(), DelegateError>;
    /// The link that delegated `child`, as its parent presented it.
    async fn delegation_link(&self, child: &MissionId) -> Result<Option<String>, StoreError>;
    /// A mission and every mission delegated below it, parents before
    /// their children (empty if there is no such mission).
    async fn mission_tree(&self, root: &MissionId) -> Result<Vec<Mission>, StoreError>;
    /// Ends a mission that has not ended. Returns the mission as it now is.
    ///
    /// INVARIANT (here and in [`Self::revoke`]): ending a mission ends every
    /// mission delegated below it in the same transaction, so a live
    /// mission always has live ancestors. Those below end `revoked` under
    /// a revoked mission, else `completed` (or `expired`, at their expiry,
    /// if it came first), ended by `ancestor <id> ended`.
    async fn end_mission(
        &self,
        id: &MissionId,
        reason: EndReason,
        by: &str,
        now: UnixTime,
    ) -> Result<Mission, StoreError> {
        self.end_mission_forgetting(id, reason, by, now)
            .await
            .map(|(m, _)| m)
    }
    /// [`Self::end_mission`], returning also the memory it deleted.
    ///
    /// INVARIANT (here, in [`Self::revoke`] and in
    /// [`Self::resolve_approval_forgetting`]): the transaction that ends a
    /// mission deletes its memory entries, and those of every mission it
    /// ends below it, before it commits.
    async fn end_mission_forgetting(
        &self,
        id: &MissionId,
        reason: EndReason,
        by: &str,
        now: UnixTime,
    ) -> Result<(Mission, Vec<MemoryDeleted>), StoreError>;
    /// Records an issued credential.
    async fn record_credential(
        &self,
        jti: &str,
        mission: &MissionId,
        jkt: &Thumbprint,
        iat: UnixTime,
        exp: UnixTime,
    ) -> Result<(), StoreError>;

    // --- decisions ---

    /// A mission as a decision reads it: the mission, its budget count and
    /// its live grants at `now`, read together (one round trip where the
    /// store is across a network). `None` for an unknown mission. Both
    /// counts are checked again, authoritatively, when an allowed call is
    /// counted.
    async fn mission_snapshot(
        &self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Option<MissionSnapshot>, StoreError> {
        let Some(mission) = self.mission(id).await? else {
            return Ok(None);
        };
        Ok(Some(MissionSnapshot::new(
            mission,
            self.budget_used(id).await?,
            self.live_grants(id, now).await?,
        )))
    }
    /// What a call authenticated by an API token about a mission reads
    /// first, read together: the token's principal (as
    /// [`Self::principal_by_token`]) and, only if the token is live, the
    /// mission's snapshot (as [`Self::mission_snapshot`]). One round trip
    /// where the store is across a network. For a token that is not live,
    /// `(None, None)`, whatever the mission's row holds: nothing of it is
    /// looked at.
    async fn token_and_snapshot(
        &self,
        hash: &TokenHash,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<(Option<(Principal, ApiTokenId)>, Option<MissionSnapshot>), StoreError> {
        let Some(caller) = self.principal_by_token(hash).await? else {
            return Ok((None, None));
        };
        Ok((Some(caller), self.mission_snapshot(id, now).await?))
    }
    /// Allowed requests counted against a mission's budget so far.
    async fn budget_used(&self, id: &MissionId) -> Result<u64, StoreError>;
    /// The mission's grants that are live at `now` (not expired, revoked or
    /// used up).
    async fn live_grants(
        &self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Vec<GrantRecord>, StoreError>;
    /// Records an escalated request, or joins the identical pending one.
    /// Returns the approval id and whether it was joined; `None` when the
    /// mission already has `max_pending` requests waiting.
    async fn open_approval(
        &self,
        a: &NewApproval,
        max_pending: u32,
    ) -> Result<Option<(String, bool)>, StoreError>;

    /// One approval request.
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError>;
    /// Approval requests, newest first.
    async fn approvals(&self, f: &ApprovalFilter) -> Result<Vec<ApprovalRecord>, StoreError>;
    /// How many approval requests are pending (waiting for a person, or
    /// expired and not yet marked so), of all missions.
    async fn pending_approvals(&self) -> Result<u64, StoreError>;
    /// Approves (creating its grant) or denies (optionally ending the
    /// mission) a pending request, atomically: only a request that is
    /// pending, unexpired at `now`, of an active mission, is decided, and
    /// of many concurrent decisions exactly one wins.
    async fn resolve_approval(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        resolution: &Resolution,
        now: UnixTime,
    ) -> Result<ApprovalRecord, ApprovalError> {
        self.resolve_approval_forgetting(id, by, reason, resolution, now)
            .await
            .map(|(r, _)| r)
    }
    /// [`Self::resolve_approval`], returning also the memory deleted with
    /// the missions a denial ended.
    async fn resolve_approval_forgetting(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        resolution: &Resolution,
        now: UnixTime,
    ) -> Result<(ApprovalRecord, Vec<MemoryDeleted>), ApprovalError>;
    /// Marks pending requests that expired, or whose mission ended, as
    /// expired, and returns them.
    async fn expire_approvals(&self, now: UnixTime) -> Result<Vec<ApprovalRecord>, StoreError>;

    // --- mission memory and agent notes (docs/memory.md) ---

    /// Writes (or overwrites) an entry of a mission's memory, stamped with
    /// the mission's taint as this transaction reads it, only if the
    /// mission is active and unexpired at `now`
    /// ([`MemoryWriteError::MissionNotActive`]) and the mission then keeps
    /// no more than the limits allow ([`MemoryWriteError::Limit`]).
    async fn memory_put(&self, e: &NewMemoryEntry) -> Result<MemoryEntry, MemoryWriteError>;
    async fn memory_get(
        &self,
        mission: &MissionId,
        key: &mandate_core::MemoryKey,
    ) -> Result<Option<MemoryEntry>, StoreError>;
    /// A mission's entries, by key (bytewise).
    async fn memory_list(&self, mission: &MissionId) -> Result<Vec<MemoryEntry>, StoreError>;
    /// Returns whether there was one.
    async fn memory_delete(
        &self,
        mission: &MissionId,
        key: &mandate_core::MemoryKey,
    ) -> Result<bool, StoreError>;
    /// Copies the named entries of an active mission into its agent's notes
    /// (replacing notes of the same keys), with their provenance and taint,
    /// all or none: a key that names no entry
    /// ([`MemoryWriteError::NoSuchEntry`]), an ephemeral agent, or notes
    /// past the limits refuse the whole promotion.
    async fn promote_notes(
        &self,
        p: &Promotion,
    ) -> Result<(AgentName, Vec<Note>), MemoryWriteError>;
    /// An agent's notes, by key (bytewise).
    async fn notes(&self, agent: &AgentName) -> Result<Vec<Note>, StoreError>;
    async fn note(
        &self,
        agent: &AgentName,
        key: &mandate_core::MemoryKey,
    ) -> Result<Option<Note>, StoreError>;
    /// Deletes the entries of every mission past its expiry at `now` (or
    /// ended), and returns what it deleted, per mission.
    async fn sweep_expired_memory(&self, now: UnixTime) -> Result<Vec<MemoryDeleted>, StoreError>;

    // --- vault ---

    /// Stores (or rotates) a sealed secret. `expected_version` is the
    /// version being replaced (`None`: there must be none); a concurrent
    /// change makes this a conflict, and nothing changes.
    async fn put_vault_secret(
        &self,
        rec: &VaultRecord,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError>;
    async fn vault_secret(
        &self,
        principal: &PrincipalName,
        route: &str,
    ) -> Result<Option<VaultRecord>, StoreError>;
    /// Every stored secret (sealed), for listing metadata.
    async fn vault_secrets(&self) -> Result<Vec<VaultRecord>, StoreError>;
    /// Returns whether there was one.
    async fn delete_vault_secret(
        &self,
        principal: &PrincipalName,
        route: &str,
    ) -> Result<bool, StoreError>;

    // --- webhook outbox ---

    async fn enqueue_webhook(
        &self,
        event: &str,
        payload: &str,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// The oldest pending deliveries, in order (due or not).
    async fn pending_webhooks(&self, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Records a delivery attempt: delivered, retry at `retry_at_ms`, or
    /// (with neither) given up.
    async fn webhook_attempted(
        &self,
        id: i64,
        delivered: bool,
        retry_at_ms: Option<u64>,
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    // --- audit log ---

    /// The last record's sequence number and hash (genesis if empty).
    async fn audit_head(&self) -> Result<ChainHead, StoreError>;
    /// The audit writer's own connection: where records are appended and
    /// allowed calls counted, in one transaction per group (see
    /// [`AuditSink`]). One writer at a time; its methods block, so it is
    /// called where blocking is allowed: inside `block_in_place` under a
    /// [`blocking_section`] (the audit writer's commits), or on a thread of
    /// its own.
    fn audit_sink(&self) -> Result<Box<dyn AuditSink>, StoreError>;
    /// Records after `after_seq`, in order, at most `limit`.
    async fn audit_records(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// One record by sequence number.
    async fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError>;
    /// At most `limit` records that pass `filter` (as
    /// [`AuditFilter::matches`] defines it), from where `page` says and in
    /// its order. Answered from the indexed columns that each append fills
    /// from the record's body, so a page costs about as much whatever the
    /// size of the log, and whichever way it reads.
    async fn audit_query(
        &self,
        filter: &AuditFilter,
        page: AuditPage,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The first record, up to `through`, whose filter columns (kept beside
    /// the body for [`audit_query`](Self::audit_query)) disagree with its
    /// body. The columns are not hash-chained: verification calls this so
    /// that a column changed behind the log's back, which would hide a
    /// record from a filtered list, is a break like an edited body.
    async fn audit_columns_mismatch(&self, through: u64) -> Result<Option<u64>, StoreError>;
    /// The first record of `kind` whose body has `field` equal to `value`;
    /// with `mission`, only among the records of that mission (their body's
    /// `mission`), which an index answers for any kind but `decision`.
    async fn audit_find(
        &self,
        kind: &str,
        mission: Option<&str>,
        field: &str,
        value: &str,
    ) -> Result<Option<AuditRecord>, StoreError>;
    async fn add_checkpoint(&self, seq: u64, token: &str) -> Result<(), StoreError>;
    /// Deletes records up to and including `through` (retention, after
    /// export). Returns how many were deleted. Checkpoints are kept.
    async fn prune_audit(&self, through: u64) -> Result<u64, StoreError>;
    /// Every signed checkpoint, in order.
    async fn checkpoints(&self) -> Result<Vec<String>, StoreError>;
    /// The seal of the log's head (a signed checkpoint of the last record,
    /// replaced by each commit), if any.
    async fn head_seal(&self) -> Result<Option<String>, StoreError>;

    /// Takes a signed request's single use where no audit record goes with
    /// it (a DPoP proof on the authority API), across every node on the
    /// database and across restarts: `true` if taken now, `false` if a
    /// claim on `key` that has not expired at `now` holds it. The claims
    /// the audit groups take ([`AuditSink::claim`]) share the table.
    async fn claim(&self, key: &str, expires: UnixTime, now: UnixTime) -> Result<bool, StoreError>;

    // --- revocation ---

    /// Revokes a mission, an agent (and its missions) or a principal (its
    /// tokens, its agents, and every mission it delegated or its agents
    /// hold), in one transaction.
    async fn revoke(&self, rev: &Revocation) -> Result<RevocationSummary, StoreError>;
    async fn revocations(&self, limit: u32) -> Result<Vec<Revocation>, StoreError>;

    // --- the console (ADR 0032) ---

    /// Registers a passkey for a live principal (`NotFound` if it is not
    /// one; `Conflict` if the credential id is registered already).
    async fn add_passkey(&self, p: &StoredPasskey) -> Result<(), StoreError>;
    /// A live principal's passkeys, oldest first.
    async fn passkeys(&self, principal: &PrincipalName) -> Result<Vec<StoredPasskey>, StoreError>;
    /// The passkey with this credential id, if its principal is live.
    async fn passkey(&self, cred_id: &str) -> Result<Option<StoredPasskey>, StoreError>;
    /// Replaces a passkey's stored form (its signature counter moved).
    async fn update_passkey(&self, cred_id: &str, passkey: &str) -> Result<(), StoreError>;
    /// Records a one-time enrollment link's hash for a live principal.
    async fn add_enrollment(
        &self,
        hash: &str,
        principal: &PrincipalName,
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;
    /// Takes an enrollment link (once: it is gone afterwards, valid or
    /// not): its principal if it had not expired at `now`.
    async fn take_enrollment(
        &self,
        hash: &str,
        now: UnixTime,
    ) -> Result<Option<PrincipalName>, StoreError>;
    /// Records a signed-in session by the hash of its id.
    async fn add_console_session(&self, hash: &str, s: &ConsoleSession) -> Result<(), StoreError>;
    /// A session by the hash of its id, if its principal is live (the
    /// caller checks its age).
    async fn console_session(&self, hash: &str) -> Result<Option<ConsoleSession>, StoreError>;
    /// Marks a session used at `now`.
    async fn touch_console_session(&self, hash: &str, now: UnixTime) -> Result<(), StoreError>;
    /// Ends a session (signing out).
    async fn delete_console_session(&self, hash: &str) -> Result<(), StoreError>;
    /// Deletes sessions created at or before `created_before` or idle
    /// since `idle_before`, and expired enrollment links.
    async fn sweep_console(
        &self,
        created_before: UnixTime,
        idle_before: UnixTime,
        now: UnixTime,
    ) -> Result<(), StoreError>;

    // --- change notifications ---

    /// Changes committed by other processes sharing this database, as they
    /// commit; `None` for a store no other process shares (SQLite).
    ///
    /// A receiver that lags (`RecvError::Lagged`) has missed changes and
    /// must treat that as [`Change::Lost`].
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>>;
    /// Tells the other processes (no-op on SQLite).
    async fn announce(&self, change: &Change) -> Result<(), StoreError>;

    /// Whether this process delivers the webhook outbox now, so one process
    /// at a time sends each notification, in order: always on a store no
    /// other process shares; on a shared one, whichever process holds the
    /// deliverer's lock (it keeps it until it stops, then another takes it
    /// on its next try).
    async fn outbox_turn(&self) -> Result<bool, StoreError>;
}

/// One allowed call to count (see [`AuditSink::count`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountAsk {
    pub mission: MissionId,
    /// The mission's budget of requests.
    pub budget: u64,
    /// The grant that allowed the call, if one did.
    pub grant: Option<String>,
    pub now: UnixTime,
}

/// What [`AuditSink::begin_claiming_counting`] answers: the log's head,
/// whether each claim was taken, and the counts if it made them.
pub type ClaimsOpened = (ChainHead, Vec<bool>, Option<Vec<Allowance>>);

/// A whole group of records, made on what its writer predicts the store
/// holds, for [`AuditSink::commit_predicted`]: the log's head is `head`;
/// every claim is taken now; each of `asks` (none through a grant) counts
/// its mission's budget to the matching `counts` entry. `records` follow
/// `head`, and `seal` is the signed checkpoint of their last one.
#[derive(Debug)]
pub struct Prediction<'a> {
    pub head: &'a ChainHead,
    pub claims: &'a [(&'a str, UnixTime)],
    pub asks: &'a [CountAsk],
    pub counts: &'a [u64],
    pub records: Vec<AuditRecord>,
    pub seal: (u64, String),
}

/// What [`AuditSink::commit_predicted`] did with a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictedCommit {
    /// Committed, durable.
    Committed,
    /// Nothing of it was kept: a prediction did not hold, or the store
    /// refused the group before its commit.
    NotKept,
    /// Not sent (the store would not risk it now): nothing was done.
    NotSent,
}

/// The audit writer's connection. Each group of records is one
/// transaction: [`begin`](Self::begin), then the allowed calls'
/// [`count_all`](Self::count_all) (or [`count`](Self::count) each), each
/// entry's [`append`](Self::append), then
/// [`commit`](Self::commit), durable on return (one sync for the group), or
/// [`rollback`](Self::rollback). A count and the record of its decision are
/// durable together or not at all.
pub trait AuditSink: Send + std::fmt::Debug {
    /// The last record's sequence number and hash (genesis if empty).
    fn head(&mut self) -> Result<ChainHead, StoreError>;
    /// Opens the group's write transaction; returns the stored head, which
    /// the group's first record must follow (another process, such as
    /// `mandate init`, may have appended).
    fn begin(&mut self) -> Result<ChainHead, StoreError>;
    /// Counts one allowed call, inside the open transaction, atomically:
    /// one unit of budget (only if budget is left and the mission is active
    /// and unexpired) and, if a grant allowed it, one use of that grant
    /// (only if it is still live). Both or neither.
    fn count(
        &mut self,
        id: &MissionId,
        budget: u64,
        grant: Option<&str>,
        now: UnixTime,
    ) -> Result<Allowance, StoreError>;
    /// Counts a group's allowed calls inside the open transaction, in
    /// order, each with the outcome [`Self::count`] would give it in turn.
    /// The default calls it in turn; a store across a network counts them
    /// in fewer round trips.
    fn count_all(&mut self, asks: &[CountAsk]) -> Result<Vec<Allowance>, StoreError> {
        asks.iter()
            .map(|a| self.count(&a.mission, a.budget, a.grant.as_deref(), a.now))
            .collect()
    }
    /// [`Self::begin`], then [`Self::count_all`] of `asks` in the group's
    /// transaction: for a group that claims nothing, whose counts are known
    /// before it opens. A store across a network sends them together (one
    /// round trip). On an error the caller rolls back.
    fn begin_counting(
        &mut self,
        asks: &[CountAsk],
    ) -> Result<(ChainHead, Vec<Allowance>), StoreError> {
        let head = self.begin()?;
        if asks.is_empty() {
            return Ok((head, Vec::new()));
        }
        Ok((head, self.count_all(asks)?))
    }
    /// [`Self::begin`], then [`Self::claim_all`] of `claims` in the group's
    /// transaction. A store across a network sends them together (one
    /// round trip). On an error the caller rolls back.
    fn begin_claiming(
        &mut self,
        claims: &[(&str, UnixTime)],
    ) -> Result<(ChainHead, Vec<bool>), StoreError> {
        let head = self.begin()?;
        if claims.is_empty() {
            return Ok((head, Vec::new()));
        }
        Ok((head, self.claim_all(claims)?))
    }
    /// [`Self::begin_claiming`], and, where the store can send them in
    /// the same exchange, [`Self::count_all`] of `asks` counted as if
    /// every claim were taken, after a savepoint: `Some(counts)` then.
    /// Those counts stand only if every call they count was fresh; if one
    /// was not, the caller undoes them all ([`Self::undo_counts`]) and
    /// counts the fresh calls again. `None`: nothing was counted (the
    /// default). `asks` must not count through a grant. On an error the
    /// caller rolls back.
    fn begin_claiming_counting(
        &mut self,
        claims: &[(&str, UnixTime)],
        asks: &[CountAsk],
    ) -> Result<ClaimsOpened, StoreError> {
        let _ = asks;
        let (head, taken) = self.begin_claiming(claims)?;
        Ok((head, taken, None))
    }
    /// Undoes the counts [`Self::begin_claiming_counting`] made (back to
    /// its savepoint), keeping the group's claims. Only after it answered
    /// `Some`.
    fn undo_counts(&mut self) -> Result<(), StoreError> {
        Err(StoreError::Backend(
            "this audit sink made no counts to undo".into(),
        ))
    }
    /// Appends one chained record inside the open transaction.
    fn append(&mut self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Commits the group; durable on return.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Undoes the open transaction, if any.
    fn rollback(&mut self);
    /// Stores a signed checkpoint: inside the open transaction if there is
    /// one (a checkpoint due within a group is committed with it), else in
    /// its own.
    fn add_checkpoint(&mut self, seq: u64, token: &str) -> Result<(), StoreError>;
    /// Up to `limit` records after `after`, in order, as stored now (inside
    /// the open transaction, if any): the writer reads back what it is about
    /// to seal.
    fn records(&mut self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    /// Replaces the seal of the head (inside the open transaction, if any).
    fn seal_head(&mut self, seq: u64, token: &str) -> Result<(), StoreError>;
    /// The seal of the head, as stored now.
    fn head_seal(&mut self) -> Result<Option<String>, StoreError>;
    /// Records, inside the open transaction, that the signed request with
    /// this `key` (a hex digest the caller computes) was used, until
    /// `expires`. Returns `false`, changing nothing and leaving the
    /// transaction usable, if the key is already recorded and has not
    /// expired (by the wall clock): a replay, whichever process recorded
    /// it first. Expired claims are deleted now and then.
    fn claim(&mut self, key: &str, expires: UnixTime) -> Result<bool, StoreError>;
    /// Whether [`Self::commit_predicted`] can save this store a round
    /// trip; the writer then predicts where it can. `false` by default (a
    /// store in this process, whose opening costs no round trip).
    fn predicts(&self) -> bool {
        false
    }
    /// Commits `group` in one exchange, only if the store is as the
    /// writer predicted: the lock, the head, the claims, the counts, the
    /// records and their seal, and the commit, sent together, each
    /// prediction checked by the store under the writers' lock, and the
    /// whole group rolled back if one does not hold. Unless it was
    /// committed, the writer runs the group as usual. `Err`: whether it
    /// was committed is not known. Nothing is open before or after.
    fn commit_predicted(&mut self, group: Prediction<'_>) -> Result<PredictedCommit, StoreError> {
        let _ = group;
        Ok(PredictedCommit::NotSent)
    }
    /// [`Self::claim`] for each of `claims` (distinct keys), in order, in
    /// the open transaction; a store may do them in one statement.
    fn claim_all(&mut self, claims: &[(&str, UnixTime)]) -> Result<Vec<bool>, StoreError> {
        claims
            .iter()
            .map(|(key, expires)| self.claim(key, *expires))
            .collect()
    }
}
