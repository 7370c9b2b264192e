//! Mandate's domain core: identifiers, missions, mission credentials,
//! proofs of possession and key handling.
//!
//! This crate does no I/O and no async. Time comes in through a [`Clock`],
//! randomness through a [`SecureRandom`]. It is the only crate that touches
//! private keys.

mod attestation;
mod audit;
mod b64;
mod clock;
mod credential;
mod decision;
mod delegation;
mod error;
mod grant;
pub mod httpsig;
mod ids;
mod jwk;
mod keys;
pub mod mcp_message;
mod memory;
mod mission;
pub mod names;
#[cfg(feature = "openapi")]
mod openapi;
mod policy;
mod proof;
mod random;
mod secret;
pub mod sse;
mod taint;
mod vault;
pub mod wire;

pub use attestation::{
    ActingPrincipal, ActingPrincipalError, Attestation, AttestationError, AttestationMethod,
    AttestationRequirement, DsseEnvelope, DsseSignature, Evidence, IN_TOTO_PAYLOAD_TYPE,
    KEY_AUDIENCE_PREFIX, LAUNCH_PREDICATE_TYPE, LaunchPredicate, LaunchStatement,
    MAX_LAUNCH_STATEMENT_SECS, MissionKeyRef, STATEMENT_TYPE, StatementSubject, TrustAnchors,
    check_trust_domain, key_audience, recheck_evidence, verify_acting_principal, verify_evidence,
};
pub use audit::{
    AuditRecord, CHECKPOINT_TYP, Cadence, ChainError, ChainHead, ChainReport, CheckpointClaims,
    GENESIS, PRUNED_KIND, chain_hash, chain_start, checkpoint_kid, sign_checkpoint,
    sign_checkpoint_claims, verify_chain, verify_checkpoint,
};
pub use b64::s256;
pub use clock::{Clock, FixedClock, SystemClock, UnixTime};
pub use credential::{
    Actor, CREDENTIAL_DWK, CREDENTIAL_TYP, Confirmation, IssuedCredential, MissionClaims,
    SignedCredential, UnverifiedCredential, VerifiedCredential, issue_chained_credential,
    issue_credential,
};
pub use decision::{
    Ancestor, Decision, DecisionRequest, Hop, Outcome, ReasonCode, ResourceKind, ResourceRef,
    Trust, decide, decide_chain, state_check,
};
pub use delegation::{
    ChainHop, DEFAULT_MAX_DEPTH, DelegationChainError, DelegationError, LINK_TYP, LinkClaims,
    LinkParty, MissionRef, PROPOSAL_TTL_SECS, PROPOSAL_TYP, ProposalClaims, VerifiedChain,
    VerifiedHop, link_digest, nested_actor, sign_proposal, verify_delegation_chain, verify_link,
    verify_proposal,
};
pub use error::{CredentialError, InputError, KeyError, ProofError};
pub use grant::{ExactGrant, GrantScope, pattern_policy, request_digest};
pub use ids::{AgentName, ApiTokenId, ApprovalId, GrantId, MissionId, PrincipalName, Role};
pub use jwk::{Ed25519Jwk, Jwks, Thumbprint};
pub use keys::{AuthorityKey, JwsAlgName, LauncherKey, MissionKey};
pub use memory::{
    MAX_ENTRIES as MAX_MEMORY_ENTRIES, MAX_KEY_BYTES as MAX_MEMORY_KEY_BYTES,
    MAX_MISSION_BYTES as MAX_MEMORY_BYTES, MAX_PROMOTED_KEYS,
    MAX_SOURCE_CHARS as MAX_MEMORY_SOURCE_CHARS, MAX_VALUE_BYTES as MAX_MEMORY_VALUE_BYTES,
    MemoryError, MemoryKey, MemoryValue, memory_via, note_via, quoted as json_quoted,
};
pub use mission::{
    Budget, ChildSpec, EndReason, Mission, MissionBody, MissionLimits, MissionPolicies,
    MissionSpec, MissionState, MissionStatus, OutOfScope, mission_s256,
};
pub use policy::{
    BASE_SCHEMA, EscalationTerms, GrantSet, KindedSet, MissionPolicySet, OrgPolicies,
    PolicyDiagnostic, PolicyKind, PolicySource, build_schema,
};
pub use proof::{PROOF_TYP, ProofClaims, ProofExpectations, VerifiedProof, verify_proof};
pub use random::{OsRandom, RandomError, SecureRandom};
pub use secret::{SecretToken, TokenHash, TokenKind};
pub use taint::{MAX_TAINT_SOURCES, Taint, TaintSource, valid_label as valid_taint_label};
pub use vault::{Sealed, VaultError, VaultKey, VaultSecret};

/// Clock skew and freshness window for proofs and signatures, in seconds.
pub const FRESHNESS_WINDOW_SECS: u64 = 60;
