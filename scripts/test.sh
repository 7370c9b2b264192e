#!/usr/bin/env bash
# The test command (see README): installs the independent JWT verifier used
# by the end-to-end tests (PyJWT, in a venv under the cargo target dir), then
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${MANDATE_TEST_VENV:-$CARGO_TARGET_DIR/test-venv}"
if ! "$venv/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'pyjwt[crypto]>=2.10,<3'
fi
export MANDATE_TEST_PYTHON="$venv/bin/python"
exec cargo test --workspace --locked "$@"
