//! Missions: one task delegated by a principal to an agent.
//!
//! The body of a mission is immutable and content-addressed: `mission_s256`
//! is SHA-256 over its RFC 8785 (JCS) canonical JSON, base64url.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::clock::UnixTime;
use crate::credential::MissionClaims;
use crate::delegation::MissionRef;
use crate::error::{CredentialError, InputError};
use crate::ids::{AgentName, MissionId, PrincipalName};
use crate::jwk::Thumbprint;
use crate::policy::MissionPolicySet;

pub(crate) const MAX_GOAL_CHARS: usize = 4000;
/// What happens to a request that no policy matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OutOfScope {
    /// Ask a human (the default: out of scope is negotiable).
    #[default]
    Escalate,
    /// Refuse.
    Deny,
}

impl FromStr for OutOfScope {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        match s {
            "escalate" => Ok(Self::Escalate),
            "deny" => Ok(Self::Deny),
            other => Err(InputError::BadOutOfScope(other.chars().take(40).collect())),
        }
    }
}

/// The three kinds of mission policy, as Cedar text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissionPolicies {
    /// `permit` policies: what the mission may do.
    pub scope: String,
    /// `forbid` policies: what it may never do.
    pub boundaries: String,
    /// Rules that say "ask first".
    pub escalations: String,
}

/// Bounds the authority enforces on mission requests (configurable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissionLimits {
    pub min_ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub max_budget: u64,
    /// How many missions deep a delegation chain may grow (the root is 1).
    pub max_depth: u32,
}

impl Default for MissionLimits {
    fn default() -> Self {
        Self {
            min_ttl_secs: 60,
            max_ttl_secs: 7 * 24 * 3600,
            max_budget: 1_000_000,
            max_depth: crate::delegation::DEFAULT_MAX_DEPTH,
        }
    }
}

/// A request to create a mission, as a principal writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissionSpec {
    pub agent: AgentName,
    pub goal: String,
    pub policies: MissionPolicies,
    pub ttl_secs: u64,
    /// Maximum number of allowed requests over the mission's life.
    pub budget: u64,
    pub out_of_scope: OutOfScope,
}

/// The request budget of a mission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub requests: u64,
}

/// The immutable, content-addressed body of a mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissionBody {
    /// Format version of this body.
    pub v: u32,
    pub id: MissionId,
    /// The authority that issued the mission.
    pub iss: String,
    pub principal: PrincipalName,
    pub agent: AgentName,
    pub goal: String,
    pub policies: MissionPolicies,
    pub budget: Budget,
    pub out_of_scope: OutOfScope,
    pub created_at: u64,
    pub expires_at: u64,
    /// For a delegated mission: its ancestors, root first (the last is its
    /// parent). Empty for a mission a principal delegated directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<MissionRef>,
    /// What evidence the mission's agent must present to start it (from
    /// the agent's registration, the principal, or the delegating hop):
    /// every one must be satisfied. Empty: none needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestation: Vec<crate::attestation::AttestationRequirement>,
}

/// What a running mission asks to delegate to a sub-agent.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The child's agent and policies, TTL and budget. The principal is the
    /// parent's.
    pub spec: MissionSpec,
    /// Whether `spec.agent` is an ephemeral sub-agent the parent names.
    pub ephemeral: bool,
}

