//! The MCP enforcement gateway: `/mcp/{server}`, streamable HTTP.
//!
//! A JSON-RPC pass-through that inspects what it must: every HTTP request
//! of the agent is RFC 9421-signed and verified as on the HTTP gateway;
//! `tools/call`, `resources/read`, `resources/subscribe` and `prompts/get`
//! are decided by mission policy and recorded before anything is
//! forwarded; `tools/list`, `resources/list` and `prompts/list` answers
//! show only what the mission may use or may ask for. Everything else the
//! protocol carries (notifications, progress, cancellation, and the
//! server's own requests: sampling, elicitation, roots, ping) passes
//! through unchanged. Unknown methods are refused, never forwarded.
//!
//! One MCP session is one upstream session: for a local server, one
//! process, started at `initialize` and killed when the session ends (the
//! agent's `DELETE`, the mission's end, an idle hour, or a server that
//! keeps crashing).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_core::httpsig::RequestParts;
use mandate_core::wire::DecideResponse;
use mandate_core::{Decision, Mission, MissionClaims, MissionId, ReasonCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::decide::{Call, Who, decide_call, preview, record_decision};
use super::gateway::{Verified, header_list, verify};
use crate::mcp::{McpServer, PROTOCOL_VERSIONS};
use crate::mcp_upstream::{self, UpEvent};
use crate::problem::Problem;
use crate::state::AppState;

/// Requests an agent may send; anything else is refused (`-32601`).
const CLIENT_REQUESTS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// Notifications an agent may send.
const CLIENT_NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// A session nobody used for this long is closed.
const IDLE: Duration = Duration::from_secs(3_600);
/// Server messages kept for an agent that has no stream open.
const BACKLOG: usize = 256;
/// Pages of `tools/list` the gateway reads itself, at most.
const MAX_LIST_PAGES: usize = 20;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
/// Mandate's: the call was denied by policy (`data` says why). (-32001 is
/// avoided: MCP SDKs use it for their own timeouts, as -32002 and -32042
/// are MCP's.)
const DENIED: i64 = -32090;
/// Mandate's: the call needs approval (`data` has the request to wait on).
const APPROVAL_REQUIRED: i64 = -32091;
/// Mandate's: the upstream did not answer in time.
const TIMEOUT: i64 = -32092;

/// The open MCP sessions.
#[derive(Debug, Default)]
pub(crate) struct McpSessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl McpSessions {
    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().ok().and_then(|m| m.get(id).cloned())
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().ok().and_then(|mut m| m.remove(id))
    }

    /// Open sessions, and requests in flight through them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let all = self.all();
        let pending = all
            .iter()
            .map(|x| x.st.lock().map_or(0, |st| st.pending.len()))
            .sum();
        (all.len(), pending)
    }

    fn count(&self, server: &str, mission: &MissionId) -> usize {
        self.map.lock().map_or(usize::MAX, |m| {
            m.values()
                .filter(|s| s.server.name() == server && &s.mission == mission)
                .count()
        })
    }
}

/// One request in flight upstream, renumbered.
struct Pending {
    client_id: Value,
    /// Where its answer (and its progress) goes.
    tx: mpsc::Sender<Value>,
    progress: Option<Value>,
}

#[derive(Default)]
struct SessionState {
    next_id: i64,
    pending: HashMap<i64, Pending>,
    /// The agent's id (as JSON text) → the upstream's.
    by_client: HashMap<String, i64>,
    /// The agent's `GET` stream, if open.
    listener: Option<mpsc::Sender<Value>>,
    backlog: VecDeque<Value>,
    /// Every tool name the server listed (shown or not).
    tools: Option<BTreeSet<String>>,
    last_used: Option<Instant>,
}

pub(crate) struct Session {
    id: String,
    server: Arc<McpServer>,
    mission: MissionId,
    jkt: String,
    who: Who,
    out: mpsc::Sender<Value>,
    st: Mutex<SessionState>,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("server", &self.server.name())
            .field("mission", &self.mission)
            .finish_non_exhaustive()
    }
}

