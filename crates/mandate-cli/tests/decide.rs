//! End to end: the decision engine behind `POST /v1/decide`, with the
//! example organisation policies, atomic reloads, budget and escalation.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;

use mandate_client::{Client, ClientError, MissionAgent};
use mandate_core::wire::DecideRequest;
use mandate_core::{Decision, ResourceRef};
use mandate_testkit::{MissionPlan, TestServer};
use serde_json::json;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// A server whose policy dir is a copy of `examples/policies`.
fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "actions.cedarschema",
        "hr-off-limits.cedar",
        "refunds-escalate.cedar",
    ] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let config = format!("policies_dir = {:?}\n", dir.path().display().to_string());
    (TestServer::start(bin(), Some(&config)), dir)
}

fn res(id: &str, tags: &[(&str, &str)]) -> ResourceRef {
    serde_json::from_value(json!({
        "type": "Resource", "id": id,
        "tags": tags.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

async fn start_mission(server: &TestServer, budget: u64) -> (Client, MissionAgent, String) {
    let scope = std::fs::read_to_string(examples().join("missions/billing-scope.cedar")).unwrap();
    let plan = MissionPlan {
        goal: "Reconcile November invoices".into(),
        scope,
        boundaries: String::new(),
        budget,
    };
    let s = server.scenario(plan).await;
    (s.gateway, s.agent, s.admin)
}

fn req(
    agent: &MissionAgent,
    action: &str,
    resource: ResourceRef,
    context: serde_json::Value,
) -> DecideRequest {
    DecideRequest {
        credential: agent.credential().to_owned(),
        action: action.into(),
        resource,
        context: context.as_object().unwrap().clone(),
        justification: None,
        required_trust: None,
    }
}

#[tokio::test]
async fn decisions_follow_scope_boundaries_and_escalations() {
    let (server, _dir) = server();
    let (gw, agent, _) = start_mission(&server, 100).await;
    let mid = agent.mission_id().to_string();

    let r = gw
        .decide(&req(
            &agent,
            "read",
            res("invoice-42", &[("billing", "nov")]),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Allow, "scope"));
    assert_eq!(r.policies, vec![format!("{mid}/scope/read-billing")]);
    assert_eq!(r.budget_used, Some(1));

    let r = gw
        .decide(&req(
            &agent,
            "read",
            res("salary", &[("billing", "nov"), ("hr", "x")]),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Deny, "boundary"));
    assert_eq!(
        r.policies,
        vec!["hr-off-limits.cedar/hr-records".to_owned()]
    );

    let big = req(
        &agent,
        "refund",
        res("invoice-42", &[("billing", "nov")]),
        json!({ "amount": 75_000 }),
    );
    let r = gw.decide(&big).await.unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "escalation")
    );
    let approval = r.approval_id.clone().unwrap();
    assert!(approval.starts_with("apr_"));
    // The same request again joins the pending approval instead of flooding.
    assert_eq!(
        gw.decide(&big).await.unwrap().approval_id,
        Some(approval.clone())
    );
    let other = req(
        &agent,
        "refund",
        res("invoice-43", &[("billing", "nov")]),
        json!({ "amount": 75_000 }),
    );
    assert_ne!(gw.decide(&other).await.unwrap().approval_id, Some(approval));

    let r = gw
        .decide(&req(&agent, "write", res("invoice-42", &[]), json!({})))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "out_of_scope")
    );

    // Denials and escalations do not spend budget; only allows do.
    let r = gw
        .decide(&req(
            &agent,
            "refund",
            res("invoice-42", &[("billing", "nov")]),
            json!({ "amount": 5 }),
        ))
        .await
        .unwrap();
    assert_eq!((r.decision, r.budget_used), (Decision::Allow, Some(2)));

    // A request that does not fit the action's declared context denies.
    let r = gw
        .decide(&req(
            &agent,
            "refund",
            res("invoice-42", &[("billing", "nov")]),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "invalid_request")
    );

    // Without an API token, no decision at all.
    let anon = Client::new(server.url()).unwrap();
    assert_eq!(
        anon.decide(&big).await.unwrap_err().code(),
        Some("unauthenticated")
    );

    // After the mission ends, its credential gets `mission_ended`.
    agent.end(None).await.unwrap();
    let r = gw
        .decide(&req(
            &agent,
            "read",
            res("invoice-42", &[("billing", "nov")]),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "mission_ended")
    );
}

#[tokio::test]
async fn the_budget_counts_allowed_calls_and_runs_out() {
    let (server, _dir) = server();
    let (gw, agent, _) = start_mission(&server, 2).await;
    let read = req(
        &agent,
        "read",
        res("invoice-42", &[("billing", "nov")]),
        json!({}),
    );
    assert_eq!(gw.decide(&read).await.unwrap().budget_used, Some(1));
    assert_eq!(gw.decide(&read).await.unwrap().budget_used, Some(2));
    let r = gw.decide(&read).await.unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "budget_exhausted")
    );
}

