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

use mandate_testkit::{MissionPlan, TestServer};
use reqwest::StatusCode;
use serde_json::json;
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
    // bob, with an agent and a mission of his own.
    let bob_token = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&admin)
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    let bob_c = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&bob_token);
    bob_c
        .register_agent(&mandate_core::wire::RegisterAgentRequest {
            name: "bob-bot".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    let bobs = bob_c
        .create_mission(&mandate_core::wire::CreateMissionRequest {
            agent: "bob-bot".into(),
            goal: "Bob's own errand".into(),
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
    let bob_token = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&admin)
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    let bob_c = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&bob_token);
    bob_c
        .register_agent(&mandate_core::wire::RegisterAgentRequest {
            name: "bob-bot".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    let bobs = bob_c
        .create_mission(&mandate_core::wire::CreateMissionRequest {
            agent: "bob-bot".into(),
            goal: "Bob's own errand".into(),
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
