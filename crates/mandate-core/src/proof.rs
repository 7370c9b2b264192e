//! Proof of possession of a mission key: an RFC 9449 DPoP proof JWT.
//!
//! The agent signs `{jti, htm, htu, iat[, ath]}` with the mission key and
//! puts the public key in the `jwk` header. The authority checks the
//! signature with that key, the method and URL, freshness, the hash of the
//! presented token (`ath`), and returns the key's thumbprint. Replay of a
//! `jti` is checked by the caller, which owns the cache.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::FRESHNESS_WINDOW_SECS;
use crate::b64;
use crate::clock::UnixTime;
use crate::error::{KeyError, ProofError};
use crate::jwk::{Ed25519Jwk, Thumbprint};
use crate::keys::MissionKey;
use crate::random::SecureRandom;

/// The JWS `typ` of a proof (RFC 9449 §4.2).
pub const PROOF_TYP: &str = "dpop+jwt";

const MAX_PROOF_BYTES: usize = 4 * 1024;

/// The claims of a proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofClaims {
    pub jti: String,
    /// HTTP method of the request.
    pub htm: String,
    /// HTTP URL of the request, without query and fragment.
    pub htu: String,
    pub iat: u64,
    /// base64url(SHA-256(token)) of the token the request presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ath: Option<String>,
}

impl MissionKey {
    /// Makes a proof for one request. `token` is the start token or
    /// credential the request presents, if any (it becomes `ath`).
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        token: Option<&str>,
        now: UnixTime,
        rng: &dyn SecureRandom,
    ) -> Result<String, KeyError> {
        let mut jti = [0u8; 16];
        rng.fill(&mut jti)?;
        let claims = ProofClaims {
            jti: b64::encode(&jti),
            htm: htm.to_owned(),
            htu: htu.to_owned(),
            iat: now.0,
            ath: token.map(|t| b64::s256(t.as_bytes())),
        };
        self.sign_with_embedded_jwk(PROOF_TYP, &claims)
    }
}

/// What the verifier expects of a proof.
#[derive(Debug, Clone, Copy)]
pub struct ProofExpectations<'a> {
    pub htm: &'a str,
    pub htu: &'a str,
    pub now: UnixTime,
    /// The token the request presents; the proof's `ath` must hash to it.
    /// `None`: the proof must carry no `ath`.
    pub token: Option<&'a str>,
}

/// A proof that checked out. The caller still must reject a replayed `jti`.
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    pub jwk: Ed25519Jwk,
    pub jkt: Thumbprint,
    pub jti: String,
    pub iat: UnixTime,
}