impl MissionBody {
    /// How deep in its chain the mission sits: a principal's own mission
    /// is 1.
    #[must_use]
    pub fn depth(&self) -> u32 {
        u32::try_from(self.ancestors.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// Adds an attestation requirement (before the body is hashed and
    /// stored); one already there is not added twice.
    pub fn require_attestation(
        &mut self,
        req: crate::attestation::AttestationRequirement,
    ) -> Result<(), InputError> {
        req.validate().map_err(InputError::BadAttestation)?;
        if !self.attestation.contains(&req) {
            self.attestation.push(req);
        }
        Ok(())
    }

    /// The mission this one was delegated from, if any.
    #[must_use]
    pub fn parent(&self) -> Option<&MissionRef> {
        self.ancestors.last()
    }

    /// Checks a child mission against its running parent and fixes its
    /// body. Only narrowing is accepted: the child ends no later than the
    /// parent, spends at most `budget_left` (what the parent has not used
    /// or carved out before), is no deeper than `max_depth`, and acts as
    /// an agent not already in the chain. `chain_agents` are the agents of
    /// the parent's ancestors and the parent.
    #[expect(clippy::too_many_arguments, reason = "each bound is its own input")]
    pub fn delegated(
        child: ChildSpec,
        id: MissionId,
        parent: &Mission,
        chain_agents: &[AgentName],
        budget_left: u64,
        now: UnixTime,
        limits: MissionLimits,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<Self, crate::delegation::DelegationError> {
        let max_depth = limits.max_depth;
        use crate::delegation::DelegationError;
        let ChildSpec { spec, ephemeral } = child;
        if spec.agent.is_ephemeral() != ephemeral {
            return Err(DelegationError::EphemeralTarget(spec.agent));
        }
        let depth = parent.body.depth().saturating_add(1);
        if depth > max_depth {
            return Err(DelegationError::TooDeep {
                max: max_depth,
                got: depth,
            });
        }
        if spec.agent == parent.body.agent || chain_agents.contains(&spec.agent) {
            return Err(DelegationError::AgentInChain(spec.agent));
        }
        let left = parent.body.expires_at.saturating_sub(now.0);
        if spec.ttl_secs > left {
            return Err(DelegationError::TtlWidens {
                max: left,
                got: spec.ttl_secs,
            });
        }
        if spec.budget > budget_left {
            return Err(DelegationError::BudgetWidens {
                max: budget_left,
                got: spec.budget,
            });
        }
        let (mut body, compiled) = Self::build(
            spec,
            id,
            &parent.body.iss,
            parent.body.principal.clone(),
            now,
            limits,
            schema,
        )?;
        // Who approves a child's escalations is decided above it (the
        // root's people, the organisation's policy); an agent writing a
        // child's policies does not get to pick among them.
        if compiled.names_approvers() {
            return Err(InputError::BadPolicy {
                field: "escalations",
                message: "a delegated mission cannot name approvers (`@approvers`): the root mission's people and the organisation's policies decide who approves".into(),
            }
            .into());
        }
        body.ancestors = parent.body.ancestors.clone();
        body.ancestors.push(MissionRef {
            id: parent.body.id.clone(),
            s256: parent.s256.clone(),
        });
        Ok(body)
    }

    /// Checks a spec against `limits` and Cedar, and fixes the body.
    /// `schema`, when given, validates the policies against it.
    pub fn new(
        spec: MissionSpec,
        id: MissionId,
        issuer: &str,
        principal: PrincipalName,
        now: UnixTime,
        limits: MissionLimits,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<Self, InputError> {
        Self::build(spec, id, issuer, principal, now, limits, schema).map(|(body, _)| body)
    }

    /// As [`Self::new`], with the policies as compiled.
    fn build(
        spec: MissionSpec,
        id: MissionId,
        issuer: &str,
        principal: PrincipalName,
        now: UnixTime,
        limits: MissionLimits,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<(Self, MissionPolicySet), InputError> {
        let MissionSpec {
            agent,
            goal,
            policies,
            ttl_secs,
            budget,
            out_of_scope,
        } = spec;
        let goal = goal.trim().to_owned();
        if goal.is_empty()
            || goal.chars().count() > MAX_GOAL_CHARS
            || goal.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(InputError::BadGoal);
        }
        if !(limits.min_ttl_secs..=limits.max_ttl_secs).contains(&ttl_secs) {
            return Err(InputError::BadTtl {
                min: limits.min_ttl_secs,
                max: limits.max_ttl_secs,
                got: ttl_secs,
            });
        }
        if budget == 0 || budget > limits.max_budget {
            return Err(InputError::BadBudget {
                max: limits.max_budget,
                got: budget,
            });
        }
        let compiled = MissionPolicySet::compile(id.as_str(), &policies, schema)?;
        let body = Self {
            v: 1,
            id,
            iss: issuer.to_owned(),
            principal,
            agent,
            goal,
            policies,
            budget: Budget { requests: budget },
            out_of_scope,
            created_at: now.0,
            expires_at: now.plus(ttl_secs).0,
            ancestors: Vec::new(),
            attestation: Vec::new(),
        };
        Ok((body, compiled))
    }
}

/// `mission_s256`: base64url(SHA-256(JCS(body))).
pub fn mission_s256(body: &MissionBody) -> Result<String, InputError> {
    let canonical = serde_jcs::to_vec(body).map_err(|e| InputError::BadPolicy {
        field: "mission",
        message: format!("cannot canonicalize: {e}"),
    })?;
    Ok(b64::s256(&canonical))
}

/// Why a mission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EndReason {
    /// Ended by its agent or principal: the task is done.
    Completed,
    /// Its TTL ran out.
    Expired,
    /// Revoked (directly, or by revoking its agent or principal).
    Revoked,
}

impl EndReason {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl FromStr for EndReason {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "completed" => Ok(Self::Completed),
            "expired" => Ok(Self::Expired),
            "revoked" => Ok(Self::Revoked),
            _ => Err(()),
        }
    }
}

/// A mission's stored lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissionStatus {
    /// Created and delegated; waiting for its agent to start it.
    Ready,
    /// Started: a mission key is bound.
    Active {
        jkt: Thumbprint,
        started_at: UnixTime,
    },
    /// Over. Terminal.
    Ended {
        reason: EndReason,
        at: UnixTime,
        jkt: Option<Thumbprint>,
        /// When it had been started, if it ever was.
        started_at: Option<UnixTime>,
    },
}

/// The effective state at a given time (TTL expiry applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MissionState {
    Ready,
    Active,
    Ended,
}

