use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::b64;

/// A public Ed25519 key as a JWK (RFC 8037: `kty` `OKP`, `crv` `Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ed25519Jwk {
    pub kty: String,
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// An RFC 7638 JWK thumbprint with SHA-256, base64url: the `jkt` in `cnf`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Thumbprint(String);

impl Thumbprint {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a stored thumbprint. Only shape is checked (43 base64url chars).
    #[must_use]
    pub fn from_stored(s: String) -> Option<Self> {
        (s.len() == 43 && b64::decode(&s).is_some_and(|b| b.len() == 32)).then_some(Self(s))
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Ed25519Jwk {
    /// A JWK for the raw public key bytes.
    #[must_use]
    pub fn from_public_bytes(public: &[u8; 32]) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: b64::encode(public),
            kid: None,
            alg: None,
            use_: None,
        }
    }

    /// The raw public key, if this JWK is a well-formed Ed25519 public key.
    #[must_use]
    pub fn public_bytes(&self) -> Option<[u8; 32]> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return None;
        }
        b64::decode(&self.x)?.try_into().ok()
    }

    /// The Ed25519 verifying key, if this JWK is a well-formed Ed25519
    /// public key (a point decompression: worth keeping once done).
    #[must_use]
    pub fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        self.public_bytes()
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
    }

    /// RFC 7638 thumbprint: SHA-256 over the required members (`crv`, `kty`,
    /// `x`) in the RFC 8785 canonical form (lexicographic, no whitespace),
    /// which is exactly the form RFC 7638 §3 prescribes.
    #[must_use]
    pub fn thumbprint(&self) -> Thumbprint {
        let mut members = BTreeMap::new();
        members.insert("crv", self.crv.as_str());
        members.insert("kty", self.kty.as_str());
        members.insert("x", self.x.as_str());
        // A map of strings always serializes; fall back to the empty input
        // (a thumbprint no real key has) rather than panic.
        let canonical = serde_jcs::to_vec(&members).unwrap_or_default();
        Thumbprint(b64::s256(&canonical))
    }
}

/// A JSON Web Key Set (RFC 7517 §5). Only Ed25519 keys are usable here;
/// other keys in a set fetched from elsewhere are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwks {
    pub keys: Vec<Ed25519Jwk>,
}

impl Jwks {
    /// Parses a JWKS document, keeping the Ed25519 keys that have a `kid`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys = raw
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Ed25519Jwk>(v).ok())
            .filter(|k| k.public_bytes().is_some() && k.kid.is_some())
            .collect();
        Ok(Self { keys })
    }

    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&Ed25519Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 Appendix A.3: the thumbprint of the Appendix A.2 public key.
    #[test]
    fn thumbprint_matches_rfc8037_vector() {
        let jwk = Ed25519Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            kid: Some("ignored".into()),
            alg: Some("EdDSA".into()),
            use_: None,
        };
        assert_eq!(
            jwk.thumbprint().as_str(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn jwks_parsing_keeps_only_usable_ed25519_keys() {
        let text = r#"{"keys":[
            {"kty":"RSA","n":"x","e":"AQAB","kid":"r"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","key_ops":["verify"]},
            {"kty":"OKP","crv":"Ed25519","x":"short","kid":"k2"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let jwks = Jwks::from_json(text).unwrap();
        assert_eq!(jwks.keys.len(), 1);
        assert!(jwks.find("k1").is_some());
        assert!(Jwks::from_json("[]").is_err());
    }
}
