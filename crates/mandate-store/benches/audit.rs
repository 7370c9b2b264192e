//! Durable audit append throughput, beside a raw SQLite insert loop with the
//! same durability settings (WAL, `synchronous = FULL`), in the same run.
//!
//! `cargo bench -p mandate-store --bench audit`
//!
//! - `mandate_group_100`: 100 chained records (JCS + SHA-256 each) in one
//!   transaction, as the audit writer commits a group.
//! - `raw_row_per_commit`: one plain INSERT per transaction (one sync each):
//!   what an audit log without group commit pays.
//! - `raw_group_100`: 100 plain INSERTs in one transaction: the floor for
//!   group commit; the gap to `mandate_group_100` is Mandate's own cost.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mandate_core::ChainHead;
use mandate_store::{SqliteStore, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

fn body(i: u64) -> serde_json::Value {
    serde_json::json!({
        "enforcement_point": "gateway", "principal": "alice", "agent": "billing-bot",
        "mission": "msn_0123456789abcdef0123456789abcdef", "mission_s256": "SUFf7MbcduLWRRojP6xCG1R6nvSc7Dq3njxapockwSs",
        "action": "read", "resource": { "type": "Resource", "id": format!("invoice-{i}"), "tags": { "billing": "nov" } },
        "decision": "allow", "code": "scope", "policies": ["msn_0123456789abcdef0123456789abcdef/scope/read-billing"],
        "credential": "2x9Rk3qVv1mQ0aZ8yT4wEw", "jkt": "cpO_uB7Msl_7e1Y3O_BqpvwDaYXJNrbPFZPpN7v7Q9w",
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = rt
        .block_on(SqliteStore::open(&dir.path().join("mandate.db")))
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
    rt.block_on(sqlx::query("CREATE TABLE t (seq INTEGER PRIMARY KEY, time INTEGER, kind TEXT, body TEXT, hash TEXT) STRICT").execute(&raw))
        .unwrap();

    let mut g = c.benchmark_group("audit_append");
    g.measurement_time(Duration::from_secs(10));

    let mut head = ChainHead::genesis();
    let mut sink = store.audit_sink().unwrap();
    g.throughput(Throughput::Elements(100));
    g.bench_function("mandate_group_100", |b| {
        b.iter(|| {
            let records: Vec<_> = (0..100)
                .map(|_| {
                    head.append(1_800_000_000, "decision", body(head.seq))
                        .unwrap()
                })
                .collect();
            sink.begin().unwrap();
            for r in &records {
                sink.append(r).unwrap();
            }
            sink.commit().unwrap();
        });
    });

    let text = serde_json::to_string(&body(0)).unwrap();
    g.bench_function("raw_group_100", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tx = raw.begin().await.unwrap();
                for _ in 0..100 {
                    sqlx::query("INSERT INTO t (time, kind, body, hash) VALUES (1800000000, 'decision', ?1, 'h')")
                        .bind(&text)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            });
        });
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_row_per_commit", |b| {
        b.iter(|| {
            rt.block_on(
                sqlx::query("INSERT INTO t (time, kind, body, hash) VALUES (1800000000, 'decision', ?1, 'h')")
                    .bind(&text)
                    .execute(&raw),
            )
            .unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
