//! End to end: progressive trust. Escalated calls become approval requests;
//! people approve or deny them with the CLI; grants follow the approver's
//! terms and die with the mission; the audit log tells the story.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use mandate_client::{Attempt, Client, ClientError, MissionAgent};
use mandate_core::wire::{ApproveRequest, CreateMissionRequest, DecideRequest, DecideResponse};
use mandate_core::{Decision, ResourceRef};
use mandate_testkit::{MissionPlan, Scenario, TestServer};
use serde_json::json;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// A server with the example organisation policies and `extra` config.
fn server(extra: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "actions.cedarschema",
        "hr-off-limits.cedar",
        "refunds-escalate.cedar",
        "wires-step-up.cedar",
    ] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let config = format!(
        "policies_dir = {:?}\n{extra}",
        dir.path().display().to_string()
    );
    (TestServer::start(bin(), Some(&config)), dir)
}

fn scope() -> String {
    std::fs::read_to_string(examples().join("missions/billing-scope.cedar")).unwrap()
}

async fn scenario(server: &TestServer) -> Scenario {
    server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope: scope(),
            boundaries: String::new(),
            budget: 1_000,
        })
        .await
}

fn invoice(id: &str) -> ResourceRef {
    serde_json::from_value(json!({"type": "Resource", "id": id, "tags": {"billing": "nov"}}))
        .unwrap()
}

fn call(credential: String, action: &str, id: &str, amount: u64) -> DecideRequest {
    DecideRequest {
        credential,
        action: action.into(),
        resource: invoice(id),
        context: json!({ "amount": amount }).as_object().unwrap().clone(),
        justification: Some("customer ACME was double-billed in November".into()),
        required_trust: None,
    }
}

/// The agent's side through an enforcement point: decide, and say whether
/// it escalated.
async fn attempt(
    gw: &Client,
    credential: String,
    action: &str,
    id: &str,
    amount: u64,
) -> Result<Attempt<DecideResponse>, ClientError> {
    let r = gw.decide(&call(credential, action, id, amount)).await?;
    Ok(match (r.decision, r.approval_id.clone()) {
        (Decision::Escalate, Some(approval_id)) => Attempt::Escalated { approval_id },
        _ => Attempt::Done(r),
    })
}

