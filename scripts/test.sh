#!/usr/bin/env bash
# The test command (see README): installs the independent peers used by the
# end-to-end tests (PyJWT, the RFC 9421 signer http-message-signatures, the
# official MCP Python SDK and the reference server mcp-server-git, in a venv
# under the cargo target dir), then
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${MANDATE_TEST_VENV:-$CARGO_TARGET_DIR/test-venv}"
if ! "$venv/bin/python" -c 'import jwt, cryptography, http_message_signatures, requests, mcp, mcp_server_git' 2>/dev/null \
  || [ "$("$venv/bin/pip" show mcp 2>/dev/null | sed -n 's/^Version: //p')" != 2.3.0 ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'pyjwt[crypto]>=2.10,<3' \
    'http-message-signatures>=2,<3' 'requests>=2.32,<3' \
    'mcp==2.3.0' 'mcp-server-git==2026.10.19'
fi
export MANDATE_TEST_PYTHON="$venv/bin/python"
exec cargo test --workspace --locked "$@"
