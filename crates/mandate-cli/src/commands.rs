use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use mandate_client::{Client, ClientError, MissionAgent, SavedMission, fetch_jwks};
use mandate_core::wire::{
    ChainBundle, CreateMissionRequest, CreateTokenRequest, DelegateRequest, RegisterAgentRequest,
};
use mandate_core::{
    ActingPrincipalError, Clock as _, DelegationChainError, PrincipalName, SystemClock,
    verify_acting_principal,
};
use serde_json::json;

use crate::args::{
    AgentCmd, Cli, Command, CreateMissionArgs, CredentialCmd, DelegateArgs, DemoCmd, LauncherCmd,
    McpCmd, MissionCmd, PrincipalCmd, RevokeKind, RoleArg, TokenCmd,
};
use crate::output::{self, when};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (server, token) = (cli.server(), cli.token());
    let Cli { json, command, .. } = cli;
    let client = || -> anyhow::Result<Client> {
        let token = token.clone().ok_or_else(|| {
            anyhow!("an API token is needed: set MANDATE_TOKEN (see `mandate init`)")
        })?;
        Ok(Client::new(&server)?.with_token(token))
    };
    match command {
        Command::Serve(a) => {
            let mut config =
                mandate_server::Config::load(&a.data.data, a.config.as_deref(), a.listen)?;
            if let Some(url) = a.database {
                config = config.with_database_url(url)?;
            }
            if let Some(addr) = a.metrics_listen {
                config = config.with_metrics_listen(addr);
            }
            let telemetry = crate::telemetry::init("info", config.otlp_traces_url.as_deref())?;
            let served = mandate_server::serve(config, shutdown_signal()).await;
            telemetry.shutdown();
            served?;
        }
        Command::Init(a) => {
            let admin: PrincipalName = a.admin.parse()?;
            let (token, kid) =
                mandate_server::init_admin(&a.data.data, &admin, a.database.as_deref()).await?;
            if json {
                output::json(
                    &json!({ "principal": admin.as_str(), "role": "admin", "token": token.expose(), "authority_kid": kid }),
                )?;
            } else {
                println!(
                    "created admin principal `{admin}` in {} (authority key {kid})",
                    a.data.data.display()
                );
                println!("its API token is shown this once; keep it secret:\n");
                println!("  export MANDATE_TOKEN={}\n", token.expose());
            }
        }
        Command::Whoami => {
            let me = client()?.whoami().await?;
            if json {
                output::json(&me)?
            } else {
                println!("{}", output::principal_line(&me))
            }
        }
        Command::Principal(cmd) => principal(client()?, cmd, json).await?,
        Command::Token(cmd) => tokens(client()?, cmd, json).await?,
        Command::Agent(cmd) => agent(client()?, cmd, json).await?,
        Command::Mission(cmd) => mission(&server, token.as_deref(), cmd, json).await?,
        Command::Revoke(a) => {
            let kind = match a.kind {
                RevokeKind::Mission => "mission",
                RevokeKind::Agent => "agent",
                RevokeKind::Principal => "principal",
                RevokeKind::Token => "token",
            };
            let r = client()?.revoke(kind, &a.id, a.reason.as_deref()).await?;
            if json {
                output::json(&r)?;
            } else {
                println!("revoked {kind} {}", r.id);
                for m in r
                    .missions
                    .iter()
                    .filter(|m| !(kind == "mission" && **m == r.id))
                {
                    println!("  ended mission {m}");
                }
                for ag in r
                    .agents
                    .iter()
                    .filter(|a| !(kind == "agent" && **a == r.id))
                {
                    println!("  revoked agent {ag}");
                }
                if r.tokens > 0 {
                    println!("  revoked {} API token(s)", r.tokens);
                }
                let changed = !r.missions.is_empty()
                    || !r.agents.is_empty()
                    || !r.principals.is_empty()
                    || r.tokens > 0;
                if !changed {
                    println!("  (it was already revoked or ended; nothing else changed)");
                }
            }
        }
        Command::Credential(cmd) => credential(&server, cmd, json).await?,
        Command::Policy(cmd) => crate::policy::run(cmd, client, json).await?,
        Command::Decide(a) => crate::policy::decide(client()?, a, json).await?,
        Command::Audit(cmd) => audit(client, cmd, json).await?,
        Command::Approvals(cmd) => crate::approvals::run(client()?, cmd, json).await?,
        Command::Vault(cmd) => vault(client()?, cmd, json).await?,
        Command::Demo(a) => match a.command {
            Some(DemoCmd::Upstreams { listen }) => crate::demo_upstreams::run(listen).await?,
            None => crate::demo::run(a.data, json).await?,
        },
        Command::Mcp(cmd) => mcp(client, cmd, json).await?,
        Command::Launch(a) => {
            let code = crate::attest::launch(&server, a, json).await?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Launcher(LauncherCmd::Keygen { out }) => {
            crate::attest::launcher_keygen(&out, json)?
        }
        Command::Memory(cmd) => crate::memory::memory(client, cmd, json).await?,
        Command::Notes(cmd) => crate::memory::notes(cmd, json).await?,
    }
    Ok(())
}

