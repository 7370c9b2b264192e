//! End to end: the MCP gateway on loopback, between the official MCP
//! Python SDK (the client, its HTTP requests RFC 9421-signed by an
//! independent implementation) and real MCP servers over stdio: the
//! reference `mcp-server-git` on a temporary repository, and a small server
//! on the same SDK (`tests/mcp/server.py`) for progress, elicitation,
//! cancellation and crashes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use mandate_client::Client;
use mandate_testkit::{MissionPlan, Scenario, TestServer};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON").expect(
        "MANDATE_TEST_PYTHON must name a Python with the MCP SDK and mcp-server-git; run scripts/test.sh",
    )
}

/// The scripted MCP client (`tests/mcp/client.py`).
struct McpClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl McpClient {
    fn connect(url: &str, s: &Scenario) -> (Self, Value) {
        let mine = saved(&s.agent);
        Self::connect_as(url, &mine.key_pem, &mine.credential)
    }

    fn connect_as(url: &str, pem: &str, credential: &str) -> (Self, Value) {
        Self::spawn(&[url, pem, credential])
    }

    /// A client that cannot sign: it launches `mandate mcp bridge` as its
    /// stdio server.
    fn through_bridge(url: &str, state: &Path) -> (Self, Value) {
        Self::spawn(&[
            "--bridge",
            bin().to_str().unwrap(),
            state.to_str().unwrap(),
            url,
        ])
    }

    /// A client on the SDK's own choice of revision (it probes
    /// `server/discover`: 2026-07-28, stateless).
    fn connect_current(url: &str, s: &Scenario) -> (Self, Value) {
        let mine = saved(&s.agent);
        Self::spawn_in("auto", &[url, &mine.key_pem, &mine.credential])
    }

    fn spawn(args: &[&str]) -> (Self, Value) {
        Self::spawn_in("legacy", args)
    }

    fn spawn_in(mode: &str, args: &[&str]) -> (Self, Value) {
        let mut child = Command::new(python())
            .arg(here().join("client.py"))
            .args(args)
            .env("MCP_CLIENT_MODE", mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut c = Self {
            child,
            stdin,
            stdout,
        };
        let ready = c.read();
        (c, ready)
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the MCP client ended");
        serde_json::from_str(&line).unwrap()
    }

    fn send(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.read()
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self.send(json!({"op": "call", "tool": tool, "args": args}));
        r.get("result").cloned().unwrap_or(r)
    }

    /// Goes away without a word (`kill -9`): no `DELETE`, its streams
    /// simply drop.
    fn kill(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    fn exit(mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "exit"}));
        let _ = self.stdin.flush();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the MCP client failed: {status}");
    }
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn audit(server: &TestServer, s: &Scenario, kind: &str) -> Vec<Value> {
    let log = server
        .cli(
            Some(&s.admin),
            &["--json", "audit", "list", "--kind", kind, "--limit", "500"],
        )
        .json();
    log["records"].as_array().unwrap().clone()
}

/// `/metrics` as an admin reads it, parsed as Prometheus text.
async fn metrics(server: &TestServer, admin: &str) -> Vec<prometheus_parse::Sample> {
    let text = Client::new(server.url())
        .unwrap()
        .with_token(admin)
        .metrics()
        .await
        .unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
}

/// The value of the single-valued sample `name` with `labels`.
fn sample(
    samples: &[prometheus_parse::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    use prometheus_parse::Value;
    samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            Value::Histogram(_) | Value::Summary(_) => None,
        })
}

fn health(server: &TestServer) -> Value {
    let out = Command::new("curl")
        .args(["-s", &format!("{}/healthz", server.url())])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

const GIT_SCOPE: &str = r#"
@id("read-repo")
permit(principal, action == Action::"call_tool", resource is Tool)
when { resource.server == "git" &&
       ["git_log", "git_diff", "git_diff_staged", "git_diff_unstaged", "git_status"].contains(resource.tool) };
"#;

const GIT_BOUNDARY: &str = r#"
@id("never-reset")
forbid(principal, action, resource is Tool)
when { resource.server == "git" && resource.tool == "git_reset" };
"#;

const COMMIT_ASKS: &str = r#"
@id("commits-ask")
@kind("escalate")
permit(principal, action == Action::"call_tool", resource is Tool)
when { resource.server == "git" && resource.tool == "git_commit" };
"#;

/// The reference git server behind Mandate, on a repository with one
/// commit and a staged change, for a mission that reads, asks before
/// committing and never resets.
async fn git_lab() -> (
    TestServer,
    tempfile::TempDir,
    tempfile::TempDir,
    Scenario,
    String,
) {
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    run(r, &["init", "-q", "-b", "main"]);
    run(r, &["config", "user.email", "dev@example.com"]);
    run(r, &["config", "user.name", "Dev"]);
    std::fs::write(r.join("README"), "first\n").unwrap();
    run(r, &["add", "README"]);
    run(r, &["commit", "-q", "-m", "first commit"]);
    std::fs::write(r.join("README"), "first\nsecond\n").unwrap();
    run(r, &["add", "README"]);
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("commits.cedar"), COMMIT_ASKS).unwrap();
    let venv_bin = Path::new(&python()).parent().unwrap().to_path_buf();
    let config = format!(
        "policies_dir = {:?}\n\n[[mcp_servers]]\nname = \"git\"\ncommand = {:?}\nargs = [\"--repository\", {:?}]\n",
        policies.path().display().to_string(),
        venv_bin.join("mcp-server-git").display().to_string(),
        r.display().to_string(),
    );
    let server = TestServer::start(bin(), Some(&config));
    let s = server
        .scenario(MissionPlan {
            goal: "Tidy up the README history".into(),
            scope: GIT_SCOPE.into(),
            boundaries: GIT_BOUNDARY.into(),
            budget: 100,
        })
        .await;
    let url = format!("{}/mcp/git", server.url());
    (server, repo, policies, s, url)
}

