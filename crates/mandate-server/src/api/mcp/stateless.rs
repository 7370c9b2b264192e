//! The stateless era of MCP (revision 2026-07-28) on `/mcp/{server}`.
//!
//! A `POST` without `Mcp-Session-Id` whose `MCP-Protocol-Version` names no
//! session-era revision (or whose body carries the per-request version) is
//! served on its own, as that revision says:
//!
//! - the headers must agree with the body (`MCP-Protocol-Version` with
//!   `_meta`, `Mcp-Method` with `method`, `Mcp-Name` with `params.name` or
//!   `params.uri`), or the request is refused with `HeaderMismatch` and the
//!   refusal recorded: the gateway decides on the body, and nothing that
//!   routes on the headers can be shown one call while another runs;
//! - a revision the gateway does not speak gets `UnsupportedProtocolVersion`
//!   with the ones it does;
//! - `server/discover` is answered by the gateway, advertising only what
//!   the gateway will serve;
//! - every other request takes the same path as in a session (decision,
//!   permit, filtered listings, taint), over one upstream session per
//!   mission, key and server that the gateway opens itself and keeps while
//!   it is used (the mission's *channel*). The channel speaks 2026-07-28
//!   to a server, local or remote, that answers `server/discover` with it,
//!   and the session era to any other.
//!
//! Filtered listings are `cacheScope: "private"` with `ttlMs: 0`: they
//! differ per mission and change with policy. An escalated call is
//! answered the stateless era's own way, with an `input_required` result:
//! a client that can show a person a URL is asked to (URL-mode
//! elicitation, pointing at the approval); its retry waits a bounded time
//! for the person's decision and is then decided again, and an approval's
//! grant allows it (ADR 0024).

use axum::http::HeaderMap;

use super::*;

