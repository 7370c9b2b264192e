//! How the MCP gateway reaches an upstream server: a local process over
//! stdio (launched, supervised and restarted by the gateway), or a remote
//! one over streamable HTTP. Both take JSON-RPC messages on a channel and
//! report what the server says as [`UpEvent`]s.
//!
//! Nothing of the agent's request reaches the upstream besides the JSON-RPC
//! message itself: no header, no credential (MCP forbids token
//! passthrough). A remote server gets, at most, a token minted for it, and
//! the headers its revision asks for, written by the gateway from the
//! message it forwards (for 2026-07-28: `MCP-Protocol-Version`,
//! `Mcp-Method`, `Mcp-Name` and the `Mcp-Param-*` its tools mirror).
//! Nothing of a remote server's HTTP answer reaches the agent besides its
//! JSON-RPC messages: no header, and an HTTP error status becomes a
//! JSON-RPC error naming only the status, unless its body is the JSON-RPC
//! error answering that request. So the HTTP gateway's header
//! policy (`header_policy`, ADR 0014) has nothing to act on here.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::mcp_servers::{McpServer, Transport};

/// What the upstream says.
#[derive(Debug)]
pub(crate) enum UpEvent {
    /// A JSON-RPC message from the server.
    Message(Value),
    /// The local server stopped and was started again (the reason); what
    /// was in flight is lost.
    Restarted(String),
    /// The server is gone for good (the reason); the session ends.
    Gone(String),
}

/// Mints the bearer token for a remote server (`token_exchange`), if any.
pub(crate) type Bearer = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Ids of the requests the gateway makes itself (a restarted server's
/// `initialize`). Client requests are renumbered with integers, so these
/// strings never collide with them.
const OWN_ID_PREFIX: &str = "mandate-gateway-";

/// Restarts allowed within [`RESTART_WINDOW`] before the session is given up.
const MAX_RESTARTS: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Starts the upstream of one session. Messages sent on the returned
/// channel go to the server; `closed` (set to true) stops it (the process
/// is killed).
pub(crate) fn spawn(
    server: Arc<McpServer>,
    session: String,
    events: mpsc::Sender<UpEvent>,
    closed: watch::Receiver<bool>,
    bearer: Option<Bearer>,
) -> mpsc::Sender<Value> {
    let (tx, rx) = mpsc::channel(64);
    match server.transport() {
        Transport::Stdio { command, args } => {
            tokio::spawn(run_stdio(
                server, session, command, args, rx, events, closed,
            ));
        }
        Transport::Http { url } => {
            tokio::spawn(run_http(server, url, rx, events, closed, bearer));
        }
    }
    tx
}

fn own_request(v: &Value) -> bool {
    v.get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| id.starts_with(OWN_ID_PREFIX))
}

/// Reads one line of at most `limit` bytes; `None` at the end.
async fn read_line_limited<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let n = (&mut *r).take(cap).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the server wrote a message larger than {limit} bytes"),
        ));
    }
    Ok(Some(buf))
}

