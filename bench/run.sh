#!/usr/bin/env bash
# Castellan HTTP benchmarks: builds the server and tools/loadgen, runs every
# measurement against a server on 127.0.0.1, prints a markdown report on
# stdout (progress on stderr) and keeps a copy with the raw lines in
# target/bench/. Takes about 3 minutes once the builds are cached.
#
#   bench/run.sh                  # everything
#   SKIP_BUILD=1 bench/run.sh     # reuse target/release/castellan and loadgen
#   SKIP_CRITERION=1 bench/run.sh # leave out `cargo bench -p castellan-core`
#
# Knobs (environment): SSO_CONNECTIONS (64), SSO_SECONDS (10), SESSIONS
# (100000), SESSION_CONCURRENCY (16), LOGIN_SECONDS (10), LOGIN_CONNECTIONS
# (4), STARTS (5), LOADGEN_THREADS (1), SERVER_RUST_LOG (info).
#
# Only loopback traffic; every load phase is bounded in time or count.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SSO_CONNECTIONS=${SSO_CONNECTIONS:-64}
SSO_SECONDS=${SSO_SECONDS:-10}
SESSIONS=${SESSIONS:-100000}
SESSION_CONCURRENCY=${SESSION_CONCURRENCY:-16}
LOGIN_SECONDS=${LOGIN_SECONDS:-10}
LOGIN_CONNECTIONS=${LOGIN_CONNECTIONS:-4}
STARTS=${STARTS:-5}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
PASSWORD=bench-password
SERVICE=https://app.example.org/home

LG_TARGET="$ROOT/target/loadgen"
BIN="$ROOT/target/release/castellan"
LG="$LG_TARGET/release/loadgen"
OUT_DIR="$ROOT/target/bench"
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d -t castellan-bench.XXXXXX)
RAW="$OUT_DIR/raw.txt"
: >"$RAW"
SERVER_PID=

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- build ---------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release (castellan)"
    (cd "$ROOT" && cargo build --release --quiet)
    log "cargo build --release (tools/loadgen, CARGO_TARGET_DIR=target/loadgen)"
    CARGO_TARGET_DIR="$LG_TARGET" cargo build --release --quiet \
        --manifest-path "$ROOT/tools/loadgen/Cargo.toml"
fi
[[ -x "$BIN" && -x "$LG" ]] || { echo "missing $BIN or $LG: run without SKIP_BUILD" >&2; exit 1; }

# --- helpers -------------------------------------------------------------
# field LINE KEY: the value of key=value in a RESULT line.
field() { grep -o "\\b$2=[^ ]*" <<<"$1" | head -n1 | cut -d= -f2; }

# run_lg ARGS...: runs loadgen, keeps its RESULT line in $RAW, prints it.
run_lg() {
    local line
    line=$("$LG" --threads "$LOADGEN_THREADS" "$@" 2>>"$WORK/loadgen.log" | grep '^RESULT' | tail -n1) || {
        echo "loadgen $1 failed:" >&2
        tail -n 20 "$WORK/loadgen.log" >&2
        exit 1
    }
    echo "$line" >>"$RAW"
    echo "$line"
}

# write_config NAME PORT HASH: a bench configuration in $WORK/NAME.toml.
write_config() {
    local name=$1 port=$2 hash=$3
    mkdir -p "$WORK/$name-data"
    cat >"$WORK/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port/cas"
data_dir = "$WORK/$name-data"

[throttle]
failures_per_user = 1000000
failures_per_ip = 1000000

[[users]]
username = "bench"
password_hash = "$hash"
attributes = { mail = "bench@example.org", cn = "Bench User", memberOf = ["staff", "faculty"] }

[[services]]
name = "app"
protocol = "cas"
service = '^https://app\.example\.org/.*\$'
release = ["mail", "cn", "memberOf"]
EOF
    "$BIN" check-config --config "$WORK/$name.toml" >/dev/null
}

# start_server NAME PORT: serve $WORK/NAME.toml, wait for /health.
start_server() {
    local name=$1 port=$2
    # The server's default log level (info: one line per login, none per
    # SSO round trip); SERVER_RUST_LOG=warn measures without it.
    RUST_LOG=${SERVER_RUST_LOG:-info} "$BIN" serve --config "$WORK/$name.toml" \
        >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$port/cas/health" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "server $name did not become healthy; its log:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

stop_server() {
    if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# verdict VALUE OP LIMIT: "yes" or "**no**".
verdict() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
    ok = (op == ">=") ? (v >= l) : (v < l); print (ok ? "yes" : "**no**") }'; }

# --- machine -------------------------------------------------------------
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
NPROC=$(nproc)
KERNEL=$(uname -sr)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
RUSTC=$(rustc --version)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- core protocols web delegation 2>/dev/null | head -c1)
[[ -n "$DIRTY" ]] && COMMIT="$COMMIT (server sources modified)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)

