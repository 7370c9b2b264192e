//! Mandate on PostgreSQL beside Mandate on SQLite, in one run on this
//! machine: `/v1/decide` and the gateway's full path (p50 at one
//! connection, throughput at 32), and how long a revocation on one node
//! takes to hold on another (ADR 0017, docs/scale-out.md).
//!
//! Run with `scripts/bench-nodes.sh` (needs the PostgreSQL the tests use:
//! `MANDATE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; works in a schema of its own,
//! dropped at the end).
//!
//! Goals (issue 23): on PostgreSQL, p50 within 1.5× of SQLite's and
//! throughput at 32 connections ≥ 0.7× SQLite's, for both front doors;
//! a revocation refused on another node within 1 s at p99.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark harness: it reports on stdout and stops on any failure"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{Proc, free_port, median, upstream};

use mandate_client::{Client, MissionAgent};
use mandate_core::MissionKey;
use mandate_core::wire::{CreateMissionRequest, DecideRequest};
use mandate_testkit::postgres::Schema;
use mandate_testkit::signed_headers;
use prometheus_parse::{Sample, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WARMUP: usize = 200;
const SAMPLES: usize = 1_500;
const ROUNDS: usize = 3;
const CONNECTIONS: usize = 32;
const THROUGHPUT_SECS: u64 = 4;
const MISSIONS: usize = 32;
const PROPAGATION_SAMPLES: usize = 50;

const SCOPE: &str = "permit(principal, action == Action::\"read\", resource is Route);";

fn config(upstream: &str, database: Option<&str>, public_url: Option<&str>) -> String {
    let mut c = String::new();
    if let Some(d) = database {
        c.push_str(&format!("database_url = {d:?}\n"));
    }
    if let Some(u) = public_url {
        c.push_str(&format!("public_url = {u:?}\n"));
    }
    c.push_str(&format!(
        "\n[[routes]]\nname = \"bench\"\nupstream = \"{upstream}\"\n\n\
         [[routes.rules]]\nmethod = \"GET\"\npath = \"/{{*rest}}\"\naction = \"read\"\n"
    ));
    c
}

/// One Mandate, its missions' keys and credentials, and its admin token.
struct Target {
    name: &'static str,
    _proc: Proc,
    base: String,
    signers: Vec<(MissionKey, String)>,
    admin: String,
}

async fn target(name: &'static str, data: &Path, config: &str) -> Target {
    let (proc, base, saved, admin) =
        common::mandate_with_admin(data, config, SCOPE, MISSIONS).await;
    let signers = saved
        .into_iter()
        .map(|m| {
            (
                MissionKey::from_pkcs8_pem(&m.key_pem).unwrap(),
                m.credential,
            )
        })
        .collect();
    Target {
        name,
        _proc: proc,
        base,
        signers,
        admin,
    }
}

/// A request ready to send: URL, headers, and a JSON body for `/v1/decide`.
type Ready = (String, Vec<(String, String)>, Option<Arc<String>>);

fn gateway_requests(t: &Target, n: usize, tag: &str) -> Vec<Ready> {
    let authority = t.base.trim_start_matches("http://");
    (0..n)
        .map(|i| {
            let path = format!("/gw/bench/item/{tag}-{i}");
            let (key, cred) = &t.signers[i % t.signers.len()];
            let h = signed_headers(key, cred, "GET", authority, &path, None, &[]);
            (format!("{}{path}", t.base), h, None)
        })
        .collect()
}

fn decide_requests(t: &Target) -> Vec<Ready> {
    t.signers
        .iter()
        .map(|(_, cred)| {
            let body = serde_json::to_string(&DecideRequest {
                credential: cred.clone(),
                action: "read".into(),
                resource: serde_json::from_value(
                    serde_json::json!({"type": "Route", "route": "bench", "path": "/item/1"}),
                )
                .unwrap(),
                context: serde_json::Map::new(),
                justification: None,
                required_trust: None,
            })
            .unwrap();
            (
                format!("{}/v1/decide", t.base),
                vec![
                    ("authorization".into(), format!("Bearer {}", t.admin)),
                    ("content-type".into(), "application/json".into()),
                ],
                Some(Arc::new(body)),
            )
        })
        .collect()
}

async fn send(http: &reqwest::Client, r: &Ready) {
    let mut rb = match &r.2 {
        Some(body) => http.post(&r.0).body(body.as_str().to_owned()),
        None => http.get(&r.0),
    };
    for (k, v) in &r.1 {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{} {status} {text}", r.0);
    if r.2.is_some() {
        assert!(text.contains("\"allow\""), "not an Allow: {text}");
    }
}

/// p50 in microseconds, one connection. `reuse`: the requests may be sent
/// again (decisions); signed gateway requests only once each.
async fn latency(reqs: &[Ready], reuse: bool) -> f64 {
    let http = reqwest::Client::new();
    let pick = |i: usize| {
        if reuse {
            &reqs[i % reqs.len()]
        } else {
            &reqs[i]
        }
    };
    for i in 0..WARMUP {
        send(&http, pick(i)).await;
    }
    let mut d = Vec::with_capacity(SAMPLES);
    for i in WARMUP..WARMUP + SAMPLES {
        let t = Instant::now();
        send(&http, pick(i)).await;
        d.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(d)
}

async fn throughput(reqs: Vec<Ready>, reuse: bool) -> f64 {
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(THROUGHPUT_SECS);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (reqs, next, done, http) = (reqs.clone(), next.clone(), done.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap();
                let i = if reuse { i % reqs.len() } else { i };
                let Some(r) = reqs.get(i) else { break };
                send(&http, r).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The floor of a durable decision on each backend, in this run: the p50
/// of one committed one-row `INSERT` (autocommit) on PostgreSQL, in the
/// benchmark's schema, and on a SQLite file in WAL mode with
/// `synchronous = FULL` (as Mandate opens it), in `dir`. Every decision
/// Mandate answers waits for (a share of) one such commit. Also the p50 of
/// one round trip to PostgreSQL (`SELECT 1`), what each further statement
/// on a decision's path costs at least.
async fn commit_floors(pg_url: &str, dir: &Path) -> (f64, f64, f64) {
    use sqlx::Connection as _;
    const N: usize = 300;
    let mut pg = sqlx::PgConnection::connect(pg_url).await.unwrap();
    let mut d = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut pg).await.unwrap();
        d.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let round_trip = median(d);
    sqlx::raw_sql("CREATE TABLE floor_probe (x bigint)")
        .execute(&mut pg)
        .await
        .unwrap();
    let mut d = Vec::with_capacity(N);
    for i in 0..N {
        let t = Instant::now();
        sqlx::query("INSERT INTO floor_probe VALUES ($1)")
            .bind(i64::try_from(i).unwrap())
            .execute(&mut pg)
            .await
            .unwrap();
        d.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let pg_floor = median(d);
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("floor.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut lite = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE floor_probe (x INTEGER)")
        .execute(&mut lite)
        .await
        .unwrap();
    let mut d = Vec::with_capacity(N);
    for i in 0..N {
        let t = Instant::now();
        sqlx::query("INSERT INTO floor_probe VALUES (?1)")
            .bind(i64::try_from(i).unwrap())
            .execute(&mut lite)
            .await
            .unwrap();
        d.push(t.elapsed().as_secs_f64() * 1e6);
    }
    (pg_floor, median(d), round_trip)
}

/// A server's `/metrics`, as its admin reads it, parsed.
async fn scrape(t: &Target) -> Vec<Sample> {
    let text = Client::new(&t.base)
        .unwrap()
        .with_token(&t.admin)
        .metrics()
        .await
        .unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
}

/// The single value of the sample `name` whose labels include `labels`
/// (0 if there is none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(_) | Value::Summary(_) => panic!("{name} is not a single value"),
        })
}

/// Where a phase's time went at the server: the mean of each pipeline
/// stage of `door` (µs) between two scrapes, and of the audit commits.
fn stages(before: &[Sample], after: &[Sample], door: &str) -> String {
    let mean = |histogram: &str, labels: &[(&str, &str)]| {
        let d = |part: &str| {
            let name = format!("{histogram}_{part}");
            value(after, &name, labels) - value(before, &name, labels)
        };
        let n = d("count");
        if n > 0.0 { d("sum") / n * 1e6 } else { 0.0 }
    };
    let mut out: Vec<String> = ["verify", "decide", "record", "forward"]
        .iter()
        .map(|stage| {
            let labels = [("front_door", door), ("stage", *stage)];
            format!(
                "{stage} {:.0}",
                mean("mandate_stage_duration_seconds", &labels)
            )
        })
        .collect();
    let predicted = |outcome: &str| {
        let name = "mandate_audit_predicted_groups_total";
        let labels = [("outcome", outcome)];
        value(after, name, &labels) - value(before, name, &labels)
    };
    out.push(format!(
        "(audit commit {:.0}; groups on predictions {} held, {} missed)",
        mean("mandate_audit_commit_duration_seconds", &[]),
        predicted("held"),
        predicted("missed")
    ));
    out.join(", ")
}

fn percentile(mut v: Vec<f64>, p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(harness());
}

async fn harness() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new("bench_nodes");
    let up = upstream().await;
    let sqlite = target(
        "sqlite",
        &dir.path().join("sqlite"),
        &config(&up, None, None),
    )
    .await;
    let url = schema.url();
    let pg = target(
        "postgres",
        &dir.path().join("pg1"),
        &config(&up, Some(&url), None),
    )
    .await;
    let throughput_n = 40_000;
    // [target][p50 decide, rps decide, p50 gateway, rps gateway]
    let mut figures = vec![vec![Vec::new(); 4]; 2];
    let mut floors = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (pg_floor, lite_floor, round_trip) = commit_floors(&url, dir.path()).await;
        sqlx::raw_sql("DROP TABLE floor_probe")
            .execute(
                &mut <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
        let _ = std::fs::remove_file(dir.path().join("floor.db"));
        floors.0.push(pg_floor);
        floors.1.push(lite_floor);
        floors.2.push(round_trip);
        println!(
            "round {} floors: one durable commit p50 {pg_floor:.1} µs on PostgreSQL, {lite_floor:.1} µs on SQLite; one round trip to PostgreSQL p50 {round_trip:.1} µs",
            round + 1
        );
        for (i, t) in [&sqlite, &pg].into_iter().enumerate() {
            let decide = decide_requests(t);
            let before = scrape(t).await;
            figures[i][0].push(latency(&decide, true).await);
            let decide_stages = stages(&before, &scrape(t).await, "decide");
            figures[i][1].push(throughput(decide, true).await);
            let reqs = gateway_requests(t, WARMUP + SAMPLES, &format!("l{round}"));
            let before = scrape(t).await;
            figures[i][2].push(latency(&reqs, false).await);
            let gateway_stages = stages(&before, &scrape(t).await, "gateway");
            let reqs = gateway_requests(t, throughput_n, &format!("t{round}"));
            figures[i][3].push(throughput(reqs, false).await);
            println!(
                "round {} {:>8}: decide p50 {:7.1} µs, {:7.0} req/s; gateway p50 {:7.1} µs, {:7.0} req/s",
                round + 1,
                t.name,
                figures[i][0][round],
                figures[i][1][round],
                figures[i][2][round],
                figures[i][3][round],
            );
            println!(
                "{:>17}  mean µs at one connection: decide: {decide_stages}; gateway: {gateway_stages}",
                ""
            );
        }
    }
    let m = |t: usize, k: usize| median(figures[t][k].clone());
    let (pg_floor, lite_floor, round_trip) = (
        median(floors.0.clone()),
        median(floors.1.clone()),
        median(floors.2.clone()),
    );
    println!("\nmedians of {ROUNDS} rounds (PostgreSQL / SQLite; goals: p50 ≤ 1.5×, req/s ≥ 0.7×)");
    for (k, what) in [(0, "/v1/decide"), (2, "gateway")] {
        let p50 = m(1, k) / m(0, k);
        let rps = m(1, k + 1) / m(0, k + 1);
        println!(
            "{what:>10}: p50 {:.1} / {:.1} µs = {p50:.2}× ({}), req/s {:.0} / {:.0} = {rps:.2}× ({})",
            m(1, k),
            m(0, k),
            if p50 <= 1.5 { "met" } else { "not met" },
            m(1, k + 1),
            m(0, k + 1),
            if rps >= 0.7 { "met" } else { "not met" },
        );
        println!(
            "{:>10}  above one durable commit: {:.1} µs on PostgreSQL (floor {pg_floor:.1}), {:.1} µs on SQLite (floor {lite_floor:.1}); the difference is {:.1} round trips to PostgreSQL ({round_trip:.1} µs)",
            "",
            m(1, k) - pg_floor,
            m(0, k) - lite_floor,
            ((m(1, k) - pg_floor) - (m(0, k) - lite_floor)) / round_trip,
        );
    }
    drop(sqlite);
    propagation(&dir.path().join("nodes"), &up, &pg).await;
}

async fn signed_status(http: &reqwest::Client, agent: &mut MissionAgent, url: &str) -> u16 {
    let req = agent
        .signed_request("GET", url, None, None, &[])
        .await
        .unwrap()
        .build()
        .unwrap();
    http.execute(req).await.unwrap().status().as_u16()
}

/// Two more nodes on `first`'s database; then, for each sample, a fresh
/// mission allowed on node 3, revoked on node 1, and the time from the
/// revocation's answer to the first refusal on node 3.
async fn propagation(dir: &Path, up: &str, first: &Target) {
    let bin = env!("CARGO_BIN_EXE_mandate");
    let first_dir = dir.parent().unwrap().join("pg1");
    let url = std::fs::read_to_string(first_dir.join("mandate.toml")).unwrap();
    let database = url
        .lines()
        .find_map(|l| l.strip_prefix("database_url = "))
        .map(|v| serde_json::from_str::<String>(v).unwrap())
        .unwrap();
    let mut nodes = Vec::new();
    for n in 2..=3 {
        let data = dir.join(format!("n{n}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("mandate.toml"),
            config(up, Some(&database), Some(&first.base)),
        )
        .unwrap();
        for key in ["authority.key", "vault.key"] {
            std::fs::copy(first_dir.join(key), data.join(key)).unwrap();
        }
        let port = free_port();
        let child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .env("MANDATE_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if Client::new(&base).unwrap().health().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        nodes.push((Proc(child), base));
    }
    let node3 = &nodes[1].1;
    let admin = Client::new(&first.base).unwrap().with_token(&first.admin);
    let alice_token = admin
        .create_token(&mandate_core::wire::CreateTokenRequest {
            principal: Some("alice".into()),
            label: None,
        })
        .await
        .unwrap()
        .token;
    let alice = Client::new(&first.base).unwrap().with_token(&alice_token);
    let http = reqwest::Client::new();
    let mut took = Vec::new();
    for i in 0..PROPAGATION_SAMPLES {
        let m = alice
            .create_mission(&CreateMissionRequest {
                agent: "bench-bot".into(),
                goal: "propagation".into(),
                scope: SCOPE.into(),
                boundaries: String::new(),
                escalations: String::new(),
                ttl_seconds: Some(600),
                budget: Some(1_000),
                out_of_scope: None,
            })
            .await
            .unwrap();
        let mut agent = MissionAgent::start(&first.base, &m.start_token)
            .await
            .unwrap();
        let url = |n: usize| format!("{node3}/gw/bench/p{i}-{n}");
        assert_eq!(signed_status(&http, &mut agent, &url(0)).await, 200);
        admin
            .revoke("mission", agent.mission_id().as_str(), None)
            .await
            .unwrap();
        let revoked = Instant::now();
        let mut n = 1;
        while signed_status(&http, &mut agent, &url(n)).await == 200 {
            n += 1;
            assert!(revoked.elapsed() < Duration::from_secs(5), "never refused");
        }
        took.push(revoked.elapsed().as_secs_f64() * 1e3);
    }
    let p99 = percentile(took.clone(), 99);
    println!(
        "revocation on node 1 → refused on node 3: p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms over {PROPAGATION_SAMPLES} ({})",
        percentile(took.clone(), 50),
        percentile(took, 100),
        if p99 <= 1_000.0 {
            "goal ≤ 1 s met"
        } else {
            "goal ≤ 1 s not met"
        },
    );
}