async fn audit(
    client: impl Fn() -> anyhow::Result<Client>,
    cmd: crate::args::AuditCmd,
    json: bool,
) -> anyhow::Result<()> {
    use crate::args::AuditCmd;
    match cmd {
        AuditCmd::List {
            after,
            limit,
            mission,
            kind,
            decision,
            principal,
            agent,
            action,
            since,
            until,
        } => {
            let mut q = format!("after={after}&limit={limit}");
            let times = [
                ("since", since.map(|t| t.to_string())),
                ("until", until.map(|t| t.to_string())),
            ];
            let fields = [
                ("mission", mission),
                ("kind", kind),
                ("decision", decision),
                ("principal", principal),
                ("agent", agent),
                ("action", action),
            ];
            for (k, v) in fields.into_iter().chain(times) {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={v}"));
                }
            }
            let page = client()?.audit(&q).await?;
            if json {
                output::json(&page)?;
            } else {
                println!(
                    "{:>6}  {:<20}  {:<17} {:<8} {:<10} {:<14} {:<36} DETAIL",
                    "SEQ", "TIME", "KIND", "DECISION", "PRINCIPAL", "AGENT", "MISSION"
                );
                for r in page["records"].as_array().into_iter().flatten() {
                    let b = &r["body"];
                    let field = |k: &str| b[k].as_str().unwrap_or("-").to_owned();
                    // What a reader wants next: for a decision, the action,
                    // reason and policies; otherwise who did it, to what.
                    let detail = if r["kind"] == "decision" {
                        let policies: Vec<&str> = b["policies"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p.as_str())
                            .collect();
                        // What it was done to: a route's path, a tool, a
                        // resource URI, a prompt, an id.
                        let res = &b["resource"];
                        let on = ["path", "tool", "uri", "prompt", "id"]
                            .iter()
                            .find_map(|k| res[*k].as_str())
                            .unwrap_or("-");
                        let line = format!(
                            "{} {on} → {} {}",
                            field("action"),
                            field("code"),
                            policies.join(",")
                        );
                        // At the MCP gateway: which server, which method.
                        match b["mcp_server"].as_str() {
                            Some(srv) => format!("{line} (mcp {srv} {})", field("mcp_method")),
                            None => line,
                        }
                    } else if r["kind"].as_str().is_some_and(|k| k.starts_with("mcp.")) {
                        // The server, the method, and why (a session's end).
                        format!(
                            "{} {} {}",
                            field("server"),
                            field("method"),
                            b["reason"].as_str().unwrap_or_default()
                        )
                        .trim()
                        .to_owned()
                    } else {
                        let by = b["by"]
                            .as_str()
                            .map(|by| format!("by {by}"))
                            .unwrap_or_default();
                        let target = b["target"]
                            .as_str()
                            .or(b["principal"].as_str())
                            .unwrap_or_default();
                        format!("{target} {by}").trim().to_owned()
                    };
                    println!(
                        "{:>6}  {:<20}  {:<17} {:<8} {:<10} {:<14} {:<36} {}",
                        r["seq"].as_u64().unwrap_or(0),
                        when(r["time"].as_u64().unwrap_or(0)),
                        r["kind"].as_str().unwrap_or("?"),
                        field("decision"),
                        field("principal"),
                        field("agent"),
                        field("mission"),
                        detail,
                    );
                }
                if let Some(n) = page["next_after"].as_u64() {
                    println!("(more: --after {n})");
                }
            }
        }
        AuditCmd::Verify { data, checkpoints } => {
            let (first, last, checkpoints) = match data {
                Some(dir) => {
                    let r = mandate_server::verify_audit(&dir, &checkpoints).await?;
                    (r.first, r.last, r.checkpoints as u64)
                }
                None if !checkpoints.is_empty() => {
                    let r = verify_fetched(&client()?, &checkpoints).await?;
                    (r.first, r.last, r.checkpoints as u64)
                }
                None => {
                    let r = client()?.audit_verify().await?;
                    (
                        r["first"].as_u64().unwrap_or(0),
                        r["last"].as_u64().unwrap_or(0),
                        r["checkpoints"].as_u64().unwrap_or(0),
                    )
                }
            };
            if json {
                output::json(
                    &json!({ "ok": true, "first": first, "last": last, "checkpoints": checkpoints }),
                )?;
            } else {
                println!(
                    "audit chain intact: records {first}..={last}, signed checkpoints: {checkpoints}"
                );
            }
        }
        AuditCmd::Explain { seq } => {
            let e = client()?.audit_explain(seq).await?;
            if json {
                output::json(&e)?;
            } else {
                for line in e["story"].as_array().into_iter().flatten() {
                    println!("{}", line.as_str().unwrap_or_default());
                }
            }
        }
        AuditCmd::Prune { through } => {
            let r = client()?.audit_prune(through).await?;
            if json {
                output::json(&r)?;
            } else {
                println!(
                    "pruned {} records through {through}; the log verifies from that checkpoint",
                    r["deleted"]
                );
            }
        }
        AuditCmd::Export { after, limit } => {
            print!("{}", client()?.audit_export(after, limit).await?);
        }
    }
    Ok(())
}

