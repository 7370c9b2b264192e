//! The audit log at scale (issue 23, item 4; ADR 0018): a log of
//! `MANDATE_BENCH_RECORDS` (default 10,000,000) realistic records, then
//! filtered lists and explains timed at the server, and append throughput
//! beside an empty log's.
//!
//! `scripts/bench-audit-scale.sh` runs it on SQLite and on PostgreSQL;
//! alone: `cargo bench -p mandate-cli --bench audit_scale` with
//! - `MANDATE_BENCH_BACKEND`: `sqlite` (default) or `postgres` (a schema of
//!   its own in `MANDATE_BENCH_DATABASE_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/test`, dropped at the end);
//! - `MANDATE_BENCH_RECORDS`: the size of the log;
//! - `MANDATE_BENCH_DIR`: where the data dirs go (default the target's tmp);
//!   the SQLite log takes about 1.3 KB a record with its indexes.
//!
//! What it does:
//! 1. `mandate init` a data dir, then fills its log through the store's own
//!    audit sink (`AuditSink::append`, which fills the indexed columns), in
//!    groups of 1,000 records, each group sealed and a checkpoint at every
//!    multiple of 1,000 in the database and the checkpoint file, signed with
//!    the data dir's authority key: the log `mandate serve` verifies on
//!    start. Then re-reads the whole log and re-hashes it from genesis (the
//!    chain verifies), page by page.
//! 2. Starts `mandate serve` (release binary) on it and times, over HTTP on
//!    loopback, `GET /v1/audit` with `mission=`, `decision=escalate` (from
//!    the start and from the middle of the log), `agent=&action=`, and
//!    `GET /v1/audit/{seq}/explain` of an escalated decision (its mission,
//!    credential and approval looked up) and of an allowed one: 5 warm-up
//!    requests, then 50 timed; p50, p99 and max.
//! 3. Append throughput: groups of 64 records (each commit sealed and
//!    durable, as the writer commits), 4 seconds, on an empty log (the same
//!    schema and indexes) and on the full one, 3 rounds alternating;
//!    medians and their ratio.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark: a failed step is a failed run"
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_core::{AuditRecord, AuthorityKey, Cadence, ChainHead, sign_checkpoint};
use mandate_store::{AuditSink, PostgresStore, SqliteStore, Store};

