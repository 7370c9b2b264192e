//! Attestation: evidence of *what software* holds a mission key, bound to
//! that key when the mission starts (ADR 0020).
//!
//! Two kinds of evidence, behind one verifier ([`verify_evidence`]):
//!
//! - a **SPIFFE JWT-SVID**, verified by the `spiffe` crate against the
//!   trust bundles the operator configures. It is bound to the mission key
//!   by an audience: its `aud` holds the authority's audience *and*
//!   `urn:mandate:jkt:<thumbprint of the mission key>` ([`key_audience`]).
//! - a **launch statement**: an in-toto Statement v1 in a DSSE envelope,
//!   signed by a launcher key the operator registered, naming the agent's
//!   code digest, its environment and the mission key's thumbprint.
//!
//! Either way the evidence names the fresh mission key, so it cannot start
//! a mission for any other key; the store refuses the same evidence for a
//! second mission. What was verified becomes an [`Attestation`]: stored
//! with the mission, carried by its credential (`att`), visible to policy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::clock::UnixTime;
use crate::jwk::{Ed25519Jwk, Thumbprint};

/// The audience prefix that binds a JWT-SVID to a mission key.
pub const KEY_AUDIENCE_PREFIX: &str = "urn:mandate:jkt:";
/// DSSE `payloadType` of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1 `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of a Mandate launch statement.
pub const LAUNCH_PREDICATE_TYPE: &str = "urn:mandate:launch:v1";
/// Largest evidence accepted (token or DSSE payload), in bytes.
pub const MAX_EVIDENCE_BYTES: usize = 16 * 1024;
/// Longest a launch statement may be valid for.
pub const MAX_LAUNCH_STATEMENT_SECS: u64 = 3600;
/// How far in the future a launch statement's `issued_at` may be.
const CLOCK_SKEW_SECS: u64 = 60;
const MAX_ENVIRONMENT_ENTRIES: usize = 32;
const MAX_ENVIRONMENT_CHARS: usize = 256;
const MAX_REQUIREMENT_ENTRIES: usize = 32;

/// The audience a JWT-SVID must carry to be bound to the mission key
/// `jkt`.
#[must_use]
pub fn key_audience(jkt: &Thumbprint) -> String {
    format!("{KEY_AUDIENCE_PREFIX}{jkt}")
}

/// Evidence an agent presents when it starts a mission.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Evidence {
    /// A SPIFFE JWT-SVID (compact JWS) whose `aud` holds the authority's
    /// audience and `urn:mandate:jkt:<mission key thumbprint>`.
    JwtSvid { token: String },
    /// A DSSE envelope holding an in-toto statement with predicate type
    /// `urn:mandate:launch:v1`, signed by a registered launcher.
    LaunchStatement { envelope: DsseEnvelope },
}

impl fmt::Debug for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A JWT-SVID is a bearer token for its other audiences: never
        // printed.
        match self {
            Self::JwtSvid { token } => f
                .debug_struct("JwtSvid")
                .field("len", &token.len())
                .finish_non_exhaustive(),
            Self::LaunchStatement { .. } => {
                f.debug_struct("LaunchStatement").finish_non_exhaustive()
            }
        }
    }
}

impl Evidence {
    /// Reads evidence from a file's text: a DSSE envelope (JSON), the
    /// `{"type": …}` form, or a bare JWT-SVID.
    pub fn from_text(text: &str) -> Result<Self, AttestationError> {
        let text = text.trim();
        if text.len() > MAX_EVIDENCE_BYTES * 2 {
            return Err(AttestationError::Invalid(
                "the evidence is too large".into(),
            ));
        }
        if text.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| AttestationError::Invalid(format!("not JSON: {e}")))?;
            if value.get("type").is_some() {
                return serde_json::from_value(value)
                    .map_err(|e| AttestationError::Invalid(e.to_string()));
            }
            let envelope = serde_json::from_value(value)
                .map_err(|e| AttestationError::Invalid(format!("not a DSSE envelope: {e}")))?;
            return Ok(Self::LaunchStatement { envelope });
        }
        if text.split('.').count() == 3 && !text.contains(char::is_whitespace) {
            return Ok(Self::JwtSvid {
                token: text.to_owned(),
            });
        }
        Err(AttestationError::Invalid(
            "neither a JWT-SVID nor a DSSE envelope".into(),
        ))
    }
}

