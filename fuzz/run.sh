#!/usr/bin/env bash
# Runs Castellan's fuzz targets, each for FUZZ_SECONDS (default 30).
#
#   fuzz/run.sh                      # every target
#   fuzz/run.sh service_url          # only the named ones
#   FUZZ_SECONDS=600 fuzz/run.sh saml_validate_body
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --version 0.13.2 --locked`).
# Stable rustc is told to accept cargo-fuzz's nightly flags (RUSTC_BOOTSTRAP).
# Seeds (committed) are in fuzz/seeds/TARGET/, past crashes in
# fuzz/regressions/TARGET/; both are copied into the gitignored working corpus
# fuzz/corpus/TARGET/, which grows run after run. A crash leaves its input in
# fuzz/artifacts/TARGET/ and makes this exit 1; once fixed, add it to
# fuzz/regressions/TARGET/ (tests/corpus.rs replays it in every test run).
#
# Other knobs: FUZZ_SANITIZER (none, address; default none: faster, and the
# code under test is safe Rust), FUZZ_JOBS (parallel fuzzing jobs per target,
# default 1), FUZZ_ARGS (extra libFuzzer flags).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# cargo-fuzz finds fuzz/ from the project root.
cd "$here/.." || exit 2

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/fuzz}"

all=(saml_validate_body service_url response_xml oidc_request saml_request dpop_proof client_assertion)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# Longest input per target: a SOAP body is a few hundred bytes (the server
# refuses more than 16 KiB); service URLs are refused past 8 KiB.
max_len() {
  case "$1" in
    saml_validate_body) echo 4096 ;;
    service_url) echo 9000 ;;
    response_xml) echo 2048 ;;
    oidc_request) echo 8192 ;;
    client_assertion) echo 16384 ;;
    saml_request) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --version 0.13.2 --locked" >&2
  exit 2
fi

mkdir -p fuzz/artifacts
start=$(date +%s)
# `cargo fuzz build` takes one target or none (= all of them).
if ! cargo fuzz build --sanitizer "$sanitizer" >fuzz/artifacts/build.log 2>&1; then
  tail -n 40 fuzz/artifacts/build.log >&2
  echo "build failed (log: fuzz/artifacts/build.log)" >&2
  exit 2
fi
echo "build: $(( $(date +%s) - start ))s"

failed=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t" log="fuzz/artifacts/$t/last-run.log"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  cp -n "fuzz/seeds/$t"/* "fuzz/regressions/$t"/* "$corpus/" 2>/dev/null || true
  parallel=()
  [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
  echo "=== $t: ${seconds}s, max_len $(max_len "$t"), corpus $(ls "$corpus" | wc -l) files"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 \
    -print_final_stats=1 "${parallel[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|DONE' "$log"
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    echo "!!! $t FAILED (exit $rc) after $(( $(date +%s) - t0 ))s; log: $log"
    grep -E -A3 "panicked at|Test unit written|SUMMARY|ERROR" "$log" | head -n 20
  else
    echo "--- $t: no crash in $(( $(date +%s) - t0 ))s, corpus now $(ls "$corpus" | wc -l) files"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer TARGET fuzz/artifacts/TARGET/crash-...)"
  exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s each without a crash"
