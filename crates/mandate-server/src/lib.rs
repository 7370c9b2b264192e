//! The Mandate authority over HTTP: wiring of the store, the authority key
//! and the API routes. Domain logic lives in `mandate-core`.

mod api;
/// For the gateway benchmark only (feature `unsafe-bench-forwarding-only`):
/// the forwarding layer without authorization. Never routed by `mandate
/// serve`.
#[cfg(feature = "unsafe-bench-forwarding-only")]
pub mod bench {
    pub use crate::api::serve_forwarding_only;
}
mod approval_notices;
mod attestation;
mod audit_witness;
mod changes;
mod config;
mod console;
mod datadir;
mod edge;
mod header_policy;
mod mcp_headers;
mod mcp_servers;
mod mcp_upstream;
mod metrics;
mod problem;
mod reload;
mod replay;
mod routes;
mod state;

pub use api::router;
pub use approval_notices::WEBHOOK_TYP;
pub use config::{
    AuditConfig, CHECKPOINT_FILE, Config, ConfigError, DEFAULT_DATA_DIR, DEFAULT_LISTEN,
    ServerConfig, Source, WebhookConfig, check_database_url, redact_url,
};
pub use datadir::{DataDir, DataDirError, init_admin, verify_audit};
pub use mandate_enforce::{
    AuditLog, AuditWriter, CheckpointPolicy, LoadedPolicies, Missing, load_dir, load_file,
    read_checkpoint_file,
};
pub use mcp_servers::{McpConfigError, McpServer, McpServerConfig, McpToolConfig};
pub use metrics::MetricsError;
pub use problem::Problem;
pub use routes::{MapError, Route, RouteConfig, RouteError, UpstreamAuth, UpstreamErrors};
pub use state::AppState;

use std::future::Future;
use std::sync::Arc;

use mandate_core::{OsRandom, SystemClock};
use tokio::net::TcpListener;

