//! Reloading what an operator edits while the server runs (ADR 0028): the
//! organisation's policies and, from `mandate.toml`, the gateway's routes
//! (vault routes among them) and MCP servers — on `SIGHUP`, on `POST
//! /v1/policies/reload` (`mandate policy reload`), and on another node's
//! notice.
//!
//! One reload, one outcome. Everything is read and checked first, with the
//! checks of a start (the file parses, every route and MCP server is valid,
//! local servers' programs exist, every action they map to is declared by
//! the new schema); only then is anything replaced. A bad file or policy
//! set keeps everything that runs and says where it is wrong
//! (`file:line:col`). Settings a running server cannot take on (where it
//! listens, its database, keys, limits, …) keep their running values and
//! are reported as needing a restart.

use std::collections::HashMap;
use std::sync::Arc;

use mandate_core::wire::{ConfigReloadView, ReloadChanges};
use mandate_core::{OrgPolicies, PolicyDiagnostic, PrincipalName};
use mandate_store::Change;

use crate::config::Config;
use crate::mcp_servers::McpServer;
use crate::routes::Route;
use crate::state::AppState;

/// The gateway's routes and MCP servers by name: what a reload of
/// `mandate.toml` replaces, whole.
#[derive(Debug, Default)]
pub(crate) struct Gateways {
    pub routes: HashMap<String, Arc<Route>>,
    pub mcp_servers: HashMap<String, Arc<McpServer>>,
}

impl Gateways {
    /// The routes and MCP servers of `config`. One whose configuration is
    /// the same as in `previous` stays the very same value, so the MCP
    /// sessions of a server whose configuration did not change go on.
    pub(crate) fn new(config: &Config, previous: Option<&Self>) -> Self {
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let kept = previous
                    .and_then(|p| p.routes.get(r.name()))
                    .filter(|old| old.config == r.config);
                let route = kept.map_or_else(|| Arc::new(r.clone()), Arc::clone);
                (r.name().to_owned(), route)
            })
            .collect();
        let mcp_servers = config
            .mcp_servers
            .iter()
            .map(|m| {
                let kept = previous
                    .and_then(|p| p.mcp_servers.get(m.name()))
                    .filter(|old| old.config == m.config);
                let server = kept.map_or_else(|| Arc::new(m.clone()), Arc::clone);
                (m.name().to_owned(), server)
            })
            .collect();
        Self {
            routes,
            mcp_servers,
        }
    }
}

