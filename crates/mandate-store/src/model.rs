use mandate_core::{
    AgentName, ApiTokenId, GrantScope, Mission, MissionBody, MissionId, PrincipalName, Role,
    TokenHash, UnixTime,
};

/// A principal: who delegates and approves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: PrincipalName,
    pub role: Role,
    pub created_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// An API token's record (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: ApiTokenId,
    pub principal: PrincipalName,
    pub label: String,
    pub created_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// A registered agent. It holds no standing permission: only missions
/// delegated to it give it any authority, and only while they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub name: AgentName,
    pub owner: PrincipalName,
    pub description: String,
    pub created_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
    /// What evidence its missions must present to start (ADR 0020).
    pub attestation: Option<mandate_core::AttestationRequirement>,
}

/// A mission to store, with the hash of its one-time start token.
#[derive(Debug, Clone)]
pub struct NewMission {
    pub body: MissionBody,
    pub s256: String,
    pub start_token: TokenHash,
    pub start_token_expires_at: UnixTime,
}

/// A child mission to store (see [`Store::delegate`](crate::Store::delegate)).
/// Its body's last ancestor is the parent.
#[derive(Debug, Clone)]
pub struct NewDelegation {
    pub mission: NewMission,
    /// The key the parent must still be bound to: the one that proved the
    /// request and signed the link.
    pub parent_jkt: mandate_core::Thumbprint,
    /// The parent's budget (from its immutable body).
    pub parent_budget: u64,
    /// The delegation link (a JWS signed by the parent's mission key), as
    /// presented.
    pub link: String,
    pub now: UnixTime,
}

/// What can be revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    Mission,
    Agent,
    Principal,
    Token,
}

impl RevocationKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mission => "mission",
            Self::Agent => "agent",
            Self::Principal => "principal",
            Self::Token => "token",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mission" => Some(Self::Mission),
            "agent" => Some(Self::Agent),
            "principal" => Some(Self::Principal),
            "token" => Some(Self::Token),
            _ => None,
        }
    }
}

/// A revocation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub target: String,
    pub reason: String,
    pub revoked_by: PrincipalName,
    pub at: UnixTime,
}

/// What a revocation ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSummary {
    pub missions: Vec<MissionId>,
    pub agents: Vec<AgentName>,
    pub principals: Vec<PrincipalName>,
    pub tokens: u64,
    /// The memory deleted with the missions it ended.
    pub memory: Vec<crate::MemoryDeleted>,
}

/// A live grant of a mission, as the decision engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub scope: GrantScope,
    /// The Cedar `permit` text of a `pattern` grant (empty otherwise).
    pub policy: String,
    /// The call a `once` or `mission` grant covers.
    pub request_digest: Option<String>,
    /// The principal whose approval created it.
    pub created_by: String,
}

/// A mission with what a decision reads beside it (see
/// [`crate::Store::mission_snapshot`]). Made only by the store, when it
/// reads them: what a decision relies on comes from the database, and its
/// age is known.
#[derive(Debug, Clone)]
pub struct MissionSnapshot {
    mission: Mission,
    budget_used: u64,
    grants: Vec<GrantRecord>,
    read_at: std::time::Instant,
}

impl MissionSnapshot {
    pub(crate) fn new(mission: Mission, budget_used: u64, grants: Vec<GrantRecord>) -> Self {
        Self {
            mission,
            budget_used,
            grants,
            read_at: std::time::Instant::now(),
        }
    }

    #[must_use]
    pub fn mission(&self) -> &Mission {
        &self.mission
    }

    #[must_use]
    pub fn into_mission(self) -> Mission {
        self.mission
    }

    /// Allowed requests counted against its budget when it was read.
    #[must_use]
    pub fn budget_used(&self) -> u64 {
        self.budget_used
    }

    /// Its grants live when it was read (none unless it is active).
    #[must_use]
    pub fn grants(&self) -> &[GrantRecord] {
        &self.grants
    }

    /// How long ago it was read.
    #[must_use]
    pub fn age(&self) -> std::time::Duration {
        self.read_at.elapsed()
    }
}

/// A grant to create with an approval.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub id: String,
    pub scope: GrantScope,
    pub policy: String,
    pub request_digest: Option<String>,
    pub max_uses: Option<u64>,
    pub expires_at: Option<UnixTime>,
}

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "denied" => Some(Self::Denied),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// An approval request as stored, with its mission's principal, agent and
/// goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    pub id: String,
    pub mission: MissionId,
    pub mission_s256: String,
    pub principal: PrincipalName,
    pub agent: AgentName,
    pub goal: String,
    pub request_digest: String,
    pub action: String,
    /// The resource as JSON.
    pub resource: String,
    /// The request's attributes, canonical JSON.
    pub context: String,
    pub context_digest: String,
    pub reason_code: String,
    pub policies: Vec<String>,
    pub justification: String,
    pub summary: String,
    /// Who may approve; empty means the mission's principal.
    pub approvers: Vec<String>,
    pub step_up: bool,
    pub status: ApprovalStatus,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    /// How many identical escalations joined this request.
    pub hits: u64,
    pub decided_by: Option<String>,
    pub decided_at: Option<UnixTime>,
    pub decision_reason: Option<String>,
    pub grant: Option<String>,
    pub ended_mission: bool,
    /// What untrusted content the mission had read when the call
    /// escalated.
    pub taint: Option<mandate_core::Taint>,
}