/// A DSSE envelope (the JSON envelope of the DSSE v1 protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DsseEnvelope {
    /// base64 of the serialized statement.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<DsseSignature>,
}

/// One signature of a DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DsseSignature {
    /// The launcher's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    /// base64 of the Ed25519 signature over the DSSE PAE.
    pub sig: String,
}

impl From<dsse::Envelope> for DsseEnvelope {
    fn from(e: dsse::Envelope) -> Self {
        Self {
            payload: e.payload,
            payload_type: e.payload_type,
            signatures: e
                .signatures
                .into_iter()
                .map(|s| DsseSignature {
                    keyid: s.keyid,
                    sig: s.sig,
                })
                .collect(),
        }
    }
}

impl From<&DsseEnvelope> for dsse::Envelope {
    fn from(e: &DsseEnvelope) -> Self {
        Self {
            payload: e.payload.clone(),
            payload_type: e.payload_type.clone(),
            signatures: e
                .signatures
                .iter()
                .map(|s| dsse::Signature {
                    keyid: s.keyid.clone(),
                    sig: s.sig.clone(),
                })
                .collect(),
        }
    }
}

/// An in-toto Statement v1 as a launch statement uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchStatement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// Exactly one: the code that was launched, with its SHA-256.
    pub subject: Vec<StatementSubject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: LaunchPredicate,
}

/// An in-toto resource descriptor: a name and its digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementSubject {
    pub name: String,
    /// Algorithm → lowercase hex (`sha256` is required here).
    pub digest: BTreeMap<String, String>,
}

/// The predicate of a launch statement (`urn:mandate:launch:v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchPredicate {
    /// The launcher's registered name; must be the key that signed.
    pub launcher: String,
    /// The authority's audience (its issuer unless configured otherwise).
    pub audience: String,
    /// The fresh mission key the launched code holds.
    pub mission_key: MissionKeyRef,
    /// What the launcher observed of the environment (host, OS, user…).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// A mission key by its RFC 7638 thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissionKeyRef {
    pub jkt: Thumbprint,
}

impl LaunchStatement {
    /// A statement that `code` (a name and its SHA-256, lowercase hex) was
    /// launched by `launcher` holding the mission key `jkt`, valid for
    /// `ttl_secs` from `now`.
    #[must_use]
    #[expect(
        clippy::too_many_arguments,
        reason = "each part of the statement is its own input"
    )]
    pub fn new(
        launcher: &str,
        audience: &str,
        code_name: &str,
        code_sha256_hex: &str,
        jkt: &Thumbprint,
        environment: BTreeMap<String, String>,
        now: UnixTime,
        ttl_secs: u64,
    ) -> Self {
        Self {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject: vec![StatementSubject {
                name: code_name.to_owned(),
                digest: [("sha256".to_owned(), code_sha256_hex.to_owned())].into(),
            }],
            predicate_type: LAUNCH_PREDICATE_TYPE.to_owned(),
            predicate: LaunchPredicate {
                launcher: launcher.to_owned(),
                audience: audience.to_owned(),
                mission_key: MissionKeyRef { jkt: jkt.clone() },
                environment,
                issued_at: now.0,
                expires_at: now.plus(ttl_secs).0,
            },
        }
    }
}

/// How a mission's attestation was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AttestationMethod {
    JwtSvid,
    LaunchStatement,
}

impl AttestationMethod {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JwtSvid => "jwt_svid",
            Self::LaunchStatement => "launch_statement",
        }
    }
}

/// Verified evidence, as the mission, its credential (`att`) and its audit
/// record carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attestation {
    pub method: AttestationMethod,
    /// The workload's SPIFFE ID (`jwt_svid`), or the name of the launched
    /// code (`launch_statement`).
    pub subject: String,
    /// `sha256:<hex>` of the launched code (`launch_statement` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_digest: Option<String>,
    /// The launcher that signed (`launch_statement` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<String>,
    /// The environment the launcher recorded (`launch_statement` only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// base64url(SHA-256) of what was signed: the JWT-SVID's signing input
    /// (`header.payload`), or the launch statement's payload.
    pub evidence_s256: String,
    /// When the authority verified it (Unix seconds).
    pub verified_at: u64,
}

