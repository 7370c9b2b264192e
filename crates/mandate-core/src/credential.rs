//! Mission credentials: short-lived EdDSA JWTs, `typ` `mandate-mission+jwt`.
//!
//! `sub` is the delegating principal, `act.sub` the acting agent (RFC 8693
//! §4.1 semantics), `cnf.jkt` the RFC 7638 thumbprint of the mission key
//! (RFC 7800 / RFC 9449 style key binding).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

use crate::FRESHNESS_WINDOW_SECS;
use crate::b64;
use crate::clock::UnixTime;
use crate::error::{CredentialError, KeyError};
use crate::ids::{AgentName, MissionId, PrincipalName};
use crate::jwk::{Jwks, Thumbprint};
use crate::keys::{AuthorityKey, JwsAlgName};
use crate::mission::Mission;
use crate::random::SecureRandom;

/// The JWS `typ` of a mission credential (explicit typing, RFC 8725 §3.11).
pub const CREDENTIAL_TYP: &str = "mandate-mission+jwt";

/// The well-known document (under `{iss}/.well-known/`) that names the
/// authority's JWKS (`jwks_uri`): what a verifier that discovers keys from
/// a JWT's `iss` and `dwk` claims fetches (draft-hardt-httpbis-signature-key,
/// scheme `jwt`; AAuth).
pub const CREDENTIAL_DWK: &str = "mandate-configuration";

/// Longest credential accepted for parsing.
const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The actor: who acts on the subject's behalf (RFC 8693 `act`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    pub sub: AgentName,
    /// The prior actor, for a delegated mission: the agent that delegated
    /// to `sub` (RFC 8693 §4.1: the current actor outermost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub act: Option<Box<Actor>>,
}

/// Key confirmation (RFC 7800 `cnf`) by thumbprint (RFC 9449 `jkt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Confirmation {
    pub jkt: Thumbprint,
    /// The mission public key itself, so an RFC 9421 verifier given the
    /// credential in `Signature-Key` (scheme `jwt`) has the key the request
    /// must be signed with. Its thumbprint is `jkt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<crate::jwk::Ed25519Jwk>,
}

/// The claims of a mission credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissionClaims {
    pub iss: String,
    /// The well-known document under `iss` that names the authority's
    /// JWKS ([`CREDENTIAL_DWK`]), for verifiers that discover keys that
    /// way. Absent from credentials issued before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwk: Option<String>,
    /// The principal who delegated the mission.
    pub sub: PrincipalName,
    /// The agent acting for `sub`.
    pub act: Actor,
    pub mission_id: MissionId,
    pub mission_s256: String,
    pub cnf: Confirmation,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// For a delegated mission: its ancestors, root first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<crate::delegation::ChainHop>,
    /// For a delegated mission: base64url(SHA-256) of each delegation link,
    /// root first (link *i* is the one `chain[i]` signed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// The evidence the mission was started with, as the authority
    /// verified it: what code, or which workload, holds the mission key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub att: Option<crate::attestation::Attestation>,
    /// base64url(SHA-256) of the organisation's policy set in force when
    /// the credential was issued (see `OrgPolicies::digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_s256: Option<String>,
}

/// A credential just issued: the compact JWT and what it says.
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    pub token: String,
    pub claims: MissionClaims,
}

/// Issues a credential for `mission` bound to the mission key `mission_key`.
///
/// INVARIANT: `exp` ≤ the mission's `expires_at`; nothing is issued for a
/// mission at or past its end.
pub fn issue_credential(
    key: &AuthorityKey,
    mission: &Mission,
    mission_key: &crate::jwk::Ed25519Jwk,
    now: UnixTime,
    ttl_secs: u64,
    rng: &dyn SecureRandom,
) -> Result<IssuedCredential, KeyError> {
    issue_chained_credential(
        key,
        mission,
        mission_key,
        now,
        ttl_secs,
        rng,
        Vec::new(),
        Vec::new(),
        None,
    )
}

