#!/usr/bin/env bash
# Decision benchmark: Mandate's `POST /v1/decide` beside cedar-agent 0.2.0's
# `POST /v1/is_authorized` (a Rust/Rocket Cedar server that keeps policies and
# entities in memory and records nothing), on the same 50 organisation
# policies, in one run, on loopback, with one load generator (wrk).
#
# What it measures, each round (MANDATE_BENCH_ROUNDS, default 3; medians are
# reported):
#   - p50 latency at 1 connection (wrk -t1 -c1 --latency), both servers;
#   - throughput (req/s) at 32 connections (wrk -t2 -c32), both servers;
#   - the p50 of one 4 KiB write + fdatasync in Mandate's data directory
#     (Mandate records every decision durably in its audit log, SQLite in
#     WAL mode with synchronous=FULL, before it answers; cedar-agent records
#     nothing). The goal uses a write in place in a preallocated file, which
#     is what a WAL that has wrapped pays (data only). A 4 KiB append +
#     fdatasync (as the gateway bench's probe does) is printed beside it: the
#     growing file makes the file system commit its size too (on ext4 a
#     journal commit, shared with every other process's pending metadata),
#     which on a busy machine is often 10× slower and would make the p50 goal
#     meaningless. Both probes are noisy when other processes write to the
#     same disk (rounds of ~4 ms were seen for either, more often for the
#     append); the median over rounds is what the goal uses.
# Each wrk run lasts MANDATE_BENCH_SECS (5) after a MANDATE_BENCH_WARMUP_SECS
# (2) warm-up on the same connections. Every answer of every run is checked:
# a run with one answer that is not the expected Allow fails the benchmark.
# Goals printed at the end:
#   - p50: Mandate ≤ cedar-agent + fdatasync;
#   - throughput: Mandate ≥ 1.5 × cedar-agent.
#
# Run: scripts/bench-decide.sh   (from anywhere; about 2 minutes after builds)
#   It builds `mandate` (cargo build --release, into ${CARGO_TARGET_DIR:-./target}),
#   installs cedar-agent 0.2.0 with `cargo install` into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/mandate-bench/cedar-agent on first use,
#   and Debian's wrk if it is missing (apt-get; root). Needs python3 and curl.
#   Settings: MANDATE_BENCH_ROUNDS, MANDATE_BENCH_SECS, MANDATE_BENCH_WARMUP_SECS,
#   MANDATE_BENCH_CONNECTIONS (32), MANDATE_BENCH_THREADS (2),
#   MANDATE_BENCH_DIR (where the temporary data directories go; default
#   $TMPDIR or /tmp: put it on the file system you want fdatasync measured on),
#   MANDATE_BENCH_KEEP=1 (keep the work directory: logs, wrk outputs).
#
# The same 50 policies, literally the same text on both sides
# (scripts/bench-decide/helper.py writes them): the mix of
# crates/mandate-core/benches/decision.rs — 20 `forbid` boundaries, 15
# `@kind("escalate")` permits (cedar-agent ignores the annotation: to it they
# are plain permits), 15 permits — each with an `@id`.
#   Deviation from decision.rs: the resource's tags become context labels.
#   cedar-agent 0.2.0 is built on cedar-policy 2.4 (2.4.6 in its Cargo.lock),
#   which has no entity tags (`hasTag`/`getTag` arrived in Cedar 4), so the
#   `resource.hasTag("restricted-3")` policies do not parse there. Mandate's
#   resource entities, for their part, carry fixed attributes (`id`, or
#   `route`/`path`, …) and free-form tags only, so attribute-based policies
#   (`resource has "restricted-3"`) would never match in Mandate. The one
#   request-supplied, free-form data both evaluate with identical policy text
#   is the context: a benchmark action `fetch` (declared in
#   DATA/policies/bench.cedarschema for Mandate, whose policies are validated
#   against its schema) carries `labels: Set<String>`, and the policies read
#   `context.labels.contains("restricted-i")` / `("region-i") && context.trust
#   == "signed"` / `("public-i")`. Every policy names `action ==
#   Action::"fetch"` (Mandate's validator needs the action to type the
#   context). The timed request is `Agent::"bench-bot"` doing `fetch` on
#   `Resource::"invoice-42"` with labels ["public-7", "customer-acme"]:
#   Allow by `permit-7` on both sides (no mission scope: the mission adds no
#   policy). cedar-agent gets `trust` and `time` in the request's context
#   (Mandate sets them itself) and, through PUT /v1/data, the entities Mandate
#   builds per decision (User, Mission, Agent, Resource). Before timing, one
#   Allow and one boundary Deny (labels with "restricted-3") are checked on
#   each side.
#
# cedar-agent 0.2.0's HTTP API (read from its 0.2.0 source):
#   GET  /v1                204 when up
#   PUT  /v1/policies       [{"id": "...", "content": "<one Cedar policy>"}, ...]
#   PUT  /v1/data           Cedar entity JSON: [{"uid": {"type","id"}, "attrs", "parents"}]
#   POST /v1/is_authorized  {"principal": "Agent::\"bench-bot\"", "action": "Action::\"fetch\"",
#                            "resource": "Resource::\"invoice-42\"", "context": {...}}
#                        -> {"decision": "Allow"|"Deny", "diagnostics": {"reason": [ids], "errors": []}}
#   Configuration: --addr/--port/--log-level, or CEDAR_AGENT_ADDR/PORT/LOG_LEVEL,
#   and also the unprefixed ADDR, PORT, LOG_LEVEL, DATA, POLICIES, SCHEMA,
#   AUTHENTICATION (environment wins over flags), so it is started with a
#   cleared environment. Its log level is `error`, like Mandate's
#   (MANDATE_LOG=error): at its default `info` it logs a line per request.
#
# Mandate: `mandate init`, `mandate serve` on a fresh data directory, then
# with the CLI as in the README: principals alice (who delegates) and pep
# (the enforcement point, whose API token calls /v1/decide), agent bench-bot,
# a mission with a budget of 100,000,000 requests (max_budget raised in
# mandate.toml), started with a fresh mission key, and its credential.
# Both servers listen on 127.0.0.1 only; every process started here is
# stopped on exit.
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")/.."
ROOT=$PWD
HELPER="$ROOT/scripts/bench-decide/helper.py"
LUA="$ROOT/scripts/bench-decide/post.lua"

