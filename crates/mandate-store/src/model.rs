use mandate_core::{
    AgentName, ApiTokenId, MissionBody, MissionId, PrincipalName, Role, TokenHash, UnixTime,
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
}

/// A mission to store, with the hash of its one-time start token.
#[derive(Debug, Clone)]
pub struct NewMission {
    pub body: MissionBody,
    pub s256: String,
    pub start_token: TokenHash,
    pub start_token_expires_at: UnixTime,
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
}

/// A live grant of a mission, as the decision engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    /// The Cedar `permit` text.
    pub policy: String,
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
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// What counting an allowed request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Counted; the mission's new budget count.
    Counted(u64),
    /// The budget was used up (or the mission ended) in the meantime.
    BudgetExhausted,
    /// The grant that allowed it expired, was revoked or used up meanwhile.
    GrantUnavailable,
}