/// Verifies a server's audit log here, not on the server: every record (by
/// export), its checkpoints, and the checkpoints in `files` (kept
/// elsewhere), against the authority's published keys.
async fn verify_fetched(
    c: &Client,
    files: &[std::path::PathBuf],
) -> anyhow::Result<mandate_core::ChainReport> {
    let jwks = c.jwks().await?;
    let mut kept = Vec::new();
    for f in files {
        if !f.exists() {
            bail!("the checkpoint file `{}` does not exist", f.display());
        }
        kept.extend(
            mandate_server::read_checkpoint_file(f, &jwks)?
                .into_iter()
                .map(|k| k.token),
        );
    }
    // A live log grows while it is read: the checkpoints listed after the
    // records end with the head's seal, which covers every record read;
    // the records up to it are read, newer ones left out.
    let before = fetch_checkpoints(c).await?;
    let mut records = fetch_records(c, 0, u64::MAX).await?;
    let listed = fetch_checkpoints(c).await?;
    let read = records.last().map_or(0, |r| r.seq);
    if let Some(newest) = listed.iter().map(|(seq, _)| *seq).max()
        && newest > read
    {
        records.extend(fetch_records(c, read, newest).await?);
    }
    let end = records.last().map_or(0, |r| r.seq);
    let mut checkpoints: Vec<String> = before.into_iter().map(|(_, t)| t).collect();
    for (seq, t) in listed {
        if seq <= end && !checkpoints.contains(&t) {
            checkpoints.push(t);
        }
    }
    checkpoints.extend(kept);
    let first = records.first().map(|r| r.seq);
    let start = mandate_core::chain_start(first, &records, &checkpoints, &jwks, None)?;
    Ok(mandate_core::verify_chain(
        start,
        records,
        &checkpoints,
        &jwks,
        None,
    )?)
}

/// The records after `after`, through `through`, by export.
async fn fetch_records(
    c: &Client,
    mut after: u64,
    through: u64,
) -> anyhow::Result<Vec<mandate_core::AuditRecord>> {
    let mut records: Vec<mandate_core::AuditRecord> = Vec::new();
    while after < through {
        let page = c.audit_export(after, 10_000).await?;
        let before = records.len();
        for line in page.lines().filter(|l| !l.trim().is_empty()) {
            let r: mandate_core::AuditRecord = serde_json::from_str(line)
                .context("the export holds a line that is not an audit record")?;
            if r.seq <= through {
                records.push(r);
            }
        }
        match records.last() {
            Some(r) if records.len() > before => after = r.seq,
            _ => break,
        }
    }
    Ok(records)
}

/// Every signed checkpoint the server lists, with the sequence number it
/// states.
async fn fetch_checkpoints(c: &Client) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = c.audit_checkpoints(after).await?;
        for cp in page["checkpoints"].as_array().into_iter().flatten() {
            if let (Some(seq), Some(t)) = (cp["seq"].as_u64(), cp["checkpoint"].as_str()) {
                out.push((seq, t.to_owned()));
            }
        }
        match page["next_after"].as_u64() {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

async fn shutdown_signal() {
    terminated().await;
    eprintln!("shutting down");
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn terminated() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The agent's bridge; a mission's MCP sessions, seen and ended by a person.
async fn mcp(
    client: impl Fn() -> anyhow::Result<Client>,
    cmd: McpCmd,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        McpCmd::Bridge { state, url } => crate::mcp_bridge::run(&state, url).await?,
        McpCmd::Sessions { mission } => {
            let all = client()?.mcp_sessions(&mission).await?;
            if json {
                output::json(&all)?;
            } else if all.sessions.is_empty() {
                println!(
                    "no open MCP sessions of {} on node {}",
                    all.mission, all.node
                );
            } else {
                println!(
                    "{:<12} {:<54} {:<20} {:<20} {:>9}  STREAM",
                    "SERVER", "SESSION", "OPENED", "LAST USED", "IN FLIGHT"
                );
                for x in &all.sessions {
                    println!(
                        "{:<12} {:<54} {:<20} {:<20} {:>9}  {}",
                        x.server,
                        x.session,
                        output::when(x.opened_at),
                        output::when(x.last_used),
                        x.in_flight,
                        if x.stream_open { "open" } else { "-" },
                    );
                }
            }
        }
        McpCmd::EndSession { mission, session } => {
            client()?.end_mcp_session(&mission, &session).await?;
            if json {
                output::json(&json!({ "mission": mission, "session": session, "ended": true }))?;
            } else {
                println!("ended MCP session {session} of {mission}");
            }
        }
    }
    Ok(())
}

async fn principal(c: Client, cmd: PrincipalCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PrincipalCmd::Add { name, role } => {
            let role = match role {
                RoleArg::Admin => "admin",
                RoleArg::Member => "member",
            };
            let created = c.create_principal(&name, Some(role)).await?;
            if json {
                output::json(&created)?;
            } else {
                println!("added {role} `{}`", created.principal.name);
                println!(
                    "their API token ({}), shown this once:\n\n  {}\n",
                    created.token.id, created.token.token
                );
            }
        }
        PrincipalCmd::List => {
            let all = c.principals().await?;
            if json {
                output::json(&all)?
            } else {
                all.iter()
                    .for_each(|p| println!("{}", output::principal_line(p)))
            }
        }
        PrincipalCmd::Enroll { name } => {
            let link = c.enroll(&name).await?;
            if json {
                output::json(&link)?;
            } else {
                // The link alone on its line, for a script to take.
                println!("{}", link.url);
                // What a person needs to know about it, apart from the link.
                eprintln!(
                    "valid until {}, once: whoever opens it first gets a passkey for `{name}`; send it over a channel you trust",
                    output::when(link.expires_at)
                );
            }
        }
    }
    Ok(())
}

