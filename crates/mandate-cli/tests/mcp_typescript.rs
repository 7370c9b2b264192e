//! End to end: the official MCP TypeScript SDK (`@modelcontextprotocol/client`,
//! its current release) through the MCP gateway, every HTTP request carrying
//! the mission credential as `Authorization: DPoP` and a fresh RFC 9449 proof
//! made with jose in the transport's `fetch` (`tests/mcp/ts-client/client.mjs`).
//! Against the reference `mcp-server-git`, in both protocol generations: the
//! listing is filtered, an allowed call goes through, a boundary is refused,
//! and an escalation is approved by a person through each generation's own
//! mechanism (URL-mode elicitation on 2026-07-28, the escalated result and
//! the same call again in the session era). Progress reaches the client from
//! the SDK-built test server, and `server-everything` (the TypeScript SDK's
//! reference server) works as a second upstream. The servers take DPoP only
//! (`proof = "dpop"`), so every request the client made was proven that way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

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

/// Where `scripts/test.sh` installed the TypeScript client's npm packages
/// (`npm ci` of `tests/mcp/ts-client/package-lock.json`).
fn node_modules() -> PathBuf {
    let dir = std::env::var("MANDATE_TEST_TS_CLIENT_DIR").expect(
        "MANDATE_TEST_TS_CLIENT_DIR must name the npm install of tests/mcp/ts-client; run scripts/test.sh",
    );
    let modules = Path::new(&dir).join("node_modules");
    assert!(
        modules.join("@modelcontextprotocol/client").is_dir(),
        "{} has no @modelcontextprotocol/client; run scripts/test.sh",
        modules.display()
    );
    modules
}

/// `server-everything`, run by the gateway over stdio.
fn server_everything() -> PathBuf {
    node_modules().join("@modelcontextprotocol/server-everything/dist/index.js")
}

/// The scripted TypeScript MCP client, copied beside a link to the
/// installed packages so that Node resolves its imports there.
struct TsClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TsClient {
    /// The SDK's own choice of revision: it probes `server/discover`.
    fn current(server: &TestServer, url: &str, s: &Scenario) -> (Self, Value) {
        Self::spawn(server, url, s, &[])
    }

    /// The session era: the SDK's `initialize` handshake.
    fn legacy(server: &TestServer, url: &str, s: &Scenario) -> (Self, Value) {
        Self::spawn(server, url, s, &["--legacy"])
    }

    fn spawn(server: &TestServer, url: &str, s: &Scenario, extra: &[&str]) -> (Self, Value) {
        let dir = server.scratch().join("ts-client");
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(here().join("ts-client/client.mjs"), dir.join("client.mjs")).unwrap();
            std::os::unix::fs::symlink(node_modules(), dir.join("node_modules")).unwrap();
        }
        // What `mandate mission start --state` writes.
        let state = dir.join("mission.json");
        std::fs::write(&state, s.agent.save().unwrap().as_bytes()).unwrap();
        let mut child = Command::new("node")
            .arg(dir.join("client.mjs"))
            .arg(url)
            .arg(&state)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (20 or later) must be on PATH");
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

    fn write(&mut self, cmd: Value) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn send(&mut self, cmd: Value) -> Value {
        self.write(cmd);
        self.read()
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self.send(json!({"op": "call", "tool": tool, "args": args}));
        r.get("result").cloned().unwrap_or(r)
    }

    /// `tools/list`: each tool's access mark, `None` for a hidden tool.
    fn access(&mut self) -> impl Fn(&str) -> Option<Value> + use<> {
        let listed = self.send(json!({"op": "list"}));
        let tools = listed["tools"].as_array().cloned().unwrap_or_default();
        assert!(!tools.is_empty(), "{listed}");
        move |name| {
            tools
                .iter()
                .find(|t| t["name"] == name)
                .map(|t| t["_meta"]["io.mandate/access"]["access"].clone())
        }
    }

