use std::fmt;

use zeroize::Zeroizing;

use crate::b64;
use crate::random::{RandomError, SecureRandom};

/// What a bearer secret is for; its prefix tells (and lets secret scanners
/// find leaked ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A human principal's API token, `mdt_…`.
    Api,
    /// A mission's one-time start token, `mst_…`.
    Start,
}

impl TokenKind {
    #[must_use]
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Api => "mdt_",
            Self::Start => "mst_",
        }
    }
}

/// A high-entropy bearer secret (256 random bits). Shown once, stored only
/// as its [`TokenHash`], zeroized on drop, never printed by `Debug`.
pub struct SecretToken(Zeroizing<String>);

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(..)")
    }
}

impl SecretToken {
    pub fn generate(kind: TokenKind, rng: &dyn SecureRandom) -> Result<Self, RandomError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill(bytes.as_mut())?;
        Ok(Self(Zeroizing::new(format!(
            "{}{}",
            kind.prefix(),
            b64::encode(bytes.as_ref())
        ))))
    }

    /// Wraps a token presented by a caller. Returns `None` when it does not
    /// have the shape of a `kind` token, so junk never reaches a lookup.
    #[must_use]
    pub fn parse(kind: TokenKind, presented: &str) -> Option<Self> {
        let rest = presented.strip_prefix(kind.prefix())?;
        (rest.len() == 43 && b64::decode(rest).is_some())
            .then(|| Self(Zeroizing::new(presented.to_owned())))
    }

    /// The secret itself, to show once or send.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored: SHA-256 of the token. A plain hash suffices because
    /// the token has 256 bits of entropy (no dictionary to attack).
    #[must_use]
    pub fn hash(&self) -> TokenHash {
        TokenHash(b64::s256(self.0.as_bytes()))
    }
}

/// The stored form of a [`SecretToken`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn tokens_parse_back_and_hash_stably() {
        let t = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
        assert!(t.expose().starts_with("mdt_"));
        let again = SecretToken::parse(TokenKind::Api, t.expose()).unwrap();
        assert_eq!(t.hash(), again.hash());
        assert!(SecretToken::parse(TokenKind::Start, t.expose()).is_none());
        assert!(SecretToken::parse(TokenKind::Api, "mdt_short").is_none());
        assert_eq!(format!("{t:?}"), "SecretToken(..)");
    }
}