/// As [`issue_credential`], for a delegated mission: the credential also
/// carries its ancestors (`chain`, root first), the digests of the links
/// that delegated each hop, and the nested `act` of every agent in it.
///
/// INVARIANT: `chain` holds one hop per ancestor the mission's body names,
/// in the same order, and `links` one digest per hop.
#[expect(
    clippy::too_many_arguments,
    reason = "one credential, every part named"
)]
pub fn issue_chained_credential(
    key: &AuthorityKey,
    mission: &Mission,
    mission_key: &crate::jwk::Ed25519Jwk,
    now: UnixTime,
    ttl_secs: u64,
    rng: &dyn SecureRandom,
    chain: Vec<crate::delegation::ChainHop>,
    links: Vec<String>,
    policy_s256: Option<String>,
) -> Result<IssuedCredential, KeyError> {
    let ancestors = &mission.body.ancestors;
    if chain.len() != ancestors.len()
        || links.len() != ancestors.len()
        || chain
            .iter()
            .zip(ancestors)
            .any(|(h, a)| h.mission_id != a.id || h.mission_s256 != a.s256)
    {
        return Err(KeyError::Sign(
            "the chain does not match the mission's ancestors".into(),
        ));
    }
    // Only the public key's defining members travel (RFC 7638 §3).
    let public = mission_key
        .public_bytes()
        .ok_or_else(|| KeyError::Sign("the mission key is not an Ed25519 public key".into()))?;
    let jwk = crate::jwk::Ed25519Jwk {
        // RFC 9864 verifiers want the key's algorithm named, by the name
        // they know; others are told nothing new.
        alg: (key.alg_name() == JwsAlgName::Ed25519).then(|| "Ed25519".to_owned()),
        ..crate::jwk::Ed25519Jwk::from_public_bytes(&public)
    };
    let jkt = jwk.thumbprint();
    let end = mission.expires_at();
    if now >= end {
        return Err(KeyError::MissionExpired);
    }
    let exp = now.plus(ttl_secs.max(1)).min(end);
    let mut jti = [0u8; 16];
    rng.fill(&mut jti)?;
    let claims = MissionClaims {
        iss: mission.body.iss.clone(),
        dwk: Some(CREDENTIAL_DWK.to_owned()),
        sub: mission.body.principal.clone(),
        act: crate::delegation::nested_actor(&mission.body.agent, &chain),
        mission_id: mission.body.id.clone(),
        mission_s256: mission.s256.clone(),
        cnf: Confirmation {
            jkt,
            jwk: Some(jwk),
        },
        iat: now.0,
        exp: exp.0,
        jti: b64::encode(&jti),
        chain,
        links,
        att: mission.attestation.clone(),
        policy_s256,
    };
    let token = key.sign_jwt(CREDENTIAL_TYP, &claims)?;
    Ok(IssuedCredential { token, claims })
}

/// The header of a JWS the authority signed, as far as it is read: what
/// is checked, and the members that must be absent.
#[derive(Deserialize)]
struct AuthorityHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
    jwk: Option<serde_json::Value>,
    jku: Option<serde_json::Value>,
    x5u: Option<serde_json::Value>,
    x5c: Option<serde_json::Value>,
}

/// The three parts of a compact JWS, as sent.
fn jws_parts(token: &str) -> Result<(&str, &str, &str), CredentialError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Ok((h, p, s)),
        _ => Err(CredentialError::Malformed("not a compact JWS".into())),
    }
}

/// Reads the header of a JWS the authority signed and insists on its
/// shape: `alg` Ed25519 by either of its names (`EdDSA`, RFC 8037;
/// `Ed25519`, RFC 9864), the expected `typ`, a `kid`, and no keys or
/// `crit` in the header (so one kind of token can never pass for another,
/// nor carry its own key). Returns the `kid`.
pub(crate) fn check_authority_header(token: &str, typ: &str) -> Result<String, CredentialError> {
    let header = read_header(token)?;
    if header.typ.as_deref() != Some(typ) {
        return Err(CredentialError::Malformed(format!("typ is not `{typ}`")));
    }
    if header.crit.is_some()
        || header.jwk.is_some()
        || header.jku.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
    {
        return Err(CredentialError::Malformed(
            "header carries keys or critical extensions".into(),
        ));
    }
    header
        .kid
        .ok_or_else(|| CredentialError::Malformed("no kid".into()))
}

