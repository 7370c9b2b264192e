use std::fmt;

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send + Sync + fmt::Debug {
    /// Fills `dest`. An implementation that cannot must fail loudly rather
    /// than return predictable bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError>;
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(dest).map_err(|_| RandomError)
    }
}

/// The random source failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;
