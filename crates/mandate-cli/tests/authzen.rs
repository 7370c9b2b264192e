//! End to end: OpenID AuthZEN 1.0 against a live `mandate serve` — the
//! interop "Todo" and "API gateway" scenarios' published requests and
//! expected decisions (test-vectors/authzen, from the openid/authzen
//! repository), and
//! Mandate's own semantics in AuthZEN's terms: escalation, budget, audit,
//! batches, bad input, the enforcement point's authentication and the
//! subject's credential.
//!
//! How the interop subjects are substituted: each of the scenario's five
//! users (`subject.id` = their PID) is a Mandate principal who delegates a
//! mission to an agent of their own ("an agent acting for that user"); the
//! subject `{"type": "user" | "identity", "id": PID}` of every published request is
//! replaced by `{"type": "mandate_mission", "id": <that mission's id>,
//! "properties": {"credential": <its mission credential>}}`. Action,
//! resource and context are sent as published. The scenario's roles are the
//! organisation's Cedar policies over the user a mission acts for, and
//! "owners edit their own todos" is each user's mission scope.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mandate_client::{Client, MissionAgent};
use mandate_core::wire::{ApproveRequest, CreateMissionRequest, RegisterAgentRequest};
use mandate_testkit::{MissionPlan, TestServer};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vectors() -> PathBuf {
    repo().join("test-vectors/authzen/todo")
}

/// A server whose policy dir holds copies of `files` from `dir`.
fn server_with(dir: &Path, files: &[&str]) -> (TestServer, tempfile::TempDir) {
    server_configured(dir, files, "")
}

/// [`server_with`], with `extra` in its configuration.
fn server_configured(dir: &Path, files: &[&str], extra: &str) -> (TestServer, tempfile::TempDir) {
    let policies = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(dir.join(f), policies.path().join(f)).unwrap();
    }
    let config = format!(
        "{extra}policies_dir = {:?}\n",
        policies.path().display().to_string()
    );
    (TestServer::start(bin(), Some(&config)), policies)
}

