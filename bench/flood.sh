#!/usr/bin/env bash
# Anonymous flood: what memory do unauthenticated requests make the server hold?
#
# Starts the server on 127.0.0.1 with a configuration of its own, then
#   1. LOGIN_REQUESTS x  GET /cas/login?service=https%3A%2F%2Fapp.example.org%2F
#   2. AUTHORIZE_REQUESTS x  GET /cas/oidc/authorize?...&state=<STATE_LEN>&nonce=<NONCE_LEN>&login_hint=<HINT_LEN>
# over CONNECTIONS keep-alive connections (bench/flood.py), and reads VmRSS
# (/proc/PID/status) and castellan_memory_store_entries (/cas/metrics) before,
# right after each phase and again SETTLE seconds later. During both floods a
# second process does one whole CAS login (form, POST, serviceValidate) each
# second. Prints a markdown table on stdout; progress on stderr.
#
#   bench/flood.sh
#   CASTELLAN_BIN=/path/to/older/castellan STATE_LEN=2000 NONCE_LEN=2000 bench/flood.sh
#
# Knobs (environment): CASTELLAN_BIN (target/release/castellan), LOGIN_REQUESTS
# (200000), AUTHORIZE_REQUESTS (50000), STATE_LEN (512), NONCE_LEN (256),
# HINT_LEN (256), CONNECTIONS (32), SETTLE (11 s; the server trims malloc
# every 10 s), SERVER_RUST_LOG (warn), PYTHON (python3).
#
# Every `state` is distinct: random characters ending in the request's number.
# The configuration uses no key an older binary would not know (no
# max_pending_flows: the default ceiling applies where there is one).
# Only loopback traffic; each phase ends after a fixed number of requests.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CASTELLAN_BIN:-$ROOT/target/release/castellan}
LOGIN_REQUESTS=${LOGIN_REQUESTS:-200000}
AUTHORIZE_REQUESTS=${AUTHORIZE_REQUESTS:-50000}
STATE_LEN=${STATE_LEN:-512}
NONCE_LEN=${NONCE_LEN:-256}
HINT_LEN=${HINT_LEN:-256}
CONNECTIONS=${CONNECTIONS:-32}
SETTLE=${SETTLE:-11}
SERVER_RUST_LOG=${SERVER_RUST_LOG:-warn}
PYTHON=${PYTHON:-python3}
FLOOD="$ROOT/bench/flood.py"

[[ -x "$BIN" ]] || { echo "no server binary at $BIN (set CASTELLAN_BIN)" >&2; exit 1; }

