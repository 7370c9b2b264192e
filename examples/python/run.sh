#!/usr/bin/env bash
# The Python example agent, end to end (README, "A Python agent"), from the
# repository root, with the README's server and upstreams running:
#
#   cargo run -q --bin mandate -- demo upstreams                         # terminal 1
#   cargo run -q --bin mandate -- serve --config examples/mandate.toml   # terminal 2
#   examples/python/run.sh                                               # terminal 3
#
# It installs the SDK from ./sdk/python into a venv of its own
# (examples/python/.venv), has a person (alice) delegate a mission to a new
# agent with the CLI, runs agent.py with the mission's start token, and
# plays alice approving the refund when the agent asks.
#
# MANDATE_TOKEN: act as that principal (the README's $ALICE_TOKEN, say)
# instead of bootstrapping a fresh data dir with `mandate init`. When it
# bootstraps, it prints the admin's and alice's API tokens, once: keep them
# to run it again, or to go on with that data dir.
# MANDATE (the CLI command), PYTHON (a Python that imports `mandate`),
# MANDATE_SERVER and MANDATE_DATA override the defaults.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MANDATE_SERVER="${MANDATE_SERVER:-http://127.0.0.1:7878}"
read -r -a cli <<< "${MANDATE:-cargo run -q --bin mandate --}"
mandate() { "${cli[@]}" "$@"; }

if [ -z "${PYTHON:-}" ]; then
  venv=examples/python/.venv
  if ! "$venv/bin/python" -c 'import mandate.mcp' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check './sdk/python[mcp]'
  fi
  PYTHON="$venv/bin/python"
fi

if [ -z "${MANDATE_TOKEN:-}" ]; then
  if ! admin=$(mandate init | grep -o 'mdt_[A-Za-z0-9_-]*'); then
    echo "error: the data dir already has principals; set MANDATE_TOKEN to one's API token (the README's \$ALICE_TOKEN)" >&2
    exit 1
  fi
  # Printed once, as `mandate init` prints it: without them the data dir is
  # of no further use (a second `init` is refused).
  echo "new data dir: the admin's API token (printed once; keep it): $admin"
  MANDATE_TOKEN=$(MANDATE_TOKEN=$admin mandate principal add alice | grep -o 'mdt_[A-Za-z0-9_-]*')
  echo "alice's API token (printed once; keep it): $MANDATE_TOKEN"
  echo "  to run this again on this data dir: MANDATE_TOKEN=$MANDATE_TOKEN examples/python/run.sh"
fi
export MANDATE_TOKEN

agent="python-agent-$(date +%s)"
mandate agent register "$agent" >/dev/null
dir=$(mktemp -d)
approver=
trap '[ -z "$approver" ] || kill "$approver" 2>/dev/null; rm -rf "$dir"' EXIT
printf 'permit(principal, action == Action::"read", resource);\n' > "$dir/scope.cedar"
START=$(mandate mission create --agent "$agent" --goal "Reconcile invoice 42" \
  --scope "$dir/scope.cedar" --ttl 1h --budget 50 | grep -o 'mst_[A-Za-z0-9_-]*')

# alice, in her own terminal: approves the refund once the agent asks.
(
  for _ in $(seq 600); do
    id=$(mandate approvals list | grep 'refunds/42' | grep -o 'apr_[0-9a-f]*' | head -n 1 || true)
    if [ -n "$id" ]; then
      mandate approvals approve "$id" >/dev/null
      echo "   (alice approved $id)"
      exit 0
    fi
    sleep 0.5
  done
) &
approver=$!
"$PYTHON" examples/python/agent.py "$START" --state "$dir/mission.json" --wait 120
wait "$approver"
approver=