impl Attestation {
    /// The workload's SPIFFE ID, for JWT-SVID evidence.
    #[must_use]
    pub fn workload(&self) -> Option<&str> {
        (self.method == AttestationMethod::JwtSvid).then_some(self.subject.as_str())
    }
}

/// Why evidence is refused. Every variant names a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("{0}")]
    Required(String),
    #[error("the evidence is not valid: {0}")]
    Invalid(String),
    #[error("the evidence is not signed by a trusted authority: {0}")]
    Untrusted(String),
    #[error("the evidence has expired: {0}")]
    Expired(String),
    #[error("the evidence is for another audience: {0}")]
    WrongAudience(String),
    #[error("the evidence is not bound to this mission key: {0}")]
    Unbound(String),
    #[error("the attestation is not what is required: {0}")]
    Mismatch(String),
    #[error("this evidence already started another mission")]
    Replayed,
}

impl AttestationError {
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Required(_) => "attestation_required",
            Self::Invalid(_) => "attestation_invalid",
            Self::Untrusted(_) => "attestation_untrusted",
            Self::Expired(_) => "attestation_expired",
            Self::WrongAudience(_) => "attestation_audience",
            Self::Unbound(_) => "attestation_unbound",
            Self::Mismatch(_) => "attestation_mismatch",
            Self::Replayed => "attestation_replayed",
        }
    }
}

/// What the authority trusts: SPIFFE JWT bundles per trust domain, and
/// launcher keys by name.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    /// The audience evidence must name: the authority's issuer unless
    /// configured otherwise.
    pub audience: String,
    pub bundles: spiffe::JwtBundleSet,
    /// Launcher name → its Ed25519 public key.
    pub launchers: BTreeMap<String, Ed25519Jwk>,
}

impl TrustAnchors {
    /// No trust domain, no launcher: every piece of evidence is refused.
    #[must_use]
    pub fn none(audience: &str) -> Self {
        Self {
            audience: audience.to_owned(),
            bundles: spiffe::JwtBundleSet::new(),
            launchers: BTreeMap::new(),
        }
    }

    /// Adds a trust domain's JWT bundle from a JWKS document (a SPIFFE
    /// bundle or a plain JWKS).
    pub fn add_bundle(&mut self, trust_domain: &str, jwks: &[u8]) -> Result<(), String> {
        let td = spiffe::TrustDomain::new(trust_domain)
            .map_err(|e| format!("`{trust_domain}` is not a SPIFFE trust domain: {e}"))?;
        let bundle = spiffe::JwtBundle::from_jwt_authorities(td, jwks)
            .map_err(|e| format!("the bundle of `{trust_domain}` is not a JWKS: {e}"))?;
        self.bundles.add_bundle(bundle);
        Ok(())
    }

    /// Whether a trust domain has a bundle.
    #[must_use]
    pub fn trusts_domain(&self, trust_domain: &str) -> bool {
        spiffe::TrustDomain::new(trust_domain)
            .ok()
            .is_some_and(|td| self.bundles.get(&td).is_some())
    }
}

/// Whether `name` is a SPIFFE trust domain name.
pub fn check_trust_domain(name: &str) -> Result<(), String> {
    spiffe::TrustDomain::new(name)
        .map(|_| ())
        .map_err(|e| format!("`{name}` is not a SPIFFE trust domain: {e}"))
}

/// Verifies `evidence` for a mission whose key is `jkt`, at `now`.
pub fn verify_evidence(
    evidence: &Evidence,
    anchors: &TrustAnchors,
    jkt: &Thumbprint,
    now: UnixTime,
) -> Result<Attestation, AttestationError> {
    match evidence {
        Evidence::JwtSvid { token } => verify_svid(token, anchors, jkt, now, false),
        Evidence::LaunchStatement { envelope } => verify_launch(envelope, anchors, jkt, now),
    }
}

