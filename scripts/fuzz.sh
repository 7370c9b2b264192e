#!/usr/bin/env bash
# Fuzzing, for a bounded time: every target of fuzz/ (cargo-fuzz, libFuzzer)
# runs MANDATE_FUZZ_SECS seconds (default 20), one after the other. A crash
# (a panic, a failed assertion, a timeout, running out of memory) fails the
# run; libFuzzer saves the input under fuzz/artifacts/TARGET/ (git-ignored)
# and the script prints the command that replays it.
#
# Run: scripts/fuzz.sh [TARGET...]   (from anywhere; all targets if none given)
#   MANDATE_FUZZ_SECS=600 scripts/fuzz.sh httpsig   fuzzes one target longer.
#   Targets: every file of fuzz/fuzz_targets/ (credential, proof, policy,
#   jwks, httpsig, names, mcp_message, chain, evidence; docs/fuzzing.md says what each
#   asserts).
#
# What it needs, installed on first use: cargo-fuzz (CARGO_FUZZ_VERSION,
# `cargo install --locked`) into ${XDG_CACHE_HOME:-$HOME/.cache}/mandate-fuzz.
# The targets build with the repository's stable toolchain
# (rust-toolchain.toml) and `--sanitizer none`, which needs no nightly flag:
# libFuzzer's coverage instrumentation is stable rustc's; AddressSanitizer
# is not (`-Zsanitizer`), and mandate-core forbids `unsafe`.
# MANDATE_FUZZ_SANITIZER=address adds it for the dependencies' `unsafe`
# code, on stable through RUSTC_BOOTSTRAP=1 (set for the fuzz builds only;
# about 1.5x the build time, two thirds of the speed). They build with
# debug assertions (overflow checks) into their own target dir,
# MANDATE_FUZZ_TARGET_DIR (default $HOME/.cache/mandate-fuzz-target, with
# `-address` appended for that sanitizer; never CARGO_TARGET_DIR, which
# holds the workspace built without the fuzzing flags).
#
# Corpus: the committed seeds of fuzz/seeds/TARGET/ (read only) and a
# working corpus fuzz/corpus/TARGET/ (git-ignored), where libFuzzer keeps
# what it finds, so later runs on the same checkout start from there.
#
# Settings: MANDATE_FUZZ_SECS (20, per target), MANDATE_FUZZ_TIMEOUT_SECS
# (10: one input taking longer is a crash), MANDATE_FUZZ_RSS_MB (2048),
# MANDATE_FUZZ_SANITIZER (none, or address), MANDATE_FUZZ_TARGET_DIR,
# MANDATE_FUZZ_BUILD_ONLY=1 (build, run nothing).
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO_FUZZ_VERSION=0.13.2
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mandate-fuzz"
SANITIZER="${MANDATE_FUZZ_SANITIZER:-none}"
case "$SANITIZER" in
  none) TARGET_DIR="${MANDATE_FUZZ_TARGET_DIR:-$HOME/.cache/mandate-fuzz-target}" ;;
  address) TARGET_DIR="${MANDATE_FUZZ_TARGET_DIR:-$HOME/.cache/mandate-fuzz-target-address}" ;;
  *) echo "fuzz: MANDATE_FUZZ_SANITIZER must be none or address" >&2; exit 2 ;;
esac
SECS="${MANDATE_FUZZ_SECS:-20}"
TIMEOUT_SECS="${MANDATE_FUZZ_TIMEOUT_SECS:-10}"
RSS_MB="${MANDATE_FUZZ_RSS_MB:-2048}"
ALL=()
for f in fuzz/fuzz_targets/*.rs; do
  f=${f##*/}
  ALL+=("${f%.rs}")
done

fail() {
  echo "fuzz: $*" >&2
  exit 1
}
for v in SECS TIMEOUT_SECS RSS_MB; do
  case "${!v}" in
    '' | *[!0-9]*) fail "MANDATE_FUZZ_$v must be a whole number" ;;
  esac
done
[ "$SECS" -ge 1 ] || fail "MANDATE_FUZZ_SECS must be at least 1"

TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || fail "no target \`$t\` (targets: ${ALL[*]})"
done
now() { date +%s; }
T0=$(now)

# --- cargo-fuzz ----------------------------------------------------------------

CARGO_FUZZ="$CACHE/bin/cargo-fuzz"
if [ ! -x "$CARGO_FUZZ" ] || [ "$("$CARGO_FUZZ" fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $CACHE (cargo install, about a minute)"
  CARGO_TARGET_DIR="$CACHE/build" \
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$CACHE" --quiet
  rm -rf "$CACHE/build"
fi
[ -x "$CARGO_FUZZ" ] || fail "no cargo-fuzz at $CARGO_FUZZ"
# `cargo fuzz` runs cargo-fuzz from PATH.
export PATH="$CACHE/bin:$PATH"

# --- build --------------------------------------------------------------------------

# The flags every build and run shares: the same ones, or cargo rebuilds.
FLAGS=(--sanitizer "$SANITIZER" --debug-assertions)
export CARGO_TARGET_DIR="$TARGET_DIR"
# Stable rustc takes `-Zsanitizer` only so.
[ "$SANITIZER" = none ] || export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# cargo fuzz has no --locked: fuzz/Cargo.lock must be up to date already.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null ||
  fail "fuzz/Cargo.lock is out of date (run: cargo update --workspace --manifest-path fuzz/Cargo.toml)"
echo "building the fuzz targets (target dir $CARGO_TARGET_DIR)"
cargo fuzz build "${FLAGS[@]}"
T_BUILT=$(now)
if [ "${MANDATE_FUZZ_BUILD_ONLY:-0}" = 1 ]; then
  echo "fuzz: built in $((T_BUILT - T0)) s"
  exit 0
fi

# --- run ------------------------------------------------------------------------------

FAILED=()
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t" artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  # Beside the target's artifacts, not among them (cargo fuzz lists every
  # file there as a failing input).
  log="fuzz/artifacts/$t.log"
  echo "fuzzing $t for $SECS s"
  # The working corpus first: libFuzzer adds what it finds to the first
  # directory only.
  if cargo fuzz run "${FLAGS[@]}" "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$SECS" -timeout="$TIMEOUT_SECS" -rss_limit_mb="$RSS_MB" \
    -artifact_prefix="$ROOT/$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "  $t: ${runs:-?} inputs, corpus $(find "$corpus" -type f | wc -l) files"
  else
    FAILED+=("$t")
    grep -v '^\s*Compiling' "$log" | tail -n 80 >&2
    echo "fuzz: \`$t\` failed (whole log: $log)" >&2
  fi
done
T_DONE=$(now)

echo "times: build $((T_BUILT - T0)) s, runs $((T_DONE - T_BUILT)) s"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "fuzz: replay an input (or a directory of them) with:" >&2
  bootstrap=""
  [ "$SANITIZER" = none ] || bootstrap="RUSTC_BOOTSTRAP=1 "
  echo "  ${bootstrap}PATH=$CACHE/bin:\$PATH CARGO_TARGET_DIR=$TARGET_DIR cargo fuzz run ${FLAGS[*]} TARGET INPUT" >&2
  echo "fuzz: and keep it as a regression test in the crate that owns the function" >&2
  fail "failed: ${FAILED[*]} (inputs under fuzz/artifacts/)"
fi
echo "fuzz: every target ran $SECS s without a crash"