fn rpc_error(id: &Value, code: i64, message: impl Into<String>, data: Option<Value>) -> Value {
    let mut e = json!({"code": code, "message": message.into()});
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// A JSON-RPC error as the answer to one HTTP request.
fn rpc_reply(status: StatusCode, id: &Value, code: i64, message: impl Into<String>) -> Response {
    json_response(status, &rpc_error(id, code, message, None))
}

fn key(id: &Value) -> String {
    id.to_string()
}

impl Session {
    fn touch(&self) {
        if let Ok(mut st) = self.st.lock() {
            st.last_used = Some(Instant::now());
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Renumbers a request of the agent and registers where its answer
    /// goes; `None` if that id is already in flight.
    fn register(
        &self,
        client_id: &Value,
        progress: Option<Value>,
    ) -> Option<(i64, mpsc::Receiver<Value>)> {
        let mut st = self.st.lock().ok()?;
        if st.by_client.contains_key(&key(client_id)) {
            return None;
        }
        st.next_id += 1;
        let n = st.next_id;
        let (tx, rx) = mpsc::channel(64);
        st.pending.insert(
            n,
            Pending {
                client_id: client_id.clone(),
                tx,
                progress,
            },
        );
        st.by_client.insert(key(client_id), n);
        Some((n, rx))
    }

    fn forget(&self, n: i64) -> Option<Pending> {
        let mut st = self.st.lock().ok()?;
        let p = st.pending.remove(&n)?;
        st.by_client.remove(&key(&p.client_id));
        Some(p)
    }

    /// Gives up a request: forgotten here, cancelled upstream.
    async fn cancel(&self, n: i64, reason: &str) {
        if self.forget(n).is_some() {
            let _ = self
                .out
                .send(json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": n, "reason": reason},
                }))
                .await;
        }
    }

    /// Answers every request in flight with an error.
    fn fail_pending(&self, message: &str) {
        let pending: Vec<Pending> = match self.st.lock() {
            Ok(mut st) => {
                st.by_client.clear();
                st.pending.drain().map(|(_, p)| p).collect()
            }
            Err(_) => Vec::new(),
        };
        for p in pending {
            let _ =
                p.tx.try_send(rpc_error(&p.client_id, INTERNAL_ERROR, message, None));
        }
    }

    /// A message from the server: an answer to its request, progress to
    /// the request it belongs to, anything else to the agent's stream.
    fn deliver(&self, mut v: Value) {
        let Ok(mut st) = self.st.lock() else { return };
        let is_response = v.get("method").is_none() && v.get("id").is_some();
        if is_response {
            let Some(n) = v.get("id").and_then(Value::as_i64) else {
                return;
            };
            if let Some(p) = st.pending.remove(&n) {
                st.by_client.remove(&key(&p.client_id));
                v["id"] = p.client_id.clone();
                let _ = p.tx.try_send(v);
            }
            return;
        }
        if v.get("method").and_then(Value::as_str) == Some("notifications/progress") {
            let token = v.get("params").and_then(|p| p.get("progressToken"));
            if let Some(p) = st
                .pending
                .values()
                .find(|p| p.progress.is_some() && p.progress.as_ref() == token)
                && p.tx.try_send(v.clone()).is_ok()
            {
                return;
            }
        }
        if let Some(l) = &st.listener {
            if l.try_send(v.clone()).is_ok() {
                return;
            }
            st.listener = None;
        }
        if let Some(p) = st.pending.values().next()
            && p.tx.try_send(v.clone()).is_ok()
        {
            return;
        }
        if st.backlog.len() >= BACKLOG {
            st.backlog.pop_front();
            tracing::warn!(session = %self.id, "MCP backlog full; the oldest server message was dropped");
        }
        st.backlog.push_back(v);
    }

    /// Ends the session: the upstream stops, everything in flight fails.
    fn close(&self) {
        let _ = self.closed.send(true);
        self.fail_pending("the MCP session ended");
        if let Ok(mut st) = self.st.lock() {
            st.listener = None;
        }
    }

    /// A request the gateway makes itself (e.g. the tool list); the answer.
    async fn ask(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, String> {
        let own = json!(format!("mandate-internal-{}", rand_suffix()));
        let (n, mut rx) = self
            .register(&own, None)
            .ok_or_else(|| "cannot register a request".to_owned())?;
        let msg = json!({"jsonrpc": "2.0", "id": n, "method": method, "params": params});
        if self.out.send(msg).await.is_err() {
            self.forget(n);
            return Err("the MCP server is gone".into());
        }
        let answer = tokio::time::timeout(timeout, async {
            while let Some(m) = rx.recv().await {
                if m.get("method").is_none() {
                    return Some(m);
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(m)) => match m.get("result") {
                Some(r) => Ok(r.clone()),
                None => Err(format!("the MCP server refused `{method}`")),
            },
            Ok(None) => Err("the MCP server is gone".into()),
            Err(_) => {
                self.cancel(n, "timeout").await;
                Err(format!("the MCP server did not answer `{method}` in time"))
            }
        }
    }
}

fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `/mcp/{server}`: `POST` a message, `GET` the server's stream, `DELETE`
/// the session.
pub(super) async fn handle(State(s): State<AppState>, req: Request) -> Response {
    match handle_inner(&s, req).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

struct Caller {
    claims: MissionClaims,
    mission: Mission,
}

async fn handle_inner(s: &AppState, req: Request) -> Result<Response, Problem> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let name = path
        .strip_prefix("/mcp/")
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| Problem::not_found("no such MCP server"))?;
    let server = s.0.mcp_servers.get(name).cloned().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown_mcp_server",
            format!("no MCP server `{name}`"),
        )
    })?;
    if parts.uri.query().is_some() {
        return Err(Problem::bad_request(
            "invalid_request",
            "the MCP endpoint takes no query",
        ));
    }
    let method = parts.method.as_str().to_owned();
    if !["GET", "POST", "DELETE"].contains(&method.as_str()) {
        return Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the MCP endpoint takes POST, GET and DELETE",
        ));
    }
    let limit = server.max_message_bytes();
    let body = match tokio::time::timeout(
        Duration::from_secs(30),
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return Ok(rpc_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Value::Null,
                INVALID_REQUEST,
                format!("the message is larger than {limit} bytes"),
            ));
        }
        Err(_) => {
            return Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            ));
        }
    };
    // The signature, the credential and the key, as on the HTTP gateway.
    let headers = header_list(&parts.headers)?;
    let authority = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::bad_request("invalid_request", "no Host header"))?
        .to_owned();
    if parts.headers.get_all("host").iter().count() > 1
        || parts.headers.get_all("content-type").iter().count() > 1
    {
        return Err(Problem::bad_request(
            "invalid_request",
            "more than one Host or Content-Type header",
        ));
    }
    let request = RequestParts {
        method: &method,
        scheme: s.0.issuer.split("://").next().unwrap_or("http"),
        authority: &authority,
        path: &path,
        query: None,
        headers: &headers,
    };
    let caller = match verify(s, &request, &parts.headers, &body).await? {
        Verified::Ok { claims, mission } => Caller {
            claims,
            mission: *mission,
        },
        Verified::Refused { problem, claims } => {
            if let Some(c) = claims {
                refusal(s, &server, None, &c, "-", problem.code, &problem.detail).await?;
            }
            return Err(problem);
        }
    };
    let session_id = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let session = match &session_id {
        None => None,
        Some(id) => {
            // Another mission's session (or another key's) does not exist
            // for this caller.
            let found = s.0.mcp.get(id).filter(|x| {
                x.mission == caller.claims.mission_id
                    && x.jkt == caller.claims.cnf.jkt.to_string()
                    && x.server.name() == server.name()
                    && !x.is_closed()
            });
            match found {
                Some(x) => Some(x),
                None => {
                    return Ok(rpc_reply(
                        StatusCode::NOT_FOUND,
                        &Value::Null,
                        INVALID_REQUEST,
                        "no such MCP session; initialize a new one",
                    ));
                }
            }
        }
    };
    if let Some(x) = &session {
        x.touch();
    }
    match method.as_str() {
        "DELETE" => {
            let Some(x) = session else {
                return Ok(rpc_reply(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    INVALID_REQUEST,
                    "`Mcp-Session-Id` is required",
                ));
            };
            end_session(s, &x, "ended by the agent").await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "GET" => {
            let Some(x) = session else {
                return Ok(rpc_reply(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    INVALID_REQUEST,
                    "`Mcp-Session-Id` is required",
                ));
            };
            listen(&x)
        }
        _ => post(s, &server, session, caller, &body).await,
    }
}

