//! Private keys. The only module that holds them.
//!
//! Keys are Ed25519 (`ed25519-dalek`, zeroized on drop) and sign JWS through
//! `jsonwebtoken` (whose `EncodingKey` is zeroized on drop as well). Private
//! keys are stored as PKCS#8 PEM; the PEM text is held in `Zeroizing`.
//! Written as PKCS#8 v1 (RFC 8410 `OneAsymmetricKey` without the public
//! key), which every library reads (OpenSSL 3 and Node refuse v2 with the
//! public key embedded); read in either form.

use std::fmt;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::b64;
use crate::error::KeyError;
use crate::jwk::{Ed25519Jwk, Jwks, Thumbprint};
use crate::random::SecureRandom;

/// An Ed25519 key pair ready to sign JWS.
struct Ed25519Signer {
    signing: SigningKey,
    encoding: EncodingKey,
    jwk: Ed25519Jwk,
    thumbprint: Thumbprint,
}

impl Ed25519Signer {
    fn from_signing_key(signing: SigningKey) -> Result<Self, KeyError> {
        let der = signing.to_pkcs8_der().map_err(|_| KeyError::Encode)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let jwk = Ed25519Jwk::from_public_bytes(signing.verifying_key().as_bytes());
        let thumbprint = jwk.thumbprint();
        Ok(Self {
            signing,
            encoding,
            jwk,
            thumbprint,
        })
    }

    fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut())?;
        Self::from_signing_key(SigningKey::from_bytes(&seed))
    }

    fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::BadKeyFile)?;
        Self::from_signing_key(signing)
    }

    fn to_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        // The seed only (v1); the public key is derived from it on reading.
        // `KeypairBytes` zeroizes the seed on drop.
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.signing.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Encode)
    }

    fn sign<T: Serialize>(&self, header: &Header, claims: &T) -> Result<String, KeyError> {
        jsonwebtoken::encode(header, claims, &self.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}

/// How the authority names its JWS algorithm in the headers it signs and
/// the JWKS it publishes (ADR 0026). The signature is Ed25519 either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum JwsAlgName {
    /// `EdDSA` (RFC 8037): what PyJWT, `jsonwebtoken` and most JOSE
    /// libraries know.
    #[default]
    EdDSA,
    /// `Ed25519` (RFC 9864, fully specified): what RFC 9864 verifiers such
    /// as AAuth's require.
    Ed25519,
}

impl JwsAlgName {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::Ed25519 => "Ed25519",
        }
    }

    /// The name in a JWS header, if it is one of the two.
    #[must_use]
    pub fn parse(alg: &str) -> Option<Self> {
        match alg {
            "EdDSA" => Some(Self::EdDSA),
            "Ed25519" => Some(Self::Ed25519),
            _ => None,
        }
    }
}

/// The authority's signing key: signs mission credentials, exchanged
/// tokens and audit checkpoints. Published in the JWKS under its `kid`,
/// which is its RFC 7638 thumbprint.
pub struct AuthorityKey(Ed25519Signer, JwsAlgName);

impl fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityKey")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl AuthorityKey {
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        Ed25519Signer::generate(rng).map(|k| Self(k, JwsAlgName::default()))
    }

    /// Loads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        Ed25519Signer::from_pem(pem).map(|k| Self(k, JwsAlgName::default()))
    }

    /// The same key, naming its algorithm `alg` in what it signs and in its
    /// published JWK.
    #[must_use]
    pub fn with_alg_name(self, alg: JwsAlgName) -> Self {
        Self(self.0, alg)
    }

    /// How this key names its algorithm.
    #[must_use]
    pub fn alg_name(&self) -> JwsAlgName {
        self.1
    }

    /// The private key as PKCS#8 PEM, for writing to a 0600 file.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.0.to_pem()
    }

    #[must_use]
    pub fn kid(&self) -> &str {
        self.0.thumbprint.as_str()
    }

    /// The public key as published: with `kid`, `alg` and `use`.
    #[must_use]
    pub fn public_jwk(&self) -> Ed25519Jwk {
        Ed25519Jwk {
            kid: Some(self.kid().to_owned()),
            alg: Some(self.1.as_str().into()),
            use_: Some("sig".into()),
            ..self.0.jwk.clone()
        }
    }

    /// A JWKS holding this key.
    #[must_use]
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.public_jwk()],
        }
    }

    /// Signs `claims` as a compact JWS with header `typ` and this key's `kid`.
    pub fn sign_jwt<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        match self.1 {
            JwsAlgName::EdDSA => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.typ = Some(typ.to_owned());
                header.kid = Some(self.kid().to_owned());
                self.0.sign(&header, claims)
            }
            // `jsonwebtoken` names Ed25519 only `EdDSA` in a header: the
            // header and claims are serialized here (RFC 7515 §7.1) and the
            // signing input signed by the same crate's Ed25519.
            JwsAlgName::Ed25519 => {
                let header = serde_json::json!({
                    "typ": typ,
                    "alg": "Ed25519",
                    "kid": self.kid(),
                });
                let header = serde_json::to_vec(&header).map_err(|_| KeyError::Encode)?;
                let claims = serde_json::to_vec(claims).map_err(|_| KeyError::Encode)?;
                let input = format!("{}.{}", b64::encode(&header), b64::encode(&claims));
                let signature = jsonwebtoken::crypto::sign(
                    input.as_bytes(),
                    &self.0.encoding,
                    Algorithm::EdDSA,
                )
                .map_err(|e| KeyError::Sign(e.to_string()))?;
                Ok(format!("{input}.{signature}"))
            }
        }
    }
}