/// An enforcement point whose API token the server never issued is
/// refused before anything is decided. The credential it sends (good or
/// forged) is checked beside the token's read, but nothing is counted and
/// nothing recorded for it.
#[tokio::test]
async fn an_unknown_api_token_is_refused_and_nothing_is_counted_or_recorded() {
    let (server, _dir) = server();
    let (gw, agent, admin) = start_mission(&server, 5).await;
    // The form of an API token (so it reaches the store), not one issued.
    let stranger = Client::new(server.url())
        .unwrap()
        .with_token(format!("mdt_{}", "A".repeat(43)));
    let read = req(
        &agent,
        "read",
        res("invoice-42", &[("billing", "nov")]),
        json!({}),
    );
    let mut forged = read.clone();
    forged.credential = "eyJhbGciOiJFZERTQSJ9.e30.AAAA".into();
    for r in [&read, &forged] {
        match stranger.decide(r).await {
            Err(ClientError::Problem { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (401, "invalid_token"));
            }
            other => panic!("not refused: {other:?}"),
        }
    }
    // Nothing was counted: the next allowed call is the budget's first.
    assert_eq!(gw.decide(&read).await.unwrap().budget_used, Some(1));
    // Nothing was recorded: that call's is the only decision in the log.
    let admin = Client::new(server.url()).unwrap().with_token(admin);
    let decisions = admin.audit("kind=decision").await.unwrap()["records"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(decisions, 1);
}

#[tokio::test]
async fn a_bad_policy_set_is_rejected_and_the_old_one_stays() {
    let (server, dir) = server();
    let (gw, agent, admin) = start_mission(&server, 100).await;
    let probe = req(
        &agent,
        "read",
        res("doc", &[("billing", "nov"), ("legal", "x")]),
        json!({}),
    );
    assert_eq!(gw.decide(&probe).await.unwrap().decision, Decision::Allow);

    // A broken file: the reload is refused, with the file and position.
    std::fs::write(
        dir.path().join("legal.cedar"),
        "forbid(principal, action == Action::\"raed\", resource);\n",
    )
    .unwrap();
    let out = server.cli(Some(&admin), &["policy", "reload"]);
    assert!(!out.ok());
    assert!(out.stderr().contains("invalid_policy"), "{}", out.stderr());
    // The CLI says which file, where, and why.
    assert!(out.stderr().contains("legal.cedar:1:"), "{}", out.stderr());
    assert!(out.stderr().contains("raed"), "{}", out.stderr());
    assert_eq!(
        gw.decide(&probe).await.unwrap().decision,
        Decision::Allow,
        "the running set stayed"
    );

    // Fixed, and picked up on SIGHUP.
    std::fs::write(dir.path().join("legal.cedar"), "@id(\"legal-hold\") forbid(principal, action, resource) when { resource.hasTag(\"legal\") };\n").unwrap();
    server.signal("HUP");
    let mut decision = Decision::Allow;
    for _ in 0..50 {
        decision = gw.decide(&probe).await.unwrap().decision;
        if decision == Decision::Deny {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(decision, Decision::Deny);
    let r = gw.decide(&probe).await.unwrap();
    assert_eq!(r.policies, vec!["legal.cedar/legal-hold".to_owned()]);
    // A directory that vanished (renamed, unmounted) does not drop every
    // boundary: the reload is refused and the running set stays.
    let moved = dir.path().with_extension("moved");
    std::fs::rename(dir.path(), &moved).unwrap();
    let out = server.cli(Some(&admin), &["policy", "reload"]);
    assert!(out.stderr().contains("invalid_policy"), "{}", out.stderr());
    assert_eq!(gw.decide(&probe).await.unwrap().decision, Decision::Deny);
    std::fs::rename(&moved, dir.path()).unwrap();

    let listed = server.cli(Some(&admin), &["policy", "list"]).success();
    assert!(listed.contains("legal.cedar/legal-hold"), "{listed}");
}

fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .env("MANDATE_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn the_policy_tools_validate_and_test_the_examples() {
    let dir = examples();
    let out = run(&["policy", "validate", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid: 4 policies (1 boundary, 3 escalate)")
    );

    let out = run(&[
        "policy",
        "test",
        dir.join("consultant.test.toml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("8 ok, 0 failing"), "{stdout}");

    // A typo is reported with its file, line and column, and fails.
    let bad = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("actions.cedarschema"),
        bad.path().join("actions.cedarschema"),
    )
    .unwrap();
    std::fs::write(
        bad.path().join("typo.cedar"),
        "// refunds\n\npermit(principal, action == Action::\"refnud\", resource);\n",
    )
    .unwrap();
    let out = run(&["policy", "validate", bad.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("typo.cedar:3:"), "{stderr}");
    assert!(stderr.contains("refnud"), "{stderr}");

    // A case whose expectation is wrong fails the run and says why.
    let cases = bad.path().join("wrong.test.toml");
    std::fs::write(
        &cases,
        format!(
            "policies = {:?}\n[[case]]\nname = \"hr is readable\"\naction = \"read\"\n\
             resource = {{ type = \"Resource\", id = \"x\", tags = {{ hr = \"1\" }} }}\nexpect = \"allow\"\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let out = run(&["policy", "test", cases.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  hr is readable: expected allow, got deny"),
        "{stdout}"
    );
}

/// `mandate policy test` can take the mission as attested, so a policy
/// that reads `principal.mission.code_digest` is tested both ways.
#[test]
fn policy_tests_cover_attested_missions() {
    let dir = tempfile::tempdir().unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    std::fs::write(
        dir.path().join("reviewed.cedar"),
        format!(
            "@id(\"reviewed-code-only\")\n\
             forbid(principal, action == Action::\"write\", resource) unless {{\n\
               principal.mission has code_digest && principal.mission.code_digest == \"{digest}\"\n\
             }};\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scope.cedar"),
        "permit(principal, action, resource);",
    )
    .unwrap();
    let case = |attested: &str, expect: &str| {
        let file = dir.path().join(format!("{expect}.test.toml"));
        std::fs::write(
            &file,
            format!(
                "policies = \".\"\n[mission]\nscope = \"scope.cedar\"\n{attested}\n\
                 [[case]]\nname = \"writes\"\naction = \"write\"\n\
                 resource = {{ type = \"Resource\", id = \"ledger\" }}\nexpect = \"{expect}\"\n"
            ),
        )
        .unwrap();
        run(&["policy", "test", file.to_str().unwrap()])
    };
    let out = case(
        &format!("attested = {{ code_digest = \"{digest}\" }}"),
        "allow",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = case("", "deny");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Taint in a test file: a policy on `principal.mission.tainted`.
    std::fs::write(
        dir.path().join("mail.cedar"),
        "@id(\"no-writes-after-untrusted\")\nforbid(principal, action == Action::\"delete\", resource) when { principal.mission.tainted };\n",
    )
    .unwrap();
    let tainted = dir.path().join("tainted.test.toml");
    std::fs::write(
        &tainted,
        format!(
            "policies = \".\"\n[mission]\nscope = \"scope.cedar\"\nattested = {{ code_digest = \"{digest}\" }}\ntaint = [\"calendar\"]\n\
             [[case]]\nname = \"deletes\"\naction = \"delete\"\nresource = {{ type = \"Resource\", id = \"x\" }}\nexpect = \"deny\"\n\
             policies = [\"mail.cedar/no-writes-after-untrusted\"]\n"
        ),
    )
    .unwrap();
    let out = run(&["policy", "test", tainted.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The same unattested mission expected to write: the case fails.
    let out = case("", "allow");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("expected allow, got deny"));
}

/// `mandate decide` answers with its exit status too, so a script can act
/// on it: 0 allow, 2 deny, 3 escalate.
#[tokio::test]
async fn the_decide_command_exits_with_the_decision() {
    let (server, _dir) = server();
    let s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar"))
                .unwrap(),
            boundaries: String::new(),
            budget: 100,
        })
        .await;
    let credential = s.agent.credential().to_owned();
    let decide = |resource: &str, action: &str, context: &str| {
        server.cli_with_input(
            Some(&s.gateway_token),
            &[
                "decide",
                "--credential",
                "-",
                "--action",
                action,
                "--resource",
                resource,
                "--context",
                context,
            ],
            &credential,
        )
    };
    let billing = r#"{"type":"Resource","id":"invoice-42","tags":{"billing":"nov"}}"#;
    let hr = r#"{"type":"Resource","id":"salary","tags":{"billing":"nov","hr":"x"}}"#;
    let out = decide(billing, "read", "{}");
    assert_eq!(out.code(), Some(0), "{}", out.stdout());
    assert!(out.stdout().starts_with("allow (scope)"));
    let out = decide(hr, "read", "{}");
    assert_eq!(out.code(), Some(2), "{}", out.stdout());
    assert!(out.stdout().starts_with("deny (boundary)"));
    let out = decide(billing, "refund", r#"{"amount":75000}"#);
    assert_eq!(out.code(), Some(3), "{}", out.stdout());
    assert!(out.stdout().starts_with("escalate (escalation)"));
}
