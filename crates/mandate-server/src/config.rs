//! Configuration: defaults, then `mandate.toml`, then environment, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mandate_core::MissionLimits;
use serde::Deserialize;

/// Where `mandate serve` keeps its data when `--data` is not given.
pub const DEFAULT_DATA_DIR: &str = "./mandate-data";
/// Where it listens when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// The authority's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://…`) for several nodes sharing one
    /// database (ADR 0017); `None` is the embedded SQLite file
    /// `DATA/mandate.db`. From `--database`, `MANDATE_DATABASE_URL` or
    /// `database_url` in `mandate.toml`.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    /// The issuer URL, as agents and relying parties reach this authority.
    /// Defaults to `http://{listen address}`.
    pub public_url: Option<String>,
    /// Lifetime of a mission credential (capped by the mission's end).
    pub credential_ttl_secs: u64,
    /// How the authority names its JWS algorithm (`jws_alg`: `EdDSA`, the
    /// default, or `Ed25519`, RFC 9864; ADR 0026).
    pub jws_alg: mandate_core::JwsAlgName,
    /// Lifetime of a start token (capped by the mission's end).
    pub start_token_ttl_secs: u64,
    pub mission_limits: MissionLimits,
    /// The organisation's policies (`*.cedar`, `*.cedarschema`).
    pub policies_dir: PathBuf,
    /// How long an escalated request waits for a human (capped by the
    /// mission's end).
    pub approval_ttl_secs: u64,
    /// Where approval notifications go, if anywhere.
    pub webhook: Option<WebhookConfig>,
    /// Gateway routes, served under `/gw/{name}/…`.
    pub routes: Vec<crate::routes::Route>,
    /// Upstream MCP servers, served under `/mcp/{name}`.
    pub mcp_servers: Vec<crate::mcp_servers::McpServer>,
    /// The HTTP edge: timeouts, connection caps, the shutdown deadline.
    pub server: ServerConfig,
    /// The vault's key file (kept apart from the database; default
    /// `DATA/vault.key`, created on first start).
    pub vault_key_file: PathBuf,
    /// BENCHMARKS ONLY: no `fsync`, so a crash may lose decisions (and their
    /// audit records) that were already answered. Named so nobody turns it
    /// on by accident; the server says so loudly at start and in `/healthz`.
    pub unsafe_non_durable_benchmark_mode: bool,
    /// Audit checkpoints: their cadence and where they go besides the
    /// database.
    pub audit: AuditConfig,
    /// What attestation evidence is trusted (`[attestation]`).
    pub attestation: crate::attestation::AttestationConfig,
    /// A second address serving `GET /metrics` without credentials (for a
    /// scraper on a trusted network); `None`: metrics only on the API's
    /// listener, to an admin's token (ADR 0025).
    pub metrics_listen: Option<SocketAddr>,
    /// Where traces go over OTLP/HTTP (the full URL, `…/v1/traces`);
    /// `None`: no traces.
    pub otlp_traces_url: Option<String>,
    /// `[console]`: the console's WebAuthn relying party (ADR 0032).
    pub console: crate::console::ConsoleConfig,
    /// Print nothing on standard output at start (the listening address,
    /// routes, warnings go to the log only): for a program that serves in
    /// process and owns its standard output, such as `mandate demo --json`.
    pub quiet: bool,
    /// The `mandate.toml` read, if any: where in it something is wrong.
    pub source: Option<Source>,
    /// How it was loaded (the flags), so a reload reads it the same way.
    origin: Origin,
}

/// What the command line gave besides the data dir: a reload of the
/// configuration keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Origin {
    config_file: Option<PathBuf>,
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    metrics_listen: Option<SocketAddr>,
}

/// A `mandate.toml` as read, to say where in it something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    text: String,
}

