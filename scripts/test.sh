#!/usr/bin/env bash
# The test command (see README): installs the independent peers used by the
# end-to-end tests (PyJWT, the RFC 9421 signer http-message-signatures, the
# AAuth verifier aauth-signing, the official MCP Python SDK and the reference
# server mcp-server-git, in a venv
# under the cargo target dir, with what the Python SDK's checks need (pytest,
# pytest-asyncio, httpx, rfc8785, mypy, ruff); the official MCP TypeScript
# SDK, jose and server-everything from npm, exactly as crates/mandate-cli/tests/mcp/ts-client
# locks them, under the same dir; playwright-core and @axe-core/playwright,
# as crates/mandate-cli/tests/console locks them, under the same dir, and
# Debian's chromium for them to drive), then runs every test of the workspace.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${MANDATE_TEST_VENV:-$CARGO_TARGET_DIR/test-venv}"
if ! "$venv/bin/python" -c 'import jwt, cryptography, http_message_signatures, requests, mcp, mcp_server_git, aauth_signing, pytest, pytest_asyncio, httpx, rfc8785, mypy, ruff' 2>/dev/null \
  || ! "$venv/bin/pip" show types-requests >/dev/null 2>&1 \
  || [ "$("$venv/bin/pip" show mcp 2>/dev/null | sed -n 's/^Version: //p')" != 2.3.0 ] \
  || [ "$("$venv/bin/pip" show aauth-signing 2>/dev/null | sed -n 's/^Version: //p')" != 0.2.0 ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'pyjwt[crypto]>=2.10,<3' \
    'http-message-signatures>=2,<3' 'requests>=2.32,<3' \
    'mcp==2.3.0' 'mcp-server-git==2026.10.19' 'aauth-signing==0.2.0' \
    'httpx>=0.27,<1' 'rfc8785>=0.1.4,<1' 'pytest>=8,<10' 'pytest-asyncio>=0.24,<2' \
    'mypy>=2,<3' 'ruff>=0.17,<0.18' 'types-requests>=2.32,<3'
fi
export MANDATE_TEST_PYTHON="$venv/bin/python"
ts_lock=crates/mandate-cli/tests/mcp/ts-client
ts_dir="${MANDATE_TEST_TS_CLIENT_DIR:-$CARGO_TARGET_DIR/mcp-ts-client}"
if ! cmp -s "$ts_lock/package-lock.json" "$ts_dir/package-lock.json" \
  || [ ! -d "$ts_dir/node_modules/@modelcontextprotocol/client" ]; then
  command -v npm >/dev/null || { echo "error: npm is needed for the TypeScript MCP client's tests" >&2; exit 1; }
  rm -rf "$ts_dir/node_modules" && mkdir -p "$ts_dir"
  cp "$ts_lock/package.json" "$ts_lock/package-lock.json" "$ts_dir/"
  (cd "$ts_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
export MANDATE_TEST_TS_CLIENT_DIR="$ts_dir"
# The console's browser test: Debian's Chromium (never `playwright install`),
# driven by playwright-core.
if [ ! -x "${MANDATE_TEST_CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "error: the console's browser test needs Debian's package \`chromium\` (/usr/bin/chromium):" >&2
    echo "       apt-get install chromium (as root), or set MANDATE_TEST_CHROMIUM to a Chromium" >&2
    exit 1
  fi
fi
console_lock=crates/mandate-cli/tests/console
console_dir="${MANDATE_TEST_CONSOLE_DIR:-$CARGO_TARGET_DIR/console-browser}"
if ! cmp -s "$console_lock/package-lock.json" "$console_dir/package-lock.json" \
  || [ ! -d "$console_dir/node_modules/playwright-core" ]; then
  command -v npm >/dev/null || { echo "error: npm is needed for the console's browser test" >&2; exit 1; }
  rm -rf "$console_dir/node_modules" && mkdir -p "$console_dir"
  cp "$console_lock/package.json" "$console_lock/package-lock.json" "$console_dir/"
  (cd "$console_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
export MANDATE_TEST_CONSOLE_DIR="$console_dir"
exec cargo test --workspace --locked "$@"