/// A process of the server: in its own process group (so the whole tree
/// can be stopped), in an empty working directory of its own, with an
/// environment reduced to `PATH`, `LANG`, `HOME` (that directory) and what
/// it was given, under the configured uid/gid if any.
fn start_process(
    server: &McpServer,
    command: &str,
    args: &[String],
    workdir: &std::path::Path,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(args)
        .env_clear()
        .current_dir(workdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for k in ["PATH", "LANG"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("HOME", workdir);
    cmd.envs(&server.config.env);
    if let Some(gid) = server.config.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = server.config.uid {
        cmd.uid(uid);
    }
    cmd.spawn()
}

/// Stops a server process and everything it started (its process group).
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill().await;
}

/// What the writer of one process hands back when it stops: the channel
/// (for the next process) and the client's `initialize` (to replay).
struct Writer {
    rx: mpsc::Receiver<Value>,
    init: Option<Value>,
    /// `None`: the session ended (the channel closed).
    error: Option<String>,
}

/// Writes `first` (a restarted server's `initialize` replay), then the
/// session's messages, to one process, until a write fails, the session
/// ends, or `stop` fires (also in the middle of a write the process does
/// not read).
async fn write_loop(
    mut rx: mpsc::Receiver<Value>,
    mut init: Option<Value>,
    first: Vec<Value>,
    mut stdin: tokio::process::ChildStdin,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Writer {
    let mut queue: VecDeque<Value> = first.into();
    loop {
        let m = match queue.pop_front() {
            Some(m) => Some(m),
            None => tokio::select! {
                m = rx.recv() => m,
                _ = &mut stop => return Writer { rx, init, error: Some("stopped".into()) },
            },
        };
        let Some(m) = m else {
            return Writer {
                rx,
                init,
                error: None,
            };
        };
        if init.is_none() && m.get("method").and_then(Value::as_str) == Some("initialize") {
            init = Some(m.clone());
        }
        let written = tokio::select! {
            r = write_message(&mut stdin, &m) => r,
            _ = &mut stop => return Writer { rx, init, error: Some("stopped".into()) },
        };
        if let Err(e) = written {
            return Writer {
                rx,
                init,
                error: Some(format!("cannot write to the server: {e}")),
            };
        }
    }
}

/// Answers, as the server would have, every request still queued for a
/// server that stopped: it was never sent, and must not be sent to the
/// next process after its caller was told it failed.
async fn discard_queued(rx: &mut mpsc::Receiver<Value>, events: &mpsc::Sender<UpEvent>) {
    while let Ok(m) = rx.try_recv() {
        if let (Some(id), Some(_)) = (m.get("id"), m.get("method")) {
            let _ = events
                .send(UpEvent::Message(json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {"code": -32603, "message": "the MCP server stopped before this request was sent; retry"},
                })))
                .await;
        }
    }
}