ROUNDS="${MANDATE_BENCH_ROUNDS:-3}"
SECS="${MANDATE_BENCH_SECS:-5}"
WARMUP_SECS="${MANDATE_BENCH_WARMUP_SECS:-2}"
CONNECTIONS="${MANDATE_BENCH_CONNECTIONS:-32}"
THREADS="${MANDATE_BENCH_THREADS:-2}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mandate-bench/cedar-agent"
CEDAR_AGENT_VERSION=0.2.0

for v in ROUNDS SECS WARMUP_SECS CONNECTIONS THREADS; do
  case "${!v}" in
    '' | *[!0-9]*) echo "bench-decide: MANDATE_BENCH_$v must be a whole number" >&2; exit 2 ;;
  esac
done
if [ "$ROUNDS" -lt 1 ] || [ "$SECS" -lt 1 ] || [ "$CONNECTIONS" -lt 1 ] || [ "$THREADS" -lt 1 ]; then
  echo "bench-decide: rounds, seconds, connections and threads must be at least 1" >&2
  exit 2
fi

fail() {
  echo "bench-decide: $*" >&2
  exit 1
}
py() { python3 "$HELPER" "$@"; }
now() { date +%s; }
T0=$(now)

echo "load average at start: $(cat /proc/loadavg)"
for tool in python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed"
done

# --- builds (not timed) ------------------------------------------------------

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (apt-get)"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

echo "building mandate (release, target dir $TARGET)"
CARGO_TARGET_DIR="$TARGET" nice -n 19 cargo build --release --bin mandate --quiet
MANDATE="$TARGET/release/mandate"
[ -x "$MANDATE" ] || fail "no binary at $MANDATE"

