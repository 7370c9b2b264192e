//! A client of the MCP gateway's stateless era (2026-07-28) for the attack
//! tests: messages with the per-request `_meta`, the headers a client of
//! that revision sends, signed by the mission key (RFC 9421), and the
//! answer as one JSON object or the messages of an event stream.
#![allow(dead_code, reason = "each test file uses a part of it")]

use std::time::Duration;

use mandate_client::MissionAgent;
use serde_json::{Value, json};

/// The revision.
pub const VERSION: &str = "2026-07-28";

/// A stateless message: `params` with the per-request `_meta` (revision
/// and capabilities: URL-mode elicitation).
pub fn modern(id: Value, method: &str, params: Value) -> Value {
    let mut params = if params.is_null() { json!({}) } else { params };
    let meta = params
        .as_object_mut()
        .unwrap()
        .entry("_meta")
        .or_insert_with(|| json!({}));
    meta["io.modelcontextprotocol/protocolVersion"] = json!(VERSION);
    meta["io.modelcontextprotocol/clientCapabilities"] = json!({"elicitation": {"url": {}}});
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

pub fn call(id: u64, tool: &str, args: Value) -> Value {
    modern(
        json!(id),
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
}

/// The headers a 2026-07-28 client sends with `method` (and `name`).
pub fn headers_for(method: &str, name: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![
        ("MCP-Protocol-Version".to_owned(), VERSION.to_owned()),
        ("Mcp-Method".to_owned(), method.to_owned()),
    ];
    if let Some(n) = name {
        h.push(("Mcp-Name".to_owned(), n.to_owned()));
    }
    h
}

/// The headers for `msg` as its client would send them.
pub fn headers_of(msg: &Value) -> Vec<(String, String)> {
    let method = msg["method"].as_str().unwrap();
    let name = msg["params"]["name"]
        .as_str()
        .or_else(|| msg["params"]["uri"].as_str());
    headers_for(method, name)
}

/// One answer: the HTTP status, whether it streamed, the last JSON-RPC
/// message and everything streamed before it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub streamed: bool,
    pub body: Value,
    pub before: Vec<Value>,
}

/// A request signed by the mission key, not yet sent; `headers` are added
/// as given (appended: a name twice is sent twice).
pub async fn signed(
    agent: &mut MissionAgent,
    url: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> reqwest::RequestBuilder {
    let mut rb = agent
        .signed_request(
            "POST",
            url,
            Some(("application/json", body.to_vec())),
            None,
            &[],
        )
        .await
        .unwrap()
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    rb
}

pub async fn answer(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let streamed = r.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    });
    let text = r.text().await.unwrap();
    if !streamed {
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }))
        };
        return Answer {
            status,
            streamed,
            body,
            before: Vec::new(),
        };
    }
    let mut all: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let body = all.pop().unwrap_or(Value::Null);
    Answer {
        status,
        streamed,
        body,
        before: all,
    }
}

/// Sends `body` (raw text) with `headers`.
pub async fn post_raw(
    agent: &mut MissionAgent,
    url: &str,
    body: &str,
    headers: &[(String, String)],
) -> Answer {
    answer(signed(agent, url, body.as_bytes(), headers).await).await
}

/// Sends a stateless message with the headers its client would send, and
/// `extra` ones.
pub async fn post_with(
    agent: &mut MissionAgent,
    url: &str,
    msg: &Value,
    extra: &[(&str, &str)],
) -> Answer {
    let mut h = headers_of(msg);
    h.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    answer(signed(agent, url, msg.to_string().as_bytes(), &h).await).await
}

pub async fn post(agent: &mut MissionAgent, url: &str, msg: &Value) -> Answer {
    post_with(agent, url, msg, &[]).await
}

pub fn text(result: &Value) -> String {
    result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Polls `f` (every 50 ms, at most 10 s) until it holds.
pub async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
