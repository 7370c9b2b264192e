//! The MCP enforcement gateway: `/mcp/{server}`, streamable HTTP.
//!
//! A JSON-RPC pass-through that inspects what it must: every HTTP request
//! of the agent is RFC 9421-signed and verified as on the HTTP gateway (the
//! signature must also cover `Mcp-Session-Id`), or carries a DPoP proof by
//! the mission key where the server takes one (ADR 0023); `tools/call`,
//! `resources/read`, `resources/subscribe` and `prompts/get` are decided by
//! mission policy and recorded before anything is forwarded, and only with
//! the decision's [`Permit`]; `tools/list`, `resources/list` and
//! `prompts/list` answers show only what the mission may use or may ask
//! for. Notifications, progress and cancellation pass through. The server
//! may ask the agent's client for `ping` and `sampling/createMessage` (and
//! `elicitation/create` where configured); it is not handed the client's
//! roots unless configured (the operator's directory limits stay the
//! operator's). Every other method, either way, is refused, never
//! forwarded.
//!
//! Both generations of MCP are spoken: the session era below, and the
//! stateless 2026-07-28 revision ([`stateless`]), chosen per request.
//!
//! One MCP session is one upstream session: for a local server, one
//! process, started at `initialize` and stopped (with everything it
//! started) when the session ends: the agent's `DELETE`, the mission's end,
//! its principal ending it, the server's idle timeout, a new `initialize`
//! of the same mission at its limit (the session idle longest makes way,
//! ADR 0022), or a server that keeps crashing.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_core::httpsig::RequestParts;
use mandate_core::mcp_message::{ClientMessage, MessageKind, Refusal, parse_client_message};
use mandate_core::wire::DecideResponse;
use mandate_core::{Decision, Mission, MissionClaims, MissionId, ReasonCode};
use mandate_store::MissionSnapshot;
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use mandate_enforce::{Call, Claim, Permit, Who};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::decide::{enforce, preview, record_refusal};

mod stateless;
use super::gateway::{Verified, header_list, verify_mcp};
use crate::mcp_servers::{McpServer, PROTOCOL_VERSIONS};
use crate::mcp_upstream::{self, UpEvent};
use crate::metrics::{Door, Stage, UpstreamError};
use crate::problem::Problem;
use crate::state::AppState;

/// Of the requests an agent may send
/// ([`CLIENT_REQUESTS`](mandate_core::mcp_message::CLIENT_REQUESTS)), the
/// ones decided by policy; they are forwarded only with a [`Permit`].
const GATED: &[&str] = &[
    "tools/call",
    "resources/read",
    "resources/subscribe",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "resources/templates/list",
];

/// A message for the server: a gated call only inside the [`Permit`] its
/// decision gave it.
#[derive(Debug)]
enum Outbound {
    Gated(Permit<Value>),
    Ungated(Value),
}

/// Server messages kept for an agent that has no stream open, by count and
/// by size.
const BACKLOG: usize = 64;
const BACKLOG_BYTES: usize = 4 << 20;
/// Requests of one session in flight at once.
const MAX_IN_FLIGHT: usize = 32;
/// Requests of the server to the agent awaiting an answer.
const MAX_SERVER_REQUESTS: usize = 32;
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

#[derive(Debug, Default)]
struct Registry {
    sessions: HashMap<String, Arc<Session>>,
    /// Sessions being opened, by (server, mission): counted against the
    /// limits before their process starts.
    opening: HashMap<(String, String), usize>,
    /// The upstream session that serves a mission's stateless (2026-07-28)
    /// requests, by (server, mission, key thumbprint): its session id.
    channels: HashMap<(String, String, String), String>,
}

/// A stateless channel's (server, mission, key thumbprint).
type ChannelKey = (String, String, String);

/// The open MCP sessions.
#[derive(Debug, Default)]
pub(crate) struct McpSessions {
    reg: Mutex<Registry>,
    /// Held while a stateless channel is opened, one per (server,
    /// mission, key thumbprint): concurrent first requests of a mission
    /// open one channel, and a server slow to answer `initialize` holds up
    /// no other channel. Only the locks in use are kept.
    channel_locks: Mutex<HashMap<ChannelKey, Weak<tokio::sync::Mutex<()>>>>,
}

/// A place for one session being opened; given back when dropped.
struct Slot {
    s: AppState,
    key: (String, String),
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut r) = self.s.0.mcp.reg.lock()
            && let Some(n) = r.opening.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.opening.remove(&self.key);
            }
        }
    }
}

impl McpSessions {
    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.reg
            .lock()
            .ok()
            .and_then(|r| r.sessions.get(id).cloned())
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.reg
            .lock()
            .map(|r| r.sessions.values().cloned().collect())
            .unwrap_or_default()
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.reg.lock().ok().and_then(|mut r| {
            r.channels.retain(|_, sid| sid != id);
            r.sessions.remove(id)
        })
    }

    /// Ends every session (the server is shutting down): their processes
    /// stop and their streams end.
    pub(crate) fn close_all(&self) {
        for x in self.all() {
            x.close();
        }
        if let Ok(mut r) = self.reg.lock() {
            r.sessions.clear();
            r.channels.clear();
        }
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

    /// Open sessions by server, and of them the stateless channels, for
    /// each of `servers` (the configured ones, so a server with none shows
    /// zero).
    pub(crate) fn by_server<'a>(
        &self,
        servers: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, usize, usize)> {
        let all = self.all();
        servers
            .into_iter()
            .map(|name| {
                let mine = all.iter().filter(|x| x.server.name() == name);
                let (open, channels) =
                    mine.fold((0, 0), |(o, c), x| (o + 1, c + usize::from(x.stateless)));
                (name.to_owned(), open, channels)
            })
            .collect()
    }

    /// The lock held while the channel `key` is opened.
    fn channel_lock(&self, key: &ChannelKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .channel_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = locks.get(key).and_then(Weak::upgrade) {
            return l;
        }
        locks.retain(|_, l| l.strong_count() > 0);
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.clone(), Arc::downgrade(&l));
        l
    }

    /// Takes a place for a new session of `mission` with `server`, within
    /// both limits, atomically (concurrent `initialize`s cannot all fit).
    /// At the mission's limit, its sessions idle longest (nothing in
    /// flight, no stream open) make way: they leave the registry and are
    /// marked ended here, under the same locks a request takes to start on
    /// them, so a session is never taken from under a request. Another
    /// mission's sessions are never touched; a server full with all
    /// missions together refuses.
    fn reserve(
        &self,
        s: &AppState,
        server: &McpServer,
        mission: &MissionId,
    ) -> Result<Place, NoPlace> {
        let mut r = self.reg.lock().map_err(|_| NoPlace::Broken)?;
        let key = (server.name().to_owned(), mission.to_string());
        let opening_all: usize = r
            .opening
            .iter()
            .filter(|((srv, _), _)| srv == server.name())
            .map(|(_, n)| *n)
            .sum();
        let open_all = r
            .sessions
            .values()
            .filter(|x| x.server.name() == server.name())
            .count();
        let mine: Vec<Arc<Session>> = r
            .sessions
            .values()
            .filter(|x| x.server.name() == server.name() && &x.mission == mission)
            .cloned()
            .collect();
        let opening_mine = r.opening.get(&key).copied().unwrap_or(0);
        let over =
            (mine.len() + opening_mine + 1).saturating_sub(server.max_sessions_per_mission());
        // INVARIANT: lock order is the registry, then sessions' states;
        // nothing takes the registry while holding a session's state.
        let mut idle = Vec::new();
        if over > 0 {
            for x in &mine {
                let st = x.st.lock().map_err(|_| NoPlace::Broken)?;
                if !st.busy() {
                    idle.push((st, x));
                }
            }
            if idle.len() < over {
                return Err(NoPlace::MissionBusy);
            }
        }
        if (open_all + opening_all).saturating_sub(over) >= server.max_sessions() {
            return Err(NoPlace::Full);
        }
        // Idle longest first (a session never used since `initialize`
        // counts from then).
        idle.sort_by_key(|(st, _)| st.last_used);
        let mut evicted = Vec::with_capacity(over);
        for (mut st, x) in idle.into_iter().take(over) {
            st.ended = true;
            let since = st.last_used.map_or(0, |t| t.elapsed().as_secs());
            evicted.push((Arc::clone(x), since));
        }
        for (x, _) in &evicted {
            r.sessions.remove(&x.id);
        }
        *r.opening.entry(key.clone()).or_insert(0) += 1;
        Ok(Place {
            slot: Slot { s: s.clone(), key },
            evicted,
        })
    }

    /// The open sessions of `mission`, oldest first.
    fn of_mission(&self, mission: &MissionId) -> Vec<Arc<Session>> {
        let mut mine: Vec<Arc<Session>> = self
            .all()
            .into_iter()
            .filter(|x| &x.mission == mission)
            .collect();
        mine.sort_by_key(|x| x.st.lock().ok().and_then(|st| st.opened));
        mine
    }
}

/// A place for a new session, and the sessions of the same mission that
/// made way for it: out of the registry and marked ended, to be recorded
/// and closed (with how long each was idle, in seconds).
struct Place {
    slot: Slot,
    evicted: Vec<(Arc<Session>, u64)>,
}

