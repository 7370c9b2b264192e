//! The console (ADR 0032) attacked from outside, on a real `mandate
//! serve`: passkey approvals, sign-in and enrollment ceremonies, sessions
//! and CSRF, the live feed, markup from agents, and the audit explorer's
//! query. Each test states what must hold; `attack_…` tests were written
//! against holes since closed, `held_…` tests against attacks that failed
//! from the start. All stay as regression tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod console_support;
use console_support::*;

use std::time::Duration;

use mandate_testkit::{MissionPlan, Scenario, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn plan(goal: &str) -> MissionPlan {
    MissionPlan {
        goal: goal.into(),
        scope: std::fs::read_to_string(examples().join("missions/billing-scope.cedar")).unwrap(),
        boundaries: String::new(),
        budget: 1_000,
    }
}

/// A scenario with `bob`, a member who decides nothing of alice's; alice
/// and bob signed in to the console with their passkeys.
async fn two_people(server: &TestServer, goal: &str) -> People {
    let s = server.scenario(plan(goal)).await;
    let bob_token = mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&s.admin)
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    let mut alice_key = SoftKey::new(7);
    let mut bob_key = SoftKey::new(9);
    let mut alice = Browser::new(server);
    alice
        .enroll(&link(server, &s.admin, "alice"), &mut alice_key)
        .await;
    let mut bob = Browser::new(server);
    bob.enroll(&link(server, &s.admin, "bob"), &mut bob_key)
        .await;
    People {
        s,
        bob_token,
        alice,
        alice_key,
        bob,
        bob_key,
    }
}

struct People {
    s: Scenario,
    bob_token: String,
    alice: Browser,
    alice_key: SoftKey,
    bob: Browser,
    bob_key: SoftKey,
}

/// `GET /v1/approvals/{id}` as `token`: the request's status.
async fn status_of(server: &TestServer, token: &str, id: &str) -> String {
    let v = api_get(server, token, &format!("/v1/approvals/{id}")).await;
    v["status"].as_str().unwrap_or_default().to_owned()
}

/// `POST {path}` on the API as `token`.
async fn api_post(server: &TestServer, token: &str, path: &str, body: &Value) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// The challenge for approving `id` with `terms`, as `b` asks for it.
async fn challenge(b: &Browser, id: &str, terms: &Value) -> Value {
    let (status, ch) = b
        .post(&format!("/console/approvals/{id}/challenge"), terms)
        .await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    ch
}

/// Asks `b`'s challenge for approving `id` with `terms`, has `sign`
/// answer its options, and posts the answer: the status and problem code
/// (or the request's status).
async fn approve_with(
    b: &Browser,
    id: &str,
    terms: &Value,
    sign: impl FnOnce(&Value) -> Value,
) -> (StatusCode, String) {
    let ch = challenge(b, id, terms).await;
    let cred = sign(&ch["options"]);
    finish_approval(b, id, &ch["ceremony"], cred).await
}

/// Asks `b`'s challenge for approving `id` with `terms`: the status and
/// problem code.
async fn ask(b: &Browser, id: &str, terms: &Value) -> (StatusCode, String) {
    let (status, r) = b
        .post(&format!("/console/approvals/{id}/challenge"), terms)
        .await;
    (status, r["code"].as_str().unwrap_or_default().to_owned())
}

/// Posts an approval's finish; its status and problem code (or status).
async fn finish(b: &Browser, id: &str, body: &Value) -> (StatusCode, String) {
    let (status, r) = b
        .post(&format!("/console/approvals/{id}/approve"), body)
        .await;
    let what = r["code"]
        .as_str()
        .or(r["status"].as_str())
        .unwrap_or_default()
        .to_owned();
    (status, what)
}

/// Posts the answer to an approval ceremony.
async fn finish_approval(
    b: &Browser,
    id: &str,
    ceremony: &Value,
    cred: Value,
) -> (StatusCode, String) {
    finish(b, id, &json!({ "ceremony": ceremony, "credential": cred })).await
}

/// Asserts an answer's status and problem code (or the request's status).
#[track_caller]
fn is(got: (StatusCode, String), status: StatusCode, code: &str) {
    assert_eq!((got.0, got.1.as_str()), (status, code));
}

