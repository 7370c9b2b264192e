//! MCP gateway benchmark: a trivial `tools/call` (`echo`) made directly to
//! an MCP server and through the Mandate MCP gateway, in both generations
//! of the protocol, in one run, on loopback, with one load generator.
//!
//! Run with `scripts/bench-mcp.sh` (it makes the Python venv with the MCP
//! SDK). Two servers, both over streamable HTTP:
//! - the official MCP Python SDK (`tests/mcp/server.py --http`; `mcp`
//!   2.3.0 serves both generations): what an MCP server costs in practice;
//! - a minimal responder written here (axum; answers `initialize`,
//!   `tools/list` and `tools/call` with fixed JSON): the floor, to show the
//!   gateway's own added latency.
//!
//! Each is called in the session era (2025-11-25: `initialize`, then calls
//! with `Mcp-Session-Id`) and statelessly (2026-07-28: no handshake; each
//! request carries its revision and capabilities in `_meta` and mirrors
//! its method and tool in `MCP-Protocol-Version`, `Mcp-Method` and
//! `Mcp-Name`). Through the gateway every request is RFC 9421-signed by
//! the mission key (signed before the clock starts), verified, decided,
//! recorded durably in the audit log, and forwarded; a stateless request
//! over the mission's channel, the upstream session the gateway keeps per
//! mission, key and server (ADR 0024).
//!
//! Measured per path: p50 and p99 of sequential calls (and the calls per
//! second that makes at one connection), requests per second at
//! `CONNECTIONS` connections (one mission, and in the session era one
//! session, per connection, as that many agents would), and the gateway
//! process's CPU time per request. Rounds are interleaved across the paths
//! so that the load of a shared machine falls on all of them alike.
//! `MANDATE_BENCH_ONLY=text` runs only the paths whose name holds `text`.
//!
//! Profiling: with `MANDATE_BENCH_WRAP` naming callgrind (e.g.
//! `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p`), the
//! gateway runs under it, one round is made without the throughput phase,
//! and the profile's counters are zeroed after the warm-up and dumped after
//! the sequential calls (`callgrind_control`): that dump holds exactly the
//! gateway's work for `SAMPLES` calls.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark harness: it reports on stdout and stops on any failure"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::IntoResponse as _;

mod common;
use common::{Proc, callgrind, callgrind_control, cpu_secs, free_port, median};

use mandate_core::MissionKey;
use mandate_testkit::signed_headers;
use serde_json::{Value, json};

const WARMUP: usize = 50;
const SAMPLES: usize = 500;
const ROUNDS: usize = 5;
/// Concurrent connections of the throughput phase.
const CONNECTIONS: usize = 32;
const THROUGHPUT_SECS: u64 = 4;
/// Signed requests made ready per connection for one throughput phase
/// (each is sent once: the gateway refuses a replay).
const PER_CONNECTION: usize = 1_000;

/// The session-era revision the bench speaks.
const SESSION_ERA: &str = "2025-11-25";
/// The stateless revision.
const STATELESS: &str = "2026-07-28";

/// JSON-RPC ids, unique across the run: two identical requests signed by
/// one key in the same second would be one signature (a replay).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

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

/// The floor: answers `initialize`, `tools/list` and `tools/call` at once,
/// in the era it is spoken to (a stateless request gets `resultType` and
/// no session).
async fn minimal_server() -> String {
    let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
        let m: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(id) = m.get("id").cloned() else {
            return axum::http::StatusCode::ACCEPTED.into_response();
        };
        let stateless = m["params"]["_meta"]
            .get("io.modelcontextprotocol/protocolVersion")
            .is_some();
        let mut result = match m["method"].as_str() {
            Some("initialize") => json!({
                "protocolVersion": SESSION_ERA,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "floor", "version": "1"},
            }),
            Some("tools/list") => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
            _ => json!({"content": [{"type": "text", "text": m["params"]["arguments"]["text"]}], "isError": false}),
        };
        if stateless {
            result["resultType"] = json!("complete");
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        let mut r = (
            axum::http::StatusCode::OK,
            [("content-type", "application/json")],
            body,
        )
            .into_response();
        if !stateless {
            r.headers_mut()
                .insert("mcp-session-id", axum::http::HeaderValue::from_static("floor"));
        }
        r
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/mcp")
}

