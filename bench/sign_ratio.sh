#!/usr/bin/env bash
# The SAML or OIDC code flow against the RSA signing limit, in alternating
# rounds: `openssl speed -multi NPROC rsa2048` (3 s), then the flow, then
# openssl again, ... Each round's ratio is its rate over the mean of the
# limits measured just before and just after it: on a VM whose speed moves
# by 30 % within minutes, a limit measured further away misleads.
#
#   bench/sign_ratio.sh ROUNDS saml|code [BIN]   # BIN: target/release/castellan
#
# Knobs (environment): SECONDS_PER_ROUND (8), CONNECTIONS (32), PORT (41711).
# Needs tools/loadgen built (bench/run.sh builds it). Loopback only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LG="$ROOT/target/loadgen/release/loadgen"
ROUNDS=${1:?usage: bench/sign_ratio.sh ROUNDS saml|code [BIN]}
FLOW=${2:?usage: bench/sign_ratio.sh ROUNDS saml|code [BIN]}
BIN=${3:-$ROOT/target/release/castellan}
[[ "$FLOW" == saml || "$FLOW" == code ]] || { echo "FLOW is saml or code" >&2; exit 2; }
[[ -x "$LG" ]] || { echo "missing $LG: run bench/run.sh once, or build tools/loadgen" >&2; exit 1; }
SECS=${SECONDS_PER_ROUND:-8}
CONNS=${CONNECTIONS:-32}
PORT=${PORT:-41711}
NPROC=$(nproc)
# shellcheck source=bench/config.sh
. "$ROOT/bench/config.sh"
bench_setup sign "$PORT"

field() { grep -o "$1=[0-9.]*" <<<"$2" | cut -d= -f2; }

before=$(rsa_speed -multi "$NPROC")
for _ in $(seq 1 "$ROUNDS"); do
    rm -rf "$WORK/data" && mkdir -p "$WORK/data"
    RUST_LOG=warn "$BIN" serve --config "$WORK/sign.toml" >"$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/cas/health" 2>/dev/null && break
        sleep 0.1
    done
    line=$("$LG" oidc --url "http://127.0.0.1:$PORT/cas" --user bench --password bench-password \
        --mode "$FLOW" --connections "$CONNS" --duration "$SECS" --warmup 1 --server-pid "$PID" \
        2>/dev/null | grep '^RESULT')
    kill "$PID" && wait "$PID" 2>/dev/null || true
    PID=
    after=$(rsa_speed -multi "$NPROC")
    awk -v f="$FLOW" -v r="$(field rate "$line")" -v a="$before" -v b="$after" \
        -v s="$(field server_cpu_us_per_rt "$line")" -v l="$(field client_cpu_us_per_rt "$line")" \
        -v e="$(field errors "$line")" \
        'BEGIN {printf "%s: %.0f /s (%s errors), limit %.0f..%.0f /s: %.2f; server %s µs, loadgen %s µs per round trip\n", f, r, e, a, b, r / ((a + b) / 2), s, l}'
    before=$after
done
