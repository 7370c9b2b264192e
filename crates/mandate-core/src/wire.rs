//! JSON shapes of the HTTP API, shared by the server and the client.
//!
//! Requests reject unknown fields; the server converts them into domain
//! types before use. Times are Unix seconds.

use serde::{Deserialize, Serialize};

use crate::credential::MissionClaims;
use crate::decision::{Decision, ResourceRef};
use crate::mission::{EndReason, MissionPolicies, MissionState, OutOfScope};

mod authzen;
pub use authzen::{
    ApprovalTask, AuthzenAction, AuthzenConfiguration, AuthzenResource, AuthzenSubject,
    DecisionContext, EvaluationError, EvaluationItem, EvaluationRequest, EvaluationResponse,
    EvaluationsOptions, EvaluationsRequest, EvaluationsResponse, EvaluationsSemantic,
    MAX_EVALUATIONS, SubjectProperties,
};
mod memory;
pub use memory::{
    MemoryEntryView, MemoryListView, NoteEntryView, NoteView, NotesView, PromoteMemoryRequest,
    PromotedView, PutMemoryRequest,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatePrincipalRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::PrincipalName))]
    pub name: String,
    /// `member` (default) or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::Role>))]
    pub role: Option<String>,
}

/// A one-time console enrollment link (`POST
/// /v1/principals/{name}/enroll`): whoever opens it registers a passkey
/// for the principal, once, before `expires_at` (Unix seconds). Shown
/// this once; stored only hashed.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentLink {
    pub url: String,
    pub expires_at: u64,
}

impl std::fmt::Debug for EnrollmentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentLink")
            .field("url", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrincipalView {
    pub name: String,
    pub role: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedPrincipal {
    pub principal: PrincipalView,
    pub token: CreatedToken,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    /// Whose token; the caller's own if absent. Only admins name others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::PrincipalName>))]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A new API token. `token` is shown this once and stored only hashed.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub id: String,
    pub principal: String,
    pub label: String,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: String,
    pub principal: String,
    pub label: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterAgentRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::AgentName))]
    pub name: String,
    /// The owning principal; the caller if absent. Only admins name others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::PrincipalName>))]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What evidence the agent's missions must present to start (none if
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::AttestationRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentView {
    pub name: String,
    pub owner: String,
    pub description: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
    /// What evidence its missions must present to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::AttestationRequirement>,
}

/// `POST /v1/missions/{id}/taint/clear`: a person says what they reviewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClearTaintRequest {
    /// What was reviewed (1 to 200 characters).
    pub reason: String,
}

/// `PUT /v1/agents/{name}/attestation`: the agent's new requirement
/// (`null`: none). Missions created before keep theirs; no mission of the
/// agent starts without what the registration requires at its start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetAttestationRequest {
    pub attestation: Option<crate::AttestationRequirement>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateMissionRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::AgentName))]
    pub agent: String,
    pub goal: String,
    /// Cedar `permit` policies: the mission's scope.
    #[serde(default)]
    pub scope: String,
    /// Cedar `forbid` policies: the mission's boundaries.
    #[serde(default)]
    pub boundaries: String,
    /// Cedar rules that say "ask first".
    #[serde(default)]
    pub escalations: String,
    /// Mission lifetime; 3600 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Allowed requests over the mission's life; 1000 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// `escalate` (default) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<OutOfScope>))]
    pub out_of_scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissionView {
    pub id: String,
    pub principal: String,
    pub agent: String,
    pub goal: String,
    pub policies: MissionPolicies,
    pub budget: u64,
    pub out_of_scope: OutOfScope,
    pub created_at: u64,
    pub expires_at: u64,
    pub mission_s256: String,
    pub state: MissionState,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub end_reason: Option<EndReason>,
    /// Thumbprint of the bound mission key, once started.
    pub jkt: Option<String>,
    /// What evidence the mission requires to start (every one must hold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestation_required: Vec<crate::AttestationRequirement>,
    /// The evidence it was started with, as verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::Attestation>,
    /// The untrusted content it has read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint: Option<crate::Taint>,
    /// The mission this one was delegated from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Its depth in its delegation chain: 1 for a principal's own mission.
    #[serde(default = "one")]
    pub depth: u32,
}

fn one() -> u32 {
    1
}