async fn tokens(c: Client, cmd: TokenCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { principal, label } => {
            let t = c
                .create_token(&CreateTokenRequest { principal, label })
                .await?;
            if json {
                output::json(&t)?;
            } else {
                println!(
                    "token {} for `{}`, shown this once:\n\n  {}\n",
                    t.id, t.principal, t.token
                );
            }
        }
        TokenCmd::List { principal } => {
            let all = c.tokens(principal.as_deref()).await?;
            if json {
                output::json(&all)?
            } else {
                all.iter()
                    .for_each(|t| println!("{}", output::token_line(t)))
            }
        }
        TokenCmd::Revoke { id, reason } => {
            let r = c.revoke("token", &id, reason.as_deref()).await?;
            if json {
                output::json(&r)?
            } else {
                println!("revoked token {}", r.id)
            }
        }
    }
    Ok(())
}

async fn agent(c: Client, cmd: AgentCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        AgentCmd::Register {
            name,
            owner,
            description,
            require,
        } => {
            let a = c
                .register_agent(&RegisterAgentRequest {
                    name,
                    owner,
                    description,
                    attestation: crate::attest::requirement(require),
                })
                .await?;
            if json {
                output::json(&a)?;
            } else {
                println!(
                    "registered agent `{}` (owner `{}`); it has no permissions until a mission is delegated to it",
                    a.name, a.owner
                );
                if let Some(r) = &a.attestation {
                    println!(
                        "its missions start only with evidence bound to their key: {}",
                        r.describe()
                    );
                }
            }
        }
        AgentCmd::Attestation {
            name,
            require,
            none,
        } => {
            let requirement = crate::attest::requirement(require);
            if requirement.is_none() && !none {
                bail!(
                    "name what to require (--require-spiffe-id, --require-launcher, --require-code-digest) or --none"
                );
            }
            let a = c.set_agent_attestation(&name, requirement.as_ref()).await?;
            if json {
                output::json(&a)?;
            } else {
                match &a.attestation {
                    Some(r) => println!(
                        "missions of `{}` now start only with evidence bound to their key: {}",
                        a.name,
                        r.describe()
                    ),
                    None => println!("missions of `{}` need no attestation evidence", a.name),
                }
            }
        }
        AgentCmd::List => {
            let all = c.agents().await?;
            if json {
                output::json(&all)?
            } else {
                all.iter()
                    .for_each(|a| println!("{}", output::agent_line(a)))
            }
        }
        AgentCmd::Show { name } => {
            let a = c.agent(&name).await?;
            if json {
                output::json(&a)?
            } else {
                println!("{}", output::agent_line(&a))
            }
        }
    }
    Ok(())
}

/// `90`, `90s`, `15m`, `2h`, `1d` → seconds.
fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("`{s}` is not a duration (e.g. 90s, 15m, 2h, 1d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("`{s}` is not a duration (e.g. 90s, 15m, 2h, 1d)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("`{s}` is too long"))
}

fn read_policy(path: Option<&Path>) -> anyhow::Result<String> {
    path.map(|p| fs::read_to_string(p).with_context(|| format!("cannot read `{}`", p.display())))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A secret given on the command line, or `-` for standard input.
async fn vault(c: Client, cmd: crate::args::VaultCmd, json: bool) -> anyhow::Result<()> {
    use crate::args::VaultCmd;
    use mandate_core::VaultSecret;
    match cmd {
        VaultCmd::Put {
            route,
            principal,
            basic,
            bearer,
            header,
        } => {
            let mut input = zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_to_string(&mut input)?;
            let value = input.trim_end_matches(['\r', '\n']).to_owned();
            let secret = match (basic, bearer, header) {
                (Some(username), false, None) => VaultSecret::Basic {
                    username,
                    password: value,
                },
                (None, true, None) => VaultSecret::Bearer { token: value },
                (None, false, Some(name)) => VaultSecret::Header { name, value },
                _ => bail!("say what the secret is: --basic USER, --bearer, or --header NAME"),
            };
            let v = c.vault_put(&route, &principal, &secret).await?;
            if json {
                output::json(&v)?;
            } else {
                println!(
                    "stored {} secret of {} for route {} (version {})",
                    v.kind, v.principal, v.route, v.version
                );
            }
        }
        VaultCmd::List => {
            let all = c.vault_list().await?;
            if json {
                output::json(&all)?;
            } else if all.is_empty() {
                println!("no secrets in the vault");
            } else {
                println!(
                    "{:<20} {:<20} {:<7} {:>7}  UPDATED",
                    "ROUTE", "PRINCIPAL", "KIND", "VERSION"
                );
                for v in &all {
                    println!(
                        "{:<20} {:<20} {:<7} {:>7}  {} by {}",
                        v.route,
                        v.principal,
                        v.kind,
                        v.version,
                        output::when(v.updated_at),
                        v.updated_by
                    );
                }
            }
        }
        VaultCmd::Delete { route, principal } => {
            c.vault_delete(&route, &principal).await?;
            if json {
                output::json(
                    &serde_json::json!({ "deleted": true, "route": route, "principal": principal }),
                )?;
            } else {
                println!("deleted the secret of {principal} for route {route}");
            }
        }
    }
    Ok(())
}

pub(crate) fn arg_or_stdin(v: &str) -> anyhow::Result<String> {
    if v == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s.trim().to_owned())
    } else {
        Ok(v.trim().to_owned())
    }
}

