#!/usr/bin/env bash
# End-to-end tests of Castellan's OpenID Provider with a certified relying-party
# library: ./tests/oidc-client/run.sh
#
# The relying party is npm's openid-client (v6, OpenID Certified); jose verifies
# the back-channel logout tokens. The user agent is Node's fetch with a small
# cookie jar (lib/harness.mjs) walking the CAS login form, against a castellan
# the tests start themselves on free loopback ports, with Node's built-in test
# runner. castellan's logs and configs go to tests/oidc-client/.out/.
#
# Environment:
#   CASTELLAN_BIN=...  binary to test (tests/run.sh sets it after building);
#                      unset: `cargo build --release` first, then target/release/castellan
#   SKIP_APT=1         never call apt-get
#   NODE_TEST_ARGS=..  extra arguments for `node --test` (e.g. --test-name-pattern=refresh)
#   TEST_FILES=...     test files to run (default tests/*.test.mjs)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$HERE"

say() { printf '==> oidc-client: %s\n' "$*"; }
die() { printf 'tests/oidc-client/run.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------- Debian packages
apt_install() {
  [ -n "${SKIP_APT:-}" ] && die "missing $* (SKIP_APT set)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  say "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || die "apt-get update failed"
  $sudo apt-get install -y -qq --no-install-recommends "$@" || die "apt-get install $* failed"
}

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ "${#need[@]}" -eq 0 ] || apt_install "${need[@]}"

node_major="$(node -p 'process.versions.node.split(".")[0]')"
# openid-client 6: ESM, WebCrypto and fetch (Node.js >= 20)
[ "$node_major" -ge 20 ] || die "Node.js >= 20 needed (have $(node --version))"

# ------------------------------------------------------------- npm (openid-client, jose)
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
have="$(cat node_modules/.castellan-lock.sha256 2>/dev/null || true)"
if [ "$want" != "$have" ] || [ ! -d node_modules/openid-client ] || [ ! -d node_modules/jose ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
  echo "$want" > node_modules/.castellan-lock.sha256
fi

# ------------------------------------------------------------- castellan
if [ -z "${CASTELLAN_BIN:-}" ]; then
  say "cargo build --release"
  (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
  export CASTELLAN_BIN="$ROOT/target/release/castellan"
fi
[ -x "$CASTELLAN_BIN" ] || die "no castellan binary at $CASTELLAN_BIN"

# ------------------------------------------------------------- tests
rm -rf .out
mkdir -p .out
say "node --test ($(node --version), openid-client $(node -p 'require("./node_modules/openid-client/package.json").version'))"
rc=0
# shellcheck disable=SC2086
node --test --test-reporter=spec --test-concurrency=1 --test-timeout=120000 ${NODE_TEST_ARGS:-} ${TEST_FILES:-tests/*.test.mjs} || rc=$?
say "castellan logs and configs in $HERE/.out"
exit "$rc"
