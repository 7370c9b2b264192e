//! What other nodes on the same database changed, applied here (ADR 0017).
//!
//! A node keeps little that another node can change: each decision reads
//! its mission's state, budget and grants from the store, so a revocation
//! on one node holds on every other at its next request. What a node does
//! keep is woken or reloaded here: long-polls waiting on an approval, and
//! the organisation's policies (each node reloads its own policy directory,
//! which an operator keeps the same on every node). After a lost
//! notification connection everything is woken and reloaded, since a
//! notice may have been missed.

use mandate_store::Change;
use tokio::sync::broadcast::error::RecvError;

use crate::state::AppState;

/// Wakes every approval long-poll (they re-read their request).
pub(crate) const EVERY_APPROVAL: &str = "*";

/// Reloads (and waking every approval wait) because of notices come at most
/// this often. Any role that can connect to the database may `NOTIFY` on
/// the channel, so a burst or a flood of notices, forged or not, is one
/// reload (and one `policy.reloaded` record) per second, not one per
/// notice.
const RELOAD_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// What the notices received so far still ask of this node.
#[derive(Clone, Copy)]
struct Owed {
    why: &'static str,
    wake_all: bool,
}

/// Applies other nodes' changes as they commit, for as long as the server
/// runs; nothing to do on a store no other process shares.
pub(crate) fn spawn_listener(state: AppState) {
    let Some(mut changes) = state.0.store.subscribe() else {
        return;
    };
    tokio::spawn(async move {
        let mut owed: Option<Owed> = None;
        // The earliest the next reload may run.
        let mut next = tokio::time::Instant::now();
        loop {
            let change = match owed {
                None => changes.recv().await,
                Some(o) => tokio::select! {
                    c = changes.recv() => c,
                    () = tokio::time::sleep_until(next) => {
                        owed = None;
                        if o.wake_all {
                            let _ = state.0.approvals_changed.send(EVERY_APPROVAL.to_owned());
                        }
                        reload(&state, Reload::Notice(o.why)).await;
                        next = tokio::time::Instant::now() + RELOAD_GAP;
                        continue;
                    }
                },
            };
            match change {
                // No node names this id: only a forged notice would.
                Ok(Change::Approval(id)) if id == EVERY_APPROVAL => {}
                Ok(Change::Approval(id)) => {
                    let _ = state.0.approvals_changed.send(id);
                }
                Ok(Change::Policies) => {
                    owed = Some(owed.unwrap_or(Owed {
                        why: "another node reloaded them",
                        wake_all: false,
                    }));
                }
                Ok(Change::Lost) | Err(RecvError::Lagged(_)) => {
                    if !owed.is_some_and(|o| o.wake_all) {
                        tracing::warn!(
                            "notices from other nodes may have been missed; waking every approval wait and reloading the policies"
                        );
                    }
                    owed = Some(Owed {
                        why: "notices from other nodes were missed",
                        wake_all: true,
                    });
                }
                // Each decision reads the mission's state from the store:
                // nothing here holds it.
                Ok(Change::Mission(_) | Change::Revoked) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Why the policies are reloaded outside a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reload {
    /// The operator sent SIGHUP: the other nodes are told.
    Sighup,
    /// Another node's notice, and what it said.
    Notice(&'static str),
}

/// Reloads this node's policy directory outside a request (SIGHUP, another
/// node's notice). A set that does not load is logged and the running one
/// stays; a loaded one is recorded as `policy.reloaded`, and after SIGHUP
/// announced to the other nodes.
pub(crate) async fn reload(state: &AppState, cause: Reload) {
    let s = state.clone();
    let reloaded = crate::api::on_large_stack(move || s.reload_policies()).await;
    match reloaded {
        Ok(Ok(version)) => {
            let body = match cause {
                Reload::Sighup => {
                    tracing::info!(version, "policies reloaded (SIGHUP)");
                    announce_reload(state).await;
                    serde_json::json!({ "version": version, "by": "SIGHUP" })
                }
                Reload::Notice(why) => {
                    tracing::info!(version, why, "policies reloaded");
                    serde_json::json!({ "version": version, "by": "node notice", "why": why })
                }
            };
            let _ = state.audit("policy.reloaded", body).await;
        }
        Ok(Err(diags)) => {
            for d in diags {
                tracing::error!(
                    ?cause,
                    "policy reload rejected, keeping the running set: {d}"
                );
            }
        }
        Err(_) => tracing::error!(?cause, "the policy reload could not run"),
    }
}

/// Tells the other nodes that this node's policies were reloaded, so they
/// reload theirs. A notice that cannot be sent is logged: the reload here
/// stands, and the other nodes keep their set until told again.
pub(crate) async fn announce_reload(state: &AppState) {
    if let Err(e) = state.0.store.announce(&Change::Policies).await {
        tracing::error!(error = %e, "the other nodes could not be told of this policy reload; reload them too (`mandate policy reload` on each, or SIGHUP)");
    }
}
