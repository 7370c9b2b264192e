//! End to end: DPoP (RFC 9449) on the MCP gateway, beside RFC 9421. The
//! official MCP Python SDK, whose every HTTP request carries the mission
//! credential as `Authorization: DPoP` and a fresh proof made with PyJWT
//! (`tests/mcp/dpop_client.py`), works through `/mcp/{server}` against a
//! real MCP server over stdio; proofs that are replayed, by another key,
//! for another URL or method, or unbound to the credential are refused, as
//! are a bare credential and a request with both kinds of proof; and a
//! server configured `proof = "signature"` takes no DPoP at all (nor one
//! configured `proof = "dpop"` a signature).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use mandate_core::{Clock as _, MissionKey, OsRandom, SystemClock};
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
        "MANDATE_TEST_PYTHON must name a Python with PyJWT and the MCP SDK; run scripts/test.sh",
    )
}

/// The scripted DPoP client (`tests/mcp/dpop_client.py`).
struct DpopClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DpopClient {
    fn connect(url: &str, pem: &str, credential: &str) -> (Self, Value) {
        let mut child = Command::new(python())
            .arg(here().join("dpop_client.py"))
            .args([url, pem, credential])
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

    /// Ends the session; every HTTP request the client made, as
    /// `(method, status)`.
    fn exit(mut self) -> Vec<(String, u64)> {
        writeln!(self.stdin, "{}", json!({"op": "exit"})).unwrap();
        self.stdin.flush().unwrap();
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

fn audit(server: &TestServer, s: &Scenario, kind: &str) -> Vec<Value> {
    let log = server
        .cli(
            Some(&s.admin),
            &["--json", "audit", "list", "--kind", kind, "--limit", "500"],
        )
        .json();
    log["records"].as_array().unwrap().clone()
}

/// The MCP decisions and refusals in the audit log, as (tool, decision,
/// code).
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

/// The same small server three times: `lab` takes either proof, `strict`
/// only RFC 9421 signatures, `dpoponly` only DPoP.
fn config(policies: &Path) -> String {
    let server = |name: &str, proof: Option<&str>| {
        format!(
            "\n[[mcp_servers]]\nname = {name:?}\ncommand = {:?}\nargs = [{:?}]\n{}",
            python(),
            here().join("server.py").display().to_string(),
            proof
                .map(|p| format!("proof = {p:?}\n"))
                .unwrap_or_default(),
        )
    };
    format!(
        "policies_dir = {:?}\n{}{}{}",
        policies.display().to_string(),
        server("lab", None),
        server("strict", Some("signature")),
        server("dpoponly", Some("dpop")),
    )
}

const SCOPE: &str = r#"
@id("lab-tools")
permit(principal, action == Action::"call_tool", resource is Tool);
"#;

const BOUNDARY: &str = r#"
@id("no-pids")
forbid(principal, action, resource is Tool) when { resource.tool == "pid" };
"#;

async fn lab() -> (TestServer, tempfile::TempDir, Scenario) {
    let policies = tempfile::tempdir().unwrap();
    let server = TestServer::start(bin(), Some(&config(policies.path())));
    let s = server
        .scenario(MissionPlan {
            goal: "Echo things over MCP with DPoP".into(),
            scope: SCOPE.into(),
            boundaries: BOUNDARY.into(),
            budget: 100,
        })
        .await;
    (server, policies, s)
}

/// The official SDK, with an `httpx2.Auth` that does DPoP by PyJWT and
/// nothing of Mandate's: the listing shows what the mission may use, an
/// allowed call goes through, a boundary is refused and recorded, and
/// every request (the POSTs, the GET stream, the closing DELETE) was
/// taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_with_dpop_lists_calls_and_is_refused_what_the_mission_may_not() {
    let (server, _p, s) = lab().await;
    let saved: mandate_client::SavedMission =
        serde_json::from_str(&s.agent.save().unwrap()).unwrap();
    let url = format!("{}/mcp/lab", server.url());
    let (mut c, ready) = DpopClient::connect(&url, &saved.key_pem, &saved.credential);
    assert_eq!(ready["ready"], true, "{ready}");

    let listed = c.send(json!({"op": "list"}));
    let tools = listed["tools"].as_array().unwrap();
    let access = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["_meta"]["io.mandate/access"]["access"].clone())
    };
    assert_eq!(access("echo"), Some(json!("allowed")), "{listed}");
    assert_eq!(access("pid"), None, "a boundary is not shown: {listed}");