/// Why no place was taken for a new session.
enum NoPlace {
    /// Every session of the mission with the server is busy.
    MissionBusy,
    /// The server has all the sessions it takes, all missions together.
    Full,
    /// A lock was poisoned.
    Broken,
}

/// One request in flight upstream, renumbered.
struct Pending {
    client_id: Value,
    /// Where its answer (and its progress) goes. One place is always kept
    /// for the answer.
    tx: mpsc::Sender<Value>,
    /// The progress token the server sees, and (on a stateless channel,
    /// where the gateway renames it so concurrent requests cannot collide)
    /// the agent's own.
    progress: Option<Value>,
    client_progress: Option<Value>,
    /// The gateway's own request: nothing else is routed to it.
    internal: bool,
}

#[derive(Default)]
struct SessionState {
    next_id: i64,
    pending: HashMap<i64, Pending>,
    /// The agent's id (as JSON text) → the upstream's.
    by_client: HashMap<String, i64>,
    /// Requests of the server to the agent, by id (JSON text): only their
    /// answers are forwarded.
    server_requests: HashSet<String>,
    /// The agent's `GET` stream, if open.
    listener: Option<mpsc::Sender<Value>>,
    backlog: VecDeque<(Value, usize)>,
    backlog_bytes: usize,
    /// Every tool name the server lists (shown or not), read by the
    /// gateway itself; reset when the server restarts.
    tools: Option<BTreeSet<String>>,
    /// Read with `tools`: each tool's parameters its `inputSchema` mirrors
    /// into `Mcp-Param-*` headers (`x-mcp-header`), as (header name, path).
    tool_headers: HashMap<String, Vec<(String, Vec<String>)>>,
    last_used: Option<Instant>,
    /// The server's answer to `initialize` (what `server/discover` tells
    /// a stateless client).
    init: Option<Value>,
    /// The server may ask the agent's client for input (its configuration's
    /// `allow_elicitation`, or the mission's policy when the session
    /// opened).
    may_elicit: bool,
    /// A stateless channel to a server that speaks 2026-07-28 itself: its
    /// requests carry their own `_meta`, and the server may answer
    /// `input_required`.
    upstream_modern: bool,
    /// When the session was opened (its first use, right after its
    /// `initialize` was answered).
    opened: Option<Instant>,
    /// The session is over: nothing more starts on it.
    ended: bool,
    /// Since when a reload changed or removed the session's server: it
    /// ends once nothing is in flight (ADR 0028).
    retired: Option<Instant>,
}

impl SessionState {
    /// Whether the agent is using the session: a request in flight or its
    /// stream open. A busy session is never idle.
    fn busy(&self) -> bool {
        !self.pending.is_empty() || self.listener.as_ref().is_some_and(|l| !l.is_closed())
    }
}

pub(crate) struct Session {
    id: String,
    /// Serves a mission's stateless (2026-07-28) requests: opened by the
    /// gateway, never addressed by an `Mcp-Session-Id`; the server's own
    /// requests and unasked notifications are not delivered (that era has
    /// no stream for them).
    stateless: bool,
    server: Arc<McpServer>,
    mission: MissionId,
    jkt: String,
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

/// A registered request: forgotten (and cancelled upstream, if it was
/// sent) when dropped before its answer, whatever the path.
struct InFlight {
    x: Arc<Session>,
    n: i64,
    sent: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.x.forget(self.n).is_some() && self.sent {
            self.x.cancel_upstream(self.n, "the request was abandoned");
        }
    }
}

