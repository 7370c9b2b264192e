use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The heading the options every command takes are listed under.
const GLOBAL: &str = "Global options";

/// Where the CLI finds the authority when neither `--server` nor
/// `MANDATE_SERVER` names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// Mandate: mission-scoped authority for AI agents.
#[derive(Debug, Parser)]
#[command(name = "mandate", version, about, propagate_version = true)]
pub struct Cli {
    // The environment variables are read in `Cli::server` and `Cli::token`,
    // not by clap: clap counts a value from the environment as given on the
    // command line and repeats it in every usage error, as if it were one of
    // the command's required arguments.
    /// The authority's URL [env: MANDATE_SERVER] [default:
    /// http://127.0.0.1:7878].
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub server: Option<String>,
    /// Your API token [env: MANDATE_TOKEN] (prefer the environment variable
    /// to the flag, which other users can read in the process list).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// A non-empty environment variable.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Cli {
    /// The authority's URL: `--server`, else `MANDATE_SERVER`, else the
    /// default.
    #[must_use]
    pub fn server(&self) -> String {
        self.server
            .clone()
            .or_else(|| env_value("MANDATE_SERVER"))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
    }

    /// The API token: `--token`, else `MANDATE_TOKEN`.
    #[must_use]
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| env_value("MANDATE_TOKEN"))
    }
}

/// The global options, for a command where they do nothing: accepted (they
/// may come before the command's name) but left out of its help.
#[derive(Debug, Args)]
pub struct UnusedGlobals {
    #[arg(long, hide = true)]
    server: Option<String>,
    #[arg(long, hide = true)]
    token: Option<String>,
}

