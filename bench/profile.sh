#!/usr/bin/env bash
# Profiles one flow of the server under load and draws its flamegraph:
#
#   bench/profile.sh cas|saml|oidc-code|client-credentials|refresh [SECONDS]
#
# Builds a profiling binary (release code, no LTO, line tables, symbols;
# target/profiling), serves the bench configuration of bench/run.sh on a
# free loopback port, drives the flow with tools/loadgen (64 connections for
# CAS, 32 for the others), and records the server with `perf record -g
# --call-graph dwarf` for SECONDS (default 8) in the middle of the run.
# Writes target/profiling/FLOW.perf.data, FLOW.txt (`perf report`, self time
# per symbol, ≥ 0.5 %) and, when inferno is installed (`cargo install
# inferno`), FLOW.svg. Needs Debian's `linux-perf` and
# kernel.perf_event_paranoid ≤ 1 (the script sets it when run as root).
set -euo pipefail
FLOW=${1:?usage: bench/profile.sh cas|saml|oidc-code|client-credentials|refresh [SECONDS]}
SECONDS_PROFILED=${2:-8}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/target/profiling"
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] && sysctl -qw kernel.perf_event_paranoid=1 || true

echo "==> profiling build (target/profiling)" >&2
CARGO_TARGET_DIR="$OUT/build" CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_STRIP=none \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --release --quiet -p castellan --manifest-path "$ROOT/Cargo.toml"
CARGO_TARGET_DIR="$ROOT/target/loadgen" cargo build --release --quiet \
    --manifest-path "$ROOT/tools/loadgen/Cargo.toml"
BIN="$OUT/build/release/castellan"
LG="$ROOT/target/loadgen/release/loadgen"

WORK=$(mktemp -d -t castellan-profile.XXXXXX)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=$("$LG" free-port)
HASH=$("$LG" hash --cheap --password bench-password)
# shellcheck source=bench/config.sh
. "$ROOT/bench/config.sh"
bench_config "$WORK/bench.toml" "$PORT" "$HASH" "$WORK/data"
RUST_LOG=info "$BIN" serve --config "$WORK/bench.toml" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 200); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/cas/health" 2>/dev/null && break; sleep 0.05; done

BASE="http://127.0.0.1:$PORT/cas"
RUN_FOR=$((SECONDS_PROFILED + 4))
case "$FLOW" in
    cas) load=(sso --url "$BASE" --connections 64 --duration "$RUN_FOR" --warmup 1) ;;
    saml) load=(oidc --url "$BASE" --mode saml --connections 32 --duration "$RUN_FOR" --warmup 1) ;;
    oidc-code) load=(oidc --url "$BASE" --mode code --connections 32 --duration "$RUN_FOR" --warmup 1) ;;
    client-credentials|refresh) load=(oidc --url "$BASE" --mode "$FLOW" --connections 32 --duration "$RUN_FOR" --warmup 1) ;;
    *) echo "unknown flow $FLOW" >&2; exit 2 ;;
esac
echo "==> $FLOW under load; perf records the server for ${SECONDS_PROFILED} s" >&2
"$LG" "${load[@]}" --server-pid "$SERVER" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD=$!
sleep 3
perf record -q -F 499 -g --call-graph dwarf,32768 -p "$SERVER" -o "$OUT/$FLOW.perf.data" -- sleep "$SECONDS_PROFILED" 2>/dev/null
wait "$LOAD"
grep '^RESULT' "$WORK/load.out" >&2 || true
perf report -i "$OUT/$FLOW.perf.data" --no-children --sort symbol --percent-limit 0.5 --stdio 2>/dev/null \
    | grep -v '^$' >"$OUT/$FLOW.txt"
echo "==> $OUT/$FLOW.txt (self time per symbol)" >&2
if command -v inferno-collapse-perf >/dev/null; then
    perf script -i "$OUT/$FLOW.perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$OUT/$FLOW.svg"
    echo "==> $OUT/$FLOW.svg" >&2
else
    echo "(cargo install inferno for the SVG flamegraph)" >&2
fi