const ISSUER: &str = "http://127.0.0.1";
/// Missions active at once; each has about 1,000 records.
const ACTIVE: u64 = 100;
const ACTIONS: [&str; 8] = [
    "read",
    "list",
    "query",
    "write",
    "refund",
    "send_email",
    "deploy",
    "delete",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed when dropped.
struct Proc(std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A stable pseudo-random number for `i` (splitmix64).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mission_id(m: u64) -> String {
    format!("msn_{:032x}", mix(m) as u128 | (u128::from(m) << 64))
}

fn principal(m: u64) -> String {
    format!("principal-{:02}", m % 50)
}

fn agent(m: u64) -> String {
    format!("agent-{:03}", m % 500)
}

fn digest(i: u64, salt: u64) -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    for (k, chunk) in b.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(i ^ (salt << 40) ^ (k as u64) << 56).to_le_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Writes a realistic log: missions delegated, started and credentialed,
/// then their decisions (gateway and `/v1/decide`), 90% allowed, 8% denied,
/// 2% escalated (each with its approval request, most approved), a
/// credential refresh every 250 decisions of a mission.
struct Workload {
    total: u64,
    missions: u64,
    /// Decisions written so far.
    decisions: u64,
    /// Per mission: decisions so far (0: not created yet).
    seen: Vec<u32>,
    approvals: u64,
}

impl Workload {
    fn new(total: u64) -> Self {
        let missions = (total / 1_000).max(ACTIVE + 1);
        Self {
            total,
            missions,
            decisions: 0,
            seen: vec![0; usize::try_from(missions).unwrap()],
            approvals: 0,
        }
    }

    /// The next records (one decision and what it needs first).
    fn next(&mut self, out: &mut Vec<(&'static str, serde_json::Value)>) {
        let i = self.decisions;
        self.decisions += 1;
        // Past `total` (the append runs), the last missions go on.
        let window = (i * (self.missions - ACTIVE) / self.total.max(1)).min(self.missions - ACTIVE);
        let m = window + mix(i) % ACTIVE;
        let id = mission_id(m);
        let s256 = digest(m, 1);
        let (p, a) = (principal(m), agent(m));
        let n = self.seen[usize::try_from(m).unwrap()];
        let credential = format!("cred_{:016x}", mix(m * 1_000 + u64::from(n / 250)));
        let jkt = digest(m, 2);
        if n == 0 {
            out.push((
                "mission.created",
                serde_json::json!({
                    "mission": id, "mission_s256": s256, "principal": p, "agent": a,
                    "goal": format!("Reconcile the invoices of account {m} and refund duplicates"),
                    "expires_at": 1_900_000_000u64, "budget": 5_000, "out_of_scope": "escalate",
                }),
            ));
            out.push((
                "mission.started",
                serde_json::json!({
                    "mission": id, "mission_s256": s256, "principal": p, "agent": a, "jkt": jkt,
                }),
            ));
        }
        if n.is_multiple_of(250) {
            out.push(("credential.issued", serde_json::json!({
                "mission": id, "mission_s256": s256, "principal": p, "agent": a,
                "credential": credential, "jkt": jkt, "iat": 1_800_000_000u64, "exp": 1_800_000_600u64,
            })));
        }
        self.seen[usize::try_from(m).unwrap()] = n + 1;
        let action = ACTIONS[usize::try_from(mix(i ^ 7) % 8).unwrap()];
        let roll = mix(i ^ 11) % 100;
        let (decision, code) = match roll {
            0..=1 => ("escalate", "approval_required"),
            2..=9 => ("deny", "forbidden"),
            _ => ("allow", "scope"),
        };
        let mut body = serde_json::json!({
            "enforcement_point": if i.is_multiple_of(3) { "billing-service" } else { "gateway" },
            "principal": p, "agent": a, "mission": id, "mission_s256": s256,
            "credential": credential, "jkt": jkt, "action": action,
            "resource": { "type": "Invoice", "id": format!("inv-{}", mix(i) % 1_000_000), "tags": { "account": format!("acct-{m}") } },
            "context_digest": digest(i, 3), "decision": decision, "code": code,
            "policies": [format!("{id}/scope/{action}-invoices")],
            "grant": null, "approval_id": null, "budget_used": n,
        });
        let o = body.as_object_mut().unwrap();
        if !i.is_multiple_of(3) {
            o.insert("route".into(), "billing".into());
            o.insert("method".into(), "POST".into());
            o.insert(
                "path".into(),
                format!("/v1/invoices/inv-{}/{action}", mix(i) % 1_000_000).into(),
            );
            o.insert("query_digest".into(), digest(i, 4).into());
            o.insert("body_digest".into(), digest(i, 5).into());
        }
        if decision == "escalate" {
            self.approvals += 1;
            let approval = format!("apr_{:016x}", mix(self.approvals));
            o.insert("approval_id".into(), approval.clone().into());
            let subject = serde_json::json!({
                "approval": approval, "mission": id, "mission_s256": s256, "principal": p,
                "agent": a, "action": action, "resource": { "type": "Invoice", "id": "inv-1" },
                "request_digest": digest(i, 6),
            });
            out.push(("decision", body));
            let mut requested = subject.clone();
            requested.as_object_mut().unwrap().insert(
                "justification".into(),
                "the customer was charged twice".into(),
            );
            out.push(("approval.requested", requested));
            if !self.approvals.is_multiple_of(4) {
                let mut approved = subject;
                let ao = approved.as_object_mut().unwrap();
                ao.insert("by".into(), p.into());
                ao.insert("reason".into(), "ok".into());
                ao.insert(
                    "grant".into(),
                    format!("grt_{:016x}", mix(self.approvals ^ 9)).into(),
                );
                ao.insert("scope".into(), "once".into());
                out.push(("approval.approved", approved));
            }
            return;
        }
        out.push(("decision", body));
    }
}

/// The log's writer for the benchmark: appends chained records through the
/// store's audit sink, seals each group and checkpoints every 1,000 in the
/// database and the checkpoint file, as the server's writer does.
struct Filler {
    sink: Box<dyn AuditSink>,
    head: ChainHead,
    key: Arc<AuthorityKey>,
    file: Option<std::fs::File>,
    time: u64,
}

impl Filler {
    fn new(store: &dyn Store, key: Arc<AuthorityKey>, file: Option<&Path>, time: u64) -> Self {
        let mut sink = store.audit_sink().unwrap();
        let head = sink.head().unwrap();
        let file = file.map(|p| {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .unwrap()
        });
        Self {
            sink,
            head,
            key,
            file,
            time,
        }
    }

    /// One group: every record, then the seal, committed (durable).
    fn group(&mut self, bodies: &mut Vec<(&'static str, serde_json::Value)>, per_second: u64) {
        let start = self.sink.begin().unwrap();
        assert_eq!(start, self.head, "someone else appended");
        let mut lines = Vec::new();
        for (kind, body) in bodies.drain(..) {
            let r = self
                .head
                .append(self.time / per_second, kind, body)
                .unwrap();
            self.time += 1;
            self.sink.append(&r).unwrap();
            if r.seq.is_multiple_of(1_000) {
                let token = self.checkpoint();
                self.sink.add_checkpoint(r.seq, &token).unwrap();
                lines.push(token);
            }
        }
        let seal = self.checkpoint();
        self.sink.seal_head(self.head.seq, &seal).unwrap();
        self.sink.commit().unwrap();
        if let Some(f) = &mut self.file {
            for t in lines {
                writeln!(f, "{t}").unwrap();
            }
            f.sync_data().unwrap();
        }
    }

    fn checkpoint(&self) -> String {
        sign_checkpoint(
            &self.key,
            ISSUER,
            &self.head,
            self.time / 50,
            Cadence::default(),
        )
        .unwrap()
    }
}

struct Setup {
    store: Arc<dyn Store>,
    data: PathBuf,
    schema: Option<String>,
}

fn database_url() -> String {
    env_or(
        "MANDATE_BENCH_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
}

fn psql(sql: &str) {
    let ok = Command::new("psql")
        .args([
            &database_url(),
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("SET client_min_messages = warning; {sql}"),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "psql failed: {sql}");
}

/// `mandate init` on a fresh data dir of `backend`; returns the admin token.
async fn init(root: &Path, name: &str, postgres: bool) -> (Setup, String) {
    let data = root.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let schema = postgres.then(|| format!("bench_audit_{}_{name}", std::process::id()));
    if let Some(schema) = &schema {
        psql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ));
        let base = database_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        std::fs::write(
            data.join("mandate.toml"),
            format!(
                "database_url = \"{base}{sep}options=-c%20search_path%3D{schema}\"\npublic_url = \"{ISSUER}\"\n"
            ),
        )
        .unwrap();
    } else {
        std::fs::write(
            data.join("mandate.toml"),
            format!("public_url = \"{ISSUER}\"\n"),
        )
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["init", "--json", "--data"])
        .arg(&data)
        .env("MANDATE_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let store: Arc<dyn Store> = match &schema {
        Some(s) => Arc::new(
            PostgresStore::connect_in_schema(&database_url(), s)
                .await
                .unwrap(),
        ),
        None => Arc::new(SqliteStore::open(&data.join("mandate.db")).await.unwrap()),
    };
    (
        Setup {
            store,
            data,
            schema,
        },
        admin["token"].as_str().unwrap().to_owned(),
    )
}

fn key_of(data: &Path) -> Arc<AuthorityKey> {
    let pem = std::fs::read_to_string(data.join("authority.key")).unwrap();
    Arc::new(AuthorityKey::from_pkcs8_pem(&pem).unwrap())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Re-reads the whole log and re-hashes it from genesis.
async fn rehash(store: &dyn Store) -> u64 {
    let mut head = ChainHead::genesis();
    let mut after = 0;
    loop {
        let page = store.audit_records(after, 20_000).await.unwrap();
        let Some(last) = page.last().map(|r| r.seq) else {
            return head.seq;
        };
        for r in page {
            let AuditRecord {
                seq,
                time,
                kind,
                body,
                hash,
            } = r;
            let again = head.append(time, &kind, body).unwrap();
            assert_eq!(
                (again.seq, &again.hash),
                (seq, &hash),
                "the chain breaks at {seq}"
            );
        }
        after = last;
    }
}

/// Times `n` requests after 5 warm-ups: (p50, p99, max) in ms; checks each
/// answer is 200 with what `check` wants.
async fn time_get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> (f64, f64, f64) {
    let mut ms = Vec::new();
    for k in 0..55 {
        let t = Instant::now();
        let resp = http.get(url).bearer_auth(token).send().await.unwrap();
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap();
        let took = t.elapsed().as_secs_f64() * 1e3;
        assert!(
            status.is_success() && check(&body),
            "{url}: {status} {body}"
        );
        if k >= 5 {
            ms.push(took);
        }
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 99 / 100], ms[ms.len() - 1])
}

/// Durable appends in groups of 64 for `secs`: records per second.
fn throughput(f: &mut Filler, w: &mut Workload, secs: f64) -> f64 {
    let mut bodies = Vec::new();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        while bodies.len() < 64 {
            w.next(&mut bodies);
        }
        n += bodies.len() as u64;
        f.group(&mut bodies, 50);
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let backend = env_or("MANDATE_BENCH_BACKEND", "sqlite");
    let postgres = match backend.as_str() {
        "sqlite" => false,
        "postgres" => true,
        other => panic!("MANDATE_BENCH_BACKEND is `sqlite` or `postgres`, not `{other}`"),
    };
    let total: u64 = env_or("MANDATE_BENCH_RECORDS", "10000000").parse().unwrap();
    let root = PathBuf::from(env_or("MANDATE_BENCH_DIR", env!("CARGO_TARGET_TMPDIR")));
    let root = tempfile::tempdir_in(root).unwrap();
    println!(
        "audit_scale: {backend}, {total} records, in {}",
        root.path().display()
    );

    // 1. Fill.
    let (full, token) = init(root.path(), "full", postgres).await;
    let key = key_of(&full.data);
    let file = full.data.join("audit-checkpoints.log");
    let start_seq = full.store.audit_head().await.unwrap().seq;
    let per_second = 50;
    let t0 = (now() - total / per_second - 3_600) * per_second;
    let mut filler = Filler::new(full.store.as_ref(), Arc::clone(&key), Some(&file), t0);
    let mut w = Workload::new(total);
    let mut bodies = Vec::new();
    let t = Instant::now();
    let mut last_report = Instant::now();
    while filler.head.seq < start_seq + total {
        // Groups end at multiples of 1,000 (one checkpoint each).
        let room = 1_000 - (filler.head.seq % 1_000);
        while (bodies.len() as u64) < room {
            w.next(&mut bodies);
        }
        let mut rest = bodies.split_off(usize::try_from(room).unwrap());
        filler.group(&mut bodies, per_second);
        bodies.append(&mut rest);
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            let done = filler.head.seq - start_seq;
            println!(
                "  filled {done} ({:.0} records/s)",
                done as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    if !bodies.is_empty() {
        filler.group(&mut bodies, per_second);
    }
    let filled = filler.head.seq;
    let fill_secs = t.elapsed().as_secs_f64();
    println!(
        "fill: {filled} records in {fill_secs:.0} s ({:.0} records/s)",
        (filled - start_seq) as f64 / fill_secs
    );
    drop(filler);
    if postgres {
        psql(&format!(
            "SET search_path = {}; ANALYZE audit_events",
            full.schema.as_deref().unwrap()
        ));
    }
    let t = Instant::now();
    assert_eq!(rehash(full.store.as_ref()).await, filled);
    println!(
        "chain: re-hashed from genesis, {filled} records intact ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    let size = match &full.schema {
        Some(s) => {
            let out = Command::new("psql")
                .args([
                    &database_url(),
                    "-Atc",
                    &format!("SELECT pg_size_pretty(pg_total_relation_size('{s}.audit_events')) || ' (table ' || pg_size_pretty(pg_relation_size('{s}.audit_events')) || ')'"),
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
        None => format!(
            "{} MB",
            std::fs::metadata(full.data.join("mandate.db"))
                .unwrap()
                .len()
                / 1_000_000
        ),
    };
    println!("size: {size}");

    // 2. At the server.
    let port = free_port();
    let started = Instant::now();
    let _server = Proc(
        Command::new(env!("CARGO_BIN_EXE_mandate"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&full.data)
            .env("MANDATE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    loop {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("server: up in {:.1} s", started.elapsed().as_secs_f64());
    let some = |b: &serde_json::Value| b["records"].as_array().is_some_and(|a| !a.is_empty());
    // A mission from the middle of the log, an agent and an action.
    let mid = w.missions / 2;
    let escalated = full
        .store
        .audit_query(
            &mandate_store::AuditFilter {
                decision: Some("escalate".into()),
                ..Default::default()
            },
            mandate_store::AuditPage::After(filled - filled / 10),
            1,
        )
        .await
        .unwrap()
        .remove(0)
        .seq;
    let allowed = full
        .store
        .audit_query(
            &mandate_store::AuditFilter {
                decision: Some("allow".into()),
                ..Default::default()
            },
            mandate_store::AuditPage::After(filled / 3),
            1,
        )
        .await
        .unwrap()
        .remove(0)
        .seq;
    let queries = [
        (
            "list mission=M",
            format!("/v1/audit?mission={}", mission_id(mid)),
        ),
        (
            "list decision=escalate",
            "/v1/audit?decision=escalate".to_owned(),
        ),
        (
            "list decision=escalate after=N/2",
            format!("/v1/audit?decision=escalate&after={}", filled / 2),
        ),
        (
            "list agent=A&action=refund",
            format!("/v1/audit?agent={}&action=refund", agent(mid)),
        ),
        (
            "list mission=M&decision=deny",
            format!("/v1/audit?mission={}&decision=deny", mission_id(mid)),
        ),
    ];
    println!(
        "{:<38} {:>8} {:>8} {:>8}  (ms, 50 requests)",
        "", "p50", "p99", "max"
    );
    for (name, path) in &queries {
        let (p50, p99, max) = time_get(&http, &format!("{base}{path}"), &token, some).await;
        println!("{name:<38} {p50:>8.2} {p99:>8.2} {max:>8.2}");
    }
    for (name, seq) in [
        ("explain escalated decision", escalated),
        ("explain allowed decision", allowed),
    ] {
        let (p50, p99, max) = time_get(
            &http,
            &format!("{base}/v1/audit/{seq}/explain"),
            &token,
            |b| b["related"].as_array().is_some_and(|a| a.len() >= 2),
        )
        .await;
        println!("{name:<38} {p50:>8.2} {p99:>8.2} {max:>8.2}");
    }
    drop(_server);

    // 3. Append throughput, empty log against the full one.
    let (empty, _) = init(root.path(), "empty", postgres).await;
    let mut on_empty = Filler::new(empty.store.as_ref(), key_of(&empty.data), None, now() * 50);
    let mut on_full = Filler::new(full.store.as_ref(), key, Some(&file), now() * 50);
    let (mut we, mut wf) = (Workload::new(1_000_000), Workload::new(total));
    wf.decisions = w.decisions;
    wf.seen = w.seen.clone();
    let (mut e, mut f) = (Vec::new(), Vec::new());
    throughput(&mut on_empty, &mut we, 1.0);
    throughput(&mut on_full, &mut wf, 1.0);
    for _ in 0..3 {
        e.push(throughput(&mut on_empty, &mut we, 4.0));
        f.push(throughput(&mut on_full, &mut wf, 4.0));
    }
    let (e, f) = (median(e), median(f));
    println!(
        "append (groups of 64, durable): empty log {e:.0} records/s, {filled} records {f:.0} records/s, ratio {:.2} (goal >= 0.80)",
        f / e
    );
    drop((on_empty, on_full));
    for s in [&full, &empty] {
        if let Some(schema) = &s.schema {
            psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}
