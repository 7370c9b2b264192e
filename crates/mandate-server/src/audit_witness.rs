//! The audit witness: every checkpoint, as it is signed, is POSTed to a URL
//! the operator names (`[audit.witness]` in `mandate.toml`), as
//! `{"checkpoint": "<JWS>"}`. A copy held by another party is one a
//! database writer cannot reach, and `mandate audit verify --checkpoints`
//! checks the log against it (ADR 0012). Delivery retries with backoff and
//! never holds up the log; while it fails, a newer checkpoint replaces the
//! one waiting (it covers everything before it).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::WebhookConfig;

/// Starts the deliverer; the audit writer sends each new checkpoint into
/// the returned channel.
pub(crate) fn spawn(config: WebhookConfig) -> Result<mpsc::UnboundedSender<String>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the audit witness client: {e}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(mut token) = rx.recv().await {
            let mut attempts = 0u32;
            let mut backoff = config.initial_backoff_ms;
            loop {
                // A newer checkpoint supersedes the one not yet delivered.
                while let Ok(newer) = rx.try_recv() {
                    token = newer;
                }
                match send(&client, &config.url, &token).await {
                    Ok(()) => break,
                    Err(e) => {
                        attempts = attempts.saturating_add(1);
                        if attempts >= config.max_attempts {
                            tracing::error!(error = %e, "the audit witness did not take a checkpoint; given up (the next one will be sent)");
                            break;
                        }
                        tracing::warn!(error = %e, attempt = attempts, "the audit witness did not take a checkpoint; retrying");
                        tokio::time::sleep(Duration::from_millis(backoff)).await;
                        backoff = backoff.saturating_mul(2).min(config.max_backoff_ms);
                    }
                }
            }
        }
    });
    Ok(tx)
}

async fn send(client: &reqwest::Client, url: &str, token: &str) -> Result<(), String> {
    let resp = client
        .post(url)
        .json(&serde_json::json!({ "checkpoint": token }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", resp.status()))
    }
}
