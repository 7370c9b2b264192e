//! The demo's upstreams: a billing API, an HR API, a legacy CRM that only
//! knows alice's password, and a small MCP server with billing tools.
//! `mandate demo` starts them in-process for its scripted story;
//! `mandate demo upstreams` serves them on their own, on one loopback port,
//! for `examples/mandate.toml` and the README's walkthrough.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

/// The legacy CRM's one account: alice's.
pub const CRM_USER: &str = "alice";

/// Alice's password on the CRM that `mandate demo upstreams` serves. It is
/// printed at start and written in the README: this CRM is a stand-in on
/// loopback, and the point of the example is that the agent never sees the
/// password, not that nobody knows it. (`mandate demo` makes a random one
/// per run.)
pub const EXAMPLE_CRM_PASSWORD: &str = "alice-crm-password";

/// Where `mandate demo upstreams` listens unless told otherwise; the
/// address `examples/mandate.toml` names.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7879";

/// The billing API: `GET /invoices/{id}`, `POST /refunds/{id}`.
pub fn billing() -> axum::Router {
    axum::Router::new()
        .route(
            "/invoices/{id}",
            get(|UrlPath(id): UrlPath<String>| async move { axum::Json(invoice(&id)) }),
        )
        .route(
            "/refunds/{id}",
            post(|UrlPath(id): UrlPath<String>, body: String| async move {
                axum::Json(json!({ "refund": "issued", "invoice": id, "request": body }))
            }),
        )
}

fn invoice(id: &str) -> Value {
    json!({ "invoice": id, "customer": "ACME", "total": 180_000, "status": "double-billed" })
}

/// The HR API: `GET /people/{id}`.
pub fn hr() -> axum::Router {
    axum::Router::new().route(
        "/people/{id}",
        get(|UrlPath(id): UrlPath<String>| async move {
            axum::Json(json!({ "person": id, "salary": 123_456 }))
        }),
    )
}

/// The legacy CRM: every path, HTTP Basic with alice's `password` only.
pub fn crm(password: &str) -> axum::Router {
    let expected = Arc::new(format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{CRM_USER}:{password}")
        )
    ));
    let handler = move |headers: HeaderMap| {
        let expected = Arc::clone(&expected);
        async move {
            let ok = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == expected.as_str());
            if ok {
                (
                    StatusCode::OK,
                    axum::Json(
                        json!({ "crm": "logged in as alice", "account": "ACME", "notes": 3 }),
                    ),
                )
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({ "crm": "login required" })),
                )
            }
        }
    };
    axum::Router::new()
        .route("/", any(handler.clone()))
        .route("/{*rest}", any(handler))
}

/// The MCP revisions the demo server speaks (the session era, which the
/// gateway speaks to remote servers).
const MCP_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The MCP server's open sessions.
#[derive(Debug, Default)]
struct McpSessions(Mutex<HashSet<String>>);

/// A small MCP server over streamable HTTP (JSON answers, no server-sent
/// stream) with two tools: `get_invoice` and `refund`. Enough for the
/// gateway's listing filter, decisions and a call to show; not a general
/// MCP implementation.
pub fn mcp() -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            post(mcp_post)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(mcp_delete),
        )
        .with_state(Arc::new(McpSessions::default()))
}

fn session_of(headers: &HeaderMap) -> Option<&str> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok())
}

