#!/usr/bin/env bash
# The API fuzz run: property-based tests of the live HTTP API against its
# own OpenAPI document (schemathesis, from PyPI, in a venv under the cargo
# target dir). Builds `mandate`, starts `mandate serve` on a temp data dir
# after `mandate init`, seeds an agent, a mission and a vault route so path
# parameters can name real objects, then runs schemathesis against
# /openapi.json as the admin with a fixed seed and a bounded number of
# examples per operation. Exits non-zero on any failure.
#
# Checks: every check schemathesis has but one. Among them: no 5xx
# (not_a_server_error); every status, content type and documented header
# as the document says (status_code_conformance, content_type_conformance,
# response_headers_conformance); every body valid against its schema
# (response_schema_conformance); what the schema forbids is refused
# (negative_data_rejection); no answer without credentials (ignored_auth);
# 405 with `Allow` for methods a path does not take (unsupported_method,
# allow_header_conformance).
#
# Excluded: positive_data_acceptance, which expects 2xx for every request
# the schema allows. The API checks meaning no schema can state, and
# refuses it with 400: Cedar policy text that does not parse, a TTL or
# budget outside the configured limits, free text with control characters,
# a prune through a sequence number that is no checkpoint, an approval
# grant whose terms do not fit together.
#
# Extra arguments go to `schemathesis run` (e.g. `--max-examples 200` or
# `--seed 7`). Environment: API_FUZZ_EXAMPLES (default 50) and
# API_FUZZ_SEED (default 20240601); MANDATE_FUZZ_VENV to use another venv;
# API_FUZZ_REPORT_DIR to keep the JUnit report (default: a temp dir, kept
# only when the run fails).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
schemathesis_version=4.32.5
venv="${MANDATE_FUZZ_VENV:-$CARGO_TARGET_DIR/api-fuzz-venv}"
examples="${API_FUZZ_EXAMPLES:-50}"
seed="${API_FUZZ_SEED:-20240601}"

if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $schemathesis_version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

cargo build --locked --quiet --bin mandate
bin="$CARGO_TARGET_DIR/debug/mandate"

work="$(mktemp -d)"
server_pid=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/server.log" ]; then
    echo "--- errors in the server log ---" >&2
    grep -E ' ERROR ' "$work/server.log" | tail -n 20 >&2 || true
  fi
  if [ "$rc" -eq 0 ] || [ -n "${API_FUZZ_REPORT_DIR:-}" ]; then
    rm -rf "$work"
  else
    echo "report and server log kept in $work" >&2
  fi
}
trap cleanup EXIT

# A route with `auth = "vault"`, so PUT/DELETE /v1/vault/{route}/… can
# reach a real route. Its upstream is never called.
data="$work/data"
mkdir -m 700 "$data"
cat >"$data/mandate.toml" <<'EOF'
[[routes]]
name = "ledger"
upstream = "http://127.0.0.1:9"
auth = "vault"

[[routes.rules]]
method = "GET"
path = "/entries/{id}"
action = "read"
EOF
token="$(MANDATE_LOG=warn "$bin" init --json --data "$data" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"

# The files exist before the server starts: the background job opens them
# itself, and on a loaded machine the loop below can look first.
: >"$work/stdout"
MANDATE_LOG=warn "$bin" serve --listen 127.0.0.1:0 --data "$data" \
  >"$work/stdout" 2>"$work/server.log" &
server_pid=$!
url=""
for _ in $(seq 300); do
  url="$(sed -n 's/^mandate listening on \([^ ]*\).*/\1/p' "$work/stdout")"
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "mandate serve exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "mandate serve did not start" >&2; exit 1; }

# A little data for path parameters to find.
cli() { MANDATE_SERVER="$url" MANDATE_TOKEN="$token" MANDATE_LOG=warn "$bin" "$@"; }
cli agent register fuzz-agent >/dev/null
mission="$(cli --json mission create --agent fuzz-agent --goal "be fuzzed" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["mission"]["id"])')"
printf 'hunter2' | cli vault put ledger admin --basic admin >/dev/null

# Path parameters draw a seeded value half of the time, a generated one
# otherwise. Nothing is cached between runs: a run depends on its seed.
cat >"$work/schemathesis.toml" <<EOF
[cache]
enabled = false

[dictionaries.agents]
values = ["fuzz-agent"]
[dictionaries.missions]
values = ["$mission"]
[dictionaries.principals]
values = ["admin"]
[dictionaries.routes]
values = ["ledger"]
[dictionaries.seqs]
values = [0, 1, 2, 3]

[[operations]]
include-path-regex = "^/v1/agents/"
parameters = { "path.name" = { dictionary = "agents", probability = 0.5 } }

[[operations]]
include-path-regex = "^/v1/missions/\\\\{id\\\\}"
parameters = { "path.id" = { dictionary = "missions", probability = 0.5 } }

[[operations]]
include-path-regex = "^/v1/vault/"
parameters = { "path.route" = { dictionary = "routes", probability = 0.5 }, "path.principal" = { dictionary = "principals", probability = 0.5 } }

[[operations]]
include-path-regex = "^/v1/audit/\\\\{seq\\\\}"
parameters = { "path.seq" = { dictionary = "seqs", probability = 0.5 } }
EOF

# One worker: with two, hypothesis describes strategies from two threads at
# once and CPython 3.11's `ast` module (gh-106905, its recursion-depth
# bookkeeping is not thread-safe) fails now and then with "AST constructor
# recursion depth mismatch", a fuzzer error rather than a finding.
reports="${API_FUZZ_REPORT_DIR:-$work/reports}"
mkdir -p "$reports"
status=0
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$url/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$examples" \
  --seed "$seed" \
  --workers 1 \
  --report junit --report-junit-path "$reports/junit.xml" \
  --no-color \
  "$@" || status=$?

# One line a CI reader understands: the operations (and the stateful
# run) that passed and failed.
python3 - "$reports/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

try:
    suite = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    sys.exit(0)
tests = int(suite.get("tests", 0))
failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
print(f"api-fuzz: {tests - failed} passed, {failed} failed")
EOF
exit "$status"
