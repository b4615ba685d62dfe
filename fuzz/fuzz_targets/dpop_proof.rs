//! The `dpop_proof` target: the checks are `castellan_fuzz::targets::dpop_proof::run`,
//! which `tests/corpus.rs` also replays over the committed inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| castellan_fuzz::targets::dpop_proof::run(data));
