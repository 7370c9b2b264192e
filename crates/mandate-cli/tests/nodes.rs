//! End to end: three `mandate serve` nodes on one PostgreSQL database, as
//! an operator runs them behind a load balancer (ADR 0017,
//! docs/scale-out.md). What one node does holds on the others: a
//! revocation, an approval, a budget, a signature's single use, the audit
//! log; and a node that dies loses nothing a client saw.
//!
//! Needs the PostgreSQL this machine runs (`MANDATE_TEST_DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`); each test works in a
//! schema of its own, dropped at the end. Without PostgreSQL the tests fail,
//! saying so.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_client::{Client, MissionAgent};
use mandate_core::wire::{ApproveRequest, CreateMissionRequest, DecideRequest};
use mandate_core::{Decision, ResourceRef};
use mandate_testkit::postgres::{Schema, psql, psql_value};
use mandate_testkit::{TestServer, free_port};
use serde_json::json;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// An upstream that answers every request with a small JSON, counting them.
async fn upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move || {
        let count = Arc::clone(&count);
        async move {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            axum::Json(json!({ "upstream": "ok" }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// Three nodes on one schema, one issuer (node 1's address stands for the
/// load balancer's), one policy directory, one route to `upstream`.
struct Deployment {
    nodes: Vec<TestServer>,
    admin: String,
    alice: String,
    gateway: String,
    _policies: tempfile::TempDir,
    schema: Schema,
    /// Every node's `mandate.toml`.
    config: String,
}

async fn deployment(upstream: &str) -> Deployment {
    deployment_with(upstream, "").await
}

/// As [`deployment`], with `extra` appended to every node's configuration.
async fn deployment_with(upstream: &str, extra: &str) -> Deployment {
    let schema = Schema::new("nodes");
    let policies = tempfile::tempdir().unwrap();
    for f in [
        "actions.cedarschema",
        "hr-off-limits.cedar",
        "refunds-escalate.cedar",
        "wires-step-up.cedar",
    ] {
        std::fs::copy(examples().join(f), policies.path().join(f)).unwrap();
    }
    let first = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "database_url = {:?}\npublic_url = \"http://{first}\"\npolicies_dir = {:?}\n\n\
         [[routes]]\nname = \"echo\"\nupstream = \"{upstream}\"\n\n\
         [[routes.rules]]\nmethod = \"*\"\npath = \"/{{*rest}}\"\naction = \"read\"\n",
        schema.url(),
        policies.path().display().to_string(),
    ) + extra;
    let n1 = TestServer::start_node(bin(), &config, &first, None);
    let admin = n1.init_admin();
    let n2 = TestServer::start_node(bin(), &config, "127.0.0.1:0", Some(&n1));
    let n3 = TestServer::start_node(bin(), &config, "127.0.0.1:0", Some(&n1));
    let admin_c = Client::new(n1.url()).unwrap().with_token(&admin);
    let alice = admin_c
        .create_principal("alice", None)
        .await
        .unwrap()
        .token
        .token;
    let gateway = admin_c
        .create_principal("gateway", None)
        .await
        .unwrap()
        .token
        .token;
    Client::new(n2.url())
        .unwrap()
        .with_token(&alice)
        .register_agent(&mandate_core::wire::RegisterAgentRequest {
            name: "billing-bot".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    Deployment {
        nodes: vec![n1, n2, n3],
        admin,
        alice,
        gateway,
        _policies: policies,
        schema,
        config,
    }
}

impl Deployment {
    /// The audit records of `mission`, as the admin reads them on node
    /// `node`, with `filter` added to the query (`&decision=allow`, …).
    async fn mission_audit(&self, node: usize, mission: &str, filter: &str) -> serde_json::Value {
        self.client(node, &self.admin)
            .audit(&format!("mission={mission}{filter}"))
            .await
            .unwrap()
    }

    /// The budget count each allowed call of `mission` recorded, in
    /// order, as the admin reads the log on node `node`.
    async fn budget_counts(&self, node: usize, mission: &str) -> Vec<u64> {
        let allowed = self
            .mission_audit(node, mission, "&decision=allow&limit=1000")
            .await;
        let mut used: Vec<u64> = allowed["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["body"]["budget_used"].as_u64())
            .collect();
        used.sort_unstable();
        used
    }

    fn client(&self, node: usize, token: &str) -> Client {
        Client::new(self.nodes[node].url())
            .unwrap()
            .with_token(token)
    }

    /// A started mission of alice's agent that may read any route and
    /// refund invoices (escalated above the example policy's threshold).
    async fn mission(&self, budget: u64) -> MissionAgent {
        let scope = format!(
            "{}\npermit(principal, action == Action::\"read\", resource is Route);",
            std::fs::read_to_string(examples().join("missions/billing-scope.cedar")).unwrap()
        );
        let m = self
            .client(1, &self.alice)
            .create_mission(&CreateMissionRequest {
                agent: "billing-bot".into(),
                goal: "Reconcile November invoices".into(),
                scope,
                boundaries: String::new(),
                escalations: String::new(),
                ttl_seconds: None,
                budget: Some(budget),
                out_of_scope: None,
            })
            .await
            .unwrap();
        // Agents reach the deployment at its public URL (node 1 here).
        MissionAgent::start(self.nodes[0].url(), &m.start_token)
            .await
            .unwrap()
    }
}

/// A GET of `/gw/echo/{what}` on `node`, signed by `agent`.
async fn signed_get(
    agent: &mut MissionAgent,
    d: &Deployment,
    node: usize,
    what: &str,
) -> reqwest::Request {
    agent
        .signed_request(
            "GET",
            &format!("{}/gw/echo/{what}", d.nodes[node].url()),
            None,
            None,
            &[],
        )
        .await
        .unwrap()
        .build()
        .unwrap()
}

async fn problem_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_holds_on_another_at_once() {
    let (up, _) = upstream().await;
    let d = deployment(&up).await;
    let mut agent = d.mission(100).await;
    let http = reqwest::Client::new();
    let r = http
        .execute(signed_get(&mut agent, &d, 2, "before").await)
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "allowed on node 3 before the revocation");

    d.client(0, &d.admin)
        .revoke(
            "mission",
            agent.mission_id().as_str(),
            Some("stolen laptop"),
        )
        .await
        .unwrap();
    let revoked = Instant::now();
    // Node 3 never heard of the revocation directly: it reads the
    // mission's state on each request.
    let mut waited = Duration::ZERO;
    loop {
        let r = http
            .execute(signed_get(&mut agent, &d, 2, "after").await)
            .await
            .unwrap();
        if r.status() != 200 {
            let (status, code) = problem_code(r).await;
            assert_eq!((status, code.as_str()), (401, "revoked"));
            break;
        }
        waited = revoked.elapsed();
        assert!(waited < Duration::from_secs(1), "still allowed after 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "revocation on node 1 refused on node 3 after {} ms",
        revoked.elapsed().as_millis()
    );
    assert!(waited < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_on_one_node_wakes_a_wait_on_another() {
    let (up, _) = upstream().await;
    let d = deployment(&up).await;
    let agent = d.mission(100).await;
    let gw = d.client(0, &d.gateway);
    let invoice: ResourceRef = serde_json::from_value(
        json!({"type": "Resource", "id": "inv-7", "tags": {"billing": "nov"}}),
    )
    .unwrap();
    let call = DecideRequest {
        credential: agent.credential().to_owned(),
        action: "refund".into(),
        resource: invoice,
        context: json!({ "amount": 80_000 }).as_object().unwrap().clone(),
        justification: Some("customer ACME was double-billed".into()),
        required_trust: None,
    };
    let r = gw.decide(&call).await.unwrap();
    assert_eq!(r.decision, Decision::Escalate);
    let id = r.approval_id.unwrap();

    // Someone waits on node 3; alice approves on node 2.
    let waiter = d.client(2, &d.admin);
    let wait_id = id.clone();
    let waiting = tokio::spawn(async move {
        let v = waiter.approval_wait(&wait_id, 30).await.unwrap();
        (v.status, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.client(1, &d.alice)
        .approve(&id, &ApproveRequest::default())
        .await
        .unwrap();
    let approved = Instant::now();
    let (status, woke) = waiting.await.unwrap();
    assert_eq!(status, "approved");
    let took = woke.saturating_duration_since(approved);
    println!(
        "approval on node 2 woke the wait on node 3 after {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "woke after {took:?}");
    // And the call now goes ahead on node 3, once.
    let r = d.client(2, &d.gateway).decide(&call).await.unwrap();
    assert_eq!(r.decision, Decision::Allow, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_spread_over_three_nodes_is_spent_exactly() {
    let (up, forwarded) = upstream().await;
    let d = deployment(&up).await;
    let mut agent = d.mission(30).await;
    let mut requests = Vec::new();
    for i in 0..60 {
        requests.push(signed_get(&mut agent, &d, i % 3, &format!("r{i}")).await);
    }
    let http = reqwest::Client::new();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|req| {
            let http = http.clone();
            tokio::spawn(async move { problem_code(http.execute(req).await.unwrap()).await })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => allowed += 1,
            (403, code) => assert_eq!(code, "budget_exhausted"),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(allowed, 30, "a budget of 30 over three nodes");
    assert_eq!(forwarded.load(std::sync::atomic::Ordering::SeqCst), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_used_on_one_node_is_refused_on_another() {
    let (up, forwarded) = upstream().await;
    let d = deployment(&up).await;
    let mut agent = d.mission(100).await;
    let http = reqwest::Client::new();
    let req = signed_get(&mut agent, &d, 0, "once").await;
    let replay = reqwest::Request::try_clone(&req).unwrap();
    let authority = d.nodes[0].url().trim_start_matches("http://").to_owned();
    assert_eq!(http.execute(req).await.unwrap().status(), 200);
    // The same bytes to node 2, for the same authority (behind a load
    // balancer every node answers one name).
    let mut to_node2 = replay;
    *to_node2.url_mut() = format!("{}/gw/echo/once", d.nodes[1].url())
        .parse()
        .unwrap();
    to_node2
        .headers_mut()
        .insert("host", authority.parse().unwrap());
    let (status, code) = problem_code(http.execute(to_node2).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "signature_replayed"));
    assert_eq!(
        forwarded.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the replay reached no upstream"
    );
    // The replay is on the record, as node 2 refused it.
    let audit = d
        .mission_audit(2, agent.mission_id().as_str(), "&decision=deny")
        .await;
    let replays = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["body"]["code"] == "signature_replayed")
        .count();
    assert_eq!(replays, 1, "{audit}");
    // The replay spent none of the mission's budget (its group counted
    // its calls with its claims, then undid them): the next call, on
    // node 2, is the mission's second.
    let next = signed_get(&mut agent, &d, 1, "next").await;
    assert_eq!(http.execute(next).await.unwrap().status(), 200);
    assert_eq!(
        d.budget_counts(2, agent.mission_id().as_str()).await,
        [1, 2]
    );
}

/// How many audit groups node `node` sent whole on its predictions:
/// (held, missed), from its metrics.
async fn predicted_groups(d: &Deployment, node: usize) -> (u64, u64) {
    let text = d.client(node, &d.admin).metrics().await.unwrap();
    let count = |outcome: &str| {
        let name = format!("mandate_audit_predicted_groups_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics:\n{text}"))
    };
    (count("held"), count("missed"))
}

/// A node alone on the log commits each audit group in one exchange, on
/// its predictions of the log's head and the mission's count (ADR 0033,
/// sixth amendment). When another node writes in between, the first
/// node's next prediction misses: nothing of that try is kept, the group
/// is run as usual, and the budget is still spent exactly, to its last
/// unit, with every count on the record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_commits_on_predictions_and_another_nodes_write_makes_it_miss_safely() {
    let (up, forwarded) = upstream().await;
    let d = deployment(&up).await;
    let mut agent = d.mission(30).await;
    let http = reqwest::Client::new();
    let mut sent = 0;
    let mut send = async |agent: &mut MissionAgent, node: usize| {
        sent += 1;
        let req = signed_get(agent, &d, node, &format!("r{sent}")).await;
        problem_code(http.execute(req).await.unwrap()).await
    };
    for _ in 0..14 {
        assert_eq!(send(&mut agent, 0).await, (200, String::new()));
    }
    let (held, missed) = predicted_groups(&d, 0).await;
    assert!(held >= 3, "node 1 alone on the log predicted {held} groups");
    // Node 2 counts and records one call: node 1's next group finds
    // neither the head nor the count it predicted.
    assert_eq!(send(&mut agent, 1).await, (200, String::new()));
    assert_eq!(send(&mut agent, 0).await, (200, String::new()));
    assert_eq!(predicted_groups(&d, 0).await, (held, missed + 1));
    // The rest of the budget, on node 1, then no more, on either node.
    for _ in 16..30 {
        assert_eq!(send(&mut agent, 0).await, (200, String::new()));
    }
    assert_eq!(
        send(&mut agent, 0).await,
        (403, "budget_exhausted".to_owned())
    );
    assert_eq!(
        send(&mut agent, 2).await,
        (403, "budget_exhausted".to_owned())
    );
    assert_eq!(forwarded.load(std::sync::atomic::Ordering::SeqCst), 30);
    let (again, _) = predicted_groups(&d, 0).await;
    assert!(again > held, "node 1 predicts again once alone");
    assert_eq!(
        d.budget_counts(0, agent.mission_id().as_str()).await,
        (1..=30).collect::<Vec<_>>()
    );
    let out = d.nodes[0].cli(
        None,
        &[
            "audit",
            "verify",
            "--data",
            d.nodes[0].data_dir().to_str().unwrap(),
        ],
    );
    assert!(out.ok(), "audit verify: {}{}", out.stdout(), out.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_decision_and_the_log_verifies() {
    let (up, _) = upstream().await;
    let mut d = deployment(&up).await;
    let mut agent = d.mission(100_000).await;
    let mut requests = Vec::new();
    for i in 0..300 {
        requests.push((
            i % 3,
            signed_get(&mut agent, &d, i % 3, &format!("k{i}")).await,
        ));
    }
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for (node, req) in requests {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http.execute(req).await.ok()?;
            (r.status() == 200).then_some(node)
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    d.nodes[1].kill();
    let mut seen = 0;
    for t in tasks {
        if t.await.unwrap().is_some() {
            seen += 1;
        }
    }
    assert!(seen > 0, "no request got through");
    // Every allowed call a client saw is in the audit log.
    let audit = d
        .mission_audit(0, agent.mission_id().as_str(), "&decision=allow&limit=1000")
        .await;
    let recorded = audit["records"].as_array().map_or(0, Vec::len);
    assert!(
        recorded >= seen,
        "{seen} answers were allowed, {recorded} recorded"
    );
    // The other nodes keep answering, and the log verifies, offline, from
    // each surviving node's data dir.
    let r = http
        .execute(signed_get(&mut agent, &d, 2, "after").await)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for node in [0, 2] {
        let out = d.nodes[node].cli(
            None,
            &[
                "audit",
                "verify",
                "--data",
                d.nodes[node].data_dir().to_str().unwrap(),
            ],
        );
        assert!(
            out.ok(),
            "audit verify on node {}: {}{}",
            node + 1,
            out.stdout(),
            out.stderr()
        );
    }
    let _ = &d.schema;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_notices_is_one_reload_a_second_and_real_ones_still_arrive() {
    let (up, _) = upstream().await;
    let d = deployment(&up).await;
    let count = || {
        psql_value(&format!(
            "SELECT count(*) FROM {}.audit_events WHERE kind = 'policy.reloaded'",
            d.schema.name()
        ))
        .parse::<u64>()
        .unwrap()
    };
    let before = count();
    // Anyone who can connect to the database may NOTIFY on the channel:
    // a thousand notices, half of them claiming lost notices.
    psql(&format!(
        "SELECT count(pg_notify('mandate_changes:{0}', 'forged' || g || ' policies')), \
                count(pg_notify('mandate_changes:{0}', 'forged' || g || ' lost')) \
         FROM generate_series(1, 500) g",
        d.schema.name()
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reloads = count() - before;
    println!("a thousand notices made {reloads} reloads on three nodes");
    assert!(
        reloads <= 9,
        "{reloads} policy reloads (and audit records) for one burst of notices"
    );
    // A real reload on node 1 still reaches node 3 within about a second.
    let node3 = d.client(2, &d.admin);
    let was = node3.policies().await.unwrap().version;
    d.client(0, &d.admin).reload_policies().await.unwrap();
    let t = Instant::now();
    while node3.policies().await.unwrap().version == was {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "node 3 did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_initialize_replayed_to_another_node_opens_no_session() {
    let python = std::env::var("MANDATE_TEST_PYTHON")
        .expect("MANDATE_TEST_PYTHON must name a Python with the MCP SDK; run scripts/test.sh");
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.py");
    let (up, _) = upstream().await;
    let d = deployment_with(
        &up,
        &format!(
            "\n[[mcp_servers]]\nname = \"lab\"\ncommand = {python:?}\nargs = [{:?}]\n",
            server.display().to_string()
        ),
    )
    .await;
    let mut agent = d.mission(100).await;
    let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}"#;
    let req = agent
        .signed_request(
            "POST",
            &format!("{}/mcp/lab", d.nodes[0].url()),
            Some(("application/json", init.to_vec())),
            None,
            &[],
        )
        .await
        .unwrap()
        .header("accept", "application/json, text/event-stream")
        .build()
        .unwrap();
    let replay = reqwest::Request::try_clone(&req).unwrap();
    let http = reqwest::Client::new();
    let r = http.execute(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("mcp-session-id"));
    // The same bytes to node 2, for the same authority.
    let authority = d.nodes[0].url().trim_start_matches("http://").to_owned();
    let mut to_node2 = replay;
    *to_node2.url_mut() = format!("{}/mcp/lab", d.nodes[1].url()).parse().unwrap();
    to_node2
        .headers_mut()
        .insert("host", authority.parse().unwrap());
    let r = http.execute(to_node2).await.unwrap();
    assert!(
        !r.headers().contains_key("mcp-session-id"),
        "a replayed initialize opened a session on node 2"
    );
    assert_eq!(
        problem_code(r).await,
        (401, "signature_replayed".to_owned())
    );
    // One session was opened (and one server started), and the replay is
    // on the record.
    let audit = d.mission_audit(2, agent.mission_id().as_str(), "").await;
    let records = audit["records"].as_array().unwrap();
    let kinds = |k: &str| records.iter().filter(|r| r["kind"] == k).count();
    assert_eq!(kinds("mcp.session.opening"), 1, "{audit}");
    assert_eq!(kinds("mcp.session.opened"), 1, "{audit}");
    assert!(
        records
            .iter()
            .any(|r| r["body"]["code"] == "signature_replayed"),
        "{audit}"
    );
}

/// A DPoP proof on `/mcp` covers neither the message nor the session, so
/// its use is spent on every node whatever the request was: the proof of a
/// listing on node 1 is not a call on the mission's session on node 2, and
/// a call's proof is not a second call there (ADR 0023).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_used_on_mcp_on_one_node_does_nothing_on_another() {
    let python = std::env::var("MANDATE_TEST_PYTHON")
        .expect("MANDATE_TEST_PYTHON must name a Python with the MCP SDK; run scripts/test.sh");
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.py");
    let (up, _) = upstream().await;
    let d = deployment_with(
        &up,
        &format!(
            "\n[[mcp_servers]]\nname = \"lab\"\ncommand = {python:?}\nargs = [{:?}]\n",
            server.display().to_string()
        ),
    )
    .await;
    let m = d
        .client(1, &d.alice)
        .create_mission(&CreateMissionRequest {
            agent: "billing-bot".into(),
            goal: "Echo things on every node".into(),
            scope: "permit(principal, action == Action::\"call_tool\", resource is Tool);".into(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: Some(100),
            out_of_scope: None,
        })
        .await
        .unwrap();
    let agent = MissionAgent::start(d.nodes[0].url(), &m.start_token)
        .await
        .unwrap();
    let credential = agent.credential().to_owned();
    // Proofs name the issuer's URL (node 1's), whichever node answers.
    let proof = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        agent
            .key()
            .proof(
                "POST",
                &format!("{}/mcp/lab", d.nodes[0].url()),
                Some(&credential),
                mandate_core::UnixTime(now),
                &mandate_core::OsRandom,
            )
            .unwrap()
    };
    let http = reqwest::Client::new();
    let post = |node: usize, session: Option<&str>, proof: &str, body: serde_json::Value| {
        let mut rb = http
            .post(format!("{}/mcp/lab", d.nodes[node].url()))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("authorization", format!("DPoP {credential}"))
            .header("dpop", proof)
            .body(body.to_string());
        if let Some(sid) = session {
            rb = rb.header("mcp-session-id", sid);
        }
        rb.send()
    };
    // A session of the mission on node 1 and on node 2.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "agent", "version": "1"}}});
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let mut sessions = Vec::new();
    for node in [0, 1] {
        let r = post(node, None, &proof(), init.clone()).await.unwrap();
        assert_eq!(r.status(), 200, "node {}", node + 1);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let r = post(node, Some(&sid), &proof(), initialized.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        sessions.push(sid);
    }
    let echo = |text: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"text": text}}})
    };
    // A listing on node 1; its proof on node 2, as a call.
    let listing = proof();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let r = post(0, Some(&sessions[0]), &listing, list).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post(1, Some(&sessions[1]), &listing, echo("not mine"))
        .await
        .unwrap();
    assert_eq!(problem_code(r).await, (401, "proof_replayed".to_owned()));
    // A call on node 1; its proof on node 2, as another call.
    let call = proof();
    let r = post(0, Some(&sessions[0]), &call, echo("mine"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("mine"));
    let r = post(1, Some(&sessions[1]), &call, echo("mine again"))
        .await
        .unwrap();
    assert_eq!(problem_code(r).await, (401, "proof_replayed".to_owned()));
    // One call was decided (and made); both replays are on the record.
    let audit = d.mission_audit(2, agent.mission_id().as_str(), "").await;
    let records = audit["records"].as_array().unwrap();
    let decided = |code: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "decision" && r["body"]["code"] == code)
            .count()
    };
    assert_eq!(decided("scope"), 1, "{audit}");
    assert_eq!(decided("proof_replayed"), 2, "{audit}");
}

/// `mandate serve` on `data` with `config`, which must refuse to start:
/// its standard error.
fn refused_start(data: &Path, config: &str) -> String {
    std::fs::write(data.join("mandate.toml"), config).unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("MANDATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a node with another authority key started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_node_with_another_authority_key_is_refused_before_and_after_init() {
    let schema = Schema::new("nodes");
    let first = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "database_url = {:?}\npublic_url = \"http://{first}\"\n",
        schema.url()
    );
    let n1 = TestServer::start_node(bin(), &config, &first, None);
    // Node 1 runs on an empty log (nobody ran `mandate init` yet); a node
    // whose keys were not copied is refused, saying why.
    for step in ["before init", "after init"] {
        let other = tempfile::tempdir().unwrap();
        let err = refused_start(other.path(), &config);
        assert!(
            err.contains("is not the key that signs this database's audit log")
                && err.contains("authority.key"),
            "{step}: {err}"
        );
        if step == "before init" {
            n1.init_admin();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_used_on_one_node_is_refused_on_another() {
    let (up, _) = upstream().await;
    let d = deployment(&up).await;
    let agent = d.mission(100).await;
    let credential = agent.credential().to_owned();
    let proof = |method: &str, path: &str, token: Option<&str>| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Proofs name the issuer's URL (node 1's here), whichever node
        // the load balancer picks.
        agent
            .key()
            .proof(
                method,
                &format!("{}{path}", d.nodes[0].url()),
                token,
                mandate_core::UnixTime(now),
                &mandate_core::OsRandom,
            )
            .unwrap()
    };
    let http = reqwest::Client::new();
    // The agent reads its mission on node 1; the same request to node 2.
    let read = proof("GET", "/v1/mission", Some(&credential));
    for (node, expected) in [
        (0, (200, "")),
        (1, (401, "proof_replayed")),
        (1, (401, "proof_replayed")),
    ] {
        let r = http
            .get(format!("{}/v1/mission", d.nodes[node].url()))
            .header("authorization", format!("DPoP {credential}"))
            .header("dpop", &read)
            .send()
            .await
            .unwrap();
        let (status, code) = problem_code(r).await;
        assert_eq!((status, code.as_str()), expected, "node {}", node + 1);
    }
    // A credential refresh on node 1, replayed to node 3 for another
    // credential.
    let path = format!("/v1/missions/{}/credential", agent.mission_id().as_str());
    let refresh = proof("POST", &path, None);
    for (node, expected) in [(0, (200, "")), (2, (401, "proof_replayed"))] {
        let r = http
            .post(format!("{}{path}", d.nodes[node].url()))
            .header("dpop", &refresh)
            .send()
            .await
            .unwrap();
        let (status, code) = problem_code(r).await;
        assert_eq!((status, code.as_str()), expected, "node {}", node + 1);
    }
    // Both replays are on the record.
    let audit = d.mission_audit(1, agent.mission_id().as_str(), "").await;
    let replays = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "proof.replayed")
        .count();
    assert_eq!(replays, 2, "{audit}");
}

#[test]
fn a_node_named_its_database_by_the_environment_is_verified_the_same_way() {
    let schema = Schema::new("nodes");
    // The database from the environment, as an operator might name it.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("n1");
    let started = std::process::Command::new(bin())
        .args(["init", "--data"])
        .arg(&dir)
        .env("MANDATE_DATABASE_URL", schema.url())
        .env("MANDATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    // Without the variable, `audit verify --data` says what it needs;
    // with it, it verifies.
    let verify = |env: Option<&str>| {
        let mut c = std::process::Command::new(bin());
        c.args(["audit", "verify", "--data"])
            .arg(&dir)
            .env("MANDATE_LOG", "warn")
            .env_remove("MANDATE_DATABASE_URL");
        if let Some(url) = env {
            c.env("MANDATE_DATABASE_URL", url);
        }
        c.output().unwrap()
    };
    let out = verify(None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MANDATE_DATABASE_URL"), "{err}");
    let out = verify(Some(&schema.url()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the help says to keep a password off the command line.
    let help = std::process::Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("process list"));
}

/// The key of the writers' advisory lock in `schema` (FNV-1a of its name,
/// as the store computes it).
fn writers_lock(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("mandate.writer:{schema}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_inside_its_audit_commit_does_not_stop_the_others() {
    let (up, _) = upstream().await;
    let d = deployment(&up).await;
    let mut agent = d.mission(100).await;
    let http = reqwest::Client::new();
    let r = http
        .execute(signed_get(&mut agent, &d, 0, "before").await)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Hold the writers' lock for a moment, so node 2's next commit waits
    // for it inside its transaction; freeze node 2 meanwhile. Its session
    // then gets the lock and sits on it, as a node paused mid-commit does.
    let held = std::thread::spawn({
        let (url, key) = (d.schema.url(), writers_lock(d.schema.name()));
        move || {
            std::process::Command::new("psql")
                .args([
                    &url,
                    "-qc",
                    &format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({key}); SELECT pg_sleep(2); COMMIT;"
                    ),
                ])
                .output()
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_node2 = signed_get(&mut agent, &d, 1, "frozen").await;
    let frozen = tokio::spawn({
        let http = http.clone();
        async move { http.execute(to_node2).await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    d.nodes[1].signal("STOP");
    assert!(held.join().unwrap().status.success());
    // Node 1 goes on deciding, within the time PostgreSQL gives a session
    // idle in a transaction.
    let t = Instant::now();
    let after = signed_get(&mut agent, &d, 0, "after").await;
    let r = tokio::time::timeout(Duration::from_secs(30), http.execute(after)).await;
    d.nodes[1].signal("CONT");
    let took = t.elapsed();
    let status = r.map(|r| r.map(|r| r.status().as_u16()));
    assert!(
        matches!(status, Ok(Ok(200))),
        "node 1 after {took:?}: {status:?}"
    );
    println!("node 1 decided {} ms after node 2 froze", took.as_millis());
    // Node 2's call was not allowed through.
    let frozen = frozen.await.unwrap().map(|s| s.as_u16());
    assert_ne!(frozen.as_ref().ok(), Some(&200), "{frozen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_deployments_vault_key_refuses_to_start() {
    let (up, _) = upstream().await;
    let d = deployment_with(
        &up,
        "\n[[routes]]\nname = \"crm\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"vault\"\n\n\
         [[routes.rules]]\nmethod = \"*\"\npath = \"/{*rest}\"\naction = \"read\"\n",
    )
    .await;
    d.nodes[0]
        .cli_with_input(
            Some(&d.admin),
            &["vault", "put", "crm", "alice", "--bearer"],
            "s3cret-token\n",
        )
        .success();
    // The authority key but not the vault key: it would make a vault key
    // of its own, open none of the stored secrets, and seal new ones no
    // other node can open.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::copy(
        d.nodes[0].data_dir().join("authority.key"),
        data.join("authority.key"),
    )
    .unwrap();
    let err = refused_start(&data, &d.config);
    assert!(
        err.contains("vault key") && err.contains("vault.key"),
        "{err}"
    );
    // With it, a node starts (as `deployment` shows for nodes 2 and 3).
}
