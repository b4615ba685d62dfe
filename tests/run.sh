#!/usr/bin/env bash
# The project's test command: ./tests/run.sh
#
# On a fresh Debian 12 with Rust installed, as root:
#   1. installs the Debian packages the tests need (only when one is missing),
#   2. makes the venv tests/.venv and installs tests/requirements.txt into it
#      (again only when the requirements changed),
#   3. cargo build --release, cargo test --release --workspace, the fuzz
#      corpus replay (fuzz/tests/corpus.rs), cargo deny (deny.toml; installs
#      cargo-deny when missing),
#   4. the end-to-end tests: pytest tests/e2e against target/release/castellan,
#   5. tests/browser/run.sh, when that file exists;
#   6. tests/oidc-client/run.sh (Node openid-client against the OIDC provider).
# Exits non-zero when any step fails; steps 3-6 all run even if an earlier
# test step failed (a failed build stops everything).
#
# Environment knobs:
#   SKIP_APT=1          never call apt-get (tests needing a missing package fail)
#   SKIP_CARGO_TEST=1   skip the Rust unit tests and the fuzz corpus replay
#   SKIP_CARGO_DENY=1   skip cargo deny
#   PYTEST_ARGS="..."   extra arguments for pytest (e.g. "-k proxy")
#   CASTELLAN_BIN=...   test another binary than target/release/castellan
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
DEB_PACKAGES=(
  apache2 libapache2-mod-auth-cas libapache2-mod-auth-openidc
  libapache2-mod-shib shibboleth-sp-utils
  redis-server xmlsec1
  slapd ldap-utils samba samba-ad-provision samba-dsdb-modules samba-vfs-modules
  postgresql
  build-essential pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev
  chromium chromium-driver
  python3 python3-venv python3-pip
  curl openssl ca-certificates
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# Node (npm test clients and the upstream OpenID Provider): by command, as a
# Node from elsewhere (nodesource) conflicts with Debian's npm package.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ -n "${SKIP_APT:-}" ]; then
    echo "run.sh: missing Debian packages (SKIP_APT set, not installing): ${missing[*]}" >&2
  else
    step "apt-get install ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || die "apt-get update failed"
    # policy-rc.d: the packages must not start their system services here
    # (the tests run their own apache2; redis is started by whoever needs it)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod +x /usr/sbin/policy-rc.d
      trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" || die "apt-get install failed"
  fi
fi

# ---------------------------------------------------------------- python venv
VENV="$ROOT/tests/.venv"
REQ="$ROOT/tests/requirements.txt"
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY="$(command -v python3)"; fi
[ -n "$PY" ] || die "no python3"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  step "python venv ($PY) at tests/.venv"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || die "python3 -m venv failed (is python3-venv installed?)"
fi
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  step "pip install -r tests/requirements.txt"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" || die "pip install failed"
  echo "$want" > "$VENV/.requirements.sha256"
fi

# ---------------------------------------------------------------- build
step "cargo fmt --check"
cargo fmt --all -- --check || die "cargo fmt --all -- --check: the code is not formatted"

step "cargo build --release"
cargo build --release || die "cargo build --release failed"
[ -x "$ROOT/target/release/castellan" ] || die "target/release/castellan was not built"

status=0
failed=()

if [ -z "${SKIP_CARGO_TEST:-}" ]; then
  step "cargo test --release --workspace"
  if ! cargo test --release --workspace; then
    status=1; failed+=("cargo test")
  fi
fi

# ---------------------------------------------------------------- fuzz corpus
# Every committed fuzz input (fuzz/seeds/, fuzz/regressions/) through its
# target's check, as a plain test: no cargo-fuzz, no libFuzzer (the fuzz
# crate's default feature, left off). The fuzz crate is its own workspace;
# it builds into the same target dir with the root's release profile, so the
# dependencies built above are reused, not rebuilt. Not --locked: when a
# crate gains a dependency, fuzz/Cargo.lock is brought up to date (commit it).
if [ -z "${SKIP_CARGO_TEST:-}" ]; then
  step "fuzz corpus replay (cargo test --release in fuzz/)"
  if ! CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" cargo test --release \
      --manifest-path "$ROOT/fuzz/Cargo.toml" --no-default-features \
      --config 'profile.release.debug=false' --config 'profile.release.lto="thin"' \
      --config 'profile.release.codegen-units=4' --config 'profile.release.strip=true' \
      --config 'profile.release.panic="unwind"'; then
    status=1; failed+=("fuzz corpus replay")
  fi
fi

# ---------------------------------------------------------------- cargo deny
# Licences, bans and sources (deny.toml) always; advisories (the RustSec
# database, a git repository on github.com) only when that is reachable.
# cargo-deny is installed once from crates.io, unoptimised (--debug): 1.5 min
# on 2 cores instead of 5, and its checks still take seconds.
CARGO_DENY_VERSION=0.20.2
if [ -z "${SKIP_CARGO_DENY:-}" ]; then
  if ! cargo deny --version >/dev/null 2>&1; then
    step "cargo install cargo-deny $CARGO_DENY_VERSION (once)"
    cargo install --locked --debug cargo-deny --version "$CARGO_DENY_VERSION" \
      || { status=1; failed+=("cargo install cargo-deny"); }
  fi
  if cargo deny --version >/dev/null 2>&1; then
    checks=(licenses bans sources)
    if timeout 30 git ls-remote --exit-code https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
      checks+=(advisories)
      step "cargo deny check ${checks[*]} ($(cargo deny --version))"
    else
      step "cargo deny check ${checks[*]} ($(cargo deny --version))"
      echo "cargo deny: advisories SKIPPED: the RustSec advisory database (github.com/rustsec/advisory-db) is not reachable from here"
    fi
    if ! cargo deny --locked --log-level error check --hide-inclusion-graph "${checks[@]}"; then
      status=1; failed+=("cargo deny check ${checks[*]}")
    fi
  fi
fi

# ---------------------------------------------------------------- e2e
# The upstream OpenID Provider of the delegation tests (npm oidc-provider).
OP_DIR="$ROOT/tests/e2e/upstream_op"
want="$(cat "$OP_DIR/package.json" "$OP_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
have="$(cat "$OP_DIR/node_modules/.castellan-lock.sha256" 2>/dev/null || true)"
if [ "$want" != "$have" ] || [ ! -d "$OP_DIR/node_modules/oidc-provider" ]; then
  step "npm ci (tests/e2e/upstream_op)"
  (cd "$OP_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/e2e/upstream_op failed"
  echo "$want" > "$OP_DIR/node_modules/.castellan-lock.sha256"
fi

step "pytest tests/e2e"
export CASTELLAN_BIN="${CASTELLAN_BIN:-$ROOT/target/release/castellan}"
# shellcheck disable=SC2086
( cd "$ROOT/tests/e2e" && "$VENV/bin/python" -m pytest -v -p no:cacheprovider ${PYTEST_ARGS:-} . )
rc=$?
if [ "$rc" -ne 0 ]; then
  status=1; failed+=("pytest tests/e2e (exit $rc)")
fi

# ---------------------------------------------------------------- browser
if [ -f "$ROOT/tests/browser/run.sh" ]; then
  step "tests/browser/run.sh"
  if ! bash "$ROOT/tests/browser/run.sh"; then
    status=1; failed+=("tests/browser/run.sh")
  fi
fi

step "tests/oidc-client/run.sh"
if ! bash "$ROOT/tests/oidc-client/run.sh"; then
  status=1; failed+=("tests/oidc-client/run.sh")
fi

echo
if [ "$status" -ne 0 ]; then
  echo "run.sh: FAILED: ${failed[*]}"
else
  echo "run.sh: all test steps passed"
fi
exit "$status"