# --- 1. binary size, start time ------------------------------------------
SIZE_BYTES=$(stat -c %s "$BIN")
log "binary: $SIZE_BYTES bytes"

CHEAP_HASH=$("$LG" hash --cheap --password "$PASSWORD")
PORT=$("$LG" free-port)
write_config cheap "$PORT" "$CHEAP_HASH"
BASE="http://127.0.0.1:$PORT/cas"

log "start time: $STARTS starts, polling /health"
STARTUP=$("$LG" startup --bin "$BIN" --config "$WORK/cheap.toml" --url "$BASE" --runs "$STARTS" 2>>"$WORK/loadgen.log")
echo "$STARTUP" >>"$RAW"
START_MS=$(field "$STARTUP" median_ms)

# --- 2. idle RSS, SSO saturation, latency at half rate -------------------
start_server cheap "$PORT"
sleep 1
RSS_IDLE=$(rss_kib "$SERVER_PID")
log "idle RSS: $RSS_IDLE KiB"

WRK_RPS=
if command -v wrk >/dev/null; then
    log "wrk: GET /health, 64 connections, 5 s (HTTP stack floor, for context)"
    WRK_OUT=$(wrk -t1 -c64 -d5s "$BASE/health" 2>&1 || true)
    echo "wrk /health: $(grep -E 'Requests/sec' <<<"$WRK_OUT")" >>"$RAW"
    WRK_RPS=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$WRK_OUT")
fi

log "SSO round trips at saturation: $SSO_CONNECTIONS connections, $SSO_SECONDS s"
SAT=$(run_lg sso --url "$BASE" --service "$SERVICE" --user bench --password "$PASSWORD" \
    --connections "$SSO_CONNECTIONS" --duration "$SSO_SECONDS" --warmup 1)
SAT_RATE=$(field "$SAT" rate)
SAT_ERRORS=$(field "$SAT" errors)
RSS_AFTER_SSO=$(rss_kib "$SERVER_PID")
stop_server

# A fresh server for the paced run: the saturation run's sessions carry
# long service lists (see BENCHMARKS.md).
start_server cheap "$PORT"
HALF=$(awk -v r="$SAT_RATE" 'BEGIN {printf "%.0f", r / 2}')
log "SSO round trips paced at $HALF/s (half the saturation rate), $SSO_SECONDS s"
PACED=$(run_lg sso --url "$BASE" --service "$SERVICE" --user bench --password "$PASSWORD" \
    --connections "$SSO_CONNECTIONS" --duration "$SSO_SECONDS" --warmup 1 --rate "$HALF")
stop_server

# --- 3. RSS with 100k live sessions --------------------------------------
start_server cheap "$PORT"
log "creating $SESSIONS SSO sessions (cheap argon2id), concurrency $SESSION_CONCURRENCY"
SESS=$(run_lg sessions --url "$BASE" --service "$SERVICE" --user bench --password "$PASSWORD" \
    --count "$SESSIONS" --concurrency "$SESSION_CONCURRENCY")
RSS_SESSIONS=$(rss_kib "$SERVER_PID")
ENTRIES=$(curl -fsS "$BASE/metrics" | awk '/^castellan_memory_store_entries|^memory_store_entries/ {print $2}' | head -n1)
log "RSS with $SESSIONS sessions: $RSS_SESSIONS KiB (store entries: ${ENTRIES:-?})"
stop_server

# --- 4. password logins with default argon2 parameters -------------------
DEFAULT_HASH=$(printf '%s\n' "$PASSWORD" | "$BIN" hash-password)
write_config default "$PORT" "$DEFAULT_HASH"
start_server default "$PORT"
log "password logins with default argon2id ($(cut -d'$' -f4 <<<"$DEFAULT_HASH")), $LOGIN_CONNECTIONS connections, $LOGIN_SECONDS s"
LOGINS=$(run_lg logins --url "$BASE" --service "$SERVICE" --user bench --password "$PASSWORD" \
    --connections "$LOGIN_CONNECTIONS" --duration "$LOGIN_SECONDS")
stop_server

# --- 5. criterion: engine grant + validate -------------------------------
CRIT_LINE=
if [[ "${SKIP_CRITERION:-0}" != 1 ]]; then
    log "cargo bench -p castellan-core --bench engine"
    CRIT_OUT=$(cd "$ROOT" && cargo bench -q -p castellan-core --bench engine -- \
        --warm-up-time 1 --measurement-time 5 2>&1) || { echo "$CRIT_OUT" >&2; exit 1; }
    CRIT_LINE=$(grep -E '^\s*time:|time: +\[' <<<"$CRIT_OUT" | head -n1 | sed 's/^ *//')
    echo "criterion engine: $CRIT_LINE" >>"$RAW"
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - STARTED))