/// Checks evidence again, offline, against what a credential says of it
/// (`claimed`): same signer, same subject and code, same digest, same key.
/// A launch statement is checked as of `claimed.verified_at`; a JWT-SVID
/// whose only fault is having expired since is accepted, since its
/// signature and audience are checked before its expiry.
pub fn recheck_evidence(
    evidence: &Evidence,
    anchors: &TrustAnchors,
    jkt: &Thumbprint,
    claimed: &Attestation,
) -> Result<Attestation, AttestationError> {
    let at = UnixTime(claimed.verified_at);
    let mut found = match evidence {
        Evidence::JwtSvid { token } => {
            let found = verify_svid(token, anchors, jkt, at, true)?;
            svid_valid_at(token, at)?;
            found
        }
        Evidence::LaunchStatement { envelope } => verify_launch(envelope, anchors, jkt, at)?,
    };
    found.verified_at = claimed.verified_at;
    if &found != claimed {
        return Err(AttestationError::Mismatch(
            "the evidence is not the one the credential names".into(),
        ));
    }
    Ok(found)
}

fn verify_svid(
    token: &str,
    anchors: &TrustAnchors,
    jkt: &Thumbprint,
    now: UnixTime,
    expired_ok: bool,
) -> Result<Attestation, AttestationError> {
    use spiffe::svid::jwt::{JwtSvidError, JwtVerificationErrorKind};
    if token.len() > MAX_EVIDENCE_BYTES {
        return Err(AttestationError::Invalid(
            "the JWT-SVID is too large".into(),
        ));
    }
    let binding = key_audience(jkt);
    let svid = match spiffe::JwtSvid::parse_and_validate(token, &anchors.bundles, &[&binding]) {
        Ok(svid) => svid,
        Err(e) => {
            let refusal = match &e {
                JwtSvidError::BundleNotFound(td) => {
                    AttestationError::Untrusted(format!("no trust bundle for trust domain `{td}`"))
                }
                // The `kid` is the sender's, unverified: never echoed.
                JwtSvidError::AuthorityNotFound(_) => AttestationError::Untrusted(
                    "its `kid` names no key of its trust domain's bundle".into(),
                ),
                JwtSvidError::InvalidToken(v) => match v.kind() {
                    // Signature and audience are checked before expiry:
                    // an expired SVID has passed both.
                    JwtVerificationErrorKind::Expired if expired_ok => {
                        let svid = spiffe::JwtSvid::parse_insecure(token)
                            .map_err(|e| AttestationError::Invalid(e.to_string()))?;
                        return svid_attestation(&svid, token, anchors, now);
                    }
                    JwtVerificationErrorKind::Expired => {
                        AttestationError::Expired("the JWT-SVID is past its `exp`".into())
                    }
                    JwtVerificationErrorKind::NotYetValid => {
                        AttestationError::Invalid("the JWT-SVID is not valid yet (`nbf`)".into())
                    }
                    JwtVerificationErrorKind::AudienceMismatch => {
                        AttestationError::Unbound(format!("its `aud` does not hold `{binding}`"))
                    }
                    JwtVerificationErrorKind::InvalidSignature => {
                        AttestationError::Invalid("the signature does not verify".into())
                    }
                    _ => AttestationError::Invalid(v.to_string()),
                },
                other => AttestationError::Invalid(other.to_string()),
            };
            return Err(refusal);
        }
    };
    svid_attestation(&svid, token, anchors, now)
}

/// Refuses an SVID (already verified) that was not valid at `at`: its
/// `nbf` after it, or its `exp` at or before it.
fn svid_valid_at(token: &str, at: UnixTime) -> Result<(), AttestationError> {
    let claims: serde_json::Value = token
        .split('.')
        .nth(1)
        .and_then(b64::decode)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| AttestationError::Invalid("the JWT-SVID's claims do not parse".into()))?;
    let exp = claims.get("exp").and_then(serde_json::Value::as_u64);
    let nbf = claims.get("nbf").and_then(serde_json::Value::as_u64);
    if exp.is_none_or(|exp| exp <= at.0) || nbf.is_some_and(|nbf| nbf > at.0) {
        return Err(AttestationError::Expired(format!(
            "the JWT-SVID was not valid at {}, when the authority says it verified it",
            at.0
        )));
    }
    Ok(())
}

fn svid_attestation(
    svid: &spiffe::JwtSvid,
    token: &str,
    anchors: &TrustAnchors,
    now: UnixTime,
) -> Result<Attestation, AttestationError> {
    if !svid.audience().iter().any(|a| a == &anchors.audience) {
        return Err(AttestationError::WrongAudience(format!(
            "its `aud` does not hold `{}`",
            anchors.audience
        )));
    }
    let signing_input = token
        .rsplit_once('.')
        .map(|(input, _)| input)
        .ok_or_else(|| AttestationError::Invalid("not a compact JWS".into()))?;
    Ok(Attestation {
        method: AttestationMethod::JwtSvid,
        subject: svid.spiffe_id().to_string(),
        code_digest: None,
        launcher: None,
        environment: BTreeMap::new(),
        evidence_s256: b64::s256(signing_input.as_bytes()),
        verified_at: now.0,
    })
}

