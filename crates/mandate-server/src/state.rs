use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use mandate_core::{AuthorityKey, Clock, Jwks, MissionLimits, SecureRandom};
use mandate_enforce::{AuditLog, Enforcer, LoadedPolicies, OrgState};
use mandate_store::Store;

use crate::config::Config;
use crate::reload::Gateways;
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
    /// The enforcement pipeline; it owns the audit log and the policies.
    pub enforcer: Enforcer,
    pub policies_dir: PathBuf,
    /// The id of every approval request that changes, so the long-polls
    /// waiting on it (and only those) wake.
    pub approvals_changed: tokio::sync::broadcast::Sender<String>,
    /// Serializes approving and denying, so the audit event written
    /// before the change always describes the change that happens.
    pub approvals_lock: tokio::sync::Mutex<()>,
    pub webhook: Option<crate::config::WebhookConfig>,
    /// Wakes the webhook deliverer when a notification is queued.
    pub webhook_wake: tokio::sync::Notify,
    /// The checkpoint file, read by `/v1/audit/verify` beside the database.
    pub checkpoint_file: PathBuf,
    /// Unidentified refused approval attempts already recorded, by request
    /// and kind of attempt (see `api::approvals`).
    anonymous_refusals: Mutex<std::collections::HashSet<(String, &'static str)>>,
    /// The gateway's routes and MCP servers, replaced whole by a reload
    /// ([`AppState::gateways`]).
    gateways: RwLock<Arc<Gateways>>,
    /// The configuration the server started with: how to read it again,
    /// and what a reload cannot change.
    pub config: Config,
    /// Serializes reloads, so each reads, checks and replaces in turn.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Open MCP sessions.
    pub mcp: crate::api::McpSessions,
    /// This process's name among the nodes on one database: random per
    /// start, the prefix of the MCP sessions it holds.
    pub node: String,
    /// Credentials whose signature verified, by their compact form (a
    /// signature check is a pure function of the token and the JWKS, which
    /// does not change while the server runs). Expiry, the mission's state
    /// and revocation are checked on every use regardless.
    verified: Mutex<HashMap<String, Verified>>,
    /// The client that forwards to upstreams (no redirects, no proxy);
    /// `None` if it could not be built (the gateway then refuses).
    pub upstream: Option<reqwest::Client>,
    /// Seals and opens vaulted secrets.
    pub vault: mandate_core::VaultKey,
    /// False only in the benchmark-only mode without `fsync`.
    pub durable: bool,
    /// The approval requests the pipeline opens, until the announcer
    /// takes them ([`crate::approval_notices::spawn_announcer`]).
    pub opened: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<mandate_store::ApprovalRecord>>>,
    /// The SPIFFE bundles and launcher keys attestation evidence is
    /// checked against.
    pub anchors: Arc<crate::attestation::Anchors>,
    /// `[attestation]` as configured (which trust domains and launchers
    /// exist, whether or not their keys were read yet).
    pub attestation: crate::attestation::AttestationConfig,
    /// What `GET /metrics` reports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The console's relying party and passkey ceremonies, or why the
    /// console is unavailable (its pages then say so).
    pub console: Result<crate::console::Console, String>,
}