/// A mission key and its credential.
type Signer = (MissionKey, String);

/// A Mandate server with the two MCP servers, and `CONNECTIONS + 1`
/// started missions (one per connection of the throughput phase, one for
/// the sequential phase). Each connection has a session and a channel with
/// each server, so the limits on open sessions are raised above that.
async fn mandate(dir: &Path, python_url: &str, floor_url: &str) -> (Proc, String, Vec<Signer>) {
    let limits = "max_sessions = 1000\nmax_sessions_per_mission = 16\n";
    let config = format!(
        "[[mcp_servers]]\nname = \"py\"\nurl = \"{python_url}\"\n{limits}\n\
         [[mcp_servers]]\nname = \"floor\"\nurl = \"{floor_url}\"\n{limits}"
    );
    let (proc, base, saved) = common::mandate(
        &dir.join("mandate"),
        &config,
        "permit(principal, action == Action::\"call_tool\", resource is Tool);",
        CONNECTIONS + 1,
    )
    .await;
    let signers = saved
        .into_iter()
        .map(|m| {
            (
                MissionKey::from_pkcs8_pem(&m.key_pem).unwrap(),
                m.credential,
            )
        })
        .collect();
    (proc, base, signers)
}

/// A request ready to send: its method, body and headers.
type Ready = (reqwest::Method, Vec<u8>, Vec<(String, String)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Session,
    Stateless,
}

/// Where the calls go, in which era, and whether through Mandate (then
/// signed by the mission key the caller gives).
struct Target {
    url: String,
    era: Era,
    through: bool,
}

impl Target {
    /// A request of `method` with `body` (JSON-RPC), signed by `signer`
    /// when through Mandate, in the target's era.
    fn ready(
        &self,
        signer: Option<&Signer>,
        method: reqwest::Method,
        body: Option<&Value>,
        session: Option<&str>,
    ) -> Ready {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut h = match (signer, self.through) {
            (Some((key, cred)), true) => {
                let rest = self.url.trim_start_matches("http://");
                let (authority, path) = rest.split_at(rest.find('/').unwrap());
                // The session id is covered by the signature (the gateway
                // asks it to be); the stateless era's headers need not be:
                // the body is, and they must agree with it.
                let extra: Vec<(&str, &str)> = session
                    .map(|s| vec![("mcp-session-id", s)])
                    .unwrap_or_default();
                signed_headers(
                    key,
                    cred,
                    method.as_str(),
                    authority,
                    path,
                    body.map(|_| ("application/json", bytes.as_slice())),
                    &extra,
                )
            }
            (None, false) => {
                let mut h = Vec::new();
                if body.is_some() {
                    h.push(("content-type".to_owned(), "application/json".to_owned()));
                }
                if let Some(s) = session {
                    h.push(("mcp-session-id".into(), s.into()));
                }
                h
            }
            _ => panic!("a request through Mandate is signed, a direct one is not"),
        };
        h.push((
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ));
        match self.era {
            Era::Session if session.is_some() => {
                h.push(("mcp-protocol-version".into(), SESSION_ERA.into()));
            }
            Era::Session => {}
            Era::Stateless => {
                let b = body.unwrap();
                h.push(("mcp-protocol-version".into(), STATELESS.into()));
                h.push(("mcp-method".into(), b["method"].as_str().unwrap().into()));
                if let Some(n) = b["params"]["name"].as_str() {
                    h.push(("mcp-name".into(), n.into()));
                }
            }
        }
        (method, bytes, h)
    }

    async fn send(&self, http: &reqwest::Client, r: &Ready) -> (Option<String>, String) {
        send(http, &self.url, r).await
    }