/// The reference git server: reading is in scope, committing asks first,
/// resetting is a boundary. `tools/list` shows that; each call is decided,
/// recorded and, when allowed, done on the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_reads_the_log_asks_before_committing_and_never_resets() {
    let (server, repo, _policies, s, url) = git_lab().await;
    let r = repo.path();
    let (mut c, ready) = McpClient::connect(&url, &s);
    assert_eq!(ready["ready"], true, "{ready}");
    let repo_path = r.display().to_string();

    // tools/list: what the mission may use, and what it must ask for.
    let listed = c.send(json!({"op": "list"}));
    let tools = listed["tools"].as_array().unwrap();
    let access = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["_meta"]["io.mandate/access"]["access"].clone())
    };
    assert_eq!(access("git_log"), Some(json!("allowed")), "{listed}");
    assert_eq!(access("git_diff_staged"), Some(json!("allowed")));
    assert_eq!(access("git_commit"), Some(json!("approval_required")));
    assert_eq!(access("git_reset"), None, "a boundary is not shown");

    // git_log works.
    let log = c.call("git_log", json!({"repo_path": repo_path}));
    assert_eq!(log["isError"], false, "{log}");
    assert!(text(&log).contains("first commit"), "{log}");

    // git_commit escalates: nothing is committed until a person approves.
    let args = json!({"repo_path": repo_path, "message": "second line"});
    let asked = c.call("git_commit", args.clone());
    assert_eq!(asked["isError"], true, "{asked}");
    let decision = &asked["_meta"]["io.mandate/decision"];
    assert_eq!(decision["code"], "approval_required", "{asked}");
    let approval = decision["approval_id"].as_str().unwrap().to_owned();
    assert!(text(&asked).contains(&approval));
    assert!(!run(r, &["log", "--oneline"]).contains("second line"));
    // Approved for exactly this call; the same call then goes through.
    server
        .cli(Some(&s.alice), &["approvals", "approve", &approval])
        .success();
    let other = c.call(
        "git_commit",
        json!({"repo_path": repo_path, "message": "something else"}),
    );
    assert_eq!(
        other["_meta"]["io.mandate/decision"]["code"], "approval_required",
        "other arguments are another call: {other}"
    );
    let done = c.call("git_commit", args);
    assert_eq!(done["isError"], false, "{done}");
    assert!(text(&done).contains("committed"), "{done}");
    assert!(run(r, &["log", "--oneline"]).contains("second line"));

    // git_reset is a boundary: denied, with the policy, and the staged
    // change stays staged.
    std::fs::write(r.join("NOTES"), "staged\n").unwrap();
    run(r, &["add", "NOTES"]);
    let reset = c.call("git_reset", json!({"repo_path": repo_path}));
    assert_eq!(reset["isError"], true, "{reset}");
    assert_eq!(reset["_meta"]["io.mandate/decision"]["code"], "boundary");
    assert!(text(&reset).contains("never-reset"), "{reset}");
    assert!(run(r, &["diff", "--cached", "--name-only"]).contains("NOTES"));

    // The metrics: the open session, each decision under the MCP gateway,
    // and the server's answers timed.
    let m = metrics(&server, &s.admin).await;
    assert_eq!(
        sample(&m, "mandate_mcp_sessions", &[("server", "git")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "mandate_mcp_channels", &[("server", "git")]),
        Some(0.0)
    );
    for ((decision, code), n) in [
        (("allow", "scope"), 1.0),
        (("escalate", "escalation"), 2.0),
        (("allow", "grant"), 1.0),
        (("deny", "boundary"), 1.0),
    ] {
        let labels = [
            ("front_door", "mcp"),
            ("decision", decision),
            ("code", code),
        ];
        assert_eq!(
            sample(&m, "mandate_decisions_total", &labels),
            Some(n),
            "{decision} {code}"
        );
    }
    let forwarded = sample(
        &m,
        "mandate_stage_duration_seconds_count",
        &[("front_door", "mcp"), ("stage", "forward")],
    );
    assert!(forwarded.is_some_and(|n| n >= 3.0), "{forwarded:?}");
    c.exit();

    // All of it in the audit log.
    let decisions = audit(&server, &s, "decision");
    let seen: Vec<(String, String, String)> = decisions
        .iter()
        .filter(|d| d["body"]["enforcement_point"] == "mcp")
        .map(|d| {
            let b = &d["body"];
            (
                b["resource"]["tool"].as_str().unwrap_or("-").to_owned(),
                b["decision"].as_str().unwrap().to_owned(),
                b["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("git_log", "allow", "scope"),
        ("git_commit", "escalate", "escalation"),
        ("git_commit", "allow", "grant"),
        ("git_reset", "deny", "boundary"),
    ] {
        assert!(
            seen.iter()
                .any(|(t, d, c)| (t.as_str(), d.as_str(), c.as_str()) == want),
            "{want:?} not in {seen:?}"
        );
    }
    assert!(
        decisions
            .iter()
            .filter(|d| d["body"]["enforcement_point"] == "mcp")
            .all(|d| d["body"]["arguments_digest"].is_string() || d["body"]["decision"] == "deny")
    );
    let listed = audit(&server, &s, "mcp.listed");
    assert!(listed.iter().any(|l| {
        l["body"]["hidden"]
            .as_array()
            .unwrap()
            .contains(&json!("git_reset"))
    }));
    assert_eq!(audit(&server, &s, "mcp.session.opened").len(), 1);
    let verify = server.cli(Some(&s.admin), &["audit", "verify"]);
    assert!(verify.ok(), "{}", verify.stdout());
}

/// A client on the current revision (2026-07-28: `server/discover`, no
/// session, per-request `_meta` and headers) gets the same decisions; an
/// escalation shows the person the approval through the protocol's own
/// input request and completes once they approve, with no retry by the
/// agent; headers that disagree with the body are refused and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_client_works_statelessly_and_an_approval_completes_its_call() {
    let (server, repo, _policies, s, url) = git_lab().await;
    let r = repo.path();
    let repo_path = r.display().to_string();
    let (mut c, ready) = McpClient::connect_current(&url, &s);
    assert_eq!(ready["protocol_version"], "2026-07-28", "{ready}");

    let listed = c.send(json!({"op": "list"}));
    let tools = listed["tools"].as_array().unwrap();
    let access = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["_meta"]["io.mandate/access"]["access"].clone())
    };
    assert_eq!(access("git_log"), Some(json!("allowed")), "{listed}");
    assert_eq!(access("git_commit"), Some(json!("approval_required")));
    assert_eq!(access("git_reset"), None, "a boundary is not shown");
    let log = c.call("git_log", json!({"repo_path": repo_path}));
    assert_eq!(log["isError"], false, "{log}");
    assert!(text(&log).contains("first commit"), "{log}");

    // The escalated commit: the client is asked to show the person a URL
    // (the approval); the person approves; the same call then completes.
    let args = json!({"repo_path": repo_path, "message": "second line"});
    writeln!(
        c.stdin,
        "{}",
        json!({"op": "call", "tool": "git_commit", "args": args})
    )
    .unwrap();
    c.stdin.flush().unwrap();
    let asked = c.read();
    let shown = &asked["elicitation"];
    assert_eq!(shown["mode"], "url", "{asked}");
    let approval = audit(&server, &s, "approval.requested")[0]["body"]["approval"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        shown["url"].as_str().unwrap().ends_with(&approval),
        "{asked}"
    );
    assert!(shown["message"].as_str().unwrap().contains(&approval));
    assert!(!run(r, &["log", "--oneline"]).contains("second line"));
    server
        .cli(Some(&s.alice), &["approvals", "approve", &approval])
        .success();
    let done = c.send(json!({"action": "accept"}));
    let done = done.get("result").cloned().unwrap_or(done);
    assert_eq!(done["isError"], false, "{done}");
    assert!(text(&done).contains("committed"), "{done}");
    assert!(run(r, &["log", "--oneline"]).contains("second line"));

    // A boundary is a boundary in this revision too.
    std::fs::write(r.join("NOTES"), "staged\n").unwrap();
    run(r, &["add", "NOTES"]);
    let reset = c.call("git_reset", json!({"repo_path": repo_path}));
    assert_eq!(reset["isError"], true, "{reset}");
    assert_eq!(reset["_meta"]["io.mandate/decision"]["code"], "boundary");

    // The headers name one call, the body another: refused before any
    // decision, recorded, nothing run.
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let body = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {
        "name": "git_reset", "arguments": {"repo_path": repo_path}, "_meta": meta}});
    let headers = json!({
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "git_status",
    });
    let mismatch = c.send(json!({"op": "raw", "body": body.to_string(), "headers": headers}));
    assert_eq!(mismatch["status"], 400, "{mismatch}");
    assert_eq!(mismatch["body"]["error"]["code"], -32020, "{mismatch}");
    assert!(run(r, &["diff", "--cached", "--name-only"]).contains("NOTES"));
    // An unknown revision is told the known ones.
    let old = json!({"jsonrpc": "2.0", "id": 100, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let headers = json!({"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"});
    let unknown = c.send(json!({"op": "raw", "body": old.to_string(), "headers": headers}));
    assert_eq!(unknown["status"], 400, "{unknown}");
    assert_eq!(unknown["body"]["error"]["code"], -32022, "{unknown}");
    assert!(
        unknown["body"]["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    // A web page rebound to the gateway's address: its Origin is refused,
    // signed or not.
    let listing = json!({"jsonrpc": "2.0", "id": 101, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let headers = json!({"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list",
        "Origin": "http://evil.example"});
    let rebound = c.send(json!({"op": "raw", "body": listing.to_string(), "headers": headers}));
    assert_eq!(rebound["status"], 403, "{rebound}");
    c.exit();

    let decisions = audit(&server, &s, "decision");
    let refused: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["body"]["code"] == "header_mismatch")
        .collect();
    assert_eq!(refused.len(), 1, "{decisions:?}");
    assert_eq!(refused[0]["body"]["decision"], "deny");
    let seen: Vec<(String, String)> = decisions
        .iter()
        .filter(|d| d["body"]["enforcement_point"] == "mcp")
        .map(|d| {
            (
                d["body"]["resource"]["tool"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
                d["body"]["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("git_log", "scope"),
        ("git_commit", "escalation"),
        ("git_commit", "grant"),
        ("git_reset", "boundary"),
    ] {
        assert!(
            seen.iter().any(|(t, c)| (t.as_str(), c.as_str()) == want),
            "{want:?} not in {seen:?}"
        );
    }
    // One upstream session served every stateless request of the mission.
    let opened = audit(&server, &s, "mcp.session.opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["body"]["stateless"], true);
    let verify = server.cli(Some(&s.admin), &["audit", "verify"]);
    assert!(verify.ok(), "{}", verify.stdout());
}

/// Stateless, progress still reaches the call it belongs to (under the
/// client's own token, while the server sees one the gateway gave it); the
/// server's own requests, which that revision cannot carry, fail the call
/// instead of reaching the client; a server of 2026-07-28 asks the client
/// through its result (`input_required`), where elicitation is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_clients_calls_get_their_progress_and_nothing_unasked() {
    let (server, _p, s, url) = lab("allow_elicitation = true").await;
    let (mut c, ready) = McpClient::connect_current(&url, &s);
    assert_eq!(ready["protocol_version"], "2026-07-28", "{ready}");
    let r = c.send(json!({"op": "progress", "tool": "slow", "args": {"steps": 3, "delay": 0.05}}));
    assert_eq!(text(&r["result"]), "done after 3 steps", "{r}");
    assert_eq!(r["progress"].as_array().unwrap().len(), 3, "{r}");
    let asked = c.call("ask", json!({}));
    assert_ne!(text(&asked), "hello alice", "{asked}");
    // A server of that revision asks the client through its result
    // (input_required), and the client answers on its retry: elicitation is
    // allowed for this server.
    let greeted = c.call("greet", json!({}));
    assert_eq!(text(&greeted), "hello alice", "{greeted}");
    let notes = c.send(json!({"op": "read", "uri": "notes://public"}));
    assert!(notes["result"]["contents"].is_array(), "{notes}");
    let secret = c.send(json!({"op": "read", "uri": "notes://secret"}));
    assert!(secret.get("error").is_some(), "{secret}");
    c.exit();
    let opened = audit(&server, &s, "mcp.session.opened");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["body"]["protocol_version"], "2026-07-28");

    // Where the server may not ask the agent's client, its question is not
    // passed on: the call fails instead.
    let (_server, _p, s, url) = lab("").await;
    let (mut c, _) = McpClient::connect_current(&url, &s);
    let greeted = c.send(json!({"op": "call", "tool": "greet", "args": {}}));
    assert!(greeted.get("error").is_some(), "{greeted}");
    c.exit();
}

/// What the gateway used to refuse by choice is decided by the mission's
/// policy and recorded: setting the server's log level, completing a
/// prompt's argument, listing resource templates. A capability policy
/// would refuse is not advertised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_levels_completions_and_templates_are_decided_by_policy() {
    let policies = tempfile::tempdir().unwrap();
    let server = TestServer::start(bin(), Some(&test_server_config(policies.path(), "")));
    let plan = |scope: &str| {
        MissionPlan {
        goal: "Exercise the lab server".into(),
        scope: scope.into(),
        boundaries: "@id(\"no-templates\")\nforbid(principal, action == Action::\"list_resource_templates\", resource);".into(),
        budget: 200,
    }
    };
    let url = format!("{}/mcp/lab", server.url());
    let levels = format!(
        "{LAB_SCOPE}\n@id(\"lab-logs\")\npermit(principal, action == Action::\"set_log_level\", resource is McpServer) when {{ resource.server == \"lab\" }};\n@id(\"lab-completions\")\npermit(principal, action == Action::\"complete\", resource is Prompt) when {{ resource.server == \"lab\" }};"
    );
    let s = server.scenario(plan(&levels)).await;
    let (mut c, ready) = McpClient::connect(&url, &s);
    assert!(ready["capabilities"].get("logging").is_some(), "{ready}");
    let raw = |c: &mut McpClient, id: u32, method: &str, params: Value| {
        c.send(json!({"op": "raw", "session": true, "body": json!({
            "jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()}))
    };
    let r = raw(&mut c, 1, "logging/setLevel", json!({"level": "debug"}));
    assert!(r["body"]["result"].is_object(), "{r}");
    let r = raw(
        &mut c,
        2,
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "summary"}, "argument": {"name": "topic", "value": "g"}}),
    );
    assert!(r["body"].get("result").is_some(), "{r}");
    let r = raw(&mut c, 3, "resources/templates/list", json!({}));
    assert_eq!(r["body"]["error"]["code"], -32090, "{r}");
    assert_eq!(r["body"]["error"]["data"]["code"], "boundary", "{r}");
    c.exit();
    let decided: Vec<(String, String)> = audit(&server, &s, "decision")
        .iter()
        .map(|d| {
            (
                d["body"]["action"].as_str().unwrap_or("-").to_owned(),
                d["body"]["decision"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    for want in [
        ("set_log_level", "allow"),
        ("complete", "allow"),
        ("list_resource_templates", "deny"),
    ] {
        assert!(
            decided
                .iter()
                .any(|(a, d)| (a.as_str(), d.as_str()) == want),
            "{want:?} not in {decided:?}"
        );
    }

    // A mission whose policy does not let it set the log level is not
    // told the server has one; asking anyway is decided (out of scope).
    let other = saved(&another_mission(&server, &s, LAB_SCOPE).await);
    let (mut c, ready) = McpClient::connect_as(&url, &other.key_pem, &other.credential);
    assert!(ready["capabilities"].get("logging").is_none(), "{ready}");
    let r = raw(&mut c, 1, "logging/setLevel", json!({"level": "debug"}));
    assert!(r["body"].get("error").is_some(), "{r}");
    c.exit();
    assert!(audit(&server, &s, "decision").iter().any(|d| {
        d["body"]["action"] == "set_log_level" && d["body"]["code"] == "out_of_scope"
    }));
}

/// Whether a server may ask the agent's client (elicitation) is the
/// mission's policy (`elicit` on the server) where the server's
/// configuration does not allow it outright: decided when the session
/// opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missions_policy_lets_its_server_ask_its_client() {
    let policies = tempfile::tempdir().unwrap();
    let server = TestServer::start(bin(), Some(&test_server_config(policies.path(), "")));
    let scope = format!(
        "{LAB_SCOPE}\n@id(\"lab-may-ask\")\npermit(principal, action == Action::\"elicit\", resource is McpServer) when {{ resource.server == \"lab\" }};"
    );
    let s = server
        .scenario(MissionPlan {
            goal: "Exercise the lab server".into(),
            scope,
            boundaries: String::new(),
            budget: 200,
        })
        .await;
    let url = format!("{}/mcp/lab", server.url());
    for mode in ["legacy", "auto"] {
        let mine = saved(&s.agent);
        let (mut c, _) = McpClient::spawn_in(mode, &[&url, &mine.key_pem, &mine.credential]);
        // The session era: the server's own request; 2026-07-28: its
        // input_required round.
        let tool = if mode == "legacy" { "ask" } else { "greet" };
        let asked = c.call(tool, json!({}));
        assert_eq!(text(&asked), "hello alice", "{mode}: {asked}");
        c.exit();
    }
}

fn test_server_config(policies: &Path, extra: &str) -> String {
    format!(
        "policies_dir = {:?}\n\n[[mcp_servers]]\nname = \"lab\"\ncommand = {:?}\nargs = [{:?}]\nmax_message_bytes = 4096\n{extra}",
        policies.display().to_string(),
        python(),
        here().join("server.py").display().to_string(),
    )
}

const LAB_SCOPE: &str = r#"
@id("lab-tools")
permit(principal, action == Action::"call_tool", resource is Tool)
when { resource.server == "lab" };
@id("lab-notes")
permit(principal, action == Action::"read_resource", resource is McpResource)
when { resource.server == "lab" && resource.uri == "notes://public" };
"#;

async fn lab(extra: &str) -> (TestServer, tempfile::TempDir, Scenario, String) {
    let policies = tempfile::tempdir().unwrap();
    let server = TestServer::start(bin(), Some(&test_server_config(policies.path(), extra)));
    let s = server
        .scenario(MissionPlan {
            goal: "Exercise the lab server".into(),
            scope: LAB_SCOPE.into(),
            boundaries: "@id(\"no-secrets\")\nforbid(principal, action, resource is McpResource) when { resource.uri == \"notes://secret\" };".into(),
            budget: 200,
        })
        .await;
    let url = format!("{}/mcp/lab", server.url());
    (server, policies, s, url)
}

/// What MCP carries besides calls passes through: progress, the server's
/// own requests (elicitation), cancellation; resources are decided like
/// tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_elicitation_cancellation_and_resources_pass_through() {
    let (server, _p, s, url) = lab("allow_elicitation = true").await;
    let (mut c, _) = McpClient::connect(&url, &s);
    let r = c.send(json!({"op": "progress", "tool": "slow", "args": {"steps": 3, "delay": 0.05}}));
    assert_eq!(text(&r["result"]), "done after 3 steps", "{r}");
    assert_eq!(r["progress"].as_array().unwrap().len(), 3, "{r}");
    // The server asks the client (elicitation) in the middle of a call.
    let asked = c.call("ask", json!({}));
    assert_eq!(text(&asked), "hello alice", "{asked}");
    // A call cancelled by the client leaves nothing in flight.
    cancel_leaves_nothing_in_flight(&mut c, &server).await;
    assert_eq!(
        text(&c.call("echo", json!({"text": "still here"}))),
        "still here"
    );
    // Resources: the listing hides the boundary; reading is decided.
    let listed = c.send(json!({"op": "resources"}));
    let uris: Vec<&str> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["notes://public"], "{listed}");
    let read = c.send(json!({"op": "read", "uri": "notes://public"}));
    assert_eq!(
        read["result"]["contents"][0]["text"], "public notes",
        "{read}"
    );
    let secret = c.send(json!({"op": "read", "uri": "notes://secret"}));
    assert_eq!(secret["error"]["code"], -32090, "{secret}");
    assert_eq!(secret["error"]["data"]["code"], "boundary", "{secret}");
    // A prompt out of scope: not shown to this mission's listing, and
    // refused (out of scope escalates by default).
    let prompt = c.send(json!({"op": "prompt", "name": "summary", "args": {"topic": "x"}}));
    assert!(
        prompt["error"]["code"] == -32091 || prompt["error"]["code"] == -32090,
        "{prompt}"
    );
    c.exit();
    assert_eq!(
        health(&server)["mcp"]["sessions"],
        0,
        "the client's DELETE ends the session"
    );
}

/// A long answer is not an idle connection: a tool call that keeps its
/// answer (and the session's event stream) silent for longer than the
/// edge's header-read and idle timeouts still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_answer_outlives_the_idle_and_header_timeouts() {
    let (_server, _p, s, url) =
        lab("\n[server]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 1\n").await;
    let (mut c, _) = McpClient::connect(&url, &s);
    let r = c.call("slow", json!({"steps": 1, "delay": 3.0}));
    assert_eq!(text(&r), "done after 1 steps", "{r}");
    assert_eq!(
        text(&c.call("echo", json!({"text": "still here"}))),
        "still here"
    );
    c.exit();
}

/// Malformed, unknown and oversized messages, and tools with path tricks
/// or that were never listed, get clear JSON-RPC errors; nothing reaches
/// the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_json_rpc_errors_and_nothing_is_forwarded() {
    let (server, _p, s, url) = lab("").await;
    let (mut c, _) = McpClient::connect(&url, &s);
    let raw =
        |c: &mut McpClient, body: &str| c.send(json!({"op": "raw", "body": body, "session": true}));
    let r = raw(&mut c, "{not json");
    assert_eq!(
        (r["status"].as_u64(), r["body"]["error"]["code"].as_i64()),
        (Some(400), Some(-32700)),
        "{r}"
    );
    let r = raw(&mut c, r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
    assert_eq!(r["body"]["error"]["code"], -32600, "{r}");
    let r = raw(
        &mut c,
        r#"{"jsonrpc":"2.0","id":7,"method":"debug/exec","params":{}}"#,
    );
    assert_eq!(
        (
            r["body"]["id"].as_i64(),
            r["body"]["error"]["code"].as_i64()
        ),
        (Some(7), Some(-32601)),
        "{r}"
    );
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(5000)
    );
    let r = raw(&mut c, &big);
    assert_eq!(r["status"], 413, "{r}");
    for name in ["../hr/export", "lab/echo", "echo\u{0}", ".."] {
        let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": name, "arguments": {}}});
        let r = raw(&mut c, &body.to_string());
        assert_eq!(r["body"]["error"]["code"], -32602, "{name}: {r}");
    }
    let body = json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "format_disk", "arguments": {}}});
    let r = raw(&mut c, &body.to_string());
    assert_eq!(r["body"]["error"]["code"], -32602, "{r}");
    assert!(
        r["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lists no tool"),
        "{r}"
    );
    // Without the session, or with another mission's: no session.
    let r = c.send(json!({"op": "raw", "body": json!({"jsonrpc":"2.0","id":11,"method":"tools/list"}).to_string(), "session": false}));
    assert_eq!(r["status"], 400, "{r}");
    // The session still works, and the server never saw any of it.
    assert_eq!(text(&c.call("echo", json!({"text": "fine"}))), "fine");
    let refusals: Vec<String> = audit(&server, &s, "decision")
        .iter()
        .filter(|d| d["body"]["decision"] == "deny")
        .map(|d| d["body"]["code"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        refusals.iter().filter(|c| *c == "invalid_params").count() >= 4,
        "{refusals:?}"
    );
    assert!(
        refusals.contains(&"unknown_tool".to_owned()),
        "{refusals:?}"
    );
    // The refusal names the tool that was asked for, the server and the
    // method.
    let unknown = audit(&server, &s, "decision")
        .into_iter()
        .find(|d| d["body"]["code"] == "unknown_tool")
        .unwrap();
    let b = &unknown["body"];
    assert_eq!(b["resource"]["tool"], "format_disk", "{unknown}");
    assert_eq!(b["resource"]["server"], "lab", "{unknown}");
    assert_eq!(
        (b["mcp_server"].as_str(), b["mcp_method"].as_str()),
        (Some("lab"), Some("tools/call")),
        "{unknown}"
    );
    let lines = server
        .cli(Some(&s.admin), &["audit", "list", "--kind", "decision"])
        .success();
    assert!(
        lines.contains("format_disk → unknown_tool") && lines.contains("(mcp lab tools/call)"),
        "{lines}"
    );
    c.exit();
}

/// A crashed server is restarted (and the restart recorded); the session
/// goes on. Ending the mission ends its sessions and their processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_server_is_restarted_and_an_ended_mission_stops_it() {
    let (server, _p, s, url) = lab("").await;
    let (mut c, _) = McpClient::connect(&url, &s);
    let first = text(&c.call("pid", json!({})));
    let crashed = c.send(json!({"op": "call", "tool": "crash", "args": {}}));
    assert!(
        crashed["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("restarted"),
        "{crashed}"
    );
    let mut second = String::new();
    for _ in 0..50 {
        let r = c.send(json!({"op": "call", "tool": "pid", "args": {}}));
        if r["result"]["isError"] == false {
            second = text(&r["result"]);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!second.is_empty() && second != first, "{first} → {second}");
    let restarts = audit(&server, &s, "mcp.server.restarted");
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    // The mission ends: the session and its process go, at once.
    let mission = s.agent.mission_id().to_string();
    server
        .cli(Some(&s.alice), &["mission", "end", &mission])
        .success();
    let proc = PathBuf::from(format!("/proc/{second}"));
    for _ in 0..50 {
        if !proc.exists() && health(&server)["mcp"]["sessions"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!proc.exists(), "the server process outlived its mission");
    assert_eq!(health(&server)["mcp"]["sessions"], 0);
    let closed = audit(&server, &s, "mcp.session.closed");
    assert_eq!(
        closed[0]["body"]["reason"], "the mission ended",
        "{closed:?}"
    );
    // The client's closing DELETE is refused now: its mission is over.
    let _ = writeln!(c.stdin, "{}", json!({"op": "exit"}));
    let _ = c.stdin.flush();
    let _ = c.child.wait();
}

/// A remote server over streamable HTTP, behind `token_exchange`: it gets a
/// short-lived token minted for it alone, never the agent's credential or
/// signature, and the same decisions apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_server_gets_a_token_of_its_own_and_never_the_agents_credential() {
    let (mut upstream, port) = remote_server("--http").await;
    let (server, _p, s, url) = remote_lab(port, "").await;
    let (mut c, ready) = McpClient::connect(&url, &s);
    assert_eq!(ready["ready"], true);
    lists_calls_and_refuses(&mut c, "echo");
    let seen: Value = serde_json::from_str(&text(&c.call("headers", json!({})))).unwrap();
    for h in [
        "signature",
        "signature-input",
        "signature-key",
        "content-digest",
    ] {
        assert!(seen.get(h).is_none(), "{h} reached the upstream: {seen}");
    }
    let saved: mandate_client::SavedMission =
        serde_json::from_str(&s.agent.save().unwrap()).unwrap();
    assert!(!seen.to_string().contains(&saved.credential));
    let token = seen["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    // An independent JWT library verifies it against the JWKS.
    let script = r#"
import json, sys, urllib.request, jwt
issuer, token = sys.argv[1], sys.argv[2]
jwks = json.load(urllib.request.urlopen(issuer + "/.well-known/jwks.json"))
key = next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["EdDSA"], audience="https://lab.example", issuer=issuer)
print(json.dumps(claims))
"#;
    let out = Command::new(python())
        .args(["-c", script, server.url(), &token])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "billing-bot");
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 300);
    c.exit();
    upstream.kill().unwrap();
    let _ = upstream.wait();
}

/// The remote server on `port` as `lab` (`token_exchange`, audience
/// `https://lab.example`; `extra` follows its entry), and a mission that
/// may use its tools but never `crash`.
async fn remote_lab(port: u16, extra: &str) -> (TestServer, tempfile::TempDir, Scenario, String) {
    let policies = tempfile::tempdir().unwrap();
    let config = format!(
        "policies_dir = {:?}\n\n[[mcp_servers]]\nname = \"lab\"\nurl = \"http://127.0.0.1:{port}/mcp\"\nauth = \"token_exchange\"\naudience = \"https://lab.example\"\n{extra}",
        policies.path().display().to_string()
    );
    let server = TestServer::start(bin(), Some(&config));
    let s = server
        .scenario(MissionPlan {
            goal: "Exercise the remote lab server".into(),
            scope: LAB_SCOPE.into(),
            boundaries: "@id(\"no-crash\")\nforbid(principal, action, resource is Tool) when { resource.tool == \"crash\" };".into(),
            budget: 100,
        })
        .await;
    let url = format!("{}/mcp/lab", server.url());
    (server, policies, s, url)
}

/// The listing shows `tool` and hides `crash`; `echo` answers; `crash` is
/// refused by the boundary.
fn lists_calls_and_refuses(c: &mut McpClient, tool: &str) {
    let listed = c.send(json!({"op": "list"}));
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&tool) && !names.contains(&"crash"),
        "{names:?}"
    );
    assert_eq!(text(&c.call("echo", json!({"text": "remote"}))), "remote");
    let denied = c.call("crash", json!({}));
    assert_eq!(
        denied["_meta"]["io.mandate/decision"]["code"], "boundary",
        "{denied}"
    );
}

/// A long `slow` call cancelled by the client after half a second: the
/// gateway has nothing in flight within 5 s.
async fn cancel_leaves_nothing_in_flight(c: &mut McpClient, server: &TestServer) {
    let cancelled = c.send(
        json!({"op": "cancel", "tool": "slow", "args": {"steps": 100, "delay": 0.05}, "after": 0.5}),
    );
    assert_eq!(cancelled["cancelled"], true, "{cancelled}");
    let mut in_flight = json!(null);
    for _ in 0..50 {
        in_flight = health(server)["mcp"]["in_flight"].clone();
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(in_flight, 0);
}

/// `tests/mcp/server.py` over streamable HTTP on a free loopback port
/// (`--http`: both eras; `--modern`: 2026-07-28 only), once it listens.
async fn remote_server(mode: &str) -> (Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let upstream = Command::new(python())
        .arg(here().join("server.py"))
        .args([mode, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (upstream, port)
}

/// A remote server that speaks only 2026-07-28 (it refuses `initialize`
/// and session ids): a current client's requests reach it statelessly,
/// each with the headers that revision asks for — written by the gateway
/// from the request it decided, `Mcp-Param-*` included and encoded as the
/// revision says — and with a token minted for the server, never the
/// agent's; its `input_required` questions reach the client; decisions
/// are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_server_of_2026_07_28_is_spoken_to_in_its_own_revision() {
    let (mut upstream, port) = remote_server("--modern").await;
    let extra = format!(
        "allow_elicitation = true\n\n[[mcp_servers]]\nname = \"pinned\"\nurl = \"http://127.0.0.1:{port}/mcp\"\nupstream_protocol = \"2026-07-28\"\n"
    );
    let (server, _p, s, url) = remote_lab(port, &extra).await;
    let (mut c, ready) = McpClient::connect_current(&url, &s);
    assert_eq!(ready["protocol_version"], "2026-07-28", "{ready}");
    lists_calls_and_refuses(&mut c, "region");
    // What the server received: its revision's headers, no session, its
    // own token; nothing of the agent's.
    let seen: Value = serde_json::from_str(&text(&c.call("headers", json!({})))).unwrap();
    assert_eq!(seen["mcp-protocol-version"], "2026-07-28", "{seen}");
    assert_eq!(seen["mcp-method"], "tools/call", "{seen}");
    assert_eq!(seen["mcp-name"], "headers", "{seen}");
    assert!(seen.get("mcp-session-id").is_none(), "{seen}");
    assert!(
        seen["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Bearer ")),
        "{seen}"
    );
    for h in ["signature", "signature-input", "signature-key", "dpop"] {
        assert!(seen.get(h).is_none(), "{h} reached the upstream: {seen}");
    }
    // An argument the tool mirrors travels in its header, Base64-encoded
    // where a header cannot carry it; the server (which checks it against
    // the body) accepts the call.
    assert_eq!(
        text(&c.call("region", json!({"region": "Zürich"}))),
        "region=Zürich; header==?base64?WsO8cmljaA==?=",
    );
    assert_eq!(
        text(&c.call("region", json!({"region": "eu-west"}))),
        "region=eu-west; header=eu-west",
    );
    // The server asks through its result; the client answers on its retry.
    let greeted = c.call("greet", json!({}));
    assert_eq!(text(&greeted), "hello alice", "{greeted}");
    // Progress reaches the call; a cancelled call leaves nothing in flight.
    let r = c.send(json!({"op": "progress", "tool": "slow", "args": {"steps": 3, "delay": 0.05}}));
    assert_eq!(text(&r["result"]), "done after 3 steps", "{r}");
    assert_eq!(r["progress"].as_array().unwrap().len(), 3, "{r}");
    cancel_leaves_nothing_in_flight(&mut c, &server).await;
    c.exit();
    let opened = audit(&server, &s, "mcp.session.opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["body"]["protocol_version"], "2026-07-28");
    assert_eq!(opened[0]["body"]["stateless"], true);

    // A client of the session era cannot be served by such a server: it is
    // told so at once, not left waiting — in so many words where the
    // configuration says the server speaks 2026-07-28 only.
    let (c, ready) = McpClient::connect(&url, &s);
    assert_eq!(ready["ready"], false, "{ready}");
    drop(c);
    let pinned = format!("{}/mcp/pinned", server.url());
    let (c, ready) = McpClient::connect(&pinned, &s);
    assert_eq!(ready["ready"], false, "{ready}");
    assert!(
        ready["error"]
            .as_str()
            .unwrap()
            .contains("is served in MCP 2026-07-28 only"),
        "{ready}"
    );
    drop(c);
    upstream.kill().unwrap();
    let _ = upstream.wait();
}

/// The server never gets the agent's roots (they would replace the
/// operator's directory limits), and the agent cannot answer a request
/// the server did not make; elicitation is off unless configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cannot_hand_the_server_its_roots_or_unasked_answers() {
    let (server, _p, s, url) = lab("").await;
    let (mut c, _) = McpClient::connect(&url, &s);
    let roots = text(&c.call("roots", json!({})));
    assert!(roots.starts_with("no roots"), "{roots}");
    let asked = text(&c.call("ask", json!({})));
    assert!(
        !asked.contains("alice"),
        "elicitation reached the agent: {asked}"
    );
    let r = c.send(json!({"op": "raw", "session": true,
        "body": json!({"jsonrpc": "2.0", "id": 0, "result": {"roots": [{"uri": "file:///"}]}}).to_string()}));
    assert_eq!(r["status"], 400, "{r}");
    assert!(
        r["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("asked nothing"),
        "{r}"
    );
    let r = c.send(json!({"op": "raw", "session": true,
        "body": json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}).to_string()}));
    assert_eq!(r["body"]["error"]["code"], -32601, "{r}");
    let r = c.send(json!({"op": "raw", "session": true,
        "body": json!({"jsonrpc": "2.0", "id": 5, "method": "completion/complete", "params": {}}).to_string()}));
    assert_eq!(
        r["body"]["error"]["code"], -32602,
        "a completion names what it completes: {r}"
    );
    c.exit();
    let refusals = audit(&server, &s, "decision");
    assert!(
        refusals
            .iter()
            .any(|d| d["body"]["code"] == "invalid_request")
    );
    assert!(
        refusals
            .iter()
            .any(|d| d["body"]["code"] == "method_not_found")
    );
}

/// Sessions belong to one mission and key; concurrent `initialize`s cannot
/// exceed the limit (no process is started past it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bound_to_their_mission_and_limited_under_a_race() {
    use mandate_core::MissionKey;
    let (server, _p, s, url) = lab("max_sessions_per_mission = 2").await;
    let (mut a, _) = McpClient::connect(&url, &s);
    let a_session = a.send(json!({"op": "session"}))["session"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another mission of alice's, with its own agent key.
    let other = saved(&another_mission(&server, &s, LAB_SCOPE).await);
    let (mut b, _) = McpClient::connect_as(&url, &other.key_pem, &other.credential);
    let r = b.send(json!({"op": "raw", "session_id": a_session,
        "body": json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string()}));
    assert_eq!(r["status"], 404, "another mission's session: {r}");
    b.exit();
    let probes = audit(&server, &s, "decision");
    assert!(
        probes
            .iter()
            .any(|d| d["body"]["code"] == "unknown_session")
    );
    // The first mission has one session, in use; ten more `initialize`s
    // at once never make more than the limit: one opens, the others are
    // refused while it opens (a session being opened is not idle), and any
    // that came after it opened took its place (it was idle), recorded.
    let saved: mandate_client::SavedMission =
        serde_json::from_str(&s.agent.save().unwrap()).unwrap();
    let key = MissionKey::from_pkcs8_pem(&saved.key_pem).unwrap();
    let authority = server.url().trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "race", "version": "1"}}})
        .to_string();
        let h = mandate_testkit::signed_headers(
            &key,
            &saved.credential,
            "POST",
            &authority,
            "/mcp/lab",
            Some(("application/json", body.as_bytes())),
            &[],
        );
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut rb = http
                .post(&url)
                .header("accept", "application/json, text/event-stream")
                .body(body);
            for (k, v) in h {
                rb = rb.header(k, v);
            }
            rb.send().await.unwrap().status().as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort_unstable();
    let opened = codes.iter().filter(|c| **c == 200).count();
    assert!(opened >= 1, "{codes:?}");
    assert_eq!(
        opened + codes.iter().filter(|c| **c == 429).count(),
        10,
        "{codes:?}"
    );
    let evicted = audit(&server, &s, "mcp.session.closed")
        .iter()
        .filter(|r| r["body"]["method"] == "initialize")
        .count();
    assert_eq!(evicted, opened - 1, "{codes:?}");
    assert_eq!(health(&server)["mcp"]["sessions"], 2);
    a.exit();
}