fn verify_launch(
    envelope: &DsseEnvelope,
    anchors: &TrustAnchors,
    jkt: &Thumbprint,
    now: UnixTime,
) -> Result<Attestation, AttestationError> {
    if envelope.payload.len() > MAX_EVIDENCE_BYTES * 4 / 3 + 4 || envelope.signatures.len() > 8 {
        return Err(AttestationError::Invalid(
            "the launch statement is too large".into(),
        ));
    }
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(AttestationError::Invalid(format!(
            "payloadType is not `{IN_TOTO_PAYLOAD_TYPE}`"
        )));
    }
    // Only launchers the envelope names are tried; a signature without a
    // `keyid`, or naming no registered launcher, is not trusted.
    let mut verifiers = Vec::new();
    for name in envelope
        .signatures
        .iter()
        .filter_map(|s| s.keyid.as_deref())
    {
        if let Some(jwk) = anchors.launchers.get(name)
            && let Some(public) = jwk.public_bytes()
            && !verifiers.iter().any(|(n, _): &(String, _)| n == name)
        {
            let v = dsse::Ed25519Verifier::from_bytes(&public)
                .map_err(|e| AttestationError::Invalid(e.to_string()))?
                .with_key_id(name);
            verifiers.push((name.to_owned(), v));
        }
    }
    if verifiers.is_empty() {
        return Err(AttestationError::Untrusted(
            "no signature names a registered launcher".into(),
        ));
    }
    let keys: Vec<&dyn dsse::Verifier> = verifiers
        .iter()
        .map(|(_, v)| v as &dyn dsse::Verifier)
        .collect();
    let verified = dsse::verify(&dsse::Envelope::from(envelope), &keys, 1).map_err(|_| {
        let names: Vec<String> = verifiers.iter().map(|(n, _)| n.clone()).collect();
        AttestationError::Invalid(format!(
            "no signature verifies with the registered key of launcher {} (signed by another key, or changed since)",
            list(&names)
        ))
    })?;
    let statement: LaunchStatement = serde_json::from_slice(&verified.payload)
        .map_err(|e| AttestationError::Invalid(format!("not a launch statement: {e}")))?;
    if statement.statement_type != STATEMENT_TYPE {
        return Err(AttestationError::Invalid(format!(
            "`_type` is not `{STATEMENT_TYPE}`"
        )));
    }
    if statement.predicate_type != LAUNCH_PREDICATE_TYPE {
        return Err(AttestationError::Invalid(format!(
            "`predicateType` is not `{LAUNCH_PREDICATE_TYPE}`"
        )));
    }
    let p = &statement.predicate;
    // The statement says who launched; that must be a key that signed it.
    if !verified.accepted_keys.iter().any(|k| k == &p.launcher) {
        return Err(AttestationError::Invalid(format!(
            "the statement names launcher `{}`, which did not sign it",
            p.launcher
        )));
    }
    let [subject] = statement.subject.as_slice() else {
        return Err(AttestationError::Invalid(
            "a launch statement names exactly one subject".into(),
        ));
    };
    let digest = subject
        .digest
        .get("sha256")
        .filter(|d| is_sha256_hex(d))
        .ok_or_else(|| {
            AttestationError::Invalid("the subject has no SHA-256 digest (64 lowercase hex)".into())
        })?;
    if subject.name.is_empty()
        || subject.name.len() > MAX_ENVIRONMENT_CHARS
        || subject.name.chars().any(char::is_control)
    {
        return Err(AttestationError::Invalid(format!(
            "the subject's name must be 1 to {MAX_ENVIRONMENT_CHARS} characters without control characters"
        )));
    }
    if p.environment.len() > MAX_ENVIRONMENT_ENTRIES
        || p.environment.iter().any(|(k, v)| {
            k.is_empty()
                || k.len() > MAX_ENVIRONMENT_CHARS
                || v.len() > MAX_ENVIRONMENT_CHARS
                || k.chars().chain(v.chars()).any(char::is_control)
        })
    {
        return Err(AttestationError::Invalid(format!(
            "the environment holds at most {MAX_ENVIRONMENT_ENTRIES} entries of at most {MAX_ENVIRONMENT_CHARS} characters, without control characters"
        )));
    }
    if p.audience != anchors.audience {
        return Err(AttestationError::WrongAudience(format!(
            "it names `{}`, not `{}`",
            p.audience, anchors.audience
        )));
    }
    if &p.mission_key.jkt != jkt {
        return Err(AttestationError::Unbound(format!(
            "it names mission key `{}`",
            p.mission_key.jkt
        )));
    }
    if p.expires_at <= p.issued_at || p.expires_at - p.issued_at > MAX_LAUNCH_STATEMENT_SECS {
        return Err(AttestationError::Invalid(format!(
            "a launch statement is valid for 1 to {MAX_LAUNCH_STATEMENT_SECS} s after it is issued"
        )));
    }
    if p.issued_at > now.0.saturating_add(CLOCK_SKEW_SECS) {
        return Err(AttestationError::Invalid(
            "the statement is issued in the future".into(),
        ));
    }
    if now.0 >= p.expires_at {
        return Err(AttestationError::Expired(format!(
            "the launch statement expired at {}",
            p.expires_at
        )));
    }
    Ok(Attestation {
        method: AttestationMethod::LaunchStatement,
        subject: subject.name.clone(),
        code_digest: Some(format!("sha256:{digest}")),
        launcher: Some(p.launcher.clone()),
        environment: p.environment.clone(),
        evidence_s256: b64::s256(&verified.payload),
        verified_at: now.0,
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What evidence a mission must present: declared on an agent's
/// registration, on a mission, or on a delegation hop. Evidence satisfies
/// it when it comes from one of the named workloads or launchers (any,
/// when neither list is given) and, if `code_digests` is given, names one
/// of those digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestationRequirement {
    /// SPIFFE IDs, exact (`spiffe://example.org/agents/billing`) or every
    /// ID under a path (`spiffe://example.org/agents/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spiffe_ids: Vec<String>,
    /// Registered launchers whose launch statements are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launchers: Vec<String>,
    /// Accepted code digests, `sha256:<64 lowercase hex>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_digests: Vec<String>,
}

impl AttestationRequirement {
    /// Checks the requirement's own shape: not empty, every SPIFFE ID (or
    /// pattern) and digest well formed.
    pub fn validate(&self) -> Result<(), String> {
        if self.spiffe_ids.is_empty() && self.launchers.is_empty() && self.code_digests.is_empty() {
            return Err(
                "an attestation requirement names at least one SPIFFE ID, launcher or code digest"
                    .into(),
            );
        }
        if [&self.spiffe_ids, &self.launchers, &self.code_digests]
            .iter()
            .any(|l| l.len() > MAX_REQUIREMENT_ENTRIES)
        {
            return Err(format!(
                "an attestation requirement lists at most {MAX_REQUIREMENT_ENTRIES} entries of each kind"
            ));
        }
        for id in &self.spiffe_ids {
            let exact = id.strip_suffix("/*").unwrap_or(id);
            let parsed = spiffe::SpiffeId::new(exact)
                .map_err(|e| format!("`{id}` is not a SPIFFE ID or `spiffe://…/*` pattern: {e}"))?;
            // Matched as written against IDs in their one canonical
            // spelling: another spelling would never match.
            if parsed.to_string() != exact {
                return Err(format!(
                    "`{id}` is not written as SPIFFE IDs are (write `{parsed}{}`)",
                    if exact.len() < id.len() { "/*" } else { "" }
                ));
            }
        }
        for name in &self.launchers {
            if !crate::names::valid_name(name) {
                return Err(format!("`{name}` is not a launcher name"));
            }
        }
        for d in &self.code_digests {
            if !d.strip_prefix("sha256:").is_some_and(is_sha256_hex) {
                return Err(format!(
                    "code digest `{d}` is not `sha256:` and 64 lowercase hex digits"
                ));
            }
        }
        Ok(())
    }

    /// In words: what evidence meets it.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.spiffe_ids.is_empty() {
            parts.push(format!("a JWT-SVID of {}", self.spiffe_ids.join(" or ")));
        }
        if !self.launchers.is_empty() {
            parts.push(format!(
                "a launch statement of launcher {}",
                self.launchers.join(" or ")
            ));
        }
        let mut s = if parts.is_empty() {
            "any verified evidence".to_owned()
        } else {
            parts.join(", or ")
        };
        if !self.code_digests.is_empty() {
            s.push_str(&format!(", for code {}", self.code_digests.join(" or ")));
        }
        s
    }

    /// The trust domains the requirement names.
    #[must_use]
    pub fn trust_domains(&self) -> Vec<String> {
        self.spiffe_ids
            .iter()
            .filter_map(|id| spiffe::SpiffeId::new(id.strip_suffix("/*").unwrap_or(id)).ok())
            .map(|id| id.trust_domain_name().to_owned())
            .collect()
    }

    /// Whether `a` satisfies the requirement; if not, why.
    pub fn check(&self, a: &Attestation) -> Result<(), AttestationError> {
        let by_identity = self.spiffe_ids.is_empty() && self.launchers.is_empty();
        let from_named = match a.method {
            AttestationMethod::JwtSvid => self
                .spiffe_ids
                .iter()
                .any(|pattern| spiffe_id_matches(pattern, &a.subject)),
            AttestationMethod::LaunchStatement => a
                .launcher
                .as_ref()
                .is_some_and(|l| self.launchers.contains(l)),
        };
        if !by_identity && !from_named {
            return Err(AttestationError::Mismatch(match a.method {
                AttestationMethod::JwtSvid => format!(
                    "workload `{}` is not one of {}",
                    a.subject,
                    list(&self.spiffe_ids)
                ),
                AttestationMethod::LaunchStatement => format!(
                    "launcher `{}` is not one of {}",
                    a.launcher.as_deref().unwrap_or_default(),
                    list(&self.launchers)
                ),
            }));
        }
        if !self.code_digests.is_empty()
            && !a
                .code_digest
                .as_ref()
                .is_some_and(|d| self.code_digests.contains(d))
        {
            return Err(AttestationError::Mismatch(match &a.code_digest {
                Some(d) => format!(
                    "code `{}` ({d}) is not one of {}",
                    a.subject,
                    list(&self.code_digests)
                ),
                None => format!(
                    "evidence of workload `{}` names no code; code {} is required (a launch statement)",
                    a.subject,
                    list(&self.code_digests)
                ),
            }));
        }
        Ok(())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pattern` is an exact SPIFFE ID, or `spiffe://td/path/*`: every ID
/// strictly below that path.
fn spiffe_id_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => id.len() > prefix.len() && id.starts_with(prefix),
        _ => pattern == id,
    }
}