/// Starts the authority: opens the data dir, binds, prints where it
/// listens, serves until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let durable = !config.unsafe_non_durable_benchmark_mode;
    let data =
        DataDir::open_with(&config.data_dir, durable, config.database_url.as_deref()).await?;
    if !durable && config.database_url.is_some() {
        tracing::warn!(
            "the non-durable benchmark mode applies to SQLite only; PostgreSQL commits as configured"
        );
    }

    // The default policy directory lives in the data dir; make it, so an
    // operator can drop files in and reload.
    if !config.policies_dir.exists() && config.policies_dir.starts_with(&config.data_dir) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.policies_dir)
            .map_err(|e| DataDirError::Io(config.policies_dir.clone(), e))?;
    }
    // Fail closed: never start with a policy set that does not load.
    let policies = load_dir(&config.policies_dir, Missing::Empty).map_err(|diags| {
        ServeError::Policies(
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    check_actions(&config, &policies.policies).map_err(|d| ServeError::Config(d.to_string()))?;
    check_mcp_programs(&config).map_err(|e| ServeError::Config(e.to_string()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind(config.listen.to_string(), LISTEN_SETTING, e))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Bind(addr.to_string(), METRICS_LISTEN_SETTING, e))?,
        ),
        None => None,
    };
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(config.listen.to_string(), LISTEN_SETTING, e))?;
    let issuer = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let (anchors, bundle_sources) = config
        .attestation
        .load(&issuer)
        .map_err(ServeError::Config)?;
    let has_principals = !data
        .store
        .principals()
        .await
        .map_err(DataDirError::Store)?
        .is_empty();
    // A vault key file configured elsewhere (a secrets mount, say) must be
    // there: making a new one would silently orphan every stored secret.
    if config.vault_key_file != config.data_dir.join("vault.key") && !config.vault_key_file.exists()
    {
        return Err(ServeError::DataDir(DataDirError::Other(format!(
            "the vault key file `{}` does not exist (it is created only at its default place, DATA/vault.key)",
            config.vault_key_file.display()
        ))));
    }
    let vault = datadir::load_or_create_vault_key(&config.vault_key_file)?;
    datadir::check_vault_key(data.store.as_ref(), &vault, &config.vault_key_file).await?;
    let key = Arc::new(data.key.with_alg_name(config.jws_alg));
    let clock: Arc<dyn mandate_core::Clock> = Arc::new(SystemClock);
    let witness = config
        .audit
        .witness
        .clone()
        .map(audit_witness::spawn)
        .transpose()
        .map_err(ServeError::Config)?;
    let (audit, audit_writer) = AuditLog::spawn(
        Arc::clone(&data.store),
        Arc::clone(&key),
        issuer.clone(),
        Arc::clone(&clock),
        CheckpointPolicy {
            cadence: config.audit.cadence,
            file: Some(config.audit.checkpoint_file.clone()),
            witness,
        },
    )
    .await
    .map_err(ServeError::Audit)?;
    let metrics = Arc::new(metrics::Metrics::new(
        config.routes.iter().map(|r| r.name()),
        config.mcp_servers.iter().map(|m| m.name()),
    )?);
    audit.observe_commits(Arc::new(metrics::Commits(Arc::clone(&metrics))));
    if config.audit.checkpoint_file.starts_with(&config.data_dir) && config.audit.witness.is_none()
    {
        tracing::info!(
            file = %config.audit.checkpoint_file.display(),
            "audit checkpoints are kept in the data dir: they hold against whoever can write the database alone, not against whoever can write this directory; keep a copy elsewhere too (`[audit] checkpoint_file` on another mount, or `[audit.witness]`)"
        );
    }
    let state = AppState::new(
        data.store,
        key,
        clock,
        Arc::new(OsRandom),
        &config,
        issuer.clone(),
        policies,
        audit,
        vault,
        metrics,
    );
    state.0.anchors.set(anchors);
    attestation::spawn_refresh(Arc::clone(&state.0.anchors), bundle_sources);
    // Printed on stdout, one line, so people and scripts can find the address.
    let database = config
        .database_url
        .as_deref()
        .map_or_else(|| "SQLite in the data dir".to_owned(), config::redact_url);
    // The start banner, on standard output unless told to keep quiet.
    let quiet = config.quiet;
    macro_rules! say {
        ($($t:tt)*) => {
            if quiet {
                tracing::info!("{}", format!($($t)*));
            } else {
                println!($($t)*);
            }
        };
    }
    say!(
        "mandate listening on http://{local} (issuer {issuer}, data {}, database {database})",
        config.data_dir.display()
    );
    if !config.routes.is_empty() {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name()).collect();
        say!("gateway routes under /gw/: {}", names.join(", "));
    }
    if !config.mcp_servers.is_empty() {
        let names: Vec<&str> = config.mcp_servers.iter().map(|r| r.name()).collect();
        say!("MCP servers under /mcp/: {}", names.join(", "));
    }
    // Where people open the console: its origin, which is not the listen
    // address when that is an IP (WebAuthn needs a host name).
    match &state.0.console {
        Ok(c) => say!(
            "console for people at {}/console (passkeys; `mandate principal enroll NAME` prints an enrollment link)",
            c.origin
        ),
        Err(e) => say!("console unavailable: {e}"),
    }
    let a = &config.attestation;
    if !a.trust_domains.is_empty() || !a.launchers.is_empty() {
        let list = |k: Vec<&String>| {
            if k.is_empty() {
                "none".to_owned()
            } else {
                k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        say!(
            "attestation: SPIFFE trust domains {}; launchers {}",
            list(a.trust_domains.keys().collect()),
            list(a.launchers.keys().collect())
        );
    }
    if !durable {
        say!(
            "WARNING: UNSAFE NON-DURABLE BENCHMARK MODE: no fsync; a crash loses answered decisions and their audit records. Never use this for real work."
        );
        tracing::warn!("unsafe non-durable benchmark mode: audit records are not fsynced");
    }
    if !has_principals {
        say!(
            "no principals yet: run `mandate init --data {}` to create the first admin",
            config.data_dir.display()
        );
    }
    // Metrics without credentials, on an address of their own (ADR 0025).
    let (stop_metrics, metrics_stopping) = tokio::sync::watch::channel(());
    if let Some(l) = metrics_listener {
        let at = l.local_addr().map_err(|e| {
            ServeError::Bind(
                format!("{:?}", config.metrics_listen),
                METRICS_LISTEN_SETTING,
                e,
            )
        })?;
        println!("metrics (no credentials) on http://{at}/metrics");
        if !at.ip().is_loopback() {
            tracing::warn!(
                address = %at,
                "metrics are served without credentials on a non-loopback address; let only the scraper reach it"
            );
        }
        let router = api::metrics_router(state.clone());
        let server = config.server;
        let mut stopping = metrics_stopping;
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopping.changed().await;
            };
            if let Err(e) = edge::serve(l, router, server, stop).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    // Approvers the policies name who are not principals: warned of, not
    // refused (ADR 0028); a call only they could approve is denied.
    if let Ok(org) = state.org() {
        for w in reload::approver_warnings(&state, &org.loaded.policies).await {
            tracing::warn!("{w}");
        }
    }
    spawn_reload_on_sighup(state.clone());
    changes::spawn_listener(state.clone());
    approval_notices::spawn_announcer(state.clone());
    approval_notices::spawn_sweeper(state.clone());
    approval_notices::spawn_webhook(state.clone());
    api::spawn_mcp_reaper(state.clone());
    api::spawn_memory_sweeper(state.clone());
    console::spawn_sweeper(state.clone());
    // On shutdown, MCP sessions end first: their event streams would
    // otherwise hold the graceful drain open, and their servers must stop.
    let closing = state.clone();
    let shutdown = async move {
        shutdown.await;
        closing.0.mcp.close_all();
        let _ = stop_metrics.send(());
    };
    edge::serve(listener, router(state.clone()), config.server, shutdown)
        .await
        .map_err(ServeError::Io)?;
    // Let the audit writer commit what is queued and seal the log.
    drop(state);
    if tokio::time::timeout(std::time::Duration::from_secs(10), audit_writer.shutdown())
        .await
        .is_err()
    {
        tracing::error!("the audit writer did not finish in time");
    }
    tracing::info!("mandate stopped");
    Ok(())
}

/// `SIGHUP` reloads the organisation's policies and `mandate.toml`'s routes
/// and MCP servers; a set or a file that fails to load is rejected and
/// everything running stays.
fn spawn_reload_on_sighup(state: AppState) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; use `mandate policy reload`");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload::reload_or_log(&state, reload::Trigger::Sighup).await;
        }
    });
}