CEDAR_AGENT="$CACHE/bin/cedar-agent"
if [ ! -x "$CEDAR_AGENT" ]; then
  echo "installing cedar-agent $CEDAR_AGENT_VERSION into $CACHE (cargo install, a few minutes)"
  # A separate target dir, so that cedar-agent's dependencies do not land in
  # Mandate's.
  if ! CARGO_TARGET_DIR="$CACHE/target" nice -n 19 \
    cargo install cedar-agent --version "$CEDAR_AGENT_VERSION" --locked --root "$CACHE"; then
    # --locked builds with the versions of cedar-agent's own Cargo.lock
    # (cedar-policy 2.4.6, rocket 0.5.0, …). If one of them no longer builds
    # with this toolchain, fall back to the newest semver-compatible
    # versions (still cedar-policy 2.x: no entity tags either way).
    echo "bench-decide: 'cargo install --locked' failed; retrying without --locked" >&2
    CARGO_TARGET_DIR="$CACHE/target" nice -n 19 \
      cargo install cedar-agent --version "$CEDAR_AGENT_VERSION" --root "$CACHE"
  fi
  rm -rf "$CACHE/target"
fi
[ -x "$CEDAR_AGENT" ] || fail "no binary at $CEDAR_AGENT"
T_BUILT=$(now)

# --- work directory and processes ---------------------------------------------