/// Whether an `approval.refused` record names this request, code and
/// person.
fn recorded(refusals: &[Value], id: &str, code: &str, by: &str) -> bool {
    refusals
        .iter()
        .any(|r| r["body"]["approval"] == id && r["body"]["code"] == code && r["body"]["by"] == by)
}

/// An assertion answers only the terms it was made for, by the passkey
/// of the person who asked, once; every refusal is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_an_assertion_approves_only_its_own_terms() {
    let (server, _dir) = server();
    let People {
        s,
        mut alice,
        mut alice_key,
        bob,
        mut bob_key,
        ..
    } = two_people(&server, "Reconcile November invoices").await;
    // A sign-in moves the passkey's stored counter off zero.
    let (status, r) = alice.sign_in("alice", &mut alice_key).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let a = escalate(&s, "inv-42").await;
    let b = escalate(&s, "inv-43").await;
    let once = json!({ "scope": "once" });

    // The grant changed between challenge and finish: the finish carries
    // no terms (unknown fields refused), the committed ones stand.
    let ch = challenge(&alice, &a, &once).await;
    let cred = alice_key.get(&ch["options"], &alice.origin);
    is(
        finish(
            &alice,
            &a,
            &json!({ "ceremony": ch["ceremony"], "credential": cred, "scope": "mission" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_eq!(status_of(&server, &s.alice, &a).await, "pending");

    // An assertion over a wider grant's challenge, sent with the `once`
    // ceremony; and the other way round with a pattern.
    let narrow = challenge(&alice, &a, &once).await;
    let wide = challenge(&alice, &a, &json!({ "scope": "mission" })).await;
    let cred = alice_key.get(&wide["options"], &alice.origin);
    is(
        finish_approval(&alice, &a, &narrow["ceremony"], cred).await,
        StatusCode::FORBIDDEN,
        "console_passkey_refused",
    );
    let pattern = challenge(
        &alice,
        &a,
        &json!({ "scope": "pattern", "resource_prefix": "inv-" }),
    )
    .await;
    let narrower = challenge(
        &alice,
        &a,
        &json!({ "scope": "pattern", "resource_prefix": "inv-4" }),
    )
    .await;
    let cred = alice_key.get(&narrower["options"], &alice.origin);
    is(
        finish_approval(&alice, &a, &pattern["ceremony"], cred).await,
        StatusCode::FORBIDDEN,
        "console_passkey_refused",
    );

    // A challenge for approval A answered and posted on B.
    let ch = challenge(&alice, &a, &once).await;
    let cred = alice_key.get(&ch["options"], &alice.origin);
    is(
        finish_approval(&alice, &b, &ch["ceremony"], cred).await,
        StatusCode::FORBIDDEN,
        "console_assertion_wrong_approval",
    );

    // Without user verification (a touch, no PIN or biometric).
    is(
        approve_with(&alice, &a, &once, |o| {
            alice_key.get_with(o, &alice.origin, 0x01)
        })
        .await,
        StatusCode::FORBIDDEN,
        "console_passkey_refused",
    );

    // Made on another origin (a phishing page relaying the challenge).
    is(
        approve_with(&alice, &a, &once, |o| {
            alice_key.get(o, "http://evil.example")
        })
        .await,
        StatusCode::FORBIDDEN,
        "console_passkey_refused",
    );

    // Bob's passkey, presented as alice's credential id or as his own.
    let ch = challenge(&alice, &a, &once).await;
    let mut forged = bob_key.get(&ch["options"], &alice.origin);
    let alice_id = b64(&alice_key.id);
    forged["id"] = json!(alice_id);
    forged["rawId"] = json!(alice_id);
    is(
        finish_approval(&alice, &a, &ch["ceremony"], forged).await,
        StatusCode::FORBIDDEN,
        "console_passkey_refused",
    );

    // A cloned authenticator whose counter is behind: refused.
    let mut clone = SoftKey::new(7);
    is(
        approve_with(&alice, &a, &once, |o| clone.get(o, &alice.origin)).await,
        StatusCode::FORBIDDEN,
        "console_passkey_refused",
    );

    // Bob, no approver of alice's requests: not even a challenge (as if
    // the id did not exist), and alice's ceremony is not his to finish.
    let (status, _) = bob
        .post(&format!("/console/approvals/{a}/challenge"), &once)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let ch = challenge(&alice, &a, &once).await;
    let cred = bob_key.get(&ch["options"], &bob.origin);
    is(
        finish_approval(&bob, &a, &ch["ceremony"], cred).await,
        StatusCode::FORBIDDEN,
        "console_assertion_wrong_principal",
    );
    assert_eq!(status_of(&server, &s.alice, &a).await, "pending");

    // An assertion made before a deny, posted after it.
    let ch = challenge(&alice, &b, &once).await;
    let cred = alice_key.get(&ch["options"], &alice.origin);
    let (status, _) = alice
        .post(
            &format!("/console/approvals/{b}/deny"),
            &json!({ "reason": "no" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    is(
        finish_approval(&alice, &b, &ch["ceremony"], cred).await,
        StatusCode::CONFLICT,
        "approval_decided",
    );
    assert_eq!(status_of(&server, &s.alice, &b).await, "denied");

    // After all that, alice's own assertion for A's terms approves A, once.
    is(
        approve_with(&alice, &a, &once, |o| alice_key.get(o, &alice.origin)).await,
        StatusCode::OK,
        "approved",
    );

    // Decided: no new challenge for it either.
    is(
        ask(&alice, &a, &once).await,
        StatusCode::CONFLICT,
        "approval_decided",
    );

    let refusals = audit(&server, &s.admin, "approval.refused").await;
    for (id, code, by) in [
        (&a, "invalid_request", "alice"),
        (&a, "console_passkey_refused", "alice"),
        (&b, "console_assertion_wrong_approval", "alice"),
        (&a, "console_assertion_wrong_principal", "bob"),
        (&b, "approval_decided", "alice"),
    ] {
        assert!(
            recorded(&refusals, id, code, by),
            "{code} by {by} on {id}: {refusals:#?}"
        );
    }
}

/// A cloned authenticator that answers a ceremony started before the
/// genuine one moved the counter on: its counter is ahead of the value
/// when the ceremony started but behind the stored one. It is refused,
/// at sign-in and when approving (and the approval attempt recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_cloned_passkey_behind_the_stored_counter_is_refused() {
    let (server, _dir) = server();
    let People {
        s,
        mut alice,
        mut alice_key,
        ..
    } = two_people(&server, "Reconcile November invoices").await;
    let mut clone = SoftKey::new(7);

    // Sign-in: the clone's ceremony starts while the stored counter is 0.
    let mut thief = Browser::new(&server);
    let (status, start) = thief
        .post("/console/signin/start", &json!({ "principal": "alice" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{start}");
    for _ in 0..3 {
        let (status, r) = alice.sign_in("alice", &mut alice_key).await;
        assert_eq!(status, StatusCode::OK, "{r}");
    }
    let cred = clone.get(&start["options"], &thief.origin);
    assert!(clone.counter < alice_key.counter);
    let (status, r) = thief
        .finish_sign_in(&json!({ "ceremony": start["ceremony"], "credential": cred }))
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_passkey_refused")),
        "{r}"
    );
    assert!(thief.cookie.is_none(), "no session for the clone");

    // Approving: the same with an approval's ceremony.
    let a = escalate(&s, "inv-42").await;
    let once = json!({ "scope": "once" });
    // The clone has kept up until the ceremony starts.
    clone.counter = alice_key.counter;
    let ch = challenge(&alice, &a, &once).await;
    for _ in 0..3 {
        let (status, r) = alice.sign_in("alice", &mut alice_key).await;
        assert_eq!(status, StatusCode::OK, "{r}");
    }
    let cred = clone.get(&ch["options"], &alice.origin);
    assert!(clone.counter < alice_key.counter);
    is(
        finish_approval(&alice, &a, &ch["ceremony"], cred).await,
        StatusCode::FORBIDDEN,
        "console_passkey_refused",
    );
    assert_eq!(status_of(&server, &s.alice, &a).await, "pending");
    let refusals = audit(&server, &s.admin, "approval.refused").await;
    assert!(
        recorded(&refusals, &a, "console_passkey_refused", "alice"),
        "{refusals:#?}"
    );
    // Both are recorded for an admin to see: the key has been copied.
    let clones = audit(&server, &s.admin, "console.passkey_counter_regressed").await;
    assert_eq!(clones.len(), 2, "{clones:#?}");
    for c in &clones {
        assert_eq!(c["body"]["principal"], "alice");
        assert_eq!(c["body"]["passkey"], b64(&alice_key.id).as_str());
        assert!(c["body"]["counter"].as_u64() < c["body"]["stored_counter"].as_u64());
    }
}

/// An approval that expires, or whose mission is revoked, between its
/// challenge and the finish: refused, recorded, no grant. (The revoked
/// mission's approval was refused from the start, but only after an
/// `approval.approved` record naming a grant that was never made.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_an_approval_that_lapsed_after_its_challenge_is_refused() {
    let (server, _dir) = server_with("approval_ttl_secs = 3\n");
    let People {
        s,
        alice,
        mut alice_key,
        ..
    } = two_people(&server, "Reconcile November invoices").await;
    let once = json!({ "scope": "once" });

    let a = escalate(&s, "inv-42").await;
    let ch = challenge(&alice, &a, &once).await;
    let cred = alice_key.get(&ch["options"], &alice.origin);
    tokio::time::sleep(Duration::from_secs(4)).await;
    is(
        finish_approval(&alice, &a, &ch["ceremony"], cred).await,
        StatusCode::CONFLICT,
        "approval_expired",
    );
    // Nor can a new challenge be had for it.
    is(
        ask(&alice, &a, &once).await,
        StatusCode::CONFLICT,
        "approval_expired",
    );

    // The mission revoked between challenge and finish.
    let b = escalate(&s, "inv-43").await;
    let ch = challenge(&alice, &b, &once).await;
    let cred = alice_key.get(&ch["options"], &alice.origin);
    let mission = s.agent.mission_id().to_string();
    assert_eq!(
        api_post(
            &server,
            &s.alice,
            "/v1/revocations",
            &json!({ "kind": "mission", "id": mission })
        )
        .await,
        StatusCode::OK
    );
    // The sweeper (every second) marks the request expired meanwhile; the
    // reason given is still the mission's end, its own time not having run
    // out.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    is(
        finish_approval(&alice, &b, &ch["ceremony"], cred).await,
        StatusCode::CONFLICT,
        "mission_not_active",
    );
    assert_ne!(status_of(&server, &s.alice, &b).await, "approved");
    let refusals = audit(&server, &s.admin, "approval.refused").await;
    assert!(
        recorded(&refusals, &a, "approval_expired", "alice"),
        "{refusals:#?}"
    );
    assert!(
        recorded(&refusals, &b, "mission_not_active", "alice"),
        "{refusals:#?}"
    );
    // The log claims no approval (with a grant id) that was never applied.
    let approved = audit(&server, &s.admin, "approval.approved").await;
    assert!(approved.is_empty(), "{approved:#?}");
}

/// Cross-site requests, stolen or planted cookies, ended sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_sessions_and_csrf() {
    let (server, _dir) = server();
    let People {
        s,
        mut alice,
        mut alice_key,
        bob,
        mut bob_key,
        ..
    } = two_people(&server, "Reconcile November invoices").await;
    let a = escalate(&s, "inv-42").await;
    let deny = format!("/console/approvals/{a}/deny");
    let no = json!({ "reason": "no" });
    let refused = |r: (StatusCode, Value), code: &str| {
        assert_eq!(
            (r.0, r.1["code"].as_str()),
            (StatusCode::FORBIDDEN, Some(code)),
            "{}",
            r.1
        );
    };

    // Bob's CSRF token with alice's cookie.
    let csrf = alice.csrf.clone();
    let origin = alice.origin.clone();
    refused(
        alice
            .post_as(&deny, &no, Some(&origin), bob.csrf.as_deref())
            .await,
        "console_csrf_refused",
    );
    // `Origin: null` (a sandboxed frame, a redirect), a look-alike origin,
    // another port, the bare host.
    let port = origin.rsplit(':').next().unwrap().to_owned();
    let other_port = format!("http://localhost:{}", port.parse::<u16>().unwrap() ^ 1);
    for o in [
        "null".to_owned(),
        "http://localhost.evil.example".to_owned(),
        format!("{origin}.evil.example"),
        format!("{origin}/"),
        format!("https://localhost:{port}"),
        other_port,
        "http://localhost".to_owned(),
        format!("HTTP://LOCALHOST:{port}"),
        format!("{origin}, http://evil.example"),
    ] {
        refused(
            alice.post_as(&deny, &no, Some(&o), csrf.as_deref()).await,
            "console_origin_refused",
        );
    }
    // No Origin, but a same-origin Referer: refused all the same.
    let r = alice
        .http
        .post(format!("{}{deny}", alice.base))
        .header("content-type", "application/json")
        .header("referer", format!("{origin}/console/inbox"))
        .header("cookie", alice.cookie.clone().unwrap())
        .header("x-mandate-csrf", csrf.clone().unwrap())
        .body(no.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A cross-site form (text/plain, no header can be set): refused.
    let r = alice
        .http
        .post(format!("{}{deny}", alice.base))
        .header("content-type", "text/plain")
        .header("origin", "http://evil.example")
        .header("cookie", alice.cookie.clone().unwrap())
        .body(format!(
            "{{\"reason\":\"x\",\"csrf\":\"{}\"}}",
            csrf.clone().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The CSRF token as a form field is no header: JSON endpoints want
    // the header.
    let r = alice
        .http
        .post(format!("{}{deny}", alice.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &origin)
        .header("cookie", alice.cookie.clone().unwrap())
        .body(format!("csrf={}&reason=x", csrf.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&server, &s.alice, &a).await, "pending");
    let refusals = audit(&server, &s.admin, "approval.refused").await;
    assert!(recorded(&refusals, &a, "console_origin_refused", "alice"));
    assert!(recorded(&refusals, &a, "console_csrf_refused", "alice"));

    // A cookie planted before sign-in is not adopted: sign-in gives a new
    // one, and the planted value stays nobody's session.
    let mut victim = Browser::new(&server);
    let planted = "mandate_console=planted-by-an-attacker".to_owned();
    victim.cookie = Some(planted.clone());
    let (status, r) = victim.sign_in("bob", &mut bob_key).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_ne!(victim.cookie.as_deref(), Some(planted.as_str()));
    let mut attacker = Browser::new(&server);
    attacker.cookie = Some(planted);
    assert_eq!(
        attacker.get("/console/inbox").await.status(),
        StatusCode::SEE_OTHER
    );

    // Sign-out ends the session on the server: the old cookie and CSRF
    // token, replayed, are refused.
    let (old_cookie, old_csrf) = (alice.cookie.clone().unwrap(), csrf.clone().unwrap());
    let (status, _, _) = post_form(
        &alice,
        "/console/signout",
        &[("csrf", &old_csrf)],
        Some(&origin),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let r = alice
        .http
        .post(format!("{}{deny}", alice.base))
        .header("content-type", "application/json")
        .header("origin", &origin)
        .header("cookie", &old_cookie)
        .header("x-mandate-csrf", &old_csrf)
        .body(no.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        alice.get("/console/events").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A revoked principal's sessions end, and no new one can start.
    let (status, r) = alice.sign_in("alice", &mut alice_key).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        api_post(
            &server,
            &s.admin,
            "/v1/revocations",
            &json!({ "kind": "principal", "id": "alice" })
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        alice.get("/console/inbox").await.status(),
        StatusCode::SEE_OTHER
    );
    let (status, r) = alice.post(&deny, &no).await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("console_signin_required"))
    );
    let mut again = Browser::new(&server);
    let (status, r) = again.sign_in("alice", &mut alice_key).await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("console_unknown_principal")),
        "{r}"
    );
}

/// Reads a server-sent event stream until `needle` appears or `secs` pass;
/// what was read.
async fn read_events(resp: &mut reqwest::Response, needle: &str, secs: u64) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    seen
}

/// The live feed tells each person of the requests they may decide only,
/// as the inbox lists them, and escapes what the agent wrote; markup from
/// an agent (justification, resource) or a principal (goal) is text on
/// every page. (The feed sent an admin every request, which the inbox page
/// then showed as waiting for a decision the admin could not make.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_the_feed_and_pages_leak_nothing_and_run_no_markup() {
    let (server, _dir) = server();
    let goal = "<script>alert('goal')</script><img src=x onerror=alert(1)>";
    let People {
        s, alice, mut bob, ..
    } = two_people(&server, goal).await;
    let mut root = Browser::new(&server);
    root.enroll(&link(&server, &s.admin, "admin"), &mut SoftKey::new(11))
        .await;

    let mut alice_feed = alice.get("/console/events").await;
    assert_eq!(alice_feed.status(), StatusCode::OK);
    let mut bob_feed = bob.get("/console/events").await;
    assert_eq!(bob_feed.status(), StatusCode::OK);
    let mut root_feed = root.get("/console/events").await;
    assert_eq!(root_feed.status(), StatusCode::OK);

    let justification = format!(
        "</dd><script>alert('why')</script><a href=\"javascript:alert(2)\">x</a>{}",
        "A".repeat(900)
    );
    let a = escalate_with(
        &s,
        &s.agent,
        "refund",
        "inv-<b>42</b>",
        &justification,
        json!({ "amount": 75_000 }),
    )
    .await;

    let seen = read_events(&mut alice_feed, &a, 10).await;
    assert!(seen.contains(&a), "alice hears of her request: {seen}");
    let bob_seen = read_events(&mut bob_feed, &a, 2).await;
    assert!(
        !bob_seen.contains(&a) && !bob_seen.contains("alert"),
        "bob hears nothing of it: {bob_seen}"
    );
    // Nor does the admin, who may see it but not decide it: the inbox
    // (live or reloaded) holds what waits for its reader.
    let root_seen = read_events(&mut root_feed, &a, 1).await;
    assert!(!root_seen.contains(&a), "{root_seen}");
    assert!(!root.inbox().await.contains(&a));
    is(
        ask(&root, &a, &json!({ "scope": "once" })).await,
        StatusCode::FORBIDDEN,
        "not_an_approver",
    );
    let data = seen
        .lines()
        .find(|l| l.starts_with("data:") && l.contains(&a))
        .unwrap();
    let html =
        serde_json::from_str::<Value>(data.trim_start_matches("data:").trim()).unwrap()["html"]
            .as_str()
            .unwrap()
            .to_owned();

    let mission = s.agent.mission_id().to_string();
    let inbox = alice.inbox().await;
    let (_, mission_page) = page(&alice, &format!("/console/missions/{mission}")).await;
    let (_, missions) = page(&alice, "/console/missions").await;
    let records = audit(&server, &s.admin, "decision").await;
    let seq = records
        .iter()
        .rev()
        .find(|r| r["body"]["decision"] == "escalate")
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    let (status, explorer) = page(&root, "/console/audit?decision=escalate").await;
    assert_eq!(status, StatusCode::OK);
    let (status, record) = page(&root, &format!("/console/audit/{seq}")).await;
    assert_eq!(status, StatusCode::OK);
    for (name, body) in [
        ("feed", &html),
        ("inbox", &inbox),
        ("mission", &mission_page),
        ("missions", &missions),
        ("explorer", &explorer),
        ("record", &record),
    ] {
        for raw in ["<script>alert", "<img", "<b>42", "<a href=\"javascript"] {
            assert!(!body.contains(raw), "{name} carries `{raw}` unescaped");
        }
    }
    assert!(
        inbox.contains("&#60;script&#62;alert(&#39;why&#39;)"),
        "{inbox}"
    );
    assert!(inbox.contains("&#60;script&#62;alert(&#39;goal&#39;)"));
    assert!(html.contains("inv-&#60;b&#62;42"), "{html}");
    assert!(mission_page.contains("&#60;script&#62;alert(&#39;goal&#39;)"));

    // Markup in a path is text too.
    let (status, body) = page(&root, "/console/audit/%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("<script>alert"), "{body}");
    let (status, body) = page(
        &alice,
        "/console/missions/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    assert!(!body.contains("<script>alert"), "{body}");

    // Bob signs out: his feed ends at the next event.
    let bob_csrf = bob.csrf.clone().unwrap();
    let origin = bob.origin.clone();
    let (status, _, _) = post_form(
        &bob,
        "/console/signout",
        &[("csrf", &bob_csrf)],
        Some(&origin),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    bob.cookie = None;
    let b = escalate(&s, "inv-43").await;
    let after = read_events(&mut bob_feed, &b, 3).await;
    assert!(!after.contains(&b), "{after}");
}

/// Enrollment links and passkey ceremonies are single use and bound to
/// their principal; a credential id is nobody else's to register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_enrollment_and_sign_in_ceremonies() {
    let (server, _dir) = server();
    let People {
        s,
        mut alice_key,
        bob,
        mut bob_key,
        bob_token,
        ..
    } = two_people(&server, "Reconcile November invoices").await;
    let origin = bob.origin.clone();

    // A new link for alice, used to register a passkey whose credential
    // id is bob's: refused, and bob's passkey stays his.
    let l = link(&server, &s.admin, "alice");
    let token = l.rsplit('/').next().unwrap();
    let mut b = Browser::new(&server);
    let (status, start) = b
        .post("/console/enroll/start", &json!({ "token": token }))
        .await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let mut squatter = SoftKey::new(13);
    squatter.id = bob_key.id.clone();
    let cred = squatter.create(&start["options"], &origin);
    let finish = json!({ "ceremony": start["ceremony"], "credential": cred });
    let (status, r) = b.post("/console/enroll/finish", &finish).await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::CONFLICT, Some("console_passkey_taken")),
        "{r}"
    );
    // The ceremony and the link are spent.
    let (status, r) = b.post("/console/enroll/finish", &finish).await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_challenge_invalid"))
    );
    let (status, r) = b
        .post("/console/enroll/start", &json!({ "token": token }))
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_enrollment_invalid"))
    );
    let (status, r) = b.sign_in("bob", &mut bob_key).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "bob's passkey still signs bob in: {r}"
    );
    assert!(b.inbox().await.contains("bob"));

    // Sign-in ceremonies: without user verification; alice's finished
    // with bob's passkey; one ceremony finished twice.
    let mut b = Browser::new(&server);
    for r in [
        b.sign_in_with("alice", |o| alice_key.get_with(o, &origin, 0x01))
            .await,
        b.sign_in_with("alice", |o| bob_key.get(o, &origin)).await,
    ] {
        assert_eq!(
            (r.0, r.1["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("console_passkey_refused"))
        );
    }
    assert!(b.cookie.is_none());
    let (status, start) = b
        .post("/console/signin/start", &json!({ "principal": "alice" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let cred = alice_key.get(&start["options"], &origin);
    let finish = json!({ "ceremony": start["ceremony"], "credential": cred });
    let (status, _) = b.finish_sign_in(&finish).await;
    assert_eq!(status, StatusCode::OK);
    let mut replay = Browser::new(&server);
    let (status, r) = replay.finish_sign_in(&finish).await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_challenge_invalid"))
    );
    // A sign-in ceremony is no approval ceremony (nor the reverse).
    let a = escalate(&s, "inv-42").await;
    let (status, start) = b
        .post("/console/signin/start", &json!({ "principal": "alice" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let cred = alice_key.get(&start["options"], &origin);
    is(
        finish_approval(&b, &a, &start["ceremony"], cred).await,
        StatusCode::FORBIDDEN,
        "console_challenge_invalid",
    );
    assert_eq!(status_of(&server, &s.alice, &a).await, "pending");

    // A link issued to a principal revoked before it is used.
    let l = link(&server, &s.admin, "bob");
    assert_eq!(
        api_post(
            &server,
            &s.admin,
            "/v1/revocations",
            &json!({ "kind": "principal", "id": "bob" })
        )
        .await,
        StatusCode::OK
    );
    let _ = bob_token;
    let token = l.rsplit('/').next().unwrap();
    let (status, r) = Browser::new(&server)
        .post("/console/enroll/start", &json!({ "token": token }))
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_enrollment_invalid"))
    );
    // Only admins issue links.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/principals/alice/enroll", server.url()))
        .bearer_auth(&s.alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// The audit explorer's query, however malformed or huge: a page or a
/// 400, never an error of the server; and for admins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_the_audit_explorer_takes_any_query() {
    let (server, _dir) = server();
    let People { s, alice, .. } = two_people(&server, "Reconcile November invoices").await;
    let mut root = Browser::new(&server);
    root.enroll(&link(&server, &s.admin, "admin"), &mut SoftKey::new(11))
        .await;
    let long = "x".repeat(6_000);
    for q in [
        "since=18446744073709551615".to_owned(),
        "until=18446744073709551615&since=0".to_owned(),
        "since=-1".to_owned(),
        "since=99999999999999999999999".to_owned(),
        "since=9999-12-31T23:59".to_owned(),
        "since=0000-01-01T00:00".to_owned(),
        "since=1969-12-31T23:59".to_owned(),
        "before=18446744073709551615".to_owned(),
        "before=9223372036854775808".to_owned(),
        "before=-1".to_owned(),
        "before=0".to_owned(),
        "before=".to_owned(),
        "verify=now&verify=now".to_owned(),
        "decision=%00".to_owned(),
        "mission=%FF%FE".to_owned(),
        format!("mission={long}&agent={long}&action={long}"),
        "since=2026-13-45T99:99".to_owned(),
        "mission=a&mission=b&before=1&before=2".to_owned(),
    ] {
        let (status, body) = page(&root, &format!("/console/audit?{q}")).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{q}: {status} {body}"
        );
    }
    for seq in [
        "18446744073709551615",
        "9223372036854775808",
        "9223372036854775807",
        "18446744073709551616",
        "-1",
    ] {
        let (status, body) = page(&root, &format!("/console/audit/{seq}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{seq}: {body}");
    }
    let (status, _) = page(&alice, "/console/audit?since=18446744073709551615").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Anyone may start a sign-in ceremony for a principal they can name; a
/// flood of them fills the ceremonies the server keeps. A signed-in
/// approver must still be able to approve (sign-ins are refused as busy
/// meanwhile, for as long as the flood lasts: a rate limit in front is the
/// remedy for that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_flood_of_sign_ins_does_not_block_approvals() {
    let (server, _dir) = server();
    let People {
        s,
        alice,
        mut alice_key,
        ..
    } = two_people(&server, "Reconcile November invoices").await;
    let a = escalate(&s, "inv-42").await;

    let http = reqwest::Client::new();
    let url = format!("{}/console/signin/start", server.url());
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, origin, busy) = (
            http.clone(),
            url.clone(),
            alice.origin.clone(),
            busy.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..2_000 {
                if busy.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = http
                    .post(&url)
                    .header("origin", &origin)
                    .header("content-type", "application/json")
                    .body(r#"{"principal":"alice"}"#)
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                    busy.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        busy.load(std::sync::atomic::Ordering::Relaxed),
        "the flood filled the ceremonies"
    );

    let ch = challenge(&alice, &a, &json!({ "scope": "once" })).await;
    let cred = alice_key.get(&ch["options"], &alice.origin);
    is(
        finish_approval(&alice, &a, &ch["ceremony"], cred).await,
        StatusCode::OK,
        "approved",
    );
}

/// A step-up names its approver and takes `once` only: the mission's
/// principal may not decide it from the console, nor hears of it; the
/// approver may not widen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_step_up_is_its_approvers_and_once_only() {
    let (server, _dir) =
        server_with_policies(&["refunds-escalate.cedar", "wires-step-up.cedar"], "");
    let s = server.scenario(plan("Reconcile November invoices")).await;
    mandate_client::Client::new(server.url())
        .unwrap()
        .with_token(&s.admin)
        .create_principal("treasurer", None)
        .await
        .unwrap();
    let mut alice = Browser::new(&server);
    alice
        .enroll(&link(&server, &s.admin, "alice"), &mut SoftKey::new(7))
        .await;
    let mut treasurer_key = SoftKey::new(21);
    let mut treasurer = Browser::new(&server);
    treasurer
        .enroll(&link(&server, &s.admin, "treasurer"), &mut treasurer_key)
        .await;
    let mut alice_feed = alice.get("/console/events").await;

    let w = escalate_with(
        &s,
        &s.agent,
        "wire",
        "acct-1",
        "supplier invoice",
        json!({ "amount": 10 }),
    )
    .await;
    let seen = read_events(&mut alice_feed, &w, 2).await;
    assert!(!seen.contains(&w), "{seen}");
    assert!(!alice.inbox().await.contains(&w));
    is(
        ask(&alice, &w, &json!({ "scope": "once" })).await,
        StatusCode::FORBIDDEN,
        "not_an_approver",
    );
    let page = treasurer.inbox().await;
    assert!(
        page.contains(&w) && !page.contains("value=\"mission\""),
        "{page}"
    );
    for terms in [
        json!({ "scope": "mission" }),
        json!({ "scope": "pattern", "resource_prefix": "acct-" }),
    ] {
        is(
            ask(&treasurer, &w, &terms).await,
            StatusCode::BAD_REQUEST,
            "step_up_requires_once",
        );
    }
    let ch = challenge(&treasurer, &w, &json!({ "scope": "once" })).await;
    let cred = treasurer_key.get(&ch["options"], &treasurer.origin);
    is(
        finish_approval(&treasurer, &w, &ch["ceremony"], cred).await,
        StatusCode::OK,
        "approved",
    );
    let refusals = audit(&server, &s.admin, "approval.refused").await;
    assert!(recorded(&refusals, &w, "not_an_approver", "alice"));
    assert!(recorded(
        &refusals,
        &w,
        "step_up_requires_once",
        "treasurer"
    ));
}
