#!/usr/bin/env bash
# Builds Castellan and serves it. With no argument: the embedded demo defaults
# at http://localhost:8080/cas/login (casuser / Mellon). Extra arguments go to
# `castellan serve`, e.g. ./run.sh --config deploy/castellan.toml
set -euo pipefail
cd "$(dirname "$0")"
# The SAML IdP links libxml2 and xmlsec (samael), whose bindings need clang.
need=()
for p in build-essential pkg-config ca-certificates libxml2-dev libxmlsec1-dev libclang-dev libssl-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "Rust is needed: install it with rustup (https://rustup.rs)" >&2; exit 1; }
exec cargo run --release --bin castellan -- serve "$@"