    let echoed = c.call("echo", json!({"text": "over DPoP"}));
    assert_eq!(echoed["isError"], false, "{echoed}");
    assert_eq!(text(&echoed), "over DPoP");

    let refused = c.call("pid", json!({}));
    assert_eq!(refused["isError"], true, "{refused}");
    assert_eq!(
        refused["_meta"]["io.mandate/decision"]["code"], "boundary",
        "{refused}"
    );
    assert!(text(&refused).contains("no-pids"), "{refused}");

    let made = c.exit();
    for method in ["POST", "GET", "DELETE"] {
        assert!(
            made.iter().any(|(m, _)| m == method),
            "no {method} in {made:?}"
        );
    }
    assert!(
        made.iter().all(|(_, status)| *status < 400),
        "a request was refused: {made:?}"
    );
    let health: Value = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["mcp"]["sessions"], 0, "the DELETE ended the session");

    let seen = mcp_decisions(&server, &s);
    for want in [("echo", "allow", "scope"), ("pid", "deny", "boundary")] {
        assert!(
            seen.iter()
                .any(|(t, d, c)| (t.as_str(), d.as_str(), c.as_str()) == want),
            "{want:?} not in {seen:?}"
        );
    }
    assert_eq!(audit(&server, &s, "mcp.session.opened").len(), 1);
    let verify = server.cli(Some(&s.admin), &["audit", "verify"]);
    assert!(verify.ok(), "{}", verify.stdout());
}

/// An agent speaking raw HTTP: its key and credential, the authority's
/// issuer URL, and a client.
struct Raw {
    key: MissionKey,
    credential: String,
    issuer: String,
    http: reqwest::Client,
}

/// What came back: the status, the `WWW-Authenticate` values, and the body
/// (the last SSE message, a JSON answer or a problem).
struct Answer {
    status: u16,
    challenges: Vec<String>,
    session: Option<String>,
    body: Value,
}

impl Raw {
    fn new(server: &TestServer, s: &Scenario) -> Self {
        let saved: mandate_client::SavedMission =
            serde_json::from_str(&s.agent.save().unwrap()).unwrap();
        Self {
            key: MissionKey::from_pkcs8_pem(&saved.key_pem).unwrap(),
            credential: saved.credential,
            issuer: server.url().to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A proof by `key` for `htm` and the issuer + `path`, bound to
    /// `token` (`ath`) if any.
    fn proof_by(key: &MissionKey, htm: &str, htu: &str, token: Option<&str>) -> String {
        key.proof(htm, htu, token, SystemClock.now(), &OsRandom)
            .unwrap()
    }

    /// `Authorization: DPoP` and a proof for this request.
    fn dpop(&self, method: &str, path: &str) -> Vec<(String, String)> {
        let htu = format!("{}{path}", self.issuer);
        vec![
            ("authorization".into(), format!("DPoP {}", self.credential)),
            (
                "dpop".into(),
                Self::proof_by(&self.key, method, &htu, Some(&self.credential)),
            ),
        ]
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        session: Option<&str>,
        body: Option<&Value>,
        headers: &[(String, String)],
    ) -> Answer {
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.issuer))
            .header("accept", "application/json, text/event-stream");
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        if let Some(sid) = session {
            rb = rb
                .header("mcp-session-id", sid)
                .header("mcp-protocol-version", "2025-11-25");
        }
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let challenges = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let session = r
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = r.text().await.unwrap();
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .next_back()
            .map_or(text.as_str(), str::trim);
        let body = serde_json::from_str(data).unwrap_or(Value::Null);
        Answer {
            status,
            challenges,
            session,
            body,
        }
    }