/// The revisions of the stateless era the gateway speaks.
pub(super) const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` keys that describe the agent's hop, not the call: not forwarded
/// to a session-era server.
const META_PREFIX: &str = "io.modelcontextprotocol/";

/// MCP's codes (2026-07-28, basic/index "Error codes").
const HEADER_MISMATCH: i64 = -32020;
const MISSING_CAPABILITY: i64 = -32021;
const UNSUPPORTED_VERSION: i64 = -32022;

/// The key of the gateway's own input request: the approval.
const APPROVAL_INPUT: &str = "io.mandate/approval";
/// What `requestState` names an approval by.
const APPROVAL_STATE: &str = "approval:";
/// Longest a retry waits for the decision on a pending approval.
const APPROVAL_WAIT: Duration = Duration::from_secs(30);

/// Requests that may answer `input_required` (MRTR, "Supported Requests").
const MAY_ASK: &[&str] = &["tools/call", "resources/read", "prompts/get"];

/// What a server may ask the agent's client for, on a channel.
#[derive(Debug, Clone, Copy)]
pub(super) struct Allowed {
    pub roots: bool,
    pub elicitation: bool,
}

/// What a stateless request says about its client.
#[derive(Debug, Clone, Copy)]
pub(super) struct Modern {
    /// The client can show a person a URL (URL-mode elicitation).
    url_elicitation: bool,
    /// The person declined to open the approval: asked no further.
    declined: bool,
}

/// Whether the request's `MCP-Protocol-Version` names a revision that is
/// not of the session era (it is then served, or refused, statelessly).
pub(super) fn names_modern(h: &HeaderMap) -> bool {
    h.get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !PROTOCOL_VERSIONS.contains(&v))
}

/// Whether the message carries the stateless era's per-request version.
pub(super) fn carries_meta_version(msg: &Value) -> bool {
    meta(msg).is_some_and(|m| m.contains_key(META_VERSION))
}

fn meta(msg: &Value) -> Option<&serde_json::Map<String, Value>> {
    msg.get("params")?.get("_meta")?.as_object()
}

/// Every revision the gateway speaks, newest first.
fn supported() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .rev()
        .chain(PROTOCOL_VERSIONS.iter().rev())
        .copied()
        .collect()
}

/// Why a request is refused before anything else.
#[derive(Debug)]
struct Bad {
    status: StatusCode,
    code: i64,
    tag: &'static str,
    detail: String,
    data: Option<Value>,
}

impl Bad {
    fn mismatch(detail: impl Into<String>) -> Box<Self> {
        Box::new(Self {
            status: StatusCode::BAD_REQUEST,
            code: HEADER_MISMATCH,
            tag: "header_mismatch",
            detail: detail.into(),
            data: None,
        })
    }
}

/// One header's value, if sent: once, and text.
fn header<'h>(h: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Box<Bad>> {
    let mut all = h.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(Bad::mismatch(format!("more than one `{name}` header")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Bad::mismatch(format!("`{name}` has characters a header may not carry")))
}

/// The request's headers against its body and its revision.
fn check(h: &HeaderMap, method: &str, msg: &Value) -> Result<Modern, Box<Bad>> {
    let Some(version) = header(h, "mcp-protocol-version")? else {
        return Err(Bad::mismatch("`MCP-Protocol-Version` is required"));
    };
    let meta = meta(msg);
    let in_body = meta
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let Some(in_body) = in_body else {
        return Err(Box::new(Bad {
            status: StatusCode::BAD_REQUEST,
            code: INVALID_PARAMS,
            tag: "invalid_params",
            detail: format!("`_meta` must carry `{META_VERSION}`"),
            data: None,
        }));
    };
    if in_body != version {
        return Err(Bad::mismatch(format!(
            "`MCP-Protocol-Version` is `{version}` but the body's `_meta` says `{in_body}`"
        )));
    }
    if !MODERN_VERSIONS.contains(&version) {
        return Err(Box::new(Bad {
            status: StatusCode::BAD_REQUEST,
            code: UNSUPPORTED_VERSION,
            tag: "unsupported_protocol_version",
            detail: format!("protocol version `{version}` is not supported here"),
            data: Some(json!({ "supported": supported(), "requested": version })),
        }));
    }
    match header(h, "mcp-method")? {
        Some(m) if m == method => {}
        Some(m) => {
            return Err(Bad::mismatch(format!(
                "`Mcp-Method` is `{m}` but the body calls `{method}`"
            )));
        }
        None => return Err(Bad::mismatch("`Mcp-Method` is required")),
    }
    let named = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = named {
        let body = msg["params"][field].as_str();
        let Some(sent) = header(h, "mcp-name")? else {
            return Err(Bad::mismatch("`Mcp-Name` is required"));
        };
        let Some(sent) = crate::mcp_headers::decode(sent) else {
            return Err(Bad::mismatch("`Mcp-Name` is not valid Base64 of UTF-8"));
        };
        if body != Some(sent.as_str()) {
            return Err(Bad::mismatch(format!(
                "`Mcp-Name` is `{sent}` but the body names {}",
                body.map_or_else(|| "nothing".to_owned(), |b| format!("`{b}`"))
            )));
        }
    }
    if method != "tools/call" {
        // Only a call's arguments are mirrored: any other such header
        // mirrors nothing the gateway could check.
        check_params(h, &[], &Value::Null)?;
    }
    let Some(caps) = meta
        .and_then(|m| m.get(META_CAPABILITIES))
        .and_then(Value::as_object)
    else {
        return Err(Box::new(Bad {
            status: StatusCode::BAD_REQUEST,
            code: INVALID_PARAMS,
            tag: "invalid_params",
            detail: format!("`_meta` must carry `{META_CAPABILITIES}`"),
            data: None,
        }));
    };
    let url_elicitation = caps
        .get("elicitation")
        .and_then(|e| e.get("url"))
        .is_some_and(Value::is_object);
    Ok(Modern {
        url_elicitation,
        declined: false,
    })
}

/// The `Mcp-Param-*` headers of a `tools/call` against its arguments: each
/// mirrored parameter with a value must come with its header, saying the
/// same (decoded; numbers compared as numbers, integers exactly), a header
/// must not name a value the arguments do not have, and none may mirror a
/// parameter the tool does not (nothing vouches for what it says).
fn check_params(
    h: &HeaderMap,
    mirrored: &[(String, Vec<String>)],
    arguments: &Value,
) -> Result<(), Box<Bad>> {
    for k in h.keys() {
        if let Some(suffix) = k.as_str().strip_prefix("mcp-param-")
            && !mirrored.iter().any(|(n, _)| n.eq_ignore_ascii_case(suffix))
        {
            return Err(Bad::mismatch(format!(
                "`Mcp-Param-{suffix}` mirrors no parameter of the tool"
            )));
        }
    }
    for (name, path) in mirrored {
        let field = format!("mcp-param-{}", name.to_ascii_lowercase());
        let value = path
            .iter()
            .try_fold(arguments, |v, k| v.get(k))
            .filter(|v| !v.is_null());
        match (value, header(h, &field)?) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(Bad::mismatch(format!(
                    "`Mcp-Param-{name}` is sent but the arguments have no value for it"
                )));
            }
            (Some(_), None) => {
                return Err(Bad::mismatch(format!(
                    "`Mcp-Param-{name}` is required: the tool mirrors that argument"
                )));
            }
            (Some(v), Some(sent)) => {
                let Some(sent) = crate::mcp_headers::decode(sent) else {
                    return Err(Bad::mismatch(format!(
                        "`Mcp-Param-{name}` is not valid Base64 of UTF-8"
                    )));
                };
                let same = match v {
                    Value::String(s) => *s == sent,
                    Value::Bool(b) => sent == if *b { "true" } else { "false" },
                    Value::Number(n) => same_number(n, &sent),
                    _ => false,
                };
                if !same {
                    return Err(Bad::mismatch(format!(
                        "`Mcp-Param-{name}` does not match the argument it mirrors"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether a header says the number `n`: an integer exactly (written as
/// an integer, or otherwise — `1e2`, `42.0` — only in the range where a
/// double holds every integer, so `…992` never stands for `…993`), any
/// other number as a double.
fn same_number(n: &serde_json::Number, sent: &str) -> bool {
    /// 2^53 - 1: up to it, every integer is exactly a double.
    const EXACT: f64 = 9_007_199_254_740_991.0;
    let int = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from));
    let Some(int) = int else {
        return sent
            .parse::<f64>()
            .ok()
            .zip(n.as_f64())
            .is_some_and(|(a, b)| a == b);
    };
    if let Ok(s) = sent.parse::<i128>() {
        return s == int;
    }
    sent.parse::<f64>()
        .is_ok_and(|f| f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT && f == int as f64)
}

/// The call's `Mcp-Param-*` headers against the arguments the tool mirrors,
/// as the gateway last read the server's tools; `None` for a tool the
/// server does not list (refused as unknown when decided).
async fn params_agree(
    x: &Arc<Session>,
    h: &HeaderMap,
    tool: &str,
    arguments: &Value,
) -> Option<Result<(), Box<Bad>>> {
    if !known_tools(x).await.is_ok_and(|t| t.contains(tool)) {
        return None;
    }
    let mirrored =
        x.st.lock()
            .ok()
            .and_then(|st| st.tool_headers.get(tool).cloned())
            .unwrap_or_default();
    Some(check_params(h, &mirrored, arguments))
}

/// Serves one stateless message.
pub(super) async fn serve(
    s: &AppState,
    server: &Arc<McpServer>,
    caller: &Caller,
    h: &HeaderMap,
    kind: MessageKind,
    mut msg: Value,
    named: &str,
) -> Result<Response, Problem> {
    let refuse = async |id: &Value, bad: Box<Bad>| {
        refusal(s, server, None, &caller.claims, named, bad.tag, &bad.detail).await?;
        Ok::<_, Problem>(json_response(
            bad.status,
            &rpc_error(id, bad.code, bad.detail, bad.data),
        ))
    };
    let (id, method) = match kind {
        MessageKind::Request { id, method } => (id, method),
        // The revision defines none over HTTP; there is nothing to tie one
        // to, so nothing is forwarded.
        MessageKind::Notification { .. } => return Ok(StatusCode::ACCEPTED.into_response()),
        MessageKind::Response { id } => {
            let bad = Box::new(Bad {
                status: StatusCode::BAD_REQUEST,
                code: INVALID_REQUEST,
                tag: "invalid_request",
                detail: "a stateless client sends no answers: nothing was asked of it".into(),
                data: None,
            });
            return refuse(&id, bad).await;
        }
    };
    let mut modern = match check(h, &method, &msg) {
        Ok(m) => m,
        Err(bad) => return refuse(&id, bad).await,
    };
    match method.as_str() {
        "server/discover" => return discover(s, server, caller, &id).await,
        // Of the session era only.
        "initialize"
        | "ping"
        | "logging/setLevel"
        | "resources/subscribe"
        | "resources/unsubscribe" => {
            let bad = Box::new(Bad {
                status: StatusCode::NOT_FOUND,
                code: METHOD_NOT_FOUND,
                tag: "method_not_found",
                detail: format!("`{method}` is not part of MCP {}", MODERN_VERSIONS[0]),
                data: None,
            });
            return refuse(&id, bad).await;
        }
        _ => {}
    }
    let x = match channel(s, server, caller, &id).await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    if method == "tools/call" {
        // The tool's parameters mirrored into headers must agree with the
        // arguments too (the tool's `x-mcp-header`s, from the listing).
        let tool = msg["params"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let arguments = &msg["params"]["arguments"];
        let mut agree = params_agree(&x, h, &tool, arguments).await;
        if matches!(agree, Some(Err(_))) {
            // The tool may have changed since the gateway read it (a
            // parameter mirrored now, or no longer): checked once more, as
            // the server lists it now.
            if let Ok(mut st) = x.st.lock() {
                st.tools = None;
            }
            agree = params_agree(&x, h, &tool, arguments).await;
        }
        if let Some(Err(bad)) = agree {
            return refuse(&id, bad).await;
        }
    }
    let upstream = x.upstream_modern().then(|| x.allowed());
    let waited_for = take_input(&mut msg, &mut modern, upstream);
    if let Some(apr) = waited_for {
        wait_decided(s, &caller.claims.mission_id, &apr).await;
    }
    request(s, &x, caller, id, &method, msg, Some(&modern)).await
}

/// Takes out of a request what is for the gateway, not the server: the
/// answers to the gateway's own input request and its `requestState`; and,
/// for a server of the session era, the revision's `_meta` keys and any
/// other input (it asked for none). A server of 2026-07-28 (`upstream`)
/// gets the client's `_meta`, without the capabilities it may not use
/// (roots only with `allow_roots`, elicitation only where allowed), and its
/// own input back.
/// Returns the approval a retry waits for, if it names one.
fn take_input(msg: &mut Value, modern: &mut Modern, upstream: Option<Allowed>) -> Option<String> {
    let params = msg.get_mut("params")?.as_object_mut()?;
    if let Some(m) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        match upstream {
            Some(allowed) => {
                if let Some(caps) = m.get_mut(META_CAPABILITIES).and_then(Value::as_object_mut) {
                    if !allowed.roots {
                        caps.remove("roots");
                    }
                    if !allowed.elicitation {
                        caps.remove("elicitation");
                    }
                }
            }
            None => m.retain(|k, _| !k.starts_with(META_PREFIX)),
        }
        if m.is_empty() {
            params.remove("_meta");
        }
    }
    let mut answers = params.remove("inputResponses");
    let state = params.remove("requestState");
    let ours = answers
        .as_mut()
        .and_then(Value::as_object_mut)
        .and_then(|a| a.remove(APPROVAL_INPUT));
    let action = ours
        .as_ref()
        .and_then(|a| a.get("action"))
        .and_then(Value::as_str);
    if matches!(action, Some("decline" | "cancel")) {
        modern.declined = true;
    }
    // Attacker-controlled: only ever the id of an approval to wait for,
    // and only one of the caller's own mission (checked when read).
    let approval = state
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix(APPROVAL_STATE))
        .filter(|id| id.len() <= 64 && mandate_core::names::valid_name(id))
        .map(str::to_owned);
    if let Some(allowed) = upstream {
        // Only answers to what the server may ask: an accepted elicitation
        // or the client's roots, sent unasked, would stand in for a
        // question the gateway does not pass on.
        if let Some(a) = answers.as_mut().and_then(Value::as_object_mut) {
            a.retain(|_, v| may_answer(allowed, v));
        }
        if let Some(a) = answers.filter(|a| a.as_object().is_some_and(|o| !o.is_empty())) {
            params.insert("inputResponses".into(), a);
        }
        if let Some(st) =
            state.filter(|st| !st.as_str().is_some_and(|s| s.starts_with(APPROVAL_STATE)))
        {
            params.insert("requestState".into(), st);
        }
    }
    if modern.declined {
        return None;
    }
    approval
}

/// Whether one of a client's `inputResponses` answers a question `server`
/// may ask: an elicitation's answer (it has `action`) only where
/// elicitation is allowed, the client's roots (`roots`) only with
/// `allow_roots`; a model's (sampling) always, as in a session.
fn may_answer(allowed: Allowed, answer: &Value) -> bool {
    answer.as_object().is_some_and(|a| {
        (allowed.elicitation || !a.contains_key("action"))
            && (allowed.roots || !a.contains_key("roots"))
    })
}

/// A request of the gateway's own to a server of 2026-07-28: with the
/// revision's `_meta`, as the gateway (no client capabilities).
pub(super) fn with_gateway_meta(mut params: Value) -> Value {
    if !params.is_object() {
        params = json!({});
    }
    params["_meta"] = json!({
        META_VERSION: MODERN_VERSIONS[0],
        META_CAPABILITIES: {},
        "io.modelcontextprotocol/clientInfo": {"name": "mandate-gateway", "version": env!("CARGO_PKG_VERSION")},
    });
    params
}

/// Waits (at most [`APPROVAL_WAIT`]) while the approval request `id` of
/// `mission` is pending.
async fn wait_decided(s: &AppState, mission: &MissionId, id: &str) {
    let deadline = tokio::time::Instant::now() + APPROVAL_WAIT;
    // Subscribed before the first read: a decision in between wakes us.
    let mut changed = s.0.approvals_changed.subscribe();
    loop {
        let pending = match s.0.store.approval(id).await {
            Ok(Some(r)) => {
                &r.mission == mission
                    && r.status == mandate_store::ApprovalStatus::Pending
                    && r.expires_at > s.0.clock.now()
            }
            _ => false,
        };
        if !pending {
            return;
        }
        let woke = tokio::time::timeout_at(deadline, async {
            loop {
                match changed.recv().await {
                    Ok(c) if c == id || c == crate::changes::EVERY_APPROVAL => return true,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                }
            }
        })
        .await;
        if !matches!(woke, Ok(true)) {
            return;
        }
    }
}

/// `server/discover`, answered by the gateway: what it serves of the
/// server, and the revisions it speaks.
async fn discover(
    s: &AppState,
    server: &Arc<McpServer>,
    caller: &Caller,
    id: &Value,
) -> Result<Response, Problem> {
    let x = match channel(s, server, caller, id).await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let init = x.st.lock().ok().and_then(|st| st.init.clone());
    let init = init.unwrap_or_else(|| json!({}));
    // The server's instructions are its metadata: untrusted if it is.
    crate::api::taint::mark(
        s,
        caller.state.mission(),
        server.taint_metadata(),
        &format!("mcp {} server/discover", server.name()),
    )
    .await?;
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": supported(),
        "capabilities": advertised(&init["capabilities"]),
        "ttlMs": 0,
        "cacheScope": "private",
    });
    if let Some(info) = init.get("serverInfo").filter(|i| i.is_object()) {
        result["_meta"] = json!({ "io.modelcontextprotocol/serverInfo": info });
    }
    if let Some(i) = init.get("instructions").filter(|i| i.is_string()) {
        result["instructions"] = i.clone();
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    ))
}

/// Of the server's capabilities, what the gateway serves a stateless
/// client: tools, resources (read; no subscriptions), prompts and
/// completions (each decided per request), without change notifications
/// (the gateway opens no stream for them). Logging is not of this revision.
fn advertised(caps: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["tools", "resources", "prompts", "completions"] {
        if caps.get(k).is_some_and(Value::is_object) {
            out.insert(k.into(), json!({}));
        }
    }
    Value::Object(out)
}

/// The mission's channel to `server`: opened (and recorded) on first use.
async fn channel(
    s: &AppState,
    server: &Arc<McpServer>,
    caller: &Caller,
    id: &Value,
) -> Result<Arc<Session>, Response> {
    let key = (
        server.name().to_owned(),
        caller.claims.mission_id.to_string(),
        caller.claims.cnf.jkt.to_string(),
    );
    let open = || {
        let r = s.0.mcp.reg.lock().ok()?;
        let x = r.sessions.get(r.channels.get(&key)?)?;
        // A channel opened with the server as configured before a reload
        // takes no new request: a new one is opened (ADR 0028).
        (!x.is_closed() && Arc::ptr_eq(&x.server, server)).then(|| Arc::clone(x))
    };
    if let Some(x) = open() {
        x.touch();
        return Ok(x);
    }
    let lock = s.0.mcp.channel_lock(&key);
    let _one = lock.lock().await;
    if let Some(x) = open() {
        x.touch();
        return Ok(x);
    }
    let x = open_channel(s, server, caller, id).await?;
    if let Ok(mut r) = s.0.mcp.reg.lock() {
        r.channels.insert(key, x.id.clone());
    }
    Ok(x)
}

async fn open_channel(
    s: &AppState,
    server: &Arc<McpServer>,
    caller: &Caller,
    id: &Value,
) -> Result<Arc<Session>, Response> {
    let mission = &caller.claims.mission_id;
    // Within the mission's limits, as a session (the session idle longest
    // may make way).
    let slot = match take_place(s, server, &caller.claims, id).await {
        Ok(Ok(slot)) => slot,
        Ok(Err(refused)) => return Err(refused),
        Err(p) => return Err(p.into_response()),
    };
    let mut sid = [0u8; 24];
    s.0.rng
        .fill(&mut sid)
        .map_err(|_| Problem::internal().into_response())?;
    let sid = format!("{}.{}", s.0.node, mandate_core::s256(&sid));
    let who = json!({
        "server": server.name(),
        "session": sid,
        "stateless": true,
        "principal": caller.claims.sub.as_str(),
        "agent": caller.claims.act.sub.as_str(),
        "mission": mission.as_str(),
        "jkt": caller.claims.cnf.jkt.to_string(),
    });
    // INVARIANT: the start of a server is recorded before it happens.
    s.audit("mcp.session.opening", who.clone())
        .await
        .map_err(IntoResponse::into_response)?;
    let elicits = may_elicit(s, server, caller.state.mission()).await;
    let x = start_upstream(s, server, caller, &sid, true);
    if let Ok(mut st) = x.st.lock() {
        st.may_elicit = elicits;
    }
    let failed = |detail: String| {
        x.close();
        rpc_reply(StatusCode::BAD_GATEWAY, id, INTERNAL_ERROR, detail)
    };
    let mut opened = who;
    match speak_to(server, &x).await {
        Speaks::Modern(init) => {
            opened["protocol_version"] = json!(MODERN_VERSIONS[0]);
            if let Ok(mut st) = x.st.lock() {
                st.init = Some(init);
                st.upstream_modern = true;
            }
        }
        Speaks::Session => {
            let latest = PROTOCOL_VERSIONS.last().copied().unwrap_or("2025-11-25");
            let params = json!({
                "protocolVersion": latest,
                "capabilities": {},
                "clientInfo": {"name": "mandate-gateway", "version": env!("CARGO_PKG_VERSION")},
            });
            let init = match x.ask("initialize", params, server.timeout()).await {
                Ok(r) => r,
                Err(e) => return Err(failed(e)),
            };
            let version = init.get("protocolVersion").and_then(Value::as_str);
            let Some(version) = version.filter(|v| PROTOCOL_VERSIONS.contains(v)) else {
                return Err(failed(format!(
                    "the MCP server speaks another protocol revision than the gateway ({})",
                    PROTOCOL_VERSIONS.join(", ")
                )));
            };
            opened["protocol_version"] = json!(version);
            let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            if let Err(e) = x.send_up(Outbound::Ungated(note)) {
                return Err(failed(e.to_owned()));
            }
            if let Ok(mut st) = x.st.lock() {
                st.init = Some(init);
            }
        }
        Speaks::Neither(e) => return Err(failed(e)),
    }
    if let Err(p) = s.audit("mcp.session.opened", opened).await {
        x.close();
        return Err(p.into_response());
    }
    {
        let Ok(mut r) = s.0.mcp.reg.lock() else {
            return Err(failed("internal error".into()));
        };
        if x.is_closed() {
            drop(r);
            return Err(failed("the MCP server stopped while starting".into()));
        }
        r.sessions.insert(sid, Arc::clone(&x));
    }
    drop(slot);
    x.touch();
    Ok(x)
}

/// What a channel speaks to its server.
enum Speaks {
    /// 2026-07-28: what its `server/discover` said (capabilities, identity,
    /// instructions), as `initialize` would have.
    Modern(Value),
    /// The session era: `initialize` next.
    Session,
    /// Nothing the gateway can use (why).
    Neither(String),
}

/// Longest the gateway waits for a server's `server/discover` before
/// speaking the session era to it (a server of that era may not answer a
/// method it does not know).
const PROBE: Duration = Duration::from_secs(5);

/// Asks the server, as its configuration says, whether it speaks
/// 2026-07-28 (`server/discover`).
async fn speak_to(server: &McpServer, x: &Arc<Session>) -> Speaks {
    let mode = server.upstream_protocol();
    if mode == crate::mcp_servers::UpstreamProtocol::Session {
        return Speaks::Session;
    }
    let wait = if mode == crate::mcp_servers::UpstreamProtocol::Auto {
        PROBE.min(server.timeout())
    } else {
        server.timeout()
    };
    let asked = x
        .ask("server/discover", with_gateway_meta(json!({})), wait)
        .await;
    let modern = asked.as_ref().ok().filter(|r| {
        r.get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(MODERN_VERSIONS[0])))
    });
    match (modern, mode) {
        (Some(r), _) => Speaks::Modern(json!({
            "capabilities": r.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            "serverInfo": r.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/serverInfo")).cloned().unwrap_or(Value::Null),
            "instructions": r.get("instructions").cloned().unwrap_or(Value::Null),
        })),
        (None, crate::mcp_servers::UpstreamProtocol::Auto) => Speaks::Session,
        (None, _) => Speaks::Neither(format!(
            "the MCP server `{}` does not speak MCP {} (`upstream_protocol`)",
            server.name(),
            MODERN_VERSIONS[0]
        )),
    }
}

/// The answer to a call that was not allowed. An escalation of a request
/// that may ask for input is `input_required`: the client shows the person
/// the approval (if it can show a URL), retries, and the retry waits for
/// the decision. Otherwise as in a session.
pub(super) fn refused(m: &Modern, id: &Value, method: &str, resp: &DecideResponse) -> Value {
    let escalated = resp.decision == Decision::Escalate;
    if let (true, false, Some(apr)) = (escalated, m.declined, &resp.approval_id)
        && MAY_ASK.contains(&method)
    {
        let mut result = json!({
            "resultType": "input_required",
            "requestState": format!("{APPROVAL_STATE}{apr}"),
            "_meta": {"io.mandate/decision": {
                "decision": resp.decision.as_str(),
                "code": "approval_required",
                "reason": resp.code,
                "policies": resp.policies,
                "approval_id": apr,
                "approval_url": resp.approval_url,
            }},
        });
        if m.url_elicitation
            && let Some(url) = &resp.approval_url
        {
            let message = format!(
                "Mandate: this call needs a person's approval ({}). Approval request {apr}: an approver decides it (`mandate approvals approve {apr}`); the call goes ahead once it is approved.",
                resp.code
            );
            result["inputRequests"] = json!({ APPROVAL_INPUT: {
                "method": "elicitation/create",
                "params": {"mode": "url", "message": message, "url": url},
            }});
        }
        return json!({"jsonrpc": "2.0", "id": id, "result": result});
    }
    complete(method, super::refused(id, method, resp), None)
}

/// The HTTP status of a stateless answer sent as one JSON object: `400`
/// for the revision's own protocol errors (a header mismatch, a missing
/// client capability, an unsupported version), as it asks; `200` otherwise.
pub(super) fn status_of(answer: &Value) -> StatusCode {
    let code = answer
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64);
    match code {
        Some(HEADER_MISMATCH | MISSING_CAPABILITY | UNSUPPORTED_VERSION) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// A final answer as the stateless era has it: `resultType`, and on the
/// listings the gateway filters per mission, no caching beyond the caller.
///
/// A server of the session era (`upstream` is `None`) asks the client
/// nothing in a result: one dressed as `input_required` (its own input
/// requests, a forged `requestState`) would reach the agent's client past
/// the gateway, which refuses such requests of a server; it is complete.
/// A server of 2026-07-28 may ask, within what a session allows it: no
/// roots, elicitation only where allowed, nothing in the gateway's name.
pub(super) fn complete(method: &str, mut m: Value, upstream: Option<Allowed>) -> Value {
    let id = m.get("id").cloned().unwrap_or(Value::Null);
    let Some(r) = m.get_mut("result").and_then(Value::as_object_mut) else {
        return m;
    };
    let asks = r.get("resultType").and_then(Value::as_str) == Some("input_required");
    match upstream {
        Some(allowed) if asks && MAY_ASK.contains(&method) => {
            // Only a map of requests is vetted: anything else is not
            // passed on.
            if r.get("inputRequests").is_some_and(|q| !q.is_object()) {
                r.remove("inputRequests");
            }
            if let Some(reqs) = r.get_mut("inputRequests").and_then(Value::as_object_mut) {
                reqs.retain(|k, v| {
                    let asked = v.get("method").and_then(Value::as_str);
                    !k.starts_with("io.mandate/")
                        && (asked == Some("sampling/createMessage")
                            || (asked == Some("elicitation/create") && allowed.elicitation)
                            || (asked == Some("roots/list") && allowed.roots))
                });
                // No more at once than a session lets a server have pending.
                if reqs.len() > MAX_SERVER_REQUESTS {
                    return rpc_error(
                        &id,
                        INTERNAL_ERROR,
                        format!(
                            "the MCP server asked the client more at once than the gateway passes on (at most {MAX_SERVER_REQUESTS})"
                        ),
                        None,
                    );
                }
                if reqs.is_empty() {
                    r.remove("inputRequests");
                }
            }
            if r.get("requestState")
                .and_then(Value::as_str)
                .is_some_and(|st| st.starts_with(APPROVAL_STATE))
            {
                r.remove("requestState");
            }
            if !r.contains_key("inputRequests") && !r.contains_key("requestState") {
                return rpc_error(
                    &id,
                    INTERNAL_ERROR,
                    "the MCP server asked the client for input the gateway does not pass on",
                    None,
                );
            }
            return m;
        }
        _ => {
            r.insert("resultType".into(), json!("complete"));
            r.remove("inputRequests");
            r.remove("requestState");
        }
    }
    if matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/read"
            | "resources/templates/list"
    ) {
        r.insert("ttlMs".into(), json!(0));
        r.insert("cacheScope".into(), json!("private"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": name, "arguments": {},
            "_meta": {META_VERSION: "2026-07-28", META_CAPABILITIES: {"elicitation": {"url": {}}}},
        }})
    }

    #[test]
    fn headers_must_agree_with_the_body() {
        let ok = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "git_status"),
        ];
        let m = check(&headers(&ok), "tools/call", &call("git_status")).unwrap();
        assert!(m.url_elicitation);
        let e = check(&headers(&ok), "tools/call", &call("git_reset"))
            .err()
            .unwrap();
        assert_eq!((e.code, e.tag), (HEADER_MISMATCH, "header_mismatch"));
        // Base64 of the same name agrees; of another does not.
        let b64 = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2l0X3N0YXR1cw==?="),
        ];
        assert!(check(&headers(&b64), "tools/call", &call("git_status")).is_ok());
        assert!(check(&headers(&b64), "tools/call", &call("git_reset")).is_err());
        // Missing, doubled or contradicting headers.
        let no_name = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
        ];
        assert!(check(&headers(&no_name), "tools/call", &call("git_status")).is_err());
        let two = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "git_status"),
            ("mcp-name", "git_reset"),
        ];
        assert!(check(&headers(&two), "tools/call", &call("git_status")).is_err());
        let method = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
            ("mcp-name", "git_status"),
        ];
        assert!(check(&headers(&method), "tools/call", &call("git_status")).is_err());
    }

    #[test]
    fn mirrored_parameters_must_agree_with_the_arguments() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limits": {"type": "object", "properties": {"max": {"type": "integer", "x-mcp-header": "Max"}}},
            "items": {"type": "array", "items": {"properties": {"x": {"x-mcp-header": "X"}}}},
        }});
        let mirrored = crate::mcp_headers::mirrored_params(Some(&schema));
        assert_eq!(mirrored.len(), 2, "{mirrored:?}");
        let args = json!({"region": "us-west1", "limits": {"max": 42}});
        let ok = |pairs: &[(&'static str, &str)]| {
            check_params(&headers(pairs), &mirrored, &args).is_ok()
        };
        assert!(ok(&[
            ("mcp-param-region", "us-west1"),
            ("mcp-param-max", "42")
        ]));
        assert!(ok(&[
            ("mcp-param-region", "=?base64?dXMtd2VzdDE=?="),
            ("mcp-param-max", "42.0")
        ]));
        assert!(!ok(&[
            ("mcp-param-region", "eu-west1"),
            ("mcp-param-max", "42")
        ]));
        assert!(
            !ok(&[("mcp-param-max", "42")]),
            "a mirrored argument needs its header"
        );
        assert!(
            !ok(&[
                ("mcp-param-region", "=?base64?dXMtd2VzdDE?="),
                ("mcp-param-max", "42")
            ]),
            "bad padding"
        );
        // A header that mirrors nothing, on a call or on anything else.
        assert!(!ok(&[
            ("mcp-param-region", "us-west1"),
            ("mcp-param-max", "42"),
            ("mcp-param-tenant", "acme")
        ]));
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_VERSION: "2026-07-28", META_CAPABILITIES: {}}}});
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
            ("mcp-param-region", "x"),
        ]);
        assert_eq!(
            check(&h, "tools/list", &list).err().unwrap().code,
            HEADER_MISMATCH
        );
        // Integers exactly; spelt otherwise only where a double is exact.
        let big = json!({"region": "us-west1", "limits": {"max": 9_007_199_254_740_993_u64}});
        let agrees = |max: &str| {
            check_params(
                &headers(&[("mcp-param-region", "us-west1"), ("mcp-param-max", max)]),
                &mirrored,
                &big,
            )
            .is_ok()
        };
        assert!(agrees("9007199254740993"));
        assert!(!agrees("9007199254740992"));
        assert!(!agrees("9007199254740992.0"));
        assert!(!agrees("9.007199254740993e15"));
        assert!(ok(&[
            ("mcp-param-region", "us-west1"),
            ("mcp-param-max", "4.2e1")
        ]));
        // A header for a value the arguments do not have.
        let none = json!({"limits": {}});
        assert!(check_params(&headers(&[("mcp-param-region", "x")]), &mirrored, &none).is_err());
        assert!(check_params(&headers(&[]), &mirrored, &none).is_ok());
    }

    #[test]
    fn an_unknown_revision_is_told_the_known_ones() {
        let h = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ]);
        let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_VERSION: "2099-01-01", META_CAPABILITIES: {}}}});
        let e = check(&h, "tools/list", &msg).err().unwrap();
        assert_eq!(e.code, UNSUPPORTED_VERSION);
        let supported = &e.data.unwrap()["supported"];
        assert_eq!(supported[0], "2026-07-28");
        assert!(supported.as_array().unwrap().contains(&json!("2025-11-25")));
        // The header and the body disagreeing is a mismatch, whatever the
        // versions.
        let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_VERSION: "2026-07-28", META_CAPABILITIES: {}}}});
        assert_eq!(
            check(&h, "tools/list", &msg).err().unwrap().code,
            HEADER_MISMATCH
        );
    }

    #[test]
    fn the_gateways_own_input_is_taken_out_and_only_an_approval_id_is_kept() {
        let mut m = Modern {
            url_elicitation: true,
            declined: false,
        };
        let mut msg = call("git_status");
        msg["params"]["requestState"] = json!("approval:apr_abc");
        msg["params"]["inputResponses"] = json!({APPROVAL_INPUT: {"action": "accept"}});
        msg["params"]["_meta"]["progressToken"] = json!(7);
        assert_eq!(
            take_input(&mut msg, &mut m, None).as_deref(),
            Some("apr_abc")
        );
        assert_eq!(msg["params"]["_meta"], json!({"progressToken": 7}));
        assert!(msg["params"].get("requestState").is_none());
        assert!(msg["params"].get("inputResponses").is_none());
        let mut msg = call("git_status");
        msg["params"]["requestState"] = json!("approval:../../x");
        assert_eq!(take_input(&mut msg, &mut m, None), None);
        assert!(msg["params"].get("_meta").is_none());
        let mut msg = call("git_status");
        msg["params"]["requestState"] = json!("approval:apr_abc");
        msg["params"]["inputResponses"] = json!({APPROVAL_INPUT: {"action": "decline"}});
        assert_eq!(take_input(&mut msg, &mut m, None), None);
        assert!(m.declined);
    }

    #[test]
    fn a_page_rebound_to_the_gateway_is_refused() {
        let issuer = "http://127.0.0.1:7878";
        let ok = |pairs: &[(&'static str, &str)]| rebinding(issuer, &headers(pairs)).is_none();
        assert!(ok(&[("host", "127.0.0.1:7878")]));
        assert!(
            ok(&[("host", "10.0.0.2:7878")]),
            "an address: nothing to rebind"
        );
        assert!(ok(&[("host", "[::1]:7878")]));
        assert!(ok(&[("host", "[::ffff:127.0.0.1]")]));
        assert!(
            !ok(&[("host", "[evil.example]:7878")]),
            "brackets hold an address or nothing"
        );
        assert!(ok(&[("origin", "http://127.0.0.1:7878")]));
        assert!(!ok(&[("host", "evil.example:7878")]));
        assert!(
            !ok(&[("host", "localhost:7878")]),
            "a name, not this authority's"
        );
        assert!(!ok(&[("origin", "http://evil.example:7878")]));
        assert!(!ok(&[("origin", "null")]));
        assert!(!ok(&[("origin", "https://127.0.0.1:7878")]));
        let named = "https://mandate.example.com";
        let ok = |pairs: &[(&'static str, &str)]| rebinding(named, &headers(pairs)).is_none();
        assert!(ok(&[
            ("host", "mandate.example.com"),
            ("origin", "https://mandate.example.com")
        ]));
        assert!(ok(&[("host", "MANDATE.example.com:443")]));
        assert!(!ok(&[("host", "mandate.example.com.evil.example")]));
    }

    #[test]
    fn a_server_of_2026_07_28_gets_its_own_input_back_and_asks_within_limits() {
        let server = Allowed {
            roots: false,
            elicitation: false,
        };
        let mut m = Modern {
            url_elicitation: true,
            declined: false,
        };
        let mut msg = call("git_status");
        msg["params"]["_meta"][META_CAPABILITIES] =
            json!({"roots": {}, "sampling": {}, "elicitation": {"form": {}}});
        msg["params"]["requestState"] = json!("server-state");
        let sampled =
            json!({"role": "assistant", "content": {"type": "text", "text": "x"}, "model": "m"});
        let answers = json!({"why": sampled, "name": {"action": "accept"},
            "roots": {"roots": [{"uri": "file:///"}]}, "odd": 7, APPROVAL_INPUT: {"action": "accept"}});
        msg["params"]["inputResponses"] = answers.clone();
        assert_eq!(take_input(&mut msg, &mut m, Some(server)), None);
        let p = &msg["params"];
        assert_eq!(p["requestState"], "server-state");
        // Only answers to what the server may ask.
        assert_eq!(p["inputResponses"], json!({"why": sampled}));
        assert_eq!(p["_meta"][META_VERSION], "2026-07-28");
        // Never the client's roots; elicitation only where allowed.
        assert_eq!(p["_meta"][META_CAPABILITIES], json!({"sampling": {}}));
        let open = Allowed {
            roots: true,
            elicitation: true,
        };
        let mut msg = call("git_status");
        msg["params"]["inputResponses"] = answers;
        take_input(&mut msg, &mut m, Some(open));
        let kept: Vec<&String> = msg["params"]["inputResponses"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(kept, ["why", "name", "roots"]);
        // The gateway's own state is never the server's.
        let mut msg = call("git_status");
        msg["params"]["requestState"] = json!("approval:apr_abc");
        assert_eq!(
            take_input(&mut msg, &mut m, Some(server)).as_deref(),
            Some("apr_abc")
        );
        assert!(msg["params"].get("requestState").is_none());

        let asking = |reqs: Value| {
            json!({"jsonrpc": "2.0", "id": 1, "result": {"resultType": "input_required",
                "inputRequests": reqs, "requestState": "s"}})
        };
        let m = complete(
            "tools/call",
            asking(json!({
                "a": {"method": "sampling/createMessage", "params": {}},
                "b": {"method": "roots/list", "params": {}},
                "c": {"method": "elicitation/create", "params": {}},
                "io.mandate/approval": {"method": "sampling/createMessage", "params": {}},
            })),
            Some(server),
        );
        assert_eq!(m["result"]["resultType"], "input_required");
        let kept: Vec<&String> = m["result"]["inputRequests"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(kept, ["a"]);
        let allowed = Allowed {
            roots: false,
            elicitation: true,
        };
        let m = complete(
            "tools/call",
            asking(json!({"c": {"method": "elicitation/create", "params": {}}})),
            Some(allowed),
        );
        assert!(m["result"]["inputRequests"].get("c").is_some());
        // Only a map of requests, and no more than a server may have
        // pending in a session.
        let m = complete(
            "tools/call",
            asking(json!([{"method": "roots/list"}])),
            Some(server),
        );
        assert!(m["result"].get("inputRequests").is_none(), "{m}");
        let many: serde_json::Map<String, Value> = (0..=MAX_SERVER_REQUESTS)
            .map(|i| (format!("q{i}"), json!({"method": "sampling/createMessage"})))
            .collect();
        let m = complete("tools/call", asking(Value::Object(many)), Some(server));
        assert!(m.get("error").is_some(), "{m}");
        // Nothing left to ask: an error, not an empty question.
        let m = complete(
            "tools/call",
            json!({"jsonrpc": "2.0", "id": 1, "result": {"resultType": "input_required",
                "inputRequests": {"b": {"method": "roots/list"}}}}),
            Some(server),
        );
        assert!(m.get("error").is_some(), "{m}");
        // Only where the revision allows it.
        let m = complete("tools/list", asking(json!({})), Some(server));
        assert_eq!(m["result"]["resultType"], "complete");
    }

    #[test]
    fn filtered_listings_are_private_and_not_cached() {
        let m = complete(
            "tools/list",
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "cacheScope": "public", "ttlMs": 60000}}),
            None,
        );
        assert_eq!(m["result"]["cacheScope"], "private");
        assert_eq!(m["result"]["ttlMs"], 0);
        assert_eq!(m["result"]["resultType"], "complete");
        // A session-era server's result asks the client nothing.
        let m = complete(
            "tools/call",
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [],
                "resultType": "input_required", "requestState": "approval:apr_x",
                "inputRequests": {"io.mandate/approval": {"method": "elicitation/create"}}}}),
            None,
        );
        assert_eq!(
            m["result"],
            json!({"content": [], "resultType": "complete"})
        );
        let e = complete(
            "tools/call",
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1}}),
            None,
        );
        assert!(e["error"].get("resultType").is_none());
    }
}
