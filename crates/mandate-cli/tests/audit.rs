//! End to end: the audit log records every step, verifies, finds tampering
//! in the database file, and survives a crash under load.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use mandate_client::{Client, MissionAgent};
use mandate_core::wire::DecideRequest;
use mandate_testkit::{MissionPlan, TestServer};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

struct World {
    admin: String,
    gw: Client,
    gw_token: String,
    agent: MissionAgent,
}

async fn world(server: &TestServer) -> World {
    let plan = MissionPlan {
        goal: "Reconcile November invoices".into(),
        scope: "@id(\"read-billing\") permit(principal, action == Action::\"read\", resource) when { resource.hasTag(\"billing\") };".into(),
        boundaries: "@id(\"no-deletes\") forbid(principal, action == Action::\"delete\", resource);".into(),
        budget: 100_000,
    };
    let s = server.scenario(plan).await;
    World {
        admin: s.admin,
        gw: s.gateway,
        gw_token: s.gateway_token,
        agent: s.agent,
    }
}

fn decide_req(agent: &MissionAgent, action: &str, id: &str, tags: Value) -> DecideRequest {
    DecideRequest {
        credential: agent.credential().to_owned(),
        action: action.into(),
        resource: serde_json::from_value(json!({ "type": "Resource", "id": id, "tags": tags }))
            .unwrap(),
        context: serde_json::Map::new(),
        justification: None,
        required_trust: None,
    }
}

/// Runs `program` with Python's sqlite3 on `db` (`c`, the connection) and
/// `sql` (`sys.argv[2]`); returns what it printed.
fn python_sqlite(db: &Path, program: &str, sql: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import sqlite3,sys,json; c=sqlite3.connect(sys.argv[1]); {program}"),
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
    String::from_utf8(out.stdout).unwrap()
}

fn sqlite(db: &Path, sql: &str) {
    python_sqlite(db, "c.executescript(sys.argv[2]); c.commit()", sql);
}