/// A mission as stored: its body, hash and lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mission {
    pub body: MissionBody,
    pub s256: String,
    pub status: MissionStatus,
    /// The evidence verified when the mission started, if any. Never
    /// inherited: each hop of a chain has its own.
    pub attestation: Option<crate::attestation::Attestation>,
    /// The untrusted content it has read, if any (a child started after
    /// its parent read some starts with the parent's).
    pub taint: Option<crate::taint::Taint>,
}

impl Mission {
    #[must_use]
    pub fn expires_at(&self) -> UnixTime {
        UnixTime(self.body.expires_at)
    }

    /// The effective state and, if ended, why and when — TTL expiry counts
    /// even before anything wrote it down.
    #[must_use]
    pub fn state_at(&self, now: UnixTime) -> (MissionState, Option<(EndReason, UnixTime)>) {
        match &self.status {
            MissionStatus::Ended { reason, at, .. } => (MissionState::Ended, Some((*reason, *at))),
            _ if now >= self.expires_at() => (
                MissionState::Ended,
                Some((EndReason::Expired, self.expires_at())),
            ),
            MissionStatus::Ready => (MissionState::Ready, None),
            MissionStatus::Active { .. } => (MissionState::Active, None),
        }
    }

    /// The bound mission key, if the mission was ever started.
    #[must_use]
    pub fn jkt(&self) -> Option<&Thumbprint> {
        match &self.status {
            MissionStatus::Ready => None,
            MissionStatus::Active { jkt, .. } => Some(jkt),
            MissionStatus::Ended { jkt, .. } => jkt.as_ref(),
        }
    }

    /// Refuses a mission that is not active at `now`, saying why: not
    /// started, revoked, or ended (completed or past its TTL).
    pub fn check_active(&self, now: UnixTime) -> Result<(), CredentialError> {
        match self.state_at(now) {
            (MissionState::Active, _) => Ok(()),
            (MissionState::Ready, _) => Err(CredentialError::MissionNotStarted),
            (MissionState::Ended, Some((EndReason::Revoked, _))) => Err(CredentialError::Revoked),
            (MissionState::Ended, _) => Err(CredentialError::MissionEnded),
        }
    }

