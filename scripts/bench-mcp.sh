#!/usr/bin/env bash
# MCP gateway benchmark (see docs/benchmarks.md): latency and throughput of
# a trivial tools/call direct and through the Mandate MCP gateway, in the
# session era and statelessly (2026-07-28), in one run on loopback. Makes
# the Python venv with the MCP SDK if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mandate-target}"
venv="${MANDATE_TEST_VENV:-$CARGO_TARGET_DIR/test-venv}"
if ! "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'mcp==2.3.0'
fi
export MANDATE_TEST_PYTHON="$venv/bin/python"
exec cargo bench -p mandate-cli --bench mcp "$@"
