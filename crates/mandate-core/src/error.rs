//! Error enums, one per stage. Each has a stable `code()` that the server
//! maps to an HTTP problem `code` and the CLI prints.

use crate::random::RandomError;

/// Input from a user or a wire that does not parse into a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(
        "`{value}` is not a valid {kind} name (1-64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit)"
    )]
    BadName { kind: &'static str, value: String },
    #[error("`{value}` is not a valid {kind} id")]
    BadId { kind: &'static str, value: String },
    #[error("`{0}` is not a role (expected `admin` or `member`)")]
    BadRole(String),
    #[error("the goal must be 1 to {max} characters of text", max = crate::mission::MAX_GOAL_CHARS)]
    BadGoal,
    #[error("{field}: {message}")]
    BadPolicy {
        field: &'static str,
        message: String,
    },
    #[error("ttl must be between {min} and {max} seconds, got {got}")]
    BadTtl { min: u64, max: u64, got: u64 },
    #[error("the request budget must be between 1 and {max}, got {got}")]
    BadBudget { max: u64, got: u64 },
    #[error("`{0}` is not an out-of-scope mode (expected `escalate` or `deny`)")]
    BadOutOfScope(String),
    #[error("attestation: {0}")]
    BadAttestation(String),
}

impl InputError {
    /// What is wrong, without repeating the value that was sent (for an
    /// answer over the wire; the `Display` form, which names it, is for the
    /// CLI and logs). A policy's message keeps Cedar's pointer into the
    /// text, which its author needs to fix it.
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            Self::BadName { kind, .. } => format!(
                "not a valid {kind} name (1-64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit)"
            ),
            Self::BadId { kind, .. } => format!("not a valid {kind} id"),
            Self::BadRole(_) => "not a role (expected `admin` or `member`)".into(),
            Self::BadTtl { min, max, .. } => {
                format!("ttl must be between {min} and {max} seconds")
            }
            Self::BadBudget { max, .. } => {
                format!("the request budget must be between 1 and {max}")
            }
            Self::BadOutOfScope(_) => {
                "not an out-of-scope mode (expected `escalate` or `deny`)".into()
            }
            Self::BadGoal | Self::BadPolicy { .. } | Self::BadAttestation(_) => self.to_string(),
        }
    }

    /// Stable problem code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadPolicy { .. } => "invalid_policy",
            Self::BadName { .. }
            | Self::BadId { .. }
            | Self::BadRole(_)
            | Self::BadGoal
            | Self::BadTtl { .. }
            | Self::BadBudget { .. }
            | Self::BadOutOfScope(_)
            | Self::BadAttestation(_) => "invalid_request",
        }
    }
}

/// Why a mission credential is refused.
///
/// INVARIANT: exhaustive on purpose. A new failure mode must be handled
/// wherever credentials are checked, and every variant is a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the credential is not a well-formed mission credential: {0}")]
    Malformed(String),
    #[error("the credential is signed by a key the issuer does not publish (kid `{0}`)")]
    UnknownKey(String),
    #[error("the credential's signature does not verify")]
    BadSignature,
    #[error("the credential was issued by `{found}`, not `{expected}`")]
    WrongIssuer { expected: String, found: String },
    #[error("the credential expired")]
    Expired,
    #[error("the credential is not valid yet")]
    NotYetValid,
    #[error("the credential's mission does not exist")]
    UnknownMission,
    #[error("the mission has not started")]
    MissionNotStarted,
    #[error("the mission has ended")]
    MissionEnded,
    #[error(
        "the mission was revoked (directly, with a mission it was delegated from, or with its agent or principal)"
    )]
    Revoked,
    #[error("the credential is not bound to this mission's key")]
    KeyMismatch,
    #[error("the credential's mission body hash does not match the mission")]
    MissionMismatch,
}

impl CredentialError {
    /// Stable reason code (docs/policies.md).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::UnknownKey(_) | Self::WrongIssuer { .. } => "bad_credential",
            Self::BadSignature => "bad_signature",
            Self::Expired => "credential_expired",
            Self::NotYetValid => "credential_not_yet_valid",
            Self::UnknownMission => "unknown_mission",
            Self::MissionNotStarted => "mission_not_started",
            Self::MissionEnded => "mission_ended",
            Self::Revoked => "revoked",
            Self::KeyMismatch => "key_mismatch",
            Self::MissionMismatch => "mission_mismatch",
        }
    }
}

/// Why a proof of possession (an RFC 9449 DPoP proof JWT) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof is not a well-formed DPoP proof: {0}")]
    Malformed(String),
    #[error("the proof's signature does not verify with the key it carries")]
    BadSignature,
    #[error("the proof was made for `{found}`, not `{expected}`")]
    WrongTarget { expected: String, found: String },
    #[error("the proof is not fresh (iat outside the {window} s window)")]
    Stale { window: u64 },
    #[error("the proof was already used")]
    Replayed,
    #[error("the proof is not bound to the presented token")]
    WrongTokenHash,
    #[error("the proof is signed by a different key than the mission's")]
    KeyMismatch,
}

impl ProofError {
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_)
            | Self::BadSignature
            | Self::WrongTarget { .. }
            | Self::Stale { .. }
            | Self::WrongTokenHash => "bad_proof",
            Self::Replayed => "proof_replayed",
            Self::KeyMismatch => "key_mismatch",
        }
    }
}

/// Signing or key handling failed inside the authority.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key file is not a PKCS#8 Ed25519 private key")]
    BadKeyFile,
    #[error("could not encode the key")]
    Encode,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("the mission has already expired; no credential can be issued")]
    MissionExpired,
}
