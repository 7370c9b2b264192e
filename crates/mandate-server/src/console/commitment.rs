//! What a console approval signs (ADR 0032): the WebAuthn challenge of the
//! assertion that approves a request is the SHA-256 of the RFC 8785 (JCS)
//! form of [`Commitment`], so the person's passkey signs this approval
//! request, this request digest and these grant terms, and nothing else.
//! A verifier recomputes the challenge from the stored JSON.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The terms an approval commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Commitment {
    /// The approval request's id (`apr_…`).
    pub approval: String,
    /// The request digest the approval request carries.
    pub request_digest: String,
    /// The grant chosen: its scope (`once` or `mission`).
    pub grant: GrantTerms,
    /// The server's nonce for this ceremony (base64url), single use.
    pub nonce: String,
    /// The relying party the passkey is scoped to.
    pub rp_id: String,
}

/// The grant terms a console approval can choose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantTerms {
    pub scope: String,
}

impl Commitment {
    /// The canonical JSON (RFC 8785) that is hashed, and stored in the
    /// audit record.
    pub fn canonical(&self) -> Result<String, serde_json::Error> {
        serde_jcs::to_string(self)
    }

    /// The WebAuthn challenge: SHA-256 of the canonical JSON.
    pub fn challenge(&self) -> Result<[u8; 32], serde_json::Error> {
        Ok(challenge_of(self.canonical()?.as_bytes()))
    }
}

/// SHA-256 of canonical commitment JSON.
pub(crate) fn challenge_of(canonical: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Commitment {
        Commitment {
            approval: "apr_1".into(),
            request_digest: "sha-256=:abc=:".into(),
            grant: GrantTerms {
                scope: "once".into(),
            },
            nonce: "bm9uY2U".into(),
            rp_id: "localhost".into(),
        }
    }

    #[test]
    fn the_challenge_is_the_sha256_of_the_sorted_json() {
        let c = sample();
        let canonical = c.canonical().unwrap();
        // RFC 8785: keys sorted, no whitespace.
        assert_eq!(
            canonical,
            r#"{"approval":"apr_1","grant":{"scope":"once"},"nonce":"bm9uY2U","request_digest":"sha-256=:abc=:","rp_id":"localhost"}"#
        );
        let expected: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
        assert_eq!(c.challenge().unwrap(), expected);
    }

    #[test]
    fn every_term_changes_the_challenge() {
        let base = sample().challenge().unwrap();
        let mut other = sample();
        other.approval = "apr_2".into();
        assert_ne!(other.challenge().unwrap(), base);
        let mut other = sample();
        other.request_digest = "sha-256=:abd=:".into();
        assert_ne!(other.challenge().unwrap(), base);
        let mut other = sample();
        other.grant.scope = "mission".into();
        assert_ne!(other.challenge().unwrap(), base);
        let mut other = sample();
        other.nonce = "b3RoZXI".into();
        assert_ne!(other.challenge().unwrap(), base);
        let mut other = sample();
        other.rp_id = "example.com".into();
        assert_ne!(other.challenge().unwrap(), base);
    }
}
