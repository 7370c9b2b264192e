//! `mandate mcp bridge`: lets an MCP client that cannot sign (any stock
//! client that launches stdio servers) use the MCP gateway with full
//! trust. The client launches the bridge as its "server"; the bridge
//! forwards each JSON-RPC message to `/mcp/{server}`, RFC 9421-signed with
//! the mission key (the same key and credential as `mandate mission
//! call`), and writes what comes back to standard output. The key never
//! leaves the machine the bridge runs on; no bearer token is involved.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use mandate_client::MissionAgent;
use mandate_core::sse::SseDecoder;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

/// Largest message relayed either way.
const LIMIT: usize = 16 << 20;

struct Bridge {
    agent: tokio::sync::Mutex<MissionAgent>,
    url: String,
    session: Mutex<Option<String>>,
    out: mpsc::Sender<Vec<u8>>,
}

/// Runs the bridge until standard input ends or the bridge is told to stop
/// (SIGTERM, SIGINT); then ends the MCP session, so a client that goes
/// away leaves no session (and no server process) behind. When standard
/// input ends, the answers to the requests already sent are written first
/// (a client may close its input right after its last request, as one
/// piped from a file does); a signal does not wait for them.
pub(crate) async fn run(state: &Path, url: String) -> anyhow::Result<()> {
    let saved = crate::commands::read_state(state)?;
    // The credential goes only to the authority it came from.
    let origin = |u: &str| {
        reqwest::Url::parse(u)
            .map(|u| u.origin())
            .map_err(|e| anyhow::anyhow!("`{u}`: {e}"))
    };
    if origin(&url)? != origin(&saved.server)? {
        anyhow::bail!(
            "`{url}` is not on the mission's authority ({}); the bridge sends the credential nowhere else",
            saved.server
        );
    }
    let agent = MissionAgent::load(&saved)
        .await
        .context("cannot load the mission")?;
    let before = agent.credential().to_owned();
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(mut line) = out_rx.recv().await {
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let b = Arc::new(Bridge {
        agent: tokio::sync::Mutex::new(agent),
        url,
        session: Mutex::new(None),
        out,
    });
    let mut lines = stdin_lines();
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut input_ended = false;
    let stop = crate::commands::terminated();
    tokio::pin!(stop);
    loop {
        while in_flight.try_join_next().is_some() {}
        let line = tokio::select! {
            line = lines.recv() => match line {
                Some(line) => line?,
                None => {
                    input_ended = true;
                    break;
                }
            },
            () = &mut stop => break,
        };
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > LIMIT {
            b.say(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "message too large"}})).await;
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                b.say(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("not JSON: {e}")}})).await;
                continue;
            }
        };
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        // Signed here, in the order the client wrote them; sent apart.
        let request = match b.sign("POST", Some(line.into_bytes())).await {
            Ok(r) => r,
            Err(e) => {
                b.fail(&msg, format!("cannot sign for the Mandate gateway: {e}"))
                    .await;
                continue;
            }
        };
        let b2 = Arc::clone(&b);
        if method.as_deref() == Some("initialize") {
            // Its answer carries the session every later message needs.
            b2.post(msg, request).await;
        } else {
            in_flight.spawn(async move { b2.post(msg, request).await });
        }
        if method.as_deref() == Some("notifications/initialized") && listener.is_none() {
            let b3 = Arc::clone(&b);
            listener = Some(tokio::spawn(async move { b3.listen().await }));
        }
    }
    if input_ended {
        tokio::select! {
            () = async { while in_flight.join_next().await.is_some() {} } => {}
            () = &mut stop => {}
        }
    }
    in_flight.abort_all();
    if let Some(l) = listener {
        l.abort();
    }
    // The client is done: end the session, keep a refreshed credential.
    let sid = b.session.lock().ok().and_then(|s| s.clone());
    let mut agent = b.agent.lock().await;
    if let Some(sid) = sid {
        let _ = agent
            .send_signed_with("DELETE", &b.url, None, None, &[("mcp-session-id", &sid)])
            .await;
    }
    if agent.credential() != before {
        crate::commands::write_state(state, &agent.save()?, false)?;
    }
    drop(agent);
    drop(b);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    Ok(())
}