/// An enforcement point that speaks AuthZEN over plain HTTP.
struct Pep {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

/// An answer: status, `X-Request-ID`, `WWW-Authenticate`, body.
struct Answer {
    status: u16,
    request_id: Option<String>,
    challenge: Option<String>,
    body: Value,
}

impl Pep {
    fn new(url: &str, token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    async fn send(&self, path: &str, body: String, request_id: Option<&str>) -> Answer {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(id) = request_id {
            rb = rb.header("x-request-id", id);
        }
        let resp = rb.send().await.unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (status, request_id, challenge) = (
            resp.status().as_u16(),
            header("x-request-id"),
            header("www-authenticate"),
        );
        let body = resp.json().await.unwrap();
        Answer {
            status,
            request_id,
            challenge,
            body,
        }
    }

    /// `POST /access/v1/evaluation`, expecting a decision.
    async fn evaluation(&self, body: &Value) -> Value {
        let a = self
            .send("/access/v1/evaluation", body.to_string(), None)
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    /// `POST /access/v1/evaluations`, expecting decisions.
    async fn evaluations(&self, body: &Value) -> Value {
        let a = self
            .send("/access/v1/evaluations", body.to_string(), None)
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }
}

/// The subject for an agent acting under `agent`'s mission.
fn subject(agent: &MissionAgent) -> Value {
    json!({
        "type": "mandate_mission",
        "id": agent.mission_id().to_string(),
        "properties": {"credential": agent.credential()},
    })
}

fn decisions(body: &Value) -> Vec<bool> {
    body["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_bool().unwrap())
        .collect()
}

/// The audit log's decision records made through AuthZEN, oldest first.
fn authzen_records(server: &TestServer, admin: &str) -> Vec<Value> {
    let log = server
        .cli(
            Some(admin),
            &[
                "--json", "audit", "list", "--kind", "decision", "--limit", "1000",
            ],
        )
        .json();
    log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["body"]["front_door"] == "authzen")
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_interop_todo_and_api_gateway_scenarios_decide_as_published() {
    // Both of the scenario's policies: the app's fine-grained one and the
    // API gateway's route-level one.
    let (server, _policies) = server_with(
        &vectors().join("policies"),
        &[
            "todo.cedarschema",
            "todo.cedar",
            "gateway.cedarschema",
            "gateway.cedar",
        ],
    );
    let admin_token = server.init_admin();
    let admin = Client::new(server.url()).unwrap().with_token(&admin_token);
    let users: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(vectors().join("users.json")).unwrap())
            .unwrap();
    let scope_template = std::fs::read_to_string(vectors().join("mission-scope.cedar")).unwrap();
    // Each user delegates a mission to an agent of their own.
    let mut by_pid: BTreeMap<String, MissionAgent> = BTreeMap::new();
    for u in &users {
        let name = u["principal"].as_str().unwrap();
        let token = admin
            .create_principal(name, None)
            .await
            .unwrap()
            .token
            .token;
        let me = Client::new(server.url()).unwrap().with_token(&token);
        me.register_agent(&RegisterAgentRequest {
            name: format!("todo-agent-{name}"),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
        let created = me
            .create_mission(&CreateMissionRequest {
                agent: format!("todo-agent-{name}"),
                goal: "Keep the shared todo list".into(),
                scope: scope_template.replace("{email}", u["email"].as_str().unwrap()),
                boundaries: String::new(),
                escalations: String::new(),
                ttl_seconds: None,
                budget: Some(1000),
                // What the scenario does not allow is a plain `false`,
                // not a question to a person.
                out_of_scope: Some("deny".into()),
            })
            .await
            .unwrap();
        let agent = MissionAgent::start(server.url(), &created.start_token)
            .await
            .unwrap();
        by_pid.insert(u["pid"].as_str().unwrap().to_owned(), agent);
    }
    // The Todo backend: the enforcement point, with its own API token.
    let pep_token = admin
        .create_principal("todo-backend", None)
        .await
        .unwrap()
        .token
        .token;
    let pep = Pep::new(server.url(), Some(&pep_token));
    let substitute = |s: &Value| {
        let pid = s["id"].as_str().unwrap();
        // `user` in the Todo scenario, `identity` in the gateway's.
        assert!(s["type"] == "user" || s["type"] == "identity", "{s}");
        subject(
            by_pid
                .get(pid)
                .unwrap_or_else(|| panic!("unknown PID {pid}")),
        )
    };

    let published: Value = serde_json::from_str(
        &std::fs::read_to_string(vectors().join("decisions-authorization-api-1_0-02.json"))
            .unwrap(),
    )
    .unwrap();
    let mut compared = 0;
    let mut wrong = Vec::new();
    for (i, case) in published["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let mut req = case["request"].clone();
        req["subject"] = substitute(&case["request"]["subject"]);
        let request_id = format!("todo-{i}");
        let a = pep
            .send("/access/v1/evaluation", req.to_string(), Some(&request_id))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.request_id.as_deref(), Some(request_id.as_str()));
        if a.body["decision"] != case["expected"] {
            wrong.push(format!("{}: {}", case["request"], a.body));
        }
        compared += 1;
    }
    for case in published["evaluations"].as_array().unwrap() {
        let mut req = case["request"].clone();
        if req.get("subject").is_some() {
            req["subject"] = substitute(&case["request"]["subject"]);
        }
        for item in req["evaluations"].as_array_mut().unwrap() {
            if item.get("subject").is_some() {
                let s = item["subject"].clone();
                item["subject"] = substitute(&s);
            }
        }
        let got = pep.evaluations(&req).await;
        let want: Vec<bool> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect();
        if decisions(&got) != want {
            wrong.push(format!("{}: {got}", case["request"]));
        }
        compared += 1;
    }
    // The API gateway scenario: another enforcement point asks whether a
    // user's agent may invoke a method on a route of the Todo app.
    let gw_token = admin
        .create_principal("api-gateway", None)
        .await
        .unwrap()
        .token
        .token;
    let gateway = Pep::new(server.url(), Some(&gw_token));
    let published: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("test-vectors/authzen/gateway/decisions.json"))
            .unwrap(),
    )
    .unwrap();
    for case in published["evaluation"].as_array().unwrap() {
        let mut req = case["request"].clone();
        req["subject"] = substitute(&case["request"]["subject"]);
        let got = gateway.evaluation(&req).await;
        if got["decision"] != case["expected"] {
            wrong.push(format!("{}: {got}", case["request"]));
        }
        compared += 1;
    }
    assert_eq!(compared, 43 + 25, "every published case was replayed");
    assert!(
        wrong.is_empty(),
        "decisions that differ:\n{}",
        wrong.join("\n")
    );

    // Every one of them is on the record, and the record holds.
    let records = authzen_records(&server, &admin_token);
    let by = |pep: &str| {
        records
            .iter()
            .filter(|r| r["body"]["enforcement_point"] == pep)
            .count()
    };
    assert_eq!(
        (records.len(), by("todo-backend"), by("api-gateway")),
        (40 + 6 + 25, 40 + 6, 25)
    );
    assert!(records.iter().any(|r| r["body"]["request_id"] == "todo-39"));
    assert!(
        server
            .cli(Some(&admin_token), &["audit", "verify"])
            .success()
            .contains("audit chain intact")
    );
}

/// The consultant story's policies (refunds over 50,000 escalate, HR is off
/// limits) and a billing mission of alice's agent.
async fn billing(budget: u64) -> (TestServer, tempfile::TempDir, mandate_testkit::Scenario) {
    billing_configured(budget, "").await
}

/// [`billing`], with `extra` in the server's configuration.
async fn billing_configured(
    budget: u64,
    extra: &str,
) -> (TestServer, tempfile::TempDir, mandate_testkit::Scenario) {
    let (server, dir) = server_configured(
        &repo().join("examples/policies"),
        &[
            "actions.cedarschema",
            "hr-off-limits.cedar",
            "refunds-escalate.cedar",
        ],
        extra,
    );
    let scope =
        std::fs::read_to_string(repo().join("examples/policies/missions/billing-scope.cedar"))
            .unwrap();
    let s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope,
            boundaries: String::new(),
            budget,
        })
        .await;
    (server, dir, s)
}

