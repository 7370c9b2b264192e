#!/usr/bin/env bash
# The test command (see README): installs the independent peers used by the
# end-to-end tests (PyJWT, and the RFC 9421 signer http-message-signatures,
# in a venv under the cargo target dir), then
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${MANDATE_TEST_VENV:-$CARGO_TARGET_DIR/test-venv}"
if ! "$venv/bin/python" -c 'import jwt, cryptography, http_message_signatures, requests' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'pyjwt[crypto]>=2.10,<3' \
    'http-message-signatures>=2,<3' 'requests>=2.32,<3'
fi
export MANDATE_TEST_PYTHON="$venv/bin/python"
exec cargo test --workspace --locked "$@"