/// A server started through a wrapper (a shell, `npx`, `uvx`) is stopped
/// with everything it started when its session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_server_is_stopped_with_its_whole_process_group() {
    let policies = tempfile::tempdir().unwrap();
    let config = format!(
        "policies_dir = {:?}\n\n[[mcp_servers]]\nname = \"lab\"\ncommand = \"sh\"\nargs = [\"-c\", \"'{}' '{}'; true\"]\n",
        policies.path().display().to_string(),
        python(),
        here().join("server.py").display(),
    );
    let server = TestServer::start(bin(), Some(&config));
    let s = server
        .scenario(MissionPlan {
            goal: "Exercise the wrapped lab server".into(),
            scope: LAB_SCOPE.into(),
            boundaries: String::new(),
            budget: 50,
        })
        .await;
    let (mut c, _) = McpClient::connect(&format!("{}/mcp/lab", server.url()), &s);
    // Something the server started that would never notice it is done.
    let pid = text(&c.call("sleeper", json!({})));
    let proc = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc.exists(), "{pid}");
    c.exit();
    for _ in 0..50 {
        if !proc.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!proc.exists(), "the wrapped server outlived its session");
}

/// A stock MCP client that cannot sign launches `mandate mcp bridge` as its
/// stdio server: the bridge signs each request with the mission key, and
/// the same decisions apply (listing, allowed, escalated, denied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_sign_goes_through_the_bridge_with_the_same_decisions() {
    let (server, _p, s, url) = lab("").await;
    let state = server.scratch().join("mission.json");
    std::fs::write(&state, s.agent.save().unwrap().as_bytes()).unwrap();
    let (mut c, ready) = McpClient::through_bridge(&url, &state);
    assert_eq!(ready["ready"], true, "{ready}");
    let listed = c.send(json!({"op": "list"}));
    assert!(
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo"),
        "{listed}"
    );
    assert_eq!(text(&c.call("echo", json!({"text": "bridged"}))), "bridged");
    let r = c.send(json!({"op": "progress", "tool": "slow", "args": {"steps": 2, "delay": 0.05}}));
    assert_eq!(r["progress"].as_array().unwrap().len(), 2, "{r}");
    let secret = c.send(json!({"op": "read", "uri": "notes://secret"}));
    assert_eq!(secret["error"]["data"]["code"], "boundary", "{secret}");
    c.exit();
    for _ in 0..50 {
        if health(&server)["mcp"]["sessions"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        health(&server)["mcp"]["sessions"],
        0,
        "the bridge ends its session"
    );
    let decisions = audit(&server, &s, "decision");
    assert!(
        decisions
            .iter()
            .any(|d| d["body"]["enforcement_point"] == "mcp" && d["body"]["decision"] == "allow")
    );
}