/// The header of `token`, with its `alg` one of Ed25519's two names.
fn read_header(token: &str) -> Result<AuthorityHeader, CredentialError> {
    let (header, _, _) = jws_parts(token)?;
    let header: AuthorityHeader = b64::decode(header)
        .ok_or_else(|| CredentialError::Malformed("the header is not base64url".into()))
        .and_then(|h| {
            serde_json::from_slice(&h)
                // What is wrong and where, never the text sent (serde's
                // message may quote it).
                .map_err(|e| {
                    CredentialError::Malformed(format!(
                        "the header is not a JWS header ({:?} error at column {})",
                        e.classify(),
                        e.column()
                    ))
                })
        })?;
    if JwsAlgName::parse(&header.alg).is_none() {
        return Err(CredentialError::Malformed(
            "the header's `alg` is neither EdDSA nor Ed25519".into(),
        ));
    }
    Ok(header)
}

/// The `kid` a JWS's header names, unchecked (to pick a key to try).
pub(crate) fn header_kid(token: &str) -> Option<String> {
    read_header(token).ok().and_then(|h| h.kid)
}

/// Verifies a JWS by the authority key `kid` of `jwks` and returns its
/// claims. Time claims are not checked here: callers check them against
/// the injected clock.
pub(crate) fn decode_authority_jws<T: serde::de::DeserializeOwned>(
    token: &str,
    kid: &str,
    jwks: &Jwks,
) -> Result<T, CredentialError> {
    // The algorithm once more, whoever read the header before.
    read_header(token)?;
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| CredentialError::UnknownKey(kid.to_owned()))?;
    let key = DecodingKey::from_ed_components(&jwk.x)
        .map_err(|_| CredentialError::UnknownKey(kid.to_owned()))?;
    let (header, payload, signature) = jws_parts(token)?;
    // The JWS signing input (RFC 7515 §5.2): the first two parts as sent.
    let input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or_else(|| CredentialError::Malformed("not a compact JWS".into()))?;
    match jsonwebtoken::crypto::verify(signature, input.as_bytes(), &key, Algorithm::EdDSA) {
        Ok(true) => {}
        Ok(false) => return Err(CredentialError::BadSignature),
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::InvalidSignature => CredentialError::BadSignature,
                // The library's message may quote the bytes sent.
                ErrorKind::Base64(_) => {
                    CredentialError::Malformed("the signature is not base64url".into())
                }
                _ => CredentialError::Malformed("the signature cannot be checked".into()),
            });
        }
    }
    b64::decode(payload)
        .ok_or_else(|| CredentialError::Malformed("the claims are not base64url".into()))
        .and_then(|p| {
            serde_json::from_slice(&p)
                .map_err(|e| CredentialError::Malformed(format!("the claims: {e}")))
        })
}

/// A credential whose header has been read but whose signature has not been
/// checked. Nothing in it may be trusted until [`Self::verify`].
#[derive(Debug, Clone)]
pub struct UnverifiedCredential {
    token: String,
    kid: String,
}

impl UnverifiedCredential {
    /// Reads the header and insists on the shape of a mission credential:
    /// `alg` EdDSA, our `typ`, a `kid`, and no keys or `crit` in the header.
    pub fn parse(token: &str) -> Result<Self, CredentialError> {
        let token = token.trim();
        if token.len() > MAX_CREDENTIAL_BYTES {
            return Err(CredentialError::Malformed("too long".into()));
        }
        let kid = check_authority_header(token, CREDENTIAL_TYP)?;
        Ok(Self {
            token: token.to_owned(),
            kid,
        })
    }

    /// The `kid` the credential claims to be signed with.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Offline verification: signature against `jwks`, issuer, validity
    /// period at `now`, and the presence and shape of the binding claims.
    pub fn verify(
        self,
        jwks: &Jwks,
        issuer: &str,
        now: UnixTime,
    ) -> Result<VerifiedCredential, CredentialError> {
        self.verify_signature(jwks, issuer)?.check_validity(now)
    }

    /// The first half of [`Self::verify`]: signature, issuer and claim shape,
    /// but not time. An online verifier checks the mission's state between
    /// the two halves, so that a credential of an ended mission is refused
    /// as `mission_ended` / `revoked` rather than merely expired.
    pub fn verify_signature(
        self,
        jwks: &Jwks,
        issuer: &str,
    ) -> Result<SignedCredential, CredentialError> {
        let claims: MissionClaims = decode_authority_jws(&self.token, &self.kid, jwks)?;
        if claims.iss != issuer {
            return Err(CredentialError::WrongIssuer {
                expected: issuer.to_owned(),
                found: claims.iss,
            });
        }
        if claims.exp <= claims.iat {
            return Err(CredentialError::Malformed("exp is not after iat".into()));
        }
        if let Some(jwk) = &claims.cnf.jwk
            && (jwk.public_bytes().is_none() || jwk.thumbprint() != claims.cnf.jkt)
        {
            return Err(CredentialError::Malformed(
                "cnf.jwk is not the key of cnf.jkt".into(),
            ));
        }
        Ok(SignedCredential {
            token: self.token,
            claims,
        })
    }
}