impl Session {
    fn touch(&self) {
        if let Ok(mut st) = self.st.lock() {
            let now = Instant::now();
            st.last_used = Some(now);
            st.opened.get_or_insert(now);
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn upstream_modern(&self) -> bool {
        self.st.lock().is_ok_and(|st| st.upstream_modern)
    }

    /// What the server may ask the agent's client for.
    fn allowed(&self) -> stateless::Allowed {
        stateless::Allowed {
            roots: self.server.allows_roots(),
            elicitation: self.st.lock().is_ok_and(|st| st.may_elicit),
        }
    }

    /// Renumbers a request and registers where its answer goes. `Err`: the
    /// id is already in flight, or too many are.
    fn register(
        self: &Arc<Self>,
        client_id: &Value,
        progress: Option<Value>,
    ) -> Result<(InFlight, mpsc::Receiver<Value>), &'static str> {
        let mut st = self.st.lock().map_err(|_| "internal error")?;
        if st.ended {
            return Err("the MCP session ended; initialize a new one");
        }
        // A stateless channel carries independent requests: their ids need
        // not differ (and none is cancelled by id).
        if !self.stateless && st.by_client.contains_key(&key(client_id)) {
            return Err("a request with this id is already in flight");
        }
        if st.pending.len() >= MAX_IN_FLIGHT {
            return Err("too many requests in flight in this session");
        }
        st.next_id += 1;
        let n = st.next_id;
        let (tx, rx) = mpsc::channel(16);
        let (progress, client_progress) = match progress {
            Some(p) if self.stateless => (Some(json!(format!("mandate-{n}"))), Some(p)),
            p => (p, None),
        };
        st.pending.insert(
            n,
            Pending {
                client_id: client_id.clone(),
                tx,
                progress,
                client_progress,
                internal: client_id.is_object(),
            },
        );
        if !self.stateless {
            st.by_client.insert(key(client_id), n);
        }
        Ok((
            InFlight {
                x: Arc::clone(self),
                n,
                sent: false,
            },
            rx,
        ))
    }

    /// The progress token the server sees for request `n`, where the
    /// gateway renamed the agent's.
    fn upstream_progress(&self, n: i64) -> Option<Value> {
        let st = self.st.lock().ok()?;
        let p = st.pending.get(&n)?;
        p.client_progress.as_ref()?;
        p.progress.clone()
    }

    fn forget(&self, n: i64) -> Option<Pending> {
        let mut st = self.st.lock().ok()?;
        let p = st.pending.remove(&n)?;
        st.by_client.remove(&key(&p.client_id));
        Some(p)
    }

    fn cancel_upstream(&self, n: i64, reason: &str) {
        let _ = self.out.try_send(json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": n, "reason": reason},
        }));
    }

    /// Sends a registered request to the server, only if it is still
    /// awaited: one that was failed (the server restarted) or cancelled
    /// meanwhile is not sent. A gated call needs its permit.
    fn send_request(&self, flight: &mut InFlight, msg: Outbound) -> Result<(), &'static str> {
        let st = self.st.lock().map_err(|_| "internal error")?;
        if !st.pending.contains_key(&flight.n) {
            return Err("the request was cancelled or its server restarted; retry");
        }
        self.send_up(msg)?;
        flight.sent = true;
        drop(st);
        Ok(())
    }

    /// Sends a message to the server. A gated call goes only as the
    /// message its permit was given for.
    fn send_up(&self, msg: Outbound) -> Result<(), &'static str> {
        let msg = match msg {
            Outbound::Gated(permit) => permit.into_request(),
            Outbound::Ungated(msg) => {
                let method = msg.get("method").and_then(Value::as_str);
                if method.is_some_and(|m| GATED.contains(&m)) {
                    tracing::error!("a gated MCP call reached the forwarder without a permit");
                    return Err("internal error");
                }
                msg
            }
        };
        self.out.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => "the MCP server is busy; retry",
            TrySendError::Closed(_) => "the MCP server is gone",
        })
    }

    /// Answers every request in flight with an error.
    fn fail_pending(&self, message: &str) {
        let pending: Vec<Pending> = match self.st.lock() {
            Ok(mut st) => {
                st.by_client.clear();
                st.server_requests.clear();
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
    /// the request it belongs to, its own requests (those the agent may
    /// answer) and notifications to the agent's stream.
    fn deliver(&self, mut v: Value) {
        let Ok(mut st) = self.st.lock() else { return };
        let method = v.get("method").and_then(Value::as_str).map(str::to_owned);
        let Some(method) = method else {
            // An answer to one of ours.
            let Some(n) = v.get("id").and_then(Value::as_i64) else {
                return;
            };
            if let Some(p) = st.pending.remove(&n) {
                st.by_client.remove(&key(&p.client_id));
                v["id"] = p.client_id.clone();
                let _ = p.tx.try_send(v);
            }
            return;
        };
        if let Some(id) = v.get("id").cloned() {
            // A request of the server to the agent (none reaches a
            // stateless client: its era has no way to carry one).
            let allowed = matches!(method.as_str(), "ping" | "sampling/createMessage")
                || (method == "elicitation/create" && st.may_elicit)
                || (method == "roots/list" && self.server.allows_roots());
            if self.stateless || !allowed || st.server_requests.len() >= MAX_SERVER_REQUESTS {
                drop(st);
                let _ = self.out.try_send(rpc_error(
                    &id,
                    METHOD_NOT_FOUND,
                    format!("`{method}` is not available through the Mandate gateway"),
                    None,
                ));
                return;
            }
            st.server_requests.insert(key(&id));
        } else if method == "notifications/progress" {
            let token = v.get("params").and_then(|p| p.get("progressToken"));
            if let Some(p) = st
                .pending
                .values()
                .find(|p| p.progress.is_some() && p.progress.as_ref() == token)
            {
                if let Some(own) = &p.client_progress {
                    v["params"]["progressToken"] = own.clone();
                }
                // Progress never takes the answer's place.
                if p.tx.capacity() > 1 {
                    let _ = p.tx.try_send(v);
                }
                return;
            }
        } else if method == "notifications/tools/list_changed" {
            st.tools = None;
        } else if method == "notifications/cancelled"
            && let Some(r) = v.get("params").and_then(|p| p.get("requestId"))
        {
            st.server_requests.remove(&key(r));
        }
        if self.stateless {
            // Not about any one request: nowhere to deliver it.
            return;
        }
        if let Some(l) = &st.listener {
            if l.try_send(v.clone()).is_ok() {
                return;
            }
            st.listener = None;
        }
        if let Some(p) = st
            .pending
            .values()
            .find(|p| !p.internal && p.tx.capacity() > 1)
            && p.tx.try_send(v.clone()).is_ok()
        {
            return;
        }
        let size = v.to_string().len();
        while !st.backlog.is_empty()
            && (st.backlog.len() >= BACKLOG || st.backlog_bytes + size > BACKLOG_BYTES)
        {
            if let Some((_, n)) = st.backlog.pop_front() {
                st.backlog_bytes = st.backlog_bytes.saturating_sub(n);
            }
            tracing::warn!(session = %self.id, "MCP backlog full; the oldest server message was dropped");
        }
        if size <= BACKLOG_BYTES {
            st.backlog_bytes += size;
            st.backlog.push_back((v, size));
        }
    }

    /// Ends the session: the upstream stops, everything in flight fails.
    fn close(&self) {
        if let Ok(mut st) = self.st.lock() {
            st.ended = true;
        }
        let _ = self.closed.send_replace(true);
        self.fail_pending("the MCP session ended");
        if let Ok(mut st) = self.st.lock() {
            st.listener = None;
            st.backlog.clear();
        }
    }

    /// A request the gateway makes itself (e.g. the tool list); the answer.
    /// Its id is an object, which no agent's id can be.
    async fn ask(
        self: &Arc<Self>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let own =
            json!({ "mandate-internal": NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) });
        let (mut flight, mut rx) = self.register(&own, None).map_err(str::to_owned)?;
        let params = if self.upstream_modern() {
            stateless::with_gateway_meta(params)
        } else {
            params
        };
        let msg = json!({"jsonrpc": "2.0", "id": flight.n, "method": method, "params": params});
        self.send_request(&mut flight, Outbound::Ungated(msg))
            .map_err(str::to_owned)?;
        match answer_within(&mut rx, timeout).await {
            Ok(Some(m)) => match m.get("result") {
                Some(r) => Ok(r.clone()),
                None => Err(format!("the MCP server refused `{method}`")),
            },
            Ok(None) => Err("the MCP server is gone".into()),
            Err(_) => Err(format!("the MCP server did not answer `{method}` in time")),
        }
    }
}

/// `/mcp/{server}`: `POST` a message, `GET` the server's stream, `DELETE`
/// the session.
pub(super) async fn handle(State(s): State<AppState>, req: Request) -> Response {
    let proof = super::gateway::mcp_proof_mode(&s, req.uri().path());
    let challenge = Challenge::of(&req);
    // The request's span: the stages' spans go under it. Its server is
    // named once it is known to be configured.
    let span = tracing::debug_span!("mcp_request", server = Empty, status = Empty);
    let r = match handle_inner(&s, req).instrument(span.clone()).await {
        Ok(r) => r,
        Err(p) => {
            let r = super::gateway::mcp_challenge(p.into_response(), proof);
            if proof.takes_signature() {
                challenge.answer(r)
            } else {
                r
            }
        }
    };
    span.record("status", r.status().as_u16());
    r
}

/// What a `401` of the MCP gateway says would work, for this very request:
/// an RFC 9421 signature by the mission key with the credential in
/// `Signature-Key` (scheme `jwt`), and in `Accept-Signature` (RFC 9421
/// §5.1) the components it must cover: those of the HTTP gateway, the
/// body's (`content-type`, `content-digest`) on a `POST`, and
/// `mcp-session-id` when the request names a session.
struct Challenge(String);

impl Challenge {
    fn of(req: &Request) -> Self {
        let h = req.headers();
        let mut covered = vec!["@method", "@authority", "@path", "signature-key"];
        if req.method() == axum::http::Method::POST {
            covered.extend(["content-type", "content-digest"]);
        }
        for c in ["mcp-session-id", "mandate-justification"] {
            if h.contains_key(c) {
                covered.push(c);
            }
        }
        let list: Vec<String> = covered.iter().map(|c| format!("\"{c}\"")).collect();
        Self(format!("sig=({});created;alg=\"ed25519\"", list.join(" ")))
    }

    /// The exact components, in place of the HTTP gateway's list (the
    /// schemes in `WWW-Authenticate` are the server's `proof`).
    fn answer(self, mut resp: Response) -> Response {
        if resp.status() == StatusCode::UNAUTHORIZED
            && let Ok(accept) = HeaderValue::from_str(&self.0)
        {
            resp.headers_mut().insert("accept-signature", accept);
        }
        resp
    }
}

struct Caller {
    claims: MissionClaims,
    /// The mission with its count and live grants, as read for the
    /// credential's check.
    state: MissionSnapshot,
    /// The request signature's single use, claimed with a decision's
    /// record.
    claim: Claim,
}

async fn handle_inner(s: &AppState, req: Request) -> Result<Response, Problem> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let name = path
        .strip_prefix("/mcp/")
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| Problem::not_found("no such MCP server"))?;
    let unknown = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown_mcp_server",
            format!("no MCP server `{name}`"),
        )
    };
    let arrived = s
        .gateways()
        .mcp_servers
        .get(name)
        .cloned()
        .ok_or_else(unknown)?;
    tracing::Span::current().record("server", arrived.name());
    if let Some(detail) = rebinding(&s.0.issuer, &parts.headers) {
        return Ok(rpc_reply(
            StatusCode::FORBIDDEN,
            &Value::Null,
            INVALID_REQUEST,
            detail,
        ));
    }
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
    // Nothing is read before the request could be signed at all.
    super::gateway::mcp_proof(&parts.headers, arrived.proof())?;
    let limit = arrived.max_message_bytes();
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
    // The server as configured once the message is in, read once: a reload
    // meanwhile changes later requests, not this one; one while the message
    // arrived applies to it too (ADR 0028).
    let server = s
        .gateways()
        .mcp_servers
        .get(name)
        .cloned()
        .ok_or_else(unknown)?;
    if body.len() > server.max_message_bytes() {
        return Ok(rpc_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Value::Null,
            INVALID_REQUEST,
            format!(
                "the message is larger than {} bytes",
                server.max_message_bytes()
            ),
        ));
    }
    // The signature, the credential and the key, as on the HTTP gateway;
    // the session id, when sent, is covered too.
    let headers = header_list(&parts.headers)?;
    if parts.headers.get_all("host").iter().count() > 1
        || parts.headers.get_all("content-type").iter().count() > 1
        || parts.headers.get_all("mcp-session-id").iter().count() > 1
    {
        return Err(Problem::bad_request(
            "invalid_request",
            "more than one Host, Content-Type or Mcp-Session-Id header",
        ));
    }
    let authority = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::bad_request("invalid_request", "no Host header"))?
        .to_owned();
    let request = RequestParts {
        method: &method,
        scheme: s.0.issuer.split("://").next().unwrap_or("http"),
        authority: &authority,
        path: &path,
        query: None,
        headers: &headers,
    };
    let at = Instant::now();
    let verified = verify_mcp(s, &server, &request, &parts.headers, &body)
        .instrument(tracing::debug_span!("verify"))
        .await;
    s.0.metrics.stage(Door::Mcp, Stage::Verify, at.elapsed());
    let caller = match verified? {
        Verified::Ok {
            claims,
            mission,
            claim,
        } => Caller {
            claims,
            state: *mission,
            claim,
        },
        Verified::Refused { problem, claims } => {
            if let Some(c) = claims {
                refusal(s, &server, None, &c, &method, problem.code, &problem.detail).await?;
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
            // for this caller; the attempt is recorded.
            let found = s.0.mcp.get(id).filter(|x| {
                !x.stateless
                    && x.mission == caller.claims.mission_id
                    && x.jkt == caller.claims.cnf.jkt.to_string()
                    && x.server.name() == server.name()
                    && !x.is_closed()
            });
            // A session opened with the server as it was configured before
            // a reload takes no new request (ADR 0028).
            let reconfigured = found
                .as_ref()
                .is_some_and(|x| !Arc::ptr_eq(&x.server, &server));
            match found {
                Some(x) if !reconfigured => Some(x),
                _ => {
                    let elsewhere = id.split_once('.').is_some_and(|(node, _)| node != s.0.node);
                    let detail = if reconfigured {
                        "this MCP session's server was reconfigured (a configuration reload); initialize a new one"
                    } else if elsewhere {
                        "this MCP session is held by another node of this authority (or has ended): a load balancer must send every request with one `Mcp-Session-Id` to the node that answered its `initialize`; otherwise initialize a new one"
                    } else {
                        "no such MCP session; initialize a new one"
                    };
                    refusal(
                        s,
                        &server,
                        Some(id),
                        &caller.claims,
                        &method,
                        "unknown_session",
                        detail,
                    )
                    .await?;
                    return Ok(rpc_reply(
                        StatusCode::NOT_FOUND,
                        &Value::Null,
                        INVALID_REQUEST,
                        detail,
                    ));
                }
            }
        }
    };
    if let Some(x) = &session {
        x.touch();
    }
    match method.as_str() {
        "DELETE" | "GET" => {
            // Without a session: the stateless era (2026-07-28), which has
            // neither (405, as that revision answers).
            let Some(x) = session else {
                let mut r = rpc_reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &Value::Null,
                    INVALID_REQUEST,
                    "without `Mcp-Session-Id`, the MCP endpoint takes POST only",
                );
                r.headers_mut()
                    .insert("allow", HeaderValue::from_static("POST"));
                return Ok(r);
            };
            if method == "GET" {
                return listen(s, &x, caller.state.mission());
            }
            let _ = end_session_by(s, &x, "ended by the agent", Some("DELETE"), None).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => post(s, &server, session, caller, &parts.headers, &body).await,
    }
}