fn invoice(id: &str) -> Value {
    json!({"type": "invoice", "id": id, "properties": {"billing": "nov"}})
}

#[tokio::test]
async fn an_escalation_is_false_with_its_approval_request_and_true_once_approved() {
    let (server, _dir, s) = billing(100).await;
    let pep = Pep::new(server.url(), Some(&s.gateway_token));
    let refund = json!({
        "subject": subject(&s.agent),
        "action": {"name": "refund", "properties": {"amount": 75_000}},
        "resource": invoice("42"),
    });
    let r = pep.evaluation(&refund).await;
    assert_eq!(r["decision"], false, "{r}");
    let ctx = &r["context"];
    assert_eq!(ctx["reason"], "escalation");
    assert_eq!(
        ctx["policies"],
        json!(["refunds-escalate.cedar/big-refunds"])
    );
    assert_eq!(ctx["mission_id"], s.agent.mission_id().to_string());
    let task = &ctx["task"];
    let id = task["id"].as_str().unwrap();
    assert!(id.starts_with("apr_"), "{task}");
    assert_eq!(task["status"], "pending");
    assert_eq!(
        task["status_endpoint"],
        format!("{}/v1/approvals/{id}", server.url())
    );
    assert!(
        task["expires_at"].as_str().unwrap().ends_with('Z'),
        "{task}"
    );
    // Asked again, the same request joins the same approval request.
    assert_eq!(pep.evaluation(&refund).await["context"]["task"]["id"], id);

    // What the approver sees is the call as AuthZEN asked it.
    let alice = Client::new(server.url()).unwrap().with_token(&s.alice);
    let view = alice.approval(id).await.unwrap();
    assert_eq!(view.action, "refund");
    assert_eq!(view.context["amount"], 75_000);
    alice.approve(id, &ApproveRequest::default()).await.unwrap();

    // Approved (once): the next evaluation is `true`, the one after asks
    // again.
    assert_eq!(pep.evaluation(&refund).await, json!({"decision": true}));
    let again = pep.evaluation(&refund).await;
    assert_eq!(again["decision"], false);
    assert_ne!(again["context"]["task"]["id"], id);

    // Each decision is recorded, with who asked and the grant it used.
    let records = authzen_records(&server, &s.admin);
    let codes: Vec<_> = records.iter().map(|r| r["body"]["code"].clone()).collect();
    assert_eq!(
        codes,
        vec![
            json!("escalation"),
            json!("escalation"),
            json!("grant"),
            json!("escalation")
        ]
    );
    assert!(records[2]["body"]["grant"].as_str().is_some());
    assert_eq!(records[2]["body"]["resource"]["id"], "invoice/42");
    assert_eq!(records[2]["body"]["enforcement_point"], "gateway");
}

