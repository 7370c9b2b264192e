//! Approval requests beyond the API: announcing changes (long-polls and the
//! webhook), expiring requests nobody decided, and delivering webhook
//! notifications.
//!
//! Notifications go through a durable outbox (`webhook_outbox`): a receiver
//! that is down loses nothing and slows no decision; delivery retries with
//! exponential backoff, in order (a failing notification holds back later
//! ones until it is delivered or given up). Each POST carries a JWT (`typ: mandate-event+jwt`)
//! signed by the authority key, with `aud` = the webhook URL and a `jti`
//! that stays the same across retries of one notification, so a receiver
//! verifies it against the JWKS and drops duplicates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mandate_core::wire::ApprovalView;
use mandate_store::ApprovalRecord;
use serde::Serialize;

use crate::config::WebhookConfig;
use crate::problem::Problem;
use crate::state::AppState;

/// The JWT type of a webhook notification.
pub const WEBHOOK_TYP: &str = "mandate-event+jwt";

/// How often undecided requests are checked for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Largest batch of notifications sent in one pass.
const DELIVERY_BATCH: u32 = 32;

/// Longest the deliverer sleeps between looks at the outbox (retries come
/// due while it sleeps; new notifications wake it at once).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// How often a node whose turn it is not asks again (another node
/// delivers; if it stops, this one takes over within this time).
const OTHER_NODE_LOOK: Duration = Duration::from_secs(2);

pub(crate) fn view(r: &ApprovalRecord) -> Result<ApprovalView, Problem> {
    let corrupt = |what: &str| {
        tracing::error!(approval = %r.id, "stored approval has an unreadable {what}");
        Problem::internal()
    };
    Ok(ApprovalView {
        id: r.id.clone(),
        status: r.status.as_str().to_owned(),
        mission_id: r.mission.to_string(),
        mission_s256: r.mission_s256.clone(),
        principal: r.principal.to_string(),
        agent: r.agent.to_string(),
        goal: r.goal.clone(),
        action: r.action.clone(),
        resource: serde_json::from_str(&r.resource).map_err(|_| corrupt("resource"))?,
        context: serde_json::from_str(&r.context).map_err(|_| corrupt("context"))?,
        request_digest: r.request_digest.clone(),
        summary: r.summary.clone(),
        justification: r.justification.clone(),
        reason_code: r.reason_code.clone(),
        policies: r.policies.clone(),
        approvers: if r.approvers.is_empty() {
            vec![r.principal.to_string()]
        } else {
            r.approvers.clone()
        },
        step_up: r.step_up,
        created_at: r.created_at.0,
        expires_at: r.expires_at.0,
        hits: r.hits,
        decided_by: r.decided_by.clone(),
        decided_at: r.decided_at.map(|t| t.0),
        decision_reason: r.decision_reason.clone(),
        grant: r.grant.clone(),
        ended_mission: r.ended_mission,
        taint: r.taint.clone(),
    })
}

/// Where an agent polls an approval.
pub(crate) fn poll_url(state: &AppState, id: &str) -> String {
    format!("{}/v1/approvals/{id}", state.0.issuer)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Tells waiting agents and the webhook that a request changed. Never
/// fails the caller: a notification that cannot be queued is logged.
pub(crate) async fn announce(state: &AppState, event: &str, record: &ApprovalRecord) {
    // No receiver is fine: nobody is waiting.
    let _ = state.0.approvals_changed.send(record.id.clone());
    if state.0.webhook.is_none() {
        return;
    }
    let payload = match view(record) {
        Ok(mut v) => {
            // The call's arguments stay in Mandate (the summary and the link
            // say what it is): a notification carries no request data
            // beyond that, and stays small.
            v.context.clear();
            serde_json::json!({
                "event": event,
                "approval": v,
                "approval_url": poll_url(state, &record.id),
            })
        }
        Err(_) => return,
    };
    match state
        .0
        .store
        .enqueue_webhook(event, &payload.to_string(), now_ms())
        .await
    {
        Ok(()) => state.0.webhook_wake.notify_one(),
        Err(e) => {
            tracing::error!(error = %e, approval = %record.id, "cannot queue a webhook notification")
        }
    }
}

/// Announces each approval request the enforcement pipeline opens (it
/// sends them once their `approval.requested` record is durable, before
/// the escalation's own decision is recorded).
pub fn spawn_announcer(state: AppState) {
    let Some(mut opened) = state.0.opened.lock().ok().and_then(|mut o| o.take()) else {
        return;
    };
    tokio::spawn(async move {
        while let Some(r) = opened.recv().await {
            announce(&state, "approval.requested", &r).await;
        }
    });
}

/// Expires requests whose time ran out or whose mission ended, recording
/// each in the audit log and announcing it.
pub fn spawn_sweeper(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            let now = state.0.clock.now();
            let expired = match state.0.store.expire_approvals(now).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot expire approval requests");
                    continue;
                }
            };
            for r in expired {
                let _ = state
                    .audit("approval.expired", crate::api::approval_subject(&r))
                    .await;
                tracing::info!(approval = %r.id, mission = %r.mission, "approval request expired");
                announce(&state, "approval.expired", &r).await;
            }
        }
    });
}