/// The acting-principal proof: *this code, in this environment, acts for
/// this person, on this mission, through this chain, under these policies,
/// until then* — checked offline from one credential (and its links).
#[derive(Debug, Clone, Serialize)]
pub struct ActingPrincipal {
    /// What holds the mission key, as the authority verified it at start;
    /// `None`: the mission is not attested.
    pub attestation: Option<Attestation>,
    /// Whether the evidence itself was checked again here, against the
    /// trust bundles and launcher keys given (not only the authority's
    /// word in the credential).
    pub evidence_rechecked: bool,
    pub principal: crate::ids::PrincipalName,
    pub agent: crate::ids::AgentName,
    pub mission_id: crate::ids::MissionId,
    pub mission_s256: String,
    /// Root first; the last hop is the acting agent's own mission.
    pub chain: Vec<crate::delegation::VerifiedHop>,
    pub jkt: Thumbprint,
    /// The organisation's policy set when the credential was issued.
    pub policy_s256: Option<String>,
    pub issuer: String,
    pub valid_until: u64,
    /// The credential's claims, as verified.
    #[serde(skip)]
    pub claims: crate::credential::MissionClaims,
}

impl ActingPrincipal {
    /// The statement in one line (times in Unix seconds).
    #[must_use]
    pub fn statement(&self) -> String {
        self.statement_with(|t| t.to_string())
    }