/// A server that cannot work stops `mandate serve` at start, named: a tool
/// mapped to an undeclared action, a program that does not exist, a
/// remote-only setting on a local server.
#[test]
fn a_server_that_cannot_work_stops_the_start_naming_it() {
    for (config, needle) in [
        (
            "[[mcp_servers]]\nname = \"git\"\ncommand = \"sh\"\n[[mcp_servers.tools]]\nname = \"git_commit\"\naction = \"commit\"\n",
            "action `commit`",
        ),
        (
            "[[mcp_servers]]\nname = \"git\"\ncommand = \"/nonexistent/mcp-server-git\"\n",
            "does not exist",
        ),
        (
            "[[mcp_servers]]\nname = \"git\"\ncommand = \"sh\"\naudience = \"x\"\n",
            "`audience`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mandate.toml"), config).unwrap();
        let out = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}");
        assert!(
            err.contains("`git`") && err.contains(needle),
            "{config}: {err}"
        );
    }
}

/// Policy reads a tool's arguments: `refund` is mapped to the `refund`
/// action with `amount` in its context, so refunds over 50,000 escalate
/// (the organisation's `big-refunds`) while small ones go through; the
/// approval is for these exact arguments, which the approver sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reads_tool_arguments_and_big_refunds_escalate() {
    let policies = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    for f in ["actions.cedarschema", "refunds-escalate.cedar"] {
        std::fs::copy(examples.join(f), policies.path().join(f)).unwrap();
    }
    let extra = "[[mcp_servers.tools]]\nname = \"refund\"\naction = \"refund\"\ncontext_from_arguments = [\"amount\"]\n";
    let server = TestServer::start(bin(), Some(&test_server_config(policies.path(), extra)));
    let s = server
        .scenario(MissionPlan {
            goal: "Refund double-billed invoices".into(),
            scope: "permit(principal, action == Action::\"refund\", resource is Tool) when { resource.server == \"lab\" };".into(),
            boundaries: String::new(),
            budget: 50,
        })
        .await;
    let (mut c, _) = McpClient::connect(&format!("{}/mcp/lab", server.url()), &s);
    let listed = c.send(json!({"op": "list"}));
    let refund = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "refund")
        .cloned()
        .unwrap();
    assert_eq!(
        refund["_meta"]["io.mandate/access"]["access"], "decided_per_call",
        "{refund}"
    );
    let small = c.call("refund", json!({"invoice": "7", "amount": 120}));
    assert_eq!(text(&small), "refunded 120 on 7", "{small}");
    let big = c.call("refund", json!({"invoice": "8", "amount": 60000}));
    let decision = &big["_meta"]["io.mandate/decision"];
    assert_eq!(decision["code"], "approval_required", "{big}");
    assert!(
        decision["policies"].to_string().contains("big-refunds"),
        "{big}"
    );
    let approval = decision["approval_id"].as_str().unwrap().to_owned();
    let shown = server
        .cli(Some(&s.alice), &["--json", "approvals", "show", &approval])
        .json();
    assert_eq!(shown["context"]["amount"], 60000, "{shown}");
    assert_eq!(shown["context"]["mcp_arguments"]["invoice"], "8", "{shown}");
    // A call without the argument policy needs is refused, not forwarded.
    let missing = c.send(json!({"op": "call", "tool": "refund", "args": {"invoice": "9"}}));
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
    c.exit();
}

