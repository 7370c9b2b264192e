#!/usr/bin/env bash
# The audit log at scale (issue 23, item 4; ADR 0018), on SQLite and on
# PostgreSQL, one after the other: each fills a log of
# MANDATE_BENCH_RECORDS (default 10,000,000) realistic records through the
# store's own audit sink (chained, sealed, checkpointed every 1,000 in the
# database and the checkpoint file, signed with the data dir's key), re-hashes
# it from genesis, starts `mandate serve` on it and times filtered lists and
# explains over HTTP on loopback (50 requests each after 5 warm-ups), then
# append throughput on it beside an empty log. What each step does:
# crates/mandate-cli/benches/audit_scale.rs.
#
# Goals (issue 23): with 10M records, a filtered list (`mission=`,
# `decision=escalate`, `agent=&action=`) and an explain each under 10 ms at
# the server; append throughput >= 0.8x an empty log's.
#
# Run: scripts/bench-audit-scale.sh            (both backends)
#      MANDATE_BENCH_BACKENDS=sqlite scripts/bench-audit-scale.sh
# Settings: MANDATE_BENCH_RECORDS, MANDATE_BENCH_BACKENDS ("sqlite postgres"),
#   MANDATE_BENCH_DIR (where the data dirs go, default the target's tmp dir;
#   the 10M SQLite log takes about 12 GB with its indexes, PostgreSQL about as much),
#   MANDATE_BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test;
#   the run uses schemas of its own and drops them).
# Time: at 10M records, on 2 cores, the SQLite fill took 18 minutes and the
# PostgreSQL one about 23, each then re-hashed in about 3; builds in release first.
set -euo pipefail
cd "$(dirname "$0")/.."

records="${MANDATE_BENCH_RECORDS:-10000000}"
backends="${MANDATE_BENCH_BACKENDS:-sqlite postgres}"
echo "== audit at scale: $records records; backends: $backends"
echo "== machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p mandate-cli --bench audit_scale --no-run
for backend in $backends; do
    echo "== $backend (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    MANDATE_BENCH_BACKEND="$backend" MANDATE_BENCH_RECORDS="$records" \
        cargo bench -p mandate-cli --bench audit_scale
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