impl Source {
    /// Line and column (from 1, in characters, as an editor counts them)
    /// of byte `offset`.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// Where `key` is written: a dotted path with `[n]` for the n-th entry
    /// of an array (`routes[1].rules[0].action`). A key that is not
    /// written (a default) gives the nearest enclosing part that is; one
    /// of which nothing is written, `None`.
    #[must_use]
    pub fn locate(&self, key: &str) -> Option<(usize, usize)> {
        use toml::de::{DeTable, DeValue};
        let root = DeTable::parse(&self.text).ok()?;
        // Where we are: `None` is the document itself.
        let mut value: Option<&DeValue<'_>> = None;
        let mut found: Option<usize> = None;
        for part in key.split('.') {
            let (name, indices) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                let table = match value {
                    None => Some(root.get_ref()),
                    Some(v) => v.as_table(),
                };
                let Some((k, v)) = table.and_then(|t| t.get_key_value(name)) else {
                    break;
                };
                found = Some(k.span().start);
                value = Some(v.get_ref());
            }
            for i in indices
                .split('[')
                .filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok())
            {
                let Some(item) = value.and_then(DeValue::as_array).and_then(|a| a.get(i)) else {
                    return found.map(|o| self.line_col(o));
                };
                found = Some(item.span().start);
                value = Some(item.get_ref());
            }
        }
        found.map(|o| self.line_col(o))
    }

    /// `file:line:col` of `key` ([`Self::locate`]); the file alone if it
    /// is not written there.
    #[must_use]
    pub fn at(&self, key: &str) -> String {
        match self.locate(key) {
            Some((line, col)) => format!("{}:{line}:{col}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// A problem with `key`, as a diagnostic (`file:line:col: message`).
    #[must_use]
    pub fn diagnostic(&self, key: &str, message: String) -> mandate_core::PolicyDiagnostic {
        let (line, col) = self.locate(key).unwrap_or((1, 1));
        mandate_core::PolicyDiagnostic {
            source: self.path.display().to_string(),
            line,
            col,
            message,
        }
    }
}

/// Where the audit log's signed checkpoints go, and how often they come
/// (ADR 0012).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// A checkpoint at every multiple of `every` records and at most `secs`
    /// seconds after any record.
    pub cadence: mandate_core::Cadence,
    /// The append-only checkpoint file (default `DATA/audit-checkpoints.log`);
    /// put it on another disk or a write-once mount to keep it from whoever
    /// can write the database.
    pub checkpoint_file: PathBuf,
    /// An optional witness: every checkpoint is POSTed here as it is signed.
    pub witness: Option<WebhookConfig>,
}

/// The name of the checkpoint file in the data dir.
pub const CHECKPOINT_FILE: &str = "audit-checkpoints.log";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    checkpoint_every: Option<u64>,
    checkpoint_secs: Option<u64>,
    checkpoint_file: Option<PathBuf>,
    witness: Option<WebhookConfig>,
}

/// The approval webhook: every new request, approval, denial and expiry is
/// POSTed to `url` as a JWT signed by the authority key (verify it against
/// `/.well-known/jwks.json`). Delivery retries with exponential backoff and
/// never holds up a decision.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Attempts before a notification is given up (it stays in the outbox).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles on every failure up to `max_backoff_ms`.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_attempts() -> u32 {
    12
}
fn default_initial_backoff_ms() -> u64 {
    1_000
}
fn default_max_backoff_ms() -> u64 {
    300_000
}
fn default_timeout_ms() -> u64 {
    5_000
}

/// The HTTP edge (`[server]` in `mandate.toml`): how long a client may take
/// and how many connections it may hold. See ADR 0013.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// From the first byte of a request head (or from the accept, for a
    /// new connection) until the head is complete.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open connections, all clients together.
    pub max_connections: usize,
    /// Open connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// How long in-flight requests get to finish after a shutdown signal,
    /// before every connection is closed.
    pub shutdown_deadline: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1_024,
            max_connections_per_ip: 256,
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// `[server]` as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    shutdown_deadline_secs: Option<u64>,
}

impl TryFrom<FileServer> for ServerConfig {
    type Error = ConfigError;

    fn try_from(f: FileServer) -> Result<Self, ConfigError> {
        let FileServer {
            header_read_timeout_secs,
            idle_timeout_secs,
            max_connections,
            max_connections_per_ip,
            shutdown_deadline_secs,
        } = f;
        let d = Self::default();
        let secs = |name: &'static str, v: Option<u64>, default: Duration| match v {
            None => Ok(default),
            Some(s @ 1..=3_600) => Ok(Duration::from_secs(s)),
            Some(_) => Err(ConfigError::Value(
                name.into(),
                "must be 1..=3600 seconds".into(),
            )),
        };
        let server = Self {
            header_read_timeout: secs(
                "server.header_read_timeout_secs",
                header_read_timeout_secs,
                d.header_read_timeout,
            )?,
            idle_timeout: secs(
                "server.idle_timeout_secs",
                idle_timeout_secs,
                d.idle_timeout,
            )?,
            max_connections: max_connections.unwrap_or(d.max_connections),
            max_connections_per_ip: max_connections_per_ip.unwrap_or(d.max_connections_per_ip),
            shutdown_deadline: secs(
                "server.shutdown_deadline_secs",
                shutdown_deadline_secs,
                d.shutdown_deadline,
            )?,
        };
        if !(1..=1_000_000).contains(&server.max_connections) {
            return Err(ConfigError::Value(
                "server.max_connections".into(),
                "must be 1..=1000000".into(),
            ));
        }
        if !(1..=server.max_connections).contains(&server.max_connections_per_ip) {
            return Err(ConfigError::Value(
                "server.max_connections_per_ip".into(),
                "must be ≥ 1 and ≤ server.max_connections".into(),
            ));
        }
        Ok(server)
    }
}

