//! Gateway benchmark: added latency and throughput of a call through the
//! Mandate gateway, beside the same call made directly and through nginx
//! `proxy_pass`, in one run, on loopback, with one load generator.
//!
//! Run with `scripts/bench-gateway.sh` (installs Debian's nginx if missing).
//! Without nginx on `PATH` (or `MANDATE_BENCH_NGINX`), the nginx rows are
//! skipped.
//!
//! Every gateway request is signed (RFC 9421, Ed25519) by the mission key,
//! decided, and recorded in the audit log before it is forwarded. Requests
//! are signed before the clock starts: what is measured is the gateway,
//! not the load generator's signing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark harness: it reports on stdout and stops on any failure"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

mod common;
use common::{Proc, free_port};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mandate_core::MissionKey;
use mandate_testkit::signed_headers;

const WARMUP: usize = 300;
const SAMPLES: usize = 2_000;
const ROUNDS: usize = 3;
const CONNECTIONS: usize = 32;
const THROUGHPUT_SECS: u64 = 4;

async fn upstream() -> String {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn nginx(dir: &Path, upstream: &str) -> Option<(Proc, String)> {
    let bin = std::env::var("MANDATE_BENCH_NGINX")
        .ok()
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/sbin/nginx", "/usr/bin/nginx"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })?;
    let port = free_port();
    let up = upstream.trim_start_matches("http://");
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {pid};\nerror_log {err} warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off;\n  upstream up {{ server {up}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{port};\n\
                 location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("nginx.err").display(),
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    Some((Proc(child), format!("http://127.0.0.1:{port}")))
}

/// Missions the load is spread over (see `common::mandate`).
const MISSIONS: usize = 32;

/// A Mandate server with one route to `upstream`, and started missions.
async fn mandate(dir: &Path, upstream: &str, durable: bool) -> (Proc, String, Vec<Signer>) {
    let config = format!(
        "unsafe_non_durable_benchmark_mode = {}\n\n[[routes]]\nname = \"bench\"\nupstream = \"{upstream}\"\n\n\
         [[routes.rules]]\nmethod = \"GET\"\npath = \"/{{*rest}}\"\naction = \"read\"\n",
        !durable
    );
    let data = dir.join(if durable { "durable" } else { "fast" });
    let (proc, base, saved) = common::mandate(
        &data,
        &config,
        "permit(principal, action == Action::\"read\", resource is Route);",
        MISSIONS,
    )
    .await;
    let signers = saved
        .into_iter()
        .map(|m| {
            (
                MissionKey::from_pkcs8_pem(&m.key_pem).unwrap(),
                m.credential,
            )
        })
        .collect();
    (proc, base, signers)
}

/// A mission key and its credential.
type Signer = (MissionKey, String);

/// A request ready to send: URL and headers.
type Ready = (String, Vec<(String, String)>);

/// `n` requests to `base`; signed for the gateway by `signers` in turn
/// when there are any.
fn requests(base: &str, prefix: &str, n: usize, signers: &[Signer], tag: &str) -> Vec<Ready> {
    let authority = base.trim_start_matches("http://");
    (0..n)
        .map(|i| {
            let path = format!("{prefix}/item/{tag}-{i}");
            let h = if signers.is_empty() {
                Vec::new()
            } else {
                let (key, cred) = &signers[i % signers.len()];
                signed_headers(key, cred, "GET", authority, &path, None, &[])
            };
            (format!("{base}{path}"), h)
        })
        .collect()
}

async fn send(http: &reqwest::Client, r: &Ready) {
    let mut rb = http.get(&r.0);
    for (k, v) in &r.1 {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    assert!(resp.status().is_success(), "{} {}", r.0, resp.status());
    let _ = resp.bytes().await.unwrap();
}

/// Sequential latency: p50 and p99 in microseconds.
async fn latency(reqs: &[Ready]) -> (f64, f64) {
    let http = reqwest::Client::new();
    for r in &reqs[..WARMUP] {
        send(&http, r).await;
    }
    let mut d: Vec<f64> = Vec::with_capacity(SAMPLES);
    for r in &reqs[WARMUP..WARMUP + SAMPLES] {
        let t = Instant::now();
        send(&http, r).await;
        d.push(t.elapsed().as_secs_f64() * 1e6);
    }
    d.sort_by(f64::total_cmp);
    (d[d.len() / 2], d[d.len() * 99 / 100])
}

/// Requests per second with `CONNECTIONS` concurrent clients.
async fn throughput(reqs: Vec<Ready>) -> f64 {
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(THROUGHPUT_SECS);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (reqs, next, done, http) = (reqs.clone(), next.clone(), done.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap();
                let Some(r) = reqs.get(i) else { break };
                send(&http, r).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let nginx = nginx(dir.path(), &up);
    let (_durable, gw, signers) = mandate(dir.path(), &up, true).await;
    let (_fast, gw_fast, signers_fast) = mandate(dir.path(), &up, false).await;
    type Target<'a> = (&'a str, String, &'a [Signer], &'a str);
    let mut targets: Vec<Target<'_>> = vec![("direct", up.clone(), &[], "")];
    if let Some((_, base)) = &nginx {
        targets.push(("nginx proxy_pass", base.clone(), &[], ""));
    }
    targets.push((
        "mandate gateway (durable audit)",
        gw.clone(),
        &signers,
        "/gw/bench",
    ));
    targets.push((
        "mandate gateway (unsafe non-durable mode)",
        gw_fast.clone(),
        &signers_fast,
        "/gw/bench",
    ));
    let mut results = Vec::new();
    for (name, base, signers, prefix) in &targets {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut rps = Vec::new();
        for round in 0..ROUNDS {
            // Sequential latency: one mission, as one agent would.
            let one = &signers[..signers.len().min(1)];
            let reqs = requests(base, prefix, WARMUP + SAMPLES, one, &format!("l{round}"));
            let (p50, p99) = latency(&reqs).await;
            p50s.push(p50);
            p99s.push(p99);
            let reqs = requests(base, prefix, 60_000, signers, &format!("t{round}"));
            rps.push(throughput(reqs).await);
        }
        let r = (median(p50s), median(p99s), median(rps));
        println!(
            "{name:<44} p50 {:>8.1} µs  p99 {:>8.1} µs  {:>8.0} req/s @{CONNECTIONS}",
            r.0, r.1, r.2
        );
        results.push((*name, r));
    }
    let direct = results[0].1;
    println!("\nadded p50 over a direct call (median of {ROUNDS} rounds):");
    for (name, r) in &results[1..] {
        println!(
            "  {name:<44} +{:>7.1} µs   throughput {:.2}× direct",
            r.0 - direct.0,
            r.2 / direct.2
        );
    }
    if nginx.is_some() {
        let ng = results[1].1;
        let full = results[2].1;
        let fast = results[3].1;
        let ng_added = ng.0 - direct.0;
        println!("\ngoals (issue: gateway benchmark):");
        println!(
            "  full path added p50 ≤ nginx added p50 + 150 µs: {:.1} ≤ {:.1} → {}",
            full.0 - direct.0,
            ng_added + 150.0,
            if full.0 - direct.0 <= ng_added + 150.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        println!(
            "  without the audit fsync, added p50 ≤ 1.5× nginx's: {:.1} ≤ {:.1} → {}",
            fast.0 - direct.0,
            1.5 * ng_added,
            if fast.0 - direct.0 <= 1.5 * ng_added {
                "met"
            } else {
                "NOT met"
            }
        );
        println!(
            "  throughput @{CONNECTIONS} ≥ 0.3× nginx's: {:.0} ≥ {:.0} → {}",
            full.2,
            0.3 * ng.2,
            if full.2 >= 0.3 * ng.2 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}