    /// `initialize` and `notifications/initialized` with DPoP; the session.
    async fn open(&self, path: &str) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}});
        let a = self
            .send("POST", path, None, Some(&init), &self.dpop("POST", path))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let sid = a.session.unwrap();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let a = self
            .send(
                "POST",
                path,
                Some(&sid),
                Some(&note),
                &self.dpop("POST", path),
            )
            .await;
        assert_eq!(a.status, 202, "{}", a.body);
        sid
    }
}

fn echo(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": text}}})
}

fn code(a: &Answer) -> (u16, &str) {
    (a.status, a.body["code"].as_str().unwrap_or("-"))
}

/// Every proof that is not this request's, by this credential's key, fresh
/// and new, is refused before anything is decided or forwarded; a replay
/// (the key holder's doing) is on the record, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_replayed_misbound_or_mixed_with_signatures_are_refused() {
    let (server, _p, s) = lab().await;
    let agent = Raw::new(&server, &s);
    let path = "/mcp/lab";
    let sid = agent.open(path).await;

    // The same proof twice: the call happens once.
    let call = echo(1, "once");
    let proof = agent.dpop("POST", path);
    let first = agent
        .send("POST", path, Some(&sid), Some(&call), &proof)
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(text(&first.body["result"]), "once", "{}", first.body);
    for _ in 0..2 {
        let again = agent
            .send("POST", path, Some(&sid), Some(&echo(2, "twice")), &proof)
            .await;
        assert_eq!(code(&again), (401, "proof_replayed"), "{}", again.body);
    }

    // A proof by another key than the credential binds.
    let other = MissionKey::generate(&OsRandom).unwrap();
    let htu = format!("{}{path}", agent.issuer);
    let by_other = Raw::proof_by(&other, "POST", &htu, Some(&agent.credential));
    // For another server of the same authority, for another method, without
    // `ath`, with the `ath` of another token.
    let elsewhere = Raw::proof_by(
        &agent.key,
        "POST",
        &format!("{}/mcp/strict", agent.issuer),
        Some(&agent.credential),
    );
    let for_get = Raw::proof_by(&agent.key, "GET", &htu, Some(&agent.credential));
    let no_ath = Raw::proof_by(&agent.key, "POST", &htu, None);
    let wrong_ath = Raw::proof_by(&agent.key, "POST", &htu, Some("another token"));
    for (what, proof, want) in [
        ("another key", by_other, "key_mismatch"),
        ("another server", elsewhere, "bad_proof"),
        ("another method", for_get, "bad_proof"),
        ("no ath", no_ath, "bad_proof"),
        ("another token's ath", wrong_ath, "bad_proof"),
    ] {
        let headers = vec![
            ("authorization".into(), format!("DPoP {}", agent.credential)),
            ("dpop".into(), proof),
        ];
        let a = agent
            .send("POST", path, Some(&sid), Some(&echo(3, what)), &headers)
            .await;
        assert_eq!(code(&a), (401, want), "{what}: {}", a.body);
    }

    // The credential alone, as a bearer token: refused, and the challenge
    // names what would do (never `Bearer`).
    let bearer = vec![(
        "authorization".to_owned(),
        format!("Bearer {}", agent.credential),
    )];
    let a = agent
        .send("POST", path, Some(&sid), Some(&echo(4, "bearer")), &bearer)
        .await;
    assert_eq!(code(&a), (401, "signature_required"), "{}", a.body);
    assert!(
        a.challenges.iter().any(|c| c.starts_with("Signature "))
            && a.challenges.iter().any(|c| c == "DPoP algs=\"EdDSA\"")
            && !a.challenges.iter().any(|c| c.contains("Bearer")),
        "{:?}",
        a.challenges
    );
    // A bearer credential beside a proof is not DPoP either.
    let mut half = bearer.clone();
    half.push(agent.dpop("POST", path).remove(1));
    let a = agent
        .send("POST", path, Some(&sid), Some(&echo(5, "half")), &half)
        .await;
    assert_eq!(code(&a), (401, "unauthenticated"), "{}", a.body);

    // A valid signature and a valid proof on one request: which one
    // proves it? Neither is taken.
    let body = echo(6, "both");
    let authority = agent.issuer.trim_start_matches("http://").to_owned();
    let mut both = mandate_testkit::signed_headers(
        &agent.key,
        &agent.credential,
        "POST",
        &authority,
        path,
        Some(("application/json", body.to_string().as_bytes())),
        &[("mcp-session-id", &sid)],
    );
    both.retain(|(k, _)| k != "content-type");
    both.extend(agent.dpop("POST", path));
    let a = agent.send("POST", path, None, Some(&body), &both).await;
    assert_eq!(code(&a), (400, "invalid_request"), "{}", a.body);

    // Nothing of it was decided: one echo, allowed once; the replay is on
    // the record once, the rest (whose key was never proven) only answered.
    let seen = mcp_decisions(&server, &s);
    let count =
        |f: &dyn Fn(&(String, String, String)) -> bool| seen.iter().filter(|x| f(x)).count();
    assert_eq!(
        count(&|(t, d, _)| t == "echo" && d == "allow"),
        1,
        "{seen:?}"
    );
    assert_eq!(count(&|(_, _, c)| c == "proof_replayed"), 1, "{seen:?}");
    for c in [
        "key_mismatch",
        "bad_proof",
        "signature_required",
        "unauthenticated",
    ] {
        assert_eq!(count(&|x| x.2 == c), 0, "{c} recorded: {seen:?}");
    }

    // The GET stream and the DELETE take DPoP too, each with its own proof.
    let a = agent
        .send(
            "DELETE",
            path,
            Some(&sid),
            None,
            &agent.dpop("DELETE", path),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
}