/// A delegated mission over MCP: its listing and its calls are decided by
/// every hop, and the hop that refused is named in the error's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_mission_gets_only_what_every_hop_allows() {
    let (server, _p, s, url) = lab("").await;
    // The helper asks for everything; the parent's scope is the lab's
    // tools and the public notes, and its boundary the secret ones.
    let created = s
        .agent
        .delegate(&mandate_core::wire::DelegateRequest {
            agent: None,
            ephemeral: Some("helper".into()),
            goal: "echo things".into(),
            scope: "permit(principal, action, resource);".into(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: Some(600),
            budget: 20,
            out_of_scope: Some("deny".into()),
            attestation: None,
        })
        .await
        .unwrap();
    let child = mandate_client::MissionAgent::start(server.url(), &created.start_token)
        .await
        .unwrap();
    let saved: mandate_client::SavedMission = serde_json::from_str(&child.save().unwrap()).unwrap();
    let (mut c, ready) = McpClient::connect_as(&url, &saved.key_pem, &saved.credential);
    assert_eq!(ready["ready"], true, "{ready}");
    // A tool every hop allows.
    assert_eq!(text(&c.call("echo", json!({"text": "hi"}))), "hi");
    // The listing shows what the parent would show: not the secret notes.
    let listed = c.send(json!({"op": "resources"}));
    let uris: Vec<&str> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["notes://public"], "{listed}");
    // The parent's boundary holds for the helper, and names the parent.
    let secret = c.send(json!({"op": "read", "uri": "notes://secret"}));
    assert_eq!(secret["error"]["data"]["code"], "boundary", "{secret}");
    assert_eq!(secret["error"]["data"]["hop"]["depth"], 1, "{secret}");
    assert_eq!(
        secret["error"]["data"]["hop"]["agent"], "billing-bot",
        "{secret}"
    );
    c.exit();
}