/// As [`UnusedGlobals`], with `--json` as well.
#[derive(Debug, Args)]
pub struct UnusedGlobalsAndJson {
    #[command(flatten)]
    globals: UnusedGlobals,
    #[arg(long, hide = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authority (embedded SQLite in the data dir; keys created on first start).
    Serve(ServeArgs),
    /// Create the first admin of a data dir and print its API token, once.
    Init(InitArgs),
    /// Show who your API token belongs to.
    Whoami,
    /// Manage principals (admin).
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Register and list agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Create, start, inspect and end missions.
    #[command(subcommand)]
    Mission(MissionCmd),
    /// Revoke a mission, agent, principal or token, effective immediately.
    Revoke(RevokeArgs),
    /// Verify or introspect mission credentials.
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Validate, test and reload Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Ask for a decision, as an enforcement point would. Exits 0 on allow,
    /// 2 on deny, 3 on escalate (1 on any error).
    Decide(DecideArgs),
    /// Read, verify and export the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Decide what escalated calls wait for: approve (creating a grant for
    /// that mission only) or deny.
    #[command(subcommand)]
    Approvals(ApprovalsCmd),
    /// The consultant story end to end, on loopback, in under a minute: an
    /// authority, a gateway, three demo upstreams and a scripted agent.
    Demo(DemoArgs),
    /// Vault principals' secrets for password-only systems (admin). The
    /// gateway injects them for a mission's principal after an Allow; the
    /// agent never sees them.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// MCP helpers for agents.
    #[command(subcommand)]
    Mcp(McpCmd),
    /// Start an agent as a trusted launcher: measure its code, start its
    /// mission with a signed launch statement bound to a fresh mission key,
    /// run it with the mission (MANDATE_STATE), and end the mission when
    /// it exits.
    Launch(LaunchArgs),
    /// Launcher keys (the operator registers the public key in
    /// `[attestation.launchers.NAME]`).
    #[command(subcommand)]
    Launcher(LauncherCmd),
    /// A mission's memory: the agent keeps entries while its mission runs
    /// (gone when it ends); a person reviews them and promotes some to the
    /// agent's notes.
    #[command(subcommand)]
    Memory(crate::memory::MemoryCmd),
    /// Agent side: the notes a person promoted for the mission's agent.
    #[command(subcommand)]
    Notes(crate::memory::NotesCmd),
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The launcher's name, as `[attestation.launchers.NAME]` names it.
    #[arg(long)]
    pub launcher: String,
    /// The launcher's private key (PKCS#8 PEM, `mandate launcher keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The mission's start token (`mst_…`), or `-` to read it from
    /// standard input.
    #[arg(long, env = "MANDATE_START_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Where to write the mission state the program reads [default: in a
    /// private temporary directory, removed when it exits].
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The file whose SHA-256 is the code digest [default: the program's
    /// executable]. For an interpreted agent, the script.
    #[arg(long)]
    pub measure: Option<PathBuf>,
    /// An entry for the recorded environment (repeatable), besides the
    /// host, OS, architecture and user the launcher records itself.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// How long the launch statement stays valid, in seconds (1 to 3600).
    #[arg(long, default_value_t = 300)]
    pub statement_ttl: u64,
    /// Also write the signed launch statement (a DSSE envelope; no secret)
    /// to this file, for `mandate credential verify --evidence`.
    #[arg(long, value_name = "FILE")]
    pub evidence_out: Option<PathBuf>,
    /// Leave the mission running when the program exits (its key stays in
    /// the `--state` file).
    #[arg(long, requires = "state")]
    pub keep: bool,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum LauncherCmd {
    /// Create a launcher key: the private key goes to FILE (mode 0600); the
    /// public key (a JWK) is printed, for `[attestation.launchers.NAME]`.
    Keygen {
        /// Where to write the private key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// What evidence an agent's missions must present (ADR 0020).
#[derive(Debug, Clone, Args, Default)]
pub struct RequireArgs {
    /// Accept a JWT-SVID of this SPIFFE ID, or of any ID under
    /// `spiffe://td/path/*` (repeatable).
    #[arg(long = "require-spiffe-id", value_name = "ID")]
    pub spiffe_ids: Vec<String>,
    /// Accept launch statements of this launcher (repeatable).
    #[arg(long = "require-launcher", value_name = "NAME")]
    pub launchers: Vec<String>,
    /// Accept only code with this digest, `sha256:<hex>` (repeatable).
    #[arg(long = "require-code-digest", value_name = "DIGEST")]
    pub code_digests: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum McpCmd {
    /// Agent side: a stdio MCP server that relays to the MCP gateway, each
    /// request signed with the mission key. Point an MCP client that cannot
    /// sign (one that launches stdio servers) at this command.
    Bridge {
        /// The mission state file written by `mission start` (or handed
        /// over by `mandate launch`).
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
        /// The MCP server's gateway URL, e.g. http://127.0.0.1:7878/mcp/git.
        url: String,
    },
    /// A mission's open MCP sessions (for its principal, its agent's owner,
    /// or an admin): server, session id, when opened and last used,
    /// requests in flight, whether the agent's stream is open.
    Sessions {
        /// The mission's id.
        #[arg(long)]
        mission: String,
    },
    /// End one of a mission's MCP sessions: its server stops, and the
    /// agent's client must initialize a new one.
    EndSession {
        /// The mission's id.
        #[arg(long)]
        mission: String,
        /// The session's id (`mandate mcp sessions`).
        session: String,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoArgs {
    /// Where to keep the demo's data dir (must not exist; default: a new
    /// directory under the system temp dir). Kept afterwards.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub unused: UnusedGlobals,
    #[command(subcommand)]
    pub command: Option<DemoCmd>,
}

#[derive(Debug, Subcommand)]
pub enum DemoCmd {
    /// Serve only the demo's upstreams (a billing API, an HR API, a legacy
    /// CRM, an MCP server) on one loopback address, the one
    /// `examples/mandate.toml` routes to, until Ctrl-C.
    Upstreams {
        /// Address to listen on (`127.0.0.1:0`: any free port).
        #[arg(long, default_value = crate::demo_upstreams::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCmd {
    /// Store or rotate a secret. The secret itself is read from standard
    /// input (never from the command line, where other users could see it).
    Put {
        /// A gateway route with `auth = "vault"`.
        route: String,
        /// Whose secret it is.
        principal: String,
        /// HTTP Basic: the username (the password comes from standard input).
        #[arg(long, group = "kind")]
        basic: Option<String>,
        /// A bearer token (from standard input).
        #[arg(long, group = "kind")]
        bearer: bool,
        /// A header of this name (its value from standard input).
        #[arg(long, group = "kind")]
        header: Option<String>,
    },
    /// What is stored (never the secrets).
    List,
    /// Remove a secret.
    Delete { route: String, principal: String },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// What waits for you: the pending requests you may decide.
    List {
        /// Every request you can see (yours to decide, your missions', or all
        /// for an admin), not only those waiting for you.
        #[arg(long)]
        all: bool,
        /// `pending` (default), `approved`, `denied`, `expired` or `all`.
        #[arg(long)]
        status: Option<String>,
        /// Only this mission's requests.
        #[arg(long)]
        mission: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One request in full: the mission and goal, the exact call, the
    /// agent's stated reason, who may decide.
    Show {
        id: String,
        /// Wait up to this many seconds (≤ 60) for it to be decided.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Approve a request. The grant lives only as long as its mission.
    Approve {
        id: String,
        /// `once`: this call, one time (default). `mission`: this exact call
        /// for the rest of the mission. `pattern`: this action on resources
        /// under --resource-prefix for the rest of the mission.
        #[arg(long, value_enum, default_value_t = GrantScopeArg::Once)]
        scope: GrantScopeArg,
        /// For `pattern`: the resource id, route path or tool name prefix
        /// the grant covers (must cover the approved call).
        #[arg(long)]
        resource_prefix: Option<String>,
        /// For `mission` and `pattern`: at most this many uses.
        #[arg(long)]
        max_uses: Option<u64>,
        /// For `mission` and `pattern`: the grant ends after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
        /// Why (recorded in the audit log and shown to the agent).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a request; the waiting agent gets the refusal.
    Deny {
        id: String,
        /// Why (recorded in the audit log and returned to the waiting agent).
        #[arg(long)]
        reason: Option<String>,
        /// End the whole mission as well.
        #[arg(long)]
        end_mission: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GrantScopeArg {
    Once,
    Mission,
    Pattern,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit records (admin), oldest first.
    List {
        /// Records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        mission: Option<String>,
        /// e.g. `decision`, `mission.created`, `revocation`.
        #[arg(long)]
        kind: Option<String>,
        /// `allow`, `deny` or `escalate`.
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// From this Unix time (inclusive).
        #[arg(long)]
        since: Option<u64>,
        /// Up to this Unix time (inclusive).
        #[arg(long)]
        until: Option<u64>,
    },
    /// Explain one record: who delegated, which mission and goal, which credential, key and policies.
    Explain { seq: u64 },
    /// Verify the hash chain, the signed checkpoints and their cadence; names the first bad sequence.
    Verify {
        /// Verify a data dir directly, without the server (its checkpoint file included; a node on PostgreSQL reads the database from DATA/mandate.toml or MANDATE_DATABASE_URL).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Also check the log against checkpoints kept elsewhere (a copy of the
        /// checkpoint file, a witness's or monitor's copy: one checkpoint per
        /// line). Against a server, the log and its checkpoints are fetched and
        /// verified here, not by the server. Repeatable.
        #[arg(long = "checkpoints", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
    },
    /// Retention: delete records through a signed checkpoint (export them first).
    Prune {
        /// The last sequence number to delete; must be a signed checkpoint.
        #[arg(long)]
        through: u64,
    },
    /// Export records as JSON Lines from a sequence number (resumable).
    Export {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 10_000)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check a policy directory, or one `.cedar` file, against the schema
    /// (offline); errors as file:line:col. A file is checked as if it were
    /// the only policy file of a policy directory, with the schema
    /// fragments (`*.cedarschema`) of its own directory, or, where that has
    /// none, of the policy directory.
    Validate {
        /// A directory or a `.cedar` file [default: the policy directory,
        /// DATA/policies or MANDATE_POLICIES].
        #[arg(value_name = "DIR|FILE")]
        path: Option<PathBuf>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Run a policy test file (offline): requests with expected decisions.
    Test { file: PathBuf },
    /// Make the running server reload its policy directory and mandate.toml's
    /// routes and MCP servers, together (admin; SIGHUP does the same).
    Reload,
    /// List the policies the running server has loaded (admin).
    List,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The agent's mission credential, or `-` for standard input.
    #[arg(long)]
    pub credential: String,
    /// The action, e.g. `read` or `refund`.
    #[arg(long)]
    pub action: String,
    /// The resource as JSON, e.g. '{"type":"Resource","id":"invoice-42","tags":{"billing":"nov"}}'.
    #[arg(long)]
    pub resource: String,
    /// Request attributes as a JSON object, e.g. '{"amount":75000}'.
    #[arg(long, default_value = "{}")]
    pub context: String,
    /// The agent's stated reason, shown to the approver if the call escalates.
    #[arg(long)]
    pub justification: Option<String>,
    /// The least trust this call needs: `signed` (default), `attested`, or
    /// `approved` (every call approved on its own).
    #[arg(long, value_parser = parse_trust)]
    pub required_trust: Option<mandate_core::Trust>,
}

fn parse_trust(s: &str) -> Result<mandate_core::Trust, String> {
    match s {
        "signed" => Ok(mandate_core::Trust::Signed),
        "attested" => Ok(mandate_core::Trust::Attested),
        "approved" => Ok(mandate_core::Trust::Approved),
        other => Err(format!(
            "unknown trust `{other}` (signed, attested or approved)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct DataArg {
    /// Data directory (database, authority key, optional mandate.toml).
    #[arg(long, env = "MANDATE_DATA", default_value = mandate_server::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[command(flatten)]
    pub unused: UnusedGlobalsAndJson,
    /// Address to listen on [default: 127.0.0.1:7878, or MANDATE_LISTEN, or `listen` in mandate.toml].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Configuration file [default: DATA/mandate.toml if present].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also serve `GET /metrics` here, without credentials, for a scraper
    /// (keep it on loopback or a network only the scraper reaches)
    /// [default: MANDATE_METRICS_LISTEN, or `metrics_listen` in
    /// mandate.toml; none: `/metrics` only on the API, to an admin].
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// PostgreSQL URL, for several nodes on one database; with a password,
    /// prefer the environment variable or mandate.toml to the flag, which
    /// other users can read in the process list [default: the embedded
    /// SQLite file DATA/mandate.db, or `database_url` in mandate.toml].
    #[arg(long, env = "MANDATE_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[command(flatten)]
    pub unused: UnusedGlobals,
    /// Name of the first admin principal.
    #[arg(long, default_value = "admin")]
    pub admin: String,
    /// PostgreSQL URL; with a password, prefer the environment variable or
    /// mandate.toml to the flag, which other users can read in the process
    /// list [default: the embedded SQLite file DATA/mandate.db, or
    /// `database_url` in mandate.toml].
    #[arg(long, env = "MANDATE_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PrincipalCmd {
    /// Add a principal; prints its first API token, once.
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "member")]
        role: RoleArg,
    },
    /// List principals.
    List,
    /// Print a one-time console link (15 minutes) that registers a passkey
    /// for NAME and signs in (admins; docs/console.md).
    Enroll { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Member,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token (yours, or another principal's if you are admin); printed once.
    Create {
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        label: Option<String>,
    },
    /// List API tokens (never their secrets).
    List {
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revoke an API token by id (`tok_…`).
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Register an agent. It gets no standing permission of any kind.
    Register {
        name: String,
        /// The owning principal [default: you].
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        require: RequireArgs,
    },
    /// Set what evidence the agent's missions must present to start, or
    /// `--none`. It applies at every later start, also of missions created
    /// before; a mission also keeps what its agent required when it was
    /// created.
    Attestation {
        name: String,
        #[command(flatten)]
        require: RequireArgs,
        /// Require no evidence.
        #[arg(long, conflicts_with_all = ["spiffe_ids", "launchers", "code_digests"])]
        none: bool,
    },
    /// List agents.
    List,
    /// Show one agent.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum MissionCmd {
    /// Delegate a mission to an agent; prints its one-time start token.
    Create(CreateMissionArgs),
    /// List missions.
    List,
    /// Show one mission.
    Show { id: String },
    /// End a mission: as a principal (ID), or as its agent (--state).
    End {
        /// Mission id (as a principal).
        id: Option<String>,
        /// Mission state file (as the agent).
        #[arg(long, conflicts_with = "id")]
        state: Option<PathBuf>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Agent side: create a fresh mission key, start the mission, save key and credential to a 0600 file.
    Start {
        /// The start token (`mst_…`), or `-` to read it from standard input.
        start_token: String,
        /// Where to write the mission state (key and credential).
        #[arg(long)]
        state: PathBuf,
        /// Use this mission key (PKCS#8 PEM, `mandate mission keygen`)
        /// instead of a fresh one: the key the evidence is bound to.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Attestation evidence bound to the key: a JWT-SVID or a DSSE
        /// launch statement (a file, or `-` for standard input).
        #[arg(long, requires = "key")]
        evidence: Option<PathBuf>,
    },
    /// Agent side: create a mission key for a start with evidence; prints
    /// its thumbprint and the audiences a JWT-SVID for it must carry.
    Keygen {
        /// Where to write the key (PKCS#8 PEM, mode 0600; must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Agent side: call through the gateway, signed with the mission key
    /// (RFC 9421). Prints the status and the body; exits non-zero unless 2xx.
    Call {
        /// The mission state file written by `mission start` (or handed
        /// over by `mandate launch`).
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
        /// e.g. GET, POST.
        method: String,
        /// A gateway URL, e.g. http://127.0.0.1:7878/gw/billing/invoices/42.
        url: String,
        /// The body: a file, or `-` for standard input.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Why the agent makes this call (shown to an approver).
        #[arg(long)]
        justification: Option<String>,
        /// If the call needs approval, wait up to this many seconds for it,
        /// then send it again.
        #[arg(long)]
        wait: Option<u64>,
        /// Send to this origin (`http(s)://host:port`) although it is not
        /// the mission's authority. Without it, the signed credential goes
        /// only to the authority the mission was started with.
        #[arg(long)]
        to: Option<String>,
    },
    /// Agent side: a local proxy that signs an unmodified agent's plain HTTP
    /// requests with the mission key.
    ///
    /// The agent sends plain HTTP to it, as its base URL
    /// (`http://127.0.0.1:PORT/gw/billing/…`) or as its HTTP proxy
    /// (`HTTP_PROXY`); each `/gw/…` and `/mcp/…` request is signed with the
    /// mission key and sent to the mission's authority, and nowhere else.
    /// See docs/proxy.md.
    Proxy(ProxyArgs),
    /// Agent side: delegate part of this mission to a sub-agent (a child
    /// mission that can only narrow this one); prints the child's one-time
    /// start token.
    Delegate(DelegateArgs),
    /// Clear a mission's taint, saying what you reviewed (recorded). Its
    /// later calls are decided as if it had read no untrusted content.
    Untaint {
        /// The mission id (`msn_…`).
        id: String,
        /// What you reviewed.
        #[arg(long)]
        reason: String,
    },
    /// Show a mission and every mission delegated below it, with states.
    Tree {
        /// The mission id (`msn_…`).
        id: String,
    },
    /// Agent side: print this mission's credential and delegation links as
    /// JSON, for `mandate credential verify --chain`.
    Chain {
        /// The mission state file written by `mission start` (or handed
        /// over by `mandate launch`).
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
    },
    /// Agent side: print the mission credential, refreshing it if it is about to expire.
    Credential {
        /// The mission state file written by `mission start` (or handed
        /// over by `mandate launch`).
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
        /// Refresh even if the current one is still fresh.
        #[arg(long)]
        refresh: bool,
    },
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The mission state file written by `mission start` (or handed over
    /// by `mandate launch`); a refreshed credential is written back to it.
    #[arg(long, env = "MANDATE_STATE")]
    pub state: PathBuf,
    /// Where to listen: a loopback address (`127.0.0.1:0` takes a free
    /// port; the first line printed says which).
    #[arg(long, default_value = "127.0.0.1:7880")]
    pub listen: SocketAddr,
    /// If a call needs approval, hold it up to this many seconds for the
    /// person's decision, then send it again; without it, the agent gets
    /// the gateway's `403 approval_required` at once.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// Listen on an address that is not loopback. Anyone who can reach it
    /// acts with this mission's authority, with no credential of their own.
    #[arg(long)]
    pub dangerous_allow_non_loopback: bool,
}

#[derive(Debug, Args)]
pub struct CreateMissionArgs {
    /// The agent that will carry out the mission.
    #[arg(long)]
    pub agent: String,
    /// What the mission is for, in words.
    #[arg(long)]
    pub goal: String,
    /// Cedar file with `permit` policies: the scope.
    #[arg(long)]
    pub scope: Option<PathBuf>,
    /// Cedar file with `forbid` policies: the boundaries.
    #[arg(long)]
    pub boundaries: Option<PathBuf>,
    /// Cedar file with escalation rules ("ask first").
    #[arg(long)]
    pub escalations: Option<PathBuf>,
    /// Lifetime, e.g. `90s`, `15m`, `2h`, `1d`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Maximum allowed requests.
    #[arg(long, default_value_t = 1000)]
    pub budget: u64,
    /// What happens outside the scope.
    #[arg(long, value_enum, default_value = "escalate")]
    pub out_of_scope: OutOfScopeArg,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["agent", "ephemeral"])))]
pub struct DelegateArgs {
    /// The parent mission's state file (written by `mission start`).
    #[arg(long)]
    pub state: PathBuf,
    /// A registered agent of the same principal.
    #[arg(
        long,
        required_unless_present = "ephemeral",
        conflicts_with = "ephemeral"
    )]
    pub agent: Option<String>,
    /// Or an ephemeral sub-agent, by a label (it becomes `label@<child mission>`).
    #[arg(long)]
    pub ephemeral: Option<String>,
    /// What the child is for, in words.
    #[arg(long)]
    pub goal: String,
    /// Cedar file with `permit` policies: the child's scope (the parent's
    /// and every ancestor's policies apply as well). Without it the scope
    /// is empty: every call is out of the child's scope.
    #[arg(long)]
    pub scope: Option<PathBuf>,
    /// Cedar file with extra `forbid` policies.
    #[arg(long)]
    pub boundaries: Option<PathBuf>,
    /// Cedar file with extra escalation rules.
    #[arg(long)]
    pub escalations: Option<PathBuf>,
    /// Lifetime, e.g. `15m` [default: what is left of the parent's, at most 1h].
    #[arg(long)]
    pub ttl: Option<String>,
    /// Allowed requests, carved out of what the parent has left.
    #[arg(long)]
    pub budget: u64,
    /// What happens outside the child's scope.
    #[arg(long, value_enum, default_value = "escalate")]
    pub out_of_scope: OutOfScopeArg,
    /// Evidence the child's agent must present to start it (it never
    /// inherits its parent's attestation).
    #[command(flatten)]
    pub require: RequireArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutOfScopeArg {
    Escalate,
    Deny,
}

impl OutOfScopeArg {
    /// The API's spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Escalate => "escalate",
            Self::Deny => "deny",
        }
    }
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[arg(value_enum)]
    pub kind: RevokeKind,
    pub id: String,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RevokeKind {
    Mission,
    Agent,
    Principal,
    Token,
}

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    /// Verify a credential offline: signature, issuer, expiry, key binding
    /// claims; with `--chain`, every delegation link of its chain as well.
    Verify {
        /// The credential, or `-` for standard input.
        #[arg(required_unless_present = "chain", conflicts_with = "chain")]
        credential: Option<String>,
        /// A credential with its delegation links, as `mandate mission
        /// chain` prints them (a file, or `-` for standard input).
        #[arg(long)]
        chain: Option<String>,
        /// JWKS as a URL (`http(s)://…`) or a file [default: the server's,
        /// `--server`/`MANDATE_SERVER` + `/.well-known/jwks.json`].
        #[arg(long)]
        jwks: Option<String>,
        /// Expected issuer [default: the JWKS URL's origin; required with a file].
        #[arg(long)]
        issuer: Option<String>,
        /// Check the mission's attestation evidence too (a JWT-SVID or a
        /// DSSE launch statement file), against --bundle and --launcher.
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// A SPIFFE trust domain's JWT bundle: `TRUST_DOMAIN=JWKS_FILE`
        /// (repeatable).
        #[arg(long = "bundle", value_name = "TD=FILE", requires = "evidence")]
        bundles: Vec<String>,
        /// A launcher's public key: `NAME=JWK_FILE` (repeatable).
        #[arg(long = "launcher", value_name = "NAME=FILE", requires = "evidence")]
        launchers: Vec<String>,
        /// The audience the evidence names [default: the issuer].
        #[arg(long, requires = "evidence")]
        audience: Option<String>,
    },
    /// Ask the authority whether a credential is usable now (mission state, revocation).
    Introspect {
        /// The credential, or `-` for standard input.
        credential: String,
    },
}