/// What was added, changed and removed from `old` to `new`, by name.
fn changes<T>(old: &HashMap<String, Arc<T>>, new: &HashMap<String, Arc<T>>) -> ReloadChanges {
    let mut c = ReloadChanges::default();
    for (name, v) in new {
        match old.get(name) {
            None => c.added.push(name.clone()),
            Some(o) if !Arc::ptr_eq(o, v) => c.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    c.removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    for v in [&mut c.added, &mut c.changed, &mut c.removed] {
        v.sort();
    }
    c
}

/// `added a, b; removed c`, or `unchanged`.
fn summary(c: &ReloadChanges) -> String {
    let parts: Vec<String> = [
        ("added", &c.added),
        ("changed", &c.changed),
        ("removed", &c.removed),
    ]
    .iter()
    .filter(|(_, names)| !names.is_empty())
    .map(|(how, names)| format!("{how} {}", names.join(", ")))
    .collect();
    if parts.is_empty() {
        "unchanged".into()
    } else {
        parts.join("; ")
    }
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger<'a> {
    /// An admin, through the API (`mandate policy reload`).
    Api(&'a str),
    /// The operator sent SIGHUP.
    Sighup,
    /// Another node's notice, and what it said.
    Notice(&'static str),
}

/// A reload that took effect.
#[derive(Debug)]
pub(crate) struct Reloaded {
    /// Why the reload, which took effect, could not be recorded.
    pub unrecorded: Option<crate::Problem>,
    pub config: ConfigReloadView,
    /// What the policies name that does not exist ([`approver_warnings`]).
    pub warnings: Vec<String>,
}

/// Why nothing was reloaded (and everything running stays).
#[derive(Debug)]
pub(crate) enum Refused {
    /// `mandate.toml` cannot be used: where, and why.
    Config(String),
    /// The policies cannot be used, or do not fit the new routes and MCP
    /// servers: every problem, `file:line:col`.
    Policies(Vec<PolicyDiagnostic>),
    /// The reload could not run.
    Internal,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Policies(diags) => {
                let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
                write!(f, "{}", all.join("; "))
            }
            Self::Internal => write!(f, "the reload could not run"),
        }
    }
}

/// Reads `mandate.toml` and the policy directory again, checks them as a
/// start would, and puts them in place together; on any problem nothing
/// changes. Recorded (`policy.reloaded`, `config.reloaded`); after SIGHUP
/// or the API, announced to the other nodes, which reload their own files.
pub(crate) async fn reload(s: &AppState, trigger: Trigger<'_>) -> Result<Reloaded, Refused> {
    let _one = s.0.reload_lock.lock().await;
    let st = s.clone();
    let (version, config) = crate::api::on_large_stack(move || read_and_check(&st))
        .await
        .map_err(|_| Refused::Internal)??;
    // Everything checked: the new routes and MCP servers go in place (the
    // policies already are). Requests that started before keep what they
    // read.
    let old = s.gateways();
    let new = Arc::new(Gateways::new(&config, Some(&old)));
    let view = ConfigReloadView {
        file: config
            .source
            .as_ref()
            .map(|src| src.path.display().to_string()),
        routes: changes(&old.routes, &new.routes),
        mcp_servers: changes(&old.mcp_servers, &new.mcp_servers),
        needs_restart: s
            .0
            .config
            .needs_restart(&config)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    };
    s.set_gateways(new);
    // The sessions of MCP servers that changed or went take no new
    // request; those with nothing in flight end now, the others when it
    // is done.
    crate::api::retire_mcp_sessions(s).await;
    let warnings = match s.org() {
        Ok(org) => approver_warnings(s, &org.loaded.policies).await,
        Err(_) => Vec::new(),
    };
    let (by, why) = match trigger {
        Trigger::Api(who) => (who, None),
        Trigger::Sighup => ("SIGHUP", None),
        Trigger::Notice(why) => ("node notice", Some(why)),
    };
    tracing::info!(
        version,
        by,
        why,
        routes = %summary(&view.routes),
        mcp_servers = %summary(&view.mcp_servers),
        "policies and mandate.toml reloaded"
    );
    if !view.needs_restart.is_empty() {
        tracing::warn!(
            settings = %view.needs_restart.join(", "),
            "mandate.toml changed settings that take effect only at the next start; the running values stay"
        );
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let mut policy = serde_json::json!({ "version": version, "by": by });
    let mut body = serde_json::json!({
        "file": &view.file,
        "routes": &view.routes,
        "mcp_servers": &view.mcp_servers,
        "needs_restart": &view.needs_restart,
        "by": by,
    });
    if let Some(why) = why {
        policy["why"] = why.into();
        body["why"] = why.into();
    }
    if matches!(trigger, Trigger::Api(_) | Trigger::Sighup) {
        announce(s).await;
    }
    // What took effect is recorded; a record that cannot be written is
    // logged and given to whoever asked (the audit log then refuses every
    // later event, decisions included, until a restart).
    let mut unrecorded = None;
    for (kind, body) in [("policy.reloaded", policy), ("config.reloaded", body)] {
        if let Err(p) = s.audit(kind, body).await {
            tracing::error!(kind, detail = %p.detail, "cannot record the reload");
            unrecorded = Some(p);
            break;
        }
    }
    Ok(Reloaded {
        unrecorded,
        config: view,
        warnings,
    })
}

/// The new configuration and the new policies' version, once both are
/// read and checked (and the policies put in place): the part of a reload
/// that parses, on a thread with a large stack.
fn read_and_check(s: &AppState) -> Result<(u64, Config), Refused> {
    let running = &s.0.config;
    let config = running
        .reread()
        .map_err(|e| Refused::Config(e.to_string()))?;
    // Trust domains and launchers are the running `[attestation]`'s: a
    // change to it needs a restart.
    config
        .check_attestation_requirements(&running.attestation)
        .map_err(|e| Refused::Config(config.located(e).to_string()))?;
    crate::check_mcp_programs(&config).map_err(|e| Refused::Config(e.to_string()))?;
    // The running policy directory (a new `policies_dir` needs a restart),
    // checked against the new routes and MCP servers.
    let version =
        s.0.enforcer
            .reload_checked(&s.0.policies_dir, |org| crate::check_actions(&config, org))
            .map_err(Refused::Policies)?;
    Ok((version, config))
}

/// Tells the other nodes that this node reloaded, so they reload their
/// own files. A notice that cannot be sent is logged: the reload here
/// stands, and the other nodes keep what they run until told again.
async fn announce(s: &AppState) {
    if let Err(e) = s.0.store.announce(&Change::Policies).await {
        tracing::error!(error = %e, "the other nodes could not be told of this reload; reload them too (`mandate policy reload` on each, or SIGHUP)");
    }
}

/// Every approver the organisation's escalate policies name who is not a
/// principal here, or was revoked: one warning each. Nobody by that name
/// can decide, so a call only they could approve is denied (`no_approver`)
/// rather than left waiting.
pub(crate) async fn approver_warnings(s: &AppState, org: &OrgPolicies) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ids) in org.policies().named_approvers() {
        let found = match name.parse::<PrincipalName>() {
            Ok(n) => s.0.store.principal(&n).await,
            Err(_) => Ok(None),
        };
        let (why, fix) = match found {
            Ok(Some(p)) if p.revoked_at.is_none() => continue,
            Ok(Some(_)) => ("was revoked", "name another approver".to_owned()),
            Ok(None) => (
                "is not a principal of this authority",
                format!("create the principal: `mandate principal add {name}`"),
            ),
            Err(e) => {
                tracing::warn!(error = %e, approver = %name, "cannot check a named approver");
                continue;
            }
        };
        let policies = match ids.as_slice() {
            [one] => format!("policy `{one}`"),
            many => format!(
                "policies {}",
                many.iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push(format!(
            "{policies} names `{name}` as an approver, who {why}: a call only `{name}` could approve is denied (`no_approver`); {fix}"
        ));
    }
    out
}

/// As [`reload`], where nobody waits for the answer (SIGHUP, a notice): a
/// refusal is logged, with every problem.
pub(crate) async fn reload_or_log(s: &AppState, trigger: Trigger<'static>) {
    match reload(s, trigger).await {
        Ok(_) => {}
        Err(Refused::Policies(diags)) => {
            for d in diags {
                tracing::error!(?trigger, "reload rejected, everything running stays: {d}");
            }
        }
        Err(e) => tracing::error!(?trigger, "reload rejected, everything running stays: {e}"),
    }
}