/// The agent's `GET` stream: what the server sends unasked.
fn listen(x: &Arc<Session>) -> Result<Response, Problem> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    {
        let mut st = x.st.lock().map_err(|_| Problem::internal())?;
        if st.listener.as_ref().is_some_and(|l| !l.is_closed()) {
            return Ok(rpc_reply(
                StatusCode::CONFLICT,
                &Value::Null,
                INVALID_REQUEST,
                "this session already has a stream open",
            ));
        }
        while let Some(m) = st.backlog.pop_front() {
            let _ = tx.try_send(m);
        }
        st.listener = Some(tx);
    }
    let mut closed = x.closed.subscribe();
    let (out_tx, out_rx) = mpsc::channel::<Value>(BACKLOG);
    let mut rx = rx;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => if out_tx.send(m).await.is_err() { break },
                    None => break,
                },
                _ = closed.changed() => break,
            }
        }
    });
    Ok(sse(out_rx, None))
}

/// An event stream of JSON-RPC messages.
fn sse(rx: mpsc::Receiver<Value>, session: Option<&str>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let m = rx.recv().await?;
        let event = format!("event: message\ndata: {m}\n\n");
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(event)), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    if let Some(sid) = session.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert("mcp-session-id", sid);
    }
    r
}

async fn post(
    s: &AppState,
    server: &Arc<McpServer>,
    session: Option<Arc<Session>>,
    caller: Caller,
    body: &Bytes,
) -> Result<Response, Problem> {
    let msg: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(rpc_reply(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                PARSE_ERROR,
                format!("not JSON: {e}"),
            ));
        }
    };
    if msg.is_array() {
        return Ok(rpc_reply(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            INVALID_REQUEST,
            "JSON-RPC batches are not accepted; send one message per request",
        ));
    }
    let Some(obj) = msg.as_object() else {
        return Ok(rpc_reply(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            INVALID_REQUEST,
            "a JSON-RPC message is an object",
        ));
    };
    let id = obj.get("id").cloned();
    let error_id = id.clone().unwrap_or(Value::Null);
    let bad = |m: &str| {
        Ok(rpc_reply(
            StatusCode::BAD_REQUEST,
            &error_id,
            INVALID_REQUEST,
            m.to_owned(),
        ))
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return bad("`jsonrpc` must be \"2.0\"");
    }
    if let Some(i) = &id
        && !(i.is_string() || i.is_i64() || i.is_u64())
    {
        return bad("`id` must be a string or an integer");
    }
    let method = match obj.get("method") {
        None => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(_) => return bad("`method` must be a string"),
    };
    match (method, id) {
        // An answer of the agent to a request of the server.
        (None, Some(_)) => {
            if !(obj.contains_key("result") || obj.contains_key("error")) {
                return bad("a response needs `result` or `error`");
            }
            let Some(x) = session else {
                return bad("`Mcp-Session-Id` is required");
            };
            if x.out.send(msg).await.is_err() {
                return Ok(rpc_reply(
                    StatusCode::BAD_GATEWAY,
                    &Value::Null,
                    INTERNAL_ERROR,
                    "the MCP server is gone",
                ));
            }
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (None, None) => bad("neither a request, a notification nor a response"),
        (Some(m), None) => notification(session, &m, msg).await,
        (Some(m), Some(id)) => {
            if !CLIENT_REQUESTS.contains(&m.as_str()) {
                return Ok(rpc_reply(
                    StatusCode::OK,
                    &id,
                    METHOD_NOT_FOUND,
                    format!("`{m}` is not a method the gateway forwards"),
                ));
            }
            if m == "initialize" {
                if session.is_some() {
                    return bad("this session is already initialized");
                }
                return initialize(s, server, &caller, id, msg).await;
            }
            let Some(x) = session else {
                return bad("`Mcp-Session-Id` is required (initialize first)");
            };
            request(s, &x, &caller, id, &m, msg).await
        }
    }
}

