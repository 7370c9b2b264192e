//! MCP gateway benchmark: latency of a trivial `tools/call` (`echo`) made
//! directly to an MCP server and through the Mandate MCP gateway, in one
//! run, on loopback, with one load generator.
//!
//! Run with `scripts/bench-mcp.sh` (it makes the Python venv with the MCP
//! SDK). Two servers, both over streamable HTTP:
//! - the official MCP Python SDK (`tests/mcp/server.py --http`): what an
//!   MCP server costs in practice;
//! - a minimal responder written here (axum; answers `initialize` and
//!   `tools/call` with fixed JSON): the floor, to show the gateway's own
//!   added latency.
//!
//! Through the gateway every request is RFC 9421-signed by the mission key
//! (signed before the clock starts), verified, decided, recorded durably in
//! the audit log, and forwarded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark harness: it reports on stdout and stops on any failure"
)]

use std::path::Path;

use axum::response::IntoResponse as _;
use std::process::{Command, Stdio};

mod common;
use common::{Proc, free_port, median};
use std::time::{Duration, Instant};

use mandate_core::MissionKey;
use mandate_testkit::signed_headers;
use serde_json::{Value, json};

const WARMUP: usize = 50;
const SAMPLES: usize = 500;
const ROUNDS: usize = 3;

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON").expect("MANDATE_TEST_PYTHON: run scripts/bench-mcp.sh")
}

/// The Python SDK server over streamable HTTP.
async fn python_server() -> (Proc, String) {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.py");
    let child = Command::new(python())
        .arg(script)
        .args(["--http", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Proc(child), format!("http://127.0.0.1:{port}/mcp"))
}

/// The floor: answers `initialize`, `tools/list` and `tools/call` at once.
async fn minimal_server() -> String {
    let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
        let m: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(id) = m.get("id").cloned() else {
            return axum::http::StatusCode::ACCEPTED.into_response();
        };
        let result = match m["method"].as_str() {
            Some("initialize") => json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "floor", "version": "1"},
            }),
            Some("tools/list") => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
            _ => json!({"content": [{"type": "text", "text": m["params"]["arguments"]["text"]}], "isError": false}),
        };
        let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        (
            axum::http::StatusCode::OK,
            [("content-type", "application/json"), ("mcp-session-id", "floor")],
            body,
        )
            .into_response()
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/mcp")
}

/// A Mandate server with the two MCP servers, and a started mission.
async fn mandate(dir: &Path, python_url: &str, floor_url: &str) -> (Proc, String, String, String) {
    let config = format!(
        "[[mcp_servers]]\nname = \"py\"\nurl = \"{python_url}\"\n\n[[mcp_servers]]\nname = \"floor\"\nurl = \"{floor_url}\"\n"
    );
    let (proc, base, mut saved) = common::mandate(
        &dir.join("mandate"),
        &config,
        "permit(principal, action == Action::\"call_tool\", resource is Tool);",
        1,
    )
    .await;
    let m = saved.remove(0);
    (proc, base, m.key_pem.to_string(), m.credential)
}

/// A request ready to send: its body and headers.
type Ready = (Vec<u8>, Vec<(String, String)>);

/// Where the calls go, and how they are signed (through Mandate).
struct Target {
    url: String,
    signer: Option<(MissionKey, String)>,
}