/// Polls `list` as `token` until `id` shows up in it.
fn wait_listed(server: &TestServer, token: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = server.cli(Some(token), &["approvals", "list"]);
        let text = out.success();
        if text.contains(id) {
            return text;
        }
        assert!(Instant::now() < deadline, "{id} never listed:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn member(server: &TestServer, admin: &str, name: &str) -> String {
    Client::new(server.url())
        .unwrap()
        .with_token(admin)
        .create_principal(name, None)
        .await
        .unwrap()
        .token
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_call_waits_for_a_person_and_grants_die_with_the_mission() {
    let (server, _dir) = server("");
    let s = scenario(&server).await;
    let (gw, mut agent) = (s.gateway.clone(), s.agent);

    // The agent's call escalates; it waits, in the background, and retries
    // once the person has decided.
    let first = gw
        .decide(&call(
            agent.credential().to_owned(),
            "refund",
            "inv-42",
            75_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        (first.decision, first.code.as_str()),
        (Decision::Escalate, "escalation")
    );
    let approval = first.approval_id.clone().unwrap();
    assert_eq!(
        first.approval_url.as_deref(),
        Some(format!("{}/v1/approvals/{approval}", server.url()).as_str())
    );
    let gw2 = gw.clone();
    let waiting = tokio::spawn(async move {
        let r = agent
            .call_with_approval(Duration::from_secs(30), |cred| {
                let gw = gw2.clone();
                async move { attempt(&gw, cred, "refund", "inv-42", 75_000).await }
            })
            .await;
        (agent, r)
    });

    // Alice sees what waits for her, in full, and approves it once.
    let listed = wait_listed(&server, &s.alice, &approval);
    assert!(listed.contains("refund"), "{listed}");
    let shown = server
        .cli(Some(&s.alice), &["approvals", "show", &approval])
        .success();
    for want in [
        "Reconcile November invoices",
        "customer ACME was double-billed in November",
        "refunds-escalate.cedar/big-refunds",
        "75000",
        "alice → agent billing-bot",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
    let approved = server
        .cli(
            Some(&s.alice),
            &[
                "approvals",
                "approve",
                &approval,
                "--reason",
                "refund confirmed with ACME",
            ],
        )
        .success();
    assert!(approved.contains("grant grt_"), "{approved}");

    let (mut agent, r) = waiting.await.unwrap();
    let r = r.unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Allow, "grant"));
    let grant = r.grant.clone().unwrap();

    // `once` meant once: the same call asks again.
    let again = gw
        .decide(&call(
            agent.fresh_credential().await.unwrap().to_owned(),
            "refund",
            "inv-42",
            75_000,
        ))
        .await
        .unwrap();
    assert_eq!(again.decision, Decision::Escalate);
    let second = again.approval_id.unwrap();
    assert_ne!(second, approval);
    // This time for the rest of the mission, at most twice.
    server
        .cli(
            Some(&s.alice),
            &[
                "approvals",
                "approve",
                &second,
                "--scope",
                "mission",
                "--max-uses",
                "2",
            ],
        )
        .success();
    for _ in 0..2 {
        let r = gw
            .decide(&call(
                agent.credential().to_owned(),
                "refund",
                "inv-42",
                75_000,
            ))
            .await
            .unwrap();
        assert_eq!((r.decision, r.code.as_str()), (Decision::Allow, "grant"));
    }
    // Its terms hold: a third use, or a different amount, asks again.
    let r = gw
        .decide(&call(
            agent.credential().to_owned(),
            "refund",
            "inv-42",
            75_000,
        ))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Escalate);
    let r = gw
        .decide(&call(
            agent.credential().to_owned(),
            "refund",
            "inv-42",
            75_001,
        ))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Escalate);

    // A pattern: refunds on invoices under `inv-4`, any amount.
    let third = r.approval_id.unwrap();
    let out = server.cli(
        Some(&s.alice),
        &["approvals", "approve", &third, "--scope", "pattern"],
    );
    assert!(
        out.stderr().contains("needs a resource prefix"),
        "{}",
        out.stderr()
    );
    let out = server.cli(
        Some(&s.alice),
        &[
            "approvals",
            "approve",
            &third,
            "--scope",
            "pattern",
            "--resource-prefix",
            "inv-5",
        ],
    );
    assert!(!out.ok(), "a prefix that misses the call must be refused");
    assert!(out.stderr().contains("does not cover"), "{}", out.stderr());
    server
        .cli(
            Some(&s.alice),
            &[
                "approvals",
                "approve",
                &third,
                "--scope",
                "pattern",
                "--resource-prefix",
                "inv-4",
            ],
        )
        .success();
    let r = gw
        .decide(&call(
            agent.credential().to_owned(),
            "refund",
            "inv-49",
            99_999,
        ))
        .await
        .unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Allow, "grant"));
    let r = gw
        .decide(&call(
            agent.credential().to_owned(),
            "refund",
            "inv-50",
            99_999,
        ))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Escalate);
    // Grants never override a boundary.
    let hr: ResourceRef = serde_json::from_value(
        json!({"type": "Resource", "id": "inv-4-hr", "tags": {"billing": "nov", "hr": "x"}}),
    )
    .unwrap();
    let r = gw
        .decide(&DecideRequest {
            resource: hr,
            ..call(agent.credential().to_owned(), "refund", "x", 99_999)
        })
        .await
        .unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Deny, "boundary"));

    // The audit log explains the first allowed refund: who delegated, which
    // mission and goal, which policies, who approved, which grant.
    let list = server
        .cli(
            Some(&s.admin),
            &[
                "--json",
                "audit",
                "list",
                "--decision",
                "allow",
                "--limit",
                "1",
            ],
        )
        .json();
    let seq = list["records"][0]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("{list}"));
    let story = server
        .cli(Some(&s.admin), &["audit", "explain", &seq.to_string()])
        .success();
    for want in [
        "principal `alice`",
        "Reconcile November invoices",
        "refunds-escalate.cedar/big-refunds",
        grant.trim_start_matches("grant/"),
        "approved by `alice`",
        &approval,
        "refund confirmed with ACME",
    ] {
        assert!(story.contains(want), "missing {want:?} in:\n{story}");
    }

    // The mission ends; its grants die with it, and the next mission of the
    // same agent starts with nothing.
    agent.end(Some("done")).await.unwrap();
    let alice = Client::new(server.url()).unwrap().with_token(&s.alice);
    let next = alice
        .create_mission(&CreateMissionRequest {
            agent: "billing-bot".into(),
            goal: "Reconcile December invoices".into(),
            scope: scope(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: None,
            out_of_scope: None,
        })
        .await
        .unwrap();
    let fresh = MissionAgent::start(server.url(), &next.start_token)
        .await
        .unwrap();
    let r = gw
        .decide(&call(
            fresh.credential().to_owned(),
            "refund",
            "inv-49",
            99_999,
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "escalation")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_refusals_and_expiry_change_nothing_they_should_not() {
    let (server, _dir) = server("approval_ttl_secs = 3\n");
    let s = scenario(&server).await;
    let (gw, mut agent) = (s.gateway.clone(), s.agent);
    let bob = member(&server, &s.admin, "bob").await;

    // Deny: the waiting agent hears the refusal and the reason.
    let gw2 = gw.clone();
    let waiting = tokio::spawn(async move {
        let r = agent
            .call_with_approval(Duration::from_secs(30), |cred| {
                let gw = gw2.clone();
                async move { attempt(&gw, cred, "refund", "inv-1", 60_000).await }
            })
            .await;
        (agent, r)
    });
    let pending = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let l = server
                .cli(Some(&s.alice), &["--json", "approvals", "list"])
                .json();
            if let Some(id) = l[0]["id"].as_str() {
                break id.to_owned();
            }
            assert!(Instant::now() < deadline, "no request listed: {l}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Nobody but the entitled may decide. The agent cannot, even holding
    // its own principal's mission credential.
    let (mut agent_back, id) = (None::<MissionAgent>, pending.clone());
    let side = side_agent(&server, &s.alice).await;
    let url = format!("{}/v1/approvals/{id}/approve", server.url());
    let proof = side
        .key()
        .proof(
            "POST",
            &url,
            Some(side.credential()),
            mandate_core::Clock::now(&mandate_core::SystemClock),
            &mandate_core::OsRandom,
        )
        .unwrap();
    let r = reqwest::Client::new()
        .post(&url)
        .header("authorization", format!("DPoP {}", side.credential()))
        .header("dpop", proof)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a mission credential may never approve");
    assert_eq!(
        Client::new(server.url())
            .unwrap()
            .with_token(&s.alice)
            .approval(&id)
            .await
            .unwrap()
            .status,
        "pending"
    );
    // Bob may not see it, let alone decide it.
    let out = server.cli(Some(&bob), &["approvals", "approve", &id]);
    assert!(!out.ok());
    assert!(out.stderr().contains("not_found"), "{}", out.stderr());
    // Both refused attempts are on the record: who tried, on which
    // request, and why.
    let refused = server
        .cli(
            Some(&s.admin),
            &["--json", "audit", "list", "--kind", "approval.refused"],
        )
        .json();
    let refused = refused["records"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    let by_agent = &refused[0]["body"];
    assert_eq!(by_agent["approval"], id.as_str());
    assert_eq!(by_agent["attempt"], "approve");
    assert_eq!(
        by_agent["by_agent"]["mission"],
        side.mission_id().to_string()
    );
    assert_eq!(by_agent["code"], "unauthenticated");
    assert_eq!(refused[1]["body"]["by"], "bob");
    assert_eq!(refused[1]["body"]["code"], "not_found");
    assert_eq!(refused[1]["body"]["action"], by_agent["action"]);
    assert!(
        server
            .cli(Some(&bob), &["approvals", "list", "--all"])
            .success()
            .contains("no approval requests")
    );

    server
        .cli(
            Some(&s.alice),
            &["approvals", "deny", &id, "--reason", "not without a ticket"],
        )
        .success();
    let (agent, r) = waiting.await.unwrap();
    agent_back.replace(agent);
    match r {
        Err(ClientError::ApprovalDenied { approval, reason }) => {
            assert_eq!(approval, id);
            assert_eq!(reason.as_deref(), Some("not without a ticket"));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Deciding it again changes nothing.
    let out = server.cli(Some(&s.alice), &["approvals", "approve", &id]);
    assert!(
        out.stderr().contains("approval_decided"),
        "{}",
        out.stderr()
    );
    let shown = server
        .cli(Some(&s.alice), &["--json", "approvals", "show", &id])
        .json();
    assert_eq!(shown["status"], "denied");
    assert_eq!(shown["grant"], serde_json::Value::Null);

    // Expiry: nobody decides within the TTL; approving after is refused.
    let mut agent = agent_back.take().unwrap();
    let r = gw
        .decide(&call(
            agent.fresh_credential().await.unwrap().to_owned(),
            "refund",
            "inv-2",
            60_000,
        ))
        .await
        .unwrap();
    let late = r.approval_id.unwrap();
    let view = agent
        .wait_for_approval(&late, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(view.status, "expired");
    let out = server.cli(Some(&s.alice), &["approvals", "approve", &late]);
    assert!(
        out.stderr().contains("approval_expired"),
        "{}",
        out.stderr()
    );

    // Deny and end the mission: the agent's credential is dead at once.
    let r = gw
        .decide(&call(
            agent.credential().to_owned(),
            "refund",
            "inv-3",
            70_000,
        ))
        .await
        .unwrap();
    let last = r.approval_id.unwrap();
    let out = server
        .cli(
            Some(&s.alice),
            &["approvals", "deny", &last, "--end-mission"],
        )
        .success();
    assert!(out.contains("ended mission"), "{out}");
    let r = gw
        .decide(&call(agent.credential().to_owned(), "read", "inv-3", 0))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Deny);
    assert_eq!(r.code, "revoked");
}

/// A fresh mission of alice's agent (to show that even a mission
/// credential of the principal's own, with its proof, cannot approve).
async fn side_agent(server: &TestServer, alice: &str) -> MissionAgent {
    let alice = Client::new(server.url()).unwrap().with_token(alice);
    let m = alice
        .create_mission(&CreateMissionRequest {
            agent: "billing-bot".into(),
            goal: "Side task".into(),
            scope: scope(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: None,
            out_of_scope: None,
        })
        .await
        .unwrap();
    MissionAgent::start(server.url(), &m.start_token)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_racing_retries_spend_a_single_use_grant_exactly_once() {
    let (server, _dir) = server("");
    let s = scenario(&server).await;
    let (gw, agent) = (s.gateway.clone(), s.agent);
    let cred = agent.credential().to_owned();
    let r = gw
        .decide(&call(cred.clone(), "refund", "inv-7", 80_000))
        .await
        .unwrap();
    let id = r.approval_id.unwrap();
    let alice = Client::new(server.url()).unwrap().with_token(&s.alice);
    alice
        .approve(&id, &ApproveRequest::default())
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (gw, cred) = (gw.clone(), cred.clone());
        tasks.push(tokio::spawn(async move {
            gw.decide(&call(cred, "refund", "inv-7", 80_000))
                .await
                .unwrap()
        }));
    }
    let mut allowed = 0;
    let mut escalated = 0;
    for t in tasks {
        match t.await.unwrap().decision {
            Decision::Allow => allowed += 1,
            Decision::Escalate => escalated += 1,
            Decision::Deny => panic!("no retry should be denied"),
        }
    }
    assert_eq!((allowed, escalated), (1, 19));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_is_approved_call_by_call_by_the_named_approver() {
    let (server, _dir) = server("");
    let s = scenario(&server).await;
    let (gw, agent) = (s.gateway.clone(), s.agent);
    let treasurer = member(&server, &s.admin, "treasurer").await;
    let cred = agent.credential().to_owned();
    let r = gw
        .decide(&call(cred.clone(), "wire", "acct-1", 10))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "step_up")
    );
    let id = r.approval_id.unwrap();
    // The mission's principal may see it but is not the named approver.
    let out = server.cli(Some(&s.alice), &["approvals", "approve", &id]);
    assert!(out.stderr().contains("not_an_approver"), "{}", out.stderr());
    assert!(
        server
            .cli(Some(&s.alice), &["approvals", "list"])
            .success()
            .contains("nothing waits for you")
    );
    assert!(wait_listed(&server, &treasurer, &id).contains("[approve each call]"));
    // Only `once` will do.
    let out = server.cli(
        Some(&treasurer),
        &["approvals", "approve", &id, "--scope", "mission"],
    );
    assert!(
        out.stderr().contains("step_up_requires_once"),
        "{}",
        out.stderr()
    );
    server
        .cli(Some(&treasurer), &["approvals", "approve", &id])
        .success();
    let r = gw
        .decide(&call(cred.clone(), "wire", "acct-1", 10))
        .await
        .unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Allow, "grant"));
    let r = gw
        .decide(&call(cred.clone(), "wire", "acct-1", 10))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "step_up")
    );
    // Identical escalations join the pending request instead of flooding.
    let again = gw
        .decide(&call(cred.clone(), "wire", "acct-1", 10))
        .await
        .unwrap();
    assert_eq!(again.approval_id, r.approval_id);
    let shown = Client::new(server.url())
        .unwrap()
        .with_token(&treasurer)
        .approval(&r.approval_id.unwrap())
        .await
        .unwrap();
    assert_eq!(shown.hits, 2);
    assert!(shown.step_up);
    assert_eq!(shown.approvers, vec!["treasurer".to_owned()]);
    // A route that demands `approved` makes even in-scope reads a step-up.
    let read = DecideRequest {
        required_trust: Some(mandate_core::Trust::Approved),
        ..call(cred.clone(), "read", "inv-1", 0)
    };
    let read = DecideRequest {
        context: serde_json::Map::new(),
        ..read
    };
    let r = gw.decide(&read).await.unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "step_up")
    );
}