#[derive(Serialize)]
struct EventClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    event: &'a str,
    data: serde_json::Value,
}

/// Delivers queued notifications to the webhook, oldest first, retrying
/// failures with exponential backoff. Runs until the process ends.
pub fn spawn_webhook(state: AppState) {
    let Some(config) = state.0.webhook.clone() else {
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; notifications stay queued");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            // With several nodes, one delivers at a time (in order, once).
            match state.0.store.outbox_turn().await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::time::sleep(OTHER_NODE_LOOK).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot take the webhook outbox; notifications stay queued");
                    tokio::time::sleep(OTHER_NODE_LOOK).await;
                    continue;
                }
            }
            let wait = deliver_due(&state, &config, &client).await;
            if !wait.is_zero() {
                let _ = tokio::time::timeout(wait, state.0.webhook_wake.notified()).await;
            }
        }
    });
}

/// One pass: sends pending notifications in order, stopping at the first
/// that is not yet due or fails (so a receiver sees them in the order they
/// happened). Returns how long to wait before the next pass.
async fn deliver_due(
    state: &AppState,
    config: &WebhookConfig,
    client: &reqwest::Client,
) -> Duration {
    let pending = match state.0.store.pending_webhooks(DELIVERY_BATCH).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the webhook outbox");
            return IDLE_LOOK;
        }
    };
    let full = pending.len() >= DELIVERY_BATCH as usize;
    for d in pending {
        let now = now_ms();
        if d.next_attempt_ms > now {
            return Duration::from_millis(d.next_attempt_ms - now).min(IDLE_LOOK);
        }
        // Still this node's turn (another node may have taken the outbox
        // if this one lost its database connection): one delivery at a time.
        if !matches!(state.0.store.outbox_turn().await, Ok(true)) {
            return OTHER_NODE_LOOK;
        }
        let (delivered, retry, error) = match send(state, config, client, &d).await {
            Ok(()) => (true, None, None),
            Err(Failure::Permanent(e)) => {
                tracing::error!(event = %d.event, id = d.id, error = %e, "webhook notification refused; given up");
                (false, None, Some(e))
            }
            Err(Failure::Retry(e)) => {
                let attempts = d.attempts.saturating_add(1);
                if attempts >= config.max_attempts {
                    tracing::error!(event = %d.event, id = d.id, error = %e, "webhook notification given up");
                    (false, None, Some(e))
                } else {
                    let backoff = config
                        .initial_backoff_ms
                        .saturating_mul(1u64 << d.attempts.min(30))
                        .min(config.max_backoff_ms);
                    tracing::warn!(event = %d.event, id = d.id, error = %e, retry_in_ms = backoff, "webhook delivery failed");
                    (false, Some(now_ms().saturating_add(backoff)), Some(e))
                }
            }
        };
        if let Err(e) = state
            .0
            .store
            .webhook_attempted(d.id, delivered, retry, error.as_deref())
            .await
        {
            tracing::error!(error = %e, "cannot record a webhook attempt");
            return IDLE_LOOK;
        }
        if let Some(at) = retry {
            // Later notifications wait for this one.
            return Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE_LOOK);
        }
    }
    // More may be waiting beyond a full batch: look again at once.
    if full { Duration::ZERO } else { IDLE_LOOK }
}

async fn send(
    state: &AppState,
    config: &WebhookConfig,
    client: &reqwest::Client,
    d: &mandate_store::WebhookDelivery,
) -> Result<(), Failure> {
    let data: serde_json::Value = serde_json::from_str(&d.payload)
        .map_err(|e| Failure::Permanent(format!("stored payload: {e}")))?;
    let iat = state.0.clock.now().0;
    let claims = EventClaims {
        iss: &state.0.issuer,
        aud: &config.url,
        iat,
        exp: iat + 300,
        jti: format!("evt_{}", d.id),
        event: &d.event,
        data,
    };
    let jwt = state
        .0
        .key
        .sign_jwt(WEBHOOK_TYP, &claims)
        .map_err(|e| Failure::Retry(format!("signing: {e}")))?;
    let resp = client
        .post(&config.url)
        .header("content-type", "application/jwt")
        .body(jwt)
        .send()
        .await
        // The URL may hold a secret path: never in logs or the outbox.
        .map_err(|e| Failure::Retry(format!("request: {}", e.without_url())))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else if status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        // The receiver refuses this notification: retrying will not help,
        // and it would hold back the ones behind it.
        Err(Failure::Permanent(format!("receiver answered {status}")))
    } else {
        Err(Failure::Retry(format!("receiver answered {status}")))
    }
}

/// Why a delivery failed.
enum Failure {
    Retry(String),
    Permanent(String),
}