/// Writes the mission state (it holds the private mission key) with mode
/// 0600, via a temp file and rename so a crash never leaves half a key.
pub(crate) fn write_state(path: &Path, text: &str, create_new: bool) -> anyhow::Result<()> {
    if create_new && path.exists() {
        bail!(
            "`{}` already exists; refusing to overwrite a mission key",
            path.display()
        );
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

pub(crate) fn read_state(path: &Path) -> anyhow::Result<SavedMission> {
    let text = zeroize::Zeroizing::new(
        fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?,
    );
    serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a mission state file", path.display()))
}

async fn mission(
    server: &str,
    token: Option<&str>,
    cmd: MissionCmd,
    json: bool,
) -> anyhow::Result<()> {
    let client = || -> anyhow::Result<Client> {
        let t = token.ok_or_else(|| {
            anyhow!("an API token is needed: set MANDATE_TOKEN (see `mandate init`)")
        })?;
        Ok(Client::new(server)?.with_token(t))
    };
    match cmd {
        MissionCmd::Create(a) => create_mission(client()?, a, json).await?,
        MissionCmd::List => {
            let all = client()?.missions().await?;
            if json {
                output::json(&all)?
            } else {
                all.iter()
                    .for_each(|m| println!("{}", output::mission_line(m)))
            }
        }
        MissionCmd::Show { id } => {
            let m = client()?.mission(&id).await?;
            if json {
                output::json(&m)?
            } else {
                println!("{}", output::mission_details(&m))
            }
        }
        MissionCmd::End {
            id: Some(id),
            reason,
            ..
        } => {
            let m = client()?.end_mission(&id, reason.as_deref()).await?;
            if json {
                output::json(&m)?
            } else {
                println!("ended mission {}", m.id)
            }
        }
        MissionCmd::End {
            id: None,
            state: Some(path),
            reason,
        } => {
            let agent = MissionAgent::load(&read_state(&path)?).await?;
            let ended = agent.end(reason.as_deref()).await;
            // Ended now or before (completed, expired, revoked): either way
            // the mission key is worthless; do not leave it lying around.
            let already =
                matches!(&ended, Err(e) if matches!(e.code(), Some("mission_ended" | "revoked")));
            if ended.is_ok() || already {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove `{}`", path.display()))?;
            }
            match ended {
                Ok(m) if json => output::json(&m)?,
                Ok(m) => println!(
                    "ended mission {} and deleted its key ({})",
                    m.id,
                    path.display()
                ),
                Err(e) if already => println!(
                    "mission {} had already ended: {e}; deleted its key ({})",
                    agent.mission_id(),
                    path.display()
                ),
                Err(e) => return Err(e.into()),
            }
        }
        MissionCmd::End {
            id: None,
            state: None,
            ..
        } => bail!("give a mission id (as a principal) or --state FILE (as the agent)"),
        MissionCmd::Keygen { out } => crate::attest::mission_keygen(server, &out, json).await?,
        MissionCmd::Start {
            start_token,
            state,
            key,
            evidence,
        } => {
            if state.exists() {
                bail!(
                    "`{}` already exists; refusing to overwrite a mission key",
                    state.display()
                );
            }
            let start_token = arg_or_stdin(&start_token)?;
            let given_key = key.is_some();
            let agent = match key {
                None => MissionAgent::start(server, &start_token).await?,
                Some(key) => {
                    let pem = zeroize::Zeroizing::new(
                        fs::read_to_string(&key)
                            .with_context(|| format!("cannot read `{}`", key.display()))?,
                    );
                    let key = mandate_core::MissionKey::from_pkcs8_pem(&pem)
                        .map_err(|e| anyhow!("`{}`: {e}", key.display()))?;
                    match evidence {
                        Some(ev) => {
                            let ev = crate::attest::read_evidence(&ev)?;
                            MissionAgent::start_attested(server, &start_token, key, ev).await?
                        }
                        None => {
                            MissionAgent::start_with(
                                server,
                                &start_token,
                                key,
                                std::sync::Arc::new(SystemClock),
                                std::sync::Arc::new(mandate_core::OsRandom),
                            )
                            .await?
                        }
                    }
                }
            };
            write_state(&state, &agent.save()?, true)?;
            if json {
                output::json(&json!({
                    "mission": agent.last_mission_view(),
                    "credential": agent.credential(),
                    "expires_at": agent.credential_expires_at(),
                }))?;
            } else {
                println!(
                    "started mission {} with {} mission key (jkt {}){}",
                    agent.mission_id(),
                    if given_key { "the given" } else { "a fresh" },
                    agent.key().thumbprint(),
                    match agent
                        .last_mission_view()
                        .and_then(|m| m.attestation.as_ref())
                    {
                        Some(a) => format!(", attested by {} {}", a.method.as_str(), a.subject),
                        None => String::new(),
                    }
                );
                println!(
                    "credential valid until {}; key and credential saved to {} (mode 0600)",
                    when(agent.credential_expires_at()),
                    state.display()
                );
            }
        }
        MissionCmd::Call {
            state,
            method,
            url,
            data,
            content_type,
            justification,
            wait,
            to,
        } => {
            let saved = read_state(&state)?;
            // The signed credential goes to the mission's authority, or to
            // an origin named on purpose; nowhere by accident.
            let origin = |u: &str| {
                reqwest::Url::parse(u)
                    .map(|u| u.origin().ascii_serialization())
                    .map_err(|e| anyhow!("`{u}`: {e}"))
            };
            if url.starts_with('/') {
                bail!(
                    "`{url}` is a path: give the full URL, e.g. `{}{url}`",
                    saved.server.trim_end_matches('/')
                );
            }
            let target = origin(&url)?;
            let authority = origin(&saved.server)?;
            let named = to.as_deref().map(origin).transpose()?;
            if target != authority && named.as_deref() != Some(target.as_str()) {
                bail!(
                    "refusing to send the mission's credential to `{target}`: the mission's authority is `{authority}` (pass `--to {target}` to send it there)"
                );
            }
            let mut agent = MissionAgent::load(&saved).await?;
            let before = agent.credential().to_owned();
            let body = match data {
                None => None,
                Some(p) if p.as_os_str() == "-" => {
                    let mut b = Vec::new();
                    std::io::stdin().read_to_end(&mut b)?;
                    Some(b)
                }
                Some(p) => Some(
                    std::fs::read(&p).with_context(|| format!("cannot read `{}`", p.display()))?,
                ),
            };
            let body = body.map(|b| (content_type.as_str(), b));
            let resp = match wait {
                Some(secs) => {
                    agent
                        .send_with_approval_watched(
                            std::time::Duration::from_secs(secs),
                            &method,
                            &url,
                            body,
                            justification.as_deref(),
                            &mut |id, link| {
                                eprintln!(
                                    "waiting up to {secs} s for approval request {id}{} (an approver runs `mandate approvals approve {id}`)",
                                    link.map(|l| format!(" ({l})")).unwrap_or_default()
                                );
                            },
                        )
                        .await?
                }
                None => {
                    agent
                        .send_signed(&method, &url, body, justification.as_deref())
                        .await?
                }
            };
            if agent.credential() != before {
                write_state(&state, &agent.save()?, false)?;
            }
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if json {
                let body = serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.clone()));
                output::json(&json!({ "status": status.as_u16(), "body": body }))?;
            } else {
                println!("{status}");
                println!("{text}");
            }
            if !status.is_success() {
                // The line ends with the problem's stable code, as every
                // refusal's does; only a code's own characters are echoed.
                let code = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|p| p.get("code")?.as_str().map(str::to_owned))
                    .filter(|c| {
                        (1..=64).contains(&c.len())
                            && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    });
                match code {
                    Some(code) => bail!("the gateway answered {status} ({code})"),
                    None => bail!("the gateway answered {status}"),
                }
            }
        }
        MissionCmd::Proxy(a) => crate::proxy::run(a).await?,
        MissionCmd::Delegate(a) => delegate(a, json).await?,
        MissionCmd::Untaint { id, reason } => {
            let m = client()?.clear_taint(&id, &reason).await?;
            if json {
                output::json(&m)?
            } else {
                println!(
                    "mission {} is no longer tainted; your review is recorded: \"{reason}\"",
                    m.id
                );
            }
        }
        MissionCmd::Tree { id } => {
            let tree = client()?.mission_tree(&id).await?;
            if json {
                output::json(&tree)?
            } else {
                print!("{}", output::mission_tree(&tree));
            }
        }
        MissionCmd::Chain { state } => {
            let mut agent = MissionAgent::load(&read_state(&state)?).await?;
            let before = agent.credential().to_owned();
            agent.fresh_credential().await?;
            if agent.credential() != before {
                write_state(&state, &agent.save()?, false)?;
            }
            let chain = agent.chain().await?;
            output::json(&ChainBundle {
                credential: agent.credential().to_owned(),
                links: chain.links,
            })?;
        }
        MissionCmd::Credential { state, refresh } => {
            let mut agent = MissionAgent::load(&read_state(&state)?).await?;
            let before = agent.credential().to_owned();
            if refresh {
                agent.refresh().await?;
            } else {
                agent.fresh_credential().await?;
                // Print only a credential the authority still honours.
                agent.mission().await?;
            }
            if agent.credential() != before {
                write_state(&state, &agent.save()?, false)?;
            }
            if json {
                output::json(
                    &json!({ "credential": agent.credential(), "expires_at": agent.credential_expires_at() }),
                )?;
            } else {
                println!("{}", agent.credential());
            }
        }
    }
    Ok(())
}