/// DNS rebinding (MCP's transport security): a web page whose name was
/// made to resolve to the gateway sends that name as `Host` and its origin
/// as `Origin`. An `Origin`, when sent, must be this authority's; `Host`
/// must name this authority or be an address literal (a name is what
/// rebinding needs). Why not, if refused.
fn rebinding(issuer: &str, h: &axum::http::HeaderMap) -> Option<&'static str> {
    let (scheme, rest) = issuer.split_once("://").unwrap_or(("http", issuer));
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let same = |a: &str| {
        a.eq_ignore_ascii_case(authority)
            || a.strip_suffix(default_port)
                .is_some_and(|a| a.eq_ignore_ascii_case(authority))
    };
    for origin in h.get_all("origin") {
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(sch, a)| sch.eq_ignore_ascii_case(scheme) && same(a));
        if !ok {
            return Some(
                "the request's `Origin` is not this authority's (DNS rebinding protection)",
            );
        }
    }
    for host in h.get_all("host") {
        let Ok(host) = host.to_str() else {
            return Some("the `Host` header is not text");
        };
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(n, _)| n);
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .map_or_else(
                || name.parse::<std::net::Ipv4Addr>().is_ok(),
                |n| n.parse::<std::net::Ipv6Addr>().is_ok(),
            );
        if !literal && !same(host) {
            return Some(
                "the request's `Host` names another authority than this one (DNS rebinding protection)",
            );
        }
    }
    None
}

/// The agent's `GET` stream: what the server sends unasked. A server
/// labelled untrusted taints the mission before each message reaches the
/// agent.
fn listen(s: &AppState, x: &Arc<Session>, mission: &Mission) -> Result<Response, Problem> {
    let (tx, mut rx) = mpsc::channel(BACKLOG);
    {
        let mut st = x.st.lock().map_err(|_| Problem::internal())?;
        if st.ended {
            return Ok(rpc_reply(
                StatusCode::NOT_FOUND,
                &Value::Null,
                INVALID_REQUEST,
                "no such MCP session; initialize a new one",
            ));
        }
        if st.listener.as_ref().is_some_and(|l| !l.is_closed()) {
            return Ok(rpc_reply(
                StatusCode::CONFLICT,
                &Value::Null,
                INVALID_REQUEST,
                "this session already has a stream open",
            ));
        }
        while let Some((m, _)) = st.backlog.pop_front() {
            let _ = tx.try_send(m);
        }
        st.backlog_bytes = 0;
        st.listener = Some(tx);
    }
    let mut closed = x.closed.subscribe();
    let (out_tx, out_rx) = mpsc::channel::<Value>(BACKLOG);
    let (s, x, mission) = (s.clone(), Arc::clone(x), mission.clone());
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = rx.recv() => m,
                _ = closed.changed() => None,
                () = out_tx.closed() => None,
            };
            let Some(m) = m else { break };
            let via = format!(
                "mcp {} {}",
                x.server.name(),
                m.get("method").and_then(Value::as_str).unwrap_or("message")
            );
            if crate::api::taint::mark(&s, &mission, x.server.taint_unasked(), &via)
                .await
                .is_err()
            {
                // Untracked untrusted content is not delivered.
                break;
            }
            // A reader that stops reading does not hold this task past the
            // session's end.
            tokio::select! {
                r = out_tx.send(m) => if r.is_err() { break },
                _ = closed.changed() => break,
            }
        }
    });
    Ok(sse(out_rx))
}

/// An event stream of JSON-RPC messages.
fn sse(rx: mpsc::Receiver<Value>) -> Response {
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
    // Reverse proxies pass each event on at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

async fn post(
    s: &AppState,
    server: &Arc<McpServer>,
    session: Option<Arc<Session>>,
    caller: Caller,
    headers: &axum::http::HeaderMap,
    body: &Bytes,
) -> Result<Response, Problem> {
    let sid = session.as_ref().map(|x| x.id.clone());
    // No session and a revision of the stateless era: served on its own.
    let modern = session.is_none() && stateless::names_modern(headers);
    // Parsed and classified before anything else (mandate-core); what is
    // refused there is refused before anything is forwarded, and recorded.
    let msg = match parse_client_message(body) {
        Ok(m) => m,
        Err(r) => {
            let (status, code, tag) = match r.reason {
                Refusal::NotJson => (StatusCode::BAD_REQUEST, PARSE_ERROR, "invalid_json"),
                Refusal::Invalid => (StatusCode::BAD_REQUEST, INVALID_REQUEST, "invalid_request"),
                // The stateless era answers an unknown method with 404.
                Refusal::UnknownRequest if modern => {
                    (StatusCode::NOT_FOUND, METHOD_NOT_FOUND, "method_not_found")
                }
                Refusal::UnknownRequest => (StatusCode::OK, METHOD_NOT_FOUND, "method_not_found"),
                Refusal::UnknownNotification => (
                    StatusCode::BAD_REQUEST,
                    METHOD_NOT_FOUND,
                    "method_not_found",
                ),
            };
            refusal(
                s,
                server,
                sid.as_deref(),
                &caller.claims,
                &r.named,
                tag,
                &r.detail,
            )
            .await?;
            return Ok(rpc_reply(status, &r.id, code, r.detail));
        }
    };
    let ClientMessage {
        kind,
        message: msg,
        named,
    } = msg;
    let opens = matches!(&kind, MessageKind::Request { method, .. } if method == "initialize");
    if session.is_none() && (modern || (!opens && stateless::carries_meta_version(&msg))) {
        return stateless::serve(s, server, &caller, headers, kind, msg, &named).await;
    }
    // Refused for want of a session: recorded too.
    let invalid = |id: Option<&Value>, m: &str| {
        let (s, server, sid, claims, named) =
            (s, server, sid.clone(), &caller.claims, named.as_str());
        let (id, m) = (id.cloned().unwrap_or(Value::Null), m.to_owned());
        async move {
            refusal(
                s,
                server,
                sid.as_deref(),
                claims,
                named,
                "invalid_request",
                &m,
            )
            .await?;
            Ok::<_, Problem>(rpc_reply(StatusCode::BAD_REQUEST, &id, INVALID_REQUEST, m))
        }
    };
    match kind {
        // An answer of the agent to a request of the server: only to one
        // the server made.
        MessageKind::Response { id } => {
            let Some(x) = session else {
                return invalid(Some(&id), "`Mcp-Session-Id` is required").await;
            };
            let asked =
                x.st.lock()
                    .is_ok_and(|mut st| st.server_requests.remove(&key(&id)));
            if !asked {
                return invalid(Some(&id), "the server asked nothing with this id").await;
            }
            match x.send_up(Outbound::Ungated(msg)) {
                Ok(()) => Ok(StatusCode::ACCEPTED.into_response()),
                Err(e) => Ok(rpc_reply(
                    StatusCode::BAD_GATEWAY,
                    &Value::Null,
                    INTERNAL_ERROR,
                    e,
                )),
            }
        }
        MessageKind::Notification { method: m } => {
            let Some(x) = session else {
                return invalid(None, "`Mcp-Session-Id` is required").await;
            };
            Ok(notification(&x, &m, msg))
        }
        MessageKind::Request { id, method: m } => {
            if m == "initialize" {
                if session.is_some() {
                    return invalid(Some(&id), "this session is already initialized").await;
                }
                return initialize(s, server, &caller, id, msg).await;
            }
            let Some(x) = session else {
                return invalid(Some(&id), "`Mcp-Session-Id` is required (initialize first)").await;
            };
            request(s, &x, &caller, id, &m, msg, None).await
        }
    }
}

fn notification(x: &Arc<Session>, method: &str, mut msg: Value) -> Response {
    if method == "notifications/cancelled" {
        // The agent cancels its own request: renumbered, and forgotten here.
        let client_id = msg
            .get("params")
            .and_then(|p| p.get("requestId"))
            .filter(|r| r.is_string() || r.is_i64() || r.is_u64())
            .cloned()
            .unwrap_or(Value::Null);
        let n =
            x.st.lock()
                .ok()
                .and_then(|st| st.by_client.get(&key(&client_id)).copied());
        let Some(n) = n else {
            return StatusCode::ACCEPTED.into_response();
        };
        x.forget(n);
        msg["params"]["requestId"] = json!(n);
    }
    match x.send_up(Outbound::Ungated(msg)) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => rpc_reply(StatusCode::BAD_GATEWAY, &Value::Null, INTERNAL_ERROR, e),
    }
}