/// A running mission's request to delegate part of itself to a sub-agent
/// (`POST /v1/mission/delegations/proposal`). Name exactly one of `agent`
/// and `ephemeral`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegateRequest {
    /// A registered agent of the same principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Or an ephemeral sub-agent: a label; its name becomes
    /// `label@<child mission id>`, and its identity is its mission key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<String>,
    pub goal: String,
    /// Cedar `permit` policies: the child's scope (within the parent's:
    /// every ancestor's policies apply to the child as well).
    #[serde(default)]
    pub scope: String,
    /// Extra Cedar `forbid` policies.
    #[serde(default)]
    pub boundaries: String,
    /// Extra rules that say "ask first".
    #[serde(default)]
    pub escalations: String,
    /// The child's lifetime; at most what is left of the parent's (the
    /// default, capped at 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Allowed requests, carved out of what the parent has left.
    pub budget: u64,
    /// `escalate` (default) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<OutOfScope>))]
    pub out_of_scope: Option<String>,
    /// Evidence the child's agent must present to start it, on top of
    /// what its registration requires. A child never inherits its parent's
    /// attestation: it proves its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::AttestationRequirement>,
}

/// What the authority would delegate, for the parent to sign: the child's
/// body, its hash, and the link claims that bind it to the parent. Nothing
/// is stored until the parent commits the body with the signed link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegationProposal {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub mission: crate::MissionBody,
    pub mission_s256: String,
    /// Sign these (with a fresh `jti` and `iat`) with the parent's mission
    /// key, as a JWS of `typ` `mandate-link+jwt` with the public key in the
    /// `jwk` header.
    pub link: crate::LinkClaims,
    /// The authority's signature on this proposal (`mandate-proposal+jwt`),
    /// to send back with the commit; valid for 5 minutes.
    pub proposal: String,
}

/// A proposal committed with the parent's signed link
/// (`POST /v1/mission/delegations`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitDelegation {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub mission: crate::MissionBody,
    pub link: String,
    /// The proposal token the authority returned with this body.
    pub proposal: String,
}

/// The caller's delegation chain, to present with its credential for
/// offline verification: the links, root first (link *i* was signed by
/// hop *i* to delegate hop *i + 1*). Empty for a principal's own mission.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainView {
    pub links: Vec<String>,
}

/// What the gateways serve the calling mission's agent, and how large a
/// request each takes: `GET /v1/mission/limits`. A client that signs on an
/// agent's behalf (`mandate mission proxy`) refuses a body over the limit
/// before it signs or sends anything. Names and limits only; no upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatewayLimits {
    /// The HTTP gateway's routes (`/gw/{name}/…`), by name.
    pub routes: Vec<RouteLimit>,
    /// The MCP gateway's servers (`/mcp/{name}`), by name.
    pub mcp_servers: Vec<McpServerLimit>,
}

/// One route of the HTTP gateway and its request body limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteLimit {
    pub name: String,
    /// The largest request body the route takes (`max_body_bytes`).
    pub max_body_bytes: u64,
}

/// One server of the MCP gateway and its message limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpServerLimit {
    pub name: String,
    /// The largest message the server takes (`max_message_bytes`).
    pub max_message_bytes: u64,
}

/// A credential and its chain, as `mandate credential verify --chain`
/// reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainBundle {
    pub credential: String,
    #[serde(default)]
    pub links: Vec<String>,
}