async fn create_mission(c: Client, a: CreateMissionArgs, json: bool) -> anyhow::Result<()> {
    let req = CreateMissionRequest {
        agent: a.agent,
        goal: a.goal,
        scope: read_policy(a.scope.as_deref())?,
        boundaries: read_policy(a.boundaries.as_deref())?,
        escalations: read_policy(a.escalations.as_deref())?,
        ttl_seconds: Some(parse_duration(&a.ttl)?),
        budget: Some(a.budget),
        out_of_scope: Some(a.out_of_scope.as_str().into()),
    };
    let created = c.create_mission(&req).await.map_err(|e| match e {
        // Name the file, not the field, in Cedar errors.
        ClientError::Problem { code, detail, .. } if code == "invalid_policy" => {
            let named = [
                ("scope: ", &a.scope),
                ("boundaries: ", &a.boundaries),
                ("escalations: ", &a.escalations),
            ]
            .iter()
            .find_map(|(field, file)| {
                Some(format!(
                    "{}:{}",
                    file.as_ref()?.display(),
                    detail.strip_prefix(field)?
                ))
            });
            anyhow!("{} ({code})", named.unwrap_or(detail))
        }
        other => other.into(),
    })?;
    if json {
        output::json(&created)?;
    } else {
        let m = &created.mission;
        println!(
            "created mission {} for agent `{}` (expires {})",
            m.id,
            m.agent,
            when(m.expires_at)
        );
        println!("mission_s256 {}", m.mission_s256);
        println!(
            "\nstart token (single use, valid until {}); hand it to the agent's launcher:\n",
            when(created.start_token_expires_at)
        );
        println!("  {}\n", created.start_token);
    }
    Ok(())
}

