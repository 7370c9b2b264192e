//! End to end: the console (`/console`, ADR 0032) on a real `mandate
//! serve`, driven over HTTP as its page's script does, with a software
//! WebAuthn authenticator (ES256, "none" attestation) standing in for the
//! browser's. What needs a browser (the pages' script, server-sent events
//! in a page) is the Playwright test's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod console_support;
use console_support::*;

use std::path::Path;

use mandate_client::{Client, MissionAgent};
use mandate_core::Decision;
use mandate_core::ResourceRef;
use mandate_core::wire::DecideRequest;
use mandate_testkit::{MissionPlan, Scenario, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_locked_down_before_sign_in() {
    let (server, _dir) = server();
    let admin = server.init_admin();
    let b = Browser::new(&server);

    for path in [
        "/console",
        "/console/inbox",
        "/console/missions",
        "/console/agents",
        "/console/agents/billing-bot/revoke",
        "/console/principals",
        "/console/principals/admin/revoke",
        "/console/audit",
    ] {
        let r = b.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()["location"], "/console/signin", "{path}");
    }
    for path in [
        "/console",
        "/console/signin",
        "/console/static/console.js",
        "/console/nowhere",
    ] {
        let r = b.get(path).await;
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        // Not `no-referrer`, under which a browser posts the sign-out
        // form with `Origin: null` (refused).
        assert_eq!(r.headers()["referrer-policy"], "same-origin", "{path}");
    }
    let page = b.get("/console/signin").await.text().await.unwrap();
    assert!(page.contains("id=\"principal\"") && page.contains("id=\"signin\""));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline script or style"
    );
    // Its icon is served (else the browser asks for `/favicon.ico`, a 404,
    // on every page).
    assert!(page.contains("href=\"/console/static/icon.svg\""), "{page}");
    let icon = b.get("/console/static/icon.svg").await;
    assert_eq!(icon.status(), StatusCode::OK);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    assert_eq!(
        b.get("/console/events").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // An API token is no session.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console/inbox", server.url()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Enrollment: from the console's own origin only, and once.
    let l = link(&server, &admin, "admin");
    let token = l.rsplit('/').next().unwrap();
    let (status, body) = b
        .post_as(
            "/console/enroll/start",
            &json!({ "token": token }),
            Some("http://evil.example"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_origin_refused"))
    );
    // The refusal says where the console is: a person who opened it as
    // `http://127.0.0.1:…` learns to open `http://localhost:…` instead.
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("open the console at {}/console", b.origin)),
        "{detail}"
    );
    let (status, body) = b
        .post_as(
            "/console/enroll/start",
            &json!({ "token": token }),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_origin_refused"))
    );
    let (status, _) = b
        .post("/console/enroll/start", &json!({ "token": token }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = b
        .post("/console/enroll/start", &json!({ "token": token }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_enrollment_invalid"))
    );

    // The plain form: the link alone on standard output (`link` checks
    // that), and on standard error how long and how often it works.
    let plain = server.cli(Some(&admin), &["principal", "enroll", "admin"]);
    assert!(plain.ok(), "{}", plain.stderr());
    let said = plain.stderr();
    assert!(
        said.starts_with("valid until 20") && said.contains(", once: whoever opens it first"),
        "{said}"
    );
    let json = server
        .cli(Some(&admin), &["--json", "principal", "enroll", "admin"])
        .json();
    assert!(
        json["url"].as_str().unwrap().starts_with(&b.origin),
        "{json}"
    );
    assert!(json["expires_at"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_approves_exactly_the_request_it_signed() {
    let (server, _dir) = server();
    approvals_signed_by_passkeys(&server).await;
}

/// The same on PostgreSQL: passkeys, links and sessions in its tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_approves_exactly_the_request_it_signed_on_postgres() {
    let schema = mandate_testkit::postgres::Schema::new("console");
    let (server, _dir) = server_with(&format!("database_url = {:?}\n", schema.url()));
    approvals_signed_by_passkeys(&server).await;
}

async fn approvals_signed_by_passkeys(server: &TestServer) {
    let s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar"))
                .unwrap(),
            boundaries: String::new(),
            budget: 1_000,
        })
        .await;
    let admin = s.admin.clone();
    let _bob = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&admin)
        .create_principal("bob", None)
        .await
        .unwrap();

    let mut alice_key = SoftKey::new(7);
    let mut bob_key = SoftKey::new(9);
    let mut alice = Browser::new(server);
    alice
        .enroll(&link(server, &admin, "alice"), &mut alice_key)
        .await;
    let mut bob = Browser::new(server);
    bob.enroll(&link(server, &admin, "bob"), &mut bob_key).await;

    let first = escalate(&s, "inv-42").await;
    let second = escalate(&s, "inv-43").await;

    // Alice's inbox shows what waits for her, in full; bob's does not.
    let page = alice.inbox().await;
    for want in [
        format!("data-approval-id=\"{first}\""),
        format!("data-approval-id=\"{second}\""),
        "customer ACME was double-billed in November".into(),
        "Reconcile November invoices".into(),
        "refunds-escalate.cedar".into(),
        "75000".into(),
    ] {
        assert!(page.contains(&want), "missing {want:?}");
    }
    // The card's heading quotes names as code, not as backticks.
    let heading = page
        .split("<h2 class=\"summary\">")
        .nth(1)
        .and_then(|h| h.split("</h2>").next())
        .unwrap();
    assert!(
        heading.contains("<code>billing-bot</code>") && !heading.contains('`'),
        "{heading}"
    );
    let page = bob.inbox().await;
    assert!(
        !page.contains(&first) && page.contains("id=\"empty\""),
        "{page}"
    );
    let (status, _) = bob
        .post(
            &format!("/console/approvals/{first}/challenge"),
            &json!({ "scope": "once" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob cannot even see it");

    // CSRF and Origin.
    let path = format!("/console/approvals/{first}/deny");
    let (status, body) = alice
        .post_as(
            &path,
            &json!({ "reason": "no" }),
            Some(&alice.origin.clone()),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_csrf_refused"))
    );
    let (status, body) = alice
        .post_as(
            &path,
            &json!({ "reason": "no" }),
            Some("http://evil.example"),
            alice.csrf.clone().as_deref(),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_origin_refused"))
    );
    let refusals = audit(server, &admin, "approval.refused").await;
    assert!(
        refusals
            .iter()
            .any(|r| r["body"]["approval"] == first.as_str()
                && r["body"]["code"] == "console_csrf_refused"
                && r["body"]["by"] == "alice"),
        "{refusals:#?}"
    );

    // The challenge commits to this approval, its digest and the grant.
    let (status, ch) = alice
        .post(
            &format!("/console/approvals/{first}/challenge"),
            &json!({ "scope": "once" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    let c = &ch["commitment"];
    assert_eq!(c["approval"], first.as_str());
    assert_eq!(c["grant"]["scope"], "once");
    assert!(c["rp_id"] == "localhost" && c["request_digest"].as_str().unwrap().len() > 10);
    let canonical = format!(
        r#"{{"approval":"{}","grant":{{"scope":"once"}},"nonce":"{}","request_digest":"{}","rp_id":"localhost"}}"#,
        first,
        c["nonce"].as_str().unwrap(),
        c["request_digest"].as_str().unwrap()
    );
    assert_eq!(
        unb64(ch["options"]["publicKey"]["challenge"].as_str().unwrap()),
        Sha256::digest(canonical.as_bytes()).to_vec()
    );

    // Refused and recorded: that assertion posted for another request.
    let assertion = alice_key.get(&ch["options"], &alice.origin);
    let body = json!({ "ceremony": ch["ceremony"], "credential": assertion });
    let (status, r) = alice
        .post(&format!("/console/approvals/{second}/approve"), &body)
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("console_assertion_wrong_approval")
        )
    );
    // (Which spent the challenge: the same assertion is now a replay.)
    let (status, r) = alice
        .post(&format!("/console/approvals/{first}/approve"), &body)
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_challenge_invalid"))
    );

    // Bob's passkey cannot answer alice's challenge.
    let (_, ch) = alice
        .post(
            &format!("/console/approvals/{first}/challenge"),
            &json!({ "scope": "once" }),
        )
        .await;
    let foreign = bob_key.get(&ch["options"], &alice.origin);
    let (status, r) = alice
        .post(
            &format!("/console/approvals/{first}/approve"),
            &json!({ "ceremony": ch["ceremony"], "credential": foreign }),
        )
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_passkey_refused"))
    );

    // Alice's own passkey approves; the same assertion again is refused.
    let (_, ch) = alice
        .post(
            &format!("/console/approvals/{first}/challenge"),
            &json!({ "scope": "once" }),
        )
        .await;
    let assertion = alice_key.get(&ch["options"], &alice.origin);
    let body = json!({ "ceremony": ch["ceremony"], "credential": assertion });
    let (status, r) = alice
        .post(&format!("/console/approvals/{first}/approve"), &body)
        .await;
    assert_eq!(
        (status, r["status"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{r}"
    );
    let (status, r) = alice
        .post(&format!("/console/approvals/{first}/approve"), &body)
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_challenge_invalid"))
    );

    let refusals = audit(server, &admin, "approval.refused").await;
    for code in [
        "console_assertion_wrong_approval",
        "console_challenge_invalid",
        "console_passkey_refused",
    ] {
        assert!(
            refusals
                .iter()
                .any(|r| r["body"]["code"] == code && r["body"]["by"] == "alice"),
            "{code} not recorded"
        );
    }

    // The audit record carries the assertion, and explain re-verifies it.
    let approved = audit(server, &admin, "approval.approved").await;
    let rec = approved
        .iter()
        .find(|r| r["body"]["approval"] == first.as_str())
        .unwrap();
    let cred = b64(&alice_key.id);
    assert_eq!(rec["body"]["passkey"]["credential_id"], cred.as_str());
    assert_eq!(rec["body"]["via"], "console");
    let seq = rec["seq"].as_u64().unwrap().to_string();
    let explained = server
        .cli(Some(&admin), &["audit", "explain", &seq])
        .success();
    assert!(
        explained.contains(&format!(
            "approved by alice with passkey {cred}, signature verifies"
        )),
        "{explained}"
    );

    // Deny with a reason.
    let (status, r) = alice
        .post(
            &format!("/console/approvals/{second}/deny"),
            &json!({ "reason": "not this one" }),
        )
        .await;
    assert_eq!(
        (status, r["status"].as_str()),
        (StatusCode::OK, Some("denied")),
        "{r}"
    );

    // A pattern grant: its prefix is part of what the passkey signs.
    let third = escalate(&s, "inv-44").await;
    let terms = json!({ "scope": "pattern", "resource_prefix": "inv-4" });
    let (status, ch) = alice
        .post(&format!("/console/approvals/{third}/challenge"), &terms)
        .await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    assert_eq!(ch["commitment"]["grant"], terms);
    let assertion = alice_key.get(&ch["options"], &alice.origin);
    let (status, r) = alice
        .post(
            &format!("/console/approvals/{third}/approve"),
            &json!({ "ceremony": ch["ceremony"], "credential": assertion }),
        )
        .await;
    assert_eq!(
        (status, r["status"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{r}"
    );
    let approved = audit(server, &admin, "approval.approved").await;
    let rec = approved
        .iter()
        .find(|r| r["body"]["approval"] == third.as_str())
        .unwrap();
    assert_eq!(rec["body"]["resource_prefix"], "inv-4");
    let seq = rec["seq"].as_u64().unwrap().to_string();
    let explained = server
        .cli(Some(&admin), &["audit", "explain", &seq])
        .success();
    assert!(explained.contains("signature verifies"), "{explained}");

    // Signing out ends the session.
    let resp = alice
        .http
        .post(format!("{}/console/signout", alice.base))
        .header("origin", &alice.origin)
        .header("cookie", alice.cookie.clone().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", alice.csrf.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        alice.get("/console/inbox").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_sees_ends_and_revokes_her_missions_only() {
    let (server, _dir) = server();
    let scope = format!(
        "// <script>alert(1)</script> & refunds\n{}",
        std::fs::read_to_string(examples().join("missions/billing-scope.cedar")).unwrap()
    );
    let s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope,
            boundaries: String::new(),
            budget: 1_000,
        })
        .await;
    let admin = s.admin.clone();
    let mine = s.agent.mission_id().to_string();
    // bob, with an agent and a (started) mission of his own.
    let bobs = member_with_agent(&server, &admin, "bob", "bob-bot")
        .await
        .1
        .mission_id()
        .to_string();

    let mut alice = Browser::new(&server);
    alice
        .enroll(&link(&server, &admin, "alice"), &mut SoftKey::new(7))
        .await;
    let mut bob = Browser::new(&server);
    bob.enroll(&link(&server, &admin, "bob"), &mut SoftKey::new(9))
        .await;

    // The list: hers, not bob's; and the other way round.
    let (status, list) = page(&alice, "/console/missions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.contains(&format!("data-mission-id=\"{mine}\""))
            && list.contains("Reconcile November invoices")
            && list.contains("billing-bot")
            && list.contains("data-state=\"active\"")
            && !list.contains(&bobs)
            && !list.contains("own errand"),
        "{list}"
    );
    let (_, list) = page(&bob, "/console/missions").await;
    assert!(list.contains(&bobs) && !list.contains(&mine), "{list}");
    assert!(
        alice.inbox().await.contains("href=\"/console/missions\""),
        "the inbox links to the missions"
    );

    // Her mission's page, its policies escaped.
    let (status, detail) = page(&alice, &format!("/console/missions/{mine}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        detail.contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; refunds")
            && !detail.contains("<script>alert")
            && detail.contains("Action::")
            && detail.contains(&format!("href=\"/console/missions/{mine}/revoke\"")),
        "{detail}"
    );
    // It has no boundaries or escalations of its own: the page says so
    // rather than showing an empty box under the heading.
    assert!(
        detail.contains("<p class=\"muted\" id=\"boundaries\">None.</p>")
            && detail.contains("<p class=\"muted\" id=\"escalations\">None.</p>")
            && detail.contains("<pre class=\"policy\" id=\"scope\">"),
        "{detail}"
    );

    // Bob: 404 on alice's mission, its confirmation and its revocation.
    let revoke = format!("/console/missions/{mine}/revoke");
    for path in [format!("/console/missions/{mine}"), revoke.clone()] {
        let (status, body) = page(&bob, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(!body.contains("Reconcile"), "{body}");
    }
    let bob_csrf = bob.csrf.clone().unwrap();
    let (status, _, body) = post_form(
        &bob,
        &revoke,
        &[("csrf", &bob_csrf), ("reason", "bob was here")],
        Some(&bob.origin),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    s.agent.mission().await.expect("bob revoked nothing");

    // Alice: without the CSRF token, or from another origin, refused.
    let csrf = alice.csrf.clone().unwrap();
    let (status, _, body) = post_form(&alice, &revoke, &[], Some(&alice.origin)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("data-code=\"console_csrf_refused\""),
        "{body}"
    );
    let (status, _, body) = post_form(
        &alice,
        &revoke,
        &[("csrf", &csrf)],
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("data-code=\"console_origin_refused\""),
        "{body}"
    );
    let (status, _, _) = post_form(&alice, &revoke, &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no Origin at all");
    s.agent.mission().await.expect("nothing revoked yet");

    // The confirmation page, then the revocation.
    let (status, confirm) = page(&alice, &revoke).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        confirm.contains(&format!("action=\"{revoke}\""))
            && confirm.contains(&format!("name=\"csrf\" value=\"{csrf}\"")),
        "{confirm}"
    );
    let (status, location, body) = post_form(
        &alice,
        &revoke,
        &[("csrf", &csrf), ("reason", "done with it")],
        Some(&alice.origin),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location, format!("/console/missions/{mine}"));

    // The agent's next signed request is refused: revoked.
    let err = s.agent.mission().await.unwrap_err();
    assert_eq!(err.code(), Some("revoked"), "{err}");
    let (_, detail) = page(&alice, &location).await;
    assert!(
        detail.contains("data-state=\"ended\"")
            && detail.contains("(revoked)")
            && !detail.contains("/revoke\""),
        "{detail}"
    );
    // An ended mission no longer "expires".
    assert!(!detail.contains("<dt>Expires</dt>"), "{detail}");

    // Recorded as the API records a revocation, by alice.
    let records = audit(&server, &admin, "revocation").await;
    assert!(
        records.iter().any(|r| r["body"]["kind"] == "mission"
            && r["body"]["target"] == mine.as_str()
            && r["body"]["by"] == "alice"
            && r["body"]["reason"] == "done with it"),
        "{records:#?}"
    );
    // Bob's mission is untouched.
    let (_, list) = page(&bob, "/console/missions").await;
    assert!(!list.contains("data-state=\"ended\""), "{list}");

    // Ending another of her missions (completed), as `mandate mission end`.
    let second = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&s.alice)
        .create_mission(&mandate_core::wire::CreateMissionRequest {
            agent: "billing-bot".into(),
            goal: "December invoices".into(),
            scope: String::new(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: None,
            out_of_scope: None,
        })
        .await
        .unwrap()
        .mission
        .id;
    let end = format!("/console/missions/{second}/end");
    let (status, confirm) = page(&alice, &end).await;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains(&format!("action=\"{end}\"")), "{confirm}");
    let (status, _) = page(&bob, &end).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = post_form(&bob, &end, &[("csrf", &bob_csrf)], Some(&bob.origin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob cannot end it");
    let (status, _, body) = post_form(&alice, &end, &[], Some(&alice.origin)).await;
    assert!(
        status == StatusCode::FORBIDDEN && body.contains("console_csrf_refused"),
        "{body}"
    );
    let (status, location, body) = post_form(
        &alice,
        &end,
        &[("csrf", &csrf), ("reason", "all paid")],
        Some(&alice.origin),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (_, detail) = page(&alice, &location).await;
    assert!(detail.contains("ended (completed)"), "{detail}");
    let ended = audit(&server, &admin, "mission.ended").await;
    assert!(
        ended.iter().any(|r| r["body"]["mission"] == second.as_str()
            && r["body"]["by"] == "principal:alice (all paid)"),
        "{ended:#?}"
    );
    // Twice: refused as the API refuses it.
    let (status, _, body) = post_form(&alice, &end, &[("csrf", &csrf)], Some(&alice.origin)).await;
    assert!(
        status == StatusCode::CONFLICT && body.contains("data-code=\"mission_ended\""),
        "{status} {body}"
    );
}

/// The audit explorer shows admins what `GET /v1/audit` and `explain` do,
/// and nobody else anything (as the API, which is for admins only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_explorer_is_the_apis_audit_log_for_admins() {
    let (server, _dir) = server();
    let s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar"))
                .unwrap(),
            boundaries: String::new(),
            budget: 1_000,
        })
        .await;
    let admin = s.admin.clone();
    let mine = s.agent.mission_id().to_string();
    let bobs = member_with_agent(&server, &admin, "bob", "bob-bot")
        .await
        .1
        .mission_id()
        .to_string();

    let mut alice_key = SoftKey::new(7);
    let mut alice = Browser::new(&server);
    alice
        .enroll(&link(&server, &admin, "alice"), &mut alice_key)
        .await;
    let mut bob = Browser::new(&server);
    bob.enroll(&link(&server, &admin, "bob"), &mut SoftKey::new(9))
        .await;
    let mut root = Browser::new(&server);
    root.enroll(&link(&server, &admin, "admin"), &mut SoftKey::new(11))
        .await;

    // An escalation, approved with alice's passkey.
    let first = escalate(&s, "inv-42").await;
    let (status, ch) = alice
        .post(
            &format!("/console/approvals/{first}/challenge"),
            &json!({ "scope": "once" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    let assertion = alice_key.get(&ch["options"], &alice.origin);
    let (status, r) = alice
        .post(
            &format!("/console/approvals/{first}/approve"),
            &json!({ "ceremony": ch["ceremony"], "credential": assertion }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let approved = audit(&server, &admin, "approval.approved").await;
    let seq = approved
        .iter()
        .find(|r| r["body"]["approval"] == first.as_str())
        .unwrap()["seq"]
        .as_u64()
        .unwrap();

    // Filtered by alice's mission: her records, not bob's.
    let (status, list) = page(&root, &format!("/console/audit?mission={mine}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(
        list.contains("href=\"/console/audit\">Audit</a>") && list.contains("id=\"chain\""),
        "{list}"
    );
    assert!(list.contains("The chain verifies"), "{list}");
    assert!(
        list.contains(&format!("data-seq=\"{seq}\"")),
        "the approval is listed: {list}"
    );
    assert!(list.contains(&format!("data-mission=\"{mine}\"")));
    assert!(!list.contains(&bobs), "bob's mission is not: {list}");
    let (_, all) = page(&root, "/console/audit").await;
    assert!(all.contains(&bobs), "unfiltered, bob's records are there");
    // Newest first; `before` (the "Older records" cursor) starts further back.
    let listed = seqs(&all);
    assert!(listed.len() > 3, "{all}");
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "{listed:?}");
    let (_, older) = page(&root, &format!("/console/audit?before={seq}")).await;
    let older = seqs(&older);
    assert!(
        !older.is_empty() && older.iter().all(|&q| q < seq),
        "{older:?}"
    );
    assert_eq!(older[0], *listed.iter().find(|&&q| q < seq).unwrap());

    // decision=escalate: escalations only.
    let (status, esc) = page(&root, "/console/audit?decision=escalate").await;
    assert_eq!(status, StatusCode::OK);
    let rows = esc.matches("<tr data-seq=").count();
    assert!(rows >= 1, "{esc}");
    assert_eq!(
        esc.matches("data-decision=\"escalate\"").count(),
        rows,
        "{esc}"
    );
    let (status, _) = page(&root, "/console/audit?decision=maybe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The explanation of alice's approval: the passkey signature verifies.
    let (status, explained) = page(&root, &format!("/console/audit/{seq}")).await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    assert!(
        explained.contains("approved by alice with passkey")
            && explained.contains("signature verifies"),
        "{explained}"
    );
    let (status, _) = page(&root, "/console/audit/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Not admins: refused, as by `GET /v1/audit` (403), even their own.
    for b in [&alice, &bob] {
        for path in [
            format!("/console/audit?mission={mine}"),
            format!("/console/audit/{seq}"),
        ] {
            let (status, body) = page(b, &path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert!(!body.contains("signature verifies"));
        }
    }
    // … and their pages do not offer them the link: only an admin's nav
    // has it.
    for b in [&alice, &bob] {
        for path in ["/console/inbox", "/console/missions", "/console/agents"] {
            let (status, body) = page(b, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(
                !body.contains("href=\"/console/audit\"") && body.contains("Signed in as"),
                "{path}: {body}"
            );
        }
    }
    let (_, inbox) = page(&root, "/console/inbox").await;
    assert!(
        inbox.contains("href=\"/console/audit\">Audit</a>"),
        "{inbox}"
    );

    // A filter column changed behind the log's back: the status line keeps
    // the verification of a moment ago, and says when it ran, until the
    // admin asks for a new one, which names the break.
    let db = server.data_dir().join("mandate.db");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute('UPDATE audit_events SET decision = ? WHERE seq = ?', ('allow', int(sys.argv[2]))); c.commit()",
        ])
        .arg(&db)
        .arg(seq.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, kept) = page(&root, "/console/audit").await;
    assert!(
        kept.contains("The chain verifies") && kept.contains("id=\"chain-checked\""),
        "{kept}"
    );
    let (status, now) = page(&root, "/console/audit?verify=now").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        now.contains("The chain does NOT verify")
            && now.contains(&format!("broken at sequence {seq}:")),
        "{now}"
    );
    assert!(now.contains("data-ok=\"false\""), "{now}");
    // And that is the status the next view shows.
    let (_, next) = page(&root, "/console/audit").await;
    assert!(next.contains("does NOT verify"), "{next}");
}

/// The sequence numbers of an audit page's rows, in the page's order.
fn seqs(html: &str) -> Vec<u64> {
    html.split("<tr data-seq=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap().parse().unwrap())
        .collect()
}

/// The `<tr>` of a table row whose `attr` is `value` on `page`.
fn row<'a>(page: &'a str, attr: &str, value: &str) -> &'a str {
    let at = format!("{attr}=\"{value}\"");
    assert!(page.contains(&at), "no row with {at}: {page}");
    let start = page.find(&at).unwrap();
    let rest = &page[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

/// A member `name` with a registered agent `agent` on a started mission:
/// their API client and the agent.
async fn member_with_agent(
    server: &TestServer,
    admin: &str,
    name: &str,
    agent: &str,
) -> (Client, MissionAgent) {
    let token = Client::new(server.url())
        .unwrap()
        .with_token(admin)
        .create_principal(name, None)
        .await
        .unwrap()
        .token
        .token;
    let c = Client::new(server.url()).unwrap().with_token(&token);
    c.register_agent(&mandate_core::wire::RegisterAgentRequest {
        name: agent.into(),
        owner: None,
        description: Some(format!("{name}'s errands")),
        attestation: None,
    })
    .await
    .unwrap();
    let created = c
        .create_mission(&mandate_core::wire::CreateMissionRequest {
            agent: agent.into(),
            goal: format!("{name}'s own errand"),
            scope: String::new(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: None,
            out_of_scope: None,
        })
        .await
        .unwrap();
    let a = MissionAgent::start(server.url(), &created.start_token)
        .await
        .unwrap();
    (c, a)
}

/// A decision the enforcement point asks for `agent`: its decision and code.
async fn gateway_decides(s: &Scenario, agent: &MissionAgent) -> (Decision, String) {
    let r = s
        .gateway
        .decide(&DecideRequest {
            credential: agent.credential().to_owned(),
            action: "read".into(),
            resource: serde_json::from_value::<ResourceRef>(
                json!({"type": "Resource", "id": "inv-1", "tags": {"billing": "nov"}}),
            )
            .unwrap(),
            context: serde_json::Map::new(),
            justification: None,
            required_trust: None,
        })
        .await
        .unwrap();
    (r.decision, r.code)
}

/// A gateway route whose upstream nobody listens on: what matters is
/// whether the gateway refuses the agent before it would forward.
const BILLING_ROUTE: &str = "\n[[routes]]\nname = \"billing\"\nupstream = \"http://127.0.0.1:9/billing\"\nauth = \"pass\"\n\n[[routes.rules]]\nmethod = \"GET\"\npath = \"/invoices/{id}\"\naction = \"read\"\n";

/// `agent`'s signed `GET /gw/billing/invoices/7`: the problem code the
/// gateway answers (or the one its credential refresh got).
async fn gateway_get(server: &TestServer, agent: &mut MissionAgent) -> Option<String> {
    let url = format!("{}/gw/billing/invoices/7", server.url());
    match agent.signed_request("GET", &url, None, None, &[]).await {
        Ok(r) => {
            let resp = r.send().await.unwrap();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            body["code"].as_str().map(str::to_owned)
        }
        Err(e) => e.code().map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_principals_are_revoked_from_the_console() {
    let (server, _dir) = server_with(BILLING_ROUTE);
    agents_and_principals_revoked(&server).await;
}

/// The same on PostgreSQL (the agents' live missions are counted by the
/// store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_principals_are_revoked_from_the_console_on_postgres() {
    let schema = mandate_testkit::postgres::Schema::new("console_agents");
    let (server, _dir) = server_with(&format!(
        "database_url = {:?}\n{BILLING_ROUTE}",
        schema.url()
    ));
    agents_and_principals_revoked(&server).await;
}

async fn agents_and_principals_revoked(server: &TestServer) {
    let mut s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar"))
                .unwrap(),
            boundaries: String::new(),
            budget: 1_000,
        })
        .await;
    let admin = s.admin.clone();
    let alice_c = Client::new(server.url()).unwrap().with_token(&s.alice);
    // A second agent of alice's, with no mission.
    alice_c
        .register_agent(&mandate_core::wire::RegisterAgentRequest {
            name: "idle-bot".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    let (bob_c, mut bobs_agent) = member_with_agent(server, &admin, "bob", "bob-bot").await;
    // Before: whatever the gateway answers them, it is not `revoked`.
    for agent in [&mut s.agent, &mut bobs_agent] {
        assert_ne!(gateway_get(server, agent).await.as_deref(), Some("revoked"));
    }

    let mut alice = Browser::new(server);
    alice
        .enroll(&link(server, &admin, "alice"), &mut SoftKey::new(7))
        .await;
    let mut bob = Browser::new(server);
    bob.enroll(&link(server, &admin, "bob"), &mut SoftKey::new(9))
        .await;
    let mut root = Browser::new(server);
    root.enroll(&link(server, &admin, "admin"), &mut SoftKey::new(11))
        .await;

    // The agents page: hers, with their live missions; bob's his; an
    // admin's everyone's.
    assert!(
        alice.inbox().await.contains("href=\"/console/agents\""),
        "the navigation links to the agents"
    );
    let (status, list) = page(&alice, "/console/agents").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let billing = row(&list, "data-agent", "billing-bot");
    assert!(
        billing.contains("data-state=\"live\"")
            && billing.contains("<td>alice</td>")
            && billing.contains("<td class=\"live\">1</td>")
            && billing.contains("href=\"/console/agents/billing-bot/revoke\""),
        "{billing}"
    );
    assert!(row(&list, "data-agent", "idle-bot").contains("<td class=\"live\">0</td>"));
    assert!(
        !list.contains("bob-bot") && !list.contains("/console/principals"),
        "{list}"
    );
    let (_, list) = page(&bob, "/console/agents").await;
    assert!(
        list.contains("data-agent=\"bob-bot\"") && !list.contains("billing-bot"),
        "{list}"
    );
    let (_, list) = page(&root, "/console/agents").await;
    assert!(
        list.contains("data-agent=\"bob-bot\"")
            && list.contains("data-agent=\"billing-bot\"")
            && list.contains("href=\"/console/principals\""),
        "{list}"
    );

    // Bob: 404 on alice's agent, its confirmation and its revocation, as
    // from the API.
    let revoke = "/console/agents/billing-bot/revoke";
    let (status, body) = page(&bob, revoke).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("data-code=\"not_found\""), "{body}");
    let bob_csrf = bob.csrf.clone().unwrap();
    let (status, _, body) = post_form(
        &bob,
        revoke,
        &[("csrf", &bob_csrf), ("reason", "bob was here")],
        Some(&bob.origin),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    s.agent.mission().await.expect("bob revoked nothing");

    // Alice: without the CSRF token, refused.
    let csrf = alice.csrf.clone().unwrap();
    let (status, _, body) = post_form(&alice, revoke, &[], Some(&alice.origin)).await;
    assert!(
        status == StatusCode::FORBIDDEN && body.contains("data-code=\"console_csrf_refused\""),
        "{status} {body}"
    );
    s.agent.mission().await.expect("nothing revoked yet");

    // The confirmation page says what it ends; then the revocation.
    let (status, confirm) = page(&alice, revoke).await;
    assert_eq!(status, StatusCode::OK, "{confirm}");
    assert!(
        confirm.contains(&format!("action=\"{revoke}\""))
            && confirm.contains(&format!("name=\"csrf\" value=\"{csrf}\""))
            && confirm.contains("all its missions")
            && confirm.contains("<dd id=\"live\">1</dd>"),
        "{confirm}"
    );
    let (status, location, body) = post_form(
        &alice,
        revoke,
        &[("csrf", &csrf), ("reason", "misbehaving")],
        Some(&alice.origin),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location, "/console/agents");

    // The agent's next request is refused: at the enforcement point and
    // on its own signed request.
    assert_eq!(
        gateway_get(server, &mut s.agent).await.as_deref(),
        Some("revoked")
    );
    assert_eq!(
        gateway_decides(&s, &s.agent).await,
        (Decision::Deny, "revoked".to_owned())
    );
    let err = s.agent.mission().await.unwrap_err();
    assert_eq!(err.code(), Some("revoked"), "{err}");
    let (_, list) = page(&alice, &location).await;
    let billing = row(&list, "data-agent", "billing-bot");
    assert!(
        billing.contains("data-state=\"revoked\"")
            && billing.contains("<td class=\"live\">0</td>")
            && !billing.contains("/revoke\""),
        "{billing}"
    );
    let records = audit(server, &admin, "revocation").await;
    assert!(
        records.iter().any(|r| r["body"]["kind"] == "agent"
            && r["body"]["target"] == "billing-bot"
            && r["body"]["by"] == "alice"
            && r["body"]["reason"] == "misbehaving"
            && r["body"]["missions"].as_array().unwrap().len() == 1),
        "{records:#?}"
    );
    // Bob's agent is untouched.
    bobs_agent.mission().await.expect("bob's agent still works");

    // Principals: admins only, as `GET /v1/principals`; a member may not
    // revoke anyone here, themselves included.
    for path in [
        "/console/principals",
        "/console/principals/alice/revoke",
        "/console/principals/bob/revoke",
    ] {
        let (status, body) = page(&bob, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("data-code=\"forbidden\""), "{body}");
    }
    for target in ["alice", "bob"] {
        let (status, _, body) = post_form(
            &bob,
            &format!("/console/principals/{target}/revoke"),
            &[("csrf", &bob_csrf)],
            Some(&bob.origin),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{target}: {body}");
    }
    assert_eq!(page(&bob, "/console/agents").await.0, StatusCode::OK);

    let (status, list) = page(&root, "/console/principals").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let bob_row = row(&list, "data-principal", "bob");
    assert!(
        bob_row.contains("data-state=\"live\"")
            && bob_row.contains("<td>member</td>")
            && bob_row.contains("<td class=\"live\">1</td>")
            && bob_row.contains("href=\"/console/principals/bob/revoke\""),
        "{bob_row}"
    );
    assert!(row(&list, "data-principal", "admin").contains("(you)"));
    let (status, _) = page(&root, "/console/principals/nobody/revoke").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let bob_revoke = "/console/principals/bob/revoke";
    let (status, confirm) = page(&root, bob_revoke).await;
    assert_eq!(status, StatusCode::OK, "{confirm}");
    assert!(
        confirm.contains(&format!("action=\"{bob_revoke}\""))
            && confirm.contains("console sessions")
            && !confirm.contains("id=\"myself\""),
        "{confirm}"
    );
    let root_csrf = root.csrf.clone().unwrap();
    let (status, location, body) = post_form(
        &root,
        bob_revoke,
        &[("csrf", &root_csrf), ("reason", "left the company")],
        Some(&root.origin),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location, "/console/principals");

    // Bob's console session is over: pages send him to sign-in, posts and
    // the live feed refuse him, and he cannot sign in again.
    for path in ["/console/inbox", "/console/agents"] {
        let r = bob.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()["location"], "/console/signin");
    }
    assert_eq!(
        bob.get("/console/events").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = bob
        .post("/console/approvals/apr_x/deny", &json!({ "reason": "no" }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("console_signin_required"))
    );
    let (status, body) = bob
        .post("/console/signin/start", &json!({ "principal": "bob" }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("console_unknown_principal"))
    );
    // His agent is refused, and his API token.
    assert_eq!(
        gateway_get(server, &mut bobs_agent).await.as_deref(),
        Some("revoked")
    );
    assert_eq!(
        gateway_decides(&s, &bobs_agent).await,
        (Decision::Deny, "revoked".to_owned())
    );
    assert_eq!(
        bobs_agent.mission().await.unwrap_err().code(),
        Some("revoked")
    );
    assert_eq!(
        bob_c.whoami().await.unwrap_err().code(),
        Some("invalid_token")
    );
    let (_, list) = page(&root, &location).await;
    let bob_row = row(&list, "data-principal", "bob");
    assert!(
        bob_row.contains("data-state=\"revoked\"") && !bob_row.contains("/revoke\""),
        "{bob_row}"
    );
    let records = audit(server, &admin, "revocation").await;
    assert!(
        records.iter().any(|r| r["body"]["kind"] == "principal"
            && r["body"]["target"] == "bob"
            && r["body"]["by"] == "admin"
            && r["body"]["agents"] == json!(["bob-bot"])),
        "{records:#?}"
    );
    // Alice's session is untouched.
    assert!(alice.inbox().await.contains("id=\"me\">alice<"));
}

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON")
        .expect("MANDATE_TEST_PYTHON must name a Python with the MCP SDK; run scripts/test.sh")
}

/// Opens an MCP session for `agent` on `/mcp/{server}`: a signed
/// `initialize`, as an MCP client through the gateway sends it. The
/// session's id.
async fn open_mcp_session(server: &TestServer, agent: &mut MissionAgent, mcp: &str) -> String {
    let url = format!("{}/mcp/{mcp}", server.url());
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "console-test", "version": "1"}}})
    .to_string()
    .into_bytes();
    let resp = agent
        .signed_request("POST", &url, Some(("application/json", body)), None, &[])
        .await
        .unwrap()
        .header("accept", "application/json, text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// A mission's page shows its delegation chain, the missions delegated
/// below it (as `GET /v1/missions/{id}/tree`) and its open MCP sessions
/// (as `GET /v1/missions/{id}/mcp/sessions`); the inbox card of a
/// sub-agent's escalation shows who delegated to whom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missions_page_shows_its_tree_and_sessions_and_a_card_its_chain() {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.py");
    let (server, _dir) = server_with(&format!(
        "\n[[mcp_servers]]\nname = \"lab\"\ncommand = {:?}\nargs = [{:?}]\n",
        python(),
        lab.display().to_string()
    ));
    let mut s = server
        .scenario(MissionPlan {
            goal: "Reconcile November invoices".into(),
            scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar"))
                .unwrap(),
            boundaries: String::new(),
            budget: 1_000,
        })
        .await;
    let admin = s.admin.clone();
    let root_id = s.agent.mission_id().to_string();
    Client::new(server.url())
        .unwrap()
        .with_token(&s.alice)
        .register_agent(&mandate_core::wire::RegisterAgentRequest {
            name: "refund-helper".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    // billing-bot delegates the refunds to refund-helper, narrowed to a
    // budget of 10.
    let created = s
        .agent
        .delegate(&mandate_core::wire::DelegateRequest {
            agent: Some("refund-helper".into()),
            ephemeral: None,
            goal: "Refund the double-billed invoices".into(),
            scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar"))
                .unwrap(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: 10,
            out_of_scope: Some("deny".into()),
            attestation: None,
        })
        .await
        .unwrap();
    let helper = MissionAgent::start(server.url(), &created.start_token)
        .await
        .unwrap();
    let child_id = helper.mission_id().to_string();
    let (_bob_c, _) = member_with_agent(&server, &admin, "bob", "bob-bot").await;

    let mut alice = Browser::new(&server);
    alice
        .enroll(&link(&server, &admin, "alice"), &mut SoftKey::new(7))
        .await;
    let mut bob = Browser::new(&server);
    bob.enroll(&link(&server, &admin, "bob"), &mut SoftKey::new(9))
        .await;

    // The sub-agent's escalation: its card names the chain, person first.
    let approval = escalate_as(&s, &helper, "inv-42").await;
    let inbox = alice.inbox().await;
    let card = &inbox[inbox
        .find(&format!("data-approval-id=\"{approval}\""))
        .unwrap()..];
    let card = &card[..card.find("</article>").unwrap()];
    assert!(
        card.contains(
            "<ol class=\"chain\"><li data-who=\"alice\">alice</li><li data-who=\"billing-bot\">billing-bot</li><li data-who=\"refund-helper\">refund-helper</li></ol>"
        ),
        "{card}"
    );
    // Everything else the issue asks a card to show.
    for want in [
        "<code>refund</code>",
        "75000",
        "customer ACME was double-billed in November",
        "Refund the double-billed invoices",
        "refunds-escalate.cedar",
        "alice (the mission&#39;s principal)",
        "<time datetime=",
    ] {
        assert!(card.contains(want), "missing {want:?}: {card}");
    }

    // An MCP session of the root mission.
    let session = open_mcp_session(&server, &mut s.agent, "lab").await;

    // The root mission's page: its chain, the child below it, its session.
    let (status, detail) = page(&alice, &format!("/console/missions/{root_id}")).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let below = row(&detail, "data-mission-id", &child_id);
    assert!(
        below.contains("data-depth=\"1\"")
            && below.contains(&format!("href=\"/console/missions/{child_id}\""))
            && below.contains(&format!("href=\"/console/missions/{root_id}\""))
            && below.contains("<td>refund-helper</td>")
            && below.contains("<td class=\"budget\">10</td>")
            && below.contains("refund-billing"),
        "{below}"
    );
    assert!(
        detail.contains(
            "<li data-who=\"alice\">alice</li><li class=\"here\" data-who=\"billing-bot\">"
        ),
        "{detail}"
    );
    let open = row(&detail, "data-session", &session);
    assert!(open.contains("data-server=\"lab\""), "{open}");
    assert!(!detail.contains("id=\"no-sessions\""), "{detail}");

    // The child's page: the chain up to it, the parent a link; nothing
    // below it, no session.
    let (status, detail) = page(&alice, &format!("/console/missions/{child_id}")).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert!(
        detail.contains(&format!(
            "<li data-who=\"billing-bot\"><a href=\"/console/missions/{root_id}\">billing-bot</a></li><li class=\"here\" data-who=\"refund-helper\">"
        )) && detail.contains("id=\"no-delegations\"")
            && detail.contains("id=\"no-sessions\""),
        "{detail}"
    );

    // Bob sees neither mission, nor the request.
    for id in [&root_id, &child_id] {
        let (status, body) = page(&bob, &format!("/console/missions/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(!body.contains("refund-helper") && !body.contains(&session));
    }
    assert!(!bob.inbox().await.contains(&approval));
}

/// `serve` says where people open the console: at its origin
/// (`http://localhost:PORT` for a loopback listen address), not at the
/// `127.0.0.1` address it listens on, which WebAuthn refuses.
#[test]
fn serve_prints_where_the_console_is() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("data"))
        .env("MANDATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("MANDATE_") && k != "MANDATE_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    let found = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) if line.starts_with("console ") => break Some(line),
            Ok(line) => banner.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no console line in the banner: {banner:?}"));
    assert!(
        line.starts_with(&format!(
            "console for people at http://localhost:{port}/console "
        )) && line.contains("mandate principal enroll NAME"),
        "{line}"
    );
}