/// What can only be checked once the policies are loaded: every action a
/// gateway route's rule or an MCP tool is mapped to is declared by the
/// schema (an undeclared one would turn each matching request into a
/// denial). Checked at start and on every reload; the diagnostic says
/// where in `mandate.toml` the action is.
pub(crate) fn check_actions(
    config: &Config,
    org: &mandate_core::OrgPolicies,
) -> Result<(), mandate_core::PolicyDiagnostic> {
    let at = |key: String, message: String| match &config.source {
        Some(src) => src.diagnostic(&key, message),
        None => mandate_core::PolicyDiagnostic {
            source: "mandate.toml".into(),
            line: 1,
            col: 1,
            message,
        },
    };
    for (i, route) in config.routes.iter().enumerate() {
        for (j, rule) in route.config.rules.iter().enumerate() {
            if !org.declares_action(&rule.action) {
                return Err(at(
                    format!("routes[{i}].rules[{j}].action"),
                    format!(
                        "route `{}`: the rule for `{} {}` maps to action `{}`, which the policy schema does not declare (add it to a `.cedarschema` file in the policy directory)",
                        route.name(),
                        rule.method,
                        rule.path,
                        rule.action
                    ),
                ));
            }
        }
    }
    for (i, server) in config.mcp_servers.iter().enumerate() {
        for (j, t) in server.config.tools.iter().enumerate() {
            if !org.declares_action(&t.action) {
                return Err(at(
                    format!("mcp_servers[{i}].tools[{j}].action"),
                    format!(
                        "MCP server `{}`: tool `{}` maps to action `{}`, which the policy schema does not declare (add it to a `.cedarschema` file in the policy directory)",
                        server.name(),
                        t.name,
                        t.action
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Every local MCP server's program can be found (a wrong one would
/// otherwise surface as sessions that end at once); why not, with where in
/// `mandate.toml`.
pub(crate) fn check_mcp_programs(config: &Config) -> Result<(), ConfigError> {
    for (i, server) in config.mcp_servers.iter().enumerate() {
        if let Some(command) = &server.config.command {
            let found = if command.contains('/') {
                std::path::Path::new(command).is_file()
            } else {
                std::env::var_os("PATH").is_some_and(|path| {
                    std::env::split_paths(&path).any(|dir| dir.join(command).is_file())
                })
            };
            if !found {
                return Err(config.located(ConfigError::Value(
                    format!("mcp_servers[{i}].command"),
                    format!(
                        "MCP server `{}`: the program `{command}` does not exist (or is not on PATH)",
                        server.name()
                    ),
                )));
            }
        }
    }
    Ok(())
}

/// Where the API's listen address is set, for a refusal to bind.
const LISTEN_SETTING: &str = "`--listen`, `MANDATE_LISTEN` or `listen` in mandate.toml";
/// Where the metrics listen address is set.
const METRICS_LISTEN_SETTING: &str =
    "`--metrics-listen`, `MANDATE_METRICS_LISTEN` or `metrics_listen` in mandate.toml";

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The address, what sets it (for the message), and why.
    #[error("cannot listen on `{0}`: {2}; choose another address with {1}")]
    Bind(String, &'static str, std::io::Error),
    #[error("the policies do not load:\n{0}")]
    Policies(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Audit(#[from] mandate_enforce::AuditOpenError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("server error: {0}")]
    Io(std::io::Error),
}