async fn delegate(a: DelegateArgs, json: bool) -> anyhow::Result<()> {
    let agent = MissionAgent::load(&read_state(&a.state)?).await?;
    let req = DelegateRequest {
        agent: a.agent,
        ephemeral: a.ephemeral,
        goal: a.goal,
        scope: read_policy(a.scope.as_deref())?,
        boundaries: read_policy(a.boundaries.as_deref())?,
        escalations: read_policy(a.escalations.as_deref())?,
        ttl_seconds: a.ttl.as_deref().map(parse_duration).transpose()?,
        budget: a.budget,
        out_of_scope: Some(a.out_of_scope.as_str().into()),
        attestation: crate::attest::requirement(a.require),
    };
    let created = agent.delegate(&req).await?;
    if json {
        output::json(&created)?;
    } else {
        let m = &created.mission;
        println!(
            "delegated mission {} to `{}` (depth {}, budget {}, expires {})",
            m.id,
            m.agent,
            m.depth,
            m.budget,
            when(m.expires_at)
        );
        println!("parent {}", agent.mission_id());
        println!("mission_s256 {}", m.mission_s256);
        println!(
            "\nstart token (single use, valid until {}); hand it to the sub-agent:\n",
            when(created.start_token_expires_at)
        );
        println!("  {}\n", created.start_token);
    }
    Ok(())
}