/// A created mission. `start_token` is shown this once.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedMission {
    pub mission: MissionView,
    pub start_token: String,
    pub start_token_expires_at: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartMissionRequest {
    pub start_token: String,
    /// Evidence of what code holds the mission key, bound to it (ADR
    /// 0020); required when the mission or its agent requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::Evidence>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialResponse {
    /// The mission credential (a JWT, `typ` `mandate-mission+jwt`).
    pub credential: String,
    pub expires_at: u64,
    pub mission: MissionView,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndMissionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevocationRequest {
    /// `mission`, `agent`, `principal` or `token`.
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a revocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevocationResponse {
    pub kind: String,
    pub id: String,
    pub missions: Vec<String>,
    pub agents: Vec<String>,
    pub principals: Vec<String>,
    pub tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntrospectRequest {
    pub credential: String,
}

/// Whether a credential is usable now (RFC 7662 style). When it is not,
/// `code` says why (`mission_ended`, `revoked`, `credential_expired`, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntrospectResponse {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<MissionClaims>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission_state: Option<MissionState>,
}

/// `GET /.well-known/mandate-configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Configuration {
    pub issuer: String,
    pub jwks_uri: String,
    pub missions_endpoint: String,
    pub mission_start_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub credential_typ: String,
    pub credential_signing_alg_values_supported: Vec<String>,
    pub dpop_signing_alg_values_supported: Vec<String>,
    pub mission_key_types_supported: Vec<String>,
    pub credential_ttl_seconds: u64,
    /// `POST`: an enforcement point's decision (`/v1/decide`).
    #[serde(default)]
    pub decision_endpoint: String,
    /// Approval requests (`GET` to list, `/{id}` to read or long-poll).
    #[serde(default)]
    pub approvals_endpoint: String,
    /// `POST`: a running mission proposes a child mission.
    #[serde(default)]
    pub delegation_proposal_endpoint: String,
    /// `POST`: a running mission commits a proposed child mission.
    #[serde(default)]
    pub delegation_endpoint: String,
    /// The audit log (admins).
    #[serde(default)]
    pub audit_endpoint: String,
    /// Metrics in the Prometheus text format (admins; or without
    /// credentials on `metrics_listen` where configured).
    #[serde(default)]
    pub metrics_endpoint: String,
    /// The HTTP gateway: `{gateway_base}{route}/…`.
    #[serde(default)]
    pub gateway_base: String,
    /// The MCP gateway: `{mcp_base}{server}`.
    #[serde(default)]
    pub mcp_base: String,
    /// The OpenAPI document of this API.
    #[serde(default)]
    pub openapi: String,
    /// What a request to the gateways must carry.
    #[serde(default)]
    pub request_signatures: Option<RequestSignatureRequirements>,
    /// What attestation evidence at mission start must say.
    #[serde(default)]
    pub attestation: Option<AttestationParameters>,
}

/// How attestation evidence is bound to this authority and a mission key
/// (ADR 0020).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestationParameters {
    /// The audience a JWT-SVID's `aud` or a launch statement's
    /// `predicate.audience` must name.
    pub audience: String,
    /// A JWT-SVID's `aud` must also hold this prefix followed by the
    /// mission key's RFC 7638 thumbprint.
    pub key_audience_prefix: String,
    /// `jwt_svid`, `launch_statement`.
    pub evidence_types_supported: Vec<String>,
    /// The `predicateType` of a launch statement.
    pub launch_predicate_type: String,
    /// The SPIFFE trust domains whose JWT-SVIDs are accepted.
    pub trust_domains: Vec<String>,
    /// The launchers whose launch statements are accepted.
    pub launchers: Vec<String>,
}

/// What the gateways (`/gw/…`, `/mcp/…`) require of a request's RFC 9421
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestSignatureRequirements {
    /// `ed25519`, by the mission key.
    pub alg: String,
    /// Covered by every signature.
    pub components: Vec<String>,
    /// Covered too when the request has a query.
    pub with_query: Vec<String>,
    /// Covered too when the request has a body.
    pub with_body: Vec<String>,
    /// How the credential travels: `Signature-Key` with this scheme.
    pub signature_key_scheme: String,
    /// `created` must be within this many seconds of the gateway's clock;
    /// a signature is accepted once.
    pub max_age_seconds: u64,
}

/// An RFC 9457 problem document as the client reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProblemDocument {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub status: u16,
    /// Every problem found, where there are several (a policy set's
    /// `file:line:col: …` errors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// `Debug` for the types that carry a bearer secret: everything but it.
macro_rules! redacted_debug {
    ($ty:ident { $($field:ident),* }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

redacted_debug!(CreatedToken {
    id,
    principal,
    label
});
redacted_debug!(CreatedMission {
    mission,
    start_token_expires_at
});
redacted_debug!(StartMissionRequest {});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_bearer_secrets() {
        let t = CreatedToken {
            id: "tok_1".into(),
            principal: "alice".into(),
            label: "x".into(),
            token: "mdt_SECRET".into(),
        };
        assert!(!format!("{t:?}").contains("SECRET"));
        let r = StartMissionRequest {
            start_token: "mst_SECRET".into(),
            evidence: None,
        };
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}

/// `POST /v1/decide`: may the agent holding `credential` do `action` on
/// `resource` now?
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecideRequest {
    /// The agent's mission credential (the enforcement point has checked
    /// the request's signature by the mission key).
    pub credential: String,
    pub action: String,
    pub resource: ResourceRef,
    /// Request attributes for policy (`context.*`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// The agent's stated reason for the call, shown to the approver if the
    /// call escalates (its claim, not a fact; at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The least trust the enforcement point requires for this call (a
    /// route's level); `approved` makes every call need its own approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_trust: Option<crate::decision::Trust>,
}

/// A decision with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecideResponse {
    pub decision: Decision,
    /// Stable reason code: `scope`, `grant`, `boundary`, `escalation`,
    /// `out_of_scope`, `budget_exhausted`, `mission_ended`, `revoked`,
    /// `credential_expired`, `bad_signature`, `policy_error`, …
    pub code: String,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// The grant that allowed the request, if one did.
    pub grant: Option<String>,
    /// For `escalate`: the approval request to wait on.
    pub approval_id: Option<String>,
    /// For `escalate`: where the agent polls (`GET`, `?wait=` seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_url: Option<String>,
    pub mission_id: Option<String>,
    /// Allowed requests counted so far, after this one.
    pub budget_used: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// For a delegated mission: the ancestor whose policy stopped or
    /// escalated the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<crate::Hop>,
}

/// The organisation's policies as loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoliciesView {
    /// Increases with every successful load.
    pub version: u64,
    pub dir: String,
    pub schema_fragments: Vec<String>,
    /// `(id, kind)` of every policy.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<String>>))]
    pub policies: Vec<(String, String)>,
    /// What the policies name that this authority does not have: an
    /// approver (`@approvers`) who is not a principal, or was revoked.
    /// Calls only such approvers could decide are denied (`no_approver`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// On a reload: what it made of `mandate.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReloadView>,
}

