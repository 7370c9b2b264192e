#!/usr/bin/env bash
# Mandate on PostgreSQL beside Mandate on SQLite, in one run (see
# docs/benchmarks.md and docs/scale-out.md): /v1/decide and the gateway,
# p50 at one connection and req/s at 32, and the time a revocation on one
# node takes to be refused on another. Needs PostgreSQL
# (MANDATE_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)
# and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mandate-target}"
exec cargo bench -p mandate-cli --bench nodes "$@"