#[tokio::test]
async fn budget_is_spent_once_per_allowed_evaluation_and_every_decision_is_recorded() {
    let (server, _dir, s) = billing(2).await;
    let pep = Pep::new(server.url(), Some(&s.gateway_token));
    let read = |id: &str| json!({"resource": invoice(id)});
    let r = pep
        .evaluations(&json!({
            "subject": subject(&s.agent),
            "action": {"name": "read"},
            "evaluations": [read("1"), read("2"), read("3")],
        }))
        .await;
    assert_eq!(decisions(&r), vec![true, true, false]);
    assert_eq!(r["evaluations"][2]["context"]["reason"], "budget_exhausted");
    let records = authzen_records(&server, &s.admin);
    let spent: Vec<_> = records
        .iter()
        .map(|r| r["body"]["budget_used"].clone())
        .collect();
    assert_eq!(spent, vec![json!(1), json!(2), Value::Null]);
    // Counted under their own front door.
    let metrics = Client::new(server.url())
        .unwrap()
        .with_token(&s.admin)
        .metrics()
        .await
        .unwrap();
    for line in [
        r#"mandate_decisions_total{code="scope",decision="allow",front_door="authzen"} 2"#,
        r#"mandate_decisions_total{code="budget_exhausted",decision="deny",front_door="authzen"} 1"#,
        r#"mandate_stage_duration_seconds_count{front_door="authzen",stage="verify"} 3"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    assert!(
        server
            .cli(Some(&s.admin), &["audit", "verify"])
            .success()
            .contains("audit chain intact")
    );
}

#[tokio::test]
async fn batches_take_defaults_and_overrides_and_stop_as_their_semantic_says() {
    let (server, _dir, s) = billing(100).await;
    let pep = Pep::new(server.url(), Some(&s.gateway_token));
    let allowed = json!({"resource": invoice("1")});
    // HR records are off limits: a boundary.
    let denied = json!({"resource": {"type": "invoice", "id": "2", "properties": {"billing": "nov", "hr": "x"}}});
    // The third overrides the default action (`write` is out of scope:
    // an escalation, which is `false` too).
    let escalated = json!({"action": {"name": "write"}, "resource": invoice("3")});
    let batch = |semantic: Option<&str>| {
        let mut b = json!({
            "subject": subject(&s.agent),
            "action": {"name": "read"},
            "context": {},
            "evaluations": [allowed.clone(), denied.clone(), allowed.clone(), escalated.clone()],
        });
        if let Some(sem) = semantic {
            b["options"] = json!({"evaluations_semantic": sem, "another_option": 1});
        }
        b
    };
    let all = pep.evaluations(&batch(None)).await;
    assert_eq!(decisions(&all), vec![true, false, true, false]);
    assert_eq!(all["evaluations"][1]["context"]["reason"], "boundary");
    assert_eq!(all["evaluations"][3]["context"]["reason"], "out_of_scope");
    assert!(all["evaluations"][3]["context"]["task"]["id"].is_string());
    assert!(all.get("decision").is_none(), "{all}");
    assert_eq!(
        decisions(&pep.evaluations(&batch(Some("execute_all"))).await),
        vec![true, false, true, false]
    );
    let before = authzen_records(&server, &s.admin).len();
    // Stops at the first `false`, which it answers; the rest is not
    // decided, nor recorded.
    let r = pep.evaluations(&batch(Some("deny_on_first_deny"))).await;
    assert_eq!(decisions(&r), vec![true, false]);
    assert_eq!(authzen_records(&server, &s.admin).len(), before + 2);
    // Stops at the first `true`.
    let mut b = batch(Some("permit_on_first_permit"));
    b["evaluations"] = json!([denied, escalated, allowed, allowed]);
    let r = pep.evaluations(&b).await;
    assert_eq!(decisions(&r), vec![false, false, true]);
    assert_eq!(authzen_records(&server, &s.admin).len(), before + 5);

    // Without evaluations, the request is one evaluation and gets one
    // decision.
    let one = pep
        .evaluations(&json!({
            "subject": subject(&s.agent),
            "action": {"name": "read"},
            "resource": invoice("9"),
            "evaluations": [],
        }))
        .await;
    assert_eq!(one, json!({"decision": true}));
    // Each item may name its own subject.
    let r = pep
        .evaluations(&json!({
            "action": {"name": "read"},
            "resource": invoice("9"),
            "evaluations": [
                {"subject": subject(&s.agent)},
                {"subject": {"type": "mandate_mission", "id": "msn_x", "properties": {"credential": "not-a-jwt"}}},
            ],
        }))
        .await;
    assert_eq!(decisions(&r), vec![true, false]);
    assert_eq!(r["evaluations"][1]["context"]["reason"], "bad_credential");
}