async fn initialize(
    s: &AppState,
    server: &Arc<McpServer>,
    caller: &Caller,
    id: Value,
    mut msg: Value,
) -> Result<Response, Problem> {
    let mission = &caller.claims.mission_id;
    if server.upstream_protocol() == crate::mcp_servers::UpstreamProtocol::Stateless {
        // Configured to be spoken to in 2026-07-28 only: a session would
        // need an `initialize` the server does not answer.
        return Ok(rpc_reply(
            StatusCode::OK,
            &id,
            INVALID_PARAMS,
            format!(
                "the MCP server `{}` is served in MCP {} only (`upstream_protocol`); connect with a client of that revision",
                server.name(),
                stateless::MODERN_VERSIONS[0]
            ),
        ));
    }
    let slot = match take_place(s, server, &caller.claims, &id).await? {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused),
    };
    let Some(params) = msg.get_mut("params").and_then(Value::as_object_mut) else {
        return Ok(rpc_reply(
            StatusCode::OK,
            &id,
            INVALID_PARAMS,
            "`initialize` needs `params`",
        ));
    };
    // A revision the gateway does not know is answered with the latest it
    // does; the agent then accepts it or disconnects (as MCP negotiates).
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    if !asked.is_some_and(|v| PROTOCOL_VERSIONS.contains(&v)) {
        let latest = PROTOCOL_VERSIONS.last().copied().unwrap_or("2025-11-25");
        params.insert("protocolVersion".into(), json!(latest));
    }
    // What the server may ask of the agent's client: its roots (which would
    // replace the directory limits the operator configured) only where
    // configured, and elicitation where configured or the mission's policy
    // lets it.
    let elicits = may_elicit(s, server, caller.state.mission()).await;
    if let Some(caps) = params
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    {
        if !server.allows_roots() {
            caps.remove("roots");
        }
        if !elicits {
            caps.remove("elicitation");
        }
    }
    let mut sid = [0u8; 24];
    s.0.rng.fill(&mut sid).map_err(|_| Problem::internal())?;
    // The node that holds the session names it, so another node can say
    // where it lives (ADR 0017).
    let sid = format!("{}.{}", s.0.node, mandate_core::s256(&sid));
    let who = json!({
        "server": server.name(),
        "method": "initialize",
        "session": sid,
        "principal": caller.claims.sub.as_str(),
        "agent": caller.claims.act.sub.as_str(),
        "mission": mission.as_str(),
        "jkt": caller.claims.cnf.jkt.to_string(),
    });
    // INVARIANT: the start of a server (a process, a remote session) is
    // recorded before it happens, with the request's single use: a
    // replayed `initialize` opens nothing on another node either.
    match s
        .0
        .enforcer
        .record_claimed("mcp.session.opening", who.clone(), caller.claim.clone())
        .await
    {
        Ok(_) => {}
        Err(e @ mandate_enforce::EnforceError::Replayed) => {
            let p = Problem::from(e);
            refusal(
                s,
                server,
                None,
                &caller.claims,
                "initialize",
                p.code,
                &p.detail,
            )
            .await?;
            return Err(p);
        }
        Err(e) => return Err(e.into()),
    }
    let session = start_upstream(s, server, caller, &sid, false);
    if let Ok(mut st) = session.st.lock() {
        st.may_elicit = elicits;
    }
    let failed = |detail: &str| {
        session.close();
        rpc_reply(StatusCode::BAD_GATEWAY, &id, INTERNAL_ERROR, detail)
    };
    let (mut flight, mut rx) = match session.register(&id, None) {
        Ok(r) => r,
        Err(e) => return Ok(failed(e)),
    };
    msg["id"] = json!(flight.n);
    if session
        .send_request(&mut flight, Outbound::Ungated(msg))
        .is_err()
    {
        return Ok(failed("the MCP server could not be started"));
    }
    let Ok(Some(answer)) = answer_within(&mut rx, server.timeout()).await else {
        return Ok(failed("the MCP server did not complete `initialize`"));
    };
    if answer.get("result").is_none() {
        session.close();
        return Ok(json_response(StatusCode::OK, &answer));
    }
    let version = answer
        .get("result")
        .and_then(|r| r.get("protocolVersion"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(version) = version.filter(|v| PROTOCOL_VERSIONS.contains(&v.as_str())) else {
        return Ok(failed(&format!(
            "the MCP server speaks another protocol revision than the gateway ({})",
            PROTOCOL_VERSIONS.join(", ")
        )));
    };
    let mut opened = who;
    opened["protocol_version"] = json!(version);
    if let Err(p) = s.audit("mcp.session.opened", opened).await {
        session.close();
        return Err(p);
    }
    let mut answer = answer;
    if let Some(caps) = answer
        .get_mut("result")
        .and_then(|r| r.get_mut("capabilities"))
    {
        unrefused(s, server, caller.state.mission(), caps).await;
    }
    {
        let mut r = s.0.mcp.reg.lock().map_err(|_| Problem::internal())?;
        // A server that went away meanwhile: no session.
        if session.is_closed() {
            drop(r);
            return Ok(failed("the MCP server stopped during `initialize`"));
        }
        r.sessions.insert(sid.clone(), Arc::clone(&session));
    }
    drop(slot);
    session.touch();
    // The server's instructions are its metadata: untrusted if it is.
    crate::api::taint::mark(
        s,
        caller.state.mission(),
        server.taint_metadata(),
        &format!("mcp {} initialize", server.name()),
    )
    .await?;
    let mut r = json_response(StatusCode::OK, &answer);
    if let Ok(v) = HeaderValue::from_str(&sid) {
        r.headers_mut().insert("mcp-session-id", v);
    }
    Ok(r)
}

/// Starts the upstream of a new session (a process, a remote session) and
/// what carries its messages; the caller sends `initialize`.
fn start_upstream(
    s: &AppState,
    server: &Arc<McpServer>,
    caller: &Caller,
    sid: &str,
    stateless: bool,
) -> Arc<Session> {
    let mission = &caller.claims.mission_id;
    let (events_tx, events_rx) = mpsc::channel(256);
    let (closed_tx, closed_rx) = watch::channel(false);
    let bearer = match server.config.auth {
        crate::routes::UpstreamAuth::TokenExchange => {
            let (st, claims, m) = (
                s.clone(),
                caller.claims.clone(),
                caller.state.mission().clone(),
            );
            let aud = server.audience().to_owned();
            let f: mcp_upstream::Bearer =
                Arc::new(move || super::gateway::exchange_token(&st, &aud, &claims, &m).ok());
            Some(f)
        }
        _ => None,
    };
    let out = mcp_upstream::spawn(
        Arc::clone(server),
        sid.to_owned(),
        events_tx,
        closed_rx,
        bearer,
    );
    let session = Arc::new(Session {
        id: sid.to_owned(),
        stateless,
        server: Arc::clone(server),
        mission: mission.clone(),
        jkt: caller.claims.cnf.jkt.to_string(),
        out,
        st: Mutex::new(SessionState::default()),
        closed: closed_tx,
    });
    spawn_router(s.clone(), Arc::downgrade(&session), events_rx);
    session
}

/// Whether the server may ask the agent's client for input: where its
/// configuration allows it (`allow_elicitation`), or where the mission's
/// policy allows `elicit` on the server (previewed, not recorded). On any
/// doubt, not.
async fn may_elicit(s: &AppState, server: &McpServer, mission: &Mission) -> bool {
    server.allows_elicitation() || allows(s, server, mission, crate::mcp_servers::ELICIT).await
}

/// Whether the mission's policy allows `action` on the server as a whole
/// (previewed: nothing recorded). On any doubt, not.
async fn allows(s: &AppState, server: &McpServer, mission: &Mission, action: &str) -> bool {
    let ask = [(action.to_owned(), server.server_ref())];
    preview(s, mission, server.required_trust(), &ask)
        .await
        .is_ok_and(|o| o.first().is_some_and(|o| o.decision == Decision::Allow))
}

/// Takes out of the server's capabilities what the gateway would refuse
/// this mission: `logging` unless its policy lets it set the server's log
/// level. On any doubt, it is taken out.
async fn unrefused(s: &AppState, server: &McpServer, mission: &Mission, caps: &mut Value) {
    let Some(caps) = caps.as_object_mut() else {
        return;
    };
    if caps.contains_key("logging")
        && !allows(s, server, mission, crate::mcp_servers::SET_LOG_LEVEL).await
    {
        caps.remove("logging");
    }
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
                    if let Ok(mut st) = x.st.lock() {
                        st.tools = None;
                    }
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
    let _ = end_session_by(s, x, reason, None, None).await;
}

/// Ends a session: out of the registry, recorded (once, by whoever took
/// it out), then closed. `method`: the request that ended it, if one did;
/// `by`: who, if not the agent or Mandate itself.
async fn end_session_by(
    s: &AppState,
    x: &Arc<Session>,
    reason: &str,
    method: Option<&str>,
    by: Option<&str>,
) -> Result<(), Problem> {
    let recorded = match s.0.mcp.remove(&x.id) {
        Some(_) => record_closed(s, x, reason, method, by).await.map(|_| ()),
        None => Ok(()),
    };
    x.close();
    recorded
}

/// `mcp.session.closed`.
async fn record_closed(
    s: &AppState,
    x: &Session,
    reason: &str,
    method: Option<&str>,
    by: Option<&str>,
) -> Result<u64, Problem> {
    let mut body = json!({
        "server": x.server.name(),
        "method": method,
        "session": x.id,
        "mission": x.mission.as_str(),
        "reason": reason,
    });
    if let Some(by) = by {
        body["by"] = json!(by);
    }
    s.audit("mcp.session.closed", body).await
}

/// A place for a new session of the caller's mission with `server`
/// (`initialize` request `id`): the mission's sessions idle longest make
/// way at its limit, each recorded, then closed. `Err`: the refusal to
/// answer, recorded (`session_limit`).
async fn take_place(
    s: &AppState,
    server: &Arc<McpServer>,
    claims: &MissionClaims,
    id: &Value,
) -> Result<Result<Slot, Response>, Problem> {
    let detail = match s.0.mcp.reserve(s, server, &claims.mission_id) {
        Ok(Place { slot, evicted }) => {
            let mut recorded = Ok(0);
            for (x, idle) in evicted {
                let reason = format!(
                    "evicted: idle longest ({idle} s) when the mission opened another session with `{}` at its limit of {}",
                    server.name(),
                    server.max_sessions_per_mission()
                );
                tracing::info!(server = server.name(), session = %x.id, mission = %x.mission, idle, "MCP session evicted");
                if recorded.is_ok() {
                    recorded = record_closed(s, &x, &reason, Some("initialize"), None).await;
                }
                // Out of the registry already: closed whether or not the
                // record could be written (no unlisted process is left).
                x.close();
            }
            recorded?;
            return Ok(Ok(slot));
        }
        Err(NoPlace::Broken) => return Err(Problem::internal()),
        Err(NoPlace::MissionBusy) => format!(
            "every session of this mission with `{}` is busy (at most {} per mission; a request in flight or a stream open); end one first",
            server.name(),
            server.max_sessions_per_mission(),
        ),
        Err(NoPlace::Full) => format!(
            "no more sessions with `{}` ({} in all missions together); retry later",
            server.name(),
            server.max_sessions()
        ),
    };
    refusal(
        s,
        server,
        None,
        claims,
        "initialize",
        "session_limit",
        &detail,
    )
    .await?;
    Ok(Err(rpc_reply(
        StatusCode::TOO_MANY_REQUESTS,
        id,
        INVALID_REQUEST,
        detail,
    )))
}

/// Ends the sessions whose server a reload changed or removed (ADR 0028).
/// Such a session takes no new request from the moment of the reload (the
/// agent initializes a new one, with the server as now configured); its
/// agent's stream closes at once; what is in flight finishes, for at most
/// the server's timeout; then the session ends, recorded, and its process
/// stops. Run after every reload and every second.
pub(crate) async fn retire(s: &AppState) {
    let live = s.gateways();
    for x in s.0.mcp.all() {
        let now = live.mcp_servers.get(x.server.name());
        if now.is_some_and(|m| Arc::ptr_eq(m, &x.server)) {
            continue;
        }
        let done = match x.st.lock() {
            Ok(mut st) => {
                let since = *st.retired.get_or_insert_with(Instant::now);
                st.listener = None;
                st.pending.is_empty() || since.elapsed() > x.server.timeout()
            }
            Err(_) => true,
        };
        if done {
            let reason = if now.is_some() {
                "its MCP server was reconfigured (a configuration reload)"
            } else {
                "its MCP server was removed from the configuration (a configuration reload)"
            };
            tracing::info!(server = x.server.name(), session = %x.id, mission = %x.mission, reason, "MCP session ended");
            end_session(s, &x, reason).await;
        }
    }
}

/// Closes the sessions of missions that ended, the idle ones, and those of
/// servers a reload changed or removed.
pub(crate) fn spawn_reaper(s: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut failures: HashMap<String, u32> = HashMap::new();
        loop {
            tick.tick().await;
            retire(&s).await;
            for x in s.0.mcp.all() {
                let now = s.0.clock.now();
                let active = match s.0.store.mission(&x.mission).await {
                    Ok(Some(m)) => m.check_active(now).is_ok(),
                    Ok(None) => false,
                    Err(e) => {
                        // A store that keeps failing closes the session.
                        let n = failures.entry(x.id.clone()).or_insert(0);
                        *n += 1;
                        tracing::warn!(error = %e, session = %x.id, "cannot read a mission for its MCP session");
                        if *n < 5 {
                            continue;
                        }
                        false
                    }
                };
                failures.remove(&x.id);
                // Idle: nothing in flight, no stream open, nothing sent
                // for the server's idle timeout.
                let limit = x.server.idle_timeout();
                let idle = x.st.lock().ok().is_some_and(|st| {
                    !st.busy() && st.last_used.is_some_and(|t| t.elapsed() > limit)
                });
                if !active {
                    end_session(&s, &x, "the mission ended").await;
                } else if idle {
                    let reason = format!("idle for more than {} s", limit.as_secs());
                    end_session(&s, &x, &reason).await;
                }
            }
        }
    });
}