/// Standard input, line by line, read on a thread of its own: a blocking
/// read cannot be cancelled, and a signal must not wait for the next line
/// (nor the runtime's shutdown for a read that never ends).
fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
    use std::io::BufRead as _;
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

impl Bridge {
    async fn say(&self, v: Value) {
        let _ = self.out.send(v.to_string().into_bytes()).await;
    }

    /// Answers a request of the client that could not be relayed.
    async fn fail(&self, msg: &Value, message: String) {
        if let (Some(id), Some(_)) = (msg.get("id"), msg.get("method")) {
            self.say(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": message}}),
            )
            .await;
        }
    }

    /// A request to the gateway, signed with the mission key (and covering
    /// the session id once there is one); the agent is held only to sign.
    async fn sign(
        &self,
        method: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::RequestBuilder, mandate_client::ClientError> {
        let sid = self.session.lock().ok().and_then(|s| s.clone());
        let extra: Vec<(&str, &str)> = sid
            .as_deref()
            .map(|s| vec![("mcp-session-id", s)])
            .unwrap_or_default();
        self.agent
            .lock()
            .await
            .signed_request(
                method,
                &self.url,
                body.map(|b| ("application/json", b)),
                None,
                &extra,
            )
            .await
    }

    async fn post(&self, msg: Value, request: reqwest::RequestBuilder) {
        let resp = match request
            .header("accept", "application/json, text/event-stream")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return self.fail(&msg, format!("the Mandate gateway: {e}")).await,
        };
        if resp.status() == reqwest::StatusCode::NOT_FOUND
            && let Ok(mut s) = self.session.lock()
        {
            // The session is gone (ended, or its mission): the client must
            // initialize again.
            *s = None;
        }
        if let Some(sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            && let Ok(mut s) = self.session.lock()
        {
            *s = Some(sid.to_owned());
        }
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return;
        }
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if ctype.starts_with("text/event-stream") {
            return self.relay(resp).await;
        }
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<Value>(&text) {
            // A JSON-RPC message (an answer, or the gateway's JSON-RPC error).
            Ok(v) if v.get("jsonrpc").is_some() && v.get("id").is_some_and(|i| !i.is_null()) => {
                self.say(v).await;
            }
            // The gateway's error for the message as a whole: for its id.
            Ok(v) if v.get("jsonrpc").is_some() => {
                let why = v["error"]["message"]
                    .as_str()
                    .unwrap_or("refused")
                    .to_owned();
                self.fail(&msg, format!("the Mandate gateway: {why}")).await;
            }
            // A problem document (e.g. a refused signature).
            Ok(v) => {
                let why = format!(
                    "the Mandate gateway refused the request ({} {}): {}",
                    status.as_u16(),
                    v["code"].as_str().unwrap_or("error"),
                    v["detail"].as_str().unwrap_or_default()
                );
                self.fail(&msg, why).await;
            }
            Err(_) => {
                self.fail(
                    &msg,
                    format!("the Mandate gateway answered HTTP {}", status.as_u16()),
                )
                .await;
            }
        }
    }

    /// Relays an event stream, message by message, as it comes.
    async fn relay(&self, mut resp: reqwest::Response) {
        let mut decoder = SseDecoder::new(LIMIT);
        while let Ok(Some(chunk)) = resp.chunk().await {
            let Ok(events) = decoder.feed(&chunk) else {
                return;
            };
            for data in events {
                // Re-serialised: one message, one line.
                if let Ok(v) = serde_json::from_slice::<Value>(&data) {
                    let _ = self.out.send(v.to_string().into_bytes()).await;
                }
            }
        }
    }

    /// What the server sends unasked (the session's `GET` stream).
    async fn listen(&self) {
        let Ok(request) = self.sign("GET", None).await else {
            return;
        };
        if let Ok(resp) = request.header("accept", "text/event-stream").send().await
            && resp.status().is_success()
        {
            self.relay(resp).await;
        }
    }
}
