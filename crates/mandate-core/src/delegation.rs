//! Delegation chains: a running mission delegates part of itself to a
//! sub-agent, as a child mission (docs/adr/0019-delegation-chains.md).
//!
//! Three objects:
//! - the child's **body** names its ancestors, root first
//!   ([`MissionRef`]), so the chain is part of what `mission_s256` hashes;
//! - a **link** ([`LinkClaims`], JWS `typ` `mandate-link+jwt`) signed by the
//!   parent's *mission key*, binding parent and child missions, the child
//!   agent, depth and expiry: the parent's own consent, which the
//!   authority cannot make for it;
//! - the child's **credential** carries the chain ([`ChainHop`]: each
//!   ancestor's mission, agent and key thumbprint) and the SHA-256 of every
//!   link, and nests `act` (RFC 8693 §4.1, current actor outermost).
//!
//! [`verify_delegation_chain`] checks a presented chain offline: the authority's
//! signature on the credential, every link's signature by the key the
//! chain binds for its parent, each link's digest against the credential,
//! and that lifetimes and depth only narrow.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

use crate::b64;
use crate::clock::UnixTime;
use crate::credential::{Actor, MissionClaims, UnverifiedCredential};
use crate::error::{CredentialError, KeyError};
use crate::ids::{AgentName, MissionId};
use crate::jwk::{Ed25519Jwk, Jwks, Thumbprint};
use crate::keys::MissionKey;
use crate::mission::MissionBody;
use crate::random::SecureRandom;

/// The JWS `typ` of a delegation link.
pub const LINK_TYP: &str = "mandate-link+jwt";

/// Longest link accepted for parsing.
const MAX_LINK_BYTES: usize = 4 * 1024;

/// How deep a chain may grow unless configured otherwise: the root mission
/// and three delegations below it.
pub const DEFAULT_MAX_DEPTH: u32 = 4;

/// A mission by id and body hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissionRef {
    pub id: MissionId,
    pub s256: String,
}

/// Why a delegation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    #[error("the child would outlive its parent: at most {max} s are left, {got} s asked")]
    TtlWidens { max: u64, got: u64 },
    #[error("the child's budget exceeds what is left of the parent's: at most {max}, {got} asked")]
    BudgetWidens { max: u64, got: u64 },
    #[error(
        "the chain would be {got} missions deep; at most {max} are allowed (`missions.max_delegation_depth`)"
    )]
    TooDeep { max: u32, got: u32 },
    #[error(
        "`{0}` already acts in this chain; delegate to another agent or to an ephemeral sub-agent"
    )]
    AgentInChain(AgentName),
    #[error(
        "`{0}` is an ephemeral sub-agent: it exists for one mission and cannot be delegated to"
    )]
    EphemeralTarget(AgentName),
    #[error("the delegation link is not valid: {0}")]
    BadLink(String),
    #[error("the proposed mission is not one this authority would delegate: {0}")]
    BadProposal(String),
    /// A field of the child itself is not valid (goal, TTL, budget,
    /// policies), as for any mission.
    #[error(transparent)]
    Input(#[from] crate::error::InputError),
}

impl DelegationError {
    /// Stable problem code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TtlWidens { .. } | Self::BudgetWidens { .. } => "delegation_widens",
            Self::TooDeep { .. } => "delegation_too_deep",
            Self::AgentInChain(_) => "delegation_cycle",
            Self::EphemeralTarget(_) => "invalid_request",
            Self::BadLink(_) => "bad_link",
            Self::BadProposal(_) => "bad_proposal",
            Self::Input(e) => e.code(),
        }
    }
}

/// One side of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkParty {
    pub mission_id: MissionId,
    pub mission_s256: String,
    pub agent: AgentName,
}

/// The claims of a delegation link, signed by the parent's mission key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkClaims {
    /// The authority both missions belong to.
    pub iss: String,
    pub parent: LinkParty,
    /// The thumbprint of the parent's mission key: the key that signs.
    pub parent_jkt: Thumbprint,
    pub child: LinkParty,
    /// The child's depth: the root mission is 1.
    pub depth: u32,
    pub iat: u64,
    /// The child mission's end.
    pub exp: u64,
    pub jti: String,
}