/// The optional `mandate.toml`. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    credential_ttl_secs: Option<u64>,
    jws_alg: Option<mandate_core::JwsAlgName>,
    start_token_ttl_secs: Option<u64>,
    policies_dir: Option<PathBuf>,
    approval_ttl_secs: Option<u64>,
    #[serde(default)]
    missions: FileMissionLimits,
    webhook: Option<WebhookConfig>,
    #[serde(default)]
    routes: Vec<crate::routes::RouteConfig>,
    #[serde(default)]
    mcp_servers: Vec<crate::mcp_servers::McpServerConfig>,
    vault_key_file: Option<PathBuf>,
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    unsafe_non_durable_benchmark_mode: bool,
    #[serde(default)]
    audit: FileAudit,
    #[serde(default)]
    attestation: crate::attestation::AttestationConfig,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    tracing: FileTracing,
    #[serde(default)]
    console: crate::console::ConsoleConfig,
}

/// `[tracing]`: where traces go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTracing {
    /// An OTLP/HTTP collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`):
    /// traces go to `{otlp_endpoint}/v1/traces`.
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMissionLimits {
    min_ttl_secs: Option<u64>,
    max_ttl_secs: Option<u64>,
    max_budget: Option<u64>,
    max_delegation_depth: Option<u32>,
}

/// A database URL Mandate can use: PostgreSQL's (SQLite needs none).
pub fn check_database_url(url: &str) -> Result<(), ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(ConfigError::Value(
            "database_url".into(),
            format!(
                "`{}` is not a PostgreSQL URL (postgres://…); leave it unset for the embedded SQLite database",
                redact_url(url)
            ),
        ))
    }
}

/// A parse error's message without the values it quotes: `invalid type:
/// string "…"` and `unknown variant `…`` name what was written, and what
/// was written where a number, a table or a keyword belongs may be a
/// secret in the wrong place (a token as `auth`, `env` as one string).
/// The message says where (`file:line:col`) and what was expected; the
/// operator has the file. Such messages reach the log and, on a reload,
/// the admin who asked for it, who may not be the one who may read the
/// file.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let quoted = rest.find("string \"").map(|i| (i + "string ".len(), '"'));
        let ticked = rest.find("variant `").map(|i| (i + "variant ".len(), '`'));
        let next = match (quoted, ticked) {
            (Some(q), Some(t)) => Some(if q.0 < t.0 { q } else { t }),
            (q, t) => q.or(t),
        };
        let Some((at, close)) = next else {
            out.push_str(rest);
            return out;
        };
        let Some((before, value)) = rest.split_at_checked(at) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(before.trim_end());
        // The value, as serde writes it: quoted with `"` (escaped as Rust
        // does) or between backticks. An unterminated one goes to the end.
        let mut escaped = false;
        let mut end = value.len();
        for (i, c) in value.char_indices().skip(1) {
            if close == '"' && escaped {
                escaped = false;
            } else if close == '"' && c == '\\' {
                escaped = true;
            } else if c == close {
                end = i + c.len_utf8();
                break;
            }
        }
        rest = value.get(end..).unwrap_or("");
    }
}

/// An upstream's URL as a message may repeat it: without a password,
/// query or fragment (where API keys are put), whether or not it parses.
#[must_use]
pub fn redact_upstream(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or("");
    if url.contains("://") {
        return redact_url(url);
    }
    let host_on = url.find('/').unwrap_or(url.len());
    match url.get(..host_on).and_then(|a| a.rfind('@')) {
        Some(at) => url.get(at + 1..).unwrap_or("").to_owned(),
        None => url.to_owned(),
    }
}