PARENT="${MANDATE_BENCH_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$PARENT"
WORK=$(mktemp -d "$PARENT/mandate-bench-decide.XXXXXX")
DATA="$WORK/mandate-data"
PIDS=()

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${MANDATE_BENCH_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until URL answers 2xx, or fails with the process's log.
wait_up() { # name pid url log
  local i
  for ((i = 0; i < 200; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$3" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$4" >&2; fail "$1 exited while starting"; }
    sleep 0.05
  done
  cat "$4" >&2
  fail "$1 did not answer $3 within 10 s"
}

# Mandate's settings come from mandate.toml here, not from the caller's
# environment.
mandate_cli() {
  env -u MANDATE_POLICIES -u MANDATE_LISTEN -u MANDATE_PUBLIC_URL \
    -u MANDATE_CREDENTIAL_TTL -u MANDATE_DATA MANDATE_LOG=error "$MANDATE" "$@"
}

# --- the policies ---------------------------------------------------------------

mkdir -p "$DATA" "$WORK/cedar-agent" "$WORK/req"
py policies "$DATA/policies" "$WORK/cedar-agent/policies.json"
cat >"$DATA/mandate.toml" <<'EOF'
# scripts/bench-decide.sh: room for every timed decision in one mission.
credential_ttl_secs = 3600

[missions]
max_budget = 100000000
EOF

# --- Mandate -------------------------------------------------------------------

echo "starting mandate serve"
mandate_cli init --json --data "$DATA" >"$WORK/init.json"
ADMIN_TOKEN=$(py field "$WORK/init.json" token)
MPORT=$(py freeport)
MANDATE_URL="http://127.0.0.1:$MPORT"
# exec: the process whose id is kept (and stopped on exit) is the server.
(exec env -u MANDATE_POLICIES -u MANDATE_LISTEN -u MANDATE_PUBLIC_URL \
  -u MANDATE_CREDENTIAL_TTL -u MANDATE_DATA MANDATE_LOG=error \
  "$MANDATE" serve --listen "127.0.0.1:$MPORT" --data "$DATA") >"$WORK/mandate.log" 2>&1 &
MANDATE_PID=$!
PIDS+=("$MANDATE_PID")
wait_up mandate "$MANDATE_PID" "$MANDATE_URL/healthz" "$WORK/mandate.log"

as() { # token, then a mandate CLI command
  local token=$1
  shift
  MANDATE_SERVER="$MANDATE_URL" MANDATE_TOKEN="$token" mandate_cli "$@"
}
as "$ADMIN_TOKEN" principal add alice --json >"$WORK/alice.json"
as "$ADMIN_TOKEN" principal add pep --json >"$WORK/pep.json"
ALICE_TOKEN=$(py field "$WORK/alice.json" token.token)
PEP_TOKEN=$(py field "$WORK/pep.json" token.token)
as "$ALICE_TOKEN" agent register bench-bot --json >/dev/null
as "$ALICE_TOKEN" mission create --agent bench-bot --goal "decision benchmark" \
  --ttl 1h --budget 100000000 --json >"$WORK/mission.json"
START_TOKEN=$(py field "$WORK/mission.json" start_token)
as "" mission start "$START_TOKEN" --state "$WORK/mission-state.json" --json >"$WORK/start.json"
as "" mission credential --state "$WORK/mission-state.json" >"$WORK/credential.jwt"
py bodies "$WORK/start.json" "$WORK/credential.jwt" "$WORK/req"

# --- cedar-agent ------------------------------------------------------------------

echo "starting cedar-agent $CEDAR_AGENT_VERSION"
CPORT=$(py freeport)
CEDAR_URL="http://127.0.0.1:$CPORT"
# Cleared environment: cedar-agent also reads unprefixed PORT, ADDR, DATA, …,
# and Rocket reads ROCKET_* and ./Rocket.toml (its cwd is the work dir).
(
  cd "$WORK/cedar-agent"
  exec env -i PATH="$PATH" HOME="$HOME" \
    CEDAR_AGENT_ADDR=127.0.0.1 CEDAR_AGENT_PORT="$CPORT" CEDAR_AGENT_LOG_LEVEL=error \
    ROCKET_LOG_LEVEL=critical ROCKET_CLI_COLORS=false \
    "$CEDAR_AGENT" --addr 127.0.0.1 --port "$CPORT" --log-level error
) >"$WORK/cedar-agent.log" 2>&1 &
CEDAR_PID=$!
PIDS+=("$CEDAR_PID")
wait_up cedar-agent "$CEDAR_PID" "$CEDAR_URL/v1" "$WORK/cedar-agent.log"
put() { # path file
  curl -fsS --max-time 10 -X PUT -H 'Content-Type: application/json' \
    --data-binary "@$2" -o "$WORK/put.out" "$CEDAR_URL$1" ||
    fail "cedar-agent PUT $1 failed: $(cat "$WORK/put.out" 2>/dev/null)"
}
put /v1/policies "$WORK/cedar-agent/policies.json"
put /v1/data "$WORK/req/cedar-agent-entities.json"
n=$(curl -fsS --max-time 5 "$CEDAR_URL/v1/policies" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$n" = 50 ] || fail "cedar-agent holds $n policies, not 50"

# --- one answer of each kind, checked before timing ------------------------------

MANDATE_AUTH="Bearer $PEP_TOKEN"
ask_mandate() { # body out
  curl -sS --max-time 10 -H 'Content-Type: application/json' -H "Authorization: $MANDATE_AUTH" \
    --data-binary "@$1" -o "$2" "$MANDATE_URL/v1/decide"
}
ask_cedar() { # body out
  curl -sS --max-time 10 -H 'Content-Type: application/json' \
    --data-binary "@$1" -o "$2" "$CEDAR_URL/v1/is_authorized"
}
echo "checking one answer of each side before timing:"
for want in allow deny; do
  ask_cedar "$WORK/req/cedar-agent-$want.json" "$WORK/check.out"
  py check cedar-agent "$want" "$WORK/check.out"
  ask_mandate "$WORK/req/mandate-$want.json" "$WORK/check.out"
  py check mandate "$want" "$WORK/check.out"
done

# --- timing -------------------------------------------------------------------------

# One wrk run; prints "p50_us rps". Fails on any error or unexpected answer.
# Its output is kept in the work dir as wrk-r{round}-{side}-c{conns}-{phase}.txt.
wrk_run() { # side conns threads secs phase
  local side=$1 conns=$2 threads=$3 secs=$4 url body auth expect out line
  local requests duration p50 bad errors
  out="$WORK/wrk-r$round-$side-c$conns-$5.txt"
  if [ "$side" = mandate ]; then
    url="$MANDATE_URL/v1/decide" body="$WORK/req/mandate-allow.json"
    auth=$MANDATE_AUTH expect='"decision":"allow"'
  else
    url="$CEDAR_URL/v1/is_authorized" body="$WORK/req/cedar-agent-allow.json"
    auth="" expect='"decision":"Allow"'
  fi
  BENCH_BODY=$body BENCH_AUTH=$auth BENCH_EXPECT=$expect \
    wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency -s "$LUA" "$url" \
    >"$out" 2>&1 || { cat "$out" >&2; fail "wrk failed against $side"; }
  line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; fail "no result from wrk against $side"; }
  for kv in ${line#BENCH }; do
    case $kv in
      requests=*) requests=${kv#*=} ;;
      duration_us=*) duration=${kv#*=} ;;
      p50_us=*) p50=${kv#*=} ;;
      bad=*) bad=${kv#*=} ;;
      errors=*) errors=${kv#*=} ;;
    esac
  done
  if [ "$requests" -eq 0 ] || [ "$bad" -ne 0 ] || [ "$errors" -ne 0 ]; then
    cat "$out" >&2
    fail "$side at $conns connections: $requests requests, $bad not the expected Allow, $errors errors"
  fi
  awk -v p="$p50" -v n="$requests" -v d="$duration" 'BEGIN { printf "%.1f %.0f\n", p, n / (d / 1e6) }'
}

measure() { # side conns threads -> "p50_us rps"
  if [ "$WARMUP_SECS" -gt 0 ]; then
    wrk_run "$1" "$2" "$3" "$WARMUP_SECS" warmup >/dev/null
  fi
  wrk_run "$1" "$2" "$3" "$SECS" timed
}

declare -A P50 RPS
SYNC=() SYNC_APPEND=()
echo
echo "rounds: $ROUNDS; each wrk run ${SECS} s after a ${WARMUP_SECS} s warm-up"
T_TIMING=$(now)
for ((round = 1; round <= ROUNDS; round++)); do
  sync=$(py fdatasync "$DATA" 200)
  SYNC+=("${sync% *}")
  SYNC_APPEND+=("${sync#* }")
  # Which side goes first alternates between rounds.
  if ((round % 2)); then sides=(cedar-agent mandate); else sides=(mandate cedar-agent); fi
  for side in "${sides[@]}"; do
    res=$(measure "$side" 1 1)
    P50[$side]="${P50[$side]:-} ${res% *}"
  done
  for side in "${sides[@]}"; do
    res=$(measure "$side" "$CONNECTIONS" "$THREADS")
    RPS[$side]="${RPS[$side]:-} ${res#* }"
  done
  printf 'round %d: p50 @1 (µs) cedar-agent %s, mandate %s; req/s @%d cedar-agent %s, mandate %s; fdatasync p50 %s µs (appended %s)\n' \
    "$round" "${P50[cedar-agent]##* }" "${P50[mandate]##* }" "$CONNECTIONS" \
    "${RPS[cedar-agent]##* }" "${RPS[mandate]##* }" "${SYNC[-1]}" "${SYNC_APPEND[-1]}"
done
T_DONE=$(now)

# --- results ---------------------------------------------------------------------------

# shellcheck disable=SC2086 # the per-round values are space-separated on purpose
{
  C_P50=$(py median ${P50[cedar-agent]})
  M_P50=$(py median ${P50[mandate]})
  C_RPS=$(py median ${RPS[cedar-agent]})
  M_RPS=$(py median ${RPS[mandate]})
}
S_P50=$(py median "${SYNC[@]}")
S_APPEND=$(py median "${SYNC_APPEND[@]}")

echo
echo "median of $ROUNDS rounds, loopback, $(nproc) CPUs; Mandate's data dir on $(df -P "$DATA" | awk 'NR == 2 { print $1 }') ($(findmnt -no FSTYPE -T "$DATA" 2>/dev/null || echo '?'))"
printf '| | p50 @1 conn (µs) | req/s @%d |\n' "$CONNECTIONS"
printf '|---|---:|---:|\n'
printf '| cedar-agent %s | %.1f | %.0f |\n' "$CEDAR_AGENT_VERSION" "$C_P50" "$C_RPS"
printf '| Mandate /v1/decide | %.1f | %.0f |\n' "$M_P50" "$M_RPS"
printf 'fdatasync p50: %.1f µs (4 KiB written in place + fdatasync, in the data dir; appended instead: %.1f µs)\n' "$S_P50" "$S_APPEND"
awk -v m="$M_P50" -v c="$C_P50" -v s="$S_P50" 'BEGIN {
  y = c + s; gap = m - y
  printf "goal p50: mandate ≤ cedar-agent + fdatasync: %.1f ≤ %.1f: %s (gap %+.1f µs)\n",
    m, y, (m <= y ? "met" : "not met"), gap
}'
awk -v m="$M_RPS" -v c="$C_RPS" -v n="$CONNECTIONS" 'BEGIN {
  r = m / c
  printf "goal throughput @%d: mandate/cedar-agent = %.2f (≥ 1.5): %s\n", n, r, (r >= 1.5 ? "met" : "not met")
}'
echo "(gap = mandate − (cedar-agent + fdatasync); ≤ 0 is met)"
echo "times: builds $((T_BUILT - T0)) s, setup $((T_TIMING - T_BUILT)) s, timing $((T_DONE - T_TIMING)) s"
echo "load average at end: $(cat /proc/loadavg)"