#[tokio::test]
async fn malformed_requests_are_refused_whole_and_unknown_members_ignored() {
    let (server, _dir, s) = billing(100).await;
    let pep = Pep::new(server.url(), Some(&s.gateway_token));
    let good = json!({
        "subject": subject(&s.agent),
        "action": {"name": "read"},
        "resource": invoice("1"),
    });
    let before = authzen_records(&server, &s.admin).len();
    let mut without_subject = good.clone();
    without_subject.as_object_mut().unwrap().remove("subject");
    let mut bad_action = good.clone();
    bad_action["action"] = json!({"name": 7});
    // serde would read a struct from an array of its fields.
    let mut listed = good.clone();
    listed["action"] = json!(["read", null]);
    let mut no_id = good.clone();
    no_id["resource"] = json!({"type": "invoice"});
    for (path, body, detail) in [
        (
            "/access/v1/evaluation",
            without_subject.to_string(),
            "the body lacks the field `subject`",
        ),
        ("/access/v1/evaluation", bad_action.to_string(), "`action.name` has the wrong type"),
        (
            "/access/v1/evaluation",
            listed.to_string(),
            "`action` has the wrong type",
        ),
        ("/access/v1/evaluation", no_id.to_string(), "`resource` lacks the field `id`"),
        ("/access/v1/evaluation", "{\"subject\": ".into(), "the body is not valid JSON"),
        ("/access/v1/evaluation", "[]".into(), "the body must be a JSON object"),
        (
            "/access/v1/evaluations",
            json!({"action": {"name": "read"}, "evaluations": [{"subject": subject(&s.agent)}]}).to_string(),
            "`evaluations[0]` lacks the field `resource`",
        ),
        (
            "/access/v1/evaluations",
            json!({"subject": subject(&s.agent), "action": {"name": "read"}, "resource": invoice("1"),
                   "evaluations": [{}], "options": {"evaluations_semantic": "first_wins"}}).to_string(),
            "`options.evaluations_semantic` is not one of the accepted values",
        ),
        (
            "/access/v1/evaluations",
            json!({"subject": subject(&s.agent), "action": {"name": "read"}, "resource": invoice("1"),
                   "evaluations": vec![json!({}); 65]}).to_string(),
            "at most 64 evaluations",
        ),
        (
            "/access/v1/evaluations",
            json!({"action": {"name": "read"}, "resource": invoice("1")}).to_string(),
            "the body lacks the field `subject`",
        ),
    ] {
        let a = pep.send(path, body.clone(), Some("req-7")).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(
            a.body["detail"].as_str().unwrap().starts_with(detail),
            "{body}: {}",
            a.body
        );
        assert!(a.body["code"].is_string());
        assert_eq!(a.request_id.as_deref(), Some("req-7"), "echoed on errors too");
    }
    // Nothing of a refused request was decided.
    assert_eq!(authzen_records(&server, &s.admin).len(), before);

    // Members the API does not know are ignored (the specification's
    // forward compatibility), wherever they are.
    let mut extended = good.clone();
    extended["future"] = json!({"x": 1});
    extended["subject"]["properties"]["department"] = json!("Sales");
    extended["action"]["extra"] = json!(true);
    assert_eq!(pep.evaluation(&extended).await, json!({"decision": true}));
    // What Mandate cannot decide on is `false`, with the reason, and
    // recorded: a structured property, a `/` in a type, an attribute set
    // twice, an action no policy declares.
    for (resource, action, context) in [
        (
            json!({"type": "invoice", "id": "1", "properties": {"billing": {"month": "nov"}}}),
            json!({"name": "read"}),
            json!({}),
        ),
        (
            json!({"type": "invoice/x", "id": "1"}),
            json!({"name": "read"}),
            json!({}),
        ),
        (
            invoice("1"),
            json!({"name": "refund", "properties": {"amount": 5}}),
            json!({"amount": 5}),
        ),
        (invoice("1"), json!({"name": "launch_rockets"}), json!({})),
    ] {
        let r = pep
            .evaluation(&json!({"subject": subject(&s.agent), "action": action, "resource": resource, "context": context}))
            .await;
        assert_eq!(r["decision"], false, "{resource}");
        assert_eq!(r["context"]["reason"], "invalid_request", "{r}");
    }
    assert_eq!(authzen_records(&server, &s.admin).len(), before + 5);
}