/// An approver a policy names who is not a principal can decide nothing:
/// `mandate policy reload` and `policy list` warn of the name, and a call
/// only they could approve is denied at once (`no_approver`, recorded)
/// rather than left waiting for nobody. Once the principal exists the
/// warning goes and the call asks them; once revoked, it is denied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_who_is_not_a_principal_is_warned_of_and_never_waited_for() {
    let (server, _dir) = server("");
    let s = scenario(&server).await;
    let (gw, agent) = (s.gateway.clone(), s.agent);
    let cred = agent.credential().to_owned();
    let warning = "warning: policy `wires-step-up.cedar/wires` names `treasurer` as an approver, who is not a principal of this authority";
    let out = server.cli(Some(&s.admin), &["policy", "reload"]);
    out.success();
    assert!(out.stderr().contains(warning), "{}", out.stderr());
    let out = server.cli(Some(&s.admin), &["policy", "list"]);
    out.success();
    assert!(out.stderr().contains(warning), "{}", out.stderr());
    let listed = server
        .cli(Some(&s.admin), &["--json", "policy", "list"])
        .json();
    assert_eq!(listed["warnings"].as_array().unwrap().len(), 1, "{listed}");

    let r = gw
        .decide(&call(cred.clone(), "wire", "acct-1", 10))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "no_approver")
    );
    assert!(r.approval_id.is_none());
    assert!(
        r.detail.contains("nobody can approve this call") && r.detail.contains("`treasurer`"),
        "{}",
        r.detail
    );
    let log = server
        .cli(
            Some(&s.admin),
            &[
                "--json", "audit", "list", "--kind", "decision", "--limit", "100",
            ],
        )
        .json();
    assert!(
        log["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["body"]["code"] == "no_approver" && x["body"]["action"] == "wire"),
        "{log}"
    );
    assert!(
        server
            .cli(Some(&s.admin), &["approvals", "list", "--all"])
            .success()
            .contains("no approval requests")
    );

    // The principal exists: no warning, and the call asks them.
    let treasurer = member(&server, &s.admin, "treasurer").await;
    let out = server.cli(Some(&s.admin), &["policy", "reload"]);
    out.success();
    assert!(!out.stderr().contains("warning"), "{}", out.stderr());
    let r = gw
        .decide(&call(cred.clone(), "wire", "acct-1", 10))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "step_up")
    );
    wait_listed(&server, &treasurer, &r.approval_id.unwrap());

    // Revoked: denied again, and warned of as such.
    server
        .cli(Some(&s.admin), &["revoke", "principal", "treasurer"])
        .success();
    let r = gw
        .decide(&call(cred.clone(), "wire", "acct-2", 10))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "no_approver")
    );
    let out = server.cli(Some(&s.admin), &["policy", "reload"]);
    assert!(
        out.stderr()
            .contains("names `treasurer` as an approver, who was revoked"),
        "{}",
        out.stderr()
    );
}