async fn notification(
    session: Option<Arc<Session>>,
    method: &str,
    mut msg: Value,
) -> Result<Response, Problem> {
    if !CLIENT_NOTIFICATIONS.contains(&method) {
        return Ok(rpc_reply(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            METHOD_NOT_FOUND,
            format!("`{method}` is not a notification the gateway forwards"),
        ));
    }
    let Some(x) = session else {
        return Ok(rpc_reply(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            INVALID_REQUEST,
            "`Mcp-Session-Id` is required",
        ));
    };
    if method == "notifications/cancelled" {
        // The agent cancels its own request: renumbered, and forgotten here.
        let client_id = msg
            .get("params")
            .and_then(|p| p.get("requestId"))
            .cloned()
            .unwrap_or(Value::Null);
        let n =
            x.st.lock()
                .ok()
                .and_then(|st| st.by_client.get(&key(&client_id)).copied());
        let Some(n) = n else {
            return Ok(StatusCode::ACCEPTED.into_response());
        };
        x.forget(n);
        msg["params"]["requestId"] = json!(n);
    }
    if x.out.send(msg).await.is_err() {
        return Ok(rpc_reply(
            StatusCode::BAD_GATEWAY,
            &Value::Null,
            INTERNAL_ERROR,
            "the MCP server is gone",
        ));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn initialize(
    s: &AppState,
    server: &Arc<McpServer>,
    caller: &Caller,
    id: Value,
    mut msg: Value,
) -> Result<Response, Problem> {
    let mission = &caller.claims.mission_id;
    if s.0.mcp.count(server.name(), mission) >= server.max_sessions_per_mission() {
        return Ok(rpc_reply(
            StatusCode::TOO_MANY_REQUESTS,
            &id,
            INVALID_REQUEST,
            format!(
                "this mission already has {} sessions with `{}`; end one first",
                server.max_sessions_per_mission(),
                server.name()
            ),
        ));
    }
    // A revision the gateway does not know is answered with the latest it
    // does; the agent then accepts it or disconnects (as MCP negotiates).
    let asked = msg
        .get("params")
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if !asked
        .as_deref()
        .is_some_and(|v| PROTOCOL_VERSIONS.contains(&v))
    {
        let latest = PROTOCOL_VERSIONS.last().copied().unwrap_or("2025-06-18");
        if msg.get("params").is_some_and(Value::is_object) {
            msg["params"]["protocolVersion"] = json!(latest);
        } else {
            return Ok(rpc_reply(
                StatusCode::OK,
                &id,
                INVALID_PARAMS,
                "`initialize` needs `params`",
            ));
        }
    }
    let mut sid = [0u8; 24];
    s.0.rng.fill(&mut sid).map_err(|_| Problem::internal())?;
    let sid = mandate_core::s256(&sid);
    let (events_tx, events_rx) = mpsc::channel(256);
    let (closed_tx, closed_rx) = watch::channel(false);
    let bearer = match server.config.auth {
        crate::routes::UpstreamAuth::TokenExchange => {
            let (st, claims, m) = (s.clone(), caller.claims.clone(), caller.mission.clone());
            let aud = server.audience().to_owned();
            let f: mcp_upstream::Bearer =
                Arc::new(move || super::gateway::exchange_token(&st, &aud, &claims, &m).ok());
            Some(f)
        }
        _ => None,
    };
    let out = mcp_upstream::spawn(
        Arc::clone(server),
        sid.clone(),
        events_tx,
        closed_rx,
        bearer,
    );
    let session = Arc::new(Session {
        id: sid.clone(),
        server: Arc::clone(server),
        mission: mission.clone(),
        jkt: caller.claims.cnf.jkt.to_string(),
        who: Who::of(&caller.claims),
        out,
        st: Mutex::new(SessionState::default()),
        closed: closed_tx,
    });
    spawn_router(s.clone(), Arc::downgrade(&session), events_rx);
    let Some((n, mut rx)) = session.register(&id, None) else {
        return Err(Problem::internal());
    };
    msg["id"] = json!(n);
    if session.out.send(msg).await.is_err() {
        session.close();
        return Ok(rpc_reply(
            StatusCode::BAD_GATEWAY,
            &id,
            INTERNAL_ERROR,
            "the MCP server could not be started",
        ));
    }
    let answer = tokio::time::timeout(server.timeout(), async {
        while let Some(m) = rx.recv().await {
            if m.get("method").is_none() {
                return Some(m);
            }
        }
        None
    })
    .await;
    let answer = match answer {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            session.close();
            return Ok(rpc_reply(
                StatusCode::BAD_GATEWAY,
                &id,
                INTERNAL_ERROR,
                "the MCP server did not complete `initialize`",
            ));
        }
    };
    let version = answer
        .get("result")
        .and_then(|r| r.get("protocolVersion"))
        .and_then(Value::as_str);
    if answer.get("result").is_some() && !version.is_some_and(|v| PROTOCOL_VERSIONS.contains(&v)) {
        session.close();
        return Ok(rpc_reply(
            StatusCode::BAD_GATEWAY,
            &id,
            INTERNAL_ERROR,
            format!(
                "the MCP server speaks protocol revision {:?}, which the gateway does not (it speaks {})",
                version.unwrap_or("?"),
                PROTOCOL_VERSIONS.join(", ")
            ),
        ));
    }
    if answer.get("result").is_none() {
        session.close();
        return Ok(json_response(StatusCode::OK, &answer));
    }
    let version = version.unwrap_or_default().to_owned();
    if let Ok(mut m) = s.0.mcp.map.lock() {
        m.insert(sid.clone(), Arc::clone(&session));
    }
    session.touch();
    s.audit(
        "mcp.session.opened",
        json!({
            "server": server.name(),
            "session": sid,
            "protocol_version": version,
            "principal": caller.claims.sub.as_str(),
            "agent": caller.claims.act.sub.as_str(),
            "mission": mission.as_str(),
            "jkt": caller.claims.cnf.jkt.to_string(),
        }),
    )
    .await?;
    let mut r = json_response(StatusCode::OK, &answer);
    if let Ok(v) = HeaderValue::from_str(&sid) {
        r.headers_mut().insert("mcp-session-id", v);
    }
    Ok(r)
}

/// Carries what the upstream says to the session.
fn spawn_router(
    s: AppState,
    session: std::sync::Weak<Session>,
    mut events: mpsc::Receiver<UpEvent>,
) {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let Some(x) = session.upgrade() else { return };
            match e {
                UpEvent::Message(v) => x.deliver(v),
                UpEvent::Restarted(reason) => {
                    x.fail_pending("the MCP server stopped and was restarted; retry the request");
                    let _ = s
                        .audit(
                            "mcp.server.restarted",
                            json!({
                                "server": x.server.name(),
                                "session": x.id,
                                "mission": x.mission.as_str(),
                                "reason": reason,
                            }),
                        )
                        .await;
                }
                UpEvent::Gone(reason) => {
                    tracing::error!(server = x.server.name(), session = %x.id, %reason, "MCP server gone; session closed");
                    end_session(&s, &x, &format!("the MCP server is gone: {reason}")).await;
                    return;
                }
            }
        }
    });
}