#[tokio::test]
async fn the_enforcement_point_authenticates_with_its_api_token() {
    let (server, _dir, s) = billing(100).await;
    let body = json!({
        "subject": subject(&s.agent),
        "action": {"name": "read"},
        "resource": invoice("1"),
    })
    .to_string();
    for (token, code) in [
        (None, "unauthenticated"),
        (Some("mdt_not-a-real-token"), "invalid_token"),
        // The agent's credential is not the enforcement point's token.
        (Some(s.agent.credential()), "invalid_token"),
    ] {
        for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
            let a = Pep::new(server.url(), token)
                .send(path, body.clone(), Some("r-1"))
                .await;
            assert_eq!(a.status, 401, "{path}: {}", a.body);
            assert_eq!(a.body["code"], code);
            assert!(a.challenge.unwrap().contains("Bearer"));
            assert_eq!(a.request_id.as_deref(), Some("r-1"));
        }
    }
    assert!(authzen_records(&server, &s.admin).is_empty());
}

/// On PostgreSQL a single evaluation reads the enforcement point's token
/// and the subject's mission together (one round trip, as `/v1/decide`
/// does): a token that is not live, or whose principal was revoked, is
/// still refused before anything is decided or recorded, whatever the
/// subject's credential.
#[tokio::test]
async fn the_token_and_the_subjects_mission_are_read_together_on_postgres() {
    let schema = mandate_testkit::postgres::Schema::new("authzen");
    let (server, _dir, s) =
        billing_configured(100, &format!("database_url = {:?}\n", schema.url())).await;
    let body = json!({
        "subject": subject(&s.agent),
        "action": {"name": "read"},
        "resource": invoice("1"),
    })
    .to_string();
    let paths = ["/access/v1/evaluation", "/access/v1/evaluations"];
    for path in paths {
        let a = Pep::new(server.url(), Some("mdt_not-a-real-token"))
            .send(path, body.clone(), None)
            .await;
        assert_eq!((a.status, &a.body["code"]), (401, &json!("invalid_token")));
        let a = Pep::new(server.url(), Some(&s.gateway_token))
            .send(path, body.clone(), None)
            .await;
        assert_eq!(
            (a.status, &a.body["decision"]),
            (200, &json!(true)),
            "{path}: {}",
            a.body
        );
    }
    assert_eq!(authzen_records(&server, &s.admin).len(), 2);
    // The enforcement point's principal revoked: its token goes with it.
    Client::new(server.url())
        .unwrap()
        .with_token(&s.admin)
        .revoke("principal", "gateway", None)
        .await
        .unwrap();
    for path in paths {
        let a = Pep::new(server.url(), Some(&s.gateway_token))
            .send(path, body.clone(), None)
            .await;
        assert_eq!(
            (a.status, &a.body["code"]),
            (401, &json!("invalid_token")),
            "{path}"
        );
    }
    assert_eq!(authzen_records(&server, &s.admin).len(), 2);
}