/// A credential whose signature and issuer were checked, but not yet its
/// validity period. Its claims are authentic; whether it is usable now is
/// not known until [`Self::check_validity`].
#[derive(Debug, Clone)]
pub struct SignedCredential {
    token: String,
    pub claims: MissionClaims,
}

impl SignedCredential {
    /// Checks `iat` and `exp` against `now`.
    pub fn check_validity(self, now: UnixTime) -> Result<VerifiedCredential, CredentialError> {
        if now.0 >= self.claims.exp {
            return Err(CredentialError::Expired);
        }
        if self.claims.iat > now.0.saturating_add(FRESHNESS_WINDOW_SECS) {
            return Err(CredentialError::NotYetValid);
        }
        Ok(VerifiedCredential {
            token: self.token,
            claims: self.claims,
        })
    }
}

/// A credential whose signature, issuer and validity period were checked.
/// Mission state (ended, revoked) is checked separately, online.
#[derive(Debug, Clone)]
pub struct VerifiedCredential {
    token: String,
    pub claims: MissionClaims,
}

impl VerifiedCredential {
    #[must_use]
    pub fn token(&self) -> &str {
        &self.token
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::MissionId;
    use crate::keys::MissionKey;
    use crate::mission::{
        MissionBody, MissionLimits, MissionSpec, MissionStatus, OutOfScope, mission_s256,
    };
    use crate::random::OsRandom;

    const ISS: &str = "http://127.0.0.1:7878";

    fn mission(created: u64, ttl: u64, jkt: &Thumbprint) -> Mission {
        let body = MissionBody::new(
            MissionSpec {
                agent: "bot".parse().unwrap(),
                goal: "g".into(),
                policies: Default::default(),
                ttl_secs: ttl,
                budget: 1,
                out_of_scope: OutOfScope::Deny,
            },
            MissionId::generate(&OsRandom).unwrap(),
            ISS,
            "alice".parse().unwrap(),
            UnixTime(created),
            MissionLimits {
                min_ttl_secs: 1,
                max_ttl_secs: u64::MAX / 4,
                ..MissionLimits::default()
            },
            None,
        )
        .unwrap();
        let s256 = mission_s256(&body).unwrap();
        Mission {
            body,
            s256,
            status: MissionStatus::Active {
                jkt: jkt.clone(),
                started_at: UnixTime(created),
            },
            attestation: None,
            taint: None,
        }
    }

    #[test]
    fn issued_credentials_verify_and_carry_the_binding() {
        let authority = AuthorityKey::generate(&OsRandom).unwrap();
        let agent_key = MissionKey::generate(&OsRandom).unwrap();
        let m = mission(1_000, 3_600, agent_key.thumbprint());
        let issued = issue_credential(
            &authority,
            &m,
            agent_key.public_jwk(),
            UnixTime(1_010),
            300,
            &OsRandom,
        )
        .unwrap();
        let v = UnverifiedCredential::parse(&issued.token)
            .unwrap()
            .verify(&authority.jwks(), ISS, UnixTime(1_020))
            .unwrap();
        assert_eq!(v.claims, issued.claims);
        assert_eq!(v.claims.exp, 1_310);
        assert_eq!(v.claims.act.sub.as_str(), "bot");
        assert_eq!(v.claims.cnf.jkt, *agent_key.thumbprint());
        m.check_credential(&v.claims, UnixTime(1_020)).unwrap();
    }

    /// A refusal says what is wrong, never what was sent: its text goes
    /// into problem details and audit records.
    #[test]
    fn a_malformed_credential_is_refused_without_quoting_it() {
        let authority = AuthorityKey::generate(&OsRandom).unwrap();
        let agent_key = MissionKey::generate(&OsRandom).unwrap();
        let m = mission(1_000, 3_600, agent_key.thumbprint());
        let issued = issue_credential(
            &authority,
            &m,
            agent_key.public_jwk(),
            UnixTime(1_010),
            300,
            &OsRandom,
        )
        .unwrap();
        let (signed, _) = issued.token.rsplit_once('.').unwrap();
        let (header, _) = issued.token.split_once('.').unwrap();
        let mut h: serde_json::Value =
            serde_json::from_slice(&b64::decode(header).unwrap()).unwrap();
        h["kid"] = serde_json::json!(["SECRETKID"]);
        let bad_header = format!("{}.e30.c2ln", b64::encode(h.to_string().as_bytes()));
        h["alg"] = "SECRETALG".into();
        h["kid"] = issued.token.len().to_string().into();
        let bad_alg = format!("{}.e30.c2ln", b64::encode(h.to_string().as_bytes()));
        let cases = [
            (
                format!("{signed}.SECRET$x"),
                "the signature is not base64url",
            ),
            (bad_header, "not a JWS header"),
            (bad_alg, "neither EdDSA nor Ed25519"),
        ];
        for (token, says) in cases {
            let err = UnverifiedCredential::parse(&token)
                .and_then(|u| u.verify(&authority.jwks(), ISS, UnixTime(1_020)))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("SECRET"), "quotes what was sent: {text}");
        }
    }

