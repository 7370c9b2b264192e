//! The latency a request pays for its audit event, beside one raw SQLite
//! commit with the same durability settings, in the same run.
//!
//! `cargo bench -p mandate-enforce --bench audit_latency`
//!
//! - `record_one`: `AuditLog::record` of a decision-sized event with no other
//!   traffic, so the group is that one event, committed by its caller:
//!   chain, commit and sync.
//! - `raw_commit_one`: one plain INSERT in its own transaction.
//! - `seal_one`: signing the checkpoint that seals a commit (ADR 0012), the
//!   CPU each commit adds to `record_one` beside its read-back and row.
//!
//! Goal: `record_one` ≤ `raw_commit_one` + 0.5 ms at the median.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::{AuthorityKey, OsRandom, SystemClock};
use mandate_enforce::{AuditLog, CheckpointPolicy};
use mandate_store::SqliteStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

fn body() -> serde_json::Value {
    serde_json::json!({
        "enforcement_point": "gateway", "principal": "alice", "agent": "billing-bot",
        "mission": "msn_0123456789abcdef0123456789abcdef", "action": "read",
        "resource": { "type": "Resource", "id": "invoice-42", "tags": { "billing": "nov" } },
        "decision": "allow", "code": "scope", "policies": ["msn_0123456789abcdef0123456789abcdef/scope/read-billing"],
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = rt
        .block_on(SqliteStore::open(&dir.path().join("mandate.db")))
        .unwrap();
    let key = Arc::new(AuthorityKey::generate(&OsRandom).unwrap());
    let (log, _writer) = rt
        .block_on(AuditLog::spawn(
            Arc::new(store),
            key,
            "urn:bench".into(),
            Arc::new(SystemClock),
            CheckpointPolicy::default(),
        ))
        .unwrap();
    let raw = rt
        .block_on(
            SqlitePoolOptions::new().max_connections(1).connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("raw.db"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            ),
        )
        .unwrap();
    rt.block_on(
        sqlx::query("CREATE TABLE t (seq INTEGER PRIMARY KEY, body TEXT) STRICT").execute(&raw),
    )
    .unwrap();
    let text = body().to_string();

    let mut g = c.benchmark_group("audit_latency");
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("record_one", |b| {
        b.iter(|| {
            rt.block_on(log.record("decision", 1_800_000_000, body()))
                .unwrap()
        });
    });
    let key = AuthorityKey::generate(&OsRandom).unwrap();
    let head = mandate_core::ChainHead {
        seq: 1_234_567,
        hash: mandate_core::GENESIS.to_owned(),
    };
    g.bench_function("seal_one", |b| {
        b.iter(|| {
            mandate_core::sign_checkpoint(
                &key,
                "https://mandate.example",
                &head,
                1_800_000_000,
                mandate_core::Cadence::default(),
            )
            .unwrap()
        });
    });
    g.bench_function("raw_commit_one", |b| {
        b.iter(|| {
            rt.block_on(
                sqlx::query("INSERT INTO t (body) VALUES (?1)")
                    .bind(&text)
                    .execute(&raw),
            )
            .unwrap()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