#[tokio::test]
async fn the_subject_is_the_credential_it_carries_and_a_revoked_mission_is_false() {
    let (server, _dir, s) = billing(100).await;
    let pep = Pep::new(server.url(), Some(&s.gateway_token));
    let ask = |subject: Value| json!({"subject": subject, "action": {"name": "read"}, "resource": invoice("1")});
    let cred = s.agent.credential().to_owned();
    let mid = s.agent.mission_id().to_string();
    // By its agent's name, too.
    let r = pep
        .evaluation(&ask(json!({"type": "mandate_agent", "id": "billing-bot", "properties": {"credential": cred}})))
        .await;
    assert_eq!(r, json!({"decision": true}));
    for (subject, reason) in [
        // Another mission's id, or another agent's name, than the
        // credential's.
        (
            json!({"type": "mandate_mission", "id": "msn_someone-else", "properties": {"credential": cred}}),
            "mission_mismatch",
        ),
        (
            json!({"type": "mandate_agent", "id": "other-bot", "properties": {"credential": cred}}),
            "mission_mismatch",
        ),
        // A subject Mandate does not decide for.
        (
            json!({"type": "user", "id": "alice@example.com", "properties": {"credential": cred}}),
            "invalid_request",
        ),
        // No credential, or not one.
        (
            json!({"type": "mandate_mission", "id": mid}),
            "bad_credential",
        ),
        (
            json!({"type": "mandate_mission", "id": mid, "properties": {"credential": "eyJ.x.y"}}),
            "bad_credential",
        ),
    ] {
        let r = pep.evaluation(&ask(subject.clone())).await;
        assert_eq!(r["decision"], false, "{subject}");
        assert_eq!(r["context"]["reason"], reason, "{subject}: {r}");
    }
    // Revoked: `false`, saying so.
    let alice = Client::new(server.url()).unwrap().with_token(&s.alice);
    alice.revoke("mission", &mid, None).await.unwrap();
    let r = pep.evaluation(&ask(subject(&s.agent))).await;
    assert_eq!(r["decision"], false);
    assert_eq!(r["context"]["reason"], "revoked");
    let records = authzen_records(&server, &s.admin);
    let last = records.last().unwrap();
    assert_eq!(last["body"]["code"], "revoked");
    assert_eq!(last["body"]["mission"], mid);
}