async fn end_session(s: &AppState, x: &Arc<Session>, reason: &str) {
    x.close();
    if s.0.mcp.remove(&x.id).is_some() {
        let _ = s
            .audit(
                "mcp.session.closed",
                json!({
                    "server": x.server.name(),
                    "session": x.id,
                    "mission": x.mission.as_str(),
                    "reason": reason,
                }),
            )
            .await;
    }
}

/// Closes the sessions of missions that ended and the idle ones.
pub(crate) fn spawn_reaper(s: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for x in s.0.mcp.all() {
                let now = s.0.clock.now();
                let active = match s.0.store.mission(&x.mission).await {
                    Ok(Some(m)) => m.check_active(now).is_ok(),
                    Ok(None) => false,
                    Err(_) => continue,
                };
                let idle =
                    x.st.lock()
                        .ok()
                        .and_then(|st| st.last_used)
                        .is_some_and(|t| t.elapsed() > IDLE);
                if !active {
                    end_session(&s, &x, "the mission ended").await;
                } else if idle {
                    end_session(&s, &x, "idle").await;
                }
            }
        }
    });
}

/// A refusal before any decision, recorded (the caller holds the key).
async fn refusal(
    s: &AppState,
    server: &McpServer,
    session: Option<&str>,
    claims: &MissionClaims,
    method: &str,
    code: &str,
    detail: &str,
) -> Result<(), Problem> {
    let resp = DecideResponse {
        decision: Decision::Deny,
        code: code.to_owned(),
        policies: Vec::new(),
        grant: None,
        approval_id: None,
        approval_url: None,
        mission_id: Some(claims.mission_id.to_string()),
        budget_used: None,
        detail: detail.to_owned(),
    };
    let resource = mandate_core::ResourceRef {
        kind: mandate_core::ResourceKind::Tool {
            server: server.name().to_owned(),
            tool: "-".to_owned(),
        },
        tags: std::collections::BTreeMap::new(),
    };
    let mut extra = serde_json::Map::new();
    extra.insert("enforcement_point".into(), "mcp".into());
    extra.insert("mcp_server".into(), server.name().into());
    extra.insert("mcp_method".into(), method.into());
    if let Some(sid) = session {
        extra.insert("mcp_session".into(), sid.into());
    }
    record_decision(
        s,
        "-",
        &resource,
        &serde_json::Map::new(),
        &resp,
        Some(&Who::of(claims)),
        extra,
    )
    .await?;
    Ok(())
}