/// The mission `id`, for a principal who may manage it (its principal,
/// its agent's owner, an admin); anyone else is told there is no such
/// mission.
async fn managed(
    s: &AppState,
    caller: &super::extract::Caller,
    id: &str,
) -> Result<Mission, Problem> {
    let id: MissionId = id.parse()?;
    let no_mission = || Problem::not_found("no such mission");
    let mission = s.0.store.mission(&id).await?.ok_or_else(no_mission)?;
    if !super::missions::may_manage(s, caller, &mission).await? {
        return Err(no_mission());
    }
    Ok(mission)
}

impl Session {
    /// What the mission's principal sees of the session; times as of `now`
    /// (Unix seconds).
    fn view(&self, now: u64) -> Option<mandate_core::wire::McpSessionView> {
        let st = self.st.lock().ok()?;
        let at = |t: Option<Instant>| now.saturating_sub(t.map_or(0, |t| t.elapsed().as_secs()));
        Some(mandate_core::wire::McpSessionView {
            server: self.server.name().to_owned(),
            session: self.id.clone(),
            opened_at: at(st.opened),
            last_used: at(st.last_used),
            in_flight: u64::try_from(st.pending.len()).unwrap_or(u64::MAX),
            stream_open: st.listener.as_ref().is_some_and(|l| !l.is_closed()),
        })
    }
}

/// A mission's open MCP sessions, for a principal who may manage it: which
/// server, since when, when last used, whether the agent is using it.
#[utoipa::path(
    get,
    path = "/v1/missions/{id}/mcp/sessions",
    operation_id = "list_mcp_sessions",
    tag = "missions",
    security(("api_token" = [])),
    params(("id" = MissionId, Path, description = "The mission's id.")),
    responses(
        (status = 200, description = "The mission's open MCP sessions held by the node that answered, oldest first.", body = mandate_core::wire::McpSessionsView),
        super::openapi::Always, super::openapi::Unauthorized, super::openapi::NotFound,
    ),
)]
pub(super) async fn list_sessions(
    State(s): State<AppState>,
    caller: super::extract::Caller,
    super::extract::ApiPath(id): super::extract::ApiPath<String>,
) -> Result<axum::Json<mandate_core::wire::McpSessionsView>, Problem> {
    let mission = managed(&s, &caller, &id).await?;
    Ok(axum::Json(sessions_of(&s, &mission)))
}

/// The open MCP sessions of `mission` this node holds, oldest first (what
/// `GET /v1/missions/{id}/mcp/sessions` and the console's mission page
/// show, to whoever may manage the mission).
pub(crate) fn sessions_of(s: &AppState, mission: &Mission) -> mandate_core::wire::McpSessionsView {
    let now = s.0.clock.now().0;
    let sessions =
        s.0.mcp
            .of_mission(&mission.body.id)
            .iter()
            .filter_map(|x| x.view(now))
            .collect();
    mandate_core::wire::McpSessionsView {
        mission: mission.body.id.to_string(),
        node: s.0.node.clone(),
        sessions,
    }
}