    /// Closes the client; every HTTP request it made, as `(method, status)`.
    fn exit(mut self) -> Vec<(String, u64)> {
        self.write(json!({"op": "exit"}));
        let made = self.read();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the MCP client failed: {status}");
        made["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_u64().unwrap()))
            .collect()
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

/// The MCP decisions in the audit log, as (tool, decision, code).
fn mcp_decisions(server: &TestServer, s: &Scenario) -> Vec<(String, String, String)> {
    audit(server, s, "decision")
        .iter()
        .filter(|d| d["body"]["enforcement_point"] == "mcp")
        .map(|d| {
            let b = &d["body"];
            (
                b["resource"]["tool"].as_str().unwrap_or("-").to_owned(),
                b["decision"].as_str().unwrap_or("-").to_owned(),
                b["code"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn assert_decided(server: &TestServer, s: &Scenario, wanted: &[(&str, &str, &str)]) {
    let seen = mcp_decisions(server, s);
    for want in wanted {
        assert!(
            seen.iter()
                .any(|(t, d, c)| (t.as_str(), d.as_str(), c.as_str()) == *want),
            "{want:?} not in {seen:?}"
        );
    }
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

/// The reference git server behind Mandate (DPoP only), on a repository
/// with one commit and a staged change, for a mission that reads, asks
/// before committing and never resets.
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
        "policies_dir = {:?}\n\n[[mcp_servers]]\nname = \"git\"\ncommand = {:?}\nargs = [\"--repository\", {:?}]\nproof = \"dpop\"\n",
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

/// The current TypeScript SDK settles on 2026-07-28 through Mandate: the
/// listing hides the boundary and marks the commit as needing approval;
/// `git_log` runs; `git_commit` shows the person the approval's URL through
/// URL-mode elicitation, and once they approve, the same call completes
/// with no retry of the agent's own; `git_reset` is refused. Every request
/// was a stateless DPoP POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_on_2026_07_28_gets_its_approval_through_url_elicitation() {
    let (server, repo, _policies, s, url) = git_lab().await;
    let r = repo.path();
    let repo_path = r.display().to_string();
    let (mut c, ready) = TsClient::current(&server, &url, &s);
    assert_eq!(ready["protocol_version"], "2026-07-28", "{ready}");
    assert_eq!(ready["era"], "modern", "{ready}");

    let access = c.access();
    assert_eq!(access("git_log"), Some(json!("allowed")));
    assert_eq!(access("git_commit"), Some(json!("approval_required")));
    assert_eq!(access("git_reset"), None, "a boundary is not shown");

    let log = c.call("git_log", json!({"repo_path": repo_path}));
    assert_eq!(log["isError"], false, "{log}");
    assert!(text(&log).contains("first commit"), "{log}");

    // The escalated commit: the SDK hands its elicitation handler the
    // approval's URL; the person approves; the same call completes.
    let args = json!({"repo_path": repo_path, "message": "second line"});
    c.write(json!({"op": "call", "tool": "git_commit", "args": args}));
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
    assert!(
        shown["message"].as_str().unwrap().contains(&approval),
        "{asked}"
    );
    assert!(!run(r, &["log", "--oneline"]).contains("second line"));
    server
        .cli(Some(&s.alice), &["approvals", "approve", &approval])
        .success();
    let done = c.send(json!({"action": "accept"}));
    let done = done.get("result").cloned().unwrap_or(done);
    assert_eq!(done["isError"], false, "{done}");
    assert!(text(&done).contains("committed"), "{done}");
    assert!(run(r, &["log", "--oneline"]).contains("second line"));

    // Another commit, and the person declines to open its approval: the
    // call ends with the ordinary escalated answer, and nothing is run.
    std::fs::write(r.join("README"), "first\nsecond\nthird\n").unwrap();
    run(r, &["add", "README"]);
    let other = json!({"repo_path": repo_path, "message": "third line"});
    c.write(json!({"op": "call", "tool": "git_commit", "args": other}));
    let asked = c.read();
    assert_eq!(asked["elicitation"]["mode"], "url", "{asked}");
    let declined = c.send(json!({"action": "decline"}));
    let declined = declined.get("result").cloned().unwrap_or(declined);
    assert_eq!(declined["isError"], true, "{declined}");
    let decision = &declined["_meta"]["io.mandate/decision"];
    assert_eq!(decision["code"], "approval_required", "{declined}");
    assert_ne!(decision["approval_id"], json!(approval), "{declined}");
    assert!(
        asked["elicitation"]["url"]
            .as_str()
            .unwrap()
            .ends_with(decision["approval_id"].as_str().unwrap()),
        "{asked} {declined}"
    );
    assert!(!run(r, &["log", "--oneline"]).contains("third line"));

    // A boundary: refused, and the staged change stays staged.
    std::fs::write(r.join("NOTES"), "staged\n").unwrap();
    run(r, &["add", "NOTES"]);
    let reset = c.call("git_reset", json!({"repo_path": repo_path}));
    assert_eq!(reset["isError"], true, "{reset}");
    assert_eq!(
        reset["_meta"]["io.mandate/decision"]["code"], "boundary",
        "{reset}"
    );
    assert!(text(&reset).contains("never-reset"), "{reset}");
    assert!(run(r, &["diff", "--cached", "--name-only"]).contains("NOTES"));

    let made = c.exit();
    assert!(
        made.iter().all(|(m, status)| m == "POST" && *status == 200),
        "stateless: POSTs only, each taken: {made:?}"
    );
    assert_decided(
        &server,
        &s,
        &[
            ("git_log", "allow", "scope"),
            ("git_commit", "escalate", "escalation"),
            ("git_commit", "allow", "grant"),
            ("git_reset", "deny", "boundary"),
        ],
    );
    let opened = audit(&server, &s, "mcp.session.opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["body"]["stateless"], true);
    let verify = server.cli(Some(&s.admin), &["audit", "verify"]);
    assert!(verify.ok(), "{}", verify.stdout());
}

/// The same SDK in the session era (`initialize`, `Mcp-Session-Id`): the
/// same listing and decisions; the escalated commit comes back as an error
/// result naming the approval, and after the person approves, the same
/// call again commits. The session's GET stream and closing DELETE carry
/// DPoP proofs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_in_the_session_era_sends_the_approved_call_again() {
    let (server, repo, _policies, s, url) = git_lab().await;
    let r = repo.path();
    let repo_path = r.display().to_string();
    let (mut c, ready) = TsClient::legacy(&server, &url, &s);
    assert_eq!(ready["protocol_version"], "2025-11-25", "{ready}");
    assert_eq!(ready["era"], "legacy", "{ready}");

    let access = c.access();
    assert_eq!(access("git_log"), Some(json!("allowed")));
    assert_eq!(access("git_commit"), Some(json!("approval_required")));
    assert_eq!(access("git_reset"), None, "a boundary is not shown");

    let log = c.call("git_log", json!({"repo_path": repo_path}));
    assert_eq!(log["isError"], false, "{log}");
    assert!(text(&log).contains("first commit"), "{log}");

    let args = json!({"repo_path": repo_path, "message": "second line"});
    let asked = c.call("git_commit", args.clone());
    assert_eq!(asked["isError"], true, "{asked}");
    let decision = &asked["_meta"]["io.mandate/decision"];
    assert_eq!(decision["code"], "approval_required", "{asked}");
    let approval = decision["approval_id"].as_str().unwrap().to_owned();
    assert!(text(&asked).contains(&approval), "{asked}");
    assert!(!run(r, &["log", "--oneline"]).contains("second line"));
    server
        .cli(Some(&s.alice), &["approvals", "approve", &approval])
        .success();
    let done = c.call("git_commit", args);
    assert_eq!(done["isError"], false, "{done}");
    assert!(text(&done).contains("committed"), "{done}");
    assert!(run(r, &["log", "--oneline"]).contains("second line"));

    let reset = c.call("git_reset", json!({"repo_path": repo_path}));
    assert_eq!(
        reset["_meta"]["io.mandate/decision"]["code"], "boundary",
        "{reset}"
    );

    let made = c.exit();
    for method in ["POST", "GET", "DELETE"] {
        assert!(
            made.iter().any(|(m, status)| m == method && *status < 300),
            "{method} taken: {made:?}"
        );
    }
    assert!(
        made.iter().all(|(_, status)| *status < 400),
        "no request refused: {made:?}"
    );
    assert_decided(
        &server,
        &s,
        &[
            ("git_log", "allow", "scope"),
            ("git_commit", "escalate", "escalation"),
            ("git_commit", "allow", "grant"),
            ("git_reset", "deny", "boundary"),
        ],
    );
    let opened = audit(&server, &s, "mcp.session.opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_ne!(opened[0]["body"]["stateless"], true, "{opened:?}");
    assert_eq!(
        health(&server)["mcp"]["sessions"],
        0,
        "the client's DELETE ends the session"
    );
}

const LAB_SCOPE: &str = r#"
@id("lab-tools")
permit(principal, action == Action::"call_tool", resource is Tool)
when { resource.server == "lab" };
"#;

/// Progress notifications of a long call reach the TypeScript client's
/// callback, in both generations: statelessly on the call's own stream, and
/// in a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_gets_its_calls_progress_in_both_generations() {
    let policies = tempfile::tempdir().unwrap();
    let config = format!(
        "policies_dir = {:?}\n\n[[mcp_servers]]\nname = \"lab\"\ncommand = {:?}\nargs = [{:?}]\nproof = \"dpop\"\n",
        policies.path().display().to_string(),
        python(),
        here().join("server.py").display().to_string(),
    );
    let server = TestServer::start(bin(), Some(&config));
    let s = server
        .scenario(MissionPlan {
            goal: "Exercise the lab server".into(),
            scope: LAB_SCOPE.into(),
            boundaries: String::new(),
            budget: 50,
        })
        .await;
    let url = format!("{}/mcp/lab", server.url());
    for (mut c, ready) in [
        TsClient::current(&server, &url, &s),
        TsClient::legacy(&server, &url, &s),
    ] {
        assert_eq!(ready["ready"], true, "{ready}");
        let r =
            c.send(json!({"op": "progress", "tool": "slow", "args": {"steps": 3, "delay": 0.05}}));
        assert_eq!(text(&r["result"]), "done after 3 steps", "{r}");
        let progress = r["progress"].as_array().unwrap();
        assert_eq!(
            progress,
            &[
                json!([1, 3, "step 1"]),
                json!([2, 3, "step 2"]),
                json!([3, 3, "step 3"])
            ],
            "{ready}: {r}"
        );
        c.exit();
    }
}

const EVERYTHING_SCOPE: &str = r#"
@id("echo-and-add")
permit(principal, action == Action::"call_tool", resource is Tool)
when { resource.server == "everything" && ["echo", "trigger-long-running-operation"].contains(resource.tool) };
"#;

const EVERYTHING_BOUNDARY: &str = r#"
@id("no-environment")
forbid(principal, action, resource is Tool)
when { resource.server == "everything" && resource.tool == "get-env" };
"#;

/// `server-everything`, the TypeScript SDK's reference server, as a second
/// upstream: the current client lists it (filtered by the mission), calls
/// its `echo` and its long-running operation (with progress) through
/// Mandate; the server's environment stays behind a boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_uses_server_everything_through_mandate() {
    let policies = tempfile::tempdir().unwrap();
    let config = format!(
        "policies_dir = {:?}\n\n[[mcp_servers]]\nname = \"everything\"\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\nproof = \"dpop\"\n",
        policies.path().display().to_string(),
        server_everything().display().to_string(),
    );
    let server = TestServer::start(bin(), Some(&config));
    let s = server
        .scenario(MissionPlan {
            goal: "Echo things".into(),
            scope: EVERYTHING_SCOPE.into(),
            boundaries: EVERYTHING_BOUNDARY.into(),
            budget: 50,
        })
        .await;
    let url = format!("{}/mcp/everything", server.url());
    let (mut c, ready) = TsClient::current(&server, &url, &s);
    assert_eq!(ready["protocol_version"], "2026-07-28", "{ready}");
    let access = c.access();
    assert_eq!(access("echo"), Some(json!("allowed")));
    assert_eq!(access("get-env"), None, "a boundary is not shown");
    let echoed = c.call("echo", json!({"message": "through Mandate"}));
    assert_ne!(echoed["isError"], true, "{echoed}");
    assert!(text(&echoed).contains("through Mandate"), "{echoed}");
    // Its long-running operation reports progress; the client gets it.
    let r = c.send(
        json!({"op": "progress", "tool": "trigger-long-running-operation",
        "args": {"duration": 0.3, "steps": 3}}),
    );
    assert!(text(&r["result"]).contains("completed"), "{r}");
    assert_eq!(
        r["progress"],
        json!([[1, 3, null], [2, 3, null], [3, 3, null]]),
        "{r}"
    );
    let env = c.call("get-env", json!({}));
    assert_eq!(
        env["_meta"]["io.mandate/decision"]["code"], "boundary",
        "{env}"
    );
    c.exit();
    assert_decided(
        &server,
        &s,
        &[("echo", "allow", "scope"), ("get-env", "deny", "boundary")],
    );
}