/// A database URL without its password, for messages and logs.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{scheme}://{user}@{host}{}",
                tail.split('?').next().unwrap_or("")
            )
        }
        None => format!(
            "{scheme}://{authority}{}",
            tail.split('?').next().unwrap_or("")
        ),
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{0}`: {1}")]
    Read(String, std::io::Error),
    /// The file does not parse: `file:line:col`, and what is wrong there.
    #[error("{0}: {1}")]
    Parse(String, String),
    /// A value is wrong: its key (or the environment variable that set
    /// it), and why.
    #[error("invalid value for {0}: {1}")]
    Value(String, String),
    /// A value of the file is wrong, and where it is written.
    #[error("{at}: invalid value for {key}: {message}")]
    At {
        at: String,
        key: String,
        message: String,
    },
}

/// Where traces go: the OpenTelemetry variables first
/// (`OTEL_SDK_DISABLED=true` turns them off; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
/// is the full URL, `OTEL_EXPORTER_OTLP_ENDPOINT` a base), then
/// `[tracing] otlp_endpoint` (a base). A base gets `/v1/traces`.
fn otlp_traces_url(
    env: impl Fn(&str) -> Option<String>,
    file: Option<String>,
) -> Result<Option<String>, ConfigError> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let base = |b: String| format!("{}/v1/traces", b.trim_end_matches('/'));
    let (name, url) = match (
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        file,
    ) {
        (Some(full), _, _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", full),
        (None, Some(b), _) => ("OTEL_EXPORTER_OTLP_ENDPOINT", base(b)),
        (None, None, Some(b)) => ("tracing.otlp_endpoint", base(b)),
        (None, None, None) => return Ok(None),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Value(
            name.into(),
            format!(
                "`{}` is not an http(s) URL (OTLP over HTTP)",
                redact_url(&url)
            ),
        ));
    }
    Ok(Some(url))
}

impl Config {
    /// Loads the configuration for `data_dir`: `config_file` if given (it
    /// must exist), else `{data_dir}/mandate.toml` if present; then the
    /// `MANDATE_LISTEN`, `MANDATE_METRICS_LISTEN`, `MANDATE_PUBLIC_URL`,
    /// `MANDATE_CREDENTIAL_TTL` and OpenTelemetry (`OTEL_…`) environment
    /// variables; `listen` (the flag) wins over both.
    pub fn load(
        data_dir: &Path,
        config_file: Option<&Path>,
        listen: Option<SocketAddr>,
    ) -> Result<Self, ConfigError> {
        Self::load_with(
            data_dir,
            Origin {
                config_file: config_file.map(Path::to_path_buf),
                listen,
                database_url: None,
                metrics_listen: None,
            },
        )
    }

    /// The database URL given on the command line (`--database`): it wins
    /// over `MANDATE_DATABASE_URL` and `database_url`, now and on reload.
    pub fn with_database_url(mut self, url: String) -> Result<Self, ConfigError> {
        check_database_url(&url).map_err(|e| match e {
            ConfigError::Value(_, m) => ConfigError::Value("--database".into(), m),
            other => other,
        })?;
        self.origin.database_url = Some(url.clone());
        self.database_url = Some(url);
        Ok(self)
    }

    /// The metrics address given on the command line (`--metrics-listen`):
    /// it wins over `MANDATE_METRICS_LISTEN` and `metrics_listen`, now and
    /// on reload.
    #[must_use]
    pub fn with_metrics_listen(mut self, addr: SocketAddr) -> Self {
        self.origin.metrics_listen = Some(addr);
        self.metrics_listen = Some(addr);
        self
    }

    /// The configuration read again, as it was read at start (same file,
    /// same flags, the environment as it is). A file read at start must
    /// still be there: one that vanished is an error, not an empty
    /// configuration (which would drop every route).
    pub(crate) fn reread(&self) -> Result<Self, ConfigError> {
        let mut origin = self.origin.clone();
        if let Some(src) = &self.source {
            origin.config_file = Some(src.path.clone());
        }
        Self::load_with(&self.data_dir, origin)
    }

    fn load_with(data_dir: &Path, origin: Origin) -> Result<Self, ConfigError> {
        let default_file = data_dir.join("mandate.toml");
        let file = match &origin.config_file {
            Some(p) => Some(p.clone()),
            None => default_file.exists().then_some(default_file),
        };
        let source = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
                Some(Source { path, text })
            }
            None => None,
        };
        let fc: FileConfig = match &source {
            Some(src) => toml::from_str(&src.text).map_err(|e| {
                let at = match e.span() {
                    Some(span) => {
                        let (line, col) = src.line_col(span.start);
                        format!("{}:{line}:{col}", src.path.display())
                    }
                    None => src.path.display().to_string(),
                };
                ConfigError::Parse(at, without_values(e.message().trim_end()))
            })?,
            None => FileConfig::default(),
        };
        Self::build(data_dir, origin, fc, source.clone()).map_err(|e| located(e, source.as_ref()))
    }

    /// The configuration from the file's contents `fc`, the environment
    /// and the flags, checked. A [`ConfigError::Value`] names the key as
    /// [`Source::locate`] finds it.
    #[expect(
        clippy::too_many_lines,
        reason = "one check after another, in the order of the file"
    )]
    fn build(
        data_dir: &Path,
        origin: Origin,
        fc: FileConfig,
        source: Option<Source>,
    ) -> Result<Self, ConfigError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let default_listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .map_err(|_| ConfigError::Value("listen".into(), DEFAULT_LISTEN.into()))?;
        let env_listen = env("MANDATE_LISTEN")
            .map(|v| {
                v.parse::<SocketAddr>()
                    .map_err(|e| ConfigError::Value("MANDATE_LISTEN".into(), format!("`{v}`: {e}")))
            })
            .transpose()?;
        let env_metrics_listen = env("MANDATE_METRICS_LISTEN")
            .map(|v| {
                v.parse::<SocketAddr>().map_err(|e| {
                    ConfigError::Value("MANDATE_METRICS_LISTEN".into(), format!("`{v}`: {e}"))
                })
            })
            .transpose()?;
        let otlp_traces_url = otlp_traces_url(env, fc.tracing.otlp_endpoint)?;
        let env_ttl = env("MANDATE_CREDENTIAL_TTL")
            .map(|v| {
                v.parse::<u64>().map_err(|e| {
                    ConfigError::Value("MANDATE_CREDENTIAL_TTL".into(), format!("`{v}`: {e}"))
                })
            })
            .transpose()?;
        let (public_url, public_url_key) = match env("MANDATE_PUBLIC_URL") {
            Some(u) => (Some(u), "MANDATE_PUBLIC_URL"),
            None => (fc.public_url, "public_url"),
        };
        let public_url = public_url.map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError::Value(
                public_url_key.into(),
                format!("`{u}` is not an http(s) URL"),
            ));
        }
        let (database_url, database_key) = match (&origin.database_url, env("MANDATE_DATABASE_URL"))
        {
            (Some(u), _) => (Some(u.clone()), "--database"),
            (None, Some(u)) => (Some(u), "MANDATE_DATABASE_URL"),
            (None, None) => (fc.database_url, "database_url"),
        };
        if let Some(u) = &database_url {
            check_database_url(u).map_err(|e| match e {
                ConfigError::Value(_, m) => ConfigError::Value(database_key.into(), m),
                other => other,
            })?;
        }
        let defaults = MissionLimits::default();
        let mut config = Self {
            data_dir: data_dir.to_path_buf(),
            database_url,
            listen: origin
                .listen
                .or(env_listen)
                .or(fc.listen)
                .unwrap_or(default_listen),
            public_url,
            credential_ttl_secs: env_ttl.or(fc.credential_ttl_secs).unwrap_or(600),
            jws_alg: fc.jws_alg.unwrap_or_default(),
            start_token_ttl_secs: fc.start_token_ttl_secs.unwrap_or(900),
            policies_dir: env("MANDATE_POLICIES")
                .map(PathBuf::from)
                .or(fc.policies_dir)
                .unwrap_or_else(|| data_dir.join("policies")),
            approval_ttl_secs: fc.approval_ttl_secs.unwrap_or(3_600),
            webhook: fc.webhook,
            routes: Vec::new(),
            mcp_servers: Vec::new(),
            server: ServerConfig::try_from(fc.server)?,
            unsafe_non_durable_benchmark_mode: fc.unsafe_non_durable_benchmark_mode,
            vault_key_file: env("MANDATE_VAULT_KEY_FILE")
                .map(PathBuf::from)
                .or(fc.vault_key_file)
                .unwrap_or_else(|| data_dir.join("vault.key")),
            audit: AuditConfig {
                cadence: mandate_core::Cadence {
                    every: fc
                        .audit
                        .checkpoint_every
                        .unwrap_or(mandate_core::Cadence::default().every),
                    secs: fc
                        .audit
                        .checkpoint_secs
                        .unwrap_or(mandate_core::Cadence::default().secs),
                },
                checkpoint_file: fc
                    .audit
                    .checkpoint_file
                    .unwrap_or_else(|| data_dir.join(CHECKPOINT_FILE)),
                witness: fc.audit.witness,
            },
            attestation: fc.attestation,
            metrics_listen: origin
                .metrics_listen
                .or(env_metrics_listen)
                .or(fc.metrics_listen),
            otlp_traces_url,
            console: fc.console,
            quiet: false,
            mission_limits: MissionLimits {
                min_ttl_secs: fc.missions.min_ttl_secs.unwrap_or(defaults.min_ttl_secs),
                max_ttl_secs: fc.missions.max_ttl_secs.unwrap_or(defaults.max_ttl_secs),
                max_budget: fc.missions.max_budget.unwrap_or(defaults.max_budget),
                max_depth: fc
                    .missions
                    .max_delegation_depth
                    .unwrap_or(defaults.max_depth),
            },
            source,
            origin,
        };
        config
            .attestation
            .check()
            .map_err(|e| ConfigError::Value("attestation".into(), e))?;
        if !(1..=86_400).contains(&config.credential_ttl_secs) {
            return Err(ConfigError::Value(
                if env("MANDATE_CREDENTIAL_TTL").is_some() {
                    "MANDATE_CREDENTIAL_TTL"
                } else {
                    "credential_ttl_secs"
                }
                .into(),
                "must be 1..=86400".into(),
            ));
        }
        if !(1..=86_400).contains(&config.start_token_ttl_secs) {
            return Err(ConfigError::Value(
                "start_token_ttl_secs".into(),
                "must be 1..=86400".into(),
            ));
        }
        if let Some(w) = &config.webhook {
            check_webhook("webhook", w)?;
        }
        if let Some(w) = &config.audit.witness {
            check_webhook("audit.witness", w)?;
        }
        let c = config.audit.cadence;
        if !(1..=100_000).contains(&c.every) || !(1..=3_600).contains(&c.secs) {
            return Err(ConfigError::Value(
                "audit".into(),
                "checkpoint_every must be 1..=100000 and checkpoint_secs 1..=3600".into(),
            ));
        }
        for (i, r) in fc.routes.into_iter().enumerate() {
            let route = crate::routes::Route::new(r)
                .map_err(|e| ConfigError::Value(entry_key("routes", i, &e.key), e.to_string()))?;
            if config.routes.iter().any(|x| x.name() == route.name()) {
                return Err(ConfigError::Value(
                    format!("routes[{i}].name"),
                    format!("route `{}` is defined twice", route.name()),
                ));
            }
            config.routes.push(route);
        }
        for (i, m) in fc.mcp_servers.into_iter().enumerate() {
            let server = crate::mcp_servers::McpServer::new(m).map_err(|e| {
                ConfigError::Value(entry_key("mcp_servers", i, &e.key), e.to_string())
            })?;
            if config.mcp_servers.iter().any(|x| x.name() == server.name()) {
                return Err(ConfigError::Value(
                    format!("mcp_servers[{i}].name"),
                    format!("MCP server `{}` is defined twice", server.name()),
                ));
            }
            config.mcp_servers.push(server);
        }
        config.check_attestation_requirements(&config.attestation)?;
        let l = config.mission_limits;
        if l.min_ttl_secs == 0 || l.min_ttl_secs > l.max_ttl_secs {
            return Err(ConfigError::Value(
                "missions.min_ttl_secs".into(),
                "must be ≥ 1 and ≤ max_ttl_secs".into(),
            ));
        }
        if !(1..=16).contains(&l.max_depth) {
            return Err(ConfigError::Value(
                "missions.max_delegation_depth".into(),
                "must be between 1 (no delegation) and 16".into(),
            ));
        }
        Ok(config)
    }

    /// Every route's and MCP server's `attestation` names only trust
    /// domains and launchers `attestation` (the running `[attestation]`)
    /// has: one it lacks could never be satisfied.
    pub(crate) fn check_attestation_requirements(
        &self,
        attestation: &crate::attestation::AttestationConfig,
    ) -> Result<(), ConfigError> {
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(req) = &r.config.attestation {
                attestation.check_requirement(req).map_err(|e| {
                    ConfigError::Value(
                        format!("routes[{i}].attestation"),
                        format!("route `{}`: {e}", r.name()),
                    )
                })?;
            }
        }
        for (i, m) in self.mcp_servers.iter().enumerate() {
            if let Some(req) = &m.config.attestation {
                attestation.check_requirement(req).map_err(|e| {
                    ConfigError::Value(
                        format!("mcp_servers[{i}].attestation"),
                        format!("MCP server `{}`: {e}", m.name()),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// `e` with where in the file its key is, when it names one of the
    /// file's.
    #[must_use]
    pub(crate) fn located(&self, e: ConfigError) -> ConfigError {
        located(e, self.source.as_ref())
    }

    /// The settings of `new` a running server cannot take on, by their
    /// names in `mandate.toml`: those where it differs from `self` (what
    /// the server started with). Routes and MCP servers are not among
    /// them: a reload replaces those.
    #[must_use]
    pub(crate) fn needs_restart(&self, new: &Self) -> Vec<&'static str> {
        let Self {
            data_dir: _,
            database_url,
            listen,
            public_url,
            credential_ttl_secs,
            start_token_ttl_secs,
            mission_limits,
            policies_dir,
            approval_ttl_secs,
            webhook,
            routes: _,
            mcp_servers: _,
            server,
            vault_key_file,
            unsafe_non_durable_benchmark_mode,
            audit,
            attestation,
            source: _,
            origin: _,
            jws_alg,
            metrics_listen,
            otlp_traces_url,
            console,
            quiet: _,
        } = self;
        let mut out = Vec::new();
        let mut differs = |name: &'static str, same: bool| {
            if !same {
                out.push(name);
            }
        };
        differs("database_url", *database_url == new.database_url);
        differs("listen", *listen == new.listen);
        differs("public_url", *public_url == new.public_url);
        differs(
            "credential_ttl_secs",
            *credential_ttl_secs == new.credential_ttl_secs,
        );
        differs(
            "start_token_ttl_secs",
            *start_token_ttl_secs == new.start_token_ttl_secs,
        );
        differs("missions", *mission_limits == new.mission_limits);
        differs("policies_dir", *policies_dir == new.policies_dir);
        differs(
            "approval_ttl_secs",
            *approval_ttl_secs == new.approval_ttl_secs,
        );
        differs("webhook", *webhook == new.webhook);
        differs("server", *server == new.server);
        differs("vault_key_file", *vault_key_file == new.vault_key_file);
        differs(
            "unsafe_non_durable_benchmark_mode",
            *unsafe_non_durable_benchmark_mode == new.unsafe_non_durable_benchmark_mode,
        );
        differs("audit", *audit == new.audit);
        differs("attestation", *attestation == new.attestation);
        differs("jws_alg", *jws_alg == new.jws_alg);
        differs("metrics_listen", *metrics_listen == new.metrics_listen);
        differs("tracing", *otlp_traces_url == new.otlp_traces_url);
        differs("console", *console == new.console);
        out
    }
}

/// `e` with where in `source` its key is, when it names one of the file's.
fn located(e: ConfigError, source: Option<&Source>) -> ConfigError {
    match (e, source) {
        (ConfigError::Value(key, message), Some(src)) if !is_env(&key) => match src.locate(&key) {
            Some((line, col)) => ConfigError::At {
                at: format!("{}:{line}:{col}", src.path.display()),
                key,
                message,
            },
            None => ConfigError::Value(key, message),
        },
        (e, _) => e,
    }
}

/// A key set by the command line or the environment, not the file.
fn is_env(key: &str) -> bool {
    key.starts_with("MANDATE_") || key.starts_with("--")
}

/// The key of what is wrong inside entry `i` of the array `array`.
fn entry_key(array: &str, i: usize, key: &str) -> String {
    if key.is_empty() {
        format!("{array}[{i}]")
    } else {
        format!("{array}[{i}].{key}")
    }
}

fn check_webhook(name: &'static str, w: &WebhookConfig) -> Result<(), ConfigError> {
    if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
        return Err(ConfigError::Value(
            format!("{name}.url"),
            // Not echoed: a webhook's URL is often its secret.
            "not an http(s) URL".into(),
        ));
    }
    if w.max_attempts == 0
        || w.initial_backoff_ms == 0
        || w.initial_backoff_ms > w.max_backoff_ms
        || w.timeout_ms == 0
    {
        return Err(ConfigError::Value(
            name.into(),
            "max_attempts, initial_backoff_ms and timeout_ms must be ≥ 1, \
             and initial_backoff_ms ≤ max_backoff_ms"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            path: PathBuf::from("m.toml"),
            text: text.to_owned(),
        }
    }

    const FILE: &str = "listen = \"127.0.0.1:7878\"\n\
                        \n\
                        [server]\n\
                        max_connections = 9\n\
                        \n\
                        [[routes]]\n\
                        name = \"a\"\n\
                        \n\
                        [[routes]]\n\
                        name = \"b\"\n\
                        upstream = \"x\"\n\
                        rules = [{ method = \"GET\", path = \"/\", action = \"read\" },\n\
                        \x20        { method = \"get\", path = \"/\", action = \"read\" }]\n\
                        \n\
                        [[mcp_servers]]\n\
                        name = \"git\"\n\
                        \n\
                        [[mcp_servers.tools]]\n\
                        name = \"t\"\n\
                        \x20 action = \"write\"\n";

    #[test]
    fn a_key_is_found_where_it_is_written() {
        let s = source(FILE);
        assert_eq!(s.locate("listen"), Some((1, 1)));
        assert_eq!(s.locate("server.max_connections"), Some((4, 1)));
        assert_eq!(s.locate("routes[1].upstream"), Some((11, 1)));
        assert_eq!(s.locate("routes[1].rules[1].method"), Some((13, 12)));
        assert_eq!(s.locate("mcp_servers[0].tools[0].action"), Some((20, 3)));
        assert_eq!(s.at("routes[1].name"), "m.toml:10:1");
    }

    #[test]
    fn a_key_not_written_gives_the_nearest_part_that_is() {
        let s = source(FILE);
        // Defaulted: where its table is.
        assert_eq!(s.locate("routes[0].upstream"), s.locate("routes[0]"));
        assert_eq!(s.locate("server.idle_timeout_secs"), s.locate("server"));
        assert!(s.locate("routes[0]").is_some());
        // Nothing of it written.
        assert_eq!(s.locate("webhook.url"), None);
        assert_eq!(s.at("webhook.url"), "m.toml");
        // Past the end of an array: the array.
        assert_eq!(s.locate("routes[7].name"), s.locate("routes"));
    }

    #[test]
    fn a_wrong_value_says_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mandate.toml");
        std::fs::write(
            &file,
            "credential_ttl_secs = 9\n\n[server]\nmax_connections = 0\n",
        )
        .unwrap();
        let e = Config::load(dir.path(), None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}:4:1: invalid value for server.max_connections: must be 1..=1000000",
                file.display()
            )
        );
        std::fs::write(&file, "credential_ttl_secs = 9\nlisten = [\n").unwrap();
        let e = Config::load(dir.path(), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{}:2:", file.display())), "{e}");
    }

    /// A secret written where it does not belong is refused without being
    /// repeated: the message goes to the log and to whoever reloads.
    #[test]
    fn a_refused_file_does_not_repeat_the_secrets_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mandate.toml");
        for (text, kept) in [
            (
                "[[routes]]\nname = \"crm\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"Bearer sk-live-s3cret\"\n",
                "unknown variant, expected one of `pass`, `token_exchange`, `vault`",
            ),
            (
                "[[mcp_servers]]\nname = \"gh\"\ncommand = \"sh\"\nenv = \"GITHUB_TOKEN=s3cret \\\" quoted\"\n",
                "invalid type: string, expected a map",
            ),
            (
                "credential_ttl_secs = \"s3cret\"\n",
                "invalid type: string, expected u64",
            ),
            (
                "[[routes]]\nname = \"crm\"\nupstream = \"https://crm.example/v1?api_key=s3cret\"\n",
                "upstream `https://crm.example/v1` is not an http(s) base URL",
            ),
            (
                "[[mcp_servers]]\nname = \"gh\"\nurl = \"htps://user:s3cret@mcp.example/?key=s3cret\"\n",
                "`url` `htps://user@mcp.example/` is not an http(s) URL",
            ),
            (
                "[webhook]\nurl = \"hooks.example/services/T0/B0/s3cret\"\n",
                "invalid value for webhook.url: not an http(s) URL",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = Config::load(dir.path(), None, None)
                .unwrap_err()
                .to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains(kept), "{e}");
            assert!(e.starts_with(&file.display().to_string()), "{e}");
        }
        assert_eq!(
            without_values(r#"invalid value: string "a\"b", expected x; unknown variant `c`"#),
            "invalid value: string, expected x; unknown variant"
        );
    }

    #[test]
    fn a_reload_names_what_needs_a_restart_and_keeps_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mandate.toml");
        std::fs::write(&file, "credential_ttl_secs = 60\n").unwrap();
        let listen: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let running = Config::load(dir.path(), None, Some(listen)).unwrap();
        std::fs::write(
            &file,
            "credential_ttl_secs = 60\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        // The flag still wins over the file: nothing to restart for.
        let again = running.reread().unwrap();
        assert_eq!(again.listen, listen);
        assert!(running.needs_restart(&again).is_empty());
        std::fs::write(
            &file,
            "credential_ttl_secs = 61\n[server]\nidle_timeout_secs = 5\n",
        )
        .unwrap();
        let again = running.reread().unwrap();
        assert_eq!(
            running.needs_restart(&again),
            vec!["credential_ttl_secs", "server"]
        );
        // A file read at start that is gone is an error, not "no routes".
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(running.reread(), Err(ConfigError::Read(..))));
    }

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    /// The OpenTelemetry variables win over the file; a base URL gets
    /// `/v1/traces`, the traces URL is taken as it is; the SDK's off switch
    /// turns traces off whatever else is set; only http(s) is taken.
    #[test]
    fn the_otlp_traces_url_is_where_the_variables_or_the_file_say() {
        let file = || Some("http://file:4318/".to_owned());
        assert_eq!(otlp_traces_url(with(&[]), None).unwrap(), None);
        assert_eq!(
            otlp_traces_url(with(&[]), file()).unwrap().as_deref(),
            Some("http://file:4318/v1/traces")
        );
        assert_eq!(
            otlp_traces_url(
                with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4318")]),
                file()
            )
            .unwrap()
            .as_deref(),
            Some("https://env:4318/v1/traces")
        );
        assert_eq!(
            otlp_traces_url(
                with(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom")
                ]),
                file()
            )
            .unwrap()
            .as_deref(),
            Some("http://t:1/custom")
        );
        assert_eq!(
            otlp_traces_url(with(&[("OTEL_SDK_DISABLED", "TRUE")]), file()).unwrap(),
            None
        );
        let e = otlp_traces_url(with(&[]), Some("grpc://collector:4317".into())).unwrap_err();
        assert!(e.to_string().contains("tracing.otlp_endpoint"), "{e}");
    }
}
