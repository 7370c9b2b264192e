#!/usr/bin/env bash
# Gateway benchmark (see docs/benchmarks.md): added latency and throughput
# of a call through the Mandate gateway beside the same call direct and
# through nginx proxy_pass, in one run on loopback. Installs Debian's nginx
# if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mandate-target}"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq && apt-get install -y -qq nginx-light || apt-get install -y -qq nginx
fi
exec cargo bench -p mandate-cli --bench gateway "$@"