impl ApprovalRecord {
    /// Why it can no longer be decided, given whether its mission is still
    /// active: `Expired` once its time ran out, `MissionNotActive` once its
    /// mission ended. A request marked expired before its own time ran out
    /// was marked so because its mission ended (the sweeper expires those
    /// too), and that is the reason given, whenever the sweeper ran.
    #[must_use]
    pub fn lapsed(&self, mission_active: bool, now: UnixTime) -> Option<crate::ApprovalError> {
        use crate::ApprovalError;
        if self.expires_at <= now {
            return Some(ApprovalError::Expired);
        }
        if !mission_active {
            return Some(ApprovalError::MissionNotActive);
        }
        (self.status == ApprovalStatus::Expired).then_some(ApprovalError::Expired)
    }

    /// Whether `who` may approve or deny it: a named approver, or the
    /// mission's principal when none is named.
    #[must_use]
    pub fn may_be_decided_by(&self, who: &PrincipalName) -> bool {
        if self.approvers.is_empty() {
            &self.principal == who
        } else {
            self.approvers.iter().any(|a| a == who.as_str())
        }
    }
}

/// What an approver decided.
#[derive(Debug, Clone)]
pub enum Resolution {
    Approve(NewGrant),
    Deny { end_mission: bool },
}

/// Which approvals to list.
#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    pub status: Option<ApprovalStatus>,
    pub mission: Option<MissionId>,
    /// Only requests this principal may decide.
    pub decider: Option<String>,
    /// Only requests this principal may see (as the mission's principal or
    /// an approver). `None`: all (admins).
    pub viewer: Option<String>,
    pub limit: u32,
}

/// A vaulted secret as stored: sealed, never in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRecord {
    pub principal: PrincipalName,
    pub route: String,
    /// `basic`, `bearer` or `header`.
    pub kind: String,
    /// Bumped on every rotation; bound into the ciphertext.
    pub version: u64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: UnixTime,
    pub updated_by: String,
}

/// A webhook notification waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: i64,
    pub event: String,
    pub payload: String,
    pub attempts: u32,
    /// When it may next be tried (milliseconds since the epoch).
    pub next_attempt_ms: u64,
}

/// An escalated request to record (or join, if an identical one waits).
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub id: String,
    pub mission: MissionId,
    /// Digest of (action, resource, context): identical requests share it.
    pub request_digest: String,
    pub action: String,
    /// The resource as JSON.
    pub resource: String,
    /// The request's attributes, canonical JSON.
    pub context: String,
    pub context_digest: String,
    pub reason_code: String,
    /// Ids of the policies that asked for it, as JSON.
    pub policies: String,
    /// The agent's stated reason (its claim, shown as such).
    pub justification: String,
    /// A readable one-line summary of the call.
    pub summary: String,
    pub approvers: Vec<String>,
    pub step_up: bool,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    /// What untrusted content the mission had read when the call
    /// escalated, shown to the approver.
    pub taint: Option<mandate_core::Taint>,
}

/// What counting an allowed request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Counted; the mission's new budget count.
    Counted(u64),
    /// The budget was used up in the meantime.
    BudgetExhausted,
    /// The mission ended (or expired) in the meantime.
    MissionEnded,
    /// The grant that allowed it expired, was revoked or used up meanwhile.
    GrantUnavailable,
}

/// Where a page of [`Store::audit_query`](crate::Store::audit_query)
/// starts, and which way it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditPage {
    /// Oldest first: the records after this sequence number (0: from the
    /// start).
    After(u64),
    /// Newest first: the records before this sequence number (`None`: from
    /// the end).
    Before(Option<u64>),
}

/// Which audit records to list ([`Store::audit_query`](crate::Store::audit_query)).
/// Every field that is set must hold; `None` matches anything. The string
/// fields compare against the record body's string field of the same name
/// (`kind` against the record's kind); a body whose field is missing or not
/// a string does not match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub mission: Option<String>,
    pub principal: Option<String>,
    pub agent: Option<String>,
    pub action: Option<String>,
    /// `allow`, `deny` or `escalate` (the body's `decision`).
    pub decision: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<u64>,
    /// Unix seconds, inclusive.
    pub until: Option<u64>,
}

impl AuditFilter {
    /// Whether `r` passes the filter: the definition the indexed queries of
    /// every backend must agree with (the store tests check they do).
    #[must_use]
    pub fn matches(&self, r: &mandate_core::AuditRecord) -> bool {
        let field = |k: &str| r.body.get(k).and_then(|v| v.as_str());
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        eq(&self.kind, Some(r.kind.as_str()))
            && eq(&self.mission, field("mission"))
            && eq(&self.principal, field("principal"))
            && eq(&self.agent, field("agent"))
            && eq(&self.action, field("action"))
            && eq(&self.decision, field("decision"))
            && self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.time <= t)
    }
}
