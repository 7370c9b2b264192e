//! End to end: `mandate mission proxy` in front of a real `mandate serve`,
//! driven by an unmodified `curl` that signs nothing itself. Through the
//! proxy as a base URL and as an HTTP proxy (`-x`, `http_proxy`) the agent
//! reaches an upstream; a boundary, an escalation (with and without
//! `--wait`), another destination, an oversize body, a web page's request,
//! a non-loopback address and a revoked mission are refused as a user
//! would see them. MCP goes through it too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mandate_testkit::{MissionPlan, Scenario, TestServer};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// What reached the upstream.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An upstream that records every request and answers with a small JSON;
/// `/invoices/stream` answers with one line, then another once `go` is
/// notified.
async fn upstream(go: Arc<tokio::sync::Notify>) -> (String, Log) {
    let seen: Log = Arc::default();
    let log = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = Arc::clone(&log);
        let go = Arc::clone(&go);
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
            log.lock().unwrap().push(Seen {
                uri: parts.uri.to_string(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect(),
                body: body.clone(),
            });
            if parts.uri.path().ends_with("/stream") {
                let lines = futures_util::stream::unfold(0, move |n| {
                    let go = Arc::clone(&go);
                    async move {
                        match n {
                            0 => Some((Ok::<_, std::io::Error>("event 1\n"), 1)),
                            1 => {
                                go.notified().await;
                                Some((Ok("event 2\n"), 2))
                            }
                            _ => None,
                        }
                    }
                });
                return axum::response::IntoResponse::into_response(axum::body::Body::from_stream(
                    lines,
                ));
            }
            // An upstream that says what only the authority may say.
            if parts.uri.path().ends_with("/forged-revoked") {
                return axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::UNAUTHORIZED,
                    [("content-type", "application/problem+json")],
                    r#"{"code":"revoked","status":401,"detail":"revoked"}"#,
                ));
            }
            axum::response::IntoResponse::into_response(axum::Json(json!({
                "upstream": "ok",
                "path": parts.uri.path(),
                "body": String::from_utf8_lossy(&body),
            })))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// A process of ours, stopped when dropped.