#[tokio::test]
async fn every_step_is_recorded_verifies_and_tampering_is_named() {
    let mut server = TestServer::start(bin(), None);
    let w = world(&server).await;
    let mid = w.agent.mission_id().to_string();
    w.gw.decide(&decide_req(
        &w.agent,
        "read",
        "invoice-1",
        json!({ "billing": "nov" }),
    ))
    .await
    .unwrap();
    w.gw.decide(&decide_req(&w.agent, "delete", "invoice-1", json!({})))
        .await
        .unwrap();
    w.gw.decide(&decide_req(&w.agent, "write", "invoice-1", json!({})))
        .await
        .unwrap();
    Client::new(server.url())
        .unwrap()
        .with_token(&w.admin)
        .revoke("mission", &mid, Some("done"))
        .await
        .unwrap();

    // The revoked mission's pending approval request (the escalated write)
    // is expired by the sweeper within a second, and recorded; wait for it,
    // so that nothing is appended between this listing and the export.
    let mut page = Value::Null;
    for _ in 0..100 {
        page = server
            .cli(
                Some(&w.admin),
                &["audit", "list", "--limit", "100", "--json"],
            )
            .json();
        if page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "approval.expired")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let records = page["records"].as_array().unwrap();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    // The first admin, made by `mandate init`, is the first record.
    assert_eq!(records[0]["kind"], "principal.created");
    assert_eq!(records[0]["body"]["by"], "mandate init");
    for k in [
        "principal.created",
        "token.created",
        "agent.registered",
        "mission.created",
        "mission.started",
        "credential.issued",
        "decision",
        "revocation",
        "approval.expired",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let decisions: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").collect();
    let summary: Vec<(&str, &str)> = decisions
        .iter()
        .map(|r| {
            (
                r["body"]["decision"].as_str().unwrap(),
                r["body"]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("allow", "scope"),
            ("deny", "boundary"),
            ("escalate", "out_of_scope")
        ]
    );
    let allow = &decisions[0]["body"];
    assert_eq!(allow["principal"], "alice");
    assert_eq!(allow["agent"], "billing-bot");
    assert_eq!(allow["mission"], mid.as_str());
    assert_eq!(allow["enforcement_point"], "gateway");
    assert_eq!(
        allow["policies"],
        json!([format!("{mid}/scope/read-billing")])
    );
    assert!(allow["mission_s256"].as_str().unwrap().len() == 43);
    // The provenance of the allowed read, in plain language.
    let seq = decisions[0]["seq"].as_u64().unwrap().to_string();
    let story = server
        .cli(Some(&w.admin), &["audit", "explain", &seq])
        .success();
    let jti = allow["credential"].as_str().unwrap();
    for needle in [
        "`gateway` asked whether agent `billing-bot` may `read`",
        "principal `alice`",
        "\"Reconcile November invoices\"",
        &format!("credential {jti}"),
        allow["jkt"].as_str().unwrap(),
        &format!("Decision: allow (scope), determined by policies {mid}/scope/read-billing"),
        "is the one delegated",
    ] {
        assert!(story.contains(needle), "`{needle}` missing from:\n{story}");
    }
    let by_action = server
        .cli(
            Some(&w.admin),
            &[
                "audit",
                "list",
                "--principal",
                "alice",
                "--action",
                "delete",
                "--json",
            ],
        )
        .json();
    assert_eq!(by_action["records"].as_array().unwrap().len(), 1);

    // Filters work.
    let only = server
        .cli(
            Some(&w.admin),
            &[
                "audit",
                "list",
                "--decision",
                "deny",
                "--mission",
                &mid,
                "--json",
            ],
        )
        .json();
    assert_eq!(only["records"].as_array().unwrap().len(), 1);

    // No secret ever enters the log: no API token, start token or credential.
    let export = server.cli(Some(&w.admin), &["audit", "export"]).success();
    assert!(
        !export.contains("mdt_") && !export.contains("mst_") && !export.contains("eyJ"),
        "a secret leaked"
    );
    assert_eq!(export.lines().count(), records.len());

    let ok = server.cli(Some(&w.admin), &["audit", "verify"]).success();
    assert!(ok.contains("audit chain intact"), "{ok}");

    // Stop (sealing a checkpoint), then tamper with the file.
    assert!(server.stop());
    let data = server.data_dir();
    let db = data.join("mandate.db");
    let verify = || server.cli(None, &["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(verify().ok(), "{}", verify().stderr());

    // A filter column changed behind the log's back (it would hide the
    // denial from `--decision deny`) is a break, though the body is intact.
    let deny_seq = decisions[1]["seq"].as_u64().unwrap();
    sqlite(
        &db,
        &format!("UPDATE audit_events SET decision = 'allow' WHERE seq = {deny_seq};"),
    );
    let out = verify();
    assert!(!out.ok());
    assert!(
        out.stderr().contains(&format!(
            "broken at sequence {deny_seq}: the record's filter columns"
        )),
        "{}",
        out.stderr()
    );
    sqlite(
        &db,
        &format!("UPDATE audit_events SET decision = 'deny' WHERE seq = {deny_seq};"),
    );
    assert!(verify().ok(), "{}", verify().stderr());

    sqlite(
        &db,
        "UPDATE audit_events SET body = replace(body, '\"deny\"', '\"allow\"') WHERE kind = 'decision';",
    );
    let out = verify();
    assert!(!out.ok());
    assert!(
        out.stderr()
            .contains(&format!("broken at sequence {deny_seq}")),
        "{}",
        out.stderr()
    );
    sqlite(
        &db,
        "UPDATE audit_events SET body = replace(body, '\"allow\",\"enforcement_point\"', '\"deny\",\"enforcement_point\"') WHERE seq = (SELECT seq FROM audit_events WHERE kind='decision' ORDER BY seq LIMIT 1 OFFSET 1);",
    );

    let last: u64 = records.last().unwrap()["seq"].as_u64().unwrap();
    sqlite(
        &db,
        &format!("DELETE FROM audit_events WHERE seq = {};", last - 2),
    );
    let out = verify();
    assert!(
        out.stderr()
            .contains(&format!("broken at sequence {}", last - 2)),
        "{}",
        out.stderr()
    );
}

/// The load keeps running on other threads while the server is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_under_load_loses_no_answered_decision() {
    let mut server = TestServer::start(bin(), None);
    let w = world(&server).await;
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (gw, answered, stop) = (w.gw.clone(), answered.clone(), stop.clone());
        let req = decide_req(&w.agent, "read", "x", json!({ "billing": "nov" }));
        load.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 5_000 {
                let id = format!("w{worker}-{i}");
                let mut r = req.clone();
                r.resource = serde_json::from_value(
                    json!({ "type": "Resource", "id": id, "tags": { "billing": "nov" } }),
                )
                .unwrap();
                match gw.decide(&r).await {
                    Ok(resp) if resp.decision == mandate_core::Decision::Allow => {
                        answered.lock().unwrap().push(id)
                    }
                    Ok(_) | Err(_) => {}
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    server.crash_and_restart();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() > 20,
        "the load was too light to mean anything: {}",
        answered.len()
    );
    eprintln!("{} decisions answered around the crash", answered.len());

    // The chain verifies after the crash, and every answered decision is in it.
    let ok = server.cli(Some(&w.admin), &["audit", "verify"]).success();
    assert!(ok.contains("audit chain intact"), "{ok}");
    let export = server
        .cli(Some(&w.admin), &["audit", "export", "--limit", "100000"])
        .success();
    let logged: std::collections::HashSet<String> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "decision")
        .filter_map(|r| r["body"]["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} answered decisions are not in the log, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Retention: records exported and pruned through a signed checkpoint still
/// leave a log that verifies; a prefix deleted without a recorded prune is
/// tampering.
#[tokio::test]
async fn pruning_through_a_checkpoint_keeps_the_log_verifiable() {
    let mut server = TestServer::start(bin(), None);
    let w = world(&server).await;
    for i in 0..5 {
        w.gw.decide(&decide_req(
            &w.agent,
            "read",
            &format!("inv-{i}"),
            json!({ "billing": "nov" }),
        ))
        .await
        .unwrap();
    }
    // A clean stop seals a checkpoint at the head.
    assert!(server.restart());
    let page = server
        .cli(
            Some(&w.admin),
            &["audit", "list", "--limit", "1000", "--json"],
        )
        .json();
    let head = page["records"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();

    let bad = server.cli(
        Some(&w.admin),
        &["audit", "prune", "--through", &(head - 1).to_string()],
    );
    assert!(
        bad.stderr().contains("not a signed checkpoint"),
        "{}",
        bad.stderr()
    );

    let exported = server.cli(Some(&w.admin), &["audit", "export"]).success();
    assert_eq!(exported.lines().count() as u64, head);
    server
        .cli(
            Some(&w.admin),
            &["audit", "prune", "--through", &head.to_string()],
        )
        .success();
    // A fresh client: the old one's pooled connections died with the old process.
    let gw = Client::new(server.url()).unwrap().with_token(&w.gw_token);
    gw.decide(&decide_req(
        &w.agent,
        "read",
        "after-prune",
        json!({ "billing": "nov" }),
    ))
    .await
    .unwrap();
    let ok = server
        .cli(Some(&w.admin), &["audit", "verify", "--json"])
        .json();
    assert_eq!(ok["first"].as_u64().unwrap(), head + 1, "{ok}");

    // A second checkpoint (a restart), more records, a third (the stop);
    // then an attacker deletes a prefix ending at the second, with no prune
    // recorded: found, at sequence 1.
    assert!(server.restart());
    let gw = Client::new(server.url()).unwrap().with_token(&w.gw_token);
    gw.decide(&decide_req(
        &w.agent,
        "read",
        "after-restart",
        json!({ "billing": "nov" }),
    ))
    .await
    .unwrap();
    assert!(server.stop());
    let data = server.data_dir();
    let offline = || server.cli(None, &["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(offline().ok(), "{}", offline().stderr());
    let last: u64 = {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\
                 'select seq from audit_checkpoints order by seq desc limit 1 offset 1').fetchone()[0])",
            ])
            .arg(data.join("mandate.db"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    assert!(last > head + 1);
    sqlite(
        &data.join("mandate.db"),
        &format!("DELETE FROM audit_events WHERE seq <= {last};"),
    );
    let out = offline();
    assert!(!out.ok());
    assert!(
        out.stderr().contains("broken at sequence 1")
            && out.stderr().contains("no signed checkpoint states a prune"),
        "{}",
        out.stderr()
    );
}

/// The benchmark-only mode without fsync says so, loudly, where an operator
/// looks; the default is durable.
#[tokio::test]
async fn the_non_durable_benchmark_mode_is_never_silent() {
    let server = TestServer::start(bin(), Some("unsafe_non_durable_benchmark_mode = true\n"));
    let health: Value = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["durable"], false);
    assert!(health["warning"].as_str().unwrap().contains("non-durable"));
    let normal = TestServer::start(bin(), None);
    let health: Value = reqwest::get(format!("{}/healthz", normal.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({ "status": "ok" }));
}

/// Rows of `sql` (one JSON array per row), read with Python's sqlite3.
fn sqlite_rows(db: &Path, sql: &str) -> Vec<Value> {
    python_sqlite(
        db,
        "[print(json.dumps(list(r))) for r in c.execute(sys.argv[2])]",
        sql,
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// Recomputes every record's chain hash from genesis, as a database writer
/// with no key can: the chain alone then looks intact.
fn rechain(db: &Path) {
    let mut prev = mandate_core::GENESIS.to_owned();
    let mut sql = String::new();
    for row in sqlite_rows(
        db,
        "SELECT seq, time, kind, body FROM audit_events ORDER BY seq",
    ) {
        let (seq, time) = (row[0].as_u64().unwrap(), row[1].as_u64().unwrap());
        let body: Value = serde_json::from_str(row[3].as_str().unwrap()).unwrap();
        let hash =
            mandate_core::chain_hash(&prev, seq, time, row[2].as_str().unwrap(), &body).unwrap();
        sql.push_str(&format!(
            "UPDATE audit_events SET hash = '{hash}' WHERE seq = {seq};"
        ));
        prev = hash;
    }
    sqlite(db, &sql);
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// `mandate serve` on `data`: whether it started (it is then stopped), and
/// what it said on stderr if it did not.
fn try_serve(data: &Path) -> (bool, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("mandate listening") {
                let _ = tx.send(());
            }
        }
    });
    let started = rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (started, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The forged history of issue 15, on a copy of a real data dir: delete the
/// checkpoints, edit a decision from deny to allow, re-chain the later
/// hashes. Verification names the break (with or without the checkpoint
/// file), a server refuses to start on it and signs nothing over it, and a
/// cut tail is caught by the checkpoint file.
#[tokio::test]
async fn a_database_writer_cannot_rewrite_the_log_undetected() {
    let mut server = TestServer::start(bin(), None);
    let w = world(&server).await;
    w.gw.decide(&decide_req(
        &w.agent,
        "read",
        "invoice-1",
        json!({ "billing": "nov" }),
    ))
    .await
    .unwrap();
    let denied =
        w.gw.decide(&decide_req(&w.agent, "delete", "invoice-1", json!({})))
            .await
            .unwrap();
    assert_eq!(denied.decision, mandate_core::Decision::Deny);
    let checkpoints = Client::new(server.url())
        .unwrap()
        .with_token(&w.gw_token)
        .audit_checkpoints(None)
        .await
        .unwrap();
    // Any principal (here the enforcement point's) reads the checkpoints:
    // the genesis one, the one `mandate init` sealed, and so on.
    assert!(
        checkpoints["checkpoints"].as_array().unwrap().len() >= 2,
        "{checkpoints}"
    );
    assert!(server.stop());
    let data = server.data_dir();
    let kept = data.join("audit-checkpoints.log");
    assert!(std::fs::read_to_string(&kept).unwrap().lines().count() >= 2);
    let verify = |dir: &Path, extra: &[&Path]| {
        let mut args = vec!["audit", "verify", "--data", dir.to_str().unwrap()];
        for e in extra {
            args.extend(["--checkpoints", e.to_str().unwrap()]);
        }
        server.cli(None, &args)
    };
    assert!(verify(&data, &[]).ok(), "{}", verify(&data, &[]).stderr());

    let forge = |name: &str| {
        let copy = server.scratch().join(name);
        copy_dir(&data, &copy);
        let db = copy.join("mandate.db");
        sqlite(
            &db,
            "DELETE FROM audit_checkpoints; DELETE FROM audit_seal; UPDATE audit_events SET body = replace(body, '\"deny\"', '\"allow\"') WHERE kind = 'decision';",
        );
        rechain(&db);
        copy
    };

    // The chain alone is consistent again, but records no signed checkpoint
    // covers are themselves a break (each commit is sealed)…
    let forged = forge("forged-a");
    std::fs::remove_file(forged.join("audit-checkpoints.log")).unwrap();
    let out = verify(&forged, &[]);
    assert!(!out.ok());
    assert!(
        out.stderr().contains("not covered by a signed checkpoint"),
        "{}",
        out.stderr()
    );
    // …and the checkpoints kept outside the database disagree with it.
    let out = verify(&forged, &[&kept]);
    assert!(!out.ok());
    assert!(
        out.stderr()
            .contains("does not match the signed checkpoint"),
        "{}",
        out.stderr()
    );

    // With the data dir's own checkpoint file in place, verification and
    // the server both refuse, and no checkpoint is signed over the forgery.
    let forged = forge("forged-b");
    let out = verify(&forged, &[]);
    assert!(!out.ok());
    assert!(
        out.stderr()
            .contains("does not match the signed checkpoint"),
        "{}",
        out.stderr()
    );
    let (started, said) = try_serve(&forged);
    assert!(!started, "a server started on a forged log");
    assert!(said.contains("the audit log does not verify"), "{said}");
    assert!(
        said.contains("does not match its checkpoint in the checkpoint file"),
        "{said}"
    );
    let db = forged.join("mandate.db");
    assert_eq!(
        sqlite_rows(&db, "SELECT count(*) FROM audit_checkpoints")[0][0],
        0
    );

    // Checkpoints deleted and the tail cut off: the file still covers it.
    let cut = server.scratch().join("cut");
    copy_dir(&data, &cut);
    let db = cut.join("mandate.db");
    sqlite(
        &db,
        "DELETE FROM audit_checkpoints; DELETE FROM audit_seal; DELETE FROM audit_events WHERE seq > (SELECT max(seq) - 3 FROM audit_events);",
    );
    let out = verify(&cut, &[]);
    assert!(!out.ok());
    assert!(out.stderr().contains("truncated"), "{}", out.stderr());
    let (started, said) = try_serve(&cut);
    assert!(!started);
    assert!(said.contains("records were removed"), "{said}");

    // The oldest records deleted, nothing else touched: no signed prune
    // excuses it, so no server starts on it either.
    let headless = server.scratch().join("headless");
    copy_dir(&data, &headless);
    sqlite(
        &headless.join("mandate.db"),
        "DELETE FROM audit_events WHERE seq <= 2;",
    );
    let (started, said) = try_serve(&headless);
    assert!(!started);
    assert!(said.contains("records 1..=2 are missing"), "{said}");

    // The untouched data dir still verifies and serves.
    assert!(verify(&data, &[&kept]).ok());
    assert!(try_serve(&data).0);
}

/// A rewrite under a running server: the writer finds its head changed in
/// the database and refuses every event (fail closed) rather than chain on
/// or sign over it.
#[tokio::test]
async fn a_rewrite_under_a_running_server_stops_the_log() {
    let server = TestServer::start(bin(), None);
    let w = world(&server).await;
    w.gw.decide(&decide_req(&w.agent, "delete", "invoice-1", json!({})))
        .await
        .unwrap();
    let db = server.data_dir().join("mandate.db");
    sqlite(
        &db,
        "UPDATE audit_events SET body = replace(body, '\"deny\"', '\"allow\"') WHERE kind = 'decision';",
    );
    rechain(&db);
    assert_log_stopped(&server, &w).await;
}

/// The log refuses records: the next decision is refused (no decision
/// without its record) and the server says it is failing.
async fn assert_log_stopped(server: &TestServer, w: &World) {
    let err =
        w.gw.decide(&decide_req(
            &w.agent,
            "read",
            "invoice-1",
            json!({ "billing": "nov" }),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit_unavailable"), "{err}");
    let health: Value = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "failing", "{health}");
}

/// A witness (`[audit.witness]`) receives each checkpoint as it is signed,
/// at the configured cadence, and its copy is one a log can be verified
/// against: the server's log checks out against it, a rewritten one does
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_keeps_its_own_copy_of_the_checkpoints() {
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/witness",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let log = Arc::clone(&log);
            async move {
                log.lock()
                    .unwrap()
                    .push(v["checkpoint"].as_str().unwrap().to_owned());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = format!(
        "[audit]\ncheckpoint_every = 4\ncheckpoint_secs = 1\n\n[audit.witness]\nurl = \"http://{addr}/witness\"\n"
    );
    let mut server = TestServer::start(bin(), Some(&config));
    let w = world(&server).await;
    for i in 0..6 {
        w.gw.decide(&decide_req(
            &w.agent,
            "read",
            &format!("invoice-{i}"),
            json!({ "billing": "nov" }),
        ))
        .await
        .unwrap();
    }
    // Every fourth record is sealed at once; the rest within a second.
    let head = || {
        let page = server
            .cli(
                Some(&w.admin),
                &["audit", "list", "--limit", "1000", "--json"],
            )
            .json();
        page["records"].as_array().unwrap().last().unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let last = head();
    let jwks = w.gw.jwks().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let witnessed = loop {
        let seqs: Vec<u64> = got
            .lock()
            .unwrap()
            .iter()
            .map(|t| mandate_core::verify_checkpoint(t, &jwks, None).unwrap().seq)
            .collect();
        if seqs.contains(&last) {
            break seqs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not witnessed: {seqs:?}, head {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(witnessed.iter().any(|s| s % 4 == 0), "{witnessed:?}");
    let copy = server.scratch().join("witnessed.log");
    std::fs::write(&copy, got.lock().unwrap().join("\n")).unwrap();
    // Against the running server, verified by the CLI itself.
    let out = server.cli(
        Some(&w.admin),
        &["audit", "verify", "--checkpoints", copy.to_str().unwrap()],
    );
    assert!(out.ok(), "{}", out.stderr());
    // Offline, after a rewrite with the data dir's own file gone: the
    // witness's copy names the break.
    assert!(server.stop());
    let data = server.data_dir();
    std::fs::remove_file(data.join("audit-checkpoints.log")).unwrap();
    let db = data.join("mandate.db");
    sqlite(
        &db,
        "DELETE FROM audit_checkpoints; DELETE FROM audit_seal; UPDATE audit_events SET body = replace(body, 'invoice-1', 'invoice-X');",
    );
    rechain(&db);
    let out = server.cli(
        None,
        &[
            "audit",
            "verify",
            "--data",
            data.to_str().unwrap(),
            "--checkpoints",
            copy.to_str().unwrap(),
        ],
    );
    assert!(!out.ok());
    assert!(
        out.stderr()
            .contains("does not match the signed checkpoint"),
        "{}",
        out.stderr()
    );
}

/// Appends a record chained on the stored head, as a database writer with
/// no key can.
fn append_forged(db: &Path, kind: &str, body: &Value) -> u64 {
    let head = &sqlite_rows(
        db,
        "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
    )[0];
    let seq = head[0].as_u64().unwrap() + 1;
    let time = 2_000_000_000;
    let hash = mandate_core::chain_hash(head[1].as_str().unwrap(), seq, time, kind, body).unwrap();
    let text = serde_json::to_string(body).unwrap();
    sqlite(
        db,
        &format!(
            "INSERT INTO audit_events (seq, time, kind, body, hash) VALUES ({seq}, {time}, '{kind}', '{text}', '{hash}');"
        ),
    );
    seq
}

/// Records added without the authority key — a forged approval appended
/// under a running server, a forged prune record on a stopped one — are
/// never sealed: the running server refuses every event, verification
/// names them, and no server starts on them.
#[tokio::test]
async fn records_added_without_the_key_are_never_sealed() {
    let mut server = TestServer::start(bin(), None);
    let w = world(&server).await;
    w.gw.decide(&decide_req(&w.agent, "delete", "invoice-1", json!({})))
        .await
        .unwrap();
    let data = server.data_dir();
    let copy = server.scratch().join("before");
    // A copy while it runs (every commit is sealed, so the copy is too).
    copy_dir(&data, &copy);
    let db = data.join("mandate.db");
    let forged = append_forged(
        &db,
        "approval.approved",
        &json!({ "approval": "apr_00000000000000000000000000000000", "by": "admin" }),
    );
    assert_log_stopped(&server, &w).await;
    assert!(server.stop());
    let out = server.cli(None, &["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(!out.ok());
    assert!(
        out.stderr()
            .contains(&format!("records {forged}..={forged} are not covered")),
        "{}",
        out.stderr()
    );
    let (started, said) = try_serve(&data);
    assert!(!started);
    assert!(
        said.contains("not covered by a signed checkpoint"),
        "{said}"
    );

    // A prune record anyone can write, and the prefix deleted: only a
    // signed checkpoint stating the prune excuses a missing prefix.
    let db = copy.join("mandate.db");
    assert!(
        server
            .cli(None, &["audit", "verify", "--data", copy.to_str().unwrap()])
            .ok()
    );
    append_forged(&db, "audit.pruned", &json!({ "through": 3, "by": "admin" }));
    sqlite(&db, "DELETE FROM audit_events WHERE seq <= 3;");
    let out = server.cli(None, &["audit", "verify", "--data", copy.to_str().unwrap()]);
    assert!(!out.ok());
    assert!(
        out.stderr().contains("records 1..=3 are missing"),
        "{}",
        out.stderr()
    );
    assert!(!try_serve(&copy).0);
}