/// The tools the server lists (all pages), read by the gateway itself.
async fn known_tools(x: &Session) -> Result<BTreeSet<String>, String> {
    if let Some(t) = x.st.lock().ok().and_then(|st| st.tools.clone()) {
        return Ok(t);
    }
    let mut names = BTreeSet::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_LIST_PAGES {
        let params = cursor
            .as_ref()
            .map_or_else(|| json!({}), |c| json!({ "cursor": c }));
        let r = x.ask("tools/list", params, x.server.timeout()).await?;
        for t in r
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = t.get("name").and_then(Value::as_str) {
                names.insert(n.to_owned());
            }
        }
        cursor = r.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    if let Ok(mut st) = x.st.lock() {
        st.tools = Some(names.clone());
    }
    Ok(names)
}

async fn request(
    s: &AppState,
    x: &Arc<Session>,
    caller: &Caller,
    id: Value,
    method: &str,
    mut msg: Value,
) -> Result<Response, Problem> {
    let gated = matches!(
        method,
        "tools/call" | "resources/read" | "resources/subscribe" | "prompts/get"
    );
    if gated {
        let as_method = if method == "resources/subscribe" {
            "resources/read"
        } else {
            method
        };
        let mapped = match x.server.map(as_method, msg.get("params")) {
            Ok(m) => m,
            Err(e) => {
                refusal(
                    s,
                    &x.server,
                    Some(&x.id),
                    &caller.claims,
                    method,
                    "invalid_params",
                    &e.0,
                )
                .await?;
                return Ok(rpc_reply(StatusCode::OK, &id, INVALID_PARAMS, e.0));
            }
        };
        if method == "tools/call" {
            let tool = msg["params"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let known = match known_tools(x).await {
                Ok(k) => k,
                Err(e) => {
                    return Ok(rpc_reply(StatusCode::OK, &id, INTERNAL_ERROR, e));
                }
            };
            if !known.contains(&tool) {
                let detail = format!("the server `{}` lists no tool `{tool}`", x.server.name());
                refusal(
                    s,
                    &x.server,
                    Some(&x.id),
                    &caller.claims,
                    method,
                    "unknown_tool",
                    &detail,
                )
                .await?;
                return Ok(rpc_reply(StatusCode::OK, &id, INVALID_PARAMS, detail));
            }
        }
        let call = Call {
            action: &mapped.action,
            resource: &mapped.resource,
            context: &mapped.context,
            justification: String::new(),
            required: x.server.required_trust(),
        };
        let (resp, permit) = decide_call(s, "mcp", &caller.mission, &call).await?;
        let mut extra = serde_json::Map::new();
        extra.insert("enforcement_point".into(), "mcp".into());
        extra.insert("mcp_server".into(), x.server.name().into());
        extra.insert("mcp_session".into(), x.id.clone().into());
        extra.insert("mcp_method".into(), method.into());
        extra.insert(
            "arguments_digest".into(),
            mapped.arguments_s256.clone().into(),
        );
        if x.server.config.record_arguments {
            extra.insert(
                "arguments".into(),
                msg["params"].get("arguments").cloned().unwrap_or(json!({})),
            );
        }
        // INVARIANT: the decision is durable before anything is forwarded
        // or answered.
        record_decision(
            s,
            &mapped.action,
            &mapped.resource,
            &mapped.context,
            &resp,
            Some(&x.who),
            extra,
        )
        .await?;
        if permit.is_none() {
            return Ok(json_response(StatusCode::OK, &refused(&id, method, &resp)));
        }
    }
    let progress = msg
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .cloned();
    let Some((n, mut rx)) = x.register(&id, progress) else {
        return Ok(rpc_reply(
            StatusCode::OK,
            &id,
            INVALID_REQUEST,
            "a request with this id is already in flight",
        ));
    };
    msg["id"] = json!(n);
    if x.out.send(msg).await.is_err() {
        x.forget(n);
        return Ok(rpc_reply(
            StatusCode::BAD_GATEWAY,
            &id,
            INTERNAL_ERROR,
            "the MCP server is gone",
        ));
    }
    // The answer streams back, with the progress and requests of the server
    // that belong to it. A client that goes away cancels the request
    // upstream; nothing stays pending.
    let (out_tx, out_rx) = mpsc::channel::<Value>(64);
    let (s2, x2, m2, method) = (
        s.clone(),
        Arc::clone(x),
        caller.mission.clone(),
        method.to_owned(),
    );
    let deadline = tokio::time::Instant::now() + x.server.timeout();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    let last = m.get("method").is_none();
                    let m = if last { filter_listing(&s2, &x2, &m2, &method, m).await } else { m };
                    if out_tx.send(m).await.is_err() {
                        x2.cancel(n, "the client went away").await;
                        break;
                    }
                    if last { break }
                }
                () = tokio::time::sleep_until(deadline) => {
                    x2.cancel(n, "timeout").await;
                    let _ = out_tx.send(rpc_error(&id, TIMEOUT, "the MCP server did not answer in time", None)).await;
                    break;
                }
                () = out_tx.closed() => {
                    x2.cancel(n, "the client went away").await;
                    break;
                }
            }
        }
    });
    Ok(sse(out_rx, None))
}