    /// In the session era, opens a session (`initialize`,
    /// `notifications/initialized`, `tools/list`): its id.
    async fn open(&self, http: &reqwest::Client, signer: Option<&Signer>) -> Option<String> {
        if self.era == Era::Stateless {
            return None;
        }
        let init = json!({"jsonrpc": "2.0", "id": next_id(), "method": "initialize", "params": {
            "protocolVersion": SESSION_ERA, "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}});
        let r = self.ready(signer, reqwest::Method::POST, Some(&init), None);
        let sid = self.send(http, &r).await.0.unwrap();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let r = self.ready(signer, reqwest::Method::POST, Some(&note), Some(&sid));
        self.send(http, &r).await;
        let list = json!({"jsonrpc": "2.0", "id": next_id(), "method": "tools/list"});
        let r = self.ready(signer, reqwest::Method::POST, Some(&list), Some(&sid));
        self.send(http, &r).await;
        Some(sid)
    }

    /// Ends a session the bench opened.
    async fn close(&self, http: &reqwest::Client, signer: Option<&Signer>, sid: Option<&str>) {
        if let Some(sid) = sid {
            let r = self.ready(signer, reqwest::Method::DELETE, None, Some(sid));
            self.send(http, &r).await;
        }
    }

    /// `n` `tools/call` requests, ready to send.
    fn calls(&self, signer: Option<&Signer>, sid: Option<&str>, n: usize) -> Vec<Ready> {
        (0..n)
            .map(|_| {
                let mut params = json!({"name": "echo", "arguments": {"text": "hi"}});
                if self.era == Era::Stateless {
                    params["_meta"] = json!({
                        "io.modelcontextprotocol/protocolVersion": STATELESS,
                        "io.modelcontextprotocol/clientCapabilities": {},
                    });
                }
                let body = json!({"jsonrpc": "2.0", "id": next_id(), "method": "tools/call", "params": params});
                self.ready(signer, reqwest::Method::POST, Some(&body), sid)
            })
            .collect()
    }
}

/// Checks the answer to a call: the echo, and the era's form (only a
/// stateless answer carries `resultType`), so the era measured is the era
/// named.
fn answered(era: Era, text: &str) {
    assert!(text.contains("\"hi\""), "{text}");
    assert_eq!(
        text.contains("\"resultType\""),
        era == Era::Stateless,
        "{era:?}: {text}"
    );
}

/// Sends `r` to `url`; the session id the answer carries and its text.
async fn send(http: &reqwest::Client, url: &str, r: &Ready) -> (Option<String>, String) {
    let mut rb = http.request(r.0.clone(), url).body(r.1.clone());
    for (k, v) in &r.2 {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{url} {status}: {text}");
    (sid, text)
}

/// One round of sequential calls on one connection: p50 and p99 in
/// microseconds, calls per second, and the CPU time `pid` (the gateway)
/// spent per call, in microseconds.
async fn latency(t: &Target, signer: Option<&Signer>, pid: u32) -> (f64, f64, f64, f64) {
    let http = reqwest::Client::new();
    let sid = t.open(&http, signer).await;
    let calls = t.calls(signer, sid.as_deref(), WARMUP + SAMPLES);
    let mut d = Vec::with_capacity(SAMPLES);
    let mut began = Instant::now();
    let mut cpu = cpu_secs(pid);
    for (i, r) in calls.iter().enumerate() {
        if i == WARMUP {
            if callgrind() && t.through {
                callgrind_control("-z", pid);
            }
            began = Instant::now();
            cpu = cpu_secs(pid);
        }
        let start = Instant::now();
        let (_, text) = t.send(&http, r).await;
        if i >= WARMUP {
            d.push(start.elapsed().as_secs_f64() * 1e6);
        }
        answered(t.era, &text);
    }
    let rate = SAMPLES as f64 / began.elapsed().as_secs_f64();
    let cpu = (cpu_secs(pid) - cpu) / SAMPLES as f64 * 1e6;
    if callgrind() && t.through {
        callgrind_control("-d", pid);
    }
    t.close(&http, signer, sid.as_deref()).await;
    d.sort_by(f64::total_cmp);
    (d[d.len() / 2], d[d.len() * 99 / 100], rate, cpu)
}

/// Requests per second with `CONNECTIONS` concurrent clients, each with
/// its own mission (and session), for `THROUGHPUT_SECS`; the CPU time
/// `pid` (the gateway) spent per request, in microseconds; and whether a
/// connection ran out of signed requests first.
async fn throughput(t: &Target, signers: &[Signer], pid: u32) -> (f64, f64, bool) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let signer = |c: usize| t.through.then(|| &signers[c]);
    // Sessions opened, and each connection's first call made (for a
    // stateless one through Mandate: its channel opened), before the clock.
    let (mut sids, mut lanes) = (Vec::new(), Vec::new());
    for c in 0..CONNECTIONS {
        let sid = t.open(&http, signer(c)).await;
        let n = if t.through { PER_CONNECTION } else { 100 };
        let mut calls = t.calls(signer(c), sid.as_deref(), n + 1);
        let (_, text) = t.send(&http, &calls.remove(0)).await;
        answered(t.era, &text);
        sids.push(sid);
        lanes.push(calls);
    }
    let done = Arc::new(AtomicU64::new(0));
    let ran_out = Arc::new(AtomicU64::new(0));
    let cpu = cpu_secs(pid);
    let deadline = Instant::now() + Duration::from_secs(THROUGHPUT_SECS);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for calls in lanes {
        let (done, ran_out, http) = (done.clone(), ran_out.clone(), http.clone());
        let (url, reuse, era) = (t.url.clone(), !t.through, t.era);
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < deadline {
                let r = if reuse {
                    &calls[i % calls.len()]
                } else if let Some(r) = calls.get(i) {
                    r
                } else {
                    ran_out.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let (_, text) = send(&http, &url, r).await;
                answered(era, &text);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed) as f64;
    let cpu = (cpu_secs(pid) - cpu) / done * 1e6;
    for (c, sid) in sids.iter().enumerate() {
        t.close(&http, signer(c), sid.as_deref()).await;
    }
    (done / elapsed, cpu, ran_out.load(Ordering::Relaxed) > 0)
}

/// One path's figures, per round.
#[derive(Default)]
struct Figures {
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate1: Vec<f64>,
    rate_n: Vec<f64>,
    /// The gateway's CPU time per request, sequential and at N.
    cpu1: Vec<f64>,
    cpu_n: Vec<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (_py, py_url) = python_server().await;
    let floor_url = minimal_server().await;
    let (mandate, base, signers) = mandate(dir.path(), &py_url, &floor_url).await;
    let pid = mandate.0.id();
    let target = |url: &str, era, through| Target {
        url: url.to_owned(),
        era,
        through,
    };
    let (py_via, floor_via) = (format!("{base}/mcp/py"), format!("{base}/mcp/floor"));
    let mut paths: Vec<(&str, Target)> = vec![
        (
            "Python SDK server, session, direct",
            target(&py_url, Era::Session, false),
        ),
        (
            "Python SDK server, session, through Mandate",
            target(&py_via, Era::Session, true),
        ),
        (
            "Python SDK server, stateless, direct",
            target(&py_url, Era::Stateless, false),
        ),
        (
            "Python SDK server, stateless, through Mandate",
            target(&py_via, Era::Stateless, true),
        ),
        (
            "minimal server, session, direct",
            target(&floor_url, Era::Session, false),
        ),
        (
            "minimal server, session, through Mandate",
            target(&floor_via, Era::Session, true),
        ),
        (
            "minimal server, stateless, direct",
            target(&floor_url, Era::Stateless, false),
        ),
        (
            "minimal server, stateless, through Mandate",
            target(&floor_via, Era::Stateless, true),
        ),
    ];
    let only = std::env::var("MANDATE_BENCH_ONLY").ok();
    if let Some(only) = &only {
        paths.retain(|p| p.0.contains(only.as_str()));
    }
    // The sequential phase's mission: the last; the throughput phase's:
    // one per connection.
    let (conns, seq) = signers.split_at(CONNECTIONS);
    let seq = &seq[0];
    let mut figures: Vec<Figures> = paths.iter().map(|_| Figures::default()).collect();
    let profiling = callgrind();
    let rounds = if profiling { 1 } else { ROUNDS };
    for round in 0..rounds {
        for ((name, t), f) in paths.iter().zip(&mut figures) {
            let (p50, p99, rate1, cpu1) = latency(t, t.through.then_some(seq), pid).await;
            let (rate_n, cpu_n, ran_out) = if profiling {
                (f64::NAN, f64::NAN, false)
            } else {
                throughput(t, conns, pid).await
            };
            if ran_out {
                println!(
                    "round {round}, {name}: a connection ran out of signed requests (raise PER_CONNECTION)"
                );
            }
            println!(
                "round {round}, {name}: p50 {p50:.1} µs, p99 {p99:.1} µs, {rate1:.0} req/s @1, {rate_n:.0} req/s @{CONNECTIONS}{}",
                if t.through {
                    format!(", Mandate CPU/request {cpu1:.0} µs @1, {cpu_n:.0} µs @{CONNECTIONS}")
                } else {
                    String::new()
                }
            );
            f.p50.push(p50);
            f.p99.push(p99);
            f.rate1.push(rate1);
            f.rate_n.push(rate_n);
            if t.through {
                f.cpu1.push(cpu1);
                f.cpu_n.push(cpu_n);
            }
        }
    }
    let rows: Vec<(&str, [f64; 6])> = paths
        .iter()
        .zip(figures)
        .map(|((name, t), f)| {
            let cpu = |v: Vec<f64>| if t.through { median(v) } else { f64::NAN };
            (
                *name,
                [
                    median(f.p50),
                    median(f.p99),
                    median(f.rate1),
                    median(f.rate_n),
                    cpu(f.cpu1),
                    cpu(f.cpu_n),
                ],
            )
        })
        .collect();
    println!(
        "\nMCP tools/call, one run (medians of {rounds} interleaved rounds; {SAMPLES} sequential calls after {WARMUP} of warm-up; {CONNECTIONS} connections for {THROUGHPUT_SECS} s):"
    );
    println!(
        "| path | p50 | p99 | req/s @1 | req/s @{CONNECTIONS} | Mandate CPU/request @1 | @{CONNECTIONS} |\n|---|---|---|---|---|---|---|"
    );
    let us = |v: f64| {
        if v.is_nan() {
            "–".to_owned()
        } else {
            format!("{v:.0} µs")
        }
    };
    for (name, r) in &rows {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.0} | {:.0} | {} | {} |",
            r[0],
            r[1],
            r[2],
            r[3],
            us(r[4]),
            us(r[5])
        );
    }
    let find = |n: &str| rows.iter().find(|r| r.0 == n).map(|r| r.1);
    println!("\nthrough Mandate against direct, same server, same era:");
    for server in ["Python SDK server", "minimal server"] {
        for era in ["session", "stateless"] {
            let (Some(d), Some(v)) = (
                find(&format!("{server}, {era}, direct")),
                find(&format!("{server}, {era}, through Mandate")),
            ) else {
                continue;
            };
            println!(
                "  {server}, {era}: p50 {:.2}× (added {:.0} µs), req/s @1 {:.2}×, @{CONNECTIONS} {:.2}×",
                v[0] / d[0],
                v[0] - d[0],
                v[2] / d[2],
                v[3] / d[3]
            );
        }
    }
    println!("\nstateless against session, same server, same path:");
    for server in ["Python SDK server", "minimal server"] {
        for path in ["direct", "through Mandate"] {
            let (Some(s), Some(m)) = (
                find(&format!("{server}, session, {path}")),
                find(&format!("{server}, stateless, {path}")),
            ) else {
                continue;
            };
            let cpu = if path == "direct" {
                String::new()
            } else {
                format!(
                    ", Mandate CPU/request @1 {:.2}×, @{CONNECTIONS} {:.2}×",
                    m[4] / s[4],
                    m[5] / s[5]
                )
            };
            println!(
                "  {server}, {path}: p50 {:.2}×, req/s @1 {:.2}×, @{CONNECTIONS} {:.2}×{cpu}",
                m[0] / s[0],
                m[2] / s[2],
                m[3] / s[3]
            );
        }
    }
    if let (Some(d), Some(v)) = (
        find("Python SDK server, session, direct"),
        find("Python SDK server, session, through Mandate"),
    ) {
        let r = v[0] / d[0];
        println!(
            "\ngoal (MCP gateway issue, session era): Python SDK server through Mandate / direct p50 ≤ 2×: {r:.2}× → {}",
            if r <= 2.0 { "met" } else { "not met" }
        );
    }
}