/// Ends one of a mission's MCP sessions, for a principal who may manage the
/// mission: its server stops, requests in flight get an error, and the
/// agent's next request on it is told to initialize a new one. Recorded
/// (`mcp.session.closed`, with who).
#[utoipa::path(
    delete,
    path = "/v1/missions/{id}/mcp/sessions/{session}",
    operation_id = "end_mcp_session",
    tag = "missions",
    security(("api_token" = [])),
    params(
        ("id" = MissionId, Path, description = "The mission's id."),
        ("session" = String, Path, description = "The session's `Mcp-Session-Id`."),
    ),
    responses(
        (status = 204, description = "Ended."),
        super::openapi::Always, super::openapi::Unauthorized, super::openapi::NotFound,
    ),
)]
pub(super) async fn end_mission_session(
    State(s): State<AppState>,
    caller: super::extract::Caller,
    super::extract::ApiPath((id, session)): super::extract::ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    let mission = managed(&s, &caller, &id).await?;
    let found =
        s.0.mcp
            .get(&session)
            .filter(|x| x.mission == mission.body.id && !x.is_closed());
    let Some(x) = found else {
        let elsewhere = session
            .split_once('.')
            .is_some_and(|(node, _)| node != s.0.node);
        return Err(Problem::not_found(if elsewhere {
            "no such MCP session on this node: a session lives on the node that opened it (the first part of its id); ask that node"
        } else {
            "no such MCP session of this mission"
        }));
    };
    let by = format!("principal:{}", caller.principal.name);
    tracing::info!(session = %x.id, mission = %x.mission, by = %by, "MCP session ended");
    let reason = format!("ended by {}", caller.principal.name);
    end_session_by(&s, &x, &reason, Some("DELETE"), Some(&by)).await?;
    Ok(StatusCode::NO_CONTENT)
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
    refusal_on(s, server, session, claims, method, None, code, detail).await
}

/// A refusal before any decision, recorded with what it was about: the
/// tool (or resource, or prompt) when the request named one that could be
/// read, the server otherwise (tool `-`).
#[expect(
    clippy::too_many_arguments,
    reason = "one record's fields, each from a different stage"
)]
async fn refusal_on(
    s: &AppState,
    server: &McpServer,
    session: Option<&str>,
    claims: &MissionClaims,
    method: &str,
    resource: Option<&mandate_core::ResourceRef>,
    code: &str,
    detail: &str,
) -> Result<(), Problem> {
    let unnamed = mandate_core::ResourceRef {
        kind: mandate_core::ResourceKind::Tool {
            server: server.name().to_owned(),
            tool: "-".to_owned(),
        },
        tags: std::collections::BTreeMap::new(),
    };
    let resource = resource.unwrap_or(&unnamed);
    let mut extra = serde_json::Map::new();
    extra.insert("enforcement_point".into(), "mcp".into());
    extra.insert("mcp_server".into(), server.name().into());
    extra.insert("mcp_method".into(), method.into());
    if let Some(sid) = session {
        extra.insert("mcp_session".into(), sid.into());
    }
    record_refusal(s, Door::Mcp, resource, claims, code, detail, extra).await
}

/// The first answer (a message without `method`) on `rx` within `timeout`:
/// `Ok(None)` if the channel closed first, `Err` if time ran out.
async fn answer_within(
    rx: &mut mpsc::Receiver<Value>,
    timeout: Duration,
) -> Result<Option<Value>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, async {
        while let Some(m) = rx.recv().await {
            if m.get("method").is_none() {
                return Some(m);
            }
        }
        None
    })
    .await
}

/// The tools the server lists (all pages), read by the gateway itself.
async fn known_tools(x: &Arc<Session>) -> Result<BTreeSet<String>, String> {
    if let Some(t) = x.st.lock().ok().and_then(|st| st.tools.clone()) {
        return Ok(t);
    }
    let mut names = BTreeSet::new();
    let mut headers = HashMap::new();
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
                let mirrored = crate::mcp_headers::mirrored_params(t.get("inputSchema"));
                if !mirrored.is_empty() {
                    headers.insert(n.to_owned(), mirrored);
                }
            }
        }
        cursor = r.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    if let Ok(mut st) = x.st.lock() {
        st.tools = Some(names.clone());
        st.tool_headers = headers;
    }
    Ok(names)
}

/// The refusal of a request on a session (or stateless channel) whose
/// server a reload changed or removed since the session was opened:
/// recorded, and answered `404` (a session-era client initializes again; a
/// stateless one sends the request again, to a channel opened with the
/// server as now configured). `None` while the server is as configured.
async fn reconfigured(
    s: &AppState,
    x: &Arc<Session>,
    caller: &Caller,
    id: &Value,
    method: &str,
) -> Result<Option<Response>, Problem> {
    let live = s.gateways();
    if live
        .mcp_servers
        .get(x.server.name())
        .is_some_and(|m| Arc::ptr_eq(m, &x.server))
    {
        return Ok(None);
    }
    let detail = "this MCP server was reconfigured (a configuration reload) while the request waited; send it again";
    refusal_on(
        s,
        &x.server,
        Some(&x.id),
        &caller.claims,
        method,
        None,
        "unknown_session",
        detail,
    )
    .await?;
    Ok(Some(rpc_reply(
        StatusCode::NOT_FOUND,
        id,
        INVALID_REQUEST,
        detail,
    )))
}

async fn request(
    s: &AppState,
    x: &Arc<Session>,
    caller: &Caller,
    id: Value,
    method: &str,
    mut msg: Value,
    modern: Option<&stateless::Modern>,
) -> Result<Response, Problem> {
    // What the agent writes under Mandate's names is not Mandate's word:
    // the server never gets it.
    if let Some(meta) = msg
        .get_mut("params")
        .and_then(|p| p.get_mut("_meta"))
        .and_then(Value::as_object_mut)
    {
        meta.retain(|k, _| !k.starts_with("io.mandate/"));
    }
    let progress = msg
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .cloned();
    // A session (or channel) whose server a reload changed or removed
    // takes no new request (ADR 0028), however long ago this one found it:
    // a stateless retry waits for its approval first. Decided now, it
    // would run on the configuration the operator just replaced.
    if let Some(r) = reconfigured(s, x, caller, &id, method).await? {
        return Ok(r);
    }
    // Registered first: a duplicate id is refused before any decision.
    let (mut flight, mut rx) = match x.register(&id, progress) {
        Ok(r) => r,
        Err(e) => return Ok(rpc_reply(StatusCode::OK, &id, INVALID_REQUEST, e)),
    };
    msg["id"] = json!(flight.n);
    if let Some(p) = x.upstream_progress(flight.n) {
        msg["params"]["_meta"]["progressToken"] = p;
    }
    // What the call's answer taints the mission with, and how the source
    // is named: a gated call's by its tool (or the server), an ungated
    // one's (a listing) by the server's metadata labels.
    let mut taint = (
        x.server.taint_metadata().to_vec(),
        format!("mcp {} {method}", x.server.name()),
    );
    let outbound = if GATED.contains(&method) {
        let id = &id;
        let refuse = |tag: &'static str, detail: String, on: Option<mandate_core::ResourceRef>| async move {
            refusal_on(
                s,
                &x.server,
                Some(&x.id),
                &caller.claims,
                method,
                on.as_ref(),
                tag,
                &detail,
            )
            .await?;
            Ok::<_, Problem>(rpc_reply(StatusCode::OK, id, INVALID_PARAMS, detail))
        };
        let mapped = match x.server.map(method, msg.get("params")) {
            Ok(m) => m,
            Err(e) => return refuse("invalid_params", e.0, None).await,
        };
        if method == "tools/call" {
            let tool = msg["params"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match known_tools(x).await {
                Ok(known) if known.contains(&tool) => {}
                Ok(_) => {
                    let detail = format!("the server `{}` lists no tool `{tool}`", x.server.name());
                    return refuse("unknown_tool", detail, Some(mapped.resource.clone())).await;
                }
                Err(e) => {
                    s.0.metrics.upstream_error(
                        Door::Mcp,
                        x.server.name(),
                        UpstreamError::ServerError,
                    );
                    return refuse("upstream_error", e, Some(mapped.resource.clone())).await;
                }
            }
        }
        // The listing may have taken a while: the same once more, just
        // before the decision.
        if let Some(r) = reconfigured(s, x, caller, id, method).await? {
            return Ok(r);
        }
        let arguments = msg["params"]
            .get("arguments")
            .and_then(Value::as_object)
            .cloned();
        let call = Call {
            action: &mapped.action,
            resource: &mapped.resource,
            context: &mapped.context,
            justification: String::new(),
            required: x.server.required_trust(),
            attestation: x.server.config.attestation.as_ref(),
            arguments: arguments.as_ref(),
            claim: Some(caller.claim.clone()),
        };
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
                arguments.clone().map_or_else(|| json!({}), Value::Object),
            );
        }
        let name = ["name", "uri"]
            .iter()
            .find_map(|k| msg["params"][*k].as_str())
            .unwrap_or_default()
            .to_owned();
        taint = (
            x.server.taint_for(method, &name),
            format!("mcp {} {method} {name}", x.server.name()),
        );
        // INVARIANT: the decision is durable before anything is forwarded
        // or answered. The message goes into the pipeline and comes back
        // only inside the permit of an Allow.
        let (resp, permit) = enforce(
            s,
            Door::Mcp,
            "mcp",
            &caller.state,
            &call,
            &Who::of(&caller.claims),
            extra,
            msg,
        )
        .await?;
        match permit {
            Some(p) => Outbound::Gated(p),
            None => {
                let answer = match modern {
                    Some(m) => stateless::refused(m, id, method, &resp),
                    None => refused(id, method, &resp),
                };
                return Ok(json_response(StatusCode::OK, &answer));
            }
        }
    } else {
        Outbound::Ungated(msg)
    };
    // Open until the answer is in (or given up on).
    let forward_span = tracing::debug_span!("forward", method);
    if let Err(e) = x.send_request(&mut flight, outbound) {
        s.0.metrics
            .upstream_error(Door::Mcp, x.server.name(), UpstreamError::Unreachable);
        return Ok(rpc_reply(StatusCode::BAD_GATEWAY, &id, INTERNAL_ERROR, e));
    }
    let sent = Instant::now();
    let deadline = tokio::time::Instant::now() + x.server.timeout();
    let (labels, via) = taint;
    let answering = Answering {
        s: s.clone(),
        x: Arc::clone(x),
        mission: caller.state.mission().clone(),
        method: method.to_owned(),
        id,
        labels,
        via,
        // How a stateless answer is completed: as from a server of the
        // session era, or of 2026-07-28 (which may ask the client for
        // input).
        modern: modern.map(|_| x.upstream_modern().then(|| x.allowed())),
        sent,
        _span: forward_span,
    };
    // A stateless answer that comes at once goes back as one JSON object,
    // with the HTTP status that revision gives its protocol errors;
    // anything slower, or with progress before it, streams.
    let mut early = None;
    if answering.modern.is_some() {
        let quick = (tokio::time::Instant::now() + QUICK).min(deadline);
        match tokio::time::timeout_at(quick, rx.recv()).await {
            Ok(Some(m)) if m.get("method").is_none() => {
                let answer = match answering.shape(m).await {
                    Ok(v) | Err(v) => v,
                };
                drop(flight);
                return Ok(json_response(stateless::status_of(&answer), &answer));
            }
            Ok(m) => early = m,
            Err(_) => {}
        }
    }
    // The answer streams back, with the progress and requests of the server
    // that belong to it. A client that goes away (or stops reading) cancels
    // the request upstream; nothing stays pending.
    let (out_tx, out_rx) = mpsc::channel::<Value>(16);
    tokio::spawn(async move {
        let _flight = flight;
        if let Some(m) = early
            && !answering.forward(m, &out_tx, deadline).await
        {
            return;
        }
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    if !answering.forward(m, &out_tx, deadline).await {
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    answering.s.0.metrics.upstream_error(Door::Mcp, answering.x.server.name(), UpstreamError::Timeout);
                    let _ = out_tx.try_send(rpc_error(&answering.id, TIMEOUT, "the MCP server did not answer in time", None));
                    break;
                }
                () = out_tx.closed() => break,
            }
        }
        // `_flight` drops here: if no answer came, the request is forgotten
        // and cancelled upstream.
    });
    Ok(sse(out_rx))
}