/// The answer to a call that was not allowed: for `tools/call` a tool
/// result with `isError` (the agent's model reads why); otherwise a
/// JSON-RPC error. Both carry the decision in `data`/`_meta`.
fn refused(id: &Value, method: &str, resp: &DecideResponse) -> Value {
    let escalated = resp.decision == Decision::Escalate && resp.approval_id.is_some();
    let info = json!({
        "decision": resp.decision.as_str(),
        "code": if escalated { "approval_required" } else { resp.code.as_str() },
        "reason": resp.code,
        "policies": resp.policies,
        "approval_id": resp.approval_id,
        "approval_url": resp.approval_url,
    });
    let text = if escalated {
        format!(
            "Mandate: this call needs approval ({}). Approval request {} is pending; poll {} and retry the same call once it is approved.",
            resp.code,
            resp.approval_id.as_deref().unwrap_or("?"),
            resp.approval_url.as_deref().unwrap_or("?"),
        )
    } else {
        let why = if resp.detail.is_empty() {
            resp.code.clone()
        } else {
            format!("{}: {}", resp.code, resp.detail)
        };
        if resp.policies.is_empty() {
            format!("Mandate denied this call ({why}).")
        } else {
            format!(
                "Mandate denied this call ({why}; policies {}).",
                resp.policies.join(", ")
            )
        }
    };
    if method == "tools/call" {
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {
                "content": [{"type": "text", "text": text}],
                "isError": true,
                "_meta": {"io.mandate/decision": info},
            }
        })
    } else {
        let code = if escalated { APPROVAL_REQUIRED } else { DENIED };
        rpc_error(id, code, text, Some(info))
    }
}