/// Eight hex digits, random (a fixed name if no randomness is to be had:
/// it only routes messages, it guards nothing).
fn node_name(rng: &dyn SecureRandom) -> String {
    let mut b = [0u8; 4];
    if rng.fill(&mut b).is_err() {
        return "node".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl AppState {
    /// Wires a state. Time and randomness are injected so tests can fix them.
    #[must_use]
    #[expect(
        clippy::too_many_arguments,
        reason = "wiring: every dependency is injected, none defaulted"
    )]
    pub(crate) fn new(
        store: Arc<dyn Store>,
        key: Arc<AuthorityKey>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        config: &Config,
        issuer: String,
        policies: LoadedPolicies,
        audit: AuditLog,
        vault: mandate_core::VaultKey,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let jwks = key.jwks();
        let console = crate::console::Console::new(&config.console, &issuer)
            .inspect_err(|e| tracing::error!(error = %e, "the console is unavailable"));
        let issuer_for_anchors = issuer.clone();
        // Should the client not build, the gateway refuses every request.
        let upstream = upstream_client()
            .map_err(|e| {
                tracing::error!(error = %e, "cannot build the upstream client; the gateway will refuse requests");
            })
            .ok();
        let (opened, opened_rx) = tokio::sync::mpsc::unbounded_channel();
        let node = node_name(rng.as_ref());
        let enforcer = Enforcer::new(
            Arc::clone(&store),
            audit,
            Arc::clone(&clock),
            Arc::clone(&rng),
            config.approval_ttl_secs,
            policies,
            opened,
        );
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
            enforcer,
            policies_dir: config.policies_dir.clone(),
            approvals_changed: tokio::sync::broadcast::Sender::new(1_024),
            approvals_lock: tokio::sync::Mutex::new(()),
            webhook: config.webhook.clone(),
            webhook_wake: tokio::sync::Notify::new(),
            checkpoint_file: config.audit.checkpoint_file.clone(),
            anonymous_refusals: Mutex::new(std::collections::HashSet::new()),
            gateways: RwLock::new(Arc::new(Gateways::new(config, None))),
            config: config.clone(),
            reload_lock: tokio::sync::Mutex::new(()),
            mcp: crate::api::McpSessions::default(),
            node,
            verified: Mutex::new(HashMap::new()),
            upstream,
            vault,
            durable: !config.unsafe_non_durable_benchmark_mode,
            opened: Mutex::new(Some(opened_rx)),
            attestation: config.attestation.clone(),
            metrics,
            console,
            anchors: Arc::new(crate::attestation::Anchors::new(
                mandate_core::TrustAnchors::none(&issuer_for_anchors),
            )),
        }))
    }

    /// A credential's signature and issuer checked, or remembered as
    /// checked.
    pub(crate) fn verified_credential(
        &self,
        token: &str,
    ) -> Result<Verified, mandate_core::CredentialError> {
        /// Remembered at most; past it the memory starts over.
        const MAX: usize = 4_096;
        if let Some(c) = self
            .0
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(token).cloned())
        {
            return Ok(c);
        }
        let signed = mandate_core::UnverifiedCredential::parse(token)
            .and_then(|u| u.verify_signature(&self.0.jwks, &self.0.issuer))?;
        // The bound key, decoded once (a point decompression).
        let key = signed
            .claims
            .cnf
            .jwk
            .as_ref()
            .and_then(mandate_core::Ed25519Jwk::verifying_key);
        let verified = Verified { signed, key };
        if let Ok(mut m) = self.0.verified.lock() {
            if m.len() >= MAX {
                m.clear();
            }
            m.insert(token.to_owned(), verified.clone());
        }
        Ok(verified)
    }

    /// The current organisation policies.
    pub(crate) fn org(&self) -> Result<Arc<OrgState>, crate::Problem> {
        Ok(self.0.enforcer.org()?)
    }

    /// The gateway's routes and MCP servers as they are now. A request
    /// reads them once, at its start, and keeps what it read to its end: a
    /// reload meanwhile changes the requests that come after it.
    pub(crate) fn gateways(&self) -> Arc<Gateways> {
        Arc::clone(
            &self
                .0
                .gateways
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts `new` in place of the running routes and MCP servers.
    pub(crate) fn set_gateways(&self, new: Arc<Gateways>) {
        *self
            .0
            .gateways
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
    }

    /// Whether a refused attempt on `id` (an approval request an
    /// unidentified caller tried, a mission an agent tried to start with
    /// refused evidence) is the first of its kind, and so to be recorded.
    /// Remembers at most 10,000; past that it starts over.
    pub(crate) fn first_anonymous_refusal(&self, id: &str, attempt: &'static str) -> bool {
        const MAX: usize = 10_000;
        let Ok(mut seen) = self.0.anonymous_refusals.lock() else {
            return false;
        };
        if seen.len() >= MAX {
            seen.clear();
        }
        seen.insert((id.to_owned(), attempt))
    }

    /// Records an audit event and waits until it is durable.
    pub(crate) async fn audit(
        &self,
        kind: &'static str,
        body: serde_json::Value,
    ) -> Result<u64, crate::Problem> {
        Ok(self.0.enforcer.record(kind, body).await?)
    }
}

/// A mission credential whose signature checked out, and the mission key
/// bound into it (`cnf.jwk`), if it carries a valid one.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub signed: mandate_core::SignedCredential,
    pub key: Option<ed25519_dalek::VerifyingKey>,
}

/// The gateway's client for upstreams: no redirects, and no proxy from the
/// environment (a vaulted secret or a minted token must reach the upstream
/// only).
pub(crate) fn upstream_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}
