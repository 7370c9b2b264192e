//! Vaulted secrets for governed impersonation: a principal's credential for
//! a password-only system, sealed at rest, opened only by the gateway after
//! an Allow, injected into the upstream request, and never shown to the
//! agent.
//!
//! Sealing is XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) with a
//! random 192-bit nonce. The associated data binds a ciphertext to its row
//! (`principal`, `route`, `version`): a ciphertext copied onto another row
//! in the database does not open.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::random::SecureRandom;

/// How a vaulted secret is presented to the upstream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VaultSecret {
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// `<name>: <value>` (e.g. an API key header).
    Header { name: String, value: String },
}

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultSecret({}, [redacted])", self.kind())
    }
}

impl VaultSecret {
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Basic { .. } => "basic",
            Self::Bearer { .. } => "bearer",
            Self::Header { .. } => "header",
        }
    }

    /// The header to inject: name and value.
    #[must_use]
    pub fn header(&self) -> (String, Zeroizing<String>) {
        use base64::Engine as _;
        match self {
            Self::Basic { username, password } => {
                let pair = Zeroizing::new(format!("{username}:{password}"));
                (
                    "authorization".into(),
                    Zeroizing::new(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                    )),
                )
            }
            Self::Bearer { token } => (
                "authorization".into(),
                Zeroizing::new(format!("Bearer {token}")),
            ),
            Self::Header { name, value } => {
                (name.to_ascii_lowercase(), Zeroizing::new(value.clone()))
            }
        }
    }

    /// Checks the secret can be sent as a header.
    pub fn validate(&self) -> Result<(), String> {
        // Visible ASCII and spaces: what an HTTP header value can carry as is.
        let printable =
            |s: &str| !s.is_empty() && s.chars().all(|c| c == ' ' || c.is_ascii_graphic());
        match self {
            Self::Basic { username, password } => {
                if !printable(username) || username.contains(':') || !printable(password) {
                    return Err(
                        "a basic secret needs a username without `:` and a password, printable"
                            .into(),
                    );
                }
            }
            Self::Bearer { token } => {
                if !printable(token) {
                    return Err("the token must be printable".into());
                }
            }
            Self::Header { name, value } => {
                let token_char =
                    |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
                if name.is_empty() || !name.chars().all(token_char) {
                    return Err(format!("`{name}` is not a header name"));
                }
                if !printable(value) {
                    return Err("the header value must be printable".into());
                }
            }
        }
        Ok(())
    }
}

/// The vault's key (256 bits). Kept apart from the database.
pub struct VaultKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey([redacted])")
    }
}

/// A sealed secret: nonce and ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the vault key is malformed")]
    BadKey,
    #[error("the secret does not open with this vault key (tampered, moved, or another key)")]
    Open,
    #[error("the secret cannot be sealed: {0}")]
    Seal(String),
}

fn aad(principal: &str, route: &str, version: u64) -> Vec<u8> {
    format!("mandate-vault-v1\0{principal}\0{route}\0{version}").into_bytes()
}

impl VaultKey {
    /// A fresh key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, VaultError> {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill(k.as_mut())
            .map_err(|e| VaultError::Seal(e.to_string()))?;
        Ok(Self(k))
    }

    /// Parses the key file's text (base64url, 32 bytes).
    pub fn from_text(text: &str) -> Result<Self, VaultError> {
        let bytes = Zeroizing::new(crate::b64::decode(text.trim()).ok_or(VaultError::BadKey)?);
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::BadKey)?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The key file's text.
    #[must_use]
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::b64::encode(self.0.as_ref()))
    }

    /// Seals `secret` for `principal` on `route`, as row version `version`.
    pub fn seal(
        &self,
        secret: &VaultSecret,
        principal: &str,
        route: &str,
        version: u64,
        rng: &dyn SecureRandom,
    ) -> Result<Sealed, VaultError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(secret).map_err(|e| VaultError::Seal(e.to_string()))?,
        );
        let mut nonce = [0u8; 24];
        rng.fill(&mut nonce)
            .map_err(|e| VaultError::Seal(e.to_string()))?;
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad(principal, route, version),
                },
            )
            .map_err(|_| VaultError::Seal("encryption failed".into()))?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed secret of `principal` on `route`, row version `version`.
    pub fn open(
        &self,
        sealed: &Sealed,
        principal: &str,
        route: &str,
        version: u64,
    ) -> Result<VaultSecret, VaultError> {
        let nonce: [u8; 24] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Open)?;
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad(principal, route, version),
                    },
                )
                .map_err(|_| VaultError::Open)?,
        );
        serde_json::from_slice(&plain).map_err(|_| VaultError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn a_secret_opens_only_on_its_own_row_with_its_own_key() {
        let key = VaultKey::generate(&OsRandom).unwrap();
        let secret = VaultSecret::Basic {
            username: "alice".into(),
            password: "correct horse".into(),
        };
        let sealed = key.seal(&secret, "alice", "crm", 1, &OsRandom).unwrap();
        assert!(!sealed.ciphertext.windows(13).any(|w| w == b"correct horse"));
        assert_eq!(key.open(&sealed, "alice", "crm", 1).unwrap(), secret);
        // Moved to another principal, route or version: it does not open.
        assert!(key.open(&sealed, "bob", "crm", 1).is_err());
        assert!(key.open(&sealed, "alice", "hr", 1).is_err());
        assert!(key.open(&sealed, "alice", "crm", 2).is_err());
        // Tampered, or another key: it does not open.
        let mut bad = sealed.clone();
        bad.ciphertext[0] ^= 1;
        assert!(key.open(&bad, "alice", "crm", 1).is_err());
        let other = VaultKey::generate(&OsRandom).unwrap();
        assert!(other.open(&sealed, "alice", "crm", 1).is_err());
        // The key survives its file form.
        let again = VaultKey::from_text(&key.to_text()).unwrap();
        assert_eq!(again.open(&sealed, "alice", "crm", 1).unwrap(), secret);
        // Debug never shows the secret.
        assert!(!format!("{secret:?}").contains("horse"));
        assert!(!format!("{key:?}").contains(key.to_text().as_str()));
    }

    #[test]
    fn header_secrets_are_checked_before_they_are_stored() {
        let ok = VaultSecret::Header {
            name: "X-Api-Key".into(),
            value: "k".into(),
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.header().0, "x-api-key");
        for bad in [
            VaultSecret::Header {
                name: "X Api".into(),
                value: "k".into(),
            },
            VaultSecret::Header {
                name: "X".into(),
                value: "a\r\nInjected: 1".into(),
            },
            VaultSecret::Basic {
                username: "a:b".into(),
                password: "p".into(),
            },
            VaultSecret::Bearer {
                token: String::new(),
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}