/// What a reload made of `mandate.toml`: the gateway's routes and MCP
/// servers it replaced, and the settings that change only with a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigReloadView {
    /// The file read; `null` when there is none (no routes, no MCP
    /// servers).
    pub file: Option<String>,
    pub routes: ReloadChanges,
    pub mcp_servers: ReloadChanges,
    /// Settings whose new values take effect only at the next start (the
    /// running ones stay), by their names in `mandate.toml`.
    pub needs_restart: Vec<String>,
}

/// Names added, changed and removed by a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReloadChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl ReloadChanges {
    /// Whether nothing was added, changed or removed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// An approval request as the approver (or the waiting agent) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalView {
    pub id: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    pub mission_id: String,
    pub mission_s256: String,
    pub principal: String,
    pub agent: String,
    pub goal: String,
    pub action: String,
    pub resource: ResourceRef,
    /// The call's attributes, as the policy saw them.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub context: serde_json::Map<String, serde_json::Value>,
    pub request_digest: String,
    /// One line: what the call does.
    pub summary: String,
    /// The agent's stated reason (its claim).
    pub justification: String,
    /// Why it escalated: `escalation`, `out_of_scope` or `step_up`.
    pub reason_code: String,
    pub policies: Vec<String>,
    /// Who may decide it.
    pub approvers: Vec<String>,
    /// Only "this call, once" may be granted.
    pub step_up: bool,
    pub created_at: u64,
    pub expires_at: u64,
    /// How many identical escalations joined it.
    pub hits: u64,
    pub decided_by: Option<String>,
    pub decided_at: Option<u64>,
    pub decision_reason: Option<String>,
    pub grant: Option<String>,
    pub ended_mission: bool,
    /// The untrusted content the mission had read when the call
    /// escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint: Option<crate::Taint>,
}

/// A vaulted secret's metadata (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VaultView {
    pub route: String,
    pub principal: String,
    /// `basic`, `bearer` or `header`.
    pub kind: String,
    pub version: u64,
    pub updated_at: u64,
    pub updated_by: String,
}

/// `POST /v1/approvals/{id}/approve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApproveRequest {
    /// `once` (default), `mission` or `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::grant::GrantScope>,
    /// For `pattern`: the resource id, route path or tool name prefix the
    /// grant covers (it must cover the approved call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_prefix: Option<String>,
    /// For `mission` and `pattern`: at most this many uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// For `mission` and `pattern`: the grant ends this many seconds from
    /// now (it always ends with the mission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/approvals/{id}/deny`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DenyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Also end the mission now.
    #[serde(default)]
    pub end_mission: bool,
}

/// One open MCP session of a mission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpSessionView {
    /// The MCP server it reaches (`/mcp/{server}`).
    pub server: String,
    /// Its `Mcp-Session-Id`.
    pub session: String,
    /// When it was opened (Unix seconds).
    pub opened_at: u64,
    /// When the agent last sent something on it (Unix seconds).
    pub last_used: u64,
    /// Requests in flight through it now.
    pub in_flight: u64,
    /// Whether the agent's event stream (`GET`) is open.
    pub stream_open: bool,
}

/// `GET /v1/missions/{id}/mcp/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpSessionsView {
    pub mission: String,
    /// The node that answered: sessions live on the node that opened them,
    /// and each node lists its own.
    pub node: String,
    /// Oldest first.
    pub sessions: Vec<McpSessionView>,
}
