#!/usr/bin/env bash
# Real-browser tests of Castellan's pages: ./tests/browser/run.sh
#
# Drives Debian's Chromium (/usr/bin/chromium) with playwright-core (no browser
# download), against a castellan it starts itself on a free loopback port,
# with Node's built-in test runner. The OIDC tests also run their own Apache
# httpd with mod_auth_openidc as a relying party, the SAML tests their own
# Apache with mod_shib and shibd (the Shibboleth SP) as a service provider.
# Screenshots and the logs of castellan, Apache and shibd go to
# tests/browser/.out/ for a human to look at.
#
# Environment:
#   CASTELLAN_BIN=...  binary to test (tests/run.sh sets it after building);
#                      unset: `cargo build --release` first, then target/release/castellan
#   CHROMIUM_BIN=...   browser (default /usr/bin/chromium, installed with apt when missing)
#   SKIP_APT=1         never call apt-get
#   NODE_TEST_ARGS=..  extra arguments for `node --test` (e.g. --test-name-pattern=SSO)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$HERE"

say() { printf '==> browser: %s\n' "$*"; }
die() { printf 'tests/browser/run.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------- Debian packages
apt_install() {
  [ -n "${SKIP_APT:-}" ] && die "missing $* (SKIP_APT set)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  say "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || die "apt-get update failed"
  # policy-rc.d: apache2 must not start its system service here (the tests run their own)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap "$sudo rm -f /usr/sbin/policy-rc.d" EXIT
  fi
  $sudo apt-get install -y -qq --no-install-recommends "$@" || die "apt-get install $* failed"
}

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -n "${CHROMIUM_BIN:-}" ] || [ -x /usr/bin/chromium ] || need+=(chromium)
# tests/oidc.test.mjs: Apache + mod_auth_openidc as a relying party
[ -x /usr/sbin/apache2 ] || need+=(apache2)
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || need+=(libapache2-mod-auth-openidc)
# tests/saml.test.mjs: Apache + mod_shib + shibd (Shibboleth SP) as a SAML service provider
[ -e /usr/lib/apache2/modules/mod_shib.so ] || need+=(libapache2-mod-shib)
[ -x /usr/sbin/shibd ] || need+=(shibboleth-sp-utils)
[ -e /etc/shibboleth/protocols.xml ] || need+=(shibboleth-sp-common)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ "${#need[@]}" -eq 0 ] || apt_install "${need[@]}"

node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 needed (have $(node --version))"

# ------------------------------------------------------------- npm (playwright-core only)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
have="$(cat node_modules/.castellan-lock.sha256 2>/dev/null || true)"
if [ "$want" != "$have" ] || [ ! -d node_modules/playwright-core ]; then
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
say "node --test ($(node --version), $("${CHROMIUM_BIN:-/usr/bin/chromium}" --version 2>/dev/null | head -1))"
# shellcheck disable=SC2086
rc=0
node --test --test-reporter=spec --test-concurrency=1 --test-timeout=120000 ${NODE_TEST_ARGS:-} tests/*.test.mjs || rc=$?
say "screenshots and logs (castellan, apache, shibd) in $HERE/.out"
say "screenshots of every page in every language (i18n.test.mjs) in $HERE/screenshots"
exit "$rc"