/// A server labelled untrusted taints the mission when its answer reaches
/// the agent — a resource read here — unless the tool says its results are
/// trusted (`taint = []`); the source is named. (Its metadata is vetted
/// here, `taint_metadata = false`: its listings taint nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_servers_answers_taint_the_mission_before_the_agent_reads_them() {
    let (server, _p, s, url) = lab(
        "taint = [\"web\"]\ntaint_metadata = false\n\n[[mcp_servers.tools]]\nname = \"echo\"\naction = \"call_tool\"\ntaint = []\n",
    )
    .await;
    let alice = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&s.alice);
    let id = s.agent.mission_id().to_string();
    let (mut c, _) = McpClient::connect(&url, &s);
    assert_eq!(text(&c.call("echo", json!({"text": "hi"}))), "hi");
    assert!(
        alice.mission(&id).await.unwrap().taint.is_none(),
        "a trusted tool's answer taints nothing"
    );
    let read = c.send(json!({"op": "read", "uri": "notes://public"}));
    assert_eq!(
        read["result"]["contents"][0]["text"], "public notes",
        "{read}"
    );
    let taint = alice.mission(&id).await.unwrap().taint.expect("tainted");
    assert_eq!(taint.labels.iter().collect::<Vec<_>>(), vec!["web"]);
    assert_eq!(
        taint.sources[0].via,
        "mcp lab resources/read notes://public"
    );
    assert_eq!(audit(&server, &s, "mission.tainted").len(), 1);
    c.exit();
}

