//! End to end: approval notifications reach a real webhook receiver on
//! loopback (Python, verifying the signature with PyJWT against the JWKS),
//! survive a receiver that fails first, and never hold up a decision.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mandate_client::Client;
use mandate_core::Decision;
use mandate_core::wire::{ApproveRequest, DecideRequest};
use mandate_testkit::{MissionPlan, TestServer};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// The receiver: answers 503 to the first `fail` posts, then verifies each
/// notification (typ, EdDSA signature by a key of the JWKS, audience,
/// expiry) and appends what it got to `out` as JSON lines.
const RECEIVER: &str = r#"
import json, sys, urllib.request, jwt
from http.server import BaseHTTPRequestHandler, HTTPServer
out, fail, jwks_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = {"posts": 0}
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        seen["posts"] += 1
        body = self.rfile.read(int(self.headers["content-length"])).decode()
        if seen["posts"] <= fail:
            self.send_response(503); self.end_headers(); return
        try:
            assert self.headers["content-type"] == "application/jwt"
            header = jwt.get_unverified_header(body)
            assert header["typ"] == "mandate-event+jwt", header
            jwks = json.load(urllib.request.urlopen(open(jwks_file).read().strip()))
            key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
            aud = "http://%s:%d/hook" % self.server.server_address
            claims = jwt.decode(body, jwt.PyJWK(key).key, algorithms=["EdDSA"], audience=aud,
                                options={"require": ["exp", "iat", "iss", "aud", "jti"]})
            rec = {"verified": True, "posts": seen["posts"], "jti": claims["jti"],
                   "event": claims["event"], "approval": claims["data"]["approval"]["id"],
                   "status": claims["data"]["approval"]["status"],
                   "context": claims["data"]["approval"]["context"],
                   "summary": claims["data"]["approval"]["summary"]}
            code = 200
        except Exception as e:
            rec, code = {"verified": False, "error": repr(e)}, 400
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(code); self.end_headers()
srv = HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

struct Receiver {
    child: Child,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(out: &Path, fail: u32, jwks_file: &Path) -> Receiver {
    let python = std::env::var("MANDATE_TEST_PYTHON").expect(
        "MANDATE_TEST_PYTHON must name a Python with PyJWT[crypto]; run the tests with scripts/test.sh",
    );
    let mut child = Command::new(python)
        .args(["-c", RECEIVER])
        .arg(out)
        .arg(fail.to_string())
        .arg(jwks_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Receiver {
        port: line.trim().parse().unwrap(),
        child,
    }
}

fn server_with_webhook(url: &str, timeout_ms: u64) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["actions.cedarschema", "refunds-escalate.cedar"] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let config = format!(
        "policies_dir = {:?}\n[webhook]\nurl = {url:?}\ninitial_backoff_ms = 100\nmax_backoff_ms = 400\ntimeout_ms = {timeout_ms}\n",
        dir.path().display().to_string()
    );
    (TestServer::start(bin(), Some(&config)), dir)
}

fn refund(credential: &str, amount: u64) -> DecideRequest {
    DecideRequest {
        credential: credential.to_owned(),
        action: "refund".into(),
        resource: serde_json::from_value(
            json!({"type": "Resource", "id": "inv-9", "tags": {"billing": "nov"}}),
        )
        .unwrap(),
        context: json!({ "amount": amount }).as_object().unwrap().clone(),
        justification: Some("duplicate charge".into()),
        required_trust: None,
    }
}

fn plan() -> MissionPlan {
    MissionPlan {
        goal: "Reconcile November invoices".into(),
        scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar")).unwrap(),
        boundaries: String::new(),
        budget: 100,
    }
}

fn lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_notifications_arrive_after_the_receiver_recovers() {
    let scratch = tempfile::tempdir().unwrap();
    let (out, jwks_file) = (
        scratch.path().join("got.jsonl"),
        scratch.path().join("jwks"),
    );
    // The receiver fails its first three posts, then recovers.
    let rx = receiver(&out, 3, &jwks_file);
    let url = format!("http://127.0.0.1:{}/hook", rx.port);
    let (server, _dir) = server_with_webhook(&url, 2_000);
    std::fs::write(
        &jwks_file,
        format!("{}/.well-known/jwks.json", server.url()),
    )
    .unwrap();
    let s = server.scenario(plan()).await;

    let r = s
        .gateway
        .decide(&refund(s.agent.credential(), 90_000))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Escalate);
    let id = r.approval_id.unwrap();
    Client::new(server.url())
        .unwrap()
        .with_token(&s.alice)
        .approve(&id, &ApproveRequest::default())
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = lines(&out);
        if got.len() >= 2 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(got.iter().all(|g| g["verified"] == true), "{got:?}");
    let events: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|g| {
            (
                g["event"].as_str().unwrap(),
                g["approval"].as_str().unwrap(),
                g["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("approval.requested", id.as_str(), "pending"),
            ("approval.approved", id.as_str(), "approved"),
        ]
    );
    // The failures were retried, not lost: the first delivery came after
    // three refused posts.
    assert_eq!(got[0]["posts"], 4);
    assert_ne!(got[0]["jti"], got[1]["jti"]);
    // The call's arguments stay in Mandate; the summary says what it is.
    assert_eq!(got[0]["context"], json!({}));
    assert!(got[0]["summary"].as_str().unwrap().contains("refund"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_holds_up_no_decision_and_loses_no_request() {
    // Accepts connections (the kernel does) and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", hang.local_addr().unwrap());
    let (server, _dir) = server_with_webhook(&url, 30_000);
    let s = server.scenario(plan()).await;
    let alice = Client::new(server.url()).unwrap().with_token(&s.alice);
    let started = Instant::now();
    for amount in 60_000..60_005 {
        let r = s
            .gateway
            .decide(&refund(s.agent.credential(), amount))
            .await
            .unwrap();
        assert_eq!(r.decision, Decision::Escalate);
    }
    // Five escalations while every notification hangs for 30 s: the
    // decisions did not wait for the webhook.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let pending = alice.approvals("status=pending").await.unwrap();
    assert_eq!(pending.len(), 5);
}
