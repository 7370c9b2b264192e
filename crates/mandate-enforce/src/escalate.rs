//! Escalated calls: the approval request a person decides on.

use mandate_core::{
    ApprovalId, Mission, Outcome, ResourceKind, ResourceRef, SecureRandom, UnixTime, request_digest,
};
use mandate_store::{NewApproval, Store};

use crate::error::EnforceError;
use crate::pipeline::Opened;
use crate::record::AuditLog;

/// Most approval requests one mission may have waiting. Past it, further
/// escalations are denied (`approval_queue_full`) instead of flooding the
/// approver.
pub(crate) const MAX_PENDING_APPROVALS: u32 = 100;

/// An escalated call, as the approver will see it.
pub(crate) struct Ask<'a> {
    pub mission: &'a Mission,
    pub action: &'a str,
    pub resource: &'a ResourceRef,
    pub context: &'a serde_json::Map<String, serde_json::Value>,
    pub outcome: &'a Outcome,
    pub justification: String,
    pub arguments: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub now: UnixTime,
}

/// One line saying what the call does, for approvers.
fn summary(ask: &Ask<'_>) -> String {
    let target = match &ask.resource.kind {
        ResourceKind::Resource { id } => format!("`{id}`"),
        ResourceKind::Route { route, path } => format!("route `{route}` path `{path}`"),
        ResourceKind::Tool { server, tool } => format!("tool `{tool}` of MCP server `{server}`"),
        ResourceKind::McpResource { server, uri } => {
            format!("resource `{uri}` of MCP server `{server}`")
        }
        ResourceKind::Prompt { server, prompt } => {
            format!("prompt `{prompt}` of MCP server `{server}`")
        }
        ResourceKind::McpServer { server } => format!("MCP server `{server}`"),
    };
    let mut line = format!(
        "agent `{}` wants to `{}` {target}",
        ask.mission.body.agent, ask.action
    );
    if !ask.context.is_empty() {
        line.push_str(" with ");
        line.push_str(&serde_json::Value::Object(ask.context.clone()).to_string());
    }
    // One printable line, bounded.
    let mut out: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if line.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Records the escalated request (or joins the identical pending one) and
/// returns its id; `None` when the mission's approval queue is full. A new
/// request is durable in the audit log before anyone hears of it; then it
/// goes to `opened`, to be announced.
pub(crate) async fn open_approval(
    store: &dyn Store,
    audit: &AuditLog,
    rng: &dyn SecureRandom,
    ttl_secs: u64,
    opened: &Opened,
    ask: &Ask<'_>,
) -> Result<Option<String>, EnforceError> {
    let internal = EnforceError::Internal;
    let mission = &ask.mission.body.id;
    let canonical = |v: &serde_json::Value| -> Result<Vec<u8>, EnforceError> {
        serde_jcs::to_vec(v).map_err(|_| internal("approval context"))
    };
    let resource_json = serde_json::to_value(ask.resource).map_err(|_| internal("resource"))?;
    let mut shown = ask.context.clone();
    if let Some(args) = ask.arguments {
        // What the approver decides on: the whole call, bounded.
        let text = serde_json::Value::Object(args.clone()).to_string();
        let value = if text.len() <= 8 * 1024 {
            serde_json::Value::Object(args.clone())
        } else {
            serde_json::json!({ "truncated": true, "bytes": text.len() })
        };
        shown.insert("mcp_arguments".into(), value);
    }
    let context_json = serde_json::Value::Object(shown);
    let request_digest = request_digest(ask.action, ask.resource, ask.context)
        .map_err(|_| internal("request digest"))?;
    let context = canonical(&context_json)?;
    let approval = NewApproval {
        id: ApprovalId::generate(rng)
            .map_err(|_| internal("approval id"))?
            .to_string(),
        mission: mission.clone(),
        request_digest: request_digest.clone(),
        action: ask.action.to_owned(),
        resource: resource_json.to_string(),
        context_digest: mandate_core::s256(&context),
        context: String::from_utf8(context).map_err(|_| internal("approval context"))?,
        reason_code: ask.outcome.code.clone(),
        policies: serde_json::to_string(&ask.outcome.policies)
            .map_err(|_| internal("approval policies"))?,
        justification: ask.justification.clone(),
        summary: summary(ask),
        approvers: ask.outcome.approvers.clone(),
        step_up: ask.outcome.step_up,
        created_at: ask.now,
        expires_at: ask.now.plus(ttl_secs).min(ask.mission.expires_at()),
        // What untrusted content preceded the call: the approver sees it.
        taint: ask.mission.taint.clone(),
    };
    let Some((id, joined)) = store
        .open_approval(&approval, MAX_PENDING_APPROVALS)
        .await?
    else {
        tracing::warn!(mission = %mission, "approval queue full; escalation denied");
        return Ok(None);
    };
    tracing::info!(mission = %mission, approval = %id, joined, "approval requested");
    if joined {
        return Ok(Some(id));
    }
    audit
        .record(
            "approval.requested",
            ask.now.0,
            serde_json::json!({
                "approval": &id,
                "mission": mission.as_str(),
                "mission_s256": &ask.mission.s256,
                "principal": ask.mission.body.principal.as_str(),
                "agent": ask.mission.body.agent.as_str(),
                "action": ask.action,
                "resource": resource_json,
                "request_digest": request_digest,
                "code": &ask.outcome.code,
                "policies": &ask.outcome.policies,
                "approvers": &approval.approvers,
                "step_up": approval.step_up,
                "justification": &approval.justification,
                "expires_at": approval.expires_at.0,
            }),
        )
        .await?;
    if let Some(r) = store.approval(&id).await?
        && opened.send(r).is_err()
    {
        tracing::error!(approval = %id, "nobody announces opened approval requests");
    }
    Ok(Some(id))
}