async fn credential(server: &str, cmd: CredentialCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        CredentialCmd::Verify {
            credential,
            chain,
            jwks,
            issuer,
            evidence,
            bundles,
            launchers,
            audience,
        } => {
            let bundle = match (credential, chain) {
                (Some(c), _) => ChainBundle {
                    credential: arg_or_stdin(&c)?,
                    links: Vec::new(),
                },
                (None, Some(f)) => {
                    let text = if f == "-" {
                        arg_or_stdin("-")?
                    } else {
                        fs::read_to_string(&f).with_context(|| format!("cannot read `{f}`"))?
                    };
                    serde_json::from_str(&text).map_err(|e| {
                        anyhow!("`{f}` is not a chain (`mandate mission chain` prints one): {e}")
                    })?
                }
                (None, None) => bail!("give a credential or --chain"),
            };
            let jwks = jwks.unwrap_or_else(|| {
                format!("{}/.well-known/jwks.json", server.trim_end_matches('/'))
            });
            let (keys, default_issuer) = if jwks.starts_with("http://")
                || jwks.starts_with("https://")
            {
                let keys = fetch_jwks(&jwks).await?;
                (
                    keys,
                    jwks.strip_suffix("/.well-known/jwks.json")
                        .map(str::to_owned),
                )
            } else {
                let text =
                    fs::read_to_string(&jwks).with_context(|| format!("cannot read `{jwks}`"))?;
                (
                    mandate_core::Jwks::from_json(&text).map_err(|e| anyhow!("`{jwks}`: {e}"))?,
                    None,
                )
            };
            let issuer = issuer
                .or(default_issuer)
                .ok_or_else(|| anyhow!("give --issuer: it cannot be inferred from `{jwks}`"))?;
            let evidence = evidence
                .map(|e| -> anyhow::Result<_> {
                    let anchors = crate::attest::anchors(
                        audience.as_deref().unwrap_or(&issuer),
                        &bundles,
                        &launchers,
                    )?;
                    Ok((crate::attest::read_evidence(&e)?, anchors))
                })
                .transpose()?;
            let proof = verify_acting_principal(
                &bundle.credential,
                &bundle.links,
                &keys,
                &issuer,
                SystemClock.now(),
                evidence.as_ref().map(|(e, a)| (e, a)),
            )
            .map_err(|e| match e {
                ActingPrincipalError::Chain(DelegationChainError::Credential(e)) => {
                    anyhow!("credential refused: {e} ({})", e.code())
                }
                ActingPrincipalError::Chain(e @ DelegationChainError::LinkCount { .. })
                    if bundle.links.is_empty() =>
                {
                    anyhow!(
                        "chain refused: {e}; a delegated mission's credential is verified with its links (`mandate mission chain` prints both) (bad_chain)"
                    )
                }
                ActingPrincipalError::Chain(e) => anyhow!("chain refused: {e} ({})", e.code()),
                e @ ActingPrincipalError::Evidence(mandate_core::AttestationError::WrongAudience(_)) => {
                    anyhow!(
                        "attestation refused: {e} ({}); if the authority names its own `[attestation] audience`, give it with --audience",
                        e.code()
                    )
                }
                e => anyhow!("attestation refused: {e} ({})", e.code()),
            })?;
            let c = &proof.claims;
            if json {
                output::json(&json!({
                    "valid": true, "claims": c, "chain": proof.chain,
                    "statement": proof.statement_with(when), "evidence_rechecked": proof.evidence_rechecked,
                }))?;
            } else {
                println!("valid mission credential (signature, issuer, expiry checked offline)");
                println!("  issuer        {}", c.iss);
                println!("  principal     {}", c.sub);
                println!("  agent (act)   {}", c.act.sub);
                println!("  mission       {}", c.mission_id);
                println!("  mission_s256  {}", c.mission_s256);
                println!("  key (jkt)     {}", c.cnf.jkt);
                println!("  issued        {}", when(c.iat));
                println!("  expires       {}", when(c.exp));
                if let Some(p) = &c.policy_s256 {
                    println!("  policy set    {p}");
                }
                match &proof.attestation {
                    None => println!(
                        "  attestation   none: nothing vouches for what code holds the key"
                    ),
                    Some(a) => {
                        let what = match (&a.launcher, &a.code_digest) {
                            (Some(l), Some(d)) => {
                                format!(
                                    "launch statement of launcher `{l}`: code {d} (`{}`)",
                                    a.subject
                                )
                            }
                            _ => format!("JWT-SVID of workload {}", a.subject),
                        };
                        println!(
                            "  attestation   {what} (verified by the authority at {}{})",
                            when(a.verified_at),
                            if proof.evidence_rechecked {
                                "; the evidence re-checked here against the bundles and launcher keys given"
                            } else {
                                "; the evidence itself not re-checked here (give --evidence)"
                            }
                        );
                        for (k, v) in &a.environment {
                            println!("  environment   {k}={v}");
                        }
                    }
                }
                if proof.chain.len() > 1 {
                    println!(
                        "  chain         {} hops, every link signed by its parent's mission key:",
                        proof.chain.len()
                    );
                    println!("    {} delegated to", c.sub);
                    for h in &proof.chain {
                        let by = h
                            .link
                            .as_ref()
                            .map(|l| {
                                format!(
                                    ", delegated by `{}` (key {})",
                                    l.parent.agent, l.parent_jkt
                                )
                            })
                            .unwrap_or_default();
                        println!(
                            "    {}. `{}` on mission {}{by}",
                            h.depth, h.agent, h.mission_id
                        );
                    }
                }
                println!("statement: {}", proof.statement_with(when));
                println!(
                    "(offline: revocation and mission end are not visible; use `mandate credential introspect`)"
                );
            }
        }
        CredentialCmd::Introspect { credential } => {
            let credential = arg_or_stdin(&credential)?;
            let r = Client::new(server)?.introspect(&credential).await?;
            if json {
                output::json(&r)?;
            } else if r.active {
                println!("active");
            } else {
                println!(
                    "inactive: {} ({})",
                    r.detail.unwrap_or_default(),
                    r.code.as_deref().unwrap_or("unknown")
                );
            }
            if !r.active {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_in_the_documented_units() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("2h").unwrap(), 7_200);
        assert_eq!(parse_duration("1d").unwrap(), 86_400);
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
