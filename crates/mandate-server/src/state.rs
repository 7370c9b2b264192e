use std::sync::Arc;

use mandate_core::{AuthorityKey, Clock, Jwks, MissionLimits, SecureRandom};
use mandate_store::Store;

use crate::config::Config;
use crate::replay::ReplayCache;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub key: Arc<AuthorityKey>,
    pub jwks: Jwks,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn SecureRandom>,
    pub issuer: String,
    pub credential_ttl_secs: u64,
    pub start_token_ttl_secs: u64,
    pub mission_limits: MissionLimits,
    pub replay: ReplayCache,
}

impl AppState {
    /// Wires a state. Time and randomness are injected so tests can fix them.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        key: Arc<AuthorityKey>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        config: &Config,
        issuer: String,
    ) -> Self {
        let jwks = key.jwks();
        Self(Arc::new(Inner {
            store,
            key,
            jwks,
            clock,
            rng,
            issuer,
            credential_ttl_secs: config.credential_ttl_secs,
            start_token_ttl_secs: config.start_token_ttl_secs,
            mission_limits: config.mission_limits,
            replay: ReplayCache::default(),
        }))
    }
}
