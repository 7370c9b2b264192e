//! What other nodes on the same database changed, applied here (ADR 0017).
//!
//! A node keeps little that another node can change: each decision reads
//! its mission's state, budget and grants from the store, so a revocation
//! on one node holds on every other at its next request. What a node does
//! keep is woken or reloaded here: long-polls waiting on an approval, and
//! the organisation's policies and `mandate.toml`'s routes and MCP servers
//! (each node reloads its own files, which an operator keeps the same on
//! every node; see `reload`). After a lost
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
/// reload (and one `policy.reloaded` and one `config.reloaded` record) per
/// second, not one per notice.
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
                        crate::reload::reload_or_log(&state, crate::reload::Trigger::Notice(o.why)).await;
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