#[tokio::test]
async fn the_pdp_metadata_names_what_is_served() {
    let (server, _dir, s) = billing(100).await;
    let resp = reqwest::get(format!(
        "{}/.well-known/authzen-configuration",
        server.url()
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let meta: Value = resp.json().await.unwrap();
    let url = server.url();
    assert_eq!(
        meta,
        json!({
            "policy_decision_point": url,
            "access_evaluation_endpoint": format!("{url}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{url}/access/v1/evaluations"),
        })
    );
    // The endpoint it names answers.
    let a = reqwest::Client::new()
        .post(meta["access_evaluation_endpoint"].as_str().unwrap())
        .bearer_auth(&s.gateway_token)
        .json(&json!({"subject": subject(&s.agent), "action": {"name": "read"}, "resource": invoice("1")}))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(a.json::<Value>().await.unwrap(), json!({"decision": true}));
}

/// Edits the server's SQLite database behind its back, as an attacker with
/// the file could.
fn sqlite(db: &Path, sql: &str) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_error_on_the_way_is_never_true() {
    let (server, _dir, s) = billing(100).await;
    let pep = Pep::new(server.url(), Some(&s.gateway_token));
    let read = json!({
        "subject": subject(&s.agent),
        "action": {"name": "read"},
        "resource": invoice("1"),
    });
    assert_eq!(pep.evaluation(&read).await, json!({"decision": true}));
    // The audit log's head rewritten under the running server: it refuses
    // every record from then on, and no decision is given without one.
    sqlite(
        &server.data_dir().join("mandate.db"),
        "UPDATE audit_events SET hash = 'rewritten' WHERE seq = (SELECT MAX(seq) FROM audit_events);",
    );
    let a = pep
        .send("/access/v1/evaluation", read.to_string(), Some("e-1"))
        .await;
    assert_eq!(
        (a.status, &a.body["code"]),
        (503, &json!("audit_unavailable")),
        "{}",
        a.body
    );
    assert_eq!(a.request_id.as_deref(), Some("e-1"));
    // In a batch each such evaluation is `false`, saying what failed.
    let r = pep
        .evaluations(&json!({
            "subject": subject(&s.agent),
            "action": {"name": "read"},
            "evaluations": [{"resource": invoice("1")}, {"resource": invoice("2")}],
        }))
        .await;
    assert_eq!(decisions(&r), vec![false, false]);
    for e in r["evaluations"].as_array().unwrap() {
        assert_eq!(e["context"]["error"]["status"], 503, "{e}");
        assert_eq!(e["context"]["error"]["code"], "audit_unavailable");
        assert_eq!(e["context"]["reason"], "audit_unavailable");
    }
}

#[tokio::test]
async fn a_subject_or_resource_that_reads_two_ways_is_never_true() {
    let (server, _dir, s) = billing(100).await;
    let pep = Pep::new(server.url(), Some(&s.gateway_token));
    let cred = s.agent.credential().to_owned();
    let mid = s.agent.mission_id().to_string();
    let ask = |subject: Value, resource: Value| json!({"subject": subject, "action": {"name": "read"}, "resource": resource});
    let good = ask(subject(&s.agent), invoice("1"));
    assert_eq!(pep.evaluation(&good).await, json!({"decision": true}));
    // The mission's id as an agent's name and the agent's name as a
    // mission's id, another spelling of the type or the id.
    for (subject, reason) in [
        (
            json!({"type": "mandate_agent", "id": mid, "properties": {"credential": cred}}),
            "mission_mismatch",
        ),
        (
            json!({"type": "mandate_mission", "id": "billing-bot", "properties": {"credential": cred}}),
            "mission_mismatch",
        ),
        (
            json!({"type": "mandate_agent", "id": "alice", "properties": {"credential": cred}}),
            "mission_mismatch",
        ),
        (
            json!({"type": "mandate_mission", "id": format!("{mid} "), "properties": {"credential": cred}}),
            "mission_mismatch",
        ),
        (
            json!({"type": "Mandate_Mission", "id": mid, "properties": {"credential": cred}}),
            "invalid_request",
        ),
    ] {
        let r = pep.evaluation(&ask(subject.clone(), invoice("1"))).await;
        assert_eq!(r["decision"], false, "{subject}");
        assert_eq!(r["context"]["reason"], reason, "{subject}: {r}");
    }
    // A boundary's tag cannot be written away: `null` is refused, `false`
    // is still the tag.
    for hr in [json!(null), json!(false)] {
        let resource =
            json!({"type": "invoice", "id": "1", "properties": {"billing": "nov", "hr": hr}});
        let r = pep.evaluation(&ask(subject(&s.agent), resource)).await;
        assert_eq!(r["decision"], false, "{hr}: {r}");
    }
    // A member given twice is read neither way.
    let text = good.to_string();
    for twice in [
        text.replacen(
            &format!("\"id\":\"{mid}\""),
            &format!("\"id\":\"msn_other\",\"id\":\"{mid}\""),
            1,
        ),
        text.replacen("\"credential\":", "\"credential\":\"x\",\"credential\":", 1),
        text.replacen(
            ",\"action\":",
            ",\"action\":{\"name\":\"wire\"},\"action\":",
            1,
        ),
    ] {
        assert_ne!(twice, text);
        let a = pep.send("/access/v1/evaluation", twice.clone(), None).await;
        assert_eq!(a.status, 400, "{twice}: {}", a.body);
        assert_eq!(a.body["code"], "invalid_json", "{twice}");
    }
    // A batch item's subject replaces the default whole: the default's
    // credential does not join an item that names the mission without one.
    let r = pep
        .evaluations(&json!({
            "subject": subject(&s.agent), "action": {"name": "read"}, "resource": invoice("1"),
            "options": {"evaluations_semantic": "permit_on_first_permit"},
            "evaluations": [{"subject": {"type": "mandate_mission", "id": mid}}, {}],
        }))
        .await;
    assert_eq!(decisions(&r), vec![false, true]);
    assert_eq!(r["evaluations"][0]["context"]["reason"], "bad_credential");
    // Nesting past the parser's depth in what is read is refused; in
    // what is ignored it is skipped without recursion, and the PDP goes on.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let nested = text.replacen(
        "\"resource\":",
        &format!("\"context\":{{\"x\":{deep}}},\"resource\":"),
        1,
    );
    let a = pep.send("/access/v1/evaluation", nested, None).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let ignored = text.replacen(
        "\"resource\":",
        &format!("\"unknown\":{deep},\"resource\":"),
        1,
    );
    let a = pep.send("/access/v1/evaluation", ignored, None).await;
    assert_eq!((a.status, &a.body), (200, &json!({"decision": true})));
}