/// An agent's key for one mission (the "identity disc"). Created fresh by
/// the agent; its public half is bound into the mission credential.
pub struct MissionKey(Ed25519Signer);

impl fmt::Debug for MissionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MissionKey")
            .field("jkt", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

impl MissionKey {
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        Ed25519Signer::generate(rng).map(Self)
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        Ed25519Signer::from_pem(pem).map(Self)
    }

    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.0.to_pem()
    }

    /// The public key (no `kid`): what goes into a proof's `jwk` header.
    #[must_use]
    pub fn public_jwk(&self) -> &Ed25519Jwk {
        &self.0.jwk
    }

    /// The `cnf.jkt` a credential for this key carries.
    #[must_use]
    pub fn thumbprint(&self) -> &Thumbprint {
        &self.0.thumbprint
    }

    /// Signs an HTTP request (RFC 9421, Ed25519) with this key. Returns the
    /// `Signature-Input` and `Signature` header values.
    pub fn sign_request(
        &self,
        req: &crate::httpsig::RequestParts<'_>,
        spec: &crate::httpsig::SignSpec<'_>,
    ) -> Result<(String, String), crate::httpsig::HttpSigError> {
        crate::httpsig::sign_ed25519(req, spec, &self.0.signing)
    }

    /// Signs a JWS whose header carries this key's public JWK (as a DPoP
    /// proof does).
    pub(crate) fn sign_with_embedded_jwk<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        let jwk_json = serde_json::to_value(&self.0.jwk).map_err(|_| KeyError::Encode)?;
        header.jwk = Some(serde_json::from_value(jwk_json).map_err(|_| KeyError::Encode)?);
        self.0.sign(&header, claims)
    }
}

/// A launcher's key: signs launch statements (DSSE, Ed25519) for the
/// agents it starts. The authority knows its public key by the launcher's
/// name, which each signature names as its `keyid`.
pub struct LauncherKey(Ed25519Signer);

impl fmt::Debug for LauncherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LauncherKey")
            .field("thumbprint", &self.0.thumbprint)
            .finish_non_exhaustive()
    }
}

/// The DSSE signer for a launcher key.
struct DsseSigner<'a> {
    key: &'a SigningKey,
    name: &'a str,
}

impl dsse::Signer for DsseSigner<'_> {
    fn sign(&self, message: &[u8]) -> dsse::Result<Vec<u8>> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes().to_vec())
    }

    fn key_id(&self) -> Option<String> {
        Some(self.name.to_owned())
    }
}

impl LauncherKey {
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        Ed25519Signer::generate(rng).map(Self)
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        Ed25519Signer::from_pem(pem).map(Self)
    }

    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.0.to_pem()
    }

    /// The public key, as the authority's configuration names it.
    #[must_use]
    pub fn public_jwk(&self) -> &Ed25519Jwk {
        &self.0.jwk
    }

    /// Signs `statement` as launcher `name`: a DSSE envelope over its JSON,
    /// payload type `application/vnd.in-toto+json`.
    pub fn sign_launch_statement(
        &self,
        name: &str,
        statement: &crate::attestation::LaunchStatement,
    ) -> Result<crate::attestation::DsseEnvelope, KeyError> {
        let payload = serde_json::to_vec(statement).map_err(|_| KeyError::Encode)?;
        let signer = DsseSigner {
            key: &self.0.signing,
            name,
        };
        dsse::sign(crate::attestation::IN_TOTO_PAYLOAD_TYPE, &payload, &signer)
            .map(Into::into)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn pem_round_trip_keeps_the_identity() {
        let key = AuthorityKey::generate(&OsRandom).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = AuthorityKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.public_jwk(), again.public_jwk());
        assert!(
            AuthorityKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
    }

    /// Written as PKCS#8 v1 (no public key); a v2 file (public key
    /// embedded), as earlier versions wrote, still loads as the same key.
    #[test]
    fn keys_are_written_as_pkcs8_v1_and_v2_files_still_load() {
        use ed25519_dalek::pkcs8::{PrivateKeyInfoRef, SecretDocument};
        // The version as written (`V1` = 0, `V2` = 1), and whether the
        // public key is in the file.
        let version = |pem: &str| {
            let (label, doc) = SecretDocument::from_pem(pem).unwrap();
            assert_eq!(label, "PRIVATE KEY");
            let info = PrivateKeyInfoRef::try_from(doc.as_bytes()).unwrap();
            (format!("{:?}", info.version()), info.public_key.is_some())
        };
        let key = MissionKey::generate(&OsRandom).unwrap();
        let v1 = key.to_pkcs8_pem().unwrap();
        assert_eq!(version(&v1), ("V1".to_owned(), false));
        let v2 = key.0.signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(version(&v2), ("V2".to_owned(), true));
        for text in [v1.as_str(), v2.as_str()] {
            let again = MissionKey::from_pkcs8_pem(text).unwrap();
            assert_eq!(again.thumbprint(), key.thumbprint());
        }
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let key = MissionKey::generate(&OsRandom).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().nth(1).unwrap().to_owned();
        assert!(!format!("{key:?}").contains(&body));
    }
}
