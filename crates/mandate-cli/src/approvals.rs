//! `mandate approvals`: the human side of progressive trust.

use mandate_client::Client;
use mandate_core::GrantScope;
use mandate_core::wire::{ApprovalView, ApproveRequest, DenyRequest};

use crate::args::{ApprovalsCmd, GrantScopeArg};
use crate::output;

pub async fn run(c: Client, cmd: ApprovalsCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        ApprovalsCmd::List {
            all,
            status,
            mission,
            limit,
        } => {
            let status = status.unwrap_or_else(|| if all { "all" } else { "pending" }.into());
            let mut q = format!(
                "status={}&mine={}&limit={limit}",
                query_value(&status)?,
                !all
            );
            if let Some(m) = mission {
                q.push_str(&format!("&mission={}", query_value(&m)?));
            }
            let list = c.approvals(&q).await?;
            if json {
                output::json(&list)?;
            } else if list.is_empty() {
                println!(
                    "{}",
                    if all {
                        "no approval requests"
                    } else {
                        "nothing waits for you"
                    }
                );
            } else {
                println!(
                    "{:<36} {:<8} {:<20} {:<16} SUMMARY",
                    "ID", "STATUS", "EXPIRES", "PRINCIPAL"
                );
                for a in &list {
                    println!(
                        "{:<36} {:<8} {:<20} {:<16} {}{}",
                        a.id,
                        a.status,
                        output::when(a.expires_at),
                        a.principal,
                        a.summary,
                        if a.step_up {
                            "  [approve each call]"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        ApprovalsCmd::Show { id, wait } => {
            let v = match wait {
                Some(w) => c.approval_wait(&id, w).await?,
                None => c.approval(&id).await?,
            };
            if json {
                output::json(&v)?;
            } else {
                print!("{}", details(&v));
            }
        }
        ApprovalsCmd::Approve {
            id,
            scope,
            resource_prefix,
            max_uses,
            expires_in,
            reason,
        } => {
            let scope = match scope {
                GrantScopeArg::Once => GrantScope::Once,
                GrantScopeArg::Mission => GrantScope::Mission,
                GrantScopeArg::Pattern => GrantScope::Pattern,
            };
            let v = c
                .approve(
                    &id,
                    &ApproveRequest {
                        scope: Some(scope),
                        resource_prefix,
                        max_uses,
                        expires_in_secs: expires_in,
                        reason,
                    },
                )
                .await?;
            if json {
                output::json(&v)?;
            } else {
                println!(
                    "approved {} ({}): grant {} for mission {}",
                    v.id,
                    scope.as_str(),
                    v.grant.as_deref().unwrap_or("?"),
                    v.mission_id
                );
            }
        }
        ApprovalsCmd::Deny {
            id,
            reason,
            end_mission,
        } => {
            let v = c
                .deny(
                    &id,
                    &DenyRequest {
                        reason,
                        end_mission,
                    },
                )
                .await?;
            if json {
                output::json(&v)?;
            } else {
                println!("denied {}", v.id);
                if v.ended_mission {
                    println!("  ended mission {}", v.mission_id);
                }
            }
        }
    }
    Ok(())
}

/// A query-string value: plain words only (ids, names, statuses).
fn query_value(v: &str) -> anyhow::Result<&str> {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    {
        Ok(v)
    } else {
        anyhow::bail!("`{v}` is not a valid value")
    }
}

fn details(v: &ApprovalView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, val: &str| out.push_str(&format!("{k:<14} {val}\n"));
    line("request", &v.id);
    line("status", &v.status);
    line("call", &v.summary);
    line("action", &v.action);
    line(
        "resource",
        &serde_json::to_string(&v.resource).unwrap_or_default(),
    );
    line(
        "arguments",
        &serde_json::Value::Object(v.context.clone()).to_string(),
    );
    line(
        "agent says",
        &if v.justification.is_empty() {
            "(no reason given)".to_owned()
        } else {
            format!("\"{}\" (the agent's claim)", v.justification)
        },
    );
    line(
        "why asked",
        &format!("{} {}", v.reason_code, v.policies.join(", ")),
    );
    line(
        "read before",
        &match &v.taint {
            Some(t) => format!("UNTRUSTED CONTENT: {}", t.describe()),
            None => "no content labelled untrusted".to_owned(),
        },
    );
    line("mission", &format!("{} — \"{}\"", v.mission_id, v.goal));
    line(
        "delegation",
        &format!("{} → agent {}", v.principal, v.agent),
    );
    line("approvers", &v.approvers.join(", "));
    if v.step_up {
        line(
            "note",
            "every such call needs its own approval: only `once` may be granted",
        );
    }
    line("asked", &output::when(v.created_at));
    line("expires", &output::when(v.expires_at));
    if v.hits > 1 {
        line("asked again", &format!("{} times in all", v.hits));
    }
    if let Some(by) = &v.decided_by {
        line("decided by", by);
    }
    if let Some(r) = v.decision_reason.as_deref().filter(|r| !r.is_empty()) {
        line("reason", r);
    }
    if let Some(g) = &v.grant {
        line("grant", g);
    }
    if v.ended_mission {
        line("mission", "ended with the denial");
    }
    out
}