async fn run_stdio(
    server: Arc<McpServer>,
    session: String,
    command: String,
    args: Vec<String>,
    rx: mpsc::Receiver<Value>,
    events: mpsc::Sender<UpEvent>,
    mut closed: watch::Receiver<bool>,
) {
    let limit = server.max_message_bytes();
    let Ok(workdir) = tempfile::Builder::new().prefix("mandate-mcp-").tempdir() else {
        let _ = events
            .send(UpEvent::Gone(
                "cannot make the server's working directory".into(),
            ))
            .await;
        return;
    };
    // A server run as another user must be able to enter its directory.
    if (server.config.uid.is_some() || server.config.gid.is_some())
        && let Err(e) =
            std::os::unix::fs::chown(workdir.path(), server.config.uid, server.config.gid)
    {
        let _ = events
            .send(UpEvent::Gone(format!(
                "cannot give the server's working directory to its user: {e}"
            )))
            .await;
        return;
    }
    let mut rx = Some(rx);
    // The client's `initialize`, replayed to a restarted server.
    let mut init: Option<Value> = None;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut generation = 0u32;
    loop {
        let Some(channel) = rx.take() else { return };
        let mut child = match start_process(&server, &command, &args, workdir.path()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(server = server.name(), error = %e, "cannot start the MCP server");
                let _ = events
                    .send(UpEvent::Gone(format!(
                        "the server could not be started: {e}"
                    )))
                    .await;
                return;
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            stop(&mut child).await;
            let _ = events
                .send(UpEvent::Gone(
                    "the server's pipes could not be opened".into(),
                ))
                .await;
            return;
        };
        // What the server writes: its messages to the session; its log
        // lines to ours (never to the agent).
        let reader_events = events.clone();
        let mut reader = tokio::spawn(async move {
            let mut out = BufReader::new(stdout);
            loop {
                match read_line_limited(&mut out, limit).await {
                    Ok(None) => return "the server closed its output".to_owned(),
                    Err(e) => return e.to_string(),
                    Ok(Some(line)) if line.iter().all(u8::is_ascii_whitespace) => {}
                    Ok(Some(line)) => match serde_json::from_slice::<Value>(&line) {
                        Ok(v) if own_request(&v) => {}
                        Ok(v) => {
                            if reader_events.send(UpEvent::Message(v)).await.is_err() {
                                return "the session ended".to_owned();
                            }
                        }
                        Err(_) => {
                            tracing::warn!("the MCP server wrote a line that is not JSON; ignored");
                        }
                    },
                }
            }
        });
        let name = server.name().to_owned();
        let sid = session.clone();
        tokio::spawn(async move {
            let mut err = BufReader::new(stderr);
            loop {
                match read_line_limited(&mut err, 64 * 1024).await {
                    Ok(Some(line)) => {
                        tracing::debug!(server = %name, session = %sid, "stderr: {}", String::from_utf8_lossy(&line));
                    }
                    // A line too long is skipped; the pipe stays drained.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
        let mut first = Vec::new();
        if generation > 0
            && let Some(i) = &init
        {
            let mut again = i.clone();
            again["id"] = json!(format!("{OWN_ID_PREFIX}init-{generation}"));
            first.push(again);
            first.push(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let mut writer = tokio::spawn(write_loop(channel, init.take(), first, stdin, stop_rx));
        let (reason, back) = tokio::select! {
            r = &mut reader => {
                let reason = r.unwrap_or_else(|_| "the reader failed".to_owned());
                // The process is gone or going: kill it (a blocked write
                // then fails) and take the channel back.
                stop(&mut child).await;
                let _ = stop_tx.send(());
                let back = match tokio::time::timeout(Duration::from_secs(5), &mut writer).await {
                    Ok(w) => w.ok(),
                    Err(_) => {
                        writer.abort();
                        None
                    }
                };
                (reason, back)
            }
            w = &mut writer => {
                let w = w.ok();
                match w.as_ref().map(|w| w.error.clone()) {
                    Some(Some(e)) => (e, w),
                    Some(None) => {
                        // The session ended.
                        reader.abort();
                        stop(&mut child).await;
                        return;
                    }
                    None => {
                        reader.abort();
                        stop(&mut child).await;
                        let _ = events.send(UpEvent::Gone("the writer failed".into())).await;
                        return;
                    }
                }
            }
            _ = closed.changed() => {
                reader.abort();
                writer.abort();
                stop(&mut child).await;
                return;
            }
        };
        reader.abort();
        stop(&mut child).await;
        let Some(mut back) = back else {
            let _ = events
                .send(UpEvent::Gone(format!(
                    "{reason}; the server could not be stopped cleanly"
                )))
                .await;
            return;
        };
        discard_queued(&mut back.rx, &events).await;
        rx = Some(back.rx);
        init = back.init;
        let status = child
            .wait()
            .await
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        let reason = format!("{reason} ({status})");
        tracing::warn!(server = server.name(), session = %session, %reason, "the MCP server stopped");
        let now = Instant::now();
        restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if restarts.len() >= MAX_RESTARTS {
            let _ = events
                .send(UpEvent::Gone(format!(
                    "the server stopped {} times within {} s; last: {reason}",
                    MAX_RESTARTS + 1,
                    RESTART_WINDOW.as_secs()
                )))
                .await;
            return;
        }
        restarts.push_back(now);
        if events.send(UpEvent::Restarted(reason)).await.is_err() {
            return;
        }
        generation += 1;
        let backoff = Duration::from_millis(100 * (1 << restarts.len()));
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = closed.changed() => return,
        }
    }
}

async fn write_message(stdin: &mut tokio::process::ChildStdin, m: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}

/// What the gateway keeps of a remote server: its session of the session
/// era, if any, and which arguments each of its tools mirrors into
/// `Mcp-Param-*` headers (from its tool listings, for 2026-07-28).
#[derive(Default)]
struct Remote {
    session_id: Option<String>,
    protocol_version: Option<String>,
    mirrors: HashMap<String, Vec<(String, Vec<String>)>>,
}

/// Most tools of a remote server whose mirrored arguments are kept (each
/// at most `mcp_headers::MAX_MIRRORED` of them, bounded in size).
const MAX_TOOLS: usize = 10_000;

/// The longest tool name whose mirrored arguments are kept (MCP's tool
/// names are at most 128 characters).
const MAX_TOOL_NAME: usize = 128;

/// The revision a message to a remote server is of: 2026-07-28 (or a later
/// stateless one) when it carries its own version in `_meta`; the session
/// era otherwise.
fn stateless_version(msg: &Value) -> Option<&str> {
    msg.get("params")?
        .get("_meta")?
        .get("io.modelcontextprotocol/protocolVersion")?
        .as_str()
}

/// What the gateway asked with a message, for reading the answer.
#[derive(Clone, Copy, Default)]
struct Asked {
    /// `initialize`: the answer names the session and the revision.
    init: bool,
    /// `tools/list`: the answer says which arguments the tools mirror.
    tools: bool,
}

async fn run_http(
    server: Arc<McpServer>,
    url: String,
    mut rx: mpsc::Receiver<Value>,
    events: mpsc::Sender<UpEvent>,
    mut closed: watch::Receiver<bool>,
    bearer: Option<Bearer>,
) {
    let Ok(client) = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    else {
        let _ = events
            .send(UpEvent::Gone("cannot build an HTTP client".into()))
            .await;
        return;
    };
    let remote = Arc::new(Mutex::new(Remote::default()));
    let ctx = Arc::new(HttpCtx {
        client,
        url,
        remote,
        events,
        bearer,
        limit: server.max_message_bytes(),
        timeout: server.timeout(),
        stateless_flights: Mutex::new(HashMap::new()),
    });
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = closed.changed() => None,
        };
        let Some(msg) = msg else { break };
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        if method.as_deref() == Some("initialize") {
            // Its answer carries the session id every later request needs.
            ctx.post(msg).await;
        } else if method.as_deref() == Some("notifications/cancelled")
            && let Some(flight) = ctx.take_stateless_flight(&msg["params"]["requestId"])
        {
            // 2026-07-28 has no such notification: a request is cancelled
            // by closing its stream.
            flight.abort();
        } else if stateless_version(&msg).is_some()
            && let Some(id) = msg.get("id").map(Value::to_string)
        {
            // Held while the request starts, so that it cannot finish (and
            // forget itself) before it is remembered.
            let mut flights = ctx
                .stateless_flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let c = Arc::clone(&ctx);
            let key = id.clone();
            let flight = tokio::spawn(async move {
                c.post(msg).await;
                c.stateless_flights
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&key);
            });
            flights.insert(id, flight.abort_handle());
        } else {
            let c = Arc::clone(&ctx);
            tokio::spawn(async move { c.post(msg).await });
        }
        if method.as_deref() == Some("notifications/initialized") && listener.is_none() {
            let c = Arc::clone(&ctx);
            listener = Some(tokio::spawn(async move { c.listen().await }));
        }
    }
    if let Some(l) = listener {
        l.abort();
    }
    for (_, flight) in ctx
        .stateless_flights
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .drain()
    {
        flight.abort();
    }
    // End the remote session.
    let sid = ctx.remote.lock().ok().and_then(|r| r.session_id.clone());
    if let Some(sid) = sid
        && let Ok(req) = ctx.request(reqwest::Method::DELETE)
    {
        let _ = req.header("mcp-session-id", sid).send().await;
    }
}

struct HttpCtx {
    client: reqwest::Client,
    url: String,
    remote: Arc<Mutex<Remote>>,
    events: mpsc::Sender<UpEvent>,
    bearer: Option<Bearer>,
    limit: usize,
    timeout: Duration,
    /// The 2026-07-28 requests in flight, by JSON-RPC id: cancelling one
    /// closes its stream.
    stateless_flights: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl HttpCtx {
    fn take_stateless_flight(&self, id: &Value) -> Option<tokio::task::AbortHandle> {
        self.stateless_flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id.to_string())
    }

    /// A request to the server with the headers it is owed (its session,
    /// its protocol revision, the token minted for it), and nothing of the
    /// agent's. `Err` if it is owed a token that cannot be minted: then
    /// nothing is sent.
    fn request(&self, method: reqwest::Method) -> Result<reqwest::RequestBuilder, ()> {
        let mut b = self.token(self.client.request(method, &self.url))?;
        if let Ok(r) = self.remote.lock() {
            if let Some(sid) = &r.session_id {
                b = b.header("mcp-session-id", sid);
            }
            if let Some(v) = &r.protocol_version {
                b = b.header("mcp-protocol-version", v);
            }
        }
        Ok(b)
    }

    fn token(&self, b: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, ()> {
        match &self.bearer {
            Some(mint) => Ok(b.bearer_auth(mint().ok_or(())?)),
            None => Ok(b),
        }
    }

    /// A `POST` of a 2026-07-28 message: no session; the headers that
    /// revision asks a client for, from the message itself — its version,
    /// its method, the name it calls, and each argument the tool mirrors
    /// (as the server's listing said). `Err` (why) if they cannot be
    /// written, or no token can be minted: then nothing is sent.
    fn stateless_post(
        &self,
        msg: &Value,
        version: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        use crate::mcp_headers::{encode, param_text};
        let no_token = || "no token could be minted for the MCP server".to_owned();
        let mut b = self
            .token(self.client.post(&self.url))
            .map_err(|()| no_token())?;
        let mut headers = reqwest::header::HeaderMap::new();
        let mut put = |name: &str, value: String| -> Result<(), String> {
            let n = reqwest::header::HeaderName::from_bytes(name.as_bytes());
            let v = reqwest::header::HeaderValue::from_str(&value);
            match (n, v) {
                (Ok(n), Ok(v)) => {
                    headers.insert(n, v);
                    Ok(())
                }
                _ => Err(format!("the header `{name}` cannot be written")),
            }
        };
        put("mcp-protocol-version", encode(version))?;
        if let Some(method) = msg.get("method").and_then(Value::as_str) {
            put("mcp-method", encode(method))?;
            let params = &msg["params"];
            let named = match method {
                "tools/call" | "prompts/get" => params["name"].as_str(),
                "resources/read" => params["uri"].as_str(),
                _ => None,
            };
            if let Some(name) = named {
                put("mcp-name", encode(name))?;
            }
            if method == "tools/call" {
                let mirrored = named.and_then(|t| {
                    self.remote
                        .lock()
                        .ok()
                        .and_then(|r| r.mirrors.get(t).cloned())
                });
                for (header, path) in mirrored.unwrap_or_default() {
                    let value = path
                        .iter()
                        .try_fold(&params["arguments"], |v, k| v.get(k))
                        .and_then(param_text);
                    if let Some(value) = value {
                        put(&format!("mcp-param-{header}"), encode(&value))?;
                    }
                }
            }
        }
        b = b.headers(headers);
        Ok(b)
    }

    async fn emit(&self, v: Value) {
        let _ = self.events.send(UpEvent::Message(v)).await;
    }

    /// Answers a request that the server could not answer.
    async fn fail(&self, msg: &Value, detail: String) {
        if let (Some(id), Some(_)) = (msg.get("id"), msg.get("method")) {
            self.emit(json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32603, "message": detail},
            }))
            .await;
        }
    }

    async fn post(&self, msg: Value) {
        let method = msg.get("method").and_then(Value::as_str);
        let asked = Asked {
            init: method == Some("initialize"),
            tools: method == Some("tools/list"),
        };
        let is_init = asked.init;
        let req = match stateless_version(&msg) {
            Some(version) => self.stateless_post(&msg, version),
            None => self
                .request(reqwest::Method::POST)
                .map_err(|()| "no token could be minted for the MCP server".to_owned()),
        };
        let req = match req {
            Ok(r) => r,
            Err(detail) => return self.fail(&msg, detail).await,
        };
        let resp = req
            .header("accept", "application/json, text/event-stream")
            .timeout(self.timeout)
            .json(&msg)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the remote MCP server cannot be reached");
                return self
                    .fail(&msg, "the MCP server cannot be reached".into())
                    .await;
            }
        };
        if is_init
            && let Some(sid) = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            && let Ok(mut r) = self.remote.lock()
        {
            r.session_id = Some(sid.to_owned());
        }
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return;
        }
        if !status.is_success() {
            // A JSON-RPC error answering this very request is passed on as
            // it is (2026-07-28 maps its errors to HTTP statuses); anything
            // else is named by its status alone.
            let id = msg.get("id").filter(|_| msg.get("method").is_some());
            if let Some(id) = id
                && let Some(body) = read_limited(resp, self.limit).await
                && let Ok(answer) = serde_json::from_slice::<Value>(&body)
                && answer.get("id") == Some(id)
                && answer.get("error").is_some_and(Value::is_object)
                && answer.get("result").is_none()
            {
                return self.emit(answer).await;
            }
            return self
                .fail(
                    &msg,
                    format!("the MCP server answered HTTP {}", status.as_u16()),
                )
                .await;
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if sse {
            self.read_events(resp, asked).await;
        } else {
            match read_limited(resp, self.limit).await {
                Some(body) => match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Array(all)) => {
                        for v in all {
                            self.message(v, asked).await;
                        }
                    }
                    Ok(v) => self.message(v, asked).await,
                    Err(_) => {
                        self.fail(&msg, "the MCP server answered with invalid JSON".into())
                            .await;
                    }
                },
                None => {
                    self.fail(&msg, "the MCP server's answer is too large".into())
                        .await;
                }
            }
        }
    }

    async fn message(&self, v: Value, asked: Asked) {
        if asked.init {
            self.negotiated(&v);
        }
        if asked.tools {
            self.learn_mirrors(&v);
        }
        self.emit(v).await;
    }

    /// A tool listing: which arguments of each tool are mirrored into
    /// `Mcp-Param-*` headers on a call (2026-07-28).
    fn learn_mirrors(&self, v: &Value) {
        let Some(tools) = v
            .get("result")
            .and_then(|r| r.get("tools"))
            .and_then(Value::as_array)
        else {
            return;
        };
        if let Ok(mut r) = self.remote.lock() {
            for t in tools {
                // A tool named longer than MCP allows gets no headers.
                let Some(name) = t
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| n.len() <= MAX_TOOL_NAME)
                else {
                    continue;
                };
                let mirrored = crate::mcp_headers::mirrored_params(t.get("inputSchema"));
                if mirrored.is_empty() {
                    r.mirrors.remove(name);
                } else if r.mirrors.len() < MAX_TOOLS || r.mirrors.contains_key(name) {
                    r.mirrors.insert(name.to_owned(), mirrored);
                }
                // A server that lists more gets no headers for the rest,
                // and refuses their calls: nothing is weakened.
            }
        }
    }

    /// The answer to `initialize`: its protocol revision goes on every
    /// later request.
    fn negotiated(&self, v: &Value) {
        if let Some(version) = v
            .get("result")
            .and_then(|r| r.get("protocolVersion"))
            .and_then(Value::as_str)
            && let Ok(mut r) = self.remote.lock()
        {
            r.protocol_version = Some(version.to_owned());
        }
    }

    /// The server's own stream (`GET`), for what it sends unasked.
    async fn listen(&self) {
        let Ok(req) = self.request(reqwest::Method::GET) else {
            return;
        };
        let resp = req.header("accept", "text/event-stream").send().await;
        if let Ok(r) = resp
            && r.status().is_success()
        {
            self.read_events(r, Asked::default()).await;
        }
    }

    /// Server-sent events: each `data` is one JSON-RPC message.
    async fn read_events(&self, mut resp: reqwest::Response, asked: Asked) {
        let mut decoder = mandate_core::sse::SseDecoder::new(self.limit);
        while let Ok(Some(chunk)) = resp.chunk().await {
            let Ok(events) = decoder.feed(&chunk) else {
                tracing::warn!("an event from the MCP server is too large; stream dropped");
                return;
            };
            for data in events {
                if let Ok(v) = serde_json::from_slice::<Value>(&data) {
                    self.message(v, asked).await;
                }
            }
        }
    }
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return None;
        }
    }
    Some(body)
}