    /// The statement in one line, with times as `time` writes them.
    #[must_use]
    pub fn statement_with(&self, time: impl Fn(u64) -> String) -> String {
        let code = match &self.attestation {
            None => "unattested code".to_owned(),
            Some(a) => match a.method {
                AttestationMethod::JwtSvid => format!("workload {}", a.subject),
                AttestationMethod::LaunchStatement => format!(
                    "code {} ({}, launched by {})",
                    a.code_digest.as_deref().unwrap_or("?"),
                    a.subject,
                    a.launcher.as_deref().unwrap_or("?")
                ),
            },
        };
        let through = if self.chain.len() > 1 {
            let agents: Vec<String> = self.chain.iter().map(|h| h.agent.to_string()).collect();
            format!(" through {}", agents.join(" → "))
        } else {
            String::new()
        };
        format!(
            "{code} holding key {} acts for {} as {} on mission {} ({}){through}, under policy set {}, until {}",
            self.jkt,
            self.principal,
            self.agent,
            self.mission_id,
            self.mission_s256,
            self.policy_s256.as_deref().unwrap_or("(not named)"),
            time(self.valid_until)
        )
    }
}

/// Why an acting-principal proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActingPrincipalError {
    #[error(transparent)]
    Chain(#[from] crate::delegation::DelegationChainError),
    #[error(transparent)]
    Evidence(#[from] AttestationError),
    #[error("the credential names no attestation, so there is no evidence to check")]
    NotAttested,
}

impl ActingPrincipalError {
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Chain(e) => e.code(),
            Self::Evidence(e) => e.code(),
            Self::NotAttested => "not_attested",
        }
    }
}