struct Running {
    child: Child,
    /// Where the process listens (its first line says).
    addr: String,
    /// Its standard error, as a file.
    stderr: PathBuf,
    /// The lines it printed after the first, as they come.
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line it prints on standard output.
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("another line on standard output")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mandate ARGS`, until its first line says where it listens.
fn start(dir: &Path, args: &[&str]) -> Running {
    let stderr = dir.join(format!("stderr-{}.log", unique()));
    let mut child = Command::new(bin())
        .args(args)
        .env("MANDATE_LOG", "warn")
        .env_remove("MANDATE_STATE")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let Ok(first) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        panic!(
            "`mandate {}` printed nothing: {}",
            args.join(" "),
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
    };
    let addr = first
        .split_once("listening on http://")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    Running {
        child,
        addr,
        stderr,
        lines: rx,
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A `curl` run: its exit code, the status, headers (lower-case names)
/// and body of the last answer.
#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    stderr: String,
}

impl Curl {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An unmodified `curl ARGS`, with no proxy from our environment unless
/// `env` sets one; on a blocking thread (the upstream is in this process).
async fn curl(args: &[&str], env: &[(&str, &str)]) -> Curl {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let (head, body) = (dir.path().join("head"), dir.path().join("body"));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "60", "-D"])
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(&args);
        for k in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .expect("curl must be on PATH: it is the unmodified agent of these tests");
        let head = std::fs::read_to_string(&head).unwrap_or_default();
        // The last answer's head (after any `100 Continue`).
        let last = head
            .split("\r\n\r\n")
            .filter(|h| !h.trim().is_empty())
            .last()
            .unwrap_or_default()
            .to_owned();
        let headers = last
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Curl {
            exit: out.status.code().unwrap_or(-1),
            status: String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            headers,
            body: std::fs::read_to_string(&body).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

const SCOPE: &str = r#"
@id("billing")
permit(principal, action in [Action::"read", Action::"refund"], resource is Route)
when { resource.route == "billing" };

@id("billing-tools")
permit(principal, action == Action::"read", resource is Tool)
when { resource.server == "billing" };
"#;

/// A server with the example policies, a `billing` route (1 KiB bodies)
/// and an `hr` route to a recording upstream, the demo's MCP server; a
/// started mission saved to a state file.
struct Lab {
    server: TestServer,
    go: Arc<tokio::sync::Notify>,
    s: Scenario,
    seen: Log,
    state: PathBuf,
    dir: tempfile::TempDir,
    _demo: Running,
}

async fn lab(settings: &str) -> Lab {
    let go = Arc::new(tokio::sync::Notify::new());
    let (up, seen) = upstream(Arc::clone(&go)).await;
    let dir = tempfile::tempdir().unwrap();
    let demo = start(
        dir.path(),
        &["demo", "upstreams", "--listen", "127.0.0.1:0"],
    );
    for f in [
        "actions.cedarschema",
        "hr-off-limits.cedar",
        "refunds-escalate.cedar",
    ] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let config = format!(
        r#"policies_dir = {dir:?}
{settings}

[[routes]]
name = "billing"
upstream = "{up}"
auth = "token_exchange"
audience = "https://billing.example"
max_body_bytes = 1024

[[routes.rules]]
method = "GET"
path = "/invoices/{{id}}"
action = "read"

[[routes.rules]]
method = "POST"
path = "/refunds/{{id}}"
action = "refund"
context_from_body = ["amount"]

[[routes]]
name = "hr"
upstream = "{up}"
labels = ["hr"]

[[routes.rules]]
method = "*"
path = "/{{*rest}}"
action = "read"

[[mcp_servers]]
name = "billing"
url = "http://{demo}/mcp"

[[mcp_servers.tools]]
name = "get_invoice"
action = "read"
"#,
        dir = dir.path().display().to_string(),
        demo = demo.addr,
    );
    let server = TestServer::start(bin(), Some(&config));
    let s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope: SCOPE.into(),
            boundaries: String::new(),
            budget: 100,
        })
        .await;
    let state = dir.path().join("mission.json");
    write_state(&state, &s.agent.save().unwrap());
    Lab {
        server,
        go,
        s,
        seen,
        state,
        dir,
        _demo: demo,
    }
}

fn write_state(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl Lab {
    /// `mandate mission proxy --state … --listen 127.0.0.1:0 EXTRA`.
    fn proxy(&self, extra: &[&str]) -> Running {
        let state = self.state.to_str().unwrap();
        let mut args = vec![
            "mission",
            "proxy",
            "--state",
            state,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        start(self.dir.path(), &args)
    }

    /// The server's `host:port`, as an agent's base URL names it.
    fn authority(&self) -> &str {
        self.server.url().trim_start_matches("http://")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many records the audit log holds.
    fn audit_len(&self) -> usize {
        let out = self
            .server
            .cli(
                Some(&self.s.admin),
                &["--json", "audit", "list", "--limit", "1000"],
            )
            .json();
        out["records"].as_array().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_curl_reaches_the_upstream_through_the_proxy_and_is_refused_where_policy_says()
 {
    let lab = lab("").await;
    let proxy = lab.proxy(&[]);
    let base = format!("http://{}", proxy.addr);

    // As the agent's base URL; whatever signature or credential the agent
    // sends of its own is dropped, its other headers pass.
    let r = curl(
        &[
            &format!("{base}/gw/billing/invoices/42?expand=lines"),
            "-H",
            "Signature: sig=:AAAA:",
            "-H",
            "Signature-Input: sig=(\"@method\");created=1",
            "-H",
            "Authorization: Bearer agents-own",
            "-H",
            "DPoP: x",
            "-H",
            "X-Request-Id: 7",
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/invoices/42");
    let got = lab.seen();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri, "/invoices/42?expand=lines");
    assert_eq!(got[0].header("x-request-id"), Some("7"));
    let bearer = got[0].header("authorization").unwrap();
    assert!(
        bearer.starts_with("Bearer ey") && !bearer.contains("agents-own"),
        "the upstream gets the token minted for it: {bearer}"
    );

    // As its HTTP proxy: `-x`, and `http_proxy` in its environment, with
    // the mission's authority in the URL.
    let direct = format!("http://{}/gw/billing/invoices/43", lab.authority());
    let r = curl(&["-x", &base, &direct], &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/invoices/43");
    // The variable its start-up lines suggest: one `curl` reads (it
    // ignores an upper-case `HTTP_PROXY`).
    let said = (0..3)
        .map(|_| proxy.next_line())
        .find(|l| l.trim_start().starts_with("HTTP proxy:"))
        .expect("a line that says how to use it as an HTTP proxy");
    let (var, url) = said
        .split_whitespace()
        .find_map(|w| w.split_once('='))
        .unwrap_or_else(|| panic!("no VAR=URL in {said}"));
    assert_eq!(url, base, "{said}");
    let r = curl(&[&direct], &[(var, url)]).await;
    assert_eq!(r.status, 200, "{said}: {r:?}");
    assert_eq!(lab.seen().len(), 3);

    // Answers stream: the first line reaches the agent while the upstream
    // still holds the second.
    let mut r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/gw/billing/invoices/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(20), r.chunk())
        .await
        .expect("the first line arrives before the upstream finishes")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"event 1\n");
    lab.go.notify_one();
    assert_eq!(&r.chunk().await.unwrap().unwrap()[..], b"event 2\n");
    assert_eq!(lab.seen().len(), 4);

    // A boundary: 403 with the policy that says so.
    let r = curl(&[&format!("{base}/gw/hr/people/7")], &[]).await;
    assert_eq!(r.status, 403, "{r:?}");
    let p = r.json();
    assert_eq!(p["code"], "boundary");
    assert_eq!(p["policies"], json!(["hr-off-limits.cedar/hr-records"]));

    // Nowhere but the mission's authority, and only its gateways.
    let r = curl(
        &["-x", &base, "http://example.com/gw/billing/invoices/42"],
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("foreign_destination")),
        "{r:?}"
    );
    let other_port = format!("http://127.0.0.1:{}/gw/billing/invoices/42", 1);
    let r = curl(&["-x", &base, &other_port], &[]).await;
    assert_eq!(r.json()["code"], "foreign_destination", "{r:?}");
    let r = curl(&[&format!("{base}/v1/missions")], &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("not_proxied"))
    );
    let r = curl(
        &[
            "-x",
            &base,
            &format!("http://{}/v1/mission", lab.authority()),
        ],
        &[],
    )
    .await;
    assert_eq!(r.json()["code"], "not_proxied");
    // A path read two ways is not signed as one and sent as the other.
    let r = curl(
        &[
            "--path-as-is",
            &format!("{base}/gw/billing/../../v1/mission"),
        ],
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("ambiguous_path"))
    );
    // CONNECT: nothing inside TLS can be signed.
    let r = curl(&["-p", "-x", &base, "https://example.com/"], &[]).await;
    assert_ne!(r.exit, 0, "{r:?}");
    assert!(r.stderr.contains("405"), "{r:?}");
    let raw = raw_connect(&proxy.addr).await;
    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
    assert!(raw.contains("connect_refused"), "{raw}");
    // A web page (DNS rebinding, or a cross-origin request to loopback).
    let r = curl(
        &[
            "-H",
            "Host: rebound.example",
            &format!("{base}/gw/billing/invoices/42"),
        ],
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("foreign_host"))
    );
    let r = curl(
        &[
            "-H",
            "Origin: https://evil.example",
            &format!("{base}/gw/billing/invoices/42"),
        ],
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("cross_origin_refused"))
    );
    assert_eq!(lab.seen().len(), 4, "none of these reached the upstream");

    // A body over the route's limit (1 KiB) is refused before it is signed
    // or sent: declared, and chunked.
    let records = lab.audit_len();
    let big = lab.dir.path().join("big.json");
    std::fs::write(
        &big,
        format!("{{\"amount\": 10, \"note\": \"{}\"}}", "x".repeat(2000)),
    )
    .unwrap();
    let data = format!("@{}", big.display());
    let refund = format!("{base}/gw/billing/refunds/9");
    for chunked in [false, true] {
        let mut args = vec![
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
            &refund,
        ];
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        let r = curl(&args, &[]).await;
        assert_eq!(r.status, 413, "{r:?}");
        let p = r.json();
        assert_eq!(p["code"], "payload_too_large");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("route `billing`")
                && detail.contains("1024 bytes")
                && detail.contains("did not sign or send"),
            "{detail}"
        );
    }
    assert_eq!(lab.audit_len(), records, "no request reached the gateway");
    // The same body is within another route's limit (1 MiB): read (curl
    // waits for `100 Continue` first), signed and decided.
    let r = curl(
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
            &format!("{base}/gw/hr/people/7"),
        ],
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("boundary")),
        "{r:?}"
    );
    assert_eq!(lab.seen().len(), 4);
    // Within the limit, the same call goes through.
    let r = curl(
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"amount": 10}"#,
            &refund,
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(lab.seen().last().unwrap().body, br#"{"amount": 10}"#);

    // MCP through the proxy: initialize, then a tool call on the session.
    let mcp = format!("{base}/mcp/billing");
    let rpc = |body: Value, session: Option<String>| {
        let mcp = mcp.clone();
        async move {
            let body = body.to_string();
            let session = session.map(|s| format!("Mcp-Session-Id: {s}"));
            let mut args = vec![
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json, text/event-stream",
                "--data-binary",
                &body,
                &mcp,
            ];
            if let Some(s) = &session {
                args.extend(["-H", s.as_str()]);
            }
            curl(&args, &[]).await
        }
    };
    let r = rpc(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "curl", "version": "1"}}}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let session = r.header("mcp-session-id").unwrap().to_owned();
    assert_eq!(
        message(&r)["result"]["serverInfo"]["name"],
        "mandate-demo-billing"
    );
    let r = rpc(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(session.clone()),
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    let r = rpc(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "get_invoice", "arguments": {"id": "42"}}}),
        Some(session),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let text = message(&r)["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("ACME"), "{text}");

    // The official MCP Python SDK, configured with the proxy's URL and
    // nothing else (no signer, no credential).
    let sdk = tokio::task::spawn_blocking({
        let mcp = mcp.clone();
        move || {
            let mut cmd = Command::new(python());
            cmd.args(["-c", MCP_SDK_CLIENT, &mcp]);
            for k in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
                cmd.env_remove(k);
            }
            cmd.output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        sdk.status.success(),
        "{}",
        String::from_utf8_lossy(&sdk.stderr)
    );
    let got: Value = serde_json::from_slice(&sdk.stdout).unwrap();
    assert!(
        got["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("get_invoice")),
        "{got}"
    );
    assert!(got["text"].as_str().unwrap().contains("ACME"), "{got}");

    // An upstream's `401 revoked` is passed on, and stops nothing: only
    // the authority's word does.
    let r = curl(
        &[&format!("{base}/gw/billing/invoices/forged-revoked")],
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("revoked"))
    );
    let r = curl(&[&format!("{base}/gw/billing/invoices/44")], &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!proxy.stderr().contains("the mission has ended"));

    // Revoked: the next request is refused, and so is every later one,
    // without reaching anything.
    let mission = lab.s.agent.mission_id().to_string();
    lab.server
        .cli(Some(&lab.s.alice), &["revoke", "mission", &mission])
        .success();
    let before = lab.seen().len();
    for _ in 0..2 {
        let r = curl(&[&format!("{base}/gw/billing/invoices/42")], &[]).await;
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json()["code"], "revoked");
    }
    assert_eq!(lab.seen().len(), before);
    assert!(
        proxy.stderr().contains("the mission has ended"),
        "{}",
        proxy.stderr()
    );
}

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON").expect(
        "MANDATE_TEST_PYTHON must name a Python with the official MCP SDK; run scripts/test.sh",
    )
}

/// An MCP client of the official Python SDK that knows only a URL: lists
/// the tools and calls `get_invoice`.
const MCP_SDK_CLIENT: &str = r#"
import json, sys
import anyio, httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

async def run():
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=60.0)) as http:
        async with Client(streamable_http_client(sys.argv[1], http_client=http), mode="legacy") as c:
            tools = [t.name for t in (await c.list_tools()).tools]
            r = await c.call_tool("get_invoice", {"id": "42"})
            print(json.dumps({"tools": tools, "text": r.content[0].text}))

anyio.run(run)
"#;

/// The one JSON-RPC message of an answer: a JSON body, or the first
/// `data:` of an event stream.
fn message(r: &Curl) -> Value {
    if r.header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"))
    {
        let data = r
            .body
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .unwrap_or_else(|| panic!("no data in {}", r.body));
        serde_json::from_str(data.trim()).unwrap()
    } else {
        r.json()
    }
}

/// A `CONNECT` as a TLS client sends it; the proxy's answer's head.
async fn raw_connect(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_is_a_clear_error_and_with_wait_the_call_completes_once_approved() {
    // Credentials live 30 s: the proxy refreshes before every call.
    let lab = lab("credential_ttl_secs = 30").await;
    let started: Value =
        serde_json::from_str(&std::fs::read_to_string(&lab.state).unwrap()).unwrap();
    let proxy = lab.proxy(&[]);
    let refund = |base: &str, id: u32| format!("{base}/gw/billing/refunds/{id}");
    let args = |url: &str| {
        vec![
            "-H".to_owned(),
            "Content-Type: application/json".to_owned(),
            "-H".to_owned(),
            "Mandate-Justification: ACME was double-billed".to_owned(),
            "--data-binary".to_owned(),
            r#"{"amount": 75000}"#.to_owned(),
            url.to_owned(),
        ]
    };
    let run = |a: Vec<String>| async move {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        curl(&a, &[]).await
    };

    // Without --wait: the gateway's 403 approval_required, as it is.
    let r = run(args(&refund(&format!("http://{}", proxy.addr), 9))).await;
    assert_eq!(r.status, 403, "{r:?}");
    let p = r.json();
    assert_eq!(p["code"], "approval_required");
    let approval = p["approval_id"].as_str().unwrap();
    assert!(p["approval_url"].as_str().unwrap().ends_with(approval));
    assert!(
        r.header("aauth-requirement")
            .unwrap()
            .starts_with("requirement=approval")
    );
    // The person sees the agent's justification (signed by the proxy).
    let shown = lab
        .server
        .cli(
            Some(&lab.s.alice),
            &["--json", "approvals", "show", approval],
        )
        .json();
    assert_eq!(shown["justification"], "ACME was double-billed");
    assert!(lab.seen().is_empty());

    // With --wait: the call waits for alice, then goes through.
    let waiting = lab.proxy(&["--wait", "60"]);
    let call = tokio::spawn(run(args(&refund(&format!("http://{}", waiting.addr), 10))));
    let pending = pending_approval(&lab, "refunds/10").await;
    lab.server
        .cli(Some(&lab.s.alice), &["approvals", "approve", &pending])
        .success();
    let r = call.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/refunds/10");
    let got = lab.seen();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, br#"{"amount": 75000}"#);
    assert!(
        waiting
            .stderr()
            .contains(&format!("approval request {pending}")),
        "{}",
        waiting.stderr()
    );

    // Denied: a clear refusal naming the request and the reason.
    let call = tokio::spawn(run(args(&refund(&format!("http://{}", waiting.addr), 11))));
    let pending = pending_approval(&lab, "refunds/11").await;
    lab.server
        .cli(
            Some(&lab.s.alice),
            &["approvals", "deny", &pending, "--reason", "not this one"],
        )
        .success();
    let r = call.await.unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    let p = r.json();
    assert_eq!(p["code"], "approval_denied");
    assert_eq!(p["approval_id"], pending.as_str());
    assert!(p["detail"].as_str().unwrap().contains("not this one"));
    assert_eq!(lab.seen().len(), 1);

    // Each refreshed credential was written back to the state file, which
    // stays the agent's alone.
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&lab.state).unwrap()).unwrap();
    assert_ne!(saved["credential"], started["credential"]);
    assert_eq!(saved["key_pem"], started["key_pem"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&lab.state).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// The id of the pending approval request whose call names `path`, once
/// there is one.
async fn pending_approval(lab: &Lab, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = lab
            .server
            .cli(Some(&lab.s.alice), &["--json", "approvals", "list"])
            .json();
        let found = list
            .as_array()
            .or_else(|| list["approvals"].as_array())
            .into_iter()
            .flatten()
            .find(|a| a.to_string().contains(path))
            .and_then(|a| a["id"].as_str().map(str::to_owned));
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no approval request for {path}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_listens_on_loopback_unless_told_otherwise() {
    let lab = lab("").await;
    // What it learns the limits from: the mission's own listing, names and
    // limits only, for the mission's agent alone.
    let limits = serde_json::to_value(lab.s.agent.limits().await.unwrap()).unwrap();
    assert_eq!(
        limits,
        json!({
            "routes": [
                {"name": "billing", "max_body_bytes": 1024},
                {"name": "hr", "max_body_bytes": 1_048_576},
            ],
            "mcp_servers": [{"name": "billing", "max_message_bytes": 1_048_576}],
        })
    );
    let anonymous = reqwest::get(format!("{}/v1/mission/limits", lab.server.url()))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let state = lab.state.to_str().unwrap();
    let out = Command::new(bin())
        .args([
            "mission",
            "proxy",
            "--state",
            state,
            "--listen",
            "0.0.0.0:0",
        ])
        .env("MANDATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--dangerous-allow-non-loopback"),
        "{err}"
    );
    // Told: it listens, and says loudly what that means.
    let p = start(
        lab.dir.path(),
        &[
            "mission",
            "proxy",
            "--state",
            state,
            "--listen",
            "0.0.0.0:0",
            "--dangerous-allow-non-loopback",
        ],
    );
    assert!(p.addr.starts_with("0.0.0.0:"), "{}", p.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.stderr().contains("WARNING") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        p.stderr().contains("needs no credential of their own"),
        "{}",
        p.stderr()
    );
    // It serves, by any address of the machine.
    let port = p.addr.rsplit(':').next().unwrap();
    let r = curl(
        &[&format!("http://127.0.0.1:{port}/gw/billing/invoices/42")],
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_stops_when_told_even_with_a_stream_open() {
    let lab = lab("").await;
    let mut proxy = lab.proxy(&[]);
    let mut stream = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/gw/billing/invoices/stream", proxy.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(&stream.chunk().await.unwrap().unwrap()[..], b"event 1\n");
    let term = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy is still running with a stream open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}: {}", proxy.stderr());
    assert!(
        proxy
            .stderr()
            .contains("stopped with requests still in flight")
    );
    lab.go.notify_one();
}

/// Sends `request` as written on a connection of its own and reads the
/// answer until the proxy closes it (or 10 s pass).
async fn raw(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_spellings_of_a_destination_a_path_or_a_request_are_refused() {
    let lab = lab("").await;
    let proxy = lab.proxy(&[]);
    let me = proxy.addr.clone();
    let auth = lab.authority().to_owned();
    let (ip, port) = auth.split_once(':').unwrap();
    let get = |target: &str, host: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    // Each: the request as the agent (or anyone on loopback) writes it, and
    // what the proxy answers: its status, and its code if it answered itself.
    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        // Absolute-form targets that are not the authority, however spelled.
        (
            "userinfo",
            get(
                &format!("http://{auth}@evil.example/gw/billing/invoices/1"),
                "evil.example",
            ),
            "403",
            Some("foreign_destination"),
        ),
        (
            "userinfo before the authority",
            get(
                &format!("http://evil.example@{auth}/gw/billing/invoices/1"),
                &auth,
            ),
            "403",
            Some("foreign_destination"),
        ),
        (
            "trailing dot",
            get(&format!("http://{ip}.:{port}/gw/billing/invoices/1"), &auth),
            "403",
            Some("foreign_destination"),
        ),
        (
            "IPv4-mapped IPv6",
            get(
                &format!("http://[::ffff:{ip}]:{port}/gw/billing/invoices/1"),
                &auth,
            ),
            "403",
            Some("foreign_destination"),
        ),
        (
            "percent-encoded host",
            get(
                &format!("http://127.0.0.%31:{port}/gw/billing/invoices/1"),
                &auth,
            ),
            "400",
            None,
        ),
        (
            "another scheme",
            get(&format!("ftp://{auth}/gw/billing/invoices/1"), &auth),
            "403",
            Some("foreign_destination"),
        ),
        (
            "Host says the authority, the target says elsewhere",
            get("http://evil.example/gw/billing/invoices/1", &auth),
            "403",
            Some("foreign_destination"),
        ),
        // DNS rebinding: names that only look like the proxy's.
        (
            "localhost as a prefix",
            get(
                "/gw/billing/invoices/1",
                &format!("localhost.attacker:{}", me.split(':').nth(1).unwrap()),
            ),
            "403",
            Some("foreign_host"),
        ),
        (
            "two Host headers",
            format!(
                "GET /gw/billing/invoices/1 HTTP/1.1\r\nHost: evil.example\r\nHost: {me}\r\nConnection: close\r\n\r\n"
            ),
            "403",
            Some("foreign_host"),
        ),
        // The authority's own API, by way of path spellings.
        (
            "double slash",
            get("//v1/mission", &me),
            "403",
            Some("not_proxied"),
        ),
        (
            "encoded slash out of /gw",
            get("/gw/..%2fv1/mission", &me),
            "404",
            Some("unknown_route"),
        ),
        (
            "encoded dot segments",
            get("/gw/billing/%2e%2e/%2e%2e/v1/mission", &me),
            "400",
            Some("ambiguous_path"),
        ),
        (
            "backslashes",
            get("/gw/billing\\..\\..\\v1\\mission", &me),
            "400",
            Some("ambiguous_path"),
        ),
        (
            "a `;` parameter",
            get("/gw/billing;x=1/invoices/1", &me),
            "404",
            Some("unknown_route"),
        ),
        (
            "an encoded slash in an MCP server's name",
            format!(
                "POST /mcp/billing%2F..%2F..%2Fv1 HTTP/1.1\r\nHost: {me}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
            "404",
            Some("unknown_mcp_server"),
        ),
        (
            "asterisk-form",
            format!("OPTIONS * HTTP/1.1\r\nHost: {me}\r\nConnection: close\r\n\r\n"),
            "403",
            Some("not_proxied"),
        ),
        // Framing read two ways: refused by the HTTP parser.
        (
            "two Content-Lengths",
            format!(
                "POST /gw/billing/refunds/1 HTTP/1.1\r\nHost: {me}\r\nContent-Type: application/json\r\nContent-Length: 13\r\nContent-Length: 0\r\nConnection: close\r\n\r\n{{\"amount\": 5}}"
            ),
            "400",
            None,
        ),
        (
            "an obsolete line folding (a second header inside the first)",
            format!(
                "GET /gw/billing/invoices/1 HTTP/1.1\r\nHost: {me}\r\nX-A: a\r\n Signature: x\r\nConnection: close\r\n\r\n"
            ),
            "400",
            None,
        ),
        (
            "a transfer coding it does not know",
            format!(
                "POST /gw/billing/refunds/1 HTTP/1.1\r\nHost: {me}\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\nabcd"
            ),
            "400",
            None,
        ),
    ];
    for (what, request, status, code) in &cases {
        let answer = raw(&me, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
        if let Some(code) = code {
            assert!(
                answer.contains(&format!("\"code\":\"{code}\"")),
                "{what}: {answer}"
            );
        }
        assert!(!answer.contains("\"upstream\":\"ok\""), "{what}: {answer}");
    }
    // `Content-Length` and `Transfer-Encoding` both: the chunked body is
    // read (empty), the connection is not kept, and what follows is never
    // read as a second request.
    let smuggled = raw(
        &me,
        &format!("POST /gw/billing/refunds/1 HTTP/1.1\r\nHost: {me}\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /gw/billing/invoices/smuggled HTTP/1.1\r\nHost: {me}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(smuggled.matches("HTTP/1.1 ").count(), 1, "{smuggled}");
    assert!(
        lab.seen().iter().all(|s| !s.uri.contains("smuggled")),
        "{:?}",
        lab.seen()
    );
    assert!(lab.seen().is_empty(), "{:?}", lab.seen());
    // And the same proxy still signs what is its to sign.
    let ok = raw(&me, &get("/gw/billing/invoices/1", &me)).await;
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
    assert_eq!(lab.seen().len(), 1);
}