impl LinkClaims {
    /// What a parent signs to delegate `child` (a body whose last ancestor
    /// is the parent). `iat` and `jti` are filled in when signing.
    #[must_use]
    pub fn for_child(
        parent: &LinkParty,
        parent_jkt: &Thumbprint,
        child: &MissionBody,
        child_s256: &str,
    ) -> Self {
        Self {
            iss: child.iss.clone(),
            parent: parent.clone(),
            parent_jkt: parent_jkt.clone(),
            child: LinkParty {
                mission_id: child.id.clone(),
                mission_s256: child_s256.to_owned(),
                agent: child.agent.clone(),
            },
            depth: child.depth(),
            iat: 0,
            exp: child.expires_at,
            jti: String::new(),
        }
    }

    /// Whether `self` says the same as `expected` (all but `iat` and `jti`,
    /// which the signer chooses).
    #[must_use]
    pub fn binds_same(&self, expected: &Self) -> bool {
        self.iss == expected.iss
            && self.parent == expected.parent
            && self.parent_jkt == expected.parent_jkt
            && self.child == expected.child
            && self.depth == expected.depth
            && self.exp == expected.exp
    }
}

impl MissionKey {
    /// Signs a delegation link: the parent's consent to `claims`, with a
    /// fresh `jti` and `iat` = `now`. The public key travels in the header;
    /// a verifier checks its thumbprint against the one the authority
    /// bound for the parent mission.
    pub fn sign_link(
        &self,
        mut claims: LinkClaims,
        now: UnixTime,
        rng: &dyn SecureRandom,
    ) -> Result<String, KeyError> {
        let mut jti = [0u8; 16];
        rng.fill(&mut jti)?;
        claims.jti = b64::encode(&jti);
        claims.iat = now.0;
        self.sign_with_embedded_jwk(LINK_TYP, &claims)
    }
}

/// The digest a credential carries for a link: base64url(SHA-256(JWS)).
#[must_use]
pub fn link_digest(link: &str) -> String {
    b64::s256(link.trim().as_bytes())
}

#[derive(Deserialize)]
struct RawHeader {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<RawJwk>,
    crit: Option<serde::de::IgnoredAny>,
    kid: Option<serde::de::IgnoredAny>,
}

/// The `jwk` header of a link, as sent: an Ed25519 public key (its other
/// members, `kid`, `alg`, `use`, are not read).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    crv: String,
    x: String,
    d: Option<serde::de::IgnoredAny>,
}

/// Verifies a link's signature with the key in its header and returns its
/// claims and that key's thumbprint. Whether that key is the parent's is
/// the caller's to check (against the chain, or the parent's bound key).
pub fn verify_link(link: &str) -> Result<(LinkClaims, Thumbprint), DelegationError> {
    let bad = |m: &str| DelegationError::BadLink(m.to_owned());
    let link = link.trim();
    if link.len() > MAX_LINK_BYTES {
        return Err(bad("too long"));
    }
    let mut parts = link.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a compact JWS"));
    };
    let header: RawHeader = b64::decode(header_b64)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| bad("the header is not base64url JSON"))?;
    if header.typ.as_deref() != Some(LINK_TYP) {
        return Err(bad("typ is not `mandate-link+jwt`"));
    }
    if header.alg.as_deref() != Some("EdDSA") {
        return Err(bad("alg is not EdDSA"));
    }
    if header.crit.is_some() || header.kid.is_some() {
        return Err(bad("the header carries `crit` or `kid`"));
    }
    let jwk = header.jwk.ok_or_else(|| bad("no jwk header"))?;
    if jwk.d.is_some() {
        return Err(bad("the jwk header carries a private key"));
    }
    let public: [u8; 32] = (jwk.kty == "OKP" && jwk.crv == "Ed25519")
        .then(|| b64::decode(&jwk.x))
        .flatten()
        .and_then(|x| x.try_into().ok())
        .ok_or_else(|| bad("jwk is not an Ed25519 public key"))?;
    let signer = Ed25519Jwk::from_public_bytes(&public).thumbprint();
    let key = DecodingKey::from_ed_der(&public);
    // The JWS signing input (RFC 7515 §5.2): the first two parts as sent.
    let signing_input = link
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or_else(|| bad("not a compact JWS"))?;
    match jsonwebtoken::crypto::verify(
        signature_b64,
        signing_input.as_bytes(),
        &key,
        Algorithm::EdDSA,
    ) {
        Ok(true) => {}
        Ok(false) => return Err(bad("the signature does not verify")),
        Err(e) => return Err(DelegationError::BadLink(e.to_string())),
    }
    let claims: LinkClaims = b64::decode(payload_b64)
        .ok_or_else(|| bad("the claims are not base64url"))
        .and_then(|p| {
            serde_json::from_slice(&p)
                .map_err(|e| DelegationError::BadLink(format!("the claims: {e}")))
        })?;
    Ok((claims, signer))
}

