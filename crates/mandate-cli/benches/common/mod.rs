//! What the benchmarks share: a free port, a child process stopped on drop,
//! and a Mandate server started from the release binary with one mission
//! started.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mandate_client::{Client, MissionAgent, SavedMission};
use mandate_core::wire::{CreateMissionRequest, RegisterAgentRequest};

pub use mandate_testkit::free_port;

/// The middle value (the upper one of an even count).
#[allow(dead_code, reason = "not every benchmark takes medians")]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An upstream that answers `ok` to everything, on loopback.
#[allow(dead_code, reason = "not every benchmark forwards")]
pub async fn upstream() -> String {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

/// CPU time (user and system) a process has used, in seconds (Linux).
#[allow(dead_code, reason = "not every benchmark measures CPU")]
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11..13).map_or(0.0, |t| {
        t.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    ticks / hz
}

/// `MANDATE_BENCH_WRAP`: a command (words split on white space) that
/// `mandate serve` is run under, e.g. `valgrind --tool=callgrind`.
#[allow(dead_code, reason = "not every benchmark starts a server")]
pub fn wrapper() -> Vec<String> {
    std::env::var("MANDATE_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether `mandate serve` runs under callgrind (see [`wrapper`]).
#[allow(dead_code, reason = "not every benchmark profiles")]
pub fn callgrind() -> bool {
    wrapper().iter().any(|w| w.contains("callgrind"))
}

/// Asks callgrind in process `pid` to zero its counters (`-z`) or dump
/// them (`-d`); waits for it to be done.
#[allow(dead_code, reason = "not every benchmark profiles")]
pub fn callgrind_control(what: &str, pid: u32) {
    let s = Command::new("callgrind_control")
        .args([what, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(s.success(), "callgrind_control {what} {pid}");
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Mandate server on `data` with `config` as its `mandate.toml`, alice,
/// her agent `bench-bot`, and `missions` started missions with `scope`
/// (budget 1,000,000, one hour): the server, its base URL, the missions'
/// saved states (key and credential). (One mission key may have at most
/// 20,000 signatures in the replay cache at once, about 330 a second
/// sustained; a throughput run spreads its load over several.)
#[allow(dead_code, reason = "not every benchmark uses this form")]
pub async fn mandate(
    data: &Path,
    config: &str,
    scope: &str,
    missions: usize,
) -> (Proc, String, Vec<SavedMission>) {
    let (proc, base, saved, _) = mandate_with_admin(data, config, scope, missions).await;
    (proc, base, saved)
}

/// As [`mandate`], with the admin's API token as well.
#[allow(dead_code, reason = "not every benchmark asks the admin")]
pub async fn mandate_with_admin(
    data: &Path,
    config: &str,
    scope: &str,
    missions: usize,
) -> (Proc, String, Vec<SavedMission>, String) {
    let bin = env!("CARGO_BIN_EXE_mandate");
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("mandate.toml"), config).unwrap();
    let init = Command::new(bin)
        .args(["init", "--json", "--data"])
        .arg(data)
        .env("MANDATE_LOG", "error")
        .output()
        .unwrap();
    let admin: serde_json::Value = serde_json::from_slice(&init.stdout).unwrap();
    let port = free_port();
    // `mandate serve`, under the wrapper if there is one.
    let wrap = wrapper();
    let mut serve = Command::new(wrap.first().map_or(bin, String::as_str));
    let child = serve
        .args(wrap.iter().skip(1))
        .args((!wrap.is_empty()).then_some(bin))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .env("MANDATE_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let admin_token = admin["token"].as_str().unwrap().to_owned();
    let admin = Client::new(&base).unwrap().with_token(&admin_token);
    // A wrapped server (valgrind) starts many times slower.
    let tries = if wrap.is_empty() { 200 } else { 4_000 };
    for _ in 0..tries {
        if admin.health().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let alice = admin
        .create_principal("alice", None)
        .await
        .unwrap()
        .token
        .token;
    let alice = Client::new(&base).unwrap().with_token(&alice);
    alice
        .register_agent(&RegisterAgentRequest {
            name: "bench-bot".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    let mut saved = Vec::new();
    for _ in 0..missions {
        let m = alice
            .create_mission(&CreateMissionRequest {
                agent: "bench-bot".into(),
                goal: "benchmark".into(),
                scope: scope.into(),
                boundaries: String::new(),
                escalations: String::new(),
                ttl_seconds: Some(3_600),
                budget: Some(1_000_000),
                out_of_scope: None,
            })
            .await
            .unwrap();
        let agent = MissionAgent::start(&base, &m.start_token).await.unwrap();
        saved.push(serde_json::from_str(&agent.save().unwrap()).unwrap());
    }
    (Proc(child), base, saved, admin_token)
}