/// Checks a credential and its delegation links offline against the
/// authority's JWKS, and, given the evidence the mission was started with
/// and the anchors to check it against, the evidence too: it must be the
/// evidence the credential names, bound to the credential's key.
pub fn verify_acting_principal(
    credential: &str,
    links: &[String],
    jwks: &crate::jwk::Jwks,
    issuer: &str,
    now: UnixTime,
    evidence: Option<(&Evidence, &TrustAnchors)>,
) -> Result<ActingPrincipal, ActingPrincipalError> {
    let verified =
        crate::delegation::verify_delegation_chain(credential, links, jwks, issuer, now)?;
    let c = verified.claims;
    let claims = c.clone();
    let evidence_rechecked = match evidence {
        None => false,
        Some((ev, anchors)) => {
            let claimed = c.att.as_ref().ok_or(ActingPrincipalError::NotAttested)?;
            recheck_evidence(ev, anchors, &c.cnf.jkt, claimed)?;
            true
        }
    };
    Ok(ActingPrincipal {
        attestation: c.att,
        evidence_rechecked,
        principal: c.sub,
        agent: c.act.sub,
        mission_id: c.mission_id,
        mission_s256: c.mission_s256,
        chain: verified.hops,
        jkt: c.cnf.jkt,
        policy_s256: c.policy_s256,
        issuer: c.iss,
        valid_until: c.exp,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_below_a_path_only() {
        assert!(spiffe_id_matches(
            "spiffe://ex.org/a/*",
            "spiffe://ex.org/a/b"
        ));
        assert!(spiffe_id_matches(
            "spiffe://ex.org/a/*",
            "spiffe://ex.org/a/b/c"
        ));
        assert!(!spiffe_id_matches(
            "spiffe://ex.org/a/*",
            "spiffe://ex.org/a"
        ));
        assert!(!spiffe_id_matches(
            "spiffe://ex.org/a/*",
            "spiffe://ex.org/ab"
        ));
        assert!(!spiffe_id_matches(
            "spiffe://ex.org/a",
            "spiffe://ex.org/a/b"
        ));
        assert!(spiffe_id_matches("spiffe://ex.org/a", "spiffe://ex.org/a"));
    }

    #[test]
    fn requirements_are_checked_for_shape() {
        let mut r = AttestationRequirement::default();
        assert!(r.validate().is_err());
        r.spiffe_ids = vec!["spiffe://example.org/agents/*".into()];
        assert!(r.validate().is_ok());
        assert_eq!(r.trust_domains(), vec!["example.org".to_owned()]);
        r.code_digests = vec!["sha256:ABC".into()];
        assert!(r.validate().is_err());
        r.code_digests = vec![format!("sha256:{}", "a".repeat(64))];
        assert!(r.validate().is_ok());
        r.spiffe_ids = vec!["https://example.org/x".into()];
        assert!(r.validate().is_err());
    }
}