/// A listed item's name, and the action and resource it is decided as;
/// `None` for an item whose name is not acceptable.
type ItemKey = fn(&McpServer, &Value) -> Option<(String, String, mandate_core::ResourceRef)>;

/// What a listing shows: what the mission may use (`allowed`) or may ask
/// for (`approval_required`); a boundary or out-of-scope item is hidden. An
/// item whose decision depends on the call's arguments shows as
/// `decided_per_call`. Every call is decided on its own regardless.
async fn filter_listing(
    s: &AppState,
    x: &Arc<Session>,
    mission: &Mission,
    method: &str,
    mut answer: Value,
) -> Value {
    let (field, key_of): (&str, ItemKey) = match method {
        "tools/list" => ("tools", |srv, item| {
            let n = item.get("name")?.as_str()?;
            crate::mcp::valid_name(n).then(|| {
                let (a, r) = srv.tool_resource(n);
                (n.to_owned(), a, r)
            })
        }),
        "prompts/list" => ("prompts", |srv, item| {
            let n = item.get("name")?.as_str()?;
            crate::mcp::valid_name(n).then(|| {
                let (a, r) = srv.prompt_ref(n);
                (n.to_owned(), a, r)
            })
        }),
        "resources/list" => ("resources", |srv, item| {
            let u = item.get("uri")?.as_str()?;
            crate::mcp::valid_uri(u).then(|| {
                let (a, r) = srv.resource_ref(u);
                (u.to_owned(), a, r)
            })
        }),
        _ => return answer,
    };
    let Some(items) = answer
        .get_mut("result")
        .and_then(|r| r.get_mut(field))
        .and_then(Value::as_array_mut)
    else {
        return answer;
    };
    let all: Vec<Value> = std::mem::take(items);
    let keyed: Vec<Option<(String, String, mandate_core::ResourceRef)>> =
        all.iter().map(|i| key_of(&x.server, i)).collect();
    if method == "tools/list"
        && let Ok(mut st) = x.st.lock()
    {
        let known = st.tools.get_or_insert_with(BTreeSet::new);
        for (n, _, _) in keyed.iter().flatten() {
            known.insert(n.clone());
        }
    }
    let asks: Vec<(String, mandate_core::ResourceRef)> = keyed
        .iter()
        .flatten()
        .map(|(_, a, r)| (a.clone(), r.clone()))
        .collect();
    let outcomes = match preview(s, mission, x.server.required_trust(), &asks).await {
        Ok(o) => o,
        Err(_) => {
            // Fail closed: nothing is shown.
            return answer;
        }
    };
    let mut outcomes = outcomes.into_iter();
    let (mut shown, mut approval, mut hidden) = (Vec::new(), Vec::new(), Vec::new());
    let mut kept = Vec::new();
    for (item, k) in all.into_iter().zip(keyed) {
        let Some((name, _, _)) = k else {
            hidden.push(json!("(invalid name)"));
            continue;
        };
        let Some(o) = outcomes.next() else { break };
        let access = match (o.decision, o.code.as_str()) {
            (Decision::Allow, _) => "allowed",
            (Decision::Escalate, _) => "approval_required",
            (
                Decision::Deny,
                ReasonCode::BOUNDARY | ReasonCode::OUT_OF_SCOPE | ReasonCode::INSUFFICIENT_TRUST,
            ) => {
                hidden.push(json!(name));
                continue;
            }
            (Decision::Deny, ReasonCode::POLICY_ERROR | ReasonCode::INVALID_REQUEST) => {
                "decided_per_call"
            }
            (Decision::Deny, _) => {
                hidden.push(json!(name));
                continue;
            }
        };
        let mut item = item;
        if let Some(obj) = item.as_object_mut() {
            let meta = obj.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert(
                    "io.mandate/access".into(),
                    json!({ "access": access, "policies": o.policies }),
                );
            }
            if access == "approval_required" {
                let d = obj
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                obj.insert(
                    "description".into(),
                    json!(format!("[Needs approval before each use] {d}")),
                );
                approval.push(json!(name));
            } else {
                shown.push(json!(name));
            }
        }
        kept.push(item);
    }
    if let Some(items) = answer
        .get_mut("result")
        .and_then(|r| r.get_mut(field))
        .and_then(Value::as_array_mut)
    {
        *items = kept;
    }
    let _ = s
        .audit(
            "mcp.listed",
            json!({
                "server": x.server.name(),
                "session": x.id,
                "mission": x.mission.as_str(),
                "method": method,
                "allowed": shown,
                "approval_required": approval,
                "hidden": hidden,
            }),
        )
        .await;
    answer
}