#[derive(Deserialize)]
struct RawHeader {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

/// Verifies a DPoP proof JWT (RFC 9449 §4.3, steps 1–11 but the replay
/// check, which needs state and is the caller's).
pub fn verify_proof(
    proof: &str,
    expect: &ProofExpectations<'_>,
) -> Result<VerifiedProof, ProofError> {
    let malformed = |m: &str| ProofError::Malformed(m.to_owned());
    if proof.len() > MAX_PROOF_BYTES {
        return Err(malformed("too long"));
    }
    let header_b64 = proof
        .split('.')
        .next()
        .ok_or_else(|| malformed("not a JWS"))?;
    let header_bytes =
        b64::decode(header_b64).ok_or_else(|| malformed("header is not base64url"))?;
    let header: RawHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| malformed("header is not JSON"))?;
    if header.typ.as_deref() != Some(PROOF_TYP) {
        return Err(malformed("typ is not `dpop+jwt`"));
    }
    if header.alg.as_deref() != Some("EdDSA") {
        return Err(malformed("alg is not EdDSA"));
    }
    if header.crit.is_some() {
        return Err(malformed("critical header extensions are not supported"));
    }
    let jwk_value = header.jwk.ok_or_else(|| malformed("no jwk header"))?;
    if jwk_value.get("d").is_some() {
        return Err(malformed("the jwk header carries a private key"));
    }
    let jwk: Ed25519Jwk =
        serde_json::from_value(jwk_value).map_err(|_| malformed("jwk is not an Ed25519 key"))?;
    if jwk.public_bytes().is_none() {
        return Err(malformed("jwk is not an Ed25519 public key"));
    }
    let key =
        DecodingKey::from_ed_components(&jwk.x).map_err(|_| malformed("jwk is not usable"))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => ProofError::BadSignature,
            _ => ProofError::Malformed(e.to_string()),
        })?
        .claims;
    if claims.htm != expect.htm {
        return Err(ProofError::WrongTarget {
            expected: expect.htm.to_owned(),
            found: claims.htm,
        });
    }
    if claims.htu != expect.htu {
        return Err(ProofError::WrongTarget {
            expected: expect.htu.to_owned(),
            found: claims.htu,
        });
    }
    let window = FRESHNESS_WINDOW_SECS;
    if claims.iat.abs_diff(expect.now.0) > window {
        return Err(ProofError::Stale { window });
    }
    let want_ath = expect.token.map(|t| b64::s256(t.as_bytes()));
    if claims.ath != want_ath {
        return Err(ProofError::WrongTokenHash);
    }
    if claims.jti.is_empty() || claims.jti.len() > 128 {
        return Err(malformed("bad jti"));
    }
    let jkt = jwk.thumbprint();
    Ok(VerifiedProof {
        jwk,
        jkt,
        jti: claims.jti,
        iat: UnixTime(claims.iat),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    const URL: &str = "http://127.0.0.1:7878/v1/missions/start";

    fn expect(token: Option<&str>) -> ProofExpectations<'_> {
        ProofExpectations {
            htm: "POST",
            htu: URL,
            now: UnixTime(10_000),
            token,
        }
    }

    #[test]
    fn a_proof_binds_key_request_and_token() {
        let key = MissionKey::generate(&OsRandom).unwrap();
        let p = key
            .proof("POST", URL, Some("mst_x"), UnixTime(10_000), &OsRandom)
            .unwrap();
        let v = verify_proof(&p, &expect(Some("mst_x"))).unwrap();
        assert_eq!(v.jkt, *key.thumbprint());

        assert_eq!(
            verify_proof(&p, &expect(Some("mst_y"))).unwrap_err(),
            ProofError::WrongTokenHash
        );
        assert_eq!(
            verify_proof(&p, &expect(None)).unwrap_err(),
            ProofError::WrongTokenHash
        );
        let wrong_url = ProofExpectations {
            htu: "http://127.0.0.1:7878/v1/other",
            ..expect(Some("mst_x"))
        };
        assert!(matches!(
            verify_proof(&p, &wrong_url).unwrap_err(),
            ProofError::WrongTarget { .. }
        ));
        let late = ProofExpectations {
            now: UnixTime(10_061),
            ..expect(Some("mst_x"))
        };
        assert!(matches!(
            verify_proof(&p, &late).unwrap_err(),
            ProofError::Stale { .. }
        ));
    }

    #[test]
    fn a_proof_signed_by_another_key_than_its_jwk_fails() {
        let key = MissionKey::generate(&OsRandom).unwrap();
        let other = MissionKey::generate(&OsRandom).unwrap();
        let p = key
            .proof("POST", URL, None, UnixTime(10_000), &OsRandom)
            .unwrap();
        let q = other
            .proof("POST", URL, None, UnixTime(10_000), &OsRandom)
            .unwrap();
        // Header of one, payload and signature of the other.
        let mixed: Vec<&str> = p.split('.').take(1).chain(q.split('.').skip(1)).collect();
        assert_eq!(
            verify_proof(&mixed.join("."), &expect(None)).unwrap_err(),
            ProofError::BadSignature
        );
        assert!(verify_proof("garbage", &expect(None)).is_err());
    }
}