impl Target {
    fn headers(&self, body: &[u8], session: Option<&str>) -> Vec<(String, String)> {
        let mut h = match &self.signer {
            None => {
                let mut h = vec![("content-type".to_owned(), "application/json".to_owned())];
                if let Some(s) = session {
                    h.push(("mcp-session-id".into(), s.into()));
                }
                h
            }
            Some((key, cred)) => {
                let rest = self.url.trim_start_matches("http://");
                let (authority, path) = rest.split_at(rest.find('/').unwrap());
                let extra: Vec<(&str, &str)> = session
                    .map(|s| vec![("mcp-session-id", s)])
                    .unwrap_or_default();
                signed_headers(
                    key,
                    cred,
                    "POST",
                    authority,
                    path,
                    Some(("application/json", body)),
                    &extra,
                )
            }
        };
        h.push((
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ));
        if session.is_some() {
            h.push(("mcp-protocol-version".into(), "2025-11-25".into()));
        }
        h
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        body: Vec<u8>,
        h: &[(String, String)],
    ) -> (Option<String>, String) {
        let mut rb = http.post(&self.url).body(body);
        for (k, v) in h {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{} {status}: {text}", self.url);
        (sid, text)
    }

    /// Opens a session; its id. Each round's `initialize` is its own
    /// request (a signature identical to an earlier one is a replay).
    async fn open(&self, http: &reqwest::Client, round: usize) -> String {
        let init = json!({"jsonrpc": "2.0", "id": format!("init-{round}"), "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}})
        .to_string()
        .into_bytes();
        let h = self.headers(&init, None);
        let (sid, _) = self.post(http, init, &h).await;
        let sid = sid.unwrap();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            .to_string()
            .into_bytes();
        let h = self.headers(&note, Some(&sid));
        self.post(http, note, &h).await;
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            .to_string()
            .into_bytes();
        let h = self.headers(&list, Some(&sid));
        self.post(http, list, &h).await;
        sid
    }

    /// `n` signed `tools/call` requests, ready to send.
    fn calls(&self, sid: &str, from: usize, n: usize) -> Vec<Ready> {
        (from..from + n)
            .map(|i| {
                let body = json!({"jsonrpc": "2.0", "id": i + 10, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hi"}}})
                .to_string()
                .into_bytes();
                let h = self.headers(&body, Some(sid));
                (body, h)
            })
            .collect()
    }
}

/// p50 and p99 of sequential `tools/call`s, in microseconds.
async fn latency(t: &Target, round: usize) -> (f64, f64) {
    let http = reqwest::Client::new();
    let sid = t.open(&http, round).await;
    let calls = t.calls(&sid, round * (WARMUP + SAMPLES), WARMUP + SAMPLES);
    let mut d = Vec::with_capacity(SAMPLES);
    for (i, (body, h)) in calls.into_iter().enumerate() {
        let start = Instant::now();
        let (_, text) = t.post(&http, body, &h).await;
        if i >= WARMUP {
            d.push(start.elapsed().as_secs_f64() * 1e6);
        }
        assert!(text.contains("hi"), "{text}");
    }
    d.sort_by(f64::total_cmp);
    (d[d.len() / 2], d[d.len() * 99 / 100])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (_py, py_url) = python_server().await;
    let floor_url = minimal_server().await;
    let (_mandate, base, key, cred) = mandate(dir.path(), &py_url, &floor_url).await;
    let through = |name: &str| Target {
        url: format!("{base}/mcp/{name}"),
        signer: Some((MissionKey::from_pkcs8_pem(&key).unwrap(), cred.clone())),
    };
    let targets: Vec<(&str, Target)> = vec![
        (
            "Python SDK server, direct",
            Target {
                url: py_url.clone(),
                signer: None,
            },
        ),
        ("Python SDK server, through Mandate", through("py")),
        (
            "minimal server, direct",
            Target {
                url: floor_url.clone(),
                signer: None,
            },
        ),
        ("minimal server, through Mandate", through("floor")),
    ];
    let mut rows: Vec<(&str, f64, f64)> = Vec::new();
    for (name, t) in &targets {
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for round in 0..ROUNDS {
            let (a, b) = latency(t, round).await;
            p50.push(a);
            p99.push(b);
        }
        rows.push((name, median(p50), median(p99)));
    }
    println!("\nMCP tools/call latency (median of {ROUNDS} rounds of {SAMPLES} sequential calls):");
    println!("| path | p50 | p99 |\n|---|---|---|");
    for (name, p50, p99) in &rows {
        println!("| {name} | {p50:.1} µs | {p99:.1} µs |");
    }
    let ratio = |direct: usize, via: usize| rows[via].1 / rows[direct].1;
    println!(
        "\nthrough Mandate / direct (p50): Python SDK server {:.2}× (goal ≤ 2×: {}); minimal server {:.2}× (added {:.0} µs)",
        ratio(0, 1),
        if ratio(0, 1) <= 2.0 { "met" } else { "not met" },
        ratio(2, 3),
        rows[3].1 - rows[2].1
    );
}
