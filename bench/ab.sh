#!/usr/bin/env bash
# Compares CAS SSO round trips of several castellan binaries on this machine:
# interleaved rounds of each binary and of `loadgen ceiling`, so that the
# VM's changes of speed (up to 30 % here) hit every contender alike. Prints
# each one's rates, median, server CPU per round trip, and median ratio to
# the ceiling.
#
#   bench/ab.sh ROUNDS BIN...      # e.g. bench/ab.sh 4 /tmp/castellan-old target/release/castellan
#
# Knobs (environment): SECONDS_PER_ROUND (5), CONNECTIONS (64), PORT (41705),
# LOADGEN_THREADS (1: the loadgen's runtime threads, as in bench/run.sh).
# Needs tools/loadgen built (bench/run.sh builds it). Loopback only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LG="$ROOT/target/loadgen/release/loadgen"
ROUNDS=${1:?usage: bench/ab.sh ROUNDS BIN...}
shift
[[ $# -ge 1 ]] || { echo "usage: bench/ab.sh ROUNDS BIN..." >&2; exit 2; }
[[ -x "$LG" ]] || { echo "missing $LG: run bench/run.sh once, or build tools/loadgen" >&2; exit 1; }
SECS=${SECONDS_PER_ROUND:-5}
CONNS=${CONNECTIONS:-64}
THREADS=${LOADGEN_THREADS:-1}
PORT=${PORT:-41705}
CPORT=$((PORT + 1))
# shellcheck source=bench/config.sh
. "$ROOT/bench/config.sh"
bench_setup ab "$PORT"

# round URL PID: one saturation run; prints "rate cpu".
round() {
    local line
    line=$("$LG" --threads "$THREADS" sso --url "$1" --connections "$CONNS" --duration "$SECS" --warmup 1 --server-pid "$2" 2>/dev/null | grep '^RESULT')
    echo "$(grep -o 'rate=[0-9.]*' <<<"$line" | cut -d= -f2) $(grep -o 'server_cpu_us_per_rt=[0-9.]*' <<<"$line" | cut -d= -f2)"
}

wait_healthy() {
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    exit 1
}

declare -A RATES CPUS
for _ in $(seq 1 "$ROUNDS"); do
    for bin in "$@" ceiling; do
        if [[ "$bin" == ceiling ]]; then
            "$LG" ceiling --listen "127.0.0.1:$CPORT" --workers 2 >/dev/null 2>&1 &
            PID=$!
            sleep 0.5
            out=$(round "http://127.0.0.1:$CPORT/cas" "$PID")
        else
            rm -rf "$WORK/data" && mkdir -p "$WORK/data"
            RUST_LOG=info "$bin" serve --config "$WORK/ab.toml" >"$WORK/server.log" 2>&1 &
            PID=$!
            wait_healthy "http://127.0.0.1:$PORT/cas/health"
            out=$(round "http://127.0.0.1:$PORT/cas" "$PID")
        fi
        kill "$PID" && wait "$PID" 2>/dev/null || true
        PID=
        RATES[$bin]+="${out% *} "
        CPUS[$bin]+="${out#* } "
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
CEIL=$(median <<<"${RATES[ceiling]}")
for bin in "$@" ceiling; do
    m=$(median <<<"${RATES[$bin]}")
    printf '%s: rates %s| median %.0f /s, %.2f of the ceiling | server CPU µs per round trip: %s\n' \
        "$bin" "${RATES[$bin]}" "$m" "$(awk -v a="$m" -v b="$CEIL" 'BEGIN {print a / b}')" "${CPUS[$bin]}"
done