/// The JWS `typ` of a delegation proposal.
pub const PROPOSAL_TYP: &str = "mandate-proposal+jwt";

/// How long a proposal may be committed, in seconds.
pub const PROPOSAL_TTL_SECS: u64 = 300;

/// What the authority proposed: this child body (by hash), for this
/// parent, until `exp`. Signed by the authority, so a commit carries only
/// a body the authority itself made (its id and time included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalClaims {
    pub iss: String,
    pub parent: MissionId,
    pub mission_s256: String,
    pub iat: u64,
    pub exp: u64,
}

/// Signs a proposal of the child body `mission_s256` for `parent`.
pub fn sign_proposal(
    key: &crate::keys::AuthorityKey,
    issuer: &str,
    parent: &MissionId,
    mission_s256: &str,
    now: UnixTime,
) -> Result<String, KeyError> {
    key.sign_jwt(
        PROPOSAL_TYP,
        &ProposalClaims {
            iss: issuer.to_owned(),
            parent: parent.clone(),
            mission_s256: mission_s256.to_owned(),
            iat: now.0,
            exp: now.plus(PROPOSAL_TTL_SECS).0,
        },
    )
}

/// Verifies a proposal the authority signed and that it is still valid at
/// `now`; what it binds is the caller's to compare.
pub fn verify_proposal(
    token: &str,
    jwks: &Jwks,
    issuer: &str,
    now: UnixTime,
) -> Result<ProposalClaims, DelegationError> {
    let bad = |m: String| DelegationError::BadProposal(m);
    let token = token.trim();
    if token.len() > MAX_LINK_BYTES {
        return Err(bad("the proposal token is too long".into()));
    }
    let kid = crate::credential::check_authority_header(token, PROPOSAL_TYP)
        .map_err(|e| bad(e.to_string()))?;
    let claims: ProposalClaims = crate::credential::decode_authority_jws(token, &kid, jwks)
        .map_err(|e| bad(format!("the proposal token: {e}")))?;
    if claims.iss != issuer {
        return Err(bad("the proposal token is another authority's".into()));
    }
    if now.0 >= claims.exp || claims.iat > now.0.saturating_add(crate::FRESHNESS_WINDOW_SECS) {
        return Err(bad("it expired; ask for a new proposal".into()));
    }
    Ok(claims)
}

/// An ancestor as a child's credential names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainHop {
    pub mission_id: MissionId,
    pub mission_s256: String,
    pub agent: AgentName,
    /// The thumbprint of the ancestor's mission key, which signed the
    /// next link.
    pub jkt: Thumbprint,
}

/// Why a presented chain is refused. `hop` counts from the root (1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationChainError {
    #[error("the credential: {0}")]
    Credential(#[from] CredentialError),
    #[error("the credential names {expected} links; {got} were presented")]
    LinkCount { expected: usize, got: usize },
    #[error("link {hop} is not the one the credential names (missing, reordered or spliced)")]
    LinkMismatch { hop: usize },
    #[error("link {hop}: {message}")]
    BadLink { hop: usize, message: String },
    #[error("link {hop} is signed by a key other than its parent's mission key")]
    WrongSigner { hop: usize },
    #[error("link {hop} does not bind the missions the chain names: {message}")]
    Unbound { hop: usize, message: String },
    #[error("link {hop} widens the chain: {message}")]
    Widens { hop: usize, message: String },
    #[error("the credential's nested `act` does not match its chain")]
    ActorsMismatch,
}

impl DelegationChainError {
    /// Stable problem code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Credential(e) => e.code(),
            _ => "bad_chain",
        }
    }
}

/// One verified hop of a chain, root first; the last is the credential's
/// own mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedHop {
    pub depth: u32,
    pub mission_id: MissionId,
    pub mission_s256: String,
    pub agent: AgentName,
    pub jkt: Thumbprint,
    /// The link that delegated this hop (none for the root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkClaims>,
}

/// A chain that checked out offline.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    pub claims: MissionClaims,
    pub hops: Vec<VerifiedHop>,
}