# --- report --------------------------------------------------------------
SIZE_MIB=$(awk -v b="$SIZE_BYTES" 'BEGIN {printf "%.2f", b / 1048576}')
CRIT_MID=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\[/) {print $(i+2), $(i+3); exit}}' <<<"$CRIT_LINE")
DEFAULT_PARAMS=$(cut -d'$' -f4 <<<"$DEFAULT_HASH")

REPORT=$(cat <<EOF
## Castellan benchmark run

- Commit: $COMMIT, $(date -u '+%Y-%m-%d %H:%M UTC')
- Machine: $NPROC CPUs ($CPU), $MEM, $KERNEL; $RUSTC
- Load average before / after: $LOAD_BEFORE / $LOAD_AFTER (a quiet 2-CPU machine sits below 0.2)
- Client and server share the machine: loadgen runs $LOADGEN_THREADS thread(s) beside the server's runtime.
- Wall time: ${ELAPSED} s

| Measure | Value | Target | Met |
| --- | ---: | --- | --- |
| Release binary size (\`stat -c %s target/release/castellan\`) | $SIZE_MIB MiB ($SIZE_BYTES B) | | |
| Start to first 200 on /health (median of $STARTS) | $START_MS ms | < 200 ms | $(verdict "$START_MS" "<" 200) |
| RSS idle (VmRSS) | $(mib "$RSS_IDLE") MiB | | |
| SSO round trips/s, $SSO_CONNECTIONS connections, ${SSO_SECONDS} s (closed loop) | $(printf '%.0f' "$SAT_RATE") /s ($SAT_ERRORS errors) | ≥ 10,000 /s | $(verdict "$SAT_RATE" ">=" 10000) |
| &nbsp;&nbsp;latency at saturation p50 / p99 | $(field "$SAT" p50_ms) / $(field "$SAT" p99_ms) ms | | |
| SSO round trip at $HALF/s (half of saturation), p50 / p99 | $(field "$PACED" p50_ms) / $(field "$PACED" p99_ms) ms (achieved $(printf '%.0f' "$(field "$PACED" rate)")/s, max $(field "$PACED" max_ms) ms) | p99 < 10 ms | $(verdict "$(field "$PACED" p99_ms)" "<" 10) |
| RSS after the saturation run | $(mib "$RSS_AFTER_SSO") MiB | | |
| RSS with $SESSIONS live SSO sessions | $(mib "$RSS_SESSIONS") MiB (store entries: ${ENTRIES:-?}) | < 60 MB | $(verdict "$(mib "$RSS_SESSIONS")" "<" 57.2) |
| Sessions created/s (cheap argon2id m=8 KiB, t=1, concurrency $SESSION_CONCURRENCY) | $(printf '%.0f' "$(field "$SESS" rate)") /s | | |
| Password logins/s, default argon2id ($DEFAULT_PARAMS), $LOGIN_CONNECTIONS connections | $(field "$LOGINS" rate) /s (p50 $(field "$LOGINS" p50_ms) ms) | | |
| GET /health req/s (wrk, 64 connections, context only) | ${WRK_RPS:-n/a} /s | | |
| Engine grant + validate, in process (criterion, median) | ${CRIT_MID:-skipped} | | |

An SSO round trip is: \`GET /cas/login?service=S\` with the CASTGC cookie (302 with a
service ticket), then \`GET /cas/p3/serviceValidate?service=S&ticket=ST-…\` (200, XML naming
the user), on one keep-alive connection per simulated browser. Latency is the whole round trip.

Commands:

\`\`\`
cargo build --release
CARGO_TARGET_DIR=target/loadgen cargo build --release --manifest-path tools/loadgen/Cargo.toml
loadgen startup --bin target/release/castellan --config bench.toml --url \$BASE --runs $STARTS
loadgen sso --url \$BASE --connections $SSO_CONNECTIONS --duration $SSO_SECONDS --warmup 1
loadgen sso --url \$BASE --connections $SSO_CONNECTIONS --duration $SSO_SECONDS --warmup 1 --rate $HALF
loadgen sessions --url \$BASE --count $SESSIONS --concurrency $SESSION_CONCURRENCY
loadgen logins --url \$BASE --connections $LOGIN_CONNECTIONS --duration $LOGIN_SECONDS   # default-parameter hash
wrk -t1 -c64 -d5s \$BASE/health
cargo bench -p castellan-core --bench engine -- --warm-up-time 1 --measurement-time 5
\`\`\`

Raw loadgen lines:

\`\`\`
$(cat "$RAW")
\`\`\`
EOF
)
echo "$REPORT" | tee "$OUT_DIR/latest.md"
log "report also in target/bench/latest.md"