/// An `initialize` sent by hand, RFC 9421-signed: the status, the session
/// id it opened, and the JSON-RPC answer. A client that sends only this and
/// goes away leaves its session behind.
async fn raw_initialize(
    url: &str,
    saved: &mandate_client::SavedMission,
) -> (u16, Option<String>, Value) {
    let key = mandate_core::MissionKey::from_pkcs8_pem(&saved.key_pem).unwrap();
    let u = reqwest::Url::parse(url).unwrap();
    let authority = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
    // A message of its own each time: two signed in the same second with
    // one key would otherwise be one signature (Ed25519 is deterministic),
    // refused the second time as replayed.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "left-behind", "version": "1"}}})
    .to_string();
    let h = mandate_testkit::signed_headers(
        &key,
        &saved.credential,
        "POST",
        &authority,
        u.path(),
        Some(("application/json", body.as_bytes())),
        &[],
    );
    let mut rb = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .body(body);
    for (k, v) in h {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, sid, resp.json().await.unwrap_or(Value::Null))
}

/// Another mission of alice's (agent `billing-bot`, a key of its own),
/// started.
async fn another_mission(
    server: &TestServer,
    s: &Scenario,
    scope: &str,
) -> mandate_client::MissionAgent {
    let alice = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&s.alice);
    let m = alice
        .create_mission(&mandate_core::wire::CreateMissionRequest {
            agent: "billing-bot".into(),
            goal: "Another task".into(),
            scope: scope.into(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: Some(50),
            out_of_scope: None,
        })
        .await
        .unwrap();
    mandate_client::MissionAgent::start(server.url(), &m.start_token)
        .await
        .unwrap()
}

fn saved(agent: &mandate_client::MissionAgent) -> mandate_client::SavedMission {
    serde_json::from_str(&agent.save().unwrap()).unwrap()
}

/// The mission's open sessions, as its principal lists them with the CLI.
fn sessions(server: &TestServer, token: &str, mission: &str) -> Vec<Value> {
    let listed = server
        .cli(
            Some(token),
            &["--json", "mcp", "sessions", "--mission", mission],
        )
        .json();
    listed["sessions"].as_array().unwrap().clone()
}

/// Whether `ok` holds within ten seconds.
async fn within_10s(mut ok: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// Clients that go away without ending their sessions (killed, or that only
/// sent `initialize`) cannot lock their mission out: at the limit, a new
/// `initialize` ends the mission's session idle longest — its server
/// process stops, and that is recorded — and opens at once. Sessions in use
/// (a stream open) are never taken: when all are, the mission is refused
/// (`session_limit`). Another mission's sessions are untouched. The
/// principal lists the sessions and ends one; another principal cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_left_behind_make_way_and_sessions_in_use_do_not() {
    // The default limit: four sessions per mission and server.
    let (server, _p, s, url) = lab("").await;
    let mission = s.agent.mission_id().to_string();
    let mine = saved(&s.agent);
    // Another mission of alice's, with an idle session of its own.
    let other = another_mission(&server, &s, LAB_SCOPE).await;
    let other_id = other.mission_id().to_string();
    let (status, theirs, _) = raw_initialize(&url, &saved(&other)).await;
    assert_eq!(status, 200);
    let theirs = theirs.unwrap();

    // Five clients open sessions and go away without `DELETE`: three are
    // killed mid-session (their server processes noted), two only sent
    // `initialize`.
    let mut left_pids = Vec::new();
    for _ in 0..3 {
        let (mut c, ready) = McpClient::connect(&url, &s);
        assert_eq!(ready["ready"], true, "{ready}");
        left_pids.push(text(&c.call("pid", json!({}))));
        c.kill();
    }
    for _ in 0..2 {
        let (status, sid, answer) = raw_initialize(&url, &mine).await;
        assert_eq!(status, 200, "{answer}");
        assert!(sid.is_some());
    }
    assert_eq!(sessions(&server, &s.alice, &mission).len(), 4);

    // A sixth client opens at once, and so do three more: each takes the
    // place of a session left behind, never one in use.
    let mut live = Vec::new();
    for _ in 0..4 {
        let (mut c, ready) = McpClient::connect(&url, &s);
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(text(&c.call("echo", json!({"text": "here"}))), "here");
        live.push(c);
    }
    // Every server process of a session left behind is gone.
    for pid in &left_pids {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        assert!(
            within_10s(|| !proc.exists()).await,
            "the server of a session left behind still runs"
        );
    }
    let closed = audit(&server, &s, "mcp.session.closed");
    let evicted: Vec<&Value> = closed
        .iter()
        .filter(|r| {
            r["body"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("evicted: idle longest")
        })
        .collect();
    assert_eq!(evicted.len(), 5, "{closed:?}");
    for r in &evicted {
        assert_eq!(r["body"]["server"], "lab", "{r}");
        assert_eq!(r["body"]["method"], "initialize", "{r}");
        assert_eq!(r["body"]["mission"], mission.as_str(), "{r}");
    }
    let lines = server
        .cli(
            Some(&s.admin),
            &["audit", "list", "--kind", "mcp.session.closed"],
        )
        .success();
    assert!(
        lines.contains("lab initialize evicted: idle longest"),
        "{lines}"
    );

    // The principal sees the four sessions in use: streams open, nothing
    // in flight.
    let mut listed = Vec::new();
    let streams_open = within_10s(|| {
        listed = sessions(&server, &s.alice, &mission);
        listed.len() == 4 && listed.iter().all(|x| x["stream_open"] == true)
    })
    .await;
    assert!(streams_open, "{listed:?}");
    for x in &listed {
        assert_eq!(x["server"], "lab", "{x}");
        assert_eq!(x["in_flight"], 0, "{x}");
        assert!(x["last_used"].as_u64().unwrap() >= x["opened_at"].as_u64().unwrap());
    }
    // All of them in use: a fifth is refused, and nothing is taken.
    let (status, sid, answer) = raw_initialize(&url, &mine).await;
    assert_eq!((status, sid), (429, None), "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("busy"),
        "{answer}"
    );
    assert!(
        audit(&server, &s, "decision").iter().any(
            |d| d["body"]["code"] == "session_limit" && d["body"]["mcp_method"] == "initialize"
        )
    );
    assert_eq!(sessions(&server, &s.alice, &mission).len(), 4);
    // The other mission's session was never touched.
    let still = sessions(&server, &s.alice, &other_id);
    assert_eq!(still.len(), 1);
    assert_eq!(still[0]["session"], theirs.as_str());
    assert!(
        closed
            .iter()
            .all(|r| r["body"]["mission"] != other_id.as_str()),
        "{closed:?}"
    );

    // Another principal sees no such mission, and cannot end its sessions.
    let admin = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&s.admin);
    let bob = admin
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    let refused = server.cli(Some(&bob), &["mcp", "sessions", "--mission", &mission]);
    assert!(
        !refused.ok() && refused.stderr().contains("not_found"),
        "{}",
        refused.stderr()
    );
    let target = listed[0]["session"].as_str().unwrap().to_owned();
    let refused = server.cli(
        Some(&bob),
        &["mcp", "end-session", "--mission", &mission, &target],
    );
    assert!(
        !refused.ok() && refused.stderr().contains("not_found"),
        "{}",
        refused.stderr()
    );
    // Nor through the other mission: a session is ended only by its own.
    let refused = server.cli(
        Some(&s.alice),
        &["mcp", "end-session", "--mission", &other_id, &target],
    );
    assert!(!refused.ok(), "{}", refused.stdout());
    assert_eq!(sessions(&server, &s.alice, &mission).len(), 4);

    // The principal ends one: its client's next call fails, the others go on.
    server
        .cli(
            Some(&s.alice),
            &["mcp", "end-session", "--mission", &mission, &target],
        )
        .success();
    assert_eq!(sessions(&server, &s.alice, &mission).len(), 3);
    let ended = audit(&server, &s, "mcp.session.closed")
        .into_iter()
        .find(|r| r["body"]["session"] == target.as_str())
        .unwrap();
    assert_eq!(ended["body"]["by"], "principal:alice", "{ended}");
    assert_eq!(ended["body"]["method"], "DELETE", "{ended}");
    let mut failed = 0;
    for mut c in live {
        let r = c.send(json!({"op": "call", "tool": "echo", "args": {"text": "still?"}}));
        if r.get("error").is_some() {
            failed += 1;
            c.kill();
        } else {
            assert_eq!(text(&r["result"]), "still?", "{r}");
            c.exit();
        }
    }
    assert_eq!(failed, 1, "only the ended session's client notices");
    // Every session record names the server and the method.
    for kind in [
        "mcp.session.opening",
        "mcp.session.opened",
        "mcp.session.closed",
    ] {
        for r in audit(&server, &s, kind) {
            assert_eq!(r["body"]["server"], "lab", "{r}");
            assert!(r["body"]["method"].is_string(), "{r}");
        }
    }
}