WORK=$(mktemp -d -t castellan-flood.XXXXXX)
SERVER_PID=
log() { printf '[flood %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT/cas"
SERVICE="https://app.example.org/"
CLIENT_ID=flood-rp
REDIRECT_URI="https://rp.example.org/cb"

mkdir -p "$WORK/data"
cat >"$WORK/flood.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
public_url = "$BASE"
data_dir = "$WORK/data"

[tickets]
store = "memory"

[[users]]
username = "casuser"
password = "Mellon"
attributes = { mail = "casuser@example.org", cn = "CAS User" }

[[services]]
name = "app"
protocol = "cas"
service = 'https://app\.example\.org/.*'
release = ["mail", "cn"]

[[services]]
name = "rp"
protocol = "oidc"
client_id = "$CLIENT_ID"
client_secret = "flood-secret"
redirect_uris = ["$REDIRECT_URI"]
scopes = ["openid", "profile", "email"]
release = ["mail", "cn"]
EOF
"$BIN" check-config --config "$WORK/flood.toml" >&2

# rand N: N random characters that need no percent-encoding.
rand() {
    "$PYTHON" -c 'import secrets,string,sys; a=string.ascii_letters+string.digits+"-._~"; print("".join(secrets.choice(a) for _ in range(int(sys.argv[1]))))' "$1"
}
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$SERVER_PID/status"; }
entries() {
    curl -fsS "$BASE/metrics" | awk '/^castellan_memory_store_entries / {print $2}'
}
field() { grep -o "\\b$2=[^ ]*" <<<"$1" | head -n1 | cut -d= -f2-; }

log "server: $BIN (sha256 $(sha256sum "$BIN" | cut -c1-12)) on $BASE"
RUST_LOG=$SERVER_RUST_LOG "$BIN" serve --config "$WORK/flood.toml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$BASE/health" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.05
done
curl -fsS -o /dev/null "$BASE/health" || { echo "server did not come up" >&2; cat "$WORK/server.log" >&2; exit 1; }

# A real login works before the flood (and warms the server up).
"$PYTHON" "$FLOOD" probe --base "$BASE" --service "$SERVICE" --count 2 >/dev/null \
    || { echo "a login failed before the flood" >&2; tail -n 20 "$WORK/server.log" >&2; exit 1; }
sleep 1
RSS0=$(rss_mib); ENT0=$(entries)
log "start: RSS $RSS0 MiB, store entries $ENT0"

# phase NAME REQUESTS URL: floods, then reads RSS and store entries now and SETTLE s later.
phase() {
    local name=$1 n=$2 url=$3 line
    log "$name: $n requests over $CONNECTIONS connections, login probe every second"
    line=$("$PYTHON" "$FLOOD" flood --url "$url" --requests "$n" --connections "$CONNECTIONS" \
        --probe-base "$BASE" --probe-service "$SERVICE" 2>>"$WORK/flood.log" | grep '^RESULT' | tail -n1)
    tail -n 2 "$WORK/flood.log" >&2
    [[ -n "$line" ]] || { echo "flood.py failed:" >&2; tail -n 20 "$WORK/flood.log" >&2; exit 1; }
    local rss ent
    rss=$(rss_mib); ent=$(entries)
    printf -v "${name}_LINE" '%s' "$line"
    printf -v "${name}_RSS" '%s' "$rss"
    printf -v "${name}_ENT" '%s' "$ent"
    log "$name: RSS $rss MiB, store entries $ent right after; waiting ${SETTLE} s"
    sleep "$SETTLE"
    printf -v "${name}_RSS2" '%s' "$(rss_mib)"
}

phase LOGIN "$LOGIN_REQUESTS" "$BASE/login?service=https%3A%2F%2Fapp.example.org%2F"

if (( STATE_LEN >= 8 )); then STATE="$(rand $((STATE_LEN - 8))){i}"; else STATE=$(rand "$STATE_LEN"); fi
NONCE=$(rand "$NONCE_LEN")
HINT=$(rand "$HINT_LEN")
AUTHZ="$BASE/oidc/authorize?response_type=code&client_id=$CLIENT_ID"
AUTHZ+="&redirect_uri=https%3A%2F%2Frp.example.org%2Fcb&scope=openid"
AUTHZ+="&state=$STATE&nonce=$NONCE&login_hint=$HINT"
phase AUTHZ "$AUTHORIZE_REQUESTS" "$AUTHZ"

kill -0 "$SERVER_PID" || { echo "the server died" >&2; tail -n 20 "$WORK/server.log" >&2; exit 1; }

row() {
    local label=$1 line=$2 rss=$3 rss2=$4 ent=$5
    printf '| %s | %s | %s /s (%s s) | %s | %s | %s | %s | %s / %s | %s / %s ms |\n' \
        "$label" "$(field "$line" requests)" "$(field "$line" rate)" "$(field "$line" seconds)" \
        "$(field "$line" status)$( [[ $(field "$line" errors) != 0 ]] && echo ", errors $(field "$line" errors)")" \
        "$rss" "$rss2" "$ent" \
        "$(field "$line" probe_ok)" "$(field "$line" probe_failed)" \
        "$(field "$line" probe_p50_ms)" "$(field "$line" probe_max_ms)"
}

echo "Binary: \`$BIN\` (sha256 $(sha256sum "$BIN" | cut -c1-12)); state $STATE_LEN, nonce $NONCE_LEN, login_hint $HINT_LEN characters; $CONNECTIONS connections"
echo
echo "| Phase | Requests | Rate | Status codes | RSS after (MiB) | RSS ${SETTLE} s later (MiB) | Store entries | Probe logins ok / failed | Probe p50 / max |"
echo "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
echo "| start (idle, after 2 logins) | | | | $RSS0 | | $ENT0 | | |"
row "GET /cas/login?service=…" "$LOGIN_LINE" "$LOGIN_RSS" "$LOGIN_RSS2" "$LOGIN_ENT"
row "GET /cas/oidc/authorize (state $STATE_LEN, nonce $NONCE_LEN, hint $HINT_LEN)" "$AUTHZ_LINE" "$AUTHZ_RSS" "$AUTHZ_RSS2" "$AUTHZ_ENT"
reasons="$(field "$LOGIN_LINE" probe_fail_reasons) / $(field "$AUTHZ_LINE" probe_fail_reasons)"
if [[ "$reasons" != "- / -" ]]; then
    echo
    echo "Probe failures (login phase / authorize phase): $reasons"
fi
