//! End to end: the real `mandate` binary on loopback, driven through its
//! CLI, the client crate, and raw HTTP, as people and agents would.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use mandate_client::{Client, MissionAgent};
use mandate_core::wire::{CreateMissionRequest, RegisterAgentRequest};
use mandate_testkit::TestServer;
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

/// An admin, a member `alice` with an agent `billing-bot`; returns tokens.
fn setup(server: &TestServer) -> (String, String) {
    let admin = server.init_admin();
    let added = server
        .cli(Some(&admin), &["principal", "add", "alice", "--json"])
        .json();
    let alice = added["token"]["token"].as_str().unwrap().to_owned();
    server
        .cli(Some(&alice), &["agent", "register", "billing-bot"])
        .success();
    (admin, alice)
}

fn create_mission(
    server: &TestServer,
    token: &str,
    agent: &str,
    extra: &[&str],
) -> (String, String) {
    let mut args = vec![
        "mission",
        "create",
        "--agent",
        agent,
        "--goal",
        "Reconcile November invoices",
        "--json",
    ];
    args.extend_from_slice(extra);
    let created = server.cli(Some(token), &args).json();
    (
        created["mission"]["id"].as_str().unwrap().to_owned(),
        created["start_token"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_mission_lives_and_dies_through_the_cli() {
    let server = TestServer::start(bin(), None);
    let (_admin, alice) = setup(&server);
    let dir = server.scratch();
    std::fs::write(
        dir.join("scope.cedar"),
        "permit(principal, action == Action::\"read\", resource);\n",
    )
    .unwrap();
    let (mission_id, start_token) = create_mission(
        &server,
        &alice,
        "billing-bot",
        &["--scope", "scope.cedar", "--ttl", "2h"],
    );

    // The agent starts the mission with a fresh key; the key file is private.
    server
        .cli(
            None,
            &["mission", "start", &start_token, "--state", "m.json"],
        )
        .success();
    let mode = std::fs::metadata(dir.join("m.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The start token works once: a second start fails and writes nothing.
    let again = server.cli(
        None,
        &["mission", "start", &start_token, "--state", "m2.json"],
    );
    assert!(!again.ok());
    assert!(
        again.stderr().contains("start_token_used"),
        "{}",
        again.stderr()
    );
    assert!(!dir.join("m2.json").exists());

    // The credential names who delegated what to whom, bound to the key.
    let cred = server
        .cli(None, &["mission", "credential", "--state", "m.json"])
        .success()
        .trim()
        .to_owned();
    let jwks_url = format!("{}/.well-known/jwks.json", server.url());
    let verified = server
        .cli(
            None,
            &["credential", "verify", &cred, "--jwks", &jwks_url, "--json"],
        )
        .json();
    let claims = &verified["claims"];
    // Without `--jwks`: the server's (`MANDATE_SERVER`), and its issuer.
    let by_default = server
        .cli(None, &["credential", "verify", &cred, "--json"])
        .json();
    assert_eq!(by_default["claims"], *claims);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "billing-bot");
    assert_eq!(claims["mission_id"], mission_id.as_str());
    let shown = server
        .cli(Some(&alice), &["mission", "show", &mission_id, "--json"])
        .json();
    assert_eq!(claims["mission_s256"], shown["mission_s256"]);
    assert_eq!(claims["cnf"]["jkt"], shown["jkt"]);
    assert_eq!(shown["state"], "active");
    assert!(claims["exp"].as_u64().unwrap() <= shown["expires_at"].as_u64().unwrap());

    // Offline verification refuses a wrong issuer.
    let wrong = server.cli(
        None,
        &[
            "credential",
            "verify",
            &cred,
            "--jwks",
            &jwks_url,
            "--issuer",
            "https://other.example",
        ],
    );
    assert!(!wrong.ok());
    assert!(
        wrong.stderr().contains("bad_credential"),
        "{}",
        wrong.stderr()
    );

    let active = server
        .cli(None, &["credential", "introspect", &cred, "--json"])
        .json();
    assert_eq!(active["active"], true);

    // The agent ends the mission; its key file is deleted and every
    // credential of the mission is refused with `mission_ended`.
    server
        .cli(None, &["mission", "end", "--state", "m.json"])
        .success();
    assert!(!dir.join("m.json").exists());
    let after = server.cli(None, &["credential", "introspect", &cred]);
    assert_eq!(after.code(), Some(2));
    assert!(
        after.stdout().contains("mission_ended"),
        "{}",
        after.stdout()
    );
    let shown = server
        .cli(Some(&alice), &["mission", "show", &mission_id, "--json"])
        .json();
    assert_eq!(shown["state"], "ended");
    assert_eq!(shown["end_reason"], "completed");
    // Ending twice is refused.
    let twice = server.cli(Some(&alice), &["mission", "end", &mission_id]);
    assert!(
        twice.stderr().contains("mission_ended"),
        "{}",
        twice.stderr()
    );
}

#[tokio::test]
async fn the_credential_is_refused_after_its_mission_ends_and_cannot_be_refreshed() {
    let server = TestServer::start(bin(), None);
    let (_admin, alice) = setup(&server);
    let (mission_id, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    let mut agent = MissionAgent::start(server.url(), &start_token)
        .await
        .unwrap();
    assert_eq!(agent.mission().await.unwrap().id, mission_id);
    let old = agent.credential().to_owned();
    agent.refresh().await.unwrap();
    assert_ne!(agent.credential(), old, "a refresh issues a new credential");

    // The principal ends the mission.
    Client::new(server.url())
        .unwrap()
        .with_token(&alice)
        .end_mission(&mission_id, Some("done"))
        .await
        .unwrap();
    let err = agent.mission().await.unwrap_err();
    assert_eq!(err.code(), Some("mission_ended"));
    let err = agent.refresh().await.unwrap_err();
    assert_eq!(err.code(), Some("mission_ended"));
    let err = agent.end(None).await.unwrap_err();
    assert_eq!(err.code(), Some("mission_ended"));
}

#[tokio::test]
async fn revocation_is_immediate_and_cascades() {
    let server = TestServer::start(bin(), None);
    let (admin, alice) = setup(&server);
    let admin_c = Client::new(server.url()).unwrap().with_token(&admin);
    let bob = admin_c
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    let bob_c = Client::new(server.url()).unwrap().with_token(&bob);
    bob_c
        .register_agent(&RegisterAgentRequest {
            name: "bob-bot".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    let alice_c = Client::new(server.url()).unwrap().with_token(&alice);
    alice_c
        .register_agent(&RegisterAgentRequest {
            name: "helper".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();

    let start = |c: &Client, agent: &str| {
        let c = c.clone();
        let req = CreateMissionRequest {
            agent: agent.into(),
            goal: "triage the support queue".into(),
            scope: String::new(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: None,
            budget: None,
            out_of_scope: None,
        };
        let url = server.url().to_owned();
        async move {
            let created = c.create_mission(&req).await.unwrap();
            MissionAgent::start(&url, &created.start_token)
                .await
                .unwrap()
        }
    };
    let a1 = start(&alice_c, "billing-bot").await;
    let a2 = start(&alice_c, "billing-bot").await;
    let h = start(&alice_c, "helper").await;
    let b = start(&bob_c, "bob-bot").await;

    // Members cannot revoke what is not theirs.
    let err = bob_c
        .revoke("agent", "billing-bot", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"));

    // Revoking an agent ends all its missions, on the very next request.
    let r = alice_c
        .revoke("agent", "billing-bot", Some("misbehaving"))
        .await
        .unwrap();
    assert_eq!(r.missions.len(), 2);
    for agent in [&a1, &a2] {
        assert_eq!(agent.mission().await.unwrap_err().code(), Some("revoked"));
    }
    assert!(
        h.mission().await.is_ok(),
        "another agent's mission is untouched"
    );
    // Each mission's history says how it ended: an operator looking up
    // the mission finds the revocation.
    for agent in [&a1, &a2] {
        let mission = agent.mission_id().to_string();
        let out = server
            .cli(
                Some(&admin),
                &["--json", "audit", "list", "--mission", &mission],
            )
            .json();
        let ended: Vec<&Value> = out["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "mission.ended")
            .collect();
        assert_eq!(ended.len(), 1, "{out}");
        let body = &ended[0]["body"];
        assert!(body["mission_s256"].is_string(), "{body}");
        assert_eq!(
            body,
            &json!({"mission": mission, "mission_s256": body["mission_s256"], "by": "alice",
                    "reason": "revoked", "revocation": {"kind": "agent", "target": "billing-bot"}})
        );
    }
    // A revoked agent gets no new mission.
    let req = CreateMissionRequest {
        agent: "billing-bot".into(),
        goal: "again".into(),
        scope: String::new(),
        boundaries: String::new(),
        escalations: String::new(),
        ttl_seconds: None,
        budget: None,
        out_of_scope: None,
    };
    assert_eq!(
        alice_c.create_mission(&req).await.unwrap_err().code(),
        Some("revoked")
    );

    // Revoking a principal ends their missions and kills their tokens.
    let out = server
        .cli(
            Some(&admin),
            &["revoke", "principal", "alice", "--reason", "left", "--json"],
        )
        .json();
    assert_eq!(out["missions"].as_array().unwrap().len(), 1);
    assert_eq!(h.mission().await.unwrap_err().code(), Some("revoked"));
    assert_eq!(
        alice_c.whoami().await.unwrap_err().code(),
        Some("invalid_token")
    );
    assert!(b.mission().await.is_ok(), "bob is untouched");
}

/// A revocation records the end of each mission it revoked, and only of
/// those: a mission already past its expiry is ended `expired` by the same
/// change, and no record calls it revoked.
#[test]
fn a_revocation_records_the_end_of_the_missions_it_revoked_only() {
    let server = TestServer::start(bin(), Some("[missions]\nmin_ttl_secs = 1\n"));
    let (admin, alice) = setup(&server);
    let (live, _) = create_mission(&server, &alice, "billing-bot", &[]);
    let (expired, _) = create_mission(&server, &alice, "billing-bot", &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let out = server
        .cli(Some(&alice), &["revoke", "agent", "billing-bot", "--json"])
        .json();
    assert_eq!(out["missions"].as_array().unwrap().len(), 2, "{out}");
    let ended = server
        .cli(
            Some(&admin),
            &["--json", "audit", "list", "--kind", "mission.ended"],
        )
        .json();
    let ended = ended["records"].as_array().unwrap();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["body"]["mission"], live.as_str());
    assert_eq!(ended[0]["body"]["reason"], "revoked");
    let shown = server
        .cli(Some(&alice), &["mission", "show", &expired, "--json"])
        .json();
    assert!(shown.to_string().contains("expired"), "{shown}");
}

#[tokio::test]
async fn missions_keys_and_credentials_survive_a_restart() {
    let mut server = TestServer::start(bin(), None);
    let (_admin, alice) = setup(&server);
    let (mission_id, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    let mut agent = MissionAgent::start(server.url(), &start_token)
        .await
        .unwrap();
    let jwks_before = reqwest::get(format!("{}/.well-known/jwks.json", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cred = agent.credential().to_owned();

    assert!(server.restart(), "SIGTERM shuts the server down cleanly");

    let jwks_after = reqwest::get(format!("{}/.well-known/jwks.json", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(jwks_before, jwks_after, "the authority key survived");
    let intro = Client::new(server.url())
        .unwrap()
        .introspect(&cred)
        .await
        .unwrap();
    assert!(
        intro.active,
        "a credential issued before the restart still verifies: {intro:?}"
    );
    assert_eq!(agent.mission().await.unwrap().id, mission_id);
    agent.refresh().await.unwrap();
    let shown = server
        .cli(Some(&alice), &["mission", "show", &mission_id, "--json"])
        .json();
    assert_eq!(shown["state"], "active");
    for f in ["mandate.db", "mandate.db-wal"] {
        let mode = std::fs::metadata(server.data_dir().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let key_mode = std::fs::metadata(server.data_dir().join("authority.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_mission_ends_at_its_ttl() {
    let server = TestServer::start(bin(), Some("[missions]\nmin_ttl_secs = 1\n"));
    let (_admin, alice) = setup(&server);
    let (mission_id, start_token) =
        create_mission(&server, &alice, "billing-bot", &["--ttl", "2s"]);
    let mut agent = MissionAgent::start(server.url(), &start_token)
        .await
        .unwrap();
    assert!(agent.credential_expires_at() <= agent.last_mission_view().unwrap().expires_at);
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    assert_eq!(
        agent.refresh().await.unwrap_err().code(),
        Some("mission_ended")
    );
    let shown = server
        .cli(Some(&alice), &["mission", "show", &mission_id, "--json"])
        .json();
    assert_eq!(shown["state"], "ended");
    assert_eq!(shown["end_reason"], "expired");
}

#[tokio::test]
async fn an_expired_start_token_is_refused() {
    let server = TestServer::start(bin(), Some("start_token_ttl_secs = 1\n"));
    let (_admin, alice) = setup(&server);
    let (_, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let err = MissionAgent::start(server.url(), &start_token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("start_token_expired"));
}

async fn post(url: &str, token: &str, body: impl Into<reqwest::Body>) -> (u16, String, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_gets_a_problem_code_and_changes_nothing() {
    let server = TestServer::start(bin(), None);
    let (admin, alice) = setup(&server);
    let missions = format!("{}/v1/missions", server.url());
    let good = json!({ "agent": "billing-bot", "goal": "g" });

    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_json"),
        (json!({ "agent": "billing-bot", "goal": "g", "surprise": 1 }).to_string(), 400, "invalid_json"),
        (json!({ "agent": "billing-bot", "goal": 7 }).to_string(), 400, "invalid_json"),
        (json!({ "agent": "billing-bot", "goal": "g", "scope": "permit(principal,, resource);" }).to_string(), 400, "invalid_policy"),
        (json!({ "agent": "billing-bot", "goal": "g", "ttl_seconds": 1 }).to_string(), 400, "invalid_request"),
        (json!({ "agent": "Not A Name", "goal": "g" }).to_string(), 400, "invalid_request"),
        (json!({ "agent": "nobody", "goal": "g" }).to_string(), 404, "not_found"),
        (format!("{{\"agent\":\"billing-bot\",\"goal\":\"{}\"}}", "x".repeat(300_000)), 413, "payload_too_large"),
        // Nesting that would overflow the parser's stack is refused up front.
        (
            json!({ "agent": "billing-bot", "goal": "g",
                    "scope": format!("permit(principal, action, resource) when {{ {}true{} }};", "(".repeat(2_000), ")".repeat(2_000)) })
            .to_string(),
            400,
            "invalid_policy",
        ),
        // Nesting that would overflow the parser's stack is refused up front.
        (
            json!({ "agent": "billing-bot", "goal": "g",
                    "scope": format!("permit(principal, action, resource) when {{ {}true{} }};", "(".repeat(2_000), ")".repeat(2_000)) })
            .to_string(),
            400,
            "invalid_policy",
        ),
    ];
    for (body, status, code) in cases {
        let (s, ctype, problem) = post(&missions, &alice, body.clone()).await;
        assert_eq!(
            (s, problem["code"].as_str().unwrap_or_default()),
            (status, code),
            "{}",
            &body[..body.len().min(80)]
        );
        assert_eq!(ctype, "application/problem+json");
    }
    // A member cannot delegate someone else's agent; no token, no entry.
    let (s, _, p) = post(&missions, &admin, good.to_string()).await;
    assert_eq!(s, 201, "an admin may delegate any agent: {p}");
    let bob = Client::new(server.url())
        .unwrap()
        .with_token(&admin)
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    let (s, _, p) = post(&missions, &bob, good.to_string()).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (403, "forbidden"));
    let (s, _, p) = post(&missions, "mdt_nope", good.to_string()).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (401, "invalid_token"));

    // The server survived all of that.
    let health = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Nothing half-written: only the admin's mission exists.
    let list = server
        .cli(Some(&admin), &["mission", "list", "--json"])
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // A start without a proof of possession is refused.
    let (_, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    let (s, _, p) = post(
        &format!("{missions}/start"),
        "",
        json!({ "start_token": start_token }).to_string(),
    )
    .await;
    assert_eq!((s, p["code"].as_str().unwrap()), (401, "unauthenticated"));
    // ... and did not use up the token.
    MissionAgent::start(server.url(), &start_token)
        .await
        .unwrap();

    // The CLI prints one readable line and exits non-zero.
    let out = server.cli(
        Some(&alice),
        &[
            "mission",
            "create",
            "--agent",
            "billing-bot",
            "--goal",
            "g",
            "--ttl",
            "5x",
        ],
    );
    assert!(!out.ok());
    assert_eq!(out.stderr().trim().lines().count(), 1, "{}", out.stderr());
}

/// An independent JWT implementation (PyJWT) verifies the credential against
/// the served JWKS. `scripts/test.sh` provides the interpreter.
#[tokio::test]
async fn an_independent_jwt_library_verifies_the_credential() {
    let python = std::env::var("MANDATE_TEST_PYTHON")
        .expect("MANDATE_TEST_PYTHON must name a Python with PyJWT[crypto]; run the tests with scripts/test.sh");
    let server = TestServer::start(bin(), None);
    let (_admin, alice) = setup(&server);
    let (mission_id, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    let agent = MissionAgent::start(server.url(), &start_token)
        .await
        .unwrap();
    let script = r#"
import json, sys, urllib.request, jwt
issuer, token = sys.argv[1], sys.argv[2]
jwks = json.load(urllib.request.urlopen(issuer + "/.well-known/jwks.json"))
header = jwt.get_unverified_header(token)
assert header["typ"] == "mandate-mission+jwt", header
key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["EdDSA"], issuer=issuer,
                    options={"require": ["exp", "iat", "iss", "sub", "jti"]})
print(json.dumps(claims))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, server.url(), agent.credential()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "billing-bot");
    assert_eq!(claims["mission_id"], mission_id.as_str());
    assert_eq!(
        claims["cnf"]["jkt"].as_str().unwrap(),
        agent.key().thumbprint().as_str()
    );

    // And refuses one whose signature was altered.
    let mut parts: Vec<String> = agent.credential().split('.').map(str::to_owned).collect();
    let flipped = if parts[2].as_bytes()[10] == b'A' {
        "B"
    } else {
        "A"
    };
    parts[2].replace_range(10..11, flipped);
    let bad = std::process::Command::new(&python)
        .args(["-c", script, server.url(), &parts.join(".")])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "PyJWT accepted an altered signature");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidSignatureError"));
}

/// A proof of possession is good for one request; free text cannot carry
/// control characters into logs.
#[tokio::test]
async fn a_proof_cannot_be_replayed() {
    use mandate_core::{Clock as _, OsRandom, SystemClock};
    let server = TestServer::start(bin(), None);
    let (admin, alice) = setup(&server);
    let (_, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    let agent = MissionAgent::start(server.url(), &start_token)
        .await
        .unwrap();
    let url = format!("{}/v1/mission", server.url());
    let proof = agent
        .key()
        .proof(
            "GET",
            &url,
            Some(agent.credential()),
            SystemClock.now(),
            &OsRandom,
        )
        .unwrap();
    let send = || {
        reqwest::Client::new()
            .get(&url)
            .header("authorization", format!("DPoP {}", agent.credential()))
            .header("dpop", &proof)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let again = send().await.unwrap();
    assert_eq!(again.status(), 401);
    let p: Value = again.json().await.unwrap();
    assert_eq!(p["code"], "proof_replayed");
    // The replayed proof verified with the mission key: the replay is on
    // the record, once however often it is tried.
    assert_eq!(send().await.unwrap().status(), 401);
    let replays = server
        .cli(
            Some(&admin),
            &["--json", "audit", "list", "--kind", "proof.replayed"],
        )
        .json();
    let replays = replays["records"].as_array().unwrap();
    assert_eq!(replays.len(), 1, "{replays:?}");
    assert_eq!(replays[0]["body"]["path"], "/v1/mission");
    assert_eq!(
        replays[0]["body"]["mission"],
        agent.mission_id().to_string()
    );
    // Another key's proof with this credential is refused.
    let stranger = mandate_core::MissionKey::generate(&OsRandom).unwrap();
    let forged = stranger
        .proof(
            "GET",
            &url,
            Some(agent.credential()),
            SystemClock.now(),
            &OsRandom,
        )
        .unwrap();
    let resp = reqwest::Client::new()
        .get(&url)
        .header("authorization", format!("DPoP {}", agent.credential()))
        .header("dpop", forged)
        .send()
        .await
        .unwrap();
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["code"], "key_mismatch");

    let err = agent
        .end(Some("done\nWARN forged log line"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_request"));
    agent.end(Some("done")).await.unwrap();
}

/// A `mandate.toml` that does not parse stops the start, naming the file,
/// the line and the column of the mistake.
#[test]
fn a_config_file_mistake_is_named_by_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&data)
        .unwrap();
    std::fs::write(
        data.join("mandate.toml"),
        "listen = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"billing\"\nupstream = 42\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["serve", "--data"])
        .arg(&data)
        .env("MANDATE_LOG", "warn")
        .env_remove("MANDATE_LISTEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mandate.toml:5:12"), "{err}");
}

/// A mission key as earlier versions wrote it: PKCS#8 v2, the public key
/// embedded (the committed test vectors' mission key, a test-only key).
const OLD_V2_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMFECAQEwBQYDK2VwBCIEIFoMupILnu9N42EjsMkoWEHzXE0cwNGWy5wI5zYzKDvi\ngSEANuBa4B1JpWp58o6n2FETPZAP+nkX3T+vSh5RmVg8bTQ=\n-----END PRIVATE KEY-----\n";
const OLD_V2_KEY_JKT: &str = "I7hPzbi68UIUnh1fahKnOGQxUOmc50N38Ed5JclQ9PY";

/// The mission key Mandate writes (`mission start`, `mission keygen`)
/// loads in other tools an agent is written with — OpenSSL 3 and Node's
/// `crypto` — as the same key the credential binds; a key file as earlier
/// versions wrote it still starts a mission.
#[test]
fn mission_keys_load_in_openssl_and_node_and_old_key_files_still_work() {
    let server = TestServer::start(bin(), None);
    let (_admin, alice) = setup(&server);
    let dir = server.scratch();
    let (_, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    server
        .cli(
            None,
            &["mission", "start", &start_token, "--state", "m.json"],
        )
        .success();
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.json")).unwrap()).unwrap();
    std::fs::write(dir.join("started.pem"), state["key_pem"].as_str().unwrap()).unwrap();
    let claims = server
        .cli(None, &["mission", "credential", "--state", "m.json"])
        .success();
    let cred = server
        .cli(None, &["credential", "verify", claims.trim(), "--json"])
        .json();
    let bound_x = cred["claims"]["cnf"]["jwk"]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = server
        .cli(None, &["mission", "keygen", "--out", "made.pem", "--json"])
        .json();
    assert!(made["jkt"].is_string(), "{made}");
    for file in ["started.pem", "made.pem"] {
        let path = dir.join(file);
        let openssl = std::process::Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            openssl.status.success(),
            "openssl refused {file}: {}",
            String::from_utf8_lossy(&openssl.stderr)
        );
        // Node reads it, and derives the public key from it.
        let node = std::process::Command::new("node")
            .args([
                "-e",
                "const c = require('crypto'), fs = require('fs'); \
                 const k = c.createPrivateKey(fs.readFileSync(process.argv[1])); \
                 process.stdout.write(c.createPublicKey(k).export({format: 'jwk'}).x)",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            node.status.success(),
            "node refused {file}: {}",
            String::from_utf8_lossy(&node.stderr)
        );
        if file == "started.pem" {
            assert_eq!(String::from_utf8_lossy(&node.stdout), bound_x);
        }
    }
    // An old (v2) key file still starts a mission, as the same key.
    std::fs::write(dir.join("old.pem"), OLD_V2_KEY).unwrap();
    let (id, start_token) = create_mission(&server, &alice, "billing-bot", &[]);
    server
        .cli(
            None,
            &[
                "mission",
                "start",
                &start_token,
                "--key",
                "old.pem",
                "--state",
                "old.json",
            ],
        )
        .success();
    let shown = server
        .cli(Some(&alice), &["mission", "show", &id, "--json"])
        .json();
    assert_eq!(shown["jkt"], OLD_V2_KEY_JKT);
}