    /// The RFC 9864 name: the header, the published key and `cnf.jwk` say
    /// `Ed25519`; it verifies here as the `EdDSA` form does; a header
    /// naming anything else, or with its algorithm swapped for HMAC, is
    /// refused.
    #[test]
    fn credentials_under_either_name_of_ed25519_verify_and_nothing_else_does() {
        let agent_key = MissionKey::generate(&OsRandom).unwrap();
        let m = mission(1_000, 3_600, agent_key.thumbprint());
        for name in [JwsAlgName::EdDSA, JwsAlgName::Ed25519] {
            let authority = AuthorityKey::generate(&OsRandom)
                .unwrap()
                .with_alg_name(name);
            let issued = issue_credential(
                &authority,
                &m,
                agent_key.public_jwk(),
                UnixTime(1_010),
                300,
                &OsRandom,
            )
            .unwrap();
            let (header, _) = issued.token.split_once('.').unwrap();
            let header: serde_json::Value =
                serde_json::from_slice(&b64::decode(header).unwrap()).unwrap();
            assert_eq!(header["alg"], name.as_str());
            assert_eq!(authority.jwks().keys[0].alg.as_deref(), Some(name.as_str()));
            let cnf_alg = issued.claims.cnf.jwk.as_ref().unwrap().alg.clone();
            assert_eq!(
                cnf_alg.as_deref(),
                (name == JwsAlgName::Ed25519).then_some("Ed25519")
            );
            assert_eq!(issued.claims.dwk.as_deref(), Some(CREDENTIAL_DWK));
            let v = UnverifiedCredential::parse(&issued.token)
                .unwrap()
                .verify(&authority.jwks(), ISS, UnixTime(1_020))
                .unwrap();
            assert_eq!(v.claims, issued.claims);

            // The same signature under another `alg` is refused.
            let (_, rest) = issued.token.split_once('.').unwrap();
            for alg in ["HS256", "none", "ES256", "ed25519"] {
                let mut h = header.clone();
                h["alg"] = alg.into();
                let forged = format!("{}.{rest}", b64::encode(h.to_string().as_bytes()));
                let err = UnverifiedCredential::parse(&forged).unwrap_err();
                assert!(
                    matches!(err, CredentialError::Malformed(ref m) if m.contains("neither")),
                    "{alg}: {err}"
                );
            }
            // Swapping the name keeps the signature over the old header: refused.
            let mut h = header.clone();
            h["alg"] = match name {
                JwsAlgName::EdDSA => "Ed25519",
                JwsAlgName::Ed25519 => "EdDSA",
            }
            .into();
            let swapped = format!("{}.{rest}", b64::encode(h.to_string().as_bytes()));
            let err = UnverifiedCredential::parse(&swapped)
                .unwrap()
                .verify(&authority.jwks(), ISS, UnixTime(1_020))
                .unwrap_err();
            assert!(matches!(err, CredentialError::BadSignature), "{err}");
        }
    }