/// `proof = "signature"` takes no DPoP, `proof = "dpop"` no signature, and
/// each one's challenge names only what it takes; a request with neither
/// is told both where both would do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_can_insist_on_one_kind_of_proof() {
    let (server, _p, s) = lab().await;
    let agent = Raw::new(&server, &s);
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let authority = agent.issuer.trim_start_matches("http://").to_owned();
    let signed = |path: &str| {
        let mut h = mandate_testkit::signed_headers(
            &agent.key,
            &agent.credential,
            "POST",
            &authority,
            path,
            Some(("application/json", init.to_string().as_bytes())),
            &[],
        );
        h.retain(|(k, _)| k != "content-type");
        h
    };

    // strict: DPoP refused, a signature taken.
    let a = agent
        .send(
            "POST",
            "/mcp/strict",
            None,
            Some(&init),
            &agent.dpop("POST", "/mcp/strict"),
        )
        .await;
    assert_eq!(code(&a), (401, "signature_required"), "{}", a.body);
    assert!(a.session.is_none());
    assert!(
        a.challenges.iter().any(|c| c.starts_with("Signature "))
            && !a.challenges.iter().any(|c| c.starts_with("DPoP")),
        "{:?}",
        a.challenges
    );
    let a = agent
        .send(
            "POST",
            "/mcp/strict",
            None,
            Some(&init),
            &signed("/mcp/strict"),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.session.is_some());

    // dpoponly: a signature refused, DPoP taken.
    let a = agent
        .send(
            "POST",
            "/mcp/dpoponly",
            None,
            Some(&init),
            &signed("/mcp/dpoponly"),
        )
        .await;
    assert_eq!(code(&a), (401, "unauthenticated"), "{}", a.body);
    assert_eq!(a.challenges, ["DPoP algs=\"EdDSA\""]);
    let a = agent
        .send(
            "POST",
            "/mcp/dpoponly",
            None,
            Some(&init),
            &agent.dpop("POST", "/mcp/dpoponly"),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.session.is_some());

    // lab, with nothing at all: both named, with the components to sign.
    let a = agent.send("POST", "/mcp/lab", None, Some(&init), &[]).await;
    assert_eq!(code(&a), (401, "signature_required"), "{}", a.body);
    assert!(
        a.challenges.iter().any(|c| c.starts_with("Signature "))
            && a.challenges.iter().any(|c| c == "DPoP algs=\"EdDSA\""),
        "{:?}",
        a.challenges
    );
    assert_eq!(audit(&server, &s, "mcp.session.opened").len(), 2);
}