/// The nested `act` of a credential whose acting agent is `leaf` and whose
/// ancestors' agents are `chain` (root first): current actor outermost.
#[must_use]
pub fn nested_actor(leaf: &AgentName, chain: &[ChainHop]) -> Actor {
    let mut prior: Option<Box<Actor>> = None;
    for hop in chain {
        prior = Some(Box::new(Actor {
            sub: hop.agent.clone(),
            act: prior,
        }));
    }
    Actor {
        sub: leaf.clone(),
        act: prior,
    }
}

/// Verifies a credential and the links of its chain offline, against the
/// authority's published keys. `links` are in chain order, root first:
/// link *i* is the one hop *i* signed to delegate hop *i + 1*.
pub fn verify_delegation_chain(
    credential: &str,
    links: &[String],
    jwks: &Jwks,
    issuer: &str,
    now: UnixTime,
) -> Result<VerifiedChain, DelegationChainError> {
    let claims = UnverifiedCredential::parse(credential)?
        .verify(jwks, issuer, now)?
        .claims;
    let chain = &claims.chain;
    if claims.links.len() != chain.len() {
        return Err(CredentialError::Malformed("chain and links differ in length".into()).into());
    }
    if links.len() != chain.len() {
        return Err(DelegationChainError::LinkCount {
            expected: chain.len(),
            got: links.len(),
        });
    }
    if nested_actor(&claims.act.sub, chain) != claims.act {
        return Err(DelegationChainError::ActorsMismatch);
    }
    let leaf = ChainHop {
        mission_id: claims.mission_id.clone(),
        mission_s256: claims.mission_s256.clone(),
        agent: claims.act.sub.clone(),
        jkt: claims.cnf.jkt.clone(),
    };
    let mut hops = Vec::with_capacity(chain.len() + 1);
    let mut last_exp = u64::MAX;
    for (i, link) in links.iter().enumerate() {
        let hop = i + 1;
        if link_digest(link) != claims.links[i] {
            return Err(DelegationChainError::LinkMismatch { hop });
        }
        let (lc, signer) = verify_link(link).map_err(|e| DelegationChainError::BadLink {
            hop,
            message: e.to_string(),
        })?;
        let parent = &chain[i];
        let child = chain.get(i + 1).unwrap_or(&leaf);
        if signer != parent.jkt || lc.parent_jkt != parent.jkt {
            return Err(DelegationChainError::WrongSigner { hop });
        }
        let unbound = |message: &str| DelegationChainError::Unbound {
            hop,
            message: message.to_owned(),
        };
        if lc.iss != issuer {
            return Err(unbound("another issuer"));
        }
        if lc.parent.mission_id != parent.mission_id
            || lc.parent.mission_s256 != parent.mission_s256
            || lc.parent.agent != parent.agent
        {
            return Err(unbound("the parent"));
        }
        if lc.child.mission_id != child.mission_id
            || lc.child.mission_s256 != child.mission_s256
            || lc.child.agent != child.agent
        {
            return Err(unbound("the child"));
        }
        let depth = u32::try_from(hop + 1).unwrap_or(u32::MAX);
        if lc.depth != depth {
            return Err(DelegationChainError::Widens {
                hop,
                message: format!("depth {} where {depth} belongs", lc.depth),
            });
        }
        if lc.exp > last_exp {
            return Err(DelegationChainError::Widens {
                hop,
                message: "it outlives the link above it".into(),
            });
        }
        last_exp = lc.exp;
        if hops.is_empty() {
            hops.push(VerifiedHop {
                depth: 1,
                mission_id: parent.mission_id.clone(),
                mission_s256: parent.mission_s256.clone(),
                agent: parent.agent.clone(),
                jkt: parent.jkt.clone(),
                link: None,
            });
        }
        hops.push(VerifiedHop {
            depth,
            mission_id: child.mission_id.clone(),
            mission_s256: child.mission_s256.clone(),
            agent: child.agent.clone(),
            jkt: child.jkt.clone(),
            link: Some(lc),
        });
    }
    if claims.exp > last_exp {
        return Err(DelegationChainError::Widens {
            hop: chain.len(),
            message: "the credential outlives its mission's link".into(),
        });
    }
    if hops.is_empty() {
        hops.push(VerifiedHop {
            depth: 1,
            mission_id: leaf.mission_id.clone(),
            mission_s256: leaf.mission_s256.clone(),
            agent: leaf.agent.clone(),
            jkt: leaf.jkt.clone(),
            link: None,
        });
    }
    Ok(VerifiedChain { claims, hops })
}
