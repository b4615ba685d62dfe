#!/usr/bin/env bash
# Builds Castellan and serves it. With no argument: the embedded demo defaults
# at http://localhost:8080/cas/login (casuser / Mellon). Extra arguments go to
# `castellan serve`, e.g. ./run.sh --config deploy/castellan.toml
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cc >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config ca-certificates >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "Rust is needed: install it with rustup (https://rustup.rs)" >&2; exit 1; }
exec cargo run --release --bin castellan -- serve "$@"