    /// State checks for a verified credential against this mission: same
    /// mission and body, active, bound to the same key.
    pub fn check_credential(
        &self,
        claims: &MissionClaims,
        now: UnixTime,
    ) -> Result<(), CredentialError> {
        if claims.mission_id != self.body.id {
            return Err(CredentialError::UnknownMission);
        }
        if claims.mission_s256 != self.s256 {
            return Err(CredentialError::MissionMismatch);
        }
        self.check_active(now)?;
        match self.jkt() {
            Some(jkt) if *jkt == claims.cnf.jkt => Ok(()),
            _ => Err(CredentialError::KeyMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MAX_POLICY_BYTES;
    use crate::random::OsRandom;

    fn spec() -> MissionSpec {
        MissionSpec {
            agent: "billing-bot".parse().unwrap(),
            goal: "Reconcile November invoices".into(),
            policies: MissionPolicies {
                scope: r#"permit(principal, action == Action::"read", resource);"#.into(),
                boundaries: r#"forbid(principal, action, resource) when { resource has hr };"#
                    .into(),
                escalations: String::new(),
            },
            ttl_secs: 3600,
            budget: 100,
            out_of_scope: OutOfScope::Escalate,
        }
    }

    fn body(spec: MissionSpec) -> Result<MissionBody, InputError> {
        MissionBody::new(
            spec,
            MissionId::generate(&OsRandom).unwrap(),
            "http://127.0.0.1:7878",
            "alice".parse().unwrap(),
            UnixTime(1_000),
            MissionLimits::default(),
            None,
        )
    }

    #[test]
    fn a_valid_spec_becomes_a_body_with_a_stable_hash() {
        let b = body(spec()).unwrap();
        assert_eq!(b.expires_at, 4_600);
        let h1 = mission_s256(&b).unwrap();
        assert_eq!(h1, mission_s256(&b.clone()).unwrap());
        let mut other = b.clone();
        other.goal.push('!');
        assert_ne!(h1, mission_s256(&other).unwrap());
        assert_eq!(h1.len(), 43);
    }

    #[test]
    fn bad_cedar_is_refused_with_a_position() {
        let mut s = spec();
        s.policies.scope = "permit(principal,\n action = , resource);".into();
        let err = body(s).unwrap_err();
        assert_eq!(err.code(), "invalid_policy");
        assert!(err.to_string().starts_with("scope: 2:"), "{err}");
    }

    #[test]
    fn policy_kinds_must_have_their_effect() {
        let mut s = spec();
        s.policies.scope = "forbid(principal, action, resource);".into();
        assert!(
            body(s)
                .unwrap_err()
                .to_string()
                .contains("only scope policies belong here")
        );
        let mut s = spec();
        s.policies.boundaries = "permit(principal, action, resource);".into();
        assert!(
            body(s)
                .unwrap_err()
                .to_string()
                .contains("only boundary policies belong here")
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_sees_it() {
        // At the limit: parses (in a test thread's default 2 MiB stack).
        let mut s = spec();
        let inner = format!("{}true{}", "(".repeat(14), ")".repeat(14));
        s.policies.scope = format!("permit(principal, action, resource) when {{ {inner} }};");
        body(s).unwrap();
        for evil in [
            format!(
                "permit(principal, action, resource) when {{ {}true{} }};",
                "(".repeat(2_000),
                ")".repeat(2_000)
            ),
            format!(
                "permit(principal, action, resource) when {{ {}true }};",
                "!".repeat(5_000)
            ),
            format!(
                "permit(principal, action, resource) when {{ {}1 == 1 }};",
                "- ".repeat(5_000)
            ),
            format!(
                "permit(principal, action, resource) when {{ {}1{} }};",
                "[".repeat(100),
                "]".repeat(100)
            ),
        ] {
            let mut s = spec();
            s.policies.scope = evil;
            let err = body(s).unwrap_err();
            assert_eq!(err.code(), "invalid_policy", "{err}");
        }
        // Brackets inside strings and comments do not count.
        let mut s = spec();
        s.policies.scope = format!(
            "// {}\npermit(principal, action, resource) when {{ context.note == \"{}\\\"\" }};",
            "(".repeat(100),
            "[".repeat(100)
        );
        body(s).unwrap();
    }

    #[test]
    fn long_operator_chains_within_the_size_limit_do_not_crash() {
        // The longest left-deep chain that fits the size limit, parsed on a
        // thread with the default 2 MiB stack: refused or accepted, never a
        // stack overflow.
        let chain = "1 + ".repeat((MAX_POLICY_BYTES - 80) / 4);
        let mut s = spec();
        s.policies.scope = format!("permit(principal, action, resource) when {{ {chain}1 > 0 }};");
        let _ = body(s);
        let chain = "true && ".repeat((MAX_POLICY_BYTES - 80) / 8);
        let mut s = spec();
        s.policies.scope = format!("permit(principal, action, resource) when {{ {chain}true }};");
        let _ = body(s);
        // Nesting and unary runs at their limits, interleaved.
        let mut s = spec();
        let open = format!("({}", "!".repeat(15)).repeat(15);
        s.policies.scope = format!(
            "permit(principal, action, resource) when {{ {open}true{} }};",
            ")".repeat(15)
        );
        let _ = body(s);
        let mut s = spec();
        s.policies.scope = format!(
            "permit(principal, action, resource) when {{ context{} }};",
            ".a".repeat(4_000)
        );
        let _ = body(s);
    }

    #[test]
    fn limits_are_enforced() {
        let mut s = spec();
        s.ttl_secs = 10;
        assert!(matches!(body(s).unwrap_err(), InputError::BadTtl { .. }));
        let mut s = spec();
        s.budget = 0;
        assert!(matches!(body(s).unwrap_err(), InputError::BadBudget { .. }));
        let mut s = spec();
        s.goal = "  ".into();
        assert_eq!(body(s).unwrap_err(), InputError::BadGoal);
    }
}