    #[test]
    fn verification_refuses_what_it_must() {
        let authority = AuthorityKey::generate(&OsRandom).unwrap();
        let other = AuthorityKey::generate(&OsRandom).unwrap();
        let k = MissionKey::generate(&OsRandom).unwrap();
        let m = mission(1_000, 3_600, k.thumbprint());
        let tok = issue_credential(
            &authority,
            &m,
            k.public_jwk(),
            UnixTime(1_000),
            300,
            &OsRandom,
        )
        .unwrap()
        .token;
        let verify = |jwks: &Jwks, iss: &str, now: u64| {
            UnverifiedCredential::parse(&tok)
                .unwrap()
                .verify(jwks, iss, UnixTime(now))
        };
        assert_eq!(
            verify(&authority.jwks(), ISS, 1_300).unwrap_err(),
            CredentialError::Expired
        );
        assert_eq!(
            verify(&other.jwks(), ISS, 1_001).unwrap_err().code(),
            "bad_credential"
        );
        assert!(matches!(
            verify(&authority.jwks(), "https://evil", 1_001).unwrap_err(),
            CredentialError::WrongIssuer { .. }
        ));
        // A key swapped under the same kid: the signature fails.
        let mut swapped = other.jwks();
        swapped.keys[0].kid = Some(authority.kid().to_owned());
        assert_eq!(
            verify(&swapped, ISS, 1_001).unwrap_err(),
            CredentialError::BadSignature
        );
        // Tampered payload.
        let mut parts: Vec<String> = tok.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64::decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = "mallory".into();
        parts[1] = b64::encode(&serde_json::to_vec(&claims).unwrap());
        let forged = parts.join(".");
        let err = UnverifiedCredential::parse(&forged)
            .unwrap()
            .verify(&authority.jwks(), ISS, UnixTime(1_001))
            .unwrap_err();
        assert_eq!(err, CredentialError::BadSignature);
        assert!(UnverifiedCredential::parse("not.a.jwt").is_err());
    }

    #[test]
    fn state_checks_follow_the_mission() {
        let authority = AuthorityKey::generate(&OsRandom).unwrap();
        let k = MissionKey::generate(&OsRandom).unwrap();
        let stranger = MissionKey::generate(&OsRandom).unwrap();
        let mut m = mission(1_000, 3_600, k.thumbprint());
        let c = issue_credential(
            &authority,
            &m,
            k.public_jwk(),
            UnixTime(1_000),
            300,
            &OsRandom,
        )
        .unwrap();
        let c2 = issue_credential(
            &authority,
            &m,
            stranger.public_jwk(),
            UnixTime(1_000),
            300,
            &OsRandom,
        )
        .unwrap();
        assert_eq!(
            m.check_credential(&c2.claims, UnixTime(1_001))
                .unwrap_err()
                .code(),
            "key_mismatch"
        );
        assert_eq!(
            m.check_credential(&c.claims, UnixTime(4_600))
                .unwrap_err()
                .code(),
            "mission_ended"
        );
        m.status = MissionStatus::Ended {
            reason: crate::EndReason::Revoked,
            at: UnixTime(1_100),
            jkt: None,
            started_at: None,
        };
        assert_eq!(
            m.check_credential(&c.claims, UnixTime(1_101))
                .unwrap_err()
                .code(),
            "revoked"
        );
    }

    proptest! {
        /// A mission's credential never outlives the mission, whatever the
        /// credential lifetime and the moment of issue.
        #[test]
        fn a_credential_never_outlives_its_mission(
            created in 0u64..1_000_000,
            ttl in 1u64..1_000_000,
            cred_ttl in 0u64..2_000_000,
            offset in 0u64..2_000_000,
        ) {
            let authority = AuthorityKey::generate(&OsRandom).unwrap();
            let k = MissionKey::generate(&OsRandom).unwrap();
            let m = mission(created, ttl, k.thumbprint());
            let now = UnixTime(created + offset);
            match issue_credential(&authority, &m, k.public_jwk(), now, cred_ttl, &OsRandom) {
                Ok(c) => {
                    prop_assert!(now < m.expires_at());
                    prop_assert!(c.claims.exp <= m.body.expires_at);
                    prop_assert!(c.claims.exp > c.claims.iat);
                    // At the mission's end the credential is refused offline too.
                    let late = UnverifiedCredential::parse(&c.token).unwrap().verify(&authority.jwks(), ISS, m.expires_at());
                    prop_assert_eq!(late.unwrap_err(), CredentialError::Expired);
                }
                Err(e) => {
                    prop_assert!(matches!(e, KeyError::MissionExpired));
                    prop_assert!(now >= m.expires_at());
                }
            }
        }
    }
}