/// An unsigned request to the MCP gateway gets a `401` whose challenge an
/// independent RFC 9421 implementation acts on: signing exactly the
/// components `Accept-Signature` names (the body's on a `POST`, the
/// session's once there is one) is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_request_gets_a_challenge_a_client_can_act_on() {
    let (_server, _p, s, url) = lab("").await;
    let (mut c, _) = McpClient::connect(&url, &s);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "challenged", "version": "1"}}});
    let r = c.send(json!({"op": "challenge", "method": "POST", "body": init.to_string()}));
    let asked = &r["unsigned"];
    assert_eq!(asked["status"], 401, "{r}");
    assert_eq!(asked["code"], "signature_required", "{r}");
    // Both schemes the server takes (`proof = "either"`, the default).
    assert_eq!(
        asked["www_authenticate"],
        r#"Signature realm="mandate", alg="ed25519", key="jwt", DPoP algs="EdDSA""#,
        "{r}"
    );
    assert_eq!(
        r["covered"],
        json!([
            "@method",
            "@authority",
            "@path",
            "signature-key",
            "content-type",
            "content-digest"
        ]),
        "{r}"
    );
    assert_eq!(r["params"], json!(["alg", "created"]), "{r}");
    assert_eq!(r["signed"]["status"], 200, "{r}");
    assert!(r["signed"]["session"].is_string(), "{r}");
    // With a session (the one just opened): its id is to be covered too
    // (and a `GET` has no body); its stream then opens.
    let opened = r["signed"]["session"].clone();
    let r = c.send(json!({"op": "challenge", "method": "GET", "session_id": opened}));
    assert_eq!(r["unsigned"]["status"], 401, "{r}");
    assert_eq!(
        r["covered"],
        json!([
            "@method",
            "@authority",
            "@path",
            "signature-key",
            "mcp-session-id"
        ]),
        "{r}"
    );
    assert_eq!(r["signed"]["status"], 200, "{r}");
    c.exit();
}

/// The bridge ends its session when it is told to stop (SIGTERM, SIGINT)
/// while its client still holds standard input open, as on end of input:
/// no session, no server process left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_ends_its_session_on_sigterm_and_sigint() {
    let (server, _p, s, url) = lab("").await;
    let state = server.scratch().join("mission.json");
    std::fs::write(&state, s.agent.save().unwrap().as_bytes()).unwrap();
    for (n, signal) in ["TERM", "INT"].into_iter().enumerate() {
        let mut bridge = Command::new(bin())
            .args(["mcp", "bridge", "--state"])
            .arg(&state)
            .arg(&url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdin = bridge.stdin.take().unwrap();
        let mut stdout = BufReader::new(bridge.stdout.take().unwrap());
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "stock-client", "version": "1"}}});
        writeln!(stdin, "{init}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert!(answer["result"]["serverInfo"].is_object(), "{answer}");
        writeln!(
            stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )
        .unwrap();
        writeln!(stdin, "{}", json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "pid", "arguments": {}}})).unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        let pid: Value = serde_json::from_str(&line).unwrap();
        let pid = text(&pid["result"]);
        let proc = PathBuf::from(format!("/proc/{pid}"));
        assert!(proc.exists(), "{line}");
        assert_eq!(health(&server)["mcp"]["sessions"], 1);
        // Told to stop, with standard input still open.
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), &bridge.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(bridge.wait());
        });
        let status = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the bridge did not stop")
            .unwrap();
        assert!(status.success(), "SIG{signal}: {status}");
        drop(stdin);
        assert_eq!(
            health(&server)["mcp"]["sessions"],
            0,
            "SIG{signal}: the bridge left its session"
        );
        assert!(
            within_10s(|| !proc.exists()).await,
            "SIG{signal}: the server process outlived the bridge"
        );
        let closed = audit(&server, &s, "mcp.session.closed");
        assert_eq!(closed.len(), n + 1, "{closed:?}");
        assert_eq!(closed[n]["body"]["reason"], "ended by the agent");
        assert_eq!(closed[n]["body"]["method"], "DELETE");
    }
}

/// A session nobody uses is closed after the server's `idle_timeout_secs`
/// (its process stops, recorded); one whose client holds its stream open
/// is in use however quiet, and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_closes_after_the_idle_timeout_but_one_in_use_stays() {
    let (server, _p, s, url) = lab("idle_timeout_secs = 2").await;
    let mission = s.agent.mission_id().to_string();
    let (mut c, _) = McpClient::connect(&url, &s);
    let (status, left, _) = raw_initialize(&url, &saved(&s.agent)).await;
    assert_eq!(status, 200);
    let left = left.unwrap();
    let mut listed = Vec::new();
    let gone = within_10s(|| {
        listed = sessions(&server, &s.alice, &mission);
        listed.len() == 1
    })
    .await;
    assert!(gone, "{listed:?}");
    assert_ne!(listed[0]["session"], left.as_str());
    assert_eq!(listed[0]["stream_open"], true, "{listed:?}");
    let closed = audit(&server, &s, "mcp.session.closed");
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["body"]["session"], left.as_str());
    assert_eq!(closed[0]["body"]["reason"], "idle for more than 2 s");
    // Quiet for longer than the timeout, and still there.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(text(&c.call("echo", json!({"text": "awake"}))), "awake");
    c.exit();
}

/// A reload that changes an MCP server's entry, or removes it, retires its
/// sessions (ADR 0028): an idle one ends at once (its process stops, its
/// next request is refused with 404, which tells a client to initialize
/// again); a call in flight finishes on the server it started on, and then
/// its session ends too. A new session gets the server as now configured;
/// a removed server's endpoint is gone. Each end is recorded with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_retires_the_sessions_of_a_changed_or_removed_server_once_their_calls_finish() {
    let (server, p, s, url) = lab("").await;
    let file = server.data_dir().join("mandate.toml");
    let config = test_server_config(p.path(), "");
    let mission = s.agent.mission_id().to_string();
    let reload = |what: &str| {
        let said = server.cli(Some(&s.admin), &["policy", "reload"]).success();
        assert!(
            said.contains(&format!("reloaded {}: {what}", file.display())),
            "{said}"
        );
    };
    let gone = |pid: &str| !PathBuf::from(format!("/proc/{pid}")).exists();
    let list = json!({"jsonrpc": "2.0", "id": 90, "method": "tools/list"}).to_string();

    let (mut a, ready) = McpClient::connect(&url, &s);
    assert_eq!(ready["ready"], true, "{ready}");
    let a_pid = text(&a.call("pid", json!({})));
    let a_sid = a.send(json!({"op": "session"}))["session"].clone();
    let (mut b, _) = McpClient::connect(&url, &s);
    let b_pid = text(&b.call("pid", json!({})));
    // A reload that leaves the server's entry as it was leaves its
    // sessions alone.
    reload("routes and MCP servers unchanged");
    assert_eq!(text(&b.call("echo", json!({"text": "still"}))), "still");

    // `a` has a call in flight across the next reload.
    let slow = std::thread::spawn(move || {
        let r = a.call("slow", json!({"steps": 15, "delay": 0.3}));
        (a, r)
    });
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    std::fs::write(
        &file,
        config.replace("max_message_bytes = 4096", "max_message_bytes = 8192"),
    )
    .unwrap();
    reload("MCP servers changed lab");
    // `a`'s session, its call still in flight, takes no new request.
    let r = b.send(json!({"op": "raw", "session_id": a_sid, "body": list}));
    assert_eq!(r["status"], 404, "{r}");
    assert!(
        r["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this MCP session's server was reconfigured"),
        "{r}"
    );
    // `b`, idle: ended, its process stopped, its next request refused.
    let r = b.send(json!({"op": "raw", "session": true, "body": list}));
    assert_eq!(r["status"], 404, "{r}");
    assert!(within_10s(|| gone(&b_pid)).await, "b's server still runs");
    // `a`'s call finished on the server it started on; then its session
    // ended as well.
    let (mut a, done) = slow.join().unwrap();
    assert_eq!(text(&done), "done after 15 steps", "{done}");
    assert!(within_10s(|| gone(&a_pid)).await, "a's server still runs");
    let r = a.send(json!({"op": "raw", "session": true, "body": list}));
    assert_eq!(r["status"], 404, "{r}");
    assert!(within_10s(|| sessions(&server, &s.alice, &mission).is_empty()).await);

    // A new session: the server as now configured.
    let (mut c, ready) = McpClient::connect(&url, &s);
    assert_eq!(ready["ready"], true, "{ready}");
    let c_pid = text(&c.call("pid", json!({})));
    assert_eq!(text(&c.call("echo", json!({"text": "new"}))), "new");

    // Removed: its endpoint is gone and its sessions end.
    std::fs::write(
        &file,
        format!("policies_dir = {:?}\n", p.path().display().to_string()),
    )
    .unwrap();
    reload("MCP servers removed lab");
    let (status, _, body) = raw_initialize(&url, &saved(&s.agent)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "unknown_mcp_server", "{body}");
    assert!(within_10s(|| gone(&c_pid)).await, "c's server still runs");

    let closed = audit(&server, &s, "mcp.session.closed");
    let reasons: Vec<&str> = closed
        .iter()
        .map(|r| r["body"]["reason"].as_str().unwrap())
        .collect();
    let count = |what: &str| reasons.iter().filter(|r| r.contains(what)).count();
    assert_eq!(
        count("its MCP server was reconfigured (a configuration reload)"),
        2,
        "{reasons:?}"
    );
    assert_eq!(
        count("its MCP server was removed from the configuration"),
        1,
        "{reasons:?}"
    );
    for c in [a, b, c] {
        c.kill();
    }
}