async fn mcp_delete(State(s): State<Arc<McpSessions>>, headers: HeaderMap) -> StatusCode {
    let removed =
        session_of(&headers).is_some_and(|id| s.0.lock().is_ok_and(|mut all| all.remove(id)));
    if removed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

async fn mcp_post(State(s): State<Arc<McpSessions>>, headers: HeaderMap, body: String) -> Response {
    let Ok(msg) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(rpc_error(&Value::Null, -32700, "not JSON")),
        )
            .into_response();
    };
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    if method == "initialize" {
        let asked = msg["params"]["protocolVersion"].as_str().unwrap_or("");
        let version = MCP_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&MCP_VERSIONS[0]);
        let mut b = [0u8; 16];
        if mandate_core::SecureRandom::fill(&mandate_core::OsRandom, &mut b).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let session: String = b.iter().map(|x| format!("{x:02x}")).collect();
        if let Ok(mut all) = s.0.lock() {
            all.insert(session.clone());
        }
        let result = json!({
            "protocolVersion": version,
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "mandate-demo-billing", "version": env!("CARGO_PKG_VERSION") },
            "instructions": "Billing tools of the Mandate demo: look up an invoice, issue a refund.",
        });
        return (
            [("mcp-session-id", session)],
            axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })),
        )
            .into_response();
    }
    let known =
        session_of(&headers).is_some_and(|sid| s.0.lock().is_ok_and(|all| all.contains(sid)));
    if !known {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(rpc_error(&id, -32001, "no such session; initialize first")),
        )
            .into_response();
    }
    // Notifications and answers: accepted, nothing to say.
    if method.is_empty() || msg.get("id").is_none() {
        return StatusCode::ACCEPTED.into_response();
    }
    let answer = match method {
        "ping" => json!({ "jsonrpc": "2.0", "id": id, "result": {} }),
        "tools/list" => json!({ "jsonrpc": "2.0", "id": id, "result": { "tools": tools() } }),
        "tools/call" => call(&id, &msg["params"]),
        _ => rpc_error(&id, -32601, "method not found"),
    };
    axum::Json(answer).into_response()
}

fn tools() -> Value {
    json!([
        {
            "name": "get_invoice",
            "description": "Look up an invoice.",
            "inputSchema": {
                "type": "object",
                "properties": { "id": { "type": "string" } },
                "required": ["id"]
            }
        },
        {
            "name": "refund",
            "description": "Refund an amount of an invoice.",
            "inputSchema": {
                "type": "object",
                "properties": { "id": { "type": "string" }, "amount": { "type": "integer" } },
                "required": ["id", "amount"]
            }
        }
    ])
}

fn call(id: &Value, params: &Value) -> Value {
    let args = &params["arguments"];
    let Some(invoice_id) = args["id"].as_str() else {
        return rpc_error(id, -32602, "`id` (a string) is required");
    };
    let text = match params["name"].as_str() {
        Some("get_invoice") => invoice(invoice_id).to_string(),
        Some("refund") => match args["amount"].as_i64() {
            Some(amount) => {
                json!({ "refund": "issued", "invoice": invoice_id, "amount": amount }).to_string()
            }
            None => return rpc_error(id, -32602, "`amount` (an integer) is required"),
        },
        _ => return rpc_error(id, -32602, "no such tool"),
    };
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": { "content": [{ "type": "text", "text": text }], "isError": false }
    })
}

/// All four under one address: `/billing`, `/hr`, `/crm`, `/mcp`.
pub fn all(crm_password: &str) -> axum::Router {
    axum::Router::new()
        .nest("/billing", billing())
        .nest("/hr", hr())
        .nest("/crm", crm(crm_password))
        .nest("/mcp", mcp())
}

/// `mandate demo upstreams`: serves them on `listen` until Ctrl-C or
/// SIGTERM. The first line says where (`demo upstreams listening on
/// http://…`), as `mandate serve`'s does.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("demo upstreams listening on {base}");
    println!("  billing API  {base}/billing   GET /invoices/{{id}}, POST /refunds/{{id}}");
    println!("  HR API       {base}/hr        GET /people/{{id}}");
    println!(
        "  legacy CRM   {base}/crm       one account: {CRM_USER}, password `{EXAMPLE_CRM_PASSWORD}` (HTTP Basic)"
    );
    println!("  MCP server   {base}/mcp       tools get_invoice, refund (streamable HTTP)");
    println!("examples/mandate.toml routes the gateway to them. Ctrl-C stops them.");
    axum::serve(listener, all(EXAMPLE_CRM_PASSWORD))
        .with_graceful_shutdown(crate::commands::terminated())
        .await?;
    Ok(())
}