/// How long a stateless request's answer is awaited before the response
/// becomes a stream.
const QUICK: Duration = Duration::from_secs(2);

/// What the messages of one request's answer go through on their way to
/// the agent.
struct Answering {
    s: AppState,
    x: Arc<Session>,
    mission: Mission,
    method: String,
    id: Value,
    labels: Vec<String>,
    via: String,
    modern: Option<Option<stateless::Allowed>>,
    /// When the request went to the server.
    sent: Instant,
    /// The `forward` stage's span, open while the answer is awaited.
    _span: tracing::Span,
}

impl Answering {
    /// A message of the server, as the agent gets it: the answer filtered
    /// and completed, and whatever it is, the mission tainted by it before
    /// the agent reads any of it (the answer by the call's labels, what
    /// the server sends on its own meanwhile by the server's). `Err`: the
    /// error to send instead (the taint could not be recorded).
    async fn shape(&self, m: Value) -> Result<Value, Value> {
        let last = m.get("method").is_none();
        if last {
            self.s
                .0
                .metrics
                .stage(Door::Mcp, Stage::Forward, self.sent.elapsed());
        }
        let m = if last {
            // Only the gateway speaks as Mandate.
            let m = not_ours(m);
            let m = filter_listing(&self.s, &self.x, &self.mission, &self.method, m).await;
            match &self.modern {
                Some(upstream) => stateless::complete(&self.method, m, *upstream),
                None => m,
            }
        } else {
            m
        };
        let marked = if last {
            crate::api::taint::mark(&self.s, &self.mission, &self.labels, &self.via).await
        } else {
            let via = format!(
                "mcp {} {}",
                self.x.server.name(),
                m.get("method").and_then(Value::as_str).unwrap_or("message")
            );
            crate::api::taint::mark(&self.s, &self.mission, self.x.server.taint_unasked(), &via)
                .await
        };
        match marked {
            Ok(_) => Ok(m),
            Err(_) => Err(rpc_error(
                &self.id,
                INTERNAL_ERROR,
                "the answer could not be recorded as untrusted content; it was withheld",
                None,
            )),
        }
    }

    /// Sends a message on the stream; `false` once the stream is done.
    async fn forward(
        &self,
        m: Value,
        out: &mpsc::Sender<Value>,
        deadline: tokio::time::Instant,
    ) -> bool {
        let last = m.get("method").is_none();
        let m = match self.shape(m).await {
            Ok(m) => m,
            Err(e) => {
                let _ = out.try_send(e);
                return false;
            }
        };
        match tokio::time::timeout_at(deadline, out.send(m)).await {
            Ok(Ok(())) => !last,
            Ok(Err(_)) | Err(_) => false,
        }
    }
}

/// A server's answer without anything that would speak for Mandate:
/// `io.mandate/…` keys in its `_meta`, which the gateway alone writes, and
/// Mandate's own error codes (a denial, an approval to wait for, a
/// timeout), which become an internal error without their `data`.
fn not_ours(mut m: Value) -> Value {
    if let Some(meta) = m
        .get_mut("result")
        .and_then(|r| r.get_mut("_meta"))
        .and_then(Value::as_object_mut)
    {
        meta.retain(|k, _| !k.starts_with("io.mandate/"));
    }
    if let Some(e) = m.get_mut("error").and_then(Value::as_object_mut)
        && e.get("code")
            .and_then(Value::as_i64)
            .is_some_and(|c| matches!(c, DENIED | APPROVAL_REQUIRED | TIMEOUT))
    {
        e.insert("code".into(), json!(INTERNAL_ERROR));
        e.remove("data");
    }
    m
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
        "hop": resp.hop,
    });
    let text = if escalated {
        format!(
            "Mandate: this call needs a person's approval ({}). Approval request {} is pending (an approver runs `mandate approvals approve` on it; the mission's agent may poll {}). Send the same call again once it is approved.",
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
/// `decided_per_call`. Every call is decided on its own regardless. On
/// any doubt (no list, an error), nothing is shown.
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
            mandate_core::names::valid_name(n).then(|| {
                let (a, r) = srv.tool_resource(n);
                (n.to_owned(), a, r)
            })
        }),
        "prompts/list" => ("prompts", |srv, item| {
            let n = item.get("name")?.as_str()?;
            mandate_core::names::valid_name(n).then(|| {
                let (a, r) = srv.prompt_ref(n);
                (n.to_owned(), a, r)
            })
        }),
        "resources/list" => ("resources", |srv, item| {
            let u = item.get("uri")?.as_str()?;
            mandate_core::names::valid_uri(u).then(|| {
                let (a, r) = srv.resource_ref(u);
                (u.to_owned(), a, r)
            })
        }),
        _ => return answer,
    };
    let Some(result) = answer.get_mut("result").and_then(Value::as_object_mut) else {
        return answer;
    };
    let all: Vec<Value> = match result.remove(field) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    result.insert(field.into(), json!([]));
    let keyed: Vec<Option<(String, String, mandate_core::ResourceRef)>> =
        all.iter().map(|i| key_of(&x.server, i)).collect();
    let asks: Vec<(String, mandate_core::ResourceRef)> = keyed
        .iter()
        .flatten()
        .map(|(_, a, r)| (a.clone(), r.clone()))
        .collect();
    // A server that only serves some attested code lists nothing to a
    // mission whose attestation does not meet it: every call would be
    // refused.
    let unmet = x.server.config.attestation.as_ref().is_some_and(|r| {
        mission
            .attestation
            .as_ref()
            .is_none_or(|a| r.check(a).is_err())
    });
    let outcomes = if unmet {
        asks.iter()
            .map(|_| mandate_core::Outcome::deny(ReasonCode::INSUFFICIENT_TRUST, ""))
            .collect()
    } else {
        let Ok(outcomes) = preview(s, mission, x.server.required_trust(), &asks).await else {
            return answer;
        };
        outcomes
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
            (Decision::Deny, ReasonCode::POLICY_ERROR | ReasonCode::INVALID_REQUEST) => {
                "decided_per_call"
            }
            (Decision::Deny, _) => {
                hidden.push(json!(name));
                continue;
            }
        };
        let mut item = item;
        let Some(obj) = item.as_object_mut() else {
            continue;
        };
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            // Only the gateway speaks as Mandate.
            m.retain(|k, _| !k.starts_with("io.mandate/"));
            m.insert(
                "io.mandate/access".into(),
                json!({ "access": access, "reason": o.code, "policies": o.policies }),
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
        kept.push(item);
    }
    let recorded = s
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
    if recorded.is_ok()
        && let Some(items) = answer
            .get_mut("result")
            .and_then(|r| r.get_mut(field))
            .and_then(Value::as_array_mut)
    {
        *items = kept;
    }
    answer
}
